"""dlib's 68-point shape predictor on aligned faces, and where dlib's model files are.

The builder finds faces in video frames with dlib's detector and then places the 68 points
(`speech2face.datasets.real.faces`); evaluation places them on the face decoder's canonical
faces, which are aligned already: every decoded face sits in the frame of the decoder's mean
landmarks, so one fixed box, that of the mean landmarks, stands in for a detection and the
points depend on the image alone (the paper's supplement measures "detected facial landmarks"
on both reconstructions). Faces smaller than 224×224 are upsampled to 224 first (bilinear), the
resolution of the builder's crops on which the predictor's points are stored in the records.

The model files come from the PyPI package face-recognition-models; nothing is downloaded.
"""

import importlib.util
import os

import numpy as np
import tensorflow as tf

from speech2face import records

CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
DETECT_SIZE = records.FACE_SIZE  # faces are placed at 224×224


def dlib_model_file(name: str) -> str:
    """Path of one of dlib's model files shipped by the `face-recognition-models` package.

    The files are found next to the package without importing it: its `__init__` needs
    `pkg_resources`, which setuptools 81 and later no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("dlib's model files come from the 'face-recognition-models' package, "
                          "which is not installed: pip install face-recognition-models")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: dlib model file missing from the "
                                "face-recognition-models install; reinstall that package")
    return path


def box_of(landmarks_normalized, size: int = DETECT_SIZE):
    """The pixel box (left, top, right, bottom; inclusive, as dlib's rectangles) around
    normalised landmarks [68, 2] at `size`, clipped to the image."""
    points = np.asarray(landmarks_normalized, np.float64) * size - 0.5
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    clip = lambda v: int(np.clip(round(v), 0, size - 1))  # noqa: E731
    return clip(x0), clip(y0), clip(x1), clip(y1)


class AlignedLandmarkPredictor:
    """dlib's 68-point predictor on faces aligned to a known frame.

    Args:
      mean_landmarks: normalised (x, y) [68, 2] of the frame the faces are aligned to (the face
        decoder's `mean_landmarks`); their bounding box is the face box for every image.
    """

    description = ("dlib's 68-point shape predictor (face-recognition-models) on the faces "
                   f"resized to {DETECT_SIZE}×{DETECT_SIZE}, face box = the bounding box of the "
                   "decoder's mean landmarks")

    def __init__(self, mean_landmarks):
        import dlib  # pylint: disable=import-outside-toplevel

        self._predictor = dlib.shape_predictor(dlib_model_file(LANDMARKS_FILE))
        self.box = box_of(mean_landmarks)
        self._rect = dlib.rectangle(*self.box)

    def __call__(self, images) -> np.ndarray:
        """float [N, S, S, 3] RGB in [0, 1] (or uint8) -> float32 [N, 68, 2] (x, y) pixels of
        the 224×224 frame (centres at integers, as the records store them)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"faces must be [N, H, W, 3] RGB; got shape {images.shape}")
        if images.dtype != np.uint8:
            if images.shape[1:3] != (DETECT_SIZE, DETECT_SIZE):
                images = tf.image.resize(images, [DETECT_SIZE] * 2).numpy()
            images = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
        elif images.shape[1:3] != (DETECT_SIZE, DETECT_SIZE):
            images = tf.image.resize(images, [DETECT_SIZE] * 2).numpy().round().astype(np.uint8)
        out = np.empty((len(images), records.NUM_LANDMARKS, 2), np.float32)
        for i, image in enumerate(images):
            shape = self._predictor(np.ascontiguousarray(image), self._rect)
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out
