"""Input-pipeline and spectrogram throughput, our path beside the naive one, in one run.

    python benchmarks/input_pipeline.py [--num_examples=512] [--batch_size=64] [--seconds=10]
                                        [--json_out=input_pipeline.json]

Prints two tables:
1. Records: examples/s writing and reading paper-shaped examples (598×257×2 spectrogram + 4096
   face feature) through `speech2face.data.input_fn`, float16 and float32 raw-bytes storage,
   against the naive layout (`tf.train.FloatList`, parsed one example at a time, batched after).
2. Spectrograms: clips/s of 6 s clips through the batched TF path (`audio.spectrogram`), the
   NumPy twin one clip at a time, and librosa one clip at a time.

Reads come from the OS page cache after the first pass (what a training host sees once its
shards are local); the write side is measured on the same files.
"""

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import librosa  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speech2face import audio, data, records  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py)

flags.DEFINE_integer("num_examples", 512, "Paper-shaped examples written per storage format.")
flags.DEFINE_integer("num_shards", 8, "Shards per format.")
flags.DEFINE_integer("batch_size", 64, "Batch size of the reads.")
flags.DEFINE_float("seconds", 8.0, "Time spent measuring each read path.")
flags.DEFINE_integer("num_clips", 64, "Clips for the spectrogram comparison.")
flags.DEFINE_string("json_out", None, "Also write every table here as JSON.")
FLAGS = flags.FLAGS

_TABLES = []  # (title, [(path, rate, ratio)]) as printed, for --json_out

NUM_FRAMES = 598


def _examples(n):
    rng = np.random.default_rng(0)
    spec = rng.standard_normal((NUM_FRAMES, records.NUM_FREQ_BINS, 2)).astype(np.float32)
    feature = rng.random(records.FEATURE_DIM, dtype=np.float32)
    for i in range(n):
        # Distinct bytes per example without paying for n random spectrograms.
        yield records.Example(np.roll(spec, i, axis=0), feature, f"spk{i // 4}", f"c{i}", "toy")


def _write_raw(directory, dtype, n, shards):
    per_shard = -(-n // shards)
    start = time.perf_counter()
    examples = _examples(n)
    for s in range(shards):
        with records.ShardedWriter(
            os.path.join(directory, f"{dtype}{s}"), spectrogram_dtype=dtype
        ) as writer:
            for _ in range(min(per_shard, n - s * per_shard)):
                writer.write(next(examples))
    return n / (time.perf_counter() - start)


def _write_floatlist(directory, n, shards):
    """The naive writer of public reimplementations: every float through a FloatList."""
    per_shard = -(-n // shards)
    start = time.perf_counter()
    examples = _examples(n)
    for s in range(shards):
        with tf.io.TFRecordWriter(os.path.join(directory, f"floatlist{s}.tfrecord")) as writer:
            for _ in range(min(per_shard, n - s * per_shard)):
                ex = next(examples)
                feature = {
                    "spectrogram": tf.train.Feature(
                        float_list=tf.train.FloatList(value=ex.spectrogram.ravel())
                    ),
                    "face_feature": tf.train.Feature(
                        float_list=tf.train.FloatList(value=ex.face_feature)
                    ),
                }
                writer.write(
                    tf.train.Example(
                        features=tf.train.Features(feature=feature)
                    ).SerializeToString()
                )
    return n / (time.perf_counter() - start)


def _naive_dataset(pattern, batch_size):
    description = {
        "spectrogram": tf.io.FixedLenFeature([NUM_FRAMES * records.NUM_FREQ_BINS * 2], tf.float32),
        "face_feature": tf.io.FixedLenFeature([records.FEATURE_DIM], tf.float32),
    }

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, description)
        parsed["spectrogram"] = tf.reshape(
            parsed["spectrogram"], [NUM_FRAMES, records.NUM_FREQ_BINS, 2]
        )
        return parsed

    dataset = tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)).repeat()
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _read_rate(dataset, batch_size, seconds):
    iterator = iter(dataset)
    for _ in range(3):  # Warm up: fill the page cache, buffers and autotuning.
        next(iterator)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        batch = next(iterator)
        count += batch["spectrogram"].shape[0]
    return count / (time.perf_counter() - start)


def _time_per_clip(fn, clips):
    start = time.perf_counter()
    for clip in clips:
        fn(clip)
    return len(clips) / (time.perf_counter() - start)


def _librosa_spectrogram(clip):
    stft = librosa.stft(
        clip,
        n_fft=audio.FFT_LENGTH,
        hop_length=audio.HOP_LENGTH,
        win_length=audio.WINDOW_LENGTH,
        window="hann",
        center=False,
    )
    return np.stack(
        [
            np.sign(stft.real) * np.abs(stft.real) ** audio.POWER,
            np.sign(stft.imag) * np.abs(stft.imag) ** audio.POWER,
        ],
        -1,
    )


def _table(title, rows, baseline):
    print(f"\n{title}")
    print(f"  {'path':<52} {'per s':>10} {'ratio':>8}")
    for name, rate in rows:
        print(f"  {name:<52} {rate:>10.1f} {rate / baseline:>7.1f}x")
    _TABLES.append({"title": title, "rows": [
        {"path": name, "per_s": rate, "ratio": rate / baseline} for name, rate in rows]})


def main(_):
    print(
        f"TensorFlow {tf.__version__}, {machine.cpu_name()}, {os.cpu_count()} CPU cores, "
        f"{FLAGS.num_examples} examples of {NUM_FRAMES}x{records.NUM_FREQ_BINS}x2"
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_naive = _write_floatlist(tmp, FLAGS.num_examples, FLAGS.num_shards)
        write_16 = _write_raw(tmp, "float16", FLAGS.num_examples, FLAGS.num_shards)
        write_32 = _write_raw(tmp, "float32", FLAGS.num_examples, FLAGS.num_shards)
        _table(
            "Writing records (examples/s)",
            [
                ("naive: tf.train.FloatList", write_naive),
                ("ours: raw bytes, float16", write_16),
                ("ours: raw bytes, float32", write_32),
            ],
            write_naive,
        )

        read_naive = _read_rate(
            _naive_dataset(os.path.join(tmp, "floatlist*.tfrecord"), FLAGS.batch_size),
            FLAGS.batch_size,
            FLAGS.seconds,
        )
        rates = {}
        for dtype in ("float16", "float32"):
            dataset = data.input_fn(
                os.path.join(tmp, f"{dtype}*.tfrecord"), None, FLAGS.batch_size, training=True
            )
            rates[dtype] = _read_rate(dataset, FLAGS.batch_size, FLAGS.seconds)
        dataset = data.input_fn(
            os.path.join(tmp, "float16*.tfrecord"),
            None,
            FLAGS.batch_size,
            training=True,
            options=data.InputOptions(output_dtype=tf.float16),
        )
        rates["float16 kept"] = _read_rate(dataset, FLAGS.batch_size, FLAGS.seconds)
        _table(
            "Reading records through the input pipeline (examples/s)",
            [
                ("naive: FloatList, parse per example", read_naive),
                ("ours: float16 bytes, parse per batch, cast to fp32", rates["float16"]),
                ("ours: float16 bytes, handed on as float16", rates["float16 kept"]),
                ("ours: float32 bytes, parse per batch", rates["float32"]),
            ],
            read_naive,
        )

    rng = np.random.default_rng(0)
    clips = (0.1 * rng.standard_normal((FLAGS.num_clips, audio.SEGMENT_SAMPLES))).astype(np.float32)
    batched = tf.function(audio.spectrogram)
    batched(tf.constant(clips[:8]))
    start = time.perf_counter()
    for i in range(0, len(clips), 8):
        batched(tf.constant(clips[i : i + 8])).numpy()
    tf_rate = len(clips) / (time.perf_counter() - start)
    np_rate = _time_per_clip(audio.spectrogram_np, clips)
    librosa_rate = _time_per_clip(_librosa_spectrogram, clips)
    _table(
        "Spectrograms of 6 s clips (clips/s)",
        [
            ("librosa.stft per clip (+ power law)", librosa_rate),
            ("ours: spectrogram_np per clip", np_rate),
            ("ours: audio.spectrogram, TF, batches of 8", tf_rate),
        ],
        librosa_rate,
    )
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w", encoding="utf-8") as f:
            json.dump({"machine": machine.describe(), "num_examples": FLAGS.num_examples,
                       "batch_size": FLAGS.batch_size, "tables": _TABLES}, f, indent=2)
        print(f"wrote {FLAGS.json_out}")


if __name__ == "__main__":
    app.run(main)
