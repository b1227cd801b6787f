"""Typed experiments: the paper's as the defaults, the toy world's named once, train.py's flags
resolved into them, and runs recorded so that they can be repeated."""

import json
import os
import subprocess
import sys

import pytest

from speech2face import losses
from speech2face.training import config, decoder_task, encoder_task, experiments, loop
from tests.support.tiny import trainer_kwargs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_paper_experiments_are_the_papers_settings():
    enc = experiments.get("paper_encoder")
    assert enc.stage == "encoder"
    assert enc.task == encoder_task.EncoderTaskConfig()
    assert (enc.task.preset, enc.task.lambda1, enc.task.lambda2, enc.task.temperature) == (
        "paper", 0.025, 200.0, 2.0)
    assert (enc.task.learning_rate, enc.task.decay_rate, enc.task.decay_steps) == (
        1e-3, 0.95, 10000)
    assert enc.task.random_crops and not enc.task.mean_feature_init
    assert (losses.LAMBDA1, losses.LAMBDA2, losses.TEMPERATURE) == (0.025, 200.0, 2.0)
    dec = experiments.get("paper_decoder")
    assert dec.stage == "decoder" and dec.task.preset == "paper"
    assert dec.task.resolved_perceptual_layer() == "fc7"
    for exp in (enc, dec):
        assert exp.trainer.global_batch_size == 8
        assert exp.trainer.train_steps is None and exp.trainer.epochs == 3
        assert exp.runtime == config.RuntimeConfig()


def test_toy_experiments_name_their_changes():
    enc = experiments.get("toy_encoder")
    assert (enc.task.preset, enc.task.lambda1, enc.task.mean_feature_init) == ("toy", 1e4, True)
    assert enc.trainer.train_steps == 800 and enc.trainer.global_batch_size == 8
    assert (enc.task.learning_rate, enc.task.decay_rate, enc.task.decay_steps) == (1e-3, 0.2, 600)
    dec = experiments.get("toy_decoder")
    # XLA off: on a 2-core Xeon with AVX-512 its step is 0.8x oneDNN's (docs/toy_world.md).
    assert enc.runtime == dec.runtime == config.RuntimeConfig()
    assert (dec.task.preset, dec.task.perceptual_layer) == ("small", "none")
    assert (dec.task.decay_rate, dec.task.decay_steps) == (0.2, 100)
    assert dec.trainer.train_steps == 150 and dec.trainer.global_batch_size == 16
    with pytest.raises(ValueError, match="unknown experiment 'tiny'"):
        experiments.get("tiny")


def test_override_and_round_trip():
    exp = experiments.override(experiments.get("paper_encoder"), {
        "task.lambda1": 1.0, "trainer.train_steps": 7, "data.train_records": "x-*",
        "runtime.mixed_precision": "bfloat16"})
    assert (exp.task.lambda1, exp.trainer.train_steps, exp.data.train_records) == (1.0, 7, "x-*")
    assert exp.runtime.mixed_precision == "bfloat16" and exp.task.lambda2 == 200.0
    assert experiments.from_dict(json.loads(json.dumps(experiments.to_dict(exp)))) == exp
    with pytest.raises(ValueError, match="has no field 'lambda3'"):
        experiments.override(exp, {"task.lambda3": 1.0})
    with pytest.raises(ValueError, match="SECTION.FIELD"):
        experiments.override(exp, {"lambda1": 1.0})
    with pytest.raises(ValueError, match=r"unknown task fields: \['colour'\]"):
        experiments.from_dict({"stage": "decoder", "task": {"colour": 1}})
    with pytest.raises(TypeError, match="needs a DecoderTaskConfig"):
        experiments.ExperimentConfig("decoder", encoder_task.EncoderTaskConfig())


def test_steps_from_epochs():
    trainer = config.TrainerConfig()
    assert trainer.steps_for(1_700_000) == 637_500  # the paper: 3 epochs of 1.7 M at batch 8
    assert config.TrainerConfig(train_steps=5).steps_for(1_700_000) == 5
    with pytest.raises(ValueError, match="train_steps must be at least 1"):
        config.TrainerConfig(train_steps=0).validate()


@pytest.mark.slow
def test_epochs_come_from_dataset_info_and_the_run_is_recorded(tiny_world, tmp_path):
    world, info = tiny_world
    num_train = info.counts["train"]["clips"]
    model_dir = str(tmp_path / "run")
    task = decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(preset="small",
                                                                   perceptual_weight=0.0))
    kwargs = trainer_kwargs(model_dir, os.path.join(world, "train-*.tfrecord"),
                            global_batch_size=4, train_steps=None, epochs=1.0,
                            steps_per_loop=2, summary_every=2)
    result = loop.Trainer(task, **kwargs).train()
    expected = -(-num_train // 4)
    assert result["step"] == expected
    with open(os.path.join(model_dir, "config.json")) as f:
        recorded = json.load(f)
    assert recorded["trainer"]["resolved_train_steps"] == expected
    assert recorded["trainer"]["epochs"] == 1.0
    # The canonical-face filter (on, as in the paper) counted over the training set: the toy
    # world's faces are all frontal and neutral.
    faces = recorded["task"]["training_faces"]
    assert (faces["read"], faces["kept"], faces["kept_fraction"]) == (num_train, num_train, 1.0)
    assert recorded["task"]["canonical_faces"] is True
    # What the run does differently from the paper, for evaluation's report.
    differs = recorded["differs_from_paper"]
    assert differs["task.preset"] == {"run": "small", "paper": "paper"}
    assert differs["task.perceptual_weight"]["run"] == 0.0
    assert differs["trainer.global_batch_size"] == {"run": 4, "paper": 8}
    assert differs["trainer.length"] == {"run": "1 epochs", "paper": "3 epochs"}
    assert "task.vggface_weights" not in differs and "task.image_weight" not in differs
    assert not any(k.startswith("task.canonical") for k in differs)
    # perceptual_layer is compared resolved: the small preset's pool3 against the paper's fc7.
    assert differs["task.perceptual_layer"] == {"run": "pool3", "paper": "fc7"}


@pytest.mark.slow
def test_precision_is_set_by_the_runtime_config_and_restored(tiny_world, tmp_path):
    import keras
    world, _ = tiny_world
    seen = {}

    class Probe(decoder_task.DecoderTask):
        def build_model(self):
            seen["policy"] = keras.mixed_precision.global_policy().name
            return super().build_model()

    task = Probe(decoder_task.DecoderTaskConfig(preset="small", perceptual_weight=0.0))
    kwargs = trainer_kwargs(str(tmp_path / "bf16"), os.path.join(world, "train-*.tfrecord"),
                            global_batch_size=2, train_steps=1, steps_per_loop=1,
                            summary_every=1)
    loop.Trainer(task, **kwargs, runtime=config.RuntimeConfig(mixed_precision="bfloat16")).train()
    assert seen["policy"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"


def _resolve(*arg_lists):
    """The experiment train.py resolves from each list of arguments, as dicts (in one
    subprocess, flags reset between lists: train.py's flags would collide with evaluate.py's
    in this one)."""
    code = ("import json, sys; from speech2face.cli import train; "
            "from speech2face.training import experiments\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    train.FLAGS.unparse_flags(); train.FLAGS(['train.py'] + args)\n"
            "    print(json.dumps(experiments.to_dict(train.resolve_experiment())))")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(arg_lists)], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.strip().splitlines()[-len(arg_lists):]]


@pytest.mark.slow
def test_train_py_with_data_flags_only_is_the_paper(tmp_path):
    recorded = tmp_path / "config.json"
    enc, dec, toy, toy_dec = _resolve(
        ["--train_records=r-*", "--model_dir=m", "--decoder_dir=d"],
        ["--stage=decoder", "--train_records=r-*", "--model_dir=m", "--train_steps=1"],
        ["--experiment=toy_encoder", "--train_records=r-*", "--lambda1=5",
         "--nomean_feature_init", "--nodeterministic_input"],
        ["--experiment=toy_decoder", "--train_records=r-*", "--nocanonical_faces",
         "--canonical_max_mouth_open=0.3", "--decoder_lr_decay_steps=7"])
    assert enc["stage"] == "encoder"
    assert enc["task"]["preset"] == "paper" and enc["task"]["lambda1"] == 0.025
    assert enc["task"]["lambda2"] == 200.0 and enc["task"]["temperature"] == 2.0
    assert enc["task"]["mean_feature_init"] is False
    assert enc["trainer"]["global_batch_size"] == 8 and enc["trainer"]["train_steps"] is None
    assert dec["task"]["preset"] == "paper" and dec["trainer"]["global_batch_size"] == 8
    assert dec["trainer"]["train_steps"] == 1
    assert dec["task"]["canonical_faces"] is True and dec["task"]["canonical_max_yaw"] == 0.25
    assert toy_dec["task"]["canonical_faces"] is False
    assert toy_dec["task"]["canonical_max_mouth_open"] == 0.3
    assert (toy_dec["task"]["decay_rate"], toy_dec["task"]["decay_steps"]) == (0.2, 7)
    assert dec["task"]["decay_rate"] == 1.0  # the paper's decoder: one step size
    assert toy["task"]["preset"] == "toy" and toy["task"]["lambda1"] == 5.0
    assert toy["task"]["mean_feature_init"] is False and toy["trainer"]["train_steps"] == 800
    assert enc["data"]["deterministic_input"] is True and dec["data"]["deterministic_input"]
    assert toy["data"]["deterministic_input"] is False
    recorded.write_text(json.dumps({"experiment": toy}))
    (again,) = _resolve([f"--from_config={recorded}", "--train_steps=9"])
    assert again["task"] == toy["task"] and again["trainer"]["train_steps"] == 9
