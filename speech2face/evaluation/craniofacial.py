"""Craniofacial measurements from 68-point landmarks, and their true-vs-reconstruction correlation.

The paper (supplementary material; docs/evaluation.md) measures faces on the original image and on
the reconstruction from speech and reports the Pearson correlation per measurement over the test set
(nasal index 0.38, nose width 0.35; random baseline 0.02). Landmarks are dlib's 68 points (iBUG
300-W order), 0-based:

    0–16 jaw line (0 and 16 beside the ears, 8 the chin)   27–30 nose bridge (27 at the nasion)
    31–35 lower nose (31, 35 the alae, 33 the subnasale)   36–41, 42–47 the eyes (36, 45 outer
    corners; 39, 42 inner corners)                         48–59 outer lips (48, 54 the corners;
    51 the top of the upper lip, 57 the bottom of the lower lip); 60–67 inner lips

Distances come out in the units of the landmarks (pixels of whatever image they were taken
from): compare them between faces only after aligning both to a common frame (the face
decoder's canonical 224×224 output is one). Indices (`*_index`) are ratios × 100 and so do not
depend on scale; prefer them when the two faces' scales differ.
"""

import numpy as np
import scipy.stats

from speech2face import records

NUM_LANDMARKS = records.NUM_LANDMARKS  # dlib's 68 points

# name -> (description, how it is computed). Distances are Euclidean between the points named.
_DEFINITIONS = {
    "nose_width": "alar width: |p31 − p35|",
    "nose_height": "nasion to subnasale: |p27 − p33|",
    "nasal_index": "nose_width / nose_height × 100",
    # dlib's contour has no gonion (jaw angle) point. 4–12, at about the level of the mouth
    # corners, is on the lower jaw for every face; 3–13 sits nearer the jaw angle but, being
    # higher up the contour, moves with face width (0–16) more than with the jaw itself.
    "jaw_width": "lower jaw width: |p4 − p12|",
    "face_width": "jaw-line width at the ears: |p0 − p16|",
    "jaw_face_width_index": "jaw_width / face_width × 100",
    "upper_lip_height": "subnasale to the top of the upper lip: |p33 − p51|",
    "mouth_width": "between the mouth corners: |p48 − p54|",
    "mouth_face_width_index": "mouth_width / face_width × 100",
    "intercanthal_width": "between the inner eye corners: |p39 − p42|",
    "biocular_width": "between the outer eye corners: |p36 − p45|",
    "intercanthal_index": "intercanthal_width / biocular_width × 100",
    "lower_face_height": "subnasale to chin: |p33 − p8|",
    "lower_face_index": "lower_face_height / face_width × 100",
}
MEASUREMENTS = tuple(_DEFINITIONS)

# Point pairs of the plain distances.
_DISTANCES = {
    "nose_width": (31, 35),
    "nose_height": (27, 33),
    "jaw_width": (4, 12),
    "face_width": (0, 16),
    "upper_lip_height": (33, 51),
    "mouth_width": (48, 54),
    "intercanthal_width": (39, 42),
    "biocular_width": (36, 45),
    "lower_face_height": (33, 8),
}
# Indices: numerator / denominator × 100.
_INDICES = {
    "nasal_index": ("nose_width", "nose_height"),
    "jaw_face_width_index": ("jaw_width", "face_width"),
    "mouth_face_width_index": ("mouth_width", "face_width"),
    "intercanthal_index": ("intercanthal_width", "biocular_width"),
    "lower_face_index": ("lower_face_height", "face_width"),
}


def describe(name):
    """One line saying which landmarks a measurement uses, e.g. for report tables."""
    return _DEFINITIONS[name]


def _check_landmarks(landmarks, name):
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim < 2 or landmarks.shape[-2:] != (NUM_LANDMARKS, 2):
        raise ValueError(
            f"{name} must be dlib 68-point landmarks [..., 68, 2] (x, y); got shape "
            f"{landmarks.shape}"
        )
    if not np.isfinite(landmarks).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return landmarks


def measure(landmarks):
    """All `MEASUREMENTS` of faces given as landmarks.

    Args:
      landmarks: [..., 68, 2] (x, y) in dlib order (e.g. [N, 68, 2]), any units.

    Returns:
      dict name -> float64 [...] (e.g. [N]), in the order of `MEASUREMENTS`. Distances are in
      the landmarks' units; indices are ratios × 100 (NaN where the denominator is 0).

    Raises:
      ValueError: wrong shape or non-finite coordinates.
    """
    landmarks = _check_landmarks(landmarks, "landmarks")
    values = {
        name: np.linalg.norm(landmarks[..., i, :] - landmarks[..., j, :], axis=-1)
        for name, (i, j) in _DISTANCES.items()
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, (num, den) in _INDICES.items():
            values[name] = np.where(values[den] > 0, 100.0 * values[num] / values[den], np.nan)
    return {name: values[name] for name in MEASUREMENTS}


def _json_float(x):
    """float, or None for NaN (strict JSON has no NaN)."""
    x = float(x)
    return None if np.isnan(x) else x


def _shuffled_r(x, y, num_shuffles, seed, chunk=16):
    """Pearson r of rows x [m, n] with y [m, n] permuted along n: [m, num_shuffles] float64.

    Every row uses the same permutations; they are drawn `chunk` at a time so that memory stays
    at m·chunk·n floats even for a test set of 150 k faces.
    """
    zx = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    zy = (y - y.mean(1, keepdims=True)) / y.std(1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((x.shape[0], num_shuffles))
    for start in range(0, num_shuffles, chunk):
        count = min(chunk, num_shuffles - start)
        permutations = rng.permuted(np.tile(np.arange(x.shape[1]), (count, 1)), axis=1)
        out[:, start : start + count] = np.einsum("mcn,mn->mc", zy[:, permutations], zx)
    return out / x.shape[1]


def correlate(true_landmarks, predicted_landmarks, num_shuffles=1000, seed=0):
    """Pearson correlation per measurement between true faces and their reconstructions.

    The random baseline pairs each true face with the reconstruction of another face: the
    predicted measurements are shuffled across faces `num_shuffles` times (the same permutations
    for every measurement) and r is recomputed. Its mean r is ≈ 0 by construction; its mean |r|
    (≈ √(2/(π·n)) for n faces) is the size of correlation that chance alone produces. The paper
    does not say which its "random baseline 0.02" is (a mean |r| of 0.02 would mean ≈ 1,600
    faces): report both. `permutation_p` is the
    share of shuffles with |r| at least the observed one, (count + 1) / (num_shuffles + 1), a
    check on scipy's p-value that does not assume normality.

    Args:
      true_landmarks, predicted_landmarks: [N, 68, 2] (x, y), row i of one the same face as row
        i of the other, N >= 3. Distances are compared as given: align both sets first, or read
        only the scale-free indices.
      num_shuffles: random pairings of the baseline (0 skips it).
      seed: of the shuffles.

    Returns:
      {name: {"r", "p_value", "baseline_r", "baseline_abs_r", "permutation_p", "n"}} with Python
      floats (None where undefined, e.g. a measurement constant over faces), ready for json.dump.

    Raises:
      ValueError: shapes differ, fewer than 3 faces, or non-finite coordinates.
    """
    true_landmarks = _check_landmarks(true_landmarks, "true_landmarks")
    predicted_landmarks = _check_landmarks(predicted_landmarks, "predicted_landmarks")
    if true_landmarks.shape != predicted_landmarks.shape or true_landmarks.ndim != 3:
        raise ValueError(
            f"true_landmarks and predicted_landmarks must both be [N, 68, 2] with the same N; "
            f"got {true_landmarks.shape} and {predicted_landmarks.shape}"
        )
    n = true_landmarks.shape[0]
    if n < 3:
        raise ValueError(f"correlate needs at least 3 faces; got {n}")
    if num_shuffles < 0:
        raise ValueError(f"num_shuffles must be >= 0; got {num_shuffles}")
    true_values = measure(true_landmarks)
    predicted_values = measure(predicted_landmarks)

    results, valid = {}, []
    for name in MEASUREMENTS:
        x, y = true_values[name], predicted_values[name]
        entry = {
            "r": None,
            "p_value": None,
            "baseline_r": None,
            "baseline_abs_r": None,
            "permutation_p": None,
            "n": int(n),
        }
        # Constant over faces (max == min exactly; std can round to 1e-16): r is undefined.
        if np.isfinite(x).all() and np.isfinite(y).all() and np.ptp(x) > 0 and np.ptp(y) > 0:
            r, p = scipy.stats.pearsonr(x, y)
            entry["r"], entry["p_value"] = _json_float(r), _json_float(p)
            valid.append(name)
        results[name] = entry

    if valid and num_shuffles:
        shuffled = _shuffled_r(
            np.stack([true_values[name] for name in valid]),
            np.stack([predicted_values[name] for name in valid]),
            num_shuffles,
            seed,
        )
        for name, row in zip(valid, shuffled):
            entry = results[name]
            entry["baseline_r"] = float(row.mean())
            entry["baseline_abs_r"] = float(np.abs(row).mean())
            # A hair of slack so the identity pairing itself, if drawn, counts as "as large".
            extreme = np.sum(np.abs(row) >= abs(entry["r"]) - 1e-12)
            entry["permutation_p"] = float((extreme + 1) / (num_shuffles + 1))
    return results


def correlations_of(enc, num_shuffles: int = 1000, seed: int = 0) -> dict:
    """{feature set: `landmark_correlations`} of an `encode.Encoded`: the faces decoded from v_f
    (key "v_f": the decoder's own ceiling) and from v_s at each duration."""
    return {key: landmark_correlations(enc.landmarks, decoded, num_shuffles, seed)
            for key, decoded in enc.decoded_landmarks.items()}


def landmark_correlations(true_px, predicted_px, num_shuffles: int = 1000, seed: int = 0):
    """`correlate` over the examples whose true landmarks are known (finite); None when fewer
    than 3 are."""
    valid = np.isfinite(true_px).all(axis=(1, 2))
    if valid.sum() < 3:
        return None
    return correlate(true_px[valid], predicted_px[valid], num_shuffles, seed)
