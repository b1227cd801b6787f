"""The input pipeline: TFRecord shards of `speech2face.records` to batched tensors, per replica.

Follows the Model Garden input reader: files are listed and shuffled with a seed, sharded per
input pipeline (one per host under `tf.distribute`), interleaved in parallel, shuffled as
serialized strings, batched at the per-replica batch size, and only then parsed, one
`parse_example` call per batch, which is what keeps a 2-core host above 1,500 paper-sized
examples/s (`benchmarks/input_pipeline.py`).

Records of either layout (docs/data.md, "Record layouts") read through the same function: a
spectrogram layout hands on its stored spectrogram (`spectrogram`), waveform_int16 the first 6 s
of its int16 waveform (`WAVEFORM_KEY`), and the step that runs the model calls
`spectrogram_of(batch)`, which returns the first or computes the same spectrogram from the second
(`audio.spectrogram`), on the accelerator that runs the step.

Typical use under a strategy::

    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: data.input_fn("records/train-*.tfrecord", ctx, global_batch_size=8,
                                  training=True))
"""

import dataclasses
import os
import sys
from typing import Callable, Dict, List, Optional

import tensorflow as tf

from speech2face import audio, errors, records

WAVEFORM_KEY = records.WAVEFORM_KEY  # int16 [B, samples]: segments or crops to compute it from


def spectrogram_of(batch: Dict[str, tf.Tensor]) -> tf.Tensor:
    """The batch's spectrogram [B, T, 257, 2]: the stored one (`spectrogram`), or
    `audio.spectrogram` of its int16 samples (`WAVEFORM_KEY`) scaled to [-1, 1), computed where
    this runs: call it inside the replica step so that the STFT runs on the accelerator."""
    if WAVEFORM_KEY in batch:
        return audio.spectrogram(tf.cast(batch[WAVEFORM_KEY], tf.float32) / 32768.0)
    return batch["spectrogram"]


class NoRecordsError(errors.UserError, ValueError):
    """A file pattern that matches no TFRecord files."""


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """Knobs of the input pipeline; the defaults suit both a 2-core laptop and a GPU host.

    Attributes:
      seed: seeds the file order, the example shuffle (training) and the batch transforms'
        random draws, so with `deterministic` a run repeats.
      shuffle_buffer: examples held for shuffling in training (~0.6 MB each for 6 s of float16).
      cycle_length: files read at once by the interleave.
      block_length: consecutive examples taken from one file before moving to the next.
      with_faces: also return `face_jpeg` and `landmarks` (the face decoder's stage needs them).
      with_waveform: also return the raw int16 waveform bytes and lengths.
      with_spectrogram: False skips the spectrogram (stages that only need faces); True hands
        on the stored spectrogram, or with waveform_int16 records the first 6 s of waveform
        (`WAVEFORM_KEY`): read either with `spectrogram_of`.
      deterministic: in training, the parallel interleave and maps hand their elements on in
        order, so the seed fixes the order of every batch and a run on the same machine and
        software repeats exactly (it costs 4-6 % of the read rate on local files,
        docs/performance.md). False hands them on as they finish, which keeps a reader going
        past a slow file (an object store) and makes each run's order its own. Eval mode is
        always in order.
      batch_transform: optional function (batch dict, seed) -> batch dict applied to each
        parsed batch inside the same parallel map (e.g. decode face JPEGs, crop waveforms), so
        it runs on the host CPUs. `seed` is an int64 [2] tensor, (`seed`, the batch's index over
        every input pipeline), for stateless random ops (`tf.random.stateless_*`): a batch draws the
        same numbers whichever order the parallel map runs the batches in.
      example_filter: optional predicate on one serialized example (scalar tf.string -> scalar
        tf.bool), computed in a parallel map before the shuffle and the batching, so batches stay
        full and only kept examples are shuffled and parsed (e.g. stage 1's canonical faces). A
        training pipeline that keeps nothing never yields: count what it keeps beforehand.
      output_dtype: dtype of a stored spectrogram handed on; None keeps the stored dtype (float16
        by default), which halves host-to-accelerator bytes and skips a CPU cast that costs
        more than the rest of the pipeline together; Keras layers cast their inputs to their
        compute dtype on the device.
      skip_corrupt: a corrupt or truncated record ends its file instead of the run: the records
        before it are read, the rest of that file is skipped (`tf.data.experimental.
        ignore_errors` on each file: TensorFlow's reader cannot find the next record after a
        bad one). Off: the `tf.errors.DataLossError` reaches the caller (the training loop
        names the file, docs/failures.md).
      cut_short: with `skip_corrupt`, an int64 `tf.Variable` counting the readings of a file
        that ended before its last byte (a record damaged after a sound header, which only
        reading finds). Training checks each file in its first epoch only, so a damaged file
        counts once per run (once per pass in eval mode).
    """

    seed: int = 0
    shuffle_buffer: int = 512
    cycle_length: int = 8
    block_length: int = 1
    with_faces: bool = False
    with_waveform: bool = False
    with_spectrogram: bool = True
    deterministic: bool = True
    batch_transform: Optional[Callable[[Dict[str, tf.Tensor], tf.Tensor],
                                       Dict[str, tf.Tensor]]] = None
    example_filter: Optional[Callable[[tf.Tensor], tf.Tensor]] = None
    output_dtype: Optional[tf.dtypes.DType] = None
    skip_corrupt: bool = False
    cut_short: Optional[tf.Variable] = None


def list_files(file_pattern: str) -> List[str]:
    """Sorted files matching a glob (or a comma-separated list of globs); raises if none do."""
    files = []
    for pattern in file_pattern.split(","):
        files.extend(tf.io.gfile.glob(pattern.strip()))
    files = sorted(set(files))
    folders = [path for path in files if tf.io.gfile.isdir(path)]
    if folders:
        raise NoRecordsError(
            f"{folders[0]} is a directory, not a record file: give a glob of its record files, "
            f"e.g. '{os.path.join(folders[0], 'train-*.tfrecord')}'")
    if not files:
        raise NoRecordsError(
            f"no TFRecord files match {file_pattern!r}: check the path, or build the "
            "records first (python -m data_prep.make_toy_world --output_dir=DIR)"
        )
    return files


def _kept(example, kept):
    """`Dataset.filter` predicate of the `example_filter` step (a named function: AutoGraph
    cannot read the source of two lambdas on one line)."""
    del example
    return kept


def _example(example, kept):
    del kept
    return example


# In the message of the error `_to_the_end` raises (an InvalidArgumentError: tf.data has no way to
# raise a DataLossError); `records.verify.is_corrupt_read` recognises it.
SHORT_READ = "its records end before the file does (a truncated file)"
_RECORD_FRAMING = 16  # bytes around each record's payload: length, its CRC, the payload's CRC


def _to_the_end(records_of_file: tf.data.Dataset, path, size, skip_corrupt: bool,
                cut_short: Optional[tf.Variable] = None):
    """`records_of_file`, checked at its end to have covered all `size` bytes of `path`.

    TensorFlow's reader takes a file that ends inside a record's 12-byte header for a clean end
    of file: the rest of it would be lost without a word. A short read raises an error naming
    the file (or, with `skip_corrupt`, where the reader stops at the damage anyway, logs it and
    adds one to `cut_short`).

    The end is marked by an empty string after the last record (then dropped): no example of
    the records' schema serializes to nothing, and an empty record inside a file fails the check
    as a short read. Three dataset steps per file; still, the per-record count costs ~30 % of the
    waveform layout's read rate and ~25 % of spectrogram_float16's on two cores, which is why
    training checks only its first epoch (docs/performance.md)."""
    end = tf.constant(b"")

    def count(total, record):
        last = tf.equal(tf.strings.length(record), 0)
        total = total + tf.where(last, tf.constant(0, tf.int64),
                                 tf.cast(tf.strings.length(record), tf.int64) + _RECORD_FRAMING)
        whole = tf.logical_or(tf.logical_not(last), tf.equal(total, size))
        if skip_corrupt:
            def log():
                printed = tf.print("WARNING: --skip_corrupt_records: read", total, "of", size,
                                   "bytes of", path, output_stream=sys.stderr)
                if cut_short is None:
                    return printed
                with tf.control_dependencies([printed]):
                    return cut_short.assign_add(1).op

            report = tf.cond(whole, tf.no_op, log)
        else:
            report = tf.debugging.Assert(whole, [path, SHORT_READ, "read", total, "of", size,
                                                 "bytes"])
        with tf.control_dependencies([report]):
            return total, tf.identity(record)

    return (records_of_file.concatenate(tf.data.Dataset.from_tensors(end))
            .scan(tf.constant(0, tf.int64), count)
            .filter(lambda record: tf.strings.length(record) > 0))


def without_autotuning(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuning thread off, so that deleting its iterator is instant.

    That thread sleeps for periods that double up to 60 s, and TensorFlow (2.21 measured) deletes
    an iterator only once it wakes: the end of a training stage stalled for up to a minute
    (16 to 42 s measured on two cores, once per stage). Without it, each `AUTOTUNE` parallelism
    is the host's core count and `prefetch(AUTOTUNE)` still sizes its buffer by itself; the read
    rates are in docs/performance.md."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def read_files(files: List[str], skip_corrupt: bool = False,
               cut_short: Optional[tf.Variable] = None) -> tf.data.Dataset:
    """The serialized records of `files`, file after file in order, each file checked to have
    been read to its last byte (`input_fn` reads the same way, interleaved)."""
    sizes = [tf.io.gfile.stat(path).length for path in files]
    return tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64))).flat_map(
        lambda path, size: _to_the_end(_records_of(path, skip_corrupt), path, size, skip_corrupt,
                                       cut_short))


def _records_of(path, skip_corrupt: bool) -> tf.data.Dataset:
    records_of_file = tf.data.TFRecordDataset(path, buffer_size=8 * 2**20)
    # TensorFlow's reader cannot find the next record after a bad one: the file ends there.
    return records_of_file.ignore_errors(log_warning=True) if skip_corrupt else records_of_file


def input_fn(
    file_pattern: str,
    input_context: Optional[tf.distribute.InputContext],
    global_batch_size: int,
    training: bool,
    options: InputOptions = InputOptions(),
) -> tf.data.Dataset:
    """Builds the dataset of one input pipeline.

    Args:
      file_pattern: glob of TFRecord shards in the `speech2face.records` schema.
      input_context: from `distribute_datasets_from_function`; None means one pipeline and one
        replica.
      global_batch_size: examples per step over all replicas; each pipeline batches at the
        per-replica size.
      training: shuffle files and examples, repeat forever, drop the last partial batch. In eval
        mode every example is read exactly once per pass, in a fixed order.
      options: `InputOptions`.

    Returns:
      A dataset of dicts, see `records.parse_batch`: `spectrogram` [b, frames, 257, 2] (or,
      from waveform_int16 records, `WAVEFORM_KEY` [b, 96000] int16: use `spectrogram_of`),
      `face_feature` [b, 4096], `speaker_id`, `clip_id`, `source` [b], and the optional extras.
    """
    files = list_files(file_pattern)
    spec = records.read_spec(files[0])
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    batch_size = (
        input_context.get_per_replica_batch_size(global_batch_size)
        if input_context
        else global_batch_size
    )

    deterministic = options.deterministic or not training
    # Each file's size, so that its reader can check it read to the last byte (`_to_the_end`).
    sizes = [tf.io.gfile.stat(path).length for path in files]
    dataset = tf.data.Dataset.from_tensor_slices((files, tf.constant(sizes, tf.int64)))
    shard_files = len(files) >= num_pipelines
    if shard_files and num_pipelines > 1:
        # Shard before shuffling: every pipeline must see the same file list to split it.
        dataset = dataset.shard(num_pipelines, pipeline_id)

    def checked(path, size):
        return _to_the_end(_records_of(path, options.skip_corrupt), path, size,
                           options.skip_corrupt, options.cut_short)

    def unchecked(path, size):
        del size
        return _records_of(path, options.skip_corrupt)

    def interleave(file_dataset, read):
        return file_dataset.interleave(
            read,
            cycle_length=options.cycle_length,
            block_length=options.block_length,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )

    if training:
        # Every file is checked to its last byte in the first epoch, and read unchecked in the
        # later ones: the same bytes again, and the per-record count costs ~30 % of the read
        # rate (docs/performance.md). The later epochs' file order has a seed of its own, so that
        # the second epoch does not repeat the first.
        first = dataset.shuffle(len(files), seed=options.seed)
        later = dataset.shuffle(len(files), seed=options.seed + 1,
                                reshuffle_each_iteration=True).repeat()
        dataset = interleave(first, checked).concatenate(interleave(later, unchecked))
    else:
        dataset = interleave(dataset, checked)
    if not shard_files and num_pipelines > 1:
        # Fewer files than pipelines: fall back to example-level sharding (reads every file on
        # every pipeline, so give big data sets at least as many shards as hosts).
        dataset = dataset.shard(num_pipelines, pipeline_id)
    if options.example_filter is not None:
        keep = options.example_filter
        dataset = dataset.map(lambda s: (s, keep(s)), num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=deterministic)
        dataset = dataset.filter(_kept).map(_example)
    if training:
        dataset = dataset.shuffle(options.shuffle_buffer, seed=options.seed)
    dataset = dataset.batch(batch_size, drop_remainder=training).enumerate()

    def parse(index, serialized):
        batch = records.parse_batch(
            serialized,
            spec,
            with_faces=options.with_faces,
            with_waveform=options.with_waveform,
            output_dtype=options.output_dtype,
            with_spectrogram=options.with_spectrogram,
            where=file_pattern,
        )
        if options.batch_transform is None:
            return batch
        # Unique to the batch over every pipeline of a multi-host run.
        batch_seed = tf.stack([tf.constant(options.seed, tf.int64),
                               index * num_pipelines + pipeline_id])
        return options.batch_transform(batch, batch_seed)

    dataset = dataset.map(
        parse,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return without_autotuning(dataset.prefetch(tf.data.AUTOTUNE))
