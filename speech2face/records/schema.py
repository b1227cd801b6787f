"""The one TFRecord schema: every writer and reader of clip–face examples imports it from here.

One `tf.train.Example` per clip (docs/data.md). Tensors are stored as raw little-endian bytes with a
fixed dtype and shape (10-40× faster to write and read than `FloatList`, see
`benchmarks/input_pipeline.py`):

| key                    | type  | content                                                       |
|------------------------|-------|---------------------------------------------------------------|
| `schema_version`       | int64 | `SCHEMA_VERSION`                                              |
| `layout`               | bytes | one of `LAYOUTS` (absent in version 1: a spectrogram layout)  |
| `spectrogram`          | bytes | `[num_frames, 257, 2]` compressed STFT (docs/data.md), f16/32 |
| `spectrogram/dtype`    | bytes | `b"float16"` or `b"float32"`                                  |
| `spectrogram/num_frames`| int64| 598 for 6 s                                                   |
| `face_feature`         | bytes | `[4096]` float32, VGG-Face fc7 after ReLU (v_f)               |
| `speaker_id`           | bytes | utf-8; train/test splits are disjoint in it                   |
| `clip_id`              | bytes | utf-8, unique within a data set                               |
| `source`               | bytes | `toy`, `avspeech`, `voxceleb2`, `pairs`, ...                  |
| `face/jpeg`            | bytes | optional 224×224 RGB JPEG of the face crop (empty if absent)  |
| `face/landmarks`       | bytes | optional `[68, 2]` float32 (x, y) pixels in the 224 crop      |
| `waveform`             | bytes | optional int16 16 kHz mono clip, already at least 6 s long    |
| `waveform/num_samples` | int64 | its length (0 if absent)                                      |

Layouts (docs/data.md, "Record layouts"): `spectrogram_float16` (the default) and
`spectrogram_float32` store the spectrogram of the first 6 s; `waveform_int16` stores no
spectrogram feature at all (none of the three `spectrogram` keys), and its waveform, required
and at least 6 s long, is what readers compute the spectrogram from: `parse_batch` hands on its
first 6 s as int16 (`WAVEFORM_KEY`), and the step that runs the model computes the spectrogram
(`speech2face.data.spectrogram_of`), on the accelerator when there is one.

Writing is `speech2face.records.writer` (`encode_example`, `ShardedWriter`). Reading parses a whole
batch of serialized examples at once (`parse_batch`), which is what makes the input pipeline
fast; `parse_single` is the same for one example, and `decode_example` is the NumPy-side reader
for tests and tools.
"""

import dataclasses
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from speech2face import errors

SCHEMA_VERSION = 2  # 2 added `layout` and waveform_int16; version 1 records still read
READABLE_SCHEMA_VERSIONS = (1, 2)
NUM_FREQ_BINS = 257
FEATURE_DIM = 4096
NUM_LANDMARKS = 68
FACE_SIZE = 224
SPECTROGRAM_DTYPES = ("float16", "float32")
DEFAULT_SPECTROGRAM_DTYPE = "float16"
WAVEFORM_LAYOUT = "waveform_int16"
LAYOUTS = ("spectrogram_float16", "spectrogram_float32", WAVEFORM_LAYOUT)
DEFAULT_LAYOUT = "spectrogram_float16"
# The segment every reader hands on: 6 s at 16 kHz and its 598 frames (speech2face.audio's
# SEGMENT_SAMPLES and num_frames, which come after records in the layering; a test holds them
# equal).
SEGMENT_SAMPLES = 96000
SEGMENT_FRAMES = 598
WAVEFORM_KEY = "waveform_int16"  # the parsed batch's int16 [B, samples] segments or crops
SOURCES = ("toy", "avspeech", "voxceleb2", "pairs")


class Keys:
    """Feature keys: the only place they are spelled."""

    SCHEMA_VERSION = "schema_version"
    LAYOUT = "layout"
    SPECTROGRAM = "spectrogram"
    SPECTROGRAM_DTYPE = "spectrogram/dtype"
    NUM_FRAMES = "spectrogram/num_frames"
    FACE_FEATURE = "face_feature"
    SPEAKER_ID = "speaker_id"
    CLIP_ID = "clip_id"
    SOURCE = "source"
    FACE_JPEG = "face/jpeg"
    LANDMARKS = "face/landmarks"
    WAVEFORM = "waveform"
    NUM_SAMPLES = "waveform/num_samples"


class RecordError(errors.UserError, ValueError):
    """A record file or example that does not follow this schema."""


@dataclasses.dataclass
class Example:
    """One clip–face pair on the NumPy side (what writers fill in and `decode_example` returns).

    Attributes:
      spectrogram: [num_frames, 257, 2] float, the compressed complex STFT of docs/data.md;
        None for the waveform_int16 layout, which stores none.
      face_feature: [4096] float32, v_f = VGG-Face fc7 after ReLU.
      speaker_id, clip_id, source: identifiers (str).
      face_jpeg: JPEG bytes of the 224×224 face crop, or b"".
      landmarks: [68, 2] float32 (x, y) pixel coordinates in the face crop, or None.
      waveform: [n] int16 (or float in [-1, 1], converted on writing) 16 kHz mono, or None.
    """

    spectrogram: Optional[np.ndarray]
    face_feature: np.ndarray
    speaker_id: str
    clip_id: str
    source: str
    face_jpeg: bytes = b""
    landmarks: Optional[np.ndarray] = None
    waveform: Optional[np.ndarray] = None


def check_layout(layout: str) -> str:
    """`layout` if it is one of `LAYOUTS`; else a `RecordError` that lists them."""
    if layout not in LAYOUTS:
        raise RecordError(f"records layout {layout!r} is not one of {LAYOUTS}")
    return layout


def spectrogram_dtype_of(layout: str) -> Optional[str]:
    """The stored spectrogram's dtype of a layout ("float16", "float32"), None for waveforms."""
    check_layout(layout)
    return None if layout == WAVEFORM_LAYOUT else layout.split("_", 1)[1]


@dataclasses.dataclass(frozen=True)
class RecordSpec:
    """What a reader must know before parsing a batch: fixed across one data set.

    Attributes:
      num_frames: frames of the spectrogram a reader gets: those stored, or for the
        waveform_int16 layout those of the first `SEGMENT_SAMPLES` it hands on (598).
      layout: one of `LAYOUTS`.
    """

    num_frames: int
    layout: str = DEFAULT_LAYOUT

    def __post_init__(self):
        check_layout(self.layout)

    @property
    def spectrogram_dtype(self) -> Optional[str]:
        """"float16" or "float32" as stored; None when the records store no spectrogram."""
        return spectrogram_dtype_of(self.layout)

    @property
    def stores_spectrogram(self) -> bool:
        return self.layout != WAVEFORM_LAYOUT


def short_waveform_message(clip_id: str, num_samples: int) -> str:
    return (f"clip {clip_id}: {num_samples} waveform samples, but {WAVEFORM_LAYOUT} records "
            f"need at least {SEGMENT_SAMPLES} (6 s at 16 kHz): tile shorter clips to 6 s "
            "(audio.fit_to_length) before writing")


def _feature_description(with_spectrogram: bool) -> Dict[str, tf.io.FixedLenFeature]:
    s, i = tf.string, tf.int64
    description = {
        Keys.SCHEMA_VERSION: tf.io.FixedLenFeature([], i),
        Keys.FACE_FEATURE: tf.io.FixedLenFeature([], s),
        Keys.SPEAKER_ID: tf.io.FixedLenFeature([], s),
        Keys.CLIP_ID: tf.io.FixedLenFeature([], s),
        Keys.SOURCE: tf.io.FixedLenFeature([], s, default_value=b""),
        Keys.FACE_JPEG: tf.io.FixedLenFeature([], s, default_value=b""),
        Keys.LANDMARKS: tf.io.FixedLenFeature([], s, default_value=b""),
        Keys.WAVEFORM: tf.io.FixedLenFeature([], s, default_value=b""),
        Keys.NUM_SAMPLES: tf.io.FixedLenFeature([], i, default_value=0),
    }
    if with_spectrogram:
        description[Keys.SPECTROGRAM] = tf.io.FixedLenFeature([], s)
        description[Keys.NUM_FRAMES] = tf.io.FixedLenFeature([], i)
    return description


def _first_segment(parsed: Dict[str, tf.Tensor], where: str) -> tf.Tensor:
    """int16 [B, SEGMENT_SAMPLES]: the first 6 s of each stored waveform; an error naming
    `where` and the clips if a waveform is shorter (decode_raw would pad it with zeros)."""
    lengths = parsed[Keys.NUM_SAMPLES]
    short = lengths < SEGMENT_SAMPLES
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(short)),
        [f"{where or 'records'}: {WAVEFORM_LAYOUT} records need at least {SEGMENT_SAMPLES} "
         "waveform samples (6 s at 16 kHz); these clips hold fewer (clip ids, then samples):",
         tf.boolean_mask(parsed[Keys.CLIP_ID], short), tf.boolean_mask(lengths, short)],
        summarize=8)
    with tf.control_dependencies([check]):
        return tf.io.decode_raw(parsed[Keys.WAVEFORM], tf.int16, little_endian=True,
                                fixed_length=2 * SEGMENT_SAMPLES)


def parse_batch(
    serialized: tf.Tensor,
    spec: RecordSpec,
    with_faces: bool = False,
    with_waveform: bool = False,
    output_dtype=tf.float32,
    with_spectrogram: bool = True,
    where: str = "",
) -> Dict[str, tf.Tensor]:
    """Parses a batch of serialized examples (parse after batching: one op call per batch).

    Args:
      serialized: [B] tf.string.
      spec: the data set's `RecordSpec` (see `read_spec`).
      with_faces: also return `face_jpeg` ([B] string) and `landmarks` ([B, 68, 2] float32).
        Every example in the batch must then carry landmarks.
      with_waveform: also return `waveform_bytes` ([B] string, int16 LE) and `num_samples` ([B]).
      output_dtype: dtype of the returned spectrogram; None keeps the stored dtype.
      with_spectrogram: False skips decoding the spectrogram (the face decoder's stage does
        not need it); the key is then absent.
      where: the record files, for the error about a short waveform.

    Returns:
      dict with `spectrogram` [B, num_frames, 257, 2] (spectrogram layouts) or `WAVEFORM_KEY`
      [B, SEGMENT_SAMPLES] int16, the first 6 s (waveform_int16; `data.spectrogram_of` makes
      either the spectrogram), `face_feature` [B, 4096] float32, `speaker_id`, `clip_id`,
      `source` ([B] string), plus the optional entries above.
    """
    decode_spectrogram = with_spectrogram and spec.stores_spectrogram
    # The spectrogram is left out when not wanted: it is then not even copied out of the protos.
    parsed = tf.io.parse_example(serialized, _feature_description(decode_spectrogram))
    out = {}
    if decode_spectrogram:
        spectrogram = tf.io.decode_raw(
            parsed[Keys.SPECTROGRAM], tf.dtypes.as_dtype(spec.spectrogram_dtype), little_endian=True
        )
        spectrogram = tf.reshape(spectrogram, [-1, spec.num_frames, NUM_FREQ_BINS, 2])
        if output_dtype is not None and spectrogram.dtype != output_dtype:
            spectrogram = tf.cast(spectrogram, output_dtype)
        out["spectrogram"] = spectrogram
    elif with_spectrogram:
        out[WAVEFORM_KEY] = _first_segment(parsed, where)
    face_feature = tf.reshape(
        tf.io.decode_raw(parsed[Keys.FACE_FEATURE], tf.float32, little_endian=True),
        [-1, FEATURE_DIM],
    )
    out.update(
        {
            "face_feature": face_feature,
            "speaker_id": parsed[Keys.SPEAKER_ID],
            "clip_id": parsed[Keys.CLIP_ID],
            "source": parsed[Keys.SOURCE],
        }
    )
    if with_faces:
        out["face_jpeg"] = parsed[Keys.FACE_JPEG]
        out["landmarks"] = tf.reshape(
            tf.io.decode_raw(parsed[Keys.LANDMARKS], tf.float32, little_endian=True),
            [-1, NUM_LANDMARKS, 2],
        )
    if with_waveform:
        out["waveform_bytes"] = parsed[Keys.WAVEFORM]
        out["num_samples"] = parsed[Keys.NUM_SAMPLES]
    return out


def decode_faces(face_jpeg: tf.Tensor) -> tf.Tensor:
    """[B] JPEG strings (`parse_batch(..., with_faces=True)["face_jpeg"]`) -> [B, H, W, 3]
    float32 in [0, 1]. All JPEGs of a batch must have one size (224×224 as stored)."""
    images = tf.map_fn(lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3), face_jpeg,
                       fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return tf.cast(images, tf.float32) / 255.0


def parse_single(serialized: tf.Tensor, spec: RecordSpec, **kwargs) -> Dict[str, tf.Tensor]:
    """`parse_batch` for one scalar serialized example; same keys, no batch dimension."""
    batch = parse_batch(tf.expand_dims(serialized, 0), spec, **kwargs)
    return {k: v[0] for k, v in batch.items()}


def decode_example(serialized: bytes) -> Example:
    """NumPy-side reader of one serialized example (tests, tools, the demo); checks the version.
    A waveform_int16 example comes back with `spectrogram` None."""
    return _decode(serialized)[0]


def _decode(serialized: bytes):
    """(Example, layout) of one serialized example; version 1 records have no `layout` key and
    are spectrogram_<dtype>."""
    f = tf.train.Example.FromString(serialized).features.feature

    def get_bytes(key):
        return f[key].bytes_list.value[0] if key in f and f[key].bytes_list.value else b""

    def get_int(key):
        return f[key].int64_list.value[0] if key in f and f[key].int64_list.value else 0

    version = get_int(Keys.SCHEMA_VERSION)
    if version not in READABLE_SCHEMA_VERSIONS:
        raise RecordError(
            f"record has schema version {version}, this code reads versions "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}: rebuild the records with this "
            "version"
        )
    dtype = get_bytes(Keys.SPECTROGRAM_DTYPE).decode()
    layout = get_bytes(Keys.LAYOUT).decode() if version >= 2 else f"spectrogram_{dtype}"
    if layout not in LAYOUTS or spectrogram_dtype_of(layout) != (dtype or None):
        raise RecordError(f"record has layout {layout!r} and spectrogram dtype {dtype!r}; "
                          f"layouts are {LAYOUTS}")
    spectrogram = None
    if dtype:
        spectrogram = np.frombuffer(get_bytes(Keys.SPECTROGRAM), np.dtype(dtype).newbyteorder("<"))
        spectrogram = spectrogram.reshape(get_int(Keys.NUM_FRAMES), NUM_FREQ_BINS, 2).astype(dtype)
    landmarks = get_bytes(Keys.LANDMARKS)
    waveform = get_bytes(Keys.WAVEFORM)
    return Example(
        spectrogram=spectrogram,
        face_feature=np.frombuffer(get_bytes(Keys.FACE_FEATURE), "<f4").astype(np.float32),
        speaker_id=get_bytes(Keys.SPEAKER_ID).decode("utf-8"),
        clip_id=get_bytes(Keys.CLIP_ID).decode("utf-8"),
        source=get_bytes(Keys.SOURCE).decode("utf-8"),
        face_jpeg=get_bytes(Keys.FACE_JPEG),
        landmarks=(
            np.frombuffer(landmarks, "<f4").reshape(NUM_LANDMARKS, 2).astype(np.float32)
            if landmarks
            else None
        ),
        waveform=np.frombuffer(waveform, "<i2").astype(np.int16) if waveform else None,
    ), layout


def read_spec(path: str) -> RecordSpec:
    """Reads the `RecordSpec` from the first example of a TFRecord file; a waveform_int16 file
    whose first example holds under 6 s of waveform is a `RecordError` naming it."""
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except (tf.errors.OpError, OSError) as e:
        raise RecordError(
            f"{path}: cannot read TFRecords ({e.message if hasattr(e, 'message') else e})"
        ) from e
    if first is None:
        raise RecordError(f"{path}: file holds no records")
    try:
        example, layout = _decode(first.numpy())
    except RecordError as e:
        raise RecordError(f"{path}: {e}") from e
    except Exception as e:  # A protobuf DecodeError or a bad reshape: not our schema.
        raise RecordError(f"{path}: not a speech2face record ({e})") from e
    if layout == WAVEFORM_LAYOUT:
        num = 0 if example.waveform is None else len(example.waveform)
        if num < SEGMENT_SAMPLES:
            raise RecordError(f"{path}: {short_waveform_message(example.clip_id, num)}")
        return RecordSpec(num_frames=SEGMENT_FRAMES, layout=layout)
    return RecordSpec(num_frames=example.spectrogram.shape[0], layout=layout)
