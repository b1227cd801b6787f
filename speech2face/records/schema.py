"""The one TFRecord schema: every writer and reader of clip–face examples imports it from here.

One `tf.train.Example` per clip (docs/data.md). Tensors are stored as raw little-endian bytes with a
fixed dtype and shape (10-40× faster to write and read than `FloatList`, see
`benchmarks/input_pipeline.py`):

| key                    | type  | content                                                       |
|------------------------|-------|---------------------------------------------------------------|
| `schema_version`       | int64 | `SCHEMA_VERSION`                                              |
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

Reading parses a whole batch of serialized examples at once (`parse_batch`), which is what makes
the input pipeline fast; `parse_single` is the same for one example, and `decode_example` is the
NumPy-side reader for tests and tools.
"""

import dataclasses
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 1
NUM_FREQ_BINS = 257
FEATURE_DIM = 4096
NUM_LANDMARKS = 68
FACE_SIZE = 224
SPECTROGRAM_DTYPES = ("float16", "float32")
DEFAULT_SPECTROGRAM_DTYPE = "float16"
SOURCES = ("toy", "avspeech", "voxceleb2", "pairs")


class Keys:
    """Feature keys: the only place they are spelled."""

    SCHEMA_VERSION = "schema_version"
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


class RecordError(ValueError):
    """A record file or example that does not follow this schema."""


@dataclasses.dataclass
class Example:
    """One clip–face pair on the NumPy side (what writers fill in and `decode_example` returns).

    Attributes:
      spectrogram: [num_frames, 257, 2] float, the compressed complex STFT of docs/data.md.
      face_feature: [4096] float32, v_f = VGG-Face fc7 after ReLU.
      speaker_id, clip_id, source: identifiers (str).
      face_jpeg: JPEG bytes of the 224×224 face crop, or b"".
      landmarks: [68, 2] float32 (x, y) pixel coordinates in the face crop, or None.
      waveform: [n] int16 (or float in [-1, 1], converted on writing) 16 kHz mono, or None.
    """

    spectrogram: np.ndarray
    face_feature: np.ndarray
    speaker_id: str
    clip_id: str
    source: str
    face_jpeg: bytes = b""
    landmarks: Optional[np.ndarray] = None
    waveform: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class RecordSpec:
    """What a reader must know before parsing a batch: fixed across one data set."""

    num_frames: int
    spectrogram_dtype: str = DEFAULT_SPECTROGRAM_DTYPE

    def __post_init__(self):
        if self.spectrogram_dtype not in SPECTROGRAM_DTYPES:
            raise RecordError(
                f"spectrogram dtype {self.spectrogram_dtype!r} is not one of {SPECTROGRAM_DTYPES}"
            )


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _as_int16(waveform: np.ndarray) -> np.ndarray:
    waveform = np.asarray(waveform)
    if waveform.dtype == np.int16:
        return waveform
    return np.round(np.clip(waveform, -1.0, 1.0) * 32767.0).astype(np.int16)


def encode_example(example: Example, spectrogram_dtype: str = DEFAULT_SPECTROGRAM_DTYPE) -> bytes:
    """Serializes one `Example`; raises `RecordError` if a tensor has the wrong shape."""
    if spectrogram_dtype not in SPECTROGRAM_DTYPES:
        raise RecordError(
            f"spectrogram dtype {spectrogram_dtype!r} is not one of {SPECTROGRAM_DTYPES}"
        )
    spec = np.asarray(example.spectrogram)
    if spec.ndim != 3 or spec.shape[1:] != (NUM_FREQ_BINS, 2):
        raise RecordError(
            f"clip {example.clip_id}: spectrogram shape {spec.shape}, expected "
            f"[frames, {NUM_FREQ_BINS}, 2]"
        )
    feature = np.asarray(example.face_feature, np.float32)
    if feature.shape != (FEATURE_DIM,):
        raise RecordError(
            f"clip {example.clip_id}: face feature shape {feature.shape}, expected ({FEATURE_DIM},)"
        )
    landmarks = b""
    if example.landmarks is not None:
        lm = np.asarray(example.landmarks, np.float32)
        if lm.shape != (NUM_LANDMARKS, 2):
            raise RecordError(
                f"clip {example.clip_id}: landmarks shape {lm.shape}, expected ({NUM_LANDMARKS}, 2)"
            )
        landmarks = lm.astype("<f4").tobytes()
    waveform = b""
    num_samples = 0
    if example.waveform is not None:
        wav = _as_int16(example.waveform)
        waveform, num_samples = wav.astype("<i2").tobytes(), wav.shape[0]
    features = {
        Keys.SCHEMA_VERSION: _int64(SCHEMA_VERSION),
        Keys.SPECTROGRAM: _bytes(
            spec.astype(np.dtype(spectrogram_dtype).newbyteorder("<")).tobytes()
        ),
        Keys.SPECTROGRAM_DTYPE: _bytes(spectrogram_dtype.encode()),
        Keys.NUM_FRAMES: _int64(spec.shape[0]),
        Keys.FACE_FEATURE: _bytes(feature.astype("<f4").tobytes()),
        Keys.SPEAKER_ID: _bytes(example.speaker_id.encode("utf-8")),
        Keys.CLIP_ID: _bytes(example.clip_id.encode("utf-8")),
        Keys.SOURCE: _bytes(example.source.encode("utf-8")),
        Keys.FACE_JPEG: _bytes(example.face_jpeg or b""),
        Keys.LANDMARKS: _bytes(landmarks),
        Keys.WAVEFORM: _bytes(waveform),
        Keys.NUM_SAMPLES: _int64(num_samples),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _feature_description() -> Dict[str, tf.io.FixedLenFeature]:
    s, i = tf.string, tf.int64
    return {
        Keys.SCHEMA_VERSION: tf.io.FixedLenFeature([], i),
        Keys.SPECTROGRAM: tf.io.FixedLenFeature([], s),
        Keys.NUM_FRAMES: tf.io.FixedLenFeature([], i),
        Keys.FACE_FEATURE: tf.io.FixedLenFeature([], s),
        Keys.SPEAKER_ID: tf.io.FixedLenFeature([], s),
        Keys.CLIP_ID: tf.io.FixedLenFeature([], s),
        Keys.SOURCE: tf.io.FixedLenFeature([], s, default_value=b""),
        Keys.FACE_JPEG: tf.io.FixedLenFeature([], s, default_value=b""),
        Keys.LANDMARKS: tf.io.FixedLenFeature([], s, default_value=b""),
        Keys.WAVEFORM: tf.io.FixedLenFeature([], s, default_value=b""),
        Keys.NUM_SAMPLES: tf.io.FixedLenFeature([], i, default_value=0),
    }


def parse_batch(
    serialized: tf.Tensor,
    spec: RecordSpec,
    with_faces: bool = False,
    with_waveform: bool = False,
    output_dtype=tf.float32,
    with_spectrogram: bool = True,
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

    Returns:
      dict with `spectrogram` [B, num_frames, 257, 2], `face_feature` [B, 4096] float32,
      `speaker_id`, `clip_id`, `source` ([B] string), plus the optional entries above.
    """
    description = _feature_description()
    if not with_spectrogram:
        del description[Keys.SPECTROGRAM]  # not even copied out of the protos
    parsed = tf.io.parse_example(serialized, description)
    out = {}
    if with_spectrogram:
        spectrogram = tf.io.decode_raw(
            parsed[Keys.SPECTROGRAM], tf.dtypes.as_dtype(spec.spectrogram_dtype), little_endian=True
        )
        spectrogram = tf.reshape(spectrogram, [-1, spec.num_frames, NUM_FREQ_BINS, 2])
        if output_dtype is not None and spectrogram.dtype != output_dtype:
            spectrogram = tf.cast(spectrogram, output_dtype)
        out["spectrogram"] = spectrogram
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
    """NumPy-side reader of one serialized example (tests, tools, the demo); checks the version."""
    proto = tf.train.Example.FromString(serialized)
    f = proto.features.feature

    def get_bytes(key):
        return f[key].bytes_list.value[0] if key in f and f[key].bytes_list.value else b""

    def get_int(key):
        return f[key].int64_list.value[0] if key in f and f[key].int64_list.value else 0

    version = get_int(Keys.SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise RecordError(
            f"record has schema version {version}, this code reads version "
            f"{SCHEMA_VERSION}: rebuild the records with this version"
        )
    dtype = get_bytes(Keys.SPECTROGRAM_DTYPE).decode()
    if dtype not in SPECTROGRAM_DTYPES:
        raise RecordError(f"record has spectrogram dtype {dtype!r}")
    num_frames = get_int(Keys.NUM_FRAMES)
    spectrogram = np.frombuffer(get_bytes(Keys.SPECTROGRAM), np.dtype(dtype).newbyteorder("<"))
    landmarks = get_bytes(Keys.LANDMARKS)
    waveform = get_bytes(Keys.WAVEFORM)
    return Example(
        spectrogram=spectrogram.reshape(num_frames, NUM_FREQ_BINS, 2).astype(dtype),
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
    )


def read_spec(path: str) -> RecordSpec:
    """Reads the `RecordSpec` from the first example of a TFRecord file."""
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except (tf.errors.OpError, OSError) as e:
        raise RecordError(
            f"{path}: cannot read TFRecords ({e.message if hasattr(e, 'message') else e})"
        ) from e
    if first is None:
        raise RecordError(f"{path}: file holds no records")
    try:
        example = decode_example(first.numpy())
    except RecordError as e:
        raise RecordError(f"{path}: {e}") from e
    except Exception as e:  # A protobuf DecodeError or a bad reshape: not our schema.
        raise RecordError(f"{path}: not a speech2face record ({e})") from e
    return RecordSpec(
        num_frames=example.spectrogram.shape[0], spectrogram_dtype=str(example.spectrogram.dtype)
    )
