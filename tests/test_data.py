"""The input pipeline, alone and under tf.distribute."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from speech2face import data
from tests.support import fake_records


def _clip_ids(dataset, num_batches=None):
    ids = []
    for i, batch in enumerate(dataset):
        if num_batches is not None and i >= num_batches:
            break
        ids.extend(c.decode() for c in batch["clip_id"].numpy())
    return ids


def test_eval_mode_reads_every_example_once_in_a_fixed_order(tmp_path):
    pattern, clip_ids = fake_records.write_record_files(str(tmp_path), 3, 5)
    dataset = data.input_fn(pattern, None, global_batch_size=4, training=False)
    first_pass = _clip_ids(dataset)
    assert sorted(first_pass) == sorted(clip_ids)
    assert _clip_ids(dataset) == first_pass
    shapes = [b["spectrogram"].shape[0] for b in dataset]
    assert shapes == [4, 4, 4, 3]


def test_training_mode_shuffles_repeats_and_drops_remainder(tmp_path):
    pattern, clip_ids = fake_records.write_record_files(str(tmp_path), 3, 5)
    dataset = data.input_fn(
        pattern,
        None,
        global_batch_size=4,
        training=True,
        options=data.InputOptions(seed=3, shuffle_buffer=16),
    )
    ids = _clip_ids(dataset, num_batches=15)  # 60 examples = 4 epochs of 15.
    assert len(ids) == 60
    assert set(ids) == set(clip_ids)
    assert ids[:15] != clip_ids
    assert max(collections.Counter(ids).values()) <= 6


def test_training_order_and_batch_seeds_repeat_for_a_seed(tmp_path):
    """By default the parallel readers hand on examples in order: a seed fixes every batch, and
    each batch's transform gets the seed (seed, batch index) for stateless random draws."""
    pattern, clip_ids = fake_records.write_record_files(str(tmp_path), 4, 6)

    def run(seed, **kwargs):
        def transform(batch, batch_seed):
            return {"clip_id": batch["clip_id"], "batch_seed": batch_seed}
        options = data.InputOptions(seed=seed, shuffle_buffer=8, batch_transform=transform,
                                    with_spectrogram=False, **kwargs)
        batches = list(data.input_fn(pattern, None, 4, True, options).take(12))
        return ([c.decode() for b in batches for c in b["clip_id"].numpy()],
                [b["batch_seed"].numpy().tolist() for b in batches])

    ids, seeds = run(5)
    assert run(5) == (ids, seeds)
    assert seeds == [[5, i] for i in range(12)]
    assert run(6)[0] != ids
    assert set(ids) == set(clip_ids)
    # Free order (deterministic=False): the same kind of batches, in whatever order they finish.
    free, free_seeds = run(5, deterministic=False)
    assert len(free) == len(ids) and set(free) <= set(clip_ids)
    assert len({tuple(x) for x in free_seeds}) == 12 and {x[0] for x in free_seeds} == {5}


@pytest.mark.parametrize("training", [True, False])
def test_pipelines_run_without_the_autotuning_thread(tmp_path, training):
    # Deleting an iterator waits for that thread's next wake-up, up to a minute (data.py).
    pattern, _ = fake_records.write_record_files(str(tmp_path), 2, 3)
    dataset = data.input_fn(pattern, None, global_batch_size=2, training=training)
    assert dataset.options().autotune.enabled is False
    assert next(iter(dataset))["spectrogram"].shape[0] == 2


@pytest.mark.parametrize("num_files", [4, 1])
def test_input_pipelines_split_the_data(tmp_path, num_files):
    # 4 files: sharded by file; 1 file: fewer files than pipelines, sharded by example.
    pattern, clip_ids = fake_records.write_record_files(str(tmp_path), num_files, 12 // num_files)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
        )
        seen.append(_clip_ids(data.input_fn(pattern, context, 4, training=False)))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(clip_ids)


def test_mirrored_strategy_sees_every_example_once_per_epoch(tmp_path, mirrored):
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest makes two logical CPUs"
    strategy = mirrored
    pattern, clip_ids = fake_records.write_record_files(str(tmp_path), 3, 7)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: data.input_fn(pattern, ctx, global_batch_size=6, training=False)
    )
    seen, per_replica_sizes = [], set()
    for batch in dataset:
        for local in strategy.experimental_local_results(batch["clip_id"]):
            seen.extend(c.decode() for c in local.numpy())
            per_replica_sizes.add(int(local.shape[0]))
    assert sorted(seen) == sorted(clip_ids)
    assert 3 in per_replica_sizes and max(per_replica_sizes) == 3


def test_mirrored_strategy_training_batches(tmp_path, mirrored):
    strategy = mirrored
    pattern, _ = fake_records.write_record_files(str(tmp_path), 2, 5)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: data.input_fn(pattern, ctx, global_batch_size=4, training=True)
    )
    batch = next(iter(dataset))
    locals_ = strategy.experimental_local_results(batch["spectrogram"])
    assert len(locals_) == 2 and all(t.shape == (2, 7, 257, 2) for t in locals_)
    assert all(np.isfinite(t.numpy()).all() for t in locals_)


def test_no_matching_files_is_a_clear_error(tmp_path):
    with pytest.raises(data.NoRecordsError, match="no TFRecord files match"):
        data.input_fn(str(tmp_path / "nothing-*.tfrecord"), None, 2, training=False)


def test_example_filter_drops_examples_before_batching(tmp_path):
    pattern, clip_ids = fake_records.write_record_files(str(tmp_path), 2, 5)

    def even(serialized):  # clip00000, clip00002, ...
        clip = tf.io.parse_single_example(
            serialized, {"clip_id": tf.io.FixedLenFeature([], tf.string)})["clip_id"]
        return tf.strings.to_number(tf.strings.substr(clip, 4, 5), tf.int32) % 2 == 0

    options = data.InputOptions(example_filter=even)
    held_out = _clip_ids(data.input_fn(pattern, None, 3, False, options))
    assert sorted(held_out) == [c for c in clip_ids if int(c[4:]) % 2 == 0]
    training = data.input_fn(pattern, None, 4, True, options)
    batches = [batch["clip_id"].numpy() for batch in training.take(5)]
    assert all(len(b) == 4 for b in batches)  # full batches of kept examples
    assert all(int(c.decode()[4:]) % 2 == 0 for b in batches for c in b)


def test_a_directory_given_for_records_is_named_with_the_glob_to_give(tmp_path):
    pattern, _ = fake_records.write_record_files(str(tmp_path), 1, 2)
    with pytest.raises(data.NoRecordsError, match="is a directory, not a record file") as e:
        data.list_files(str(tmp_path))
    assert f"'{tmp_path}/train-*.tfrecord'" in str(e.value)
    assert data.list_files(pattern)  # the glob itself still reads
