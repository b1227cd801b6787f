"""dlib's 68 facial landmarks as the face decoder uses them: normalised coordinates and a template.

Coordinates: (x, y) NORMALISED to the image, x, y in [0, 1] from the left/top edge to the
right/bottom edge, so one set of landmarks serves every resolution; pixel (row i, column j) has
its centre at ((j + 0.5) / W, (i + 0.5) / H). dlib and the records store pixels with centres at
integers.
"""

import numpy as np
import tensorflow as tf

from speech2face import records

def pixels_to_normalized(landmarks, image_size):
    """[..., 2] (x, y) pixels with centres at integers (dlib, the records) → normalised [0, 1].

    NumPy in, NumPy out; a tf tensor in (e.g. inside tf.data), a tensor out.
    """
    if not tf.is_tensor(landmarks):
        landmarks = np.asarray(landmarks, np.float32)
    return (landmarks + 0.5) / np.float32(image_size)


def normalized_to_pixels(landmarks, image_size):
    """The inverse of `pixels_to_normalized`: float32 [..., 2] pixel (x, y) at `image_size`."""
    return np.asarray(landmarks, np.float32) * np.float32(image_size) - 0.5


def template_landmarks() -> np.ndarray:
    """A generic frontal 68-point face in dlib's order, normalised: float32 [68, 2].

    Only a starting value: set the training set's mean with `FaceDecoder.set_mean_landmarks`.
    """
    lm = np.zeros((records.NUM_LANDMARKS, 2))
    t = np.linspace(0.0, np.pi, 17)  # jaw 0-16, image left → chin → image right
    lm[0:17] = np.stack([0.5 - 0.36 * np.cos(t), 0.42 + 0.42 * np.sin(t)], axis=1)
    brow_x = np.linspace(0.20, 0.44, 5)
    brow_y = 0.34 - 0.03 * np.sin(np.linspace(0.3, 2.8, 5))
    lm[17:22] = np.stack([brow_x, brow_y], axis=1)
    lm[22:27] = np.stack([1.0 - brow_x[::-1], brow_y[::-1]], axis=1)
    lm[27:31] = np.stack([np.full(4, 0.5), np.linspace(0.42, 0.58, 4)], axis=1)  # nose bridge
    lm[31:36] = np.stack([np.linspace(0.44, 0.56, 5), [0.62, 0.63, 0.64, 0.63, 0.62]], axis=1)
    ex = np.array([-1.0, -0.35, 0.35, 1.0, 0.35, -0.35]) * 0.06
    ey = np.array([0.0, -1.0, -1.0, 0.0, 1.0, 1.0]) * 0.02
    lm[36:42] = np.stack([0.32 + ex, 0.43 + ey], axis=1)
    lm[42:48] = np.stack([0.68 + ex, 0.43 + ey], axis=1)
    a = np.linspace(np.pi, -np.pi, 13)[:12]  # outer lip 48-59 from the left corner, clockwise
    lm[48:60] = np.stack([0.5 + 0.11 * np.cos(a), 0.74 - 0.035 * np.sin(a)], axis=1)
    a = np.linspace(np.pi, -np.pi, 9)[:8]
    lm[60:68] = np.stack([0.5 + 0.08 * np.cos(a), 0.74 - 0.012 * np.sin(a)], axis=1)
    return lm.astype(np.float32)
