"""Input-pipeline and spectrogram throughput, our path beside the naive one, in one run.

    python benchmarks/input_pipeline.py [--num_examples=512] [--batch_size=64] [--seconds=8]
                                        [--json=input_pipeline.json]

Prints four tables:
1. Records: examples/s writing and reading paper-shaped examples (598×257×2 spectrogram + 4096
   face feature) through `speech2face.data.input_fn`, float16 and float32 raw-bytes storage,
   against the naive layout (`tf.train.FloatList`, parsed one example at a time, batched after).
2. Spectrograms: clips/s of 6 s clips through the batched TF path (`audio.spectrogram`), the
   NumPy twin one clip at a time, and librosa one clip at a time.
3. Record layouts (docs/data.md): examples/s reading 6 s clips as the builders write them (the
   int16 waveform and v_f in every layout, the spectrogram in the spectrogram layouts) through
   `speech2face.data.input_fn` as training reads them, waveform_int16 against the default
   spectrogram_float16, with the bytes per example; and, for a CPU host, waveform_int16 with the
   STFT (`data.spectrogram_of`) computed on the host, which the accelerator does otherwise, and
   stage 2's random 6 s crops from both layouts. Medians over `--rounds` interleaved rounds,
   each path read from a fresh iterator (one left alive refills its buffers while the next is
   timed).

`--json=PATH` writes every table, plus `read_examples_per_s` and `bytes_per_example` per layout
and `waveform_over_float16` (the read ratio).

Reads come from the OS page cache after the first pass (what a training host sees once its
shards are local); the write side is measured on the same files.
"""

import functools
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
from speech2face.training import encoder_task  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py)

flags.DEFINE_integer("num_examples", 512, "Paper-shaped examples written per storage format.")
flags.DEFINE_integer("num_shards", 8, "Shards per format.")
flags.DEFINE_integer("batch_size", 64, "Batch size of the reads.")
flags.DEFINE_float("seconds", 8.0, "Time spent measuring each read path.")
flags.DEFINE_integer("num_clips", 64, "Clips for the spectrogram comparison.")
flags.DEFINE_integer("rounds", 3, "Rounds of the record-layout reads (medians are reported).")
flags.DEFINE_string("json", None, "Also write every table here as JSON.")
flags.DEFINE_alias("json_out", "json")
FLAGS = flags.FLAGS

_TABLES = []  # (title, [(path, rate, ratio)]) as printed, for --json

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
            os.path.join(directory, f"{dtype}{s}"), layout=f"spectrogram_{dtype}"
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
        count += batch["face_feature"].shape[0]
    return count / (time.perf_counter() - start)


def _layout_examples(layout, n):
    """6 s clips as the builders write them: int16 waveform and v_f, plus the spectrogram in the
    spectrogram layouts (no face JPEG: it adds the same ~10-20 KB to every layout)."""
    rng = np.random.default_rng(1)
    wave = rng.integers(-8000, 8000, audio.SEGMENT_SAMPLES, dtype=np.int16)
    spec = None
    if records.spectrogram_dtype_of(layout) is not None:
        spec = rng.standard_normal((NUM_FRAMES, records.NUM_FREQ_BINS, 2)).astype(np.float32)
    feature = rng.random(records.FEATURE_DIM, dtype=np.float32)
    for i in range(n):
        yield records.Example(None if spec is None else np.roll(spec, i, axis=0), feature,
                              f"spk{i // 4}", f"c{i}", "toy", waveform=np.roll(wave, 160 * i))


def _write_layouts(directory, n, shards):
    """Writes n examples per layout into `directory/{layout}-*`; returns bytes per example."""
    per_shard, sizes = -(-n // shards), {}
    for layout in records.LAYOUTS:
        examples = _layout_examples(layout, n)
        total = 0
        for s in range(shards):
            with records.ShardedWriter(os.path.join(directory, f"{layout}{s}"),
                                       layout=layout) as writer:
                for _ in range(min(per_shard, n - s * per_shard)):
                    writer.write(next(examples))
            total += writer.num_bytes
        sizes[layout] = total / n
    return sizes


def _with_host_stft(dataset):
    """The waveform batches with `data.spectrogram_of` computed on this (CPU) host, as the step
    would compute it on a host without an accelerator."""
    stft = tf.function(data.spectrogram_of)
    for batch in dataset:
        yield {"face_feature": batch["face_feature"], "spectrogram": stft(batch)}


def _interleaved_rates(paths, rounds, seconds):
    """{name: median examples/s over `rounds`} of `paths` ({name: function returning a dataset or
    an iterable of batches}), measured in turn within each round, so that what the other jobs on
    a shared machine do falls on all of them alike. Each measurement reads a fresh iterator,
    warmed up first and deleted after: an iterator left alive refills its prefetch and shuffle
    buffers in the background, on the cores that the next path is being timed on."""
    rates = {name: [] for name in paths}
    for _ in range(rounds):
        for name, make in paths.items():
            iterator = iter(make())
            for _ in range(3):  # Warm up: fill the page cache and the buffers.
                next(iterator)
            start, count = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                count += next(iterator)["face_feature"].shape[0]
            rates[name].append(count / (time.perf_counter() - start))
            del iterator
    return {name: float(np.median(r)) for name, r in rates.items()}


def _layout_table(directory):
    sizes = _write_layouts(directory, FLAGS.num_examples, FLAGS.num_shards)
    crops = encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(
        decoder_dir="unused", vggface_weights="unused")).input_options(training=True)

    def read(layout, options=data.InputOptions()):
        return data.input_fn(os.path.join(directory, f"{layout}*.tfrecord"), None,
                             FLAGS.batch_size, training=True, options=options)

    paths = {layout: functools.partial(read, layout) for layout in records.LAYOUTS}
    paths["host_stft"] = lambda: _with_host_stft(read(records.WAVEFORM_LAYOUT))
    for layout in ("spectrogram_float16", records.WAVEFORM_LAYOUT):
        paths[f"crops {layout}"] = functools.partial(read, layout, crops)
    rates = _interleaved_rates(paths, FLAGS.rounds, FLAGS.seconds / 2)
    names = {"spectrogram_float16": "spectrogram_float16 (default), as float16",
             "spectrogram_float32": "spectrogram_float32",
             records.WAVEFORM_LAYOUT: "ours: waveform_int16, first 6 s as int16",
             "host_stft": "waveform_int16 + STFT on this CPU host",
             "crops spectrogram_float16": "stage 2 random crops, spectrogram_float16",
             f"crops {records.WAVEFORM_LAYOUT}": "stage 2 random crops, waveform_int16"}
    _table("Record layouts: reading 6 s clips through data.input_fn (examples/s, baseline "
           "spectrogram_float16)",
           [(names[k] + (f", {sizes[k] / 1e6:.2f} MB" if k in sizes else ""), rates[k])
            for k in names], rates["spectrogram_float16"])
    return rates, sizes


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
    with tempfile.TemporaryDirectory() as tmp:
        rates, layout_bytes = _layout_table(tmp)

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
    layout_rates = {layout: rates[layout] for layout in records.LAYOUTS}
    ratio = layout_rates[records.WAVEFORM_LAYOUT] / layout_rates["spectrogram_float16"]
    print(f"\nwaveform_int16 / spectrogram_float16 read ratio: {ratio:.2f}x")
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine.describe(), "num_examples": FLAGS.num_examples,
                       "batch_size": FLAGS.batch_size,
                       "read_examples_per_s": layout_rates,
                       "bytes_per_example": layout_bytes,
                       "waveform_over_float16": ratio,
                       "waveform_with_host_stft_examples_per_s": rates["host_stft"],
                       "random_crops_examples_per_s": {
                           layout: rates[f"crops {layout}"]
                           for layout in ("spectrogram_float16", records.WAVEFORM_LAYOUT)},
                       "tables": _TABLES}, f, indent=2)
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
