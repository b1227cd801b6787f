"""dlib's 68-point predictor on aligned faces (speech2face.models.dlib_landmarks)."""

import numpy as np
import pytest

from speech2face.datasets.real import faces
from speech2face.models import dlib_landmarks
from speech2face.models import landmarks as landmarks_lib
from tests.support import fake_media


@pytest.fixture(scope="module")
def aligned_face():
    """A real face cropped by the builder (HOG): 224×224 uint8 and its 68 landmarks."""
    face = faces.FaceFinder("hog").find(fake_media.face_frame())
    return face.crop, face.landmarks


def test_fixed_box_finds_the_builders_landmarks(aligned_face):
    crop, marks = aligned_face
    predictor = dlib_landmarks.AlignedLandmarkPredictor(
        landmarks_lib.pixels_to_normalized(marks, 224))
    left, top, right, bottom = predictor.box
    assert left == round(marks[:, 0].min()) and bottom == round(marks[:, 1].max())
    found = predictor(crop[None])
    assert found.shape == (1, 68, 2) and found.dtype == np.float32
    # The box of the landmarks themselves instead of the detector's: within a few pixels.
    assert np.median(np.linalg.norm(found[0] - marks, axis=-1)) < 4.0
    # Float faces in [0, 1] at a smaller size are upsampled to 224 first: the same points.
    small = crop[::2, ::2].astype(np.float32) / 255.0
    found_small = predictor(small[None])
    assert np.median(np.linalg.norm(found_small[0] - marks, axis=-1)) < 6.0


def test_points_follow_the_image(aligned_face):
    crop, marks = aligned_face
    predictor = dlib_landmarks.AlignedLandmarkPredictor(
        landmarks_lib.pixels_to_normalized(marks, 224))
    shifted = np.roll(crop, 6, axis=1)  # the face 6 px to the right, the box where it was
    moved = predictor(np.stack([crop, shifted]))
    assert np.median(moved[1, :, 0] - moved[0, :, 0]) == pytest.approx(6.0, abs=2.0)
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        predictor(crop)


def test_model_files_come_from_face_recognition_models():
    path = dlib_landmarks.dlib_model_file(dlib_landmarks.LANDMARKS_FILE)
    assert "face_recognition_models" in path
    with pytest.raises(FileNotFoundError, match="no_such_model.dat"):
        dlib_landmarks.dlib_model_file("no_such_model.dat")
