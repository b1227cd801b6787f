"""Landmark coordinates, the template and the canonical-face measures
(speech2face.models.landmarks)."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from speech2face.datasets.real import faces
from speech2face.models import landmarks as lm
from tests.support import fake_media

CENTRE = np.array([0.5, 0.5], np.float32)


def _turned(yaw_deg: float, nose_depth: float = 0.2) -> np.ndarray:
    """The template turned about the vertical axis through x = 0.5, every point in one plane
    except the nose tip, `nose_depth` in front of it (orthographic camera)."""
    face = lm.template_landmarks().astype(np.float64)
    depth = np.zeros(len(face))
    depth[lm.NOSE_TIP] = nose_depth
    a = np.deg2rad(yaw_deg)
    face[:, 0] = 0.5 + (face[:, 0] - 0.5) * np.cos(a) + depth * np.sin(a)
    return face.astype(np.float32)


def _rolled(face: np.ndarray, roll_deg: float) -> np.ndarray:
    a = np.deg2rad(roll_deg)  # clockwise on screen (y points down)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    return (face - CENTRE) @ rot.T + CENTRE


def _open_mouth(face: np.ndarray, drop: float) -> np.ndarray:
    """The lower lip (outer 55-59, inner 65-67) moved down by `drop`, as when speaking."""
    face = face.copy()
    face[[55, 56, 57, 58, 59, 65, 66, 67], 1] += drop
    return face


def test_pixel_conversion_round_trips():
    pixels = np.array([[0.0, 0.0], [223.0, 111.5]], np.float32)
    normalized = lm.pixels_to_normalized(pixels, 224)
    np.testing.assert_allclose(normalized, [[0.5 / 224, 0.5 / 224], [223.5 / 224, 112 / 224]])
    np.testing.assert_allclose(lm.normalized_to_pixels(normalized, 224), pixels, atol=1e-4)


def test_the_template_is_frontal_and_neutral():
    m = lm.face_measures(lm.template_landmarks())
    assert m["yaw"] == pytest.approx(0.0, abs=1e-6)
    assert m["roll_deg"] == pytest.approx(0.0, abs=1e-6)
    assert m["mouth_open"] == pytest.approx(0.0878, abs=1e-3)
    assert m["mouth_open"] < lm.MAX_MOUTH_OPEN
    assert lm.is_canonical(lm.template_landmarks())


def test_yaw_follows_the_head_turn_and_ignores_roll_and_scale():
    # Eye corners 0.48 apart and the nose tip 0.2 in front: yaw measure = (0.2 / 0.24) tan θ.
    for degrees in (-30.0, -5.0, 10.0, 25.0):
        m = lm.face_measures(_turned(degrees))
        assert m["yaw"] == pytest.approx(0.2 / 0.24 * np.tan(np.deg2rad(degrees)), rel=1e-4)
    assert lm.face_measures(_turned(10.0))["yaw"] > 0  # nose tip towards the image's right
    turned = _turned(12.0)
    pixels = lm.normalized_to_pixels(_rolled(turned, 8.0), 224)
    m = lm.face_measures(pixels)
    assert m["yaw"] == pytest.approx(lm.face_measures(turned)["yaw"], rel=1e-4)
    assert m["roll_deg"] == pytest.approx(8.0, abs=1e-3)
    assert lm.face_measures(_open_mouth(turned, 0.05))["yaw"] == pytest.approx(
        lm.face_measures(turned)["yaw"], rel=1e-5)


def test_turned_tilted_and_open_mouthed_faces_are_not_canonical():
    template = lm.template_landmarks()
    assert lm.is_canonical(_turned(8.0)) and lm.is_canonical(_turned(-8.0))
    assert not lm.is_canonical(_turned(25.0)) and not lm.is_canonical(_turned(-25.0))
    assert lm.is_canonical(_rolled(template, -6.0))
    assert not lm.is_canonical(_rolled(template, 15.0))
    assert not lm.is_canonical(_rolled(template, -15.0))
    assert lm.is_canonical(_open_mouth(template, 0.001))
    opened = _open_mouth(template, 0.05)  # lips ≈ 0.07 apart on a 0.22-wide mouth
    assert lm.face_measures(opened)["mouth_open"] == pytest.approx(
        np.mean([0.012 * 2 * np.sin(np.pi / 4), 0.024, 0.012 * 2 * np.sin(np.pi / 4)]) / 0.22
        + 0.05 / 0.22, rel=1e-3)
    assert not lm.is_canonical(opened)
    # The bounds are parameters: a looser mouth bound keeps it.
    assert lm.is_canonical(opened, max_mouth_open=0.5)
    assert lm.is_canonical(_turned(25.0), max_yaw=0.5)


def test_numpy_and_tf_agree_on_batches_and_degenerate_faces_fail():
    faces = np.stack([np.stack([lm.template_landmarks(), _turned(25.0), _open_mouth(
        lm.template_landmarks(), 0.05)]), np.stack([_rolled(lm.template_landmarks(), 15.0),
                                                    _turned(5.0), np.zeros((68, 2), np.float32)])])
    expected = [[True, False, False], [False, True, False]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division warnings for the all-zero face
        keep = lm.is_canonical(faces)
    assert keep.shape == (2, 3) and keep.dtype == bool
    np.testing.assert_array_equal(keep, expected)
    keep_tf = tf.function(lm.is_canonical)(tf.constant(faces))
    np.testing.assert_array_equal(keep_tf.numpy(), expected)
    measures_tf = lm.face_measures(tf.constant(faces))
    for name, value in lm.face_measures(faces).items():
        np.testing.assert_allclose(measures_tf[name].numpy(), value, rtol=1e-5, atol=1e-6)


def test_a_real_smile_with_parted_lips_is_frontal_but_not_neutral():
    """The skimage astronaut as the record builder crops her (dlib HOG + 68 points): facing the
    camera, smiling with the teeth showing."""
    marks = faces.FaceFinder("hog").find(fake_media.face_frame()).landmarks
    m = lm.face_measures(marks)
    assert abs(m["yaw"]) < 0.1 and abs(m["roll_deg"]) < 5.0
    assert 0.12 < m["mouth_open"] < 0.16
    assert not lm.is_canonical(marks)
    assert lm.is_canonical(marks, max_mouth_open=0.2)
