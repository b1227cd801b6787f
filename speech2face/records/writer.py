"""Writing records: examples encoded in the one schema (`speech2face.records.schema`), in one
of its layouts, into shards named one way for both builders."""

import os

import numpy as np
import tensorflow as tf

from speech2face.records.schema import (DEFAULT_LAYOUT, FEATURE_DIM, NUM_FREQ_BINS, NUM_LANDMARKS,
                                        SCHEMA_VERSION, WAVEFORM_LAYOUT, SEGMENT_SAMPLES, Example,
                                        Keys, RecordError, check_layout, short_waveform_message,
                                        spectrogram_dtype_of)


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _as_int16(waveform: np.ndarray) -> np.ndarray:
    waveform = np.asarray(waveform)
    if waveform.dtype == np.int16:
        return waveform
    return np.round(np.clip(waveform, -1.0, 1.0) * 32767.0).astype(np.int16)


def encode_example(example: Example, layout: str = DEFAULT_LAYOUT) -> bytes:
    """Serializes one `Example` in `layout` (one of `LAYOUTS`); raises `RecordError` if a tensor
    has the wrong shape, or if a waveform_int16 example has a spectrogram or lacks 6 s of
    waveform."""
    dtype = spectrogram_dtype_of(layout)
    if dtype is None:
        if example.spectrogram is not None:
            raise RecordError(f"clip {example.clip_id}: {WAVEFORM_LAYOUT} records store no "
                              "spectrogram; leave Example.spectrogram None")
        if example.waveform is None or np.shape(example.waveform)[0] < SEGMENT_SAMPLES:
            num = 0 if example.waveform is None else np.shape(example.waveform)[0]
            raise RecordError(short_waveform_message(example.clip_id, num))
    else:
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
        Keys.LAYOUT: _bytes(layout.encode()),
        Keys.FACE_FEATURE: _bytes(feature.astype("<f4").tobytes()),
        Keys.SPEAKER_ID: _bytes(example.speaker_id.encode("utf-8")),
        Keys.CLIP_ID: _bytes(example.clip_id.encode("utf-8")),
        Keys.SOURCE: _bytes(example.source.encode("utf-8")),
        Keys.FACE_JPEG: _bytes(example.face_jpeg or b""),
        Keys.LANDMARKS: _bytes(landmarks),
        Keys.WAVEFORM: _bytes(waveform),
        Keys.NUM_SAMPLES: _int64(num_samples),
    }
    if dtype is not None:
        features[Keys.SPECTROGRAM] = _bytes(spec.astype(np.dtype(dtype).newbyteorder("<")).tobytes())
        features[Keys.SPECTROGRAM_DTYPE] = _bytes(dtype.encode())
        features[Keys.NUM_FRAMES] = _int64(spec.shape[0])
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def shard_name(prefix: str, index: int, count: int) -> str:
    """The one shard naming scheme of both builders: `{prefix}-00003-of-00012.tfrecord`."""
    return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


class ShardedWriter:
    """Writes examples to `shard_name(prefix, i, n)` shards of about `max_shard_bytes` each.

    Every example is encoded in `layout` (one of `records.LAYOUTS`). Shards are written under
    `{prefix}-NNNNN.tfrecord.tmp` names and renamed to their final
    names (which carry the shard count) when the writer closes, so a crash never leaves a
    half-written shard, or a set of shards that looks complete, for a `*.tfrecord` glob to pick
    up. Use as a context manager; `paths` holds the final names once it has closed.
    """

    def __init__(
        self,
        prefix: str,
        max_shard_bytes: int = 150 * 2**20,
        layout: str = DEFAULT_LAYOUT,
    ):
        self.prefix = prefix
        self.max_shard_bytes = max_shard_bytes
        self.layout = check_layout(layout)
        self.paths = []
        self.num_examples = 0
        self.num_bytes = 0
        self._tmp_paths = []
        self._writer = None
        self._shard_bytes = 0
        self._num_frames = None

    def write(self, example: Example) -> None:
        num_frames = None if example.spectrogram is None else np.shape(example.spectrogram)[0]
        if self._num_frames is None:
            self._num_frames = num_frames
        elif num_frames != self._num_frames:
            raise RecordError(
                f"clip {example.clip_id}: {num_frames} spectrogram frames, but this "
                f"data set has {self._num_frames}; fit clips to one length first"
            )
        data = encode_example(example, self.layout)
        if self._writer is None or self._shard_bytes + len(data) > self.max_shard_bytes:
            self._close_shard()
            self._tmp_paths.append(f"{self.prefix}-{len(self._tmp_paths):05d}.tfrecord.tmp")
            self._writer = tf.io.TFRecordWriter(self._tmp_paths[-1])
            self._shard_bytes = 0
        self._writer.write(data)
        self._shard_bytes += len(data)
        self.num_bytes += len(data)
        self.num_examples += 1

    def _close_shard(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self):
        """Closes the last shard and gives every shard its final name."""
        self._close_shard()
        count = len(self._tmp_paths)
        self.paths = [shard_name(self.prefix, i, count) for i in range(count)]
        for tmp, final in zip(self._tmp_paths, self.paths):
            os.replace(tmp, final)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # Leave the shards as .tmp for inspection; none gets a final name.
            self._close_shard()
