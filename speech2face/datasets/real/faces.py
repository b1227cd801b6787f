"""The face side of the dataset builder: a frame, dlib's detector, the crop, landmarks.

    frame (ffmpeg, at a time in the clip) -> faces (dlib CNN/MMOD, or HOG; with a hint the CNN
    scans a window around the hinted face first, `FaceFinder.detect_near_hint`) -> the face
    nearest the hint -> square crop with margin -> 224×224 RGB -> 68 dlib landmarks in crop
    pixels

Coordinates: pixel centres are at integers, (0, 0) is the centre of the top-left pixel (dlib's
and the toy world's convention); landmarks are (x, y).

The crop is square, centred on the bounding box of the 68 landmarks (brows to chin, jaw to
jaw), with side `CROP_SCALE` (1.5) × that box's longer side: every landmark lies inside with a
quarter of the face's size as margin on each side, which also takes in the forehead and some hair
(the detected face fills about 2/3 of the crop, like the crops VGG-Face was trained on and like
the toy world's faces). Centring on the landmarks rather than on dlib's box makes the crop the
same whichever detector found the face: the CNN's boxes are tight and sit high (brows to lower
lip), HOG's lower, and either can cut the chin off. Parts of the square outside the frame are
black.

The models come from the PyPI package face-recognition-models (no download at run time; located by
`speech2face.models.dlib_landmarks`) and are loaded once per `FaceFinder` (in Beam: once per worker, in `DoFn.setup`).
"""

import collections
import dataclasses
import io
import math
import os
import subprocess
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

from speech2face.datasets.real.manifests import Reason, SkipClip
from speech2face import media, records
from speech2face.models.dlib_landmarks import CNN_DETECTOR_FILE, LANDMARKS_FILE, dlib_model_file

FACE_SIZE = records.FACE_SIZE  # 224
CROP_SCALE = 1.5  # crop side / longer side of the landmarks' bounding box
DETECTORS = ("cnn", "hog")
DEFAULT_MIN_FACE_SIZE = 64  # px in the frame, shorter side of dlib's box
DEFAULT_MAX_DETECT_SIDE = 640  # frames are downscaled to this longer side for detection only
JPEG_QUALITY = 95
NEAR_HINT_WINDOW = 2.0  # side of the window the CNN scans near a hint / the HOG face's size


class FaceError(SkipClip):
    """No usable face or frame; `reason` is a `manifests.Reason` value, the message says why."""


class Box(NamedTuple):
    """A detection in frame pixels: centre, size, and the detector's score (higher: surer)."""

    cx: float
    cy: float
    w: float
    h: float
    score: float


@dataclasses.dataclass
class Face:
    """One detected face, cropped.

    Attributes:
      crop: uint8 [224, 224, 3] RGB.
      landmarks: float32 [68, 2] (x, y) in crop pixels (dlib's 68-point order).
      box: the detector's box, in frame pixels.
      crop_box: (x0, y0, side) of the square crop in frame pixels (integers; may extend past
        the frame, where the crop is black).
    """

    crop: np.ndarray
    landmarks: np.ndarray
    box: Box
    crop_box: Tuple[int, int, int]


def last_line(text: str) -> str:
    """The last non-blank line of an ffmpeg error output (the one that says what failed)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def read_frame(path: str, seconds: float) -> Optional[np.ndarray]:
    """The video frame shown at `seconds`: uint8 [H, W, 3] RGB, or None if there is none there.

    Raises:
      FaceError: no video stream (NO_VIDEO_STREAM) or a file ffmpeg cannot open
        (UNREADABLE_MEDIA).
    """
    command = [media.ffmpeg_exe(), "-nostdin", "-v", "error",
               # -ss before -i seeks by index, then decodes up to the exact time (cheap and exact).
               "-ss", f"{max(seconds, 0.0):.3f}", "-i", "file:" + os.path.abspath(path),
               "-map", "0:v:0", "-frames:v", "1", "-f", "image2pipe", "-c:v", "bmp", "-"]
    result = subprocess.run(command, capture_output=True, check=False)
    stderr = result.stderr.decode("utf-8", errors="replace")
    if not result.stdout:
        if "matches no streams" in stderr:
            raise FaceError(Reason.NO_VIDEO_STREAM, f"{path}: no video stream")
        if result.returncode != 0:
            raise FaceError(Reason.UNREADABLE_MEDIA,
                            f"{path}: cannot decode a frame (ffmpeg: {last_line(stderr)})")
        return None  # seeking past the last frame gives no output and no error
    try:
        return np.asarray(Image.open(io.BytesIO(result.stdout)).convert("RGB"))
    except OSError as e:  # a frame cut off mid-way in a truncated file
        raise FaceError(Reason.UNREADABLE_MEDIA, f"{path}: bad frame at {seconds:.2f} s: {e}")


def load_image(path: str) -> np.ndarray:
    """A still image as uint8 [H, W, 3] RGB (EXIF rotation applied); FaceError if unreadable."""
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise FaceError(Reason.UNREADABLE_MEDIA, f"{path}: not a readable image ({e})") from e


def frame_times(start: float, end: float, tries: int, step: float = 0.5) -> List[float]:
    """The middle of [start, end] first, then neighbours ±step, ±2·step, ... inside it."""
    middle = 0.5 * (start + end)
    times = [middle]
    k = 1
    while len(times) < tries and k * step <= 0.5 * (end - start):
        times += [middle - k * step, middle + k * step]
        k += 1
    return times[:max(tries, 1)]


def pick_face(boxes: Sequence[Box], frame_shape, hint: Optional[Tuple[float, float]]) -> int:
    """Index of the box whose centre is nearest the normalised (x, y) hint of a frame
    [H, W, ...]; without a hint, the box the detector is surest of (not the largest: HOG's
    false positives on badges and patterns are often bigger than the face, and score far
    lower)."""
    if hint is None:
        return int(np.argmax([b.score for b in boxes]))
    height, width = frame_shape[:2]
    target = (hint[0] * width, hint[1] * height)
    return int(np.argmin([math.hypot(b.cx - target[0], b.cy - target[1]) for b in boxes]))


def _holds(box: Box, point: Tuple[float, float]) -> bool:
    """True if the (x, y) point lies within the box grown by half its size (hints mark a face's
    centre; HOG's boxes sit lower on the face than the CNN's)."""
    return abs(point[0] - box.cx) <= 0.75 * box.w and abs(point[1] - box.cy) <= 0.75 * box.h


def _round(x: float) -> int:
    # Halves always up (Python's round() sends them to the even neighbour, which would shift
    # some crops left and others right).
    return int(math.floor(x + 0.5))


def crop_face(frame: np.ndarray, box, crop_scale: float = CROP_SCALE):
    """Square crop of side crop_scale × max(w, h) centred on a (cx, cy, w, h) box, at 224×224.

    Returns:
      (crop uint8 [224, 224, 3], (x0, y0, side)): the crop covers frame pixels
      x0 .. x0 + side - 1 (and the same rows from y0); outside the frame it is black.
    """
    cx, cy, w, h = box
    side = max(int(round(crop_scale * max(w, h))), 1)
    x0, y0 = _round(cx - (side - 1) / 2), _round(cy - (side - 1) / 2)
    # PIL's crop pads with black where the box leaves the image; resize antialiases.
    crop = Image.fromarray(frame).crop((x0, y0, x0 + side, y0 + side))
    crop = crop.resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(crop), (x0, y0, side)


def to_crop_coords(points: np.ndarray, crop_box) -> np.ndarray:
    """Frame pixel (x, y) -> pixel (x, y) of the 224×224 crop (pixel centres at integers)."""
    x0, y0, side = crop_box
    scale = FACE_SIZE / side
    return ((np.asarray(points, np.float64) - (x0, y0) + 0.5) * scale - 0.5).astype(np.float32)


class FaceFinder:
    """dlib's detector and 68-point shape predictor, loaded once.

    Args:
      detector: "cnn" (dlib's MMOD CNN, docs/data.md; ~1-2 s per 640 px frame on one CPU core) or
        "hog" (the fast fallback, ~50× quicker, misses more non-frontal faces).
      upsample: times dlib upsamples the detection image; each doubles the smallest findable
        face's resolution and costs ~4× (without it faces under ~80 px at detection scale are
        missed).
      max_detect_side: frames are downscaled (for detection only) to this longer side.
      min_face_size: faces whose box's shorter side is below this (frame pixels) are rejected:
        upscaled to 224 they carry little identity.
      crop_scale: crop side / the landmarks' box's longer side, see the module docstring.
      near_hint: with the CNN and a hint, scan only a window around the hinted face first
        (`detect_near_hint`; ~8× faster on a 640×360 frame, the same faces found).

    Attributes:
      counts: how many `find` calls were answered by the window near the hint ("near_hint")
        and how many by the whole frame ("whole_frame").
    """

    def __init__(self, detector: str = "cnn", upsample: int = 0,
                 max_detect_side: int = DEFAULT_MAX_DETECT_SIDE,
                 min_face_size: int = DEFAULT_MIN_FACE_SIZE, crop_scale: float = CROP_SCALE,
                 near_hint: bool = True):
        import dlib  # pylint: disable=import-outside-toplevel

        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
        self.detector_name = detector
        self.upsample = int(upsample)
        self.max_detect_side = int(max_detect_side)
        self.min_face_size = float(min_face_size)
        self.crop_scale = float(crop_scale)
        self.near_hint = bool(near_hint)
        self.counts = collections.Counter()
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()  # the detector, or the CNN's locator
        if detector == "cnn":
            self._detector = dlib.cnn_face_detection_model_v1(dlib_model_file(CNN_DETECTOR_FILE))
        else:
            self._detector = self._hog
        self._predictor = dlib.shape_predictor(dlib_model_file(LANDMARKS_FILE))

    def _detection_image(self, frame: np.ndarray) -> Tuple[np.ndarray, float]:
        """The frame downscaled to max_detect_side (longer side), and that scale (<= 1)."""
        height, width = frame.shape[:2]
        scale = min(1.0, self.max_detect_side / max(height, width))
        image = frame
        if scale < 1.0:
            size = (max(int(round(width * scale)), 1), max(int(round(height * scale)), 1))
            image = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
        return np.ascontiguousarray(image), scale

    def _run(self, detector: str, image: np.ndarray, scale: float, x0: int = 0, y0: int = 0
             ) -> List[Box]:
        """One detector on (a window at x0, y0 of) the detection image -> Boxes in frame pixels."""
        if detector == "cnn":
            found = [(d.rect, d.confidence) for d in self._detector(image, self.upsample)]
        else:
            rects, scores, _ = self._hog.run(image, self.upsample, 0.0)
            found = list(zip(rects, scores))
        boxes = []
        for r, score in found:
            # dlib's right/bottom are inclusive pixel indices; pixel centres stay centres.
            cx, cy = x0 + 0.5 * (r.left() + r.right()), y0 + 0.5 * (r.top() + r.bottom())
            w, h = r.right() - r.left() + 1, r.bottom() - r.top() + 1
            boxes.append(Box((cx + 0.5) / scale - 0.5, (cy + 0.5) / scale - 0.5, w / scale,
                             h / scale, float(score)))
        return boxes

    def detect(self, frame: np.ndarray) -> List[Box]:
        """All faces in a uint8 [H, W, 3] RGB frame, in frame pixels."""
        image, scale = self._detection_image(frame)
        return self._run(self.detector_name, image, scale)

    def detect_near_hint(self, frame: np.ndarray, hint: Tuple[float, float]
                         ) -> Optional[List[Box]]:
        """The CNN's faces in a window around the hinted face, or None where that cannot stand
        in for `detect` (the caller then runs it on the whole frame).

        The CNN's cost grows with the pixels it scans (~1.8 s for a 640×360 frame on one core
        of this project's machine, docs/performance.md), most of it at full resolution, where
        it looks for the smallest faces. dlib's HOG detector (~0.02 s) says where a frontal
        face near the hint is and how big; the CNN then scans only a square of
        `NEAR_HINT_WINDOW` × that face's size around it. The result is used only if the CNN
        finds there a face holding the hint (`_holds`) clear of the window's inner edges (not
        cut by the window); a face nearer the hint than that one would overlap it, and the
        CNN keeps only one of two overlapping faces in a whole frame too. Otherwise, and
        whenever HOG finds no face holding the hint (a turned face) or the window would cover
        half the frame, the answer is None: the whole frame decides, as without a hint, so no
        face is lost to this shortcut.

        The boxes are the CNN's, found in a window: dlib's image pyramid then samples the face
        at other scales than in the whole frame, and the box may fall on the neighbouring
        pyramid level (80 or 96 px for a face of ~95); the landmarks that place the crop move
        by about a pixel, as much as they move when the video is shifted by one pixel.

        Args:
          frame: uint8 [H, W, 3] RGB.
          hint: normalised (x, y) of the speaker's face centre (an AVSpeech row's).

        Returns:
          The CNN's Boxes in the window, in frame pixels, or None (see above).
        """
        if self.detector_name != "cnn":
            return None
        image, scale = self._detection_image(frame)
        height, width = image.shape[:2]
        target = (hint[0] * frame.shape[1], hint[1] * frame.shape[0])
        located = [b for b in self._run("hog", image, scale) if _holds(b, target)]
        if not located:
            return None
        hog_box = located[pick_face(located, frame.shape, hint)]
        side = int(math.ceil(NEAR_HINT_WINDOW * max(hog_box.w, hog_box.h) * scale))
        if min(side, width) * min(side, height) > 0.5 * width * height:
            return None
        x0 = min(max(_round((hog_box.cx + 0.5) * scale - 0.5 - side / 2), 0), max(width - side, 0))
        y0 = min(max(_round((hog_box.cy + 0.5) * scale - 0.5 - side / 2), 0),
                 max(height - side, 0))
        window = np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])
        boxes = self._run("cnn", window, scale, x0, y0)
        # In frame pixels: the window's inner edges (those not on the frame's border).
        left, top = x0 / scale if x0 > 0 else -math.inf, y0 / scale if y0 > 0 else -math.inf
        right = (x0 + side) / scale if x0 + side < width else math.inf
        bottom = (y0 + side) / scale if y0 + side < height else math.inf
        margin = 0.1 * side / scale
        for b in boxes:
            if (_holds(b, target) and b.cx - b.w / 2 - margin > left
                    and b.cx + b.w / 2 + margin < right and b.cy - b.h / 2 - margin > top
                    and b.cy + b.h / 2 + margin < bottom):
                return boxes
        return None

    def landmarks(self, frame: np.ndarray, box: Box) -> np.ndarray:
        """dlib's 68 landmarks of the face in `box`: float32 [68, 2] (x, y) frame pixels."""
        cx, cy, w, h, _ = box
        left, top = _round(cx - (w - 1) / 2), _round(cy - (h - 1) / 2)
        rect = self._dlib.rectangle(left, top, left + int(round(w)) - 1, top + int(round(h)) - 1)
        shape = self._predictor(np.ascontiguousarray(frame), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

    def find(self, frame: np.ndarray, hint: Optional[Tuple[float, float]] = None) -> Face:
        """The face nearest the hint (the surest without one), cropped, with landmarks.

        Raises:
          FaceError: NO_FACE, or FACE_TOO_SMALL when the chosen face is under min_face_size.
        """
        boxes = None
        if self.near_hint and hint is not None:
            boxes = self.detect_near_hint(frame, hint)
            # A face too small is judged on the whole frame, as is every reject.
            if boxes is not None and min(*boxes[pick_face(boxes, frame.shape, hint)][2:4]
                                         ) < self.min_face_size:
                boxes = None
        self.counts["whole_frame" if boxes is None else "near_hint"] += 1
        if boxes is None:
            boxes = self.detect(frame)
        if not boxes:
            raise FaceError(Reason.NO_FACE, f"no face found by dlib's {self.detector_name} "
                            f"detector in a {frame.shape[1]}x{frame.shape[0]} frame")
        box = boxes[pick_face(boxes, frame.shape, hint)]
        if min(box.w, box.h) < self.min_face_size:
            raise FaceError(Reason.FACE_TOO_SMALL, f"face of {min(box.w, box.h):.0f} px, "
                            f"below the minimum of {self.min_face_size:.0f} px")
        marks = self.landmarks(frame, box)
        (x_min, y_min), (x_max, y_max) = marks.min(axis=0), marks.max(axis=0)
        face_box = (0.5 * (x_min + x_max), 0.5 * (y_min + y_max), x_max - x_min + 1,
                    y_max - y_min + 1)
        crop, crop_box = crop_face(frame, face_box, self.crop_scale)
        marks = to_crop_coords(marks, crop_box)
        return Face(crop=crop, landmarks=marks, box=box, crop_box=crop_box)

    def find_in_video(self, path: str, times: Sequence[float],
                      hint: Optional[Tuple[float, float]] = None) -> Tuple[Face, float]:
        """Tries the frames at `times` in order; returns the first face found and its time.

        Raises:
          FaceError: with the most telling failure: FACE_TOO_SMALL if some frame had a face,
            else NO_FACE; NO_VIDEO_STREAM if no frame decoded at all; UNREADABLE_MEDIA.
        """
        failures = []
        for t in times:
            frame = read_frame(path, t)
            if frame is None:
                continue
            try:
                return self.find(frame, hint), t
            except FaceError as e:
                failures.append(e)
        if not failures:
            raise FaceError(Reason.NO_VIDEO_STREAM, f"{path}: no video frame at "
                            f"{', '.join(f'{t:.2f}' for t in times)} s")
        small = [e for e in failures if e.reason == Reason.FACE_TOO_SMALL]
        worst = small[0] if small else failures[0]
        raise FaceError(worst.reason, f"{path}: {worst} ({len(failures)} frames tried)")
