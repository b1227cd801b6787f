"""Stage 2 (voice encoder) training: end to end, teachers frozen, and under tf.distribute."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from speech2face import audio, data
from speech2face.models import export, vggface
from speech2face.training import config, encoder_task, loop
from tests.support import helpers
from tests.support.tiny import trainer_kwargs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def decoder_dir(tiny_models):
    return tiny_models.decoder_dir


def _task(world, decoder_dir, **kwargs):
    kwargs.setdefault("preset", "small")
    return encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(
        decoder_dir=decoder_dir,
        vggface_weights=os.path.join(world, "vggface_random_seed3.h5"), **kwargs))


def _config(world, model_dir, **kwargs):
    """loop.Trainer's keyword arguments for a short run on the tiny world."""
    defaults = dict(eval_records=os.path.join(world, "test-*.tfrecord"), global_batch_size=4,
                    train_steps=6, steps_per_loop=3, checkpoint_every=3, summary_every=3,
                    image_summary_every=6, eval_every=6, num_images=2)
    defaults.update(kwargs)
    return trainer_kwargs(model_dir, os.path.join(world, "train-*.tfrecord"), **defaults)


def test_encoder_training_end_to_end(tiny_models):
    """The session's tiny encoder run (tests/support/tiny.py): random crops, a held-out
    evaluation and image summaries at its last step."""
    model_dir, task, result = tiny_models.encoder_dir, tiny_models.encoder_task, tiny_models.encoder_result
    assert result["status"] == "finished" and result["step"] == tiny_models.steps
    assert task.cfg.random_crops
    # The teachers did not move: the decoder used in training equals the exported one, and
    # fc8 equals the weights file.
    exported = export.load_decoder(tiny_models.decoder_dir)
    for before, after in zip(exported.weights, task.decoder.weights):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    fresh_fc8 = vggface.build_vggface(weights=task.cfg.vggface_weights).get_layer("fc8")
    for a, b in zip(fresh_fc8.weights, task.fc8.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    tags = helpers.summary_tags(os.path.join(model_dir, "train"))
    assert {"losses/total", "losses/decoder_l1", "losses/feature_l2", "losses/distill", "lr",
            "grad_norm", "perf/examples_per_sec", "faces/true_vs_from_vf_vs_from_vs",
            "audio/input"} <= tags
    encoder, info = export.load_encoder(model_dir)
    assert info["decoder_dir"] == os.path.abspath(tiny_models.decoder_dir)
    assert encoder(tf.zeros([1, 298, 257, 2])).shape == (1, 4096)
    numbers = json.load(open(os.path.join(model_dir, "encoder_eval.json")))
    assert set(numbers["retrieval_cos"]) == {"1", "2", "5", "10"}


def test_voice_feature_starts_at_the_mean_face_feature(tiny_world, decoder_dir):
    world, _ = tiny_world
    mean = export.load_decoder(decoder_dir).feature_mean.numpy()
    assert np.abs(mean).max() > 0  # the decoder stored the training features' mean
    # On in the toy experiment; the paper gives no initialisation, so it is off by default.
    assert not encoder_task.EncoderTaskConfig().mean_feature_init
    model = _task(world, decoder_dir, mean_feature_init=True).build_model()
    np.testing.assert_array_equal(model.get_layer("fc2").bias.numpy(), mean)
    assert not np.any(model.get_layer("fc2").kernel.numpy())
    spectrograms = tf.random.normal([2, 298, 257, 2], seed=1)
    np.testing.assert_array_equal(model(spectrograms, training=False).numpy(),
                                  np.tile(mean, (2, 1)))
    plain = _task(world, decoder_dir, mean_feature_init=False).build_model()
    assert not np.any(plain.get_layer("fc2").bias.numpy())
    assert np.abs(plain.get_layer("fc2").kernel.numpy()).max() > 0


def test_random_crops_reach_the_step_as_int16_and_its_spectrogram(tiny_world, mirrored):
    """The host only cuts int16 crops; the replica step's spectrogram of them equals
    audio.spectrogram of the same samples, on one device and split over two replicas."""
    world, _ = tiny_world
    options = encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(
        preset="small", decoder_dir="unused", vggface_weights="unused")).input_options(True)
    batch = next(iter(data.input_fn(os.path.join(world, "train-*.tfrecord"), None, 4, True,
                                    options)))
    crops = batch[encoder_task.WAVEFORM_KEY]
    assert crops.dtype == tf.int16 and crops.shape == (4, audio.SEGMENT_SAMPLES)
    assert "spectrogram" not in batch
    expected = audio.spectrogram(crops.numpy().astype(np.float32) / 32768.0).numpy()
    one = encoder_task.spectrogram_of(batch).numpy()
    np.testing.assert_allclose(one, expected, atol=1e-6)
    dataset = mirrored.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors({encoder_task.WAVEFORM_KEY: crops}))
    per_replica = mirrored.run(tf.function(encoder_task.spectrogram_of), args=(next(iter(dataset)),))
    split = np.concatenate([t.numpy() for t in mirrored.experimental_local_results(per_replica)])
    np.testing.assert_allclose(split, one, atol=1e-5)


def test_random_crops_are_stateless_draws_from_the_batch_seed():
    """The crop offsets depend on the batch's seed alone (so a run's crops repeat whatever
    order the parallel map runs its batches in), stay inside each clip, and vary."""
    num_samples, lengths = 1000, [1000, 1500, 4000, 4000]
    waveforms = [np.arange(n, dtype=np.int16) for n in lengths]
    batch = {"num_samples": tf.constant(lengths, tf.int64),
             "waveform_bytes": tf.constant([w.tobytes() for w in waveforms]),
             "clip_id": tf.constant(["a", "b", "c", "d"])}
    crop = encoder_task._random_crops(num_samples)

    def offsets(seed):
        out = crop(batch, tf.constant(seed, tf.int64))
        assert set(out) == {"clip_id", encoder_task.WAVEFORM_KEY}
        crops = out[encoder_task.WAVEFORM_KEY].numpy()
        assert crops.shape == (4, num_samples) and crops.dtype == np.int16
        starts = crops[:, 0].astype(int)
        for row, start in zip(crops, starts):  # one contiguous slice of its clip
            np.testing.assert_array_equal(row, np.arange(start, start + num_samples))
        assert all(0 <= o <= n - num_samples for o, n in zip(starts, lengths))
        return starts.tolist()

    first = offsets([0, 7])
    assert offsets([0, 7]) == first and first[0] == 0
    draws = {tuple(offsets([0, i])) for i in range(8)}
    assert len(draws) > 4
    assert {o[1] for o in draws} != {0}


def test_a_run_repeats_exactly(tiny_world, decoder_dir, tmp_path):
    """Two runs of one configuration (input order, random crops, initialisation all from
    trainer.seed) log the same losses at every step."""
    world, _ = tiny_world
    totals = []
    for name in ("first", "again"):
        model_dir = str(tmp_path / name)
        loop.Trainer(_task(world, decoder_dir),
                     **_config(world, model_dir, train_steps=3, steps_per_loop=1,
                               summary_every=1, eval_records=None, image_summary_every=100,
                               checkpoint_every=100)).train()
        totals.append([v for _, v in helpers.scalars(os.path.join(model_dir, "train"),
                                                     "losses/total")])
    assert len(totals[0]) == 3
    assert totals[1] == totals[0]


@pytest.mark.slow
def test_xla_step_trains_the_toy_preset(tiny_world, decoder_dir, tmp_path):
    """The toy experiment's runtime: the replica step under XLA (its batch carries string ids,
    which XLA cannot take: they stay outside the compiled step), the `toy` encoder."""
    world, _ = tiny_world
    task = _task(world, decoder_dir, preset="toy")
    result = loop.Trainer(task, **_config(world, str(tmp_path / "xla"), train_steps=2,
                                          steps_per_loop=2, eval_every=100),
                          runtime=config.RuntimeConfig(jit_compile=True)).train()
    assert result["status"] == "finished" and result["step"] == 2
    assert np.all(np.isfinite(list(result["losses"].values())))
    assert task.encoder_config.conv1_stride == (4, 1)


def test_missing_teachers_are_clear_errors(tiny_world):
    world, _ = tiny_world
    with pytest.raises(ValueError, match="--decoder_dir"):
        encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(vggface_weights="x.h5"))
    with pytest.raises(ValueError, match="--vggface_weights"):
        encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(decoder_dir="d"))


@pytest.mark.slow
def test_mirrored_equals_one_device(tiny_world, decoder_dir, tmp_path, mirrored):
    world, _ = tiny_world
    totals = {}
    for name, strategy in (
            ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
            ("mirrored", mirrored)):
        model_dir = str(tmp_path / name)
        config = _config(world, model_dir, train_steps=3, steps_per_loop=1, summary_every=1,
                         eval_records=None, image_summary_every=100, checkpoint_every=100)
        # A small step size keeps the comparison out of Adam's chaotic first steps, where
        # float-rounding differences between the two summation orders grow.
        task = _task(world, decoder_dir, random_crops=False, learning_rate=1e-5)
        loop.Trainer(task, **config, strategy=strategy).train()
        totals[name] = [v for _, v in helpers.scalars(os.path.join(model_dir, "train"), "losses/total")]
    assert len(totals["one"]) == 3
    np.testing.assert_allclose(totals["mirrored"], totals["one"], rtol=2e-4)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes(tiny_world, decoder_dir, tmp_path):
    world, _ = tiny_world
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    model_dir = tmp_path / "mwms"
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        cmd = [sys.executable, "train.py", "--strategy=multi_worker_mirrored",
               f"--train_records={world}/train-*.tfrecord", f"--model_dir={model_dir}",
               f"--decoder_dir={decoder_dir}", "--encoder_preset=small", "--train_steps=4",
               "--steps_per_loop=2", "--summary_every=2", "--checkpoint_every=2",
               "--global_batch_size=4", "--image_summary_every=100"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert "with 2 replica(s)" in outputs[0]
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-4")
    assert not (model_dir / "worker_tmp" / "worker_1").exists()
    assert (model_dir / "export" / "voice_encoder.keras").exists()
