"""The shared training loop, end to end with the stage-1 decoder task on a tiny toy world."""

import dataclasses
import glob
import os
import shutil
import signal
import subprocess
import sys
import time


import numpy as np
import pytest
import tensorflow as tf

from speech2face import data, errors, records
from speech2face.models import export
from speech2face.training import decoder_task, loop
from tests.support import helpers
from tests.support.tiny import trainer_kwargs


def _config(world, model_dir, **kwargs):
    """loop.Trainer's keyword arguments for a short run on the tiny world."""
    defaults = dict(eval_records=os.path.join(world, "test-*.tfrecord"), global_batch_size=4,
                    train_steps=30, steps_per_loop=5, checkpoint_every=10, summary_every=5,
                    image_summary_every=15, eval_every=15, eval_batches=2, num_images=2,
                    keep_checkpoints=1)
    defaults.update(kwargs)
    return trainer_kwargs(model_dir, os.path.join(world, "train-*.tfrecord"), **defaults)


def _task(world, **kwargs):
    kwargs.setdefault("perceptual_layer", "pool2")
    return decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(
        preset="small", vggface_weights=os.path.join(world, "vggface_random_seed3.h5"), **kwargs))


@pytest.mark.slow
def test_decoder_training_end_to_end_and_resume(tiny_world, tmp_path):
    world, _ = tiny_world
    model_dir = str(tmp_path / "decoder")
    result = loop.Trainer(_task(world), **_config(world, model_dir)).train()
    assert result["status"] == "finished" and result["step"] == 30
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-30")
    assert os.path.exists(os.path.join(model_dir, "config.json"))

    totals = helpers.scalars(os.path.join(model_dir, "train"), "losses/total")
    assert [s for s, _ in totals] == [5, 10, 15, 20, 25, 30]
    # Training batches come in a thread-dependent order, and 30 steps of batch 4 can end on a
    # spike (seen once in CI: 0.68 at step 5, 1.97 at step 30): the loss must fall, not end low.
    assert min(v for _, v in totals[1:]) < totals[0][1]
    tags = helpers.summary_tags(os.path.join(model_dir, "train"))
    assert {"losses/landmark_mse", "losses/texture_l1", "losses/perceptual", "lr",
            "perf/steps_per_sec", "perf/examples_per_sec", "grad_norm",
            "faces/true_vs_decoded"} <= tags
    assert "losses/total" in helpers.summary_tags(os.path.join(model_dir, "eval"))

    decoder = export.load_decoder(model_dir)
    out = decoder(tf.zeros([1, 4096]))
    assert out["image"].shape == (1, 64, 64, 3)
    # f_dec sees the features centred on the train mean, with unit RMS.
    features = np.stack([records.decode_example(r.numpy()).face_feature
                         for path in sorted(glob.glob(os.path.join(world, "train-*.tfrecord")))
                         for r in tf.data.TFRecordDataset(path)]).astype(np.float64)
    np.testing.assert_allclose(decoder.feature_mean.numpy(), features.mean(0), rtol=1e-4)
    centred_rms = np.sqrt(np.mean(np.square(features - features.mean(0))))
    assert decoder.feature_scale.numpy() == pytest.approx(1.0 / centred_rms, rel=1e-3)
    numbers = result["final_evaluation"]
    assert set(numbers["pixel_l1"]) == {"decoded", "mean_face"}
    assert numbers["faces"].startswith("canonical only")  # held out, filtered as in training

    # A rerun of the finished run restores EVERY variable (batch-norm statistics and the layers
    # a subclassed model keeps in lists included) and re-exports the same decoder.
    exported = [w.numpy().copy() for w in decoder.weights]
    rerun = loop.Trainer(_task(world), **_config(world, model_dir)).train()
    assert rerun["start_step"] == 30 and rerun["step"] == 30
    for before, after in zip(exported, export.load_decoder(model_dir).weights):
        np.testing.assert_array_equal(before, after.numpy(), err_msg=after.path)

    # A rerun with more steps resumes from the checkpoint instead of starting over.
    again = loop.Trainer(_task(world), **_config(world, model_dir, train_steps=40)).train()
    assert again["start_step"] == 30 and again["step"] == 40


def test_incompatible_model_dir_is_refused(tiny_world, tiny_models, tmp_path):
    world, _ = tiny_world
    # A model_dir holding the session's small decoder run (what the check reads: config.json).
    model_dir = str(tmp_path / "decoder")
    os.makedirs(model_dir)
    shutil.copy(os.path.join(tiny_models.decoder_dir, export.RUN_CONFIG), model_dir)
    paper = decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(
        preset="paper", perceptual_weight=0.0))
    with pytest.raises(errors.UserError, match="new --model_dir"):
        loop.Trainer(paper, **_config(world, model_dir, train_steps=5)).train()


class _PoisonableTask(decoder_task.DecoderTask):
    """The decoder task whose losses turn NaN when `poison` is set."""

    poison = False

    def compute_losses(self, model, batch, training):
        losses = super().compute_losses(model, batch, training)
        if self.poison:
            return {k: v * float("nan") for k, v in losses.items()}
        return losses


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_world, tmp_path):
    world, _ = tiny_world
    model_dir = str(tmp_path / "decoder")
    short = dict(eval_records=None, steps_per_loop=2, checkpoint_every=2, summary_every=2)
    loop.Trainer(_PoisonableTask(decoder_task.DecoderTaskConfig(
        preset="small", perceptual_weight=0.0)), **_config(world, model_dir, train_steps=4,
                                                           **short)).train()
    task = _PoisonableTask(decoder_task.DecoderTaskConfig(preset="small", perceptual_weight=0.0))
    task.poison = True
    with pytest.raises(loop.TrainingError, match="non-finite loss at step 5"):
        loop.Trainer(task, **_config(world, model_dir, train_steps=8, **short)).train()
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert latest.endswith("ckpt-4")


@pytest.mark.slow
def test_mirrored_strategy_runs_the_decoder_stage(tiny_world, tmp_path, mirrored):
    world, _ = tiny_world
    strategy = mirrored
    result = loop.Trainer(_task(world, perceptual_weight=0.0),
                          **_config(world, str(tmp_path / "m"), train_steps=10, eval_every=10,
                                    image_summary_every=10), strategy=strategy).train()
    assert result["step"] == 10 and np.isfinite(result["losses"]["total"])


@pytest.mark.slow
def test_skip_corrupt_records_trains_on_and_counts_the_files_cut_short(tiny_world, tmp_path):
    """A payload damaged after a sound header passes the check before the run; with
    skip_corrupt_records each reading of that file ends at the damage, is counted, and the run
    goes on."""
    from speech2face.records import verify  # pylint: disable=import-outside-toplevel
    world, _ = tiny_world
    good = sorted(glob.glob(os.path.join(world, "train-*.tfrecord")))
    offsets = verify.walk(good[0]).offsets
    damaged = bytearray(open(good[0], "rb").read())
    damaged[offsets[1] + 12 + 100] ^= 0xFF  # inside record 1's payload
    bad = str(tmp_path / "damaged.tfrecord")
    open(bad, "wb").write(bytes(damaged))
    assert verify.first_record_problem(bad) is None  # the cheap check cannot see it
    kwargs = _config(world, str(tmp_path / "run"), train_steps=5, eval_every=5,
                     image_summary_every=5)
    kwargs["data_config"] = dataclasses.replace(
        kwargs["data_config"], train_records=",".join(good + [bad]),
        skip_corrupt_records=True)
    result = loop.Trainer(_task(world, perceptual_weight=0.0), **kwargs).train()
    assert result["status"] == "finished" and result["step"] == 5
    assert result["file_reads_cut_short"] >= 1


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_a_rerun_resumes(tiny_world, tmp_path):
    world, _ = tiny_world
    model_dir = tmp_path / "killed"
    cmd = [sys.executable, "train.py", "--stage=decoder", "--experiment=toy_decoder",
           f"--train_records={world}/train-*.tfrecord", f"--model_dir={model_dir}",
           "--train_steps=100000", "--steps_per_loop=2", "--summary_every=2",
           "--checkpoint_every=100000", "--image_summary_every=100000", "--global_batch_size=2",
           "--keep_checkpoints=1",
           "--perceptual_weight=0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline and "step 4/" not in log_path.read_text():
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        # Not a success: the run did not reach --train_steps (128 + SIGTERM, as a shell says).
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, log_path.read_text()[-3000:]
    text = log_path.read_text()
    assert "Received SIGTERM" in text and "Rerun the same command to resume" in text
    assert "train.py: stopped by SIGTERM at step" in text
    assert not os.path.exists(model_dir / "export")  # an interrupted run is not exported
    assert not os.path.exists(model_dir / "train.lock")
    saved = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert saved is not None
    saved_step = int(saved.rsplit("-", 1)[1])
    assert saved_step >= 4
    resume = cmd[:]
    resume[resume.index("--train_steps=100000")] = f"--train_steps={saved_step + 2}"
    result = subprocess.run(resume, cwd=repo, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stderr and f"at step {saved_step}" in result.stderr
    assert os.path.exists(model_dir / "export" / "face_decoder.keras")


def test_no_records_is_a_clear_error(tmp_path):
    with pytest.raises(data.NoRecordsError):
        loop.Trainer(decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(
            perceptual_weight=0.0)), **trainer_kwargs(str(tmp_path),
                                                      str(tmp_path / "none-*"))).train()

