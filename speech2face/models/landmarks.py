"""dlib's 68 facial landmarks as the face decoder uses them: normalised coordinates and a template.

Coordinates: (x, y) NORMALISED to the image, x, y in [0, 1] from the left/top edge to the
right/bottom edge, so one set of landmarks serves every resolution; pixel (row i, column j) has
its centre at ((j + 0.5) / W, (i + 0.5) / H). dlib and the records store pixels with centres at
integers.

`face_measures` and `is_canonical` tell frontal, neutral faces (what Cole et al. train their
decoder on) from turned, tilted or open-mouthed ones, from the landmarks alone.
"""

import numpy as np
import tensorflow as tf

from speech2face import records

# dlib's 68-point indices the measures use.
OUTER_EYE_CORNERS = (36, 45)  # image-left eye's outer corner, image-right eye's outer corner
NOSE_TIP = 30
MOUTH_CORNERS = (48, 54)
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper inner lip point, the one below it

# Default thresholds of `is_canonical`, Cole et al.'s "frontal, neutral expression" made numbers.
# Yaw: the nose tip lies ~4 cm in front of the outer eye corners, which are ~9 cm apart, so the
# yaw measure is ~0.85 tan(head yaw): 0.25 keeps heads turned by up to ~15°, the usual bound of
# "near-frontal" in face data sets.
MAX_YAW = 0.25
# Roll: the crops are not rotated upright (datasets/real/faces.py), and the decoded face is
# upright in the mean-landmark frame; 10° keeps ordinary head tilt and drops clearly tilted heads.
MAX_ROLL_DEG = 10.0
# Mouth: closed lips put dlib's inner-lip points (almost) together, and the template (0.09) and
# the toy world's faces (<= 0.05) have a thin mouth; the skimage astronaut's smile, lips parted
# over the teeth, measures 0.14 (tests/test_landmarks.py) and speech opens the mouth further.
# 0.10 keeps closed and barely parted mouths only.
MAX_MOUTH_OPEN = 0.10


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


def face_measures(landmarks):
    """Head-pose and expression proxies from the 68 landmarks [..., 68, 2] (x, y).

    Any frame with equal x and y scales serves (pixels or normalised coordinates give the same
    numbers: every measure is a ratio or an angle). NumPy in, NumPy out; a tf tensor in (e.g.
    inside tf.data), tensors out. Degenerate landmarks (the eye corners on one point) give NaN.

    Returns:
      dict of [...] float32 arrays:
        `yaw`: the nose tip's offset from the midpoint of the outer eye corners along the eye
          line, over half their distance: 0 frontal, positive with the nose tip towards the
          image's right (~0.85 tan of the head's yaw, see MAX_YAW);
        `roll_deg`: the angle of the eye line (36 -> 45) in degrees, positive clockwise on
          screen (the image-right eye lower);
        `mouth_open`: the mean gap between the inner lips (61-67, 62-66, 63-65) over the mouth
          width (48-54): ~0 closed.
    """
    is_tf = tf.is_tensor(landmarks)
    lm = tf.cast(landmarks, tf.float32) if is_tf else np.asarray(landmarks, np.float32)
    norm = tf.norm if is_tf else np.linalg.norm
    reduce_sum = tf.reduce_sum if is_tf else np.sum
    atan2 = tf.math.atan2 if is_tf else np.arctan2
    with np.errstate(divide="ignore", invalid="ignore"):
        left, right = lm[..., OUTER_EYE_CORNERS[0], :], lm[..., OUTER_EYE_CORNERS[1], :]
        eye_line = right - left
        eye_distance = norm(eye_line, axis=-1)
        offset = lm[..., NOSE_TIP, :] - 0.5 * (left + right)
        yaw = reduce_sum(offset * eye_line, axis=-1) / (0.5 * eye_distance * eye_distance)
        roll = atan2(eye_line[..., 1], eye_line[..., 0]) * np.float32(180.0 / np.pi)
        gaps = [norm(lm[..., a, :] - lm[..., b, :], axis=-1) for a, b in INNER_LIP_PAIRS]
        width = norm(lm[..., MOUTH_CORNERS[1], :] - lm[..., MOUTH_CORNERS[0], :], axis=-1)
        mouth_open = (gaps[0] + gaps[1] + gaps[2]) / (np.float32(len(gaps)) * width)
    return {"yaw": yaw, "roll_deg": roll, "mouth_open": mouth_open}


def is_canonical(landmarks, max_yaw: float = MAX_YAW, max_roll_deg: float = MAX_ROLL_DEG,
                 max_mouth_open: float = MAX_MOUTH_OPEN):
    """[..., 68, 2] landmarks -> [...] bool: frontal (|yaw| and |roll| within bounds) and neutral
    (mouth opening within bound); see `face_measures` and the module constants for the defaults.
    NaN measures (degenerate landmarks) fail. NumPy in, NumPy out; a tf tensor in, a tensor out.
    """
    m = face_measures(landmarks)
    if tf.is_tensor(m["yaw"]):
        return ((tf.abs(m["yaw"]) <= max_yaw) & (tf.abs(m["roll_deg"]) <= max_roll_deg)
                & (m["mouth_open"] <= max_mouth_open))
    return ((np.abs(m["yaw"]) <= max_yaw) & (np.abs(m["roll_deg"]) <= max_roll_deg)
            & (m["mouth_open"] <= max_mouth_open))
