"""Craniofacial measurements from 68-point landmarks, and the paper's F2F/S2F correlation study.

The paper's supplement measures two canonical faces of each test clip, the face decoder's
reconstruction from the true face feature (F2F, from v_f) and from speech (S2F, from v_s), on
landmarks *detected* on both images, and reports the Pearson correlation per measurement over
1,000 test images (nasal index 0.38, nose width 0.35; random baseline 0.02 from random F2F/S2F
pairs). `study` does that on an `encode.Encoded` (dlib's 68-point predictor on the decoded
images, and the decoder's landmark branch as a second, labelled source), at every exaggeration
encoded; it also keeps two comparisons that are not the paper's: the true face's stored
landmarks against S2F's and against F2F's (the decoder's own ceiling). docs/evaluation.md.

Landmarks are dlib's 68 points (iBUG 300-W order), 0-based:

    0–16 jaw line (0 and 16 beside the ears, 8 the chin)   27–30 nose bridge (27 at the nasion)
    31–35 lower nose (31, 35 the alae, 33 the subnasale)   36–41, 42–47 the eyes (36, 45 outer
    corners; 39, 42 inner corners)                         48–59 outer lips (48, 54 the corners;
    50, 52 the peaks of the Cupid's bow, 51 the top of the upper lip, 57 the bottom of the lower
    lip); 60–67 inner lips (62 and 66 meet at the stomion when the mouth is closed)

The measurements are the paper's list, by their anthropometric definitions (Farkas' points),
each on the nearest dlib points; "≈" marks those whose anthropometric point dlib does not
place (gonion, zygion, subalare, crista philtri), so the value is an approximation, and
`labio_oral_region` the one the paper names without a definition (here the area inside the
outer lip line). Distances and areas are in the landmarks' units (pixels of the 224 frame for
decoded faces, which share one frame, so they compare directly); indices are ratios × 100.
"""

import numpy as np
import scipy.stats

from speech2face import records
from speech2face.evaluation import encode

NUM_LANDMARKS = records.NUM_LANDMARKS  # dlib's 68 points
STUDY_SIZE = 1000  # test faces of the paper's study

# name -> how it is computed ("sto" = stomion, the midpoint of p62 and p66).
_DEFINITIONS = {
    "upper_lip_height": "subnasale to stomion (sn–sto): |p33 − sto|",
    "lateral_upper_lip_height_right": "≈ sbal–cph, the face's right: |p31 − p50|",
    "lateral_upper_lip_height_left": "≈ sbal–cph, the face's left: |p35 − p52|",
    "jaw_width": "≈ go–go (dlib has no gonion; p4, p12 sit on the lower jaw): |p4 − p12|",
    "nose_height": "nasion to subnasale (n–sn): |p27 − p33|",
    "nose_width": "alar width (al–al): |p31 − p35|",
    "labio_oral_region": "area inside the outer lip line p48–p59 (px²; the paper gives no "
                         "definition)",
    "mandibular_index": "sto–gn / go–go × 100: |sto − p8| / jaw_width × 100",
    "intercanthal_index": "en–en / ex–ex × 100: |p39 − p42| / |p36 − p45| × 100",
    "nasal_index": "al–al / n–sn × 100: nose_width / nose_height × 100",
    "vermilion_height_index": "ls–sto / sto–li × 100: |p51 − sto| / |sto − p57| × 100",
    "mouth_face_width_index": "ch–ch / ≈ zy–zy × 100 (the jaw line's ends stand in for the "
                              "zygia): |p48 − p54| / |p0 − p16| × 100",
    "nose_area": "area of the polygon p27, p35, p34, p33, p32, p31 (px²)",
}
MEASUREMENTS = tuple(_DEFINITIONS)
# The measurements the paper reports numbers for (its Table of the supplement).
PAPER = {"nasal_index": 0.38, "nose_width": 0.35}
PAPER_RANDOM = 0.02


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


def _polygon_area(points):
    """Shoelace area of polygons [..., k, 2]."""
    x, y = points[..., 0], points[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y,
                               axis=-1))


def measure(landmarks):
    """All `MEASUREMENTS` of faces given as landmarks.

    Args:
      landmarks: [..., 68, 2] (x, y) in dlib order (e.g. [N, 68, 2]), any units.

    Returns:
      dict name -> float64 [...] (e.g. [N]), in the order of `MEASUREMENTS`. Distances are in
      the landmarks' units, areas in their square; indices are ratios × 100 (NaN where the
      denominator is 0).

    Raises:
      ValueError: wrong shape or non-finite coordinates.
    """
    p = _check_landmarks(landmarks, "landmarks")
    sto = 0.5 * (p[..., 62, :] + p[..., 66, :])

    def dist(a, b):
        return np.linalg.norm(a - b, axis=-1)

    def ratio(num, den):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, 100.0 * num / den, np.nan)

    jaw_width = dist(p[..., 4, :], p[..., 12, :])
    nose_width, nose_height = dist(p[..., 31, :], p[..., 35, :]), dist(p[..., 27, :], p[..., 33, :])
    values = {
        "upper_lip_height": dist(p[..., 33, :], sto),
        "lateral_upper_lip_height_right": dist(p[..., 31, :], p[..., 50, :]),
        "lateral_upper_lip_height_left": dist(p[..., 35, :], p[..., 52, :]),
        "jaw_width": jaw_width,
        "nose_height": nose_height,
        "nose_width": nose_width,
        "labio_oral_region": _polygon_area(p[..., 48:60, :]),
        "mandibular_index": ratio(dist(sto, p[..., 8, :]), jaw_width),
        "intercanthal_index": ratio(dist(p[..., 39, :], p[..., 42, :]),
                                    dist(p[..., 36, :], p[..., 45, :])),
        "nasal_index": ratio(nose_width, nose_height),
        "vermilion_height_index": ratio(dist(p[..., 51, :], sto), dist(sto, p[..., 57, :])),
        "mouth_face_width_index": ratio(dist(p[..., 48, :], p[..., 54, :]),
                                        dist(p[..., 0, :], p[..., 16, :])),
        "nose_area": _polygon_area(p[..., [27, 35, 34, 33, 32, 31], :]),
    }
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


def correlate(landmarks_a, landmarks_b, num_shuffles=1000, seed=0, names=("a", "b")):
    """Pearson correlation per measurement between two sets of faces, row i of one against
    row i of the other (e.g. F2F and S2F faces of the same clips).

    The random baseline pairs each face of `landmarks_a` with another clip's face of
    `landmarks_b`: b's measurements are shuffled across faces `num_shuffles` times (the same
    permutations for every measurement) and r is recomputed. Its mean r is ≈ 0 by construction;
    its mean |r| (≈ √(2/(π·n)) for n faces) is the size of correlation that chance alone
    produces. The paper does not say which its "random baseline 0.02" is (a mean |r| of 0.02
    would mean ≈ 1,600 faces): report both. `permutation_p` is the share of shuffles with |r|
    at least the observed one, (count + 1) / (num_shuffles + 1), a check on scipy's p-value
    that does not assume normality.

    Args:
      landmarks_a, landmarks_b: [N, 68, 2] (x, y), N >= 3, in one frame (or read only the
        scale-free indices).
      num_shuffles: random pairings of the baseline (0 skips it).
      seed: of the shuffles.
      names: what the two sets are, for the reasons (e.g. ("F2F", "S2F")).

    Returns:
      {name: {"r", "p_value", "baseline_r", "baseline_abs_r", "permutation_p", "n", "reason"}}
      with Python floats, ready for json.dump; where r cannot be computed it and the baseline
      are None and "reason" says why (else "reason" is None).

    Raises:
      ValueError: shapes differ, fewer than 3 faces, or non-finite coordinates.
    """
    landmarks_a = _check_landmarks(landmarks_a, "landmarks_a")
    landmarks_b = _check_landmarks(landmarks_b, "landmarks_b")
    if landmarks_a.shape != landmarks_b.shape or landmarks_a.ndim != 3:
        raise ValueError(
            f"landmarks_a and landmarks_b must both be [N, 68, 2] with the same N; "
            f"got {landmarks_a.shape} and {landmarks_b.shape}"
        )
    n = landmarks_a.shape[0]
    if n < 3:
        raise ValueError(f"correlate needs at least 3 faces; got {n}")
    if num_shuffles < 0:
        raise ValueError(f"num_shuffles must be >= 0; got {num_shuffles}")
    values_a, values_b = measure(landmarks_a), measure(landmarks_b)

    results, valid = {}, []
    for name in MEASUREMENTS:
        x, y = values_a[name], values_b[name]
        entry = {"r": None, "p_value": None, "baseline_r": None, "baseline_abs_r": None,
                 "permutation_p": None, "n": int(n), "reason": _undefined_reason(x, y, names)}
        if entry["reason"] is None:
            r, p = scipy.stats.pearsonr(x, y)
            entry["r"], entry["p_value"] = _json_float(r), _json_float(p)
            valid.append(name)
        results[name] = entry

    if valid and num_shuffles:
        shuffled = _shuffled_r(np.stack([values_a[name] for name in valid]),
                               np.stack([values_b[name] for name in valid]), num_shuffles, seed)
        for name, row in zip(valid, shuffled):
            entry = results[name]
            entry["baseline_r"] = float(row.mean())
            entry["baseline_abs_r"] = float(np.abs(row).mean())
            # A hair of slack so the identity pairing itself, if drawn, counts as "as large".
            extreme = np.sum(np.abs(row) >= abs(entry["r"]) - 1e-12)
            entry["permutation_p"] = float((extreme + 1) / (num_shuffles + 1))
    return results


def _undefined_reason(x, y, names):
    """Why Pearson r of x and y is undefined, or None when it is not."""
    for name, v in zip(names, (x, y)):
        bad = int(np.sum(~np.isfinite(v)))
        if bad:
            return f"undefined on {bad} of {len(v)} {name} faces (points that coincide)"
        # Constant over faces (max == min exactly; std can round to 1e-16): r is undefined.
        if np.ptp(v) == 0:
            return f"the same on every {name} face ({float(v[0]):.4g})"
    return None


def exaggeration_key(exaggeration: float) -> str:
    """The key of an exaggeration in metrics.json: 0 -> "0", 0.7 -> "0.7"."""
    return f"{float(exaggeration):g}"


def study(enc, num_shuffles: int = 1000, seed: int = 0) -> dict:
    """The craniofacial comparisons of an `encode.Encoded` (its first `study_size` rows).

    Returns:
      {"f2f_s2f": {duration: {exaggeration key: table}} on dlib's landmarks detected on the
         decoded images (the paper's study; None per duration when no detector ran),
       "f2f_s2f_decoder_landmarks": the same on the decoder's landmark branch,
       "true_s2f": {duration: table} true stored landmarks vs S2F's landmark branch (not the
         paper's), "true_f2f": table, the same for F2F (the decoder's ceiling)}, each table a
      `correlate` result, or None when fewer than 3 faces are available.
    """
    rows = enc.study_size
    out = {"f2f_s2f": {}, "f2f_s2f_decoder_landmarks": {}, "true_s2f": {}}
    for source, landmarks in (("f2f_s2f", enc.detected_landmarks),
                              ("f2f_s2f_decoder_landmarks", enc.decoded_landmarks)):
        for duration in enc.durations:
            if encode.V_F not in landmarks or rows < 3:
                out[source][duration] = None
                continue
            out[source][duration] = {
                exaggeration_key(e): correlate(landmarks[encode.V_F][:rows],
                                               landmarks[encode.face_key(duration, e)][:rows],
                                               num_shuffles, seed, ("F2F", "S2F"))
                for e in enc.exaggerations}
    for duration in enc.durations:
        out["true_s2f"][duration] = _with_true(enc.landmarks[:rows],
                                               enc.decoded_landmarks[duration][:rows],
                                               num_shuffles, seed, "S2F")
    out["true_f2f"] = _with_true(enc.landmarks[:rows], enc.decoded_landmarks[encode.V_F][:rows],
                                 num_shuffles, seed, "F2F")
    return out


def _with_true(true_px, predicted_px, num_shuffles, seed, name):
    """`correlate` over the faces whose true landmarks are known (finite); None when fewer than
    3 are."""
    valid = np.isfinite(true_px).all(axis=(1, 2))
    if valid.sum() < 3:
        return None
    return correlate(true_px[valid], predicted_px[valid], num_shuffles, seed, ("true", name))
