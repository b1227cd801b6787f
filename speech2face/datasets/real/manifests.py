"""What the dataset builder reads: manifests of the three formats parsed into uniform `Clip`s.

Formats (docs/data.md; `media_dir` is the directory the relative paths are under):

    avspeech   CSV rows `youtube_id, start_seconds, end_seconds, x, y`, no header (AVSpeech's own
               avspeech_train.csv / avspeech_test.csv). The video is `<media_dir>/<youtube_id>`
               with extension .mp4, .mkv or .webm (looked up when the clip is processed); (x, y)
               is the normalised position of the speaker's face centre in the frame, in [0, 1].
               The speaker id is the YouTube id (AVSpeech has no speaker ids). An optional
               sixth column `file` names the video instead (relative to media_dir, or absolute)
               and the clip id is then that file's name without extension: the `segments.csv`
               that `data_prep.download` writes, one cut file per row, the times relative to
               the cut, while the segments of one video keep its speaker id (docs/data.md).
    voxceleb2  The tree `<media_dir>/<speaker_id>/<video_id>/<utt>.mp4` (e.g. `dev/mp4` of
               VoxCeleb2). The manifest is optional: one relative path per line (as `find .
               -name '*.mp4'` run in media_dir prints it); without one the tree is listed.
    pairs      CSV rows `audio_path, image_path, speaker_id` (an optional header row with exactly
               these names is skipped); paths relative to media_dir or absolute. The image may be
               a still (jpg, png, ...) or a video (its middle frame is used).

The split is the speaker hash of `test_fraction` unless a second manifest of the same format,
`test_manifest`, fixes it (AVSpeech's own avspeech_train.csv / avspeech_test.csv): then every
`Clip` and `Reject` carries the split of the manifest it came from.

In every format blank lines and lines starting with '#' are skipped. A malformed row raises
`ManifestError`; the pipeline turns it into a `Reject` (reason `malformed_row`), never a crash.
`Reason` lists every reason a clip can be skipped for, `SkipClip` is the exception that carries
one, and `Reject` is the record of one skip.
"""

import csv
import dataclasses
import json
import math
import os
from typing import Iterator, Optional, Tuple, Union

import tensorflow as tf

FORMATS = ("avspeech", "voxceleb2", "pairs")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")  # tried in this order for an AVSpeech video
_STILL_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
PAIRS_HEADER = ("audio_path", "image_path", "speaker_id")
_SNIFF_BYTES = 64 * 1024  # of a manifest, checked before a build starts


class Reason:
    """Why a manifest item was skipped: the `reason` of a `Reject`, a key of `REASONS`."""

    MALFORMED_ROW = "malformed_row"
    MISSING_MEDIA = "missing_media"
    UNREADABLE_MEDIA = "unreadable_media"
    NO_AUDIO_STREAM = "no_audio_stream"
    LOW_SAMPLE_RATE = "low_sample_rate"
    NO_VIDEO_STREAM = "no_video_stream"
    SILENT_AUDIO = "silent_audio"
    SEGMENT_OUTSIDE_MEDIA = "segment_outside_media"
    TOO_SHORT = "too_short"
    NO_FACE = "no_face"
    FACE_TOO_SMALL = "face_too_small"
    PROCESSING_ERROR = "processing_error"
    SPEAKER_IN_TEST = "speaker_in_test"
    DUPLICATE_ROW = "duplicate_row"


# Every reason with what it means (dataset_info.json and docs/data.md repeat these words).
REASONS = {
    Reason.MALFORMED_ROW: "manifest row that does not parse (columns, numbers, ranges)",
    Reason.MISSING_MEDIA: "the video, audio or image file does not exist",
    Reason.UNREADABLE_MEDIA: "ffmpeg/PIL cannot decode the file (corrupt, truncated, not media)",
    Reason.NO_AUDIO_STREAM: "the media file has no audio stream",
    Reason.LOW_SAMPLE_RATE: "the audio's sample rate is under 8 kHz, too low to hold speech",
    Reason.NO_VIDEO_STREAM: "the video has no video stream (or no frame in the segment)",
    Reason.SILENT_AUDIO: "the audio of the segment is digital silence",
    Reason.SEGMENT_OUTSIDE_MEDIA: "the segment starts after, or ends well after, the media end",
    Reason.TOO_SHORT: "less audio than the minimum clip length (1 s by default)",
    Reason.NO_FACE: "the face detector found no face in any of the frames tried",
    Reason.FACE_TOO_SMALL: "the chosen face is smaller than the minimum face size",
    Reason.PROCESSING_ERROR: "an unexpected error while processing the clip (a bug: report it)",
    Reason.SPEAKER_IN_TEST: "a --manifest (train) row whose speaker is also in --test_manifest",
    Reason.DUPLICATE_ROW: "a repeat of a row with the same clip id (in either manifest): the "
                          "clip is built once, from the test manifest's row if it has one",
}


class ManifestError(ValueError):
    """A manifest row that cannot be parsed; the message says what is wrong with it."""


class SkipClip(ValueError):
    """A clip that cannot become an example; `reason` is a `Reason` value, the message says why
    (and names the file)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Clip:
    """One item to turn into an example, whatever manifest it came from.

    Attributes:
      clip_id: unique within a data set (`<youtube_id>_<start>_<end>`, `<speaker>/<video>/<utt>`,
        or `<audio_path>|<image_path>` for pairs).
      speaker_id: the hash split is drawn from it (train and test never share a speaker).
      source: "avspeech", "voxceleb2" or "pairs".
      audio_path: media with the voice; a path without extension means "try .mp4, .mkv, .webm".
      image_path: media with the face: a video (one frame is taken) or a still image.
      start: segment start in seconds (0 for whole files).
      end: segment end in seconds, or None for "to the end of the file".
      hint: normalised (x, y) of the speaker's face centre in the frame, or None (then the
        largest face is used).
      split: "train" or "test" when the manifest it came from fixes the split (--manifest and
        --test_manifest), None when the speaker hash draws it.
    """

    clip_id: str
    speaker_id: str
    source: str
    audio_path: str
    image_path: str
    start: float = 0.0
    end: Optional[float] = None
    hint: Optional[Tuple[float, float]] = None
    split: Optional[str] = None

    @property
    def image_is_still(self) -> bool:
        return os.path.splitext(self.image_path)[1].lower() in _STILL_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Reject:
    """One skipped item: `item` is the clip id, or the raw line for a malformed row; `split` is
    that of the manifest the item came from when the manifests fix the split, else ""."""

    item: str
    reason: str
    detail: str
    source: str = ""
    speaker_id: str = ""
    split: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Parsing


def _join(media_dir: str, path: str) -> str:
    # os.path.isabs does not know gs:// and friends, and they are absolute too.
    if os.path.isabs(path) or "://" in path:
        return path
    return os.path.join(media_dir, path)


def _fields(line: str, expected: Union[int, Tuple[int, ...]], what: str):
    try:
        row = next(csv.reader([line], skipinitialspace=True))
    except (csv.Error, StopIteration) as e:
        raise ManifestError(f"not a CSV row ({e})") from e
    row = [field.strip() for field in row]
    counts = (expected,) if isinstance(expected, int) else expected
    if len(row) not in counts:
        raise ManifestError(f"{len(row)} columns, expected {' or '.join(map(str, counts))} "
                            f"({what})")
    return row


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ManifestError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ManifestError(f"{name} {text!r} is not finite")
    return value


def parse_avspeech_row(line: str, media_dir: str) -> Clip:
    """`youtube_id, start, end, x, y[, file]` -> Clip; raises ManifestError."""
    youtube_id, *numbers = _fields(line, (5, 6), "youtube_id, start, end, x, y[, file]")
    file = numbers.pop() if len(numbers) == 5 else None
    if file == "":
        raise ManifestError("file (the sixth column) is empty")
    if not youtube_id or "/" in youtube_id or youtube_id in (".", ".."):
        raise ManifestError(f"youtube_id {youtube_id!r} is not a YouTube id")
    start, end, x, y = (_number(t, n) for t, n in zip(numbers, ("start", "end", "x", "y")))
    if start < 0 or end <= start:
        raise ManifestError(f"segment [{start}, {end}] s is empty or negative")
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ManifestError(f"face hint ({x}, {y}) is outside [0, 1]")
    if file is not None:  # a cut of the video (data_prep.download): its own clip id and file
        video = _join(media_dir, file)
        clip_id = os.path.splitext(os.path.basename(file))[0]
    else:
        video = _join(media_dir, youtube_id)  # extension found later, see `resolve_media`
        clip_id = f"{youtube_id}_{start:.3f}_{end:.3f}"
    return Clip(clip_id=clip_id, speaker_id=youtube_id,
                source="avspeech", audio_path=video, image_path=video, start=start, end=end,
                hint=(x, y))


def parse_voxceleb2_path(line: str, media_dir: str) -> Clip:
    """`<speaker>/<video>/<utt>.mp4` (relative to media_dir, or absolute) -> Clip."""
    path = line.strip().replace("\\", "/")
    if path.startswith("./"):
        path = path[2:]
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or not os.path.splitext(parts[-1])[1]:
        raise ManifestError(f"{path!r} is not a <speaker>/<video>/<utt>.<ext> path")
    speaker, video, utt = parts[-3], parts[-2], os.path.splitext(parts[-1])[0]
    full = _join(media_dir, path)
    return Clip(clip_id=f"{speaker}/{video}/{utt}", speaker_id=speaker, source="voxceleb2",
                audio_path=full, image_path=full)


def parse_pairs_row(line: str, media_dir: str) -> Optional[Clip]:
    """`audio_path, image_path, speaker_id` -> Clip (None for the header row)."""
    audio_path, image_path, speaker_id = _fields(line, 3, "audio_path, image_path, speaker_id")
    if (audio_path, image_path, speaker_id) == PAIRS_HEADER:
        return None
    for name, value in zip(PAIRS_HEADER, (audio_path, image_path, speaker_id)):
        if not value:
            raise ManifestError(f"{name} is empty")
    return Clip(clip_id=f"{audio_path}|{image_path}", speaker_id=speaker_id, source="pairs",
                audio_path=_join(media_dir, audio_path), image_path=_join(media_dir, image_path))


_PARSERS = {"avspeech": parse_avspeech_row, "voxceleb2": parse_voxceleb2_path,
            "pairs": parse_pairs_row}


def parse_line(line: str, manifest_format: str, media_dir: str) -> Optional[Clip]:
    """One manifest line -> Clip, or None for blank, comment and header lines.

    Raises:
      ManifestError: the line is malformed (the message says how).
      ValueError: unknown `manifest_format` (a usage error, not a bad row).
    """
    if manifest_format not in _PARSERS:
        raise ValueError(f"manifest_format must be one of {FORMATS}, got {manifest_format!r}")
    stripped = line.strip().lstrip("\ufeff")  # a BOM from spreadsheet exports
    if not stripped or stripped.startswith("#"):
        return None
    return _PARSERS[manifest_format](stripped, media_dir)


def parse_or_reject(line: str, manifest_format: str, media_dir: str,
                    split: Optional[str] = None) -> Optional[Union[Clip, Reject]]:
    """`parse_line`, with a malformed row returned as a `Reject` instead of raised; both carry
    `split` (that of the manifest the line is from, or None for the speaker hash)."""
    try:
        clip = parse_line(line, manifest_format, media_dir)
    except ManifestError as e:
        return Reject(item=line.strip()[:500], reason=Reason.MALFORMED_ROW, detail=str(e),
                      source=manifest_format, split=split or "")
    return clip if clip is None or split is None else dataclasses.replace(clip, split=split)


def check_manifest_file(path: str, what: str = "manifest") -> None:
    """Raises ValueError / FileNotFoundError unless `path` is a non-empty text file (its first
    64 KiB hold no NUL byte and are UTF-8): checked before a build writes anything."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{what} {path} not found")
    if tf.io.gfile.isdir(path):
        raise ValueError(f"{what} {path} is a directory, not a manifest file")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except tf.errors.OpError as e:
        raise ValueError(f"{what} {path} cannot be read: {e.message}") from None
    if not head.strip():
        raise ValueError(f"{what} {path} is empty: it lists no clip")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(head) < _SNIFF_BYTES or e.start < len(head) - 3:  # not a character cut at the end
            raise ValueError(f"{what} {path} is not UTF-8 text (byte {e.start}): expected a "
                             "CSV or list file of the manifest format") from None
        text = head[:e.start].decode("utf-8")
    if "\x00" in text:
        raise ValueError(f"{what} {path} is a binary file, not a text manifest")


def read_manifest(path: str, manifest_format: str, media_dir: str,
                  split: Optional[str] = None) -> Iterator[Union[Clip, Reject]]:
    """Every Clip or Reject of a manifest file, in file order (outside Beam: tools, tests)."""
    with tf.io.gfile.GFile(path, "r") as f:
        for line in f:
            item = parse_or_reject(line, manifest_format, media_dir, split)
            if item is not None:
                yield item


# ----------------------------------------------------------------------------------------------
# Media paths


def resolve_media(path: str) -> Optional[str]:
    """The existing file `path` names: itself, or for an extension-less AVSpeech path the first
    of `<path>.mp4`, `.mkv`, `.webm` that exists; None when there is none."""
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        return path
    if not os.path.splitext(path)[1]:
        for ext in VIDEO_EXTENSIONS:
            if tf.io.gfile.exists(path + ext):
                return path + ext
    return None


def list_voxceleb2_speakers(media_dir: str):
    """Sorted speaker directory names directly under media_dir (e.g. `id00012`)."""
    if not tf.io.gfile.isdir(media_dir):
        raise FileNotFoundError(f"media_dir {media_dir} is not a directory")
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(media_dir)
                  if tf.io.gfile.isdir(os.path.join(media_dir, name)))


def list_voxceleb2_clips(media_dir: str, speaker: str) -> Iterator[str]:
    """Relative paths `<speaker>/<video>/<utt>.mp4` under one speaker directory, sorted."""
    speaker_dir = os.path.join(media_dir, speaker)
    for video in sorted(tf.io.gfile.listdir(speaker_dir)):
        video = video.rstrip("/")
        video_dir = os.path.join(speaker_dir, video)
        if not tf.io.gfile.isdir(video_dir):
            continue
        for name in sorted(tf.io.gfile.listdir(video_dir)):
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                yield f"{speaker}/{video}/{name}"
