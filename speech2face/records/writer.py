"""Writing records: shards of the one schema, named one way for both builders."""

import os

import numpy as np
import tensorflow as tf

from speech2face.records.schema import DEFAULT_SPECTROGRAM_DTYPE, Example, RecordError, encode_example


def shard_name(prefix: str, index: int, count: int) -> str:
    """The one shard naming scheme of both builders: `{prefix}-00003-of-00012.tfrecord`."""
    return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


class ShardedWriter:
    """Writes examples to `shard_name(prefix, i, n)` shards of about `max_shard_bytes` each.

    Shards are written under `{prefix}-NNNNN.tfrecord.tmp` names and renamed to their final
    names (which carry the shard count) when the writer closes, so a crash never leaves a
    half-written shard, or a set of shards that looks complete, for a `*.tfrecord` glob to pick
    up. Use as a context manager; `paths` holds the final names once it has closed.
    """

    def __init__(
        self,
        prefix: str,
        max_shard_bytes: int = 150 * 2**20,
        spectrogram_dtype: str = DEFAULT_SPECTROGRAM_DTYPE,
    ):
        self.prefix = prefix
        self.max_shard_bytes = max_shard_bytes
        self.spectrogram_dtype = spectrogram_dtype
        self.paths = []
        self.num_examples = 0
        self.num_bytes = 0
        self._tmp_paths = []
        self._writer = None
        self._shard_bytes = 0
        self._num_frames = None

    def write(self, example: Example) -> None:
        num_frames = np.shape(example.spectrogram)[0]
        if self._num_frames is None:
            self._num_frames = num_frames
        elif num_frames != self._num_frames:
            raise RecordError(
                f"clip {example.clip_id}: {num_frames} spectrogram frames, but this "
                f"data set has {self._num_frames}; fit clips to one length first"
            )
        data = encode_example(example, self.spectrogram_dtype)
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
