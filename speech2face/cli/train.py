r"""Trains a Speech2Face stage. With only data and directory flags it runs the paper's experiment
of that stage (`paper_decoder`, `paper_encoder`: docs/training.md).

Stage 1, the face decoder (face feature -> canonical face):

    python train.py --stage=decoder --train_records='toy/train-*.tfrecord' \
        --eval_records='toy/test-*.tfrecord' --model_dir=runs/decoder [--vggface_weights=H5]

Stage 2, the voice encoder (speech -> face feature), the paper's training (the default stage):

    python train.py --train_records='toy/train-*.tfrecord' --eval_records='toy/test-*.tfrecord' \
        --model_dir=runs/encoder --decoder_dir=runs/decoder [--vggface_weights=H5]

`--experiment=toy_decoder|toy_encoder` runs the toy world's choices instead; any other flag
changes one field of the experiment; `--from_config=RUN/config.json` repeats a run exactly.
Without --train_steps a run makes the experiment's passes over the training set (the paper's 3
epochs), counted from the records' dataset_info.json. A rerun with the same --model_dir resumes
from its latest checkpoint (refused if a setting that changes what is trained differs), one run
per --model_dir at a time; SIGTERM/SIGINT save a checkpoint and exit with status 128 + the
signal, unexported. --helpfull lists every flag.
When --vggface_weights is not given, the weights the records' dataset_info.json names are used.
"""

import json
import os
import signal
import sys

from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines

from absl import app, flags, logging  # noqa: E402

from speech2face import data, errors  # noqa: E402
from speech2face.records import dataset_info  # noqa: E402
from speech2face.cli import flags as config_flags  # noqa: E402
from speech2face.models import face_decoder, voice_encoder  # noqa: E402
from speech2face.training import config, decoder_task, encoder_task, experiments  # noqa: E402
from speech2face.training import strategy  # noqa: E402

flags.DEFINE_enum("stage", None, list(experiments.STAGES),
                  "What to train: the voice encoder (stage 2, the paper's model; the default) or "
                  "the face decoder (stage 1, needed first). Implied by --experiment.")
flags.DEFINE_enum("experiment", None, list(experiments.EXPERIMENTS),
                  "Named experiment (default: the paper's of --stage).")
flags.DEFINE_string("from_config", None, "A run's config.json: repeat that run's experiment "
                    "(other flags still override single fields).")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, config.json and the export.")
# Both stages' task configs have this field; one flag sets it.
flags.DEFINE_string("vggface_weights", None, "rcmalli_vggface_tf_vgg16.h5 (docs/vggface.md): the "
                    "perceptual term's network in stage 1, the fc8 teacher in stage 2. Default: "
                    "the file the records' dataset_info.json names (the toy world writes one).")
_DATA = config_flags.define_from(config.DataConfig)
_TRAINER = config_flags.define_from(config.TrainerConfig)
_RUNTIME = config_flags.define_from(config.RuntimeConfig, choices={
    "strategy": strategy.STRATEGIES, "mixed_precision": strategy.PRECISIONS})
_DECODER = config_flags.define_from(
    decoder_task.DecoderTaskConfig, help_prefix="Stage 1: ",
    names={"preset": "decoder_preset", "learning_rate": "decoder_learning_rate",
           "decay_rate": "decoder_lr_decay_rate", "decay_steps": "decoder_lr_decay_steps"},
    choices={"preset": face_decoder.PRESETS,
             "perceptual_layer": decoder_task.PERCEPTUAL_LAYERS})
_ENCODER = config_flags.define_from(
    encoder_task.EncoderTaskConfig, help_prefix="Stage 2: ",
    names={"preset": "encoder_preset", "decay_rate": "lr_decay_rate",
           "decay_steps": "lr_decay_steps"},
    choices={"preset": voice_encoder.PRESETS})
flags.adopt_module_key_flags(config_flags)  # --help lists the generated flags too
FLAGS = flags.FLAGS


def resolve_experiment() -> experiments.ExperimentConfig:
    """The experiment the command line asks for: named or read back, then single fields."""
    if FLAGS.from_config and FLAGS.experiment:
        raise app.UsageError("give --experiment or --from_config, not both")
    if FLAGS.from_config:
        try:
            with open(FLAGS.from_config, encoding="utf-8") as f:
                recorded = json.load(f).get("experiment")
            if not recorded:
                raise ValueError("it records no experiment (written by an older version?)")
            experiment = experiments.from_dict(recorded)
        except (OSError, ValueError) as e:
            raise app.UsageError(f"--from_config={FLAGS.from_config}: {e}") from e
    else:
        name = FLAGS.experiment or experiments.PAPER_EXPERIMENT[FLAGS.stage or "encoder"]
        experiment = experiments.get(name)
    if FLAGS.stage and FLAGS.stage != experiment.stage:
        raise app.UsageError(f"--stage={FLAGS.stage} contradicts the {experiment.stage} "
                             "experiment asked for")
    own, other = (_DECODER, _ENCODER) if experiment.stage == "decoder" else (_ENCODER, _DECODER)
    stray = [f for f in config_flags.given(other) if f not in own]
    if stray:
        raise app.UsageError(f"{', '.join('--' + f for f in stray)} belong(s) to the other "
                             f"stage; this run trains the {experiment.stage}")
    changes = {}
    for section, defined in (("data", _DATA), ("trainer", _TRAINER), ("runtime", _RUNTIME),
                             ("task", own)):
        changes.update(config_flags.set_values(section, defined))
    try:
        return experiments.override(experiment, changes)
    except (TypeError, ValueError) as e:
        raise errors.UserError(str(e)) from e


def main(argv):
    config_flags.check_usage(argv, required=("model_dir",))
    experiment = resolve_experiment()
    if not experiment.data.train_records:
        raise app.UsageError("--train_records is required")
    train_files = data.list_files(experiment.data.train_records)
    if not experiment.task.vggface_weights:
        weights = dataset_info.vggface_weights(train_files)
        if weights:
            logging.info("Using the VGG-Face weights named by the records' dataset_info.json: %s",
                         weights)
            experiment = experiments.override(experiment, {"task.vggface_weights": weights})
    try:
        dist = strategy.get_strategy(experiment.runtime.strategy, experiment.runtime.tpu)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    logging.info("Strategy %s with %d replica(s).", type(dist).__name__, dist.num_replicas_in_sync)
    logging.info("Experiment: %s", json.dumps(experiments.to_dict(experiment), default=str))
    try:
        trainer = experiments.trainer(experiment, FLAGS.model_dir, dist)
    except ValueError as e:  # a setting out of range (TrainerConfig.validate, a task's config)
        raise errors.UserError(str(e)) from e
    # Errors the user can fix (bad or corrupt inputs, a busy or read-only model_dir, a changed
    # config on resume, a diverging loss) are `errors.UserError`s: run_main prints one line.
    result = trainer.train()
    if result["status"] == "interrupted":
        signum = signal.Signals[result["signal"]]
        print(f"{os.path.basename(sys.argv[0])}: stopped by {signum.name} at step "
              f"{result['step']} of {result['train_steps']}; checkpoint saved, not exported. "
              "Rerun the same command to resume.", file=sys.stderr)
        sys.exit(128 + signum)
    logging.info("Done: %s", json.dumps(result, default=str))


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
