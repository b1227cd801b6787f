"""Craniofacial measurements from dlib-order landmarks, and their correlation (docs/evaluation.md)."""

import json

import numpy as np
import pytest

from speech2face.evaluation import craniofacial


def _hand_made_face():
    """68 landmarks [68, 2] with hand-placed points for every measurement; the rest at (0, 0)."""
    points = np.zeros((68, 2))
    points[0], points[16] = (0.0, 40.0), (120.0, 40.0)  # face width 120
    points[4], points[12] = (15.0, 90.0), (105.0, 90.0)  # jaw width 90
    points[8] = (60.0, 130.0)  # chin (gnathion)
    points[27] = (60.0, 40.0)  # nasion
    points[31], points[35] = (48.0, 80.0), (72.0, 80.0)  # nose width 24
    points[33] = (60.0, 80.0)  # subnasale: nose height 40
    points[32], points[34] = (54.0, 82.0), (66.0, 82.0)  # nose polygon: 480 + 2 × 12 px²
    points[36], points[45] = (20.0, 40.0), (100.0, 40.0)  # biocular width 80
    points[39], points[42] = (45.0, 40.0), (75.0, 40.0)  # intercanthal width 30
    # Outer lips 48-59 from the left corner, clockwise: mouth width 40, area 496 px² (the
    # lip height at x = 40, 46, 52, 60, 68, 74, 80 is 0, 12, 16, 16, 16, 12, 0).
    points[48:60] = [(40, 100), (46, 94), (52, 92), (60, 92), (68, 92), (74, 94), (80, 100),
                     (74, 106), (68, 108), (60, 108), (52, 108), (46, 106)]
    points[62] = points[66] = (60.0, 100.0)  # stomion, 8 below the upper lip's top (51)
    return points


EXPECTED = {
    "upper_lip_height": 20.0,  # subnasale (60, 80) to the stomion (60, 100)
    "lateral_upper_lip_height_right": np.sqrt(4**2 + 12**2),  # p31 (48, 80) to p50 (52, 92)
    "lateral_upper_lip_height_left": np.sqrt(4**2 + 12**2),
    "jaw_width": 90.0,
    "nose_height": 40.0,
    "nose_width": 24.0,
    "labio_oral_region": 496.0,
    "mandibular_index": 100.0 * 30.0 / 90.0,  # stomion to chin over jaw width
    "intercanthal_index": 37.5,
    "nasal_index": 60.0,
    "vermilion_height_index": 100.0,  # 8 above the stomion, 8 below
    "mouth_face_width_index": 100.0 / 3.0,
    "nose_area": 504.0,
}


def _random_faces(n, seed):
    rng = np.random.default_rng(seed)
    return _hand_made_face() + rng.normal(0.0, 3.0, (n, 68, 2))


def test_exact_values_on_a_hand_made_face():
    values = craniofacial.measure(_hand_made_face()[None])
    assert tuple(values) == craniofacial.MEASUREMENTS == tuple(EXPECTED)
    for name, expected in EXPECTED.items():
        assert values[name].shape == (1,)
        np.testing.assert_allclose(values[name][0], expected, err_msg=name)
        assert craniofacial.describe(name)


def test_indices_are_scale_and_translation_invariant():
    faces = _random_faces(5, seed=0)
    moved = 3.7 * faces + np.array([11.0, -4.0])
    before, after = craniofacial.measure(faces), craniofacial.measure(moved)
    for name in craniofacial.MEASUREMENTS:
        if name.endswith("_index"):
            np.testing.assert_allclose(after[name], before[name], rtol=1e-12)
        elif name in ("labio_oral_region", "nose_area"):
            np.testing.assert_allclose(after[name], 3.7**2 * before[name], rtol=1e-12)
        else:
            np.testing.assert_allclose(after[name], 3.7 * before[name], rtol=1e-12)


def test_measure_keeps_leading_dimensions():
    values = craniofacial.measure(_random_faces(6, seed=1).reshape(2, 3, 68, 2))
    assert all(v.shape == (2, 3) for v in values.values())


def test_correlate_identical_inputs_and_random_baseline():
    faces = _random_faces(200, seed=2)
    result = craniofacial.correlate(faces, faces.copy(), num_shuffles=200)
    for name, entry in result.items():
        np.testing.assert_allclose(entry["r"], 1.0, err_msg=name)
        assert entry["p_value"] < 1e-10
        assert abs(entry["baseline_r"]) < 0.02
        # Mean |r| of random pairings ≈ √(2 / (π n)) = 0.056 for 200 faces.
        assert 0.03 < entry["baseline_abs_r"] < 0.09
        assert entry["permutation_p"] == pytest.approx(1 / 201)
        assert entry["n"] == 200


def test_correlate_unrelated_faces_is_not_significant():
    result = craniofacial.correlate(
        _random_faces(300, seed=3), _random_faces(300, seed=4), num_shuffles=100
    )
    rs = np.array([entry["r"] for entry in result.values()])
    assert np.all(np.abs(rs) < 0.2)


def test_correlate_output_is_strict_json():
    faces = _random_faces(10, seed=5)
    predicted = faces.copy()
    predicted[:, 31], predicted[:, 35] = (48.0, 80.0), (72.0, 80.0)  # one nose width: r undefined
    result = craniofacial.correlate(faces, predicted, num_shuffles=10)
    assert result["nose_width"]["r"] is None
    assert result["nose_width"]["reason"] == "the same on every b face (24)"
    assert isinstance(result["jaw_width"]["r"], float) and result["jaw_width"]["reason"] is None
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_a_zero_denominator_is_named():
    faces = _random_faces(10, seed=6)
    faces[3, 36] = faces[3, 45]  # no biocular width: no intercanthal index for this face
    entry = craniofacial.correlate(faces, faces, num_shuffles=0, names=("F2F", "S2F"))[
        "intercanthal_index"]
    assert entry["r"] is None and entry["reason"] == (
        "undefined on 1 of 10 F2F faces (points that coincide)")


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[\.\.\., 68, 2\]"):
        craniofacial.measure(np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match="same N"):
        craniofacial.correlate(_random_faces(5, 0), _random_faces(6, 0))
    with pytest.raises(ValueError, match="at least 3"):
        craniofacial.correlate(_random_faces(2, 0), _random_faces(2, 0))
