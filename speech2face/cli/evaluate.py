r"""Evaluates a trained voice encoder with the paper's protocol (docs/evaluation.md).

    python evaluate.py --model=MODEL --records='toy/test-*.tfrecord' --output_dir=eval
    python evaluate.py --model_dir=runs/encoder --records='toy/test-*.tfrecord' \
        --output_dir=runs/encoder/evaluation [--gallery_size=5000] [--durations=6,3] \
        [--exaggeration=0,0.7] [--study_size=1000]

Loads a model directory (--model: `speech2face-export-model`, or the demo's WORKDIR/model), or the
exported encoder of a stage-2 run (--model_dir) and the face decoder of the stage-1 run it was
trained against (--decoder_dir overrides), encodes the first --gallery_size test clips at every duration
(3 s = the first 3 s of the stored 6 s segment), and writes to --output_dir:
  metrics.json   retrieval recall@K (cos, L1, L2) beside chance, feature distances (normalised
                 and raw features), the F2F/S2F craniofacial study per --exaggeration,
                 attribute agreement; per duration
  report.md      the paper's tables with our numbers, the paper's and chance side by side
  *.png          recall@K curves, distance histograms, true | from v_f | from v_s faces
and TensorBoard scalars (eval/retrieval_cos_r10_6s, ...) into --model_dir/eval (--output_dir/eval
with --model).

Attributes: in a toy world its latent attributes are used (probes fitted on --train_records,
default the train-*.tfrecord beside --records). Any other classifier plugs in with
--attribute_classifier=package.module:factory, a callable returning one
`speech2face.evaluation.attributes.AttributeClassifier` or a list of them (repeat the flag for several).
"""

import importlib
import inspect
import os

from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines

from absl import app, flags, logging  # noqa: E402

from speech2face.cli import flags as config_flags  # noqa: E402

from speech2face import data, errors, evaluation  # noqa: E402
from speech2face.datasets.toy import attributes as toy_attributes  # noqa: E402
from speech2face.evaluation import report  # noqa: E402

# Defaults are run_evaluation's own (the paper's gallery of 5,000 and 6 s / 3 s): one copy.
_DEFAULTS = {name: p.default for name, p in inspect.signature(
    evaluation.run_evaluation).parameters.items()}

flags.DEFINE_string("model", None, "A model directory (model.json; written by "
                    "speech2face-export-model or the demo). Or give --model_dir.")
flags.DEFINE_string("model_dir", None, "A stage-2 run directory (with export/voice_encoder.keras).")
flags.DEFINE_string("records", None, "Glob (or comma-separated globs) of held-out TFRecords.")
flags.DEFINE_string("output_dir", None, "Where metrics.json, report.md and figures go.")
flags.DEFINE_integer("gallery_size", _DEFAULTS["gallery_size"], "Gallery (= queries): the first this many test clips; "
                     "all of them when the test set is smaller (the report says so).")
flags.DEFINE_list("durations", [f"{d:g}" for d in _DEFAULTS["durations"]], "Input lengths in seconds, each at most the 6 s the "
                  "records store.")
flags.DEFINE_list("exaggeration", [f"{e:g}" for e in _DEFAULTS["exaggerations"]],
                  "Exaggerations e of the craniofacial study's S2F faces, decoded from mean + "
                  "(1 + e)(v_s - mean) (the paper's numbers match the authors' 0.7 renders).")
flags.DEFINE_integer("study_size", _DEFAULTS["study_size"], "Test clips of the craniofacial "
                     "study (the first this many; the paper's: 1,000).")
flags.DEFINE_integer("batch_size", _DEFAULTS["batch_size"], "Clips per encoder and decoder call.")
flags.DEFINE_string("decoder_dir", None, "Stage-1 run to decode faces with (default: the one "
                    "the encoder was trained against, as its export records).")
flags.DEFINE_string("train_records", None, "Records the toy world's attribute probes are fitted "
                    "on (default: train-*.tfrecord beside --records).")
flags.DEFINE_multi_string("attribute_classifier", [], "module:callable returning an attribute "
                          "classifier or a list of them (see speech2face.evaluation.attributes).")
flags.DEFINE_integer("num_sample", _DEFAULTS["num_sample"], "Test speakers shown in the face figure.")
flags.DEFINE_bool("allow_train_split", False, "Score records that dataset_info.json lists under "
                  "the train split (refused by default; the report then says they are not "
                  "held out).")
flags.DEFINE_bool("summaries", _DEFAULTS["write_summaries"], "Write TensorBoard summaries into --model_dir/eval.")
FLAGS = flags.FLAGS


def _load_classifiers(specs):
    """[classifier] from "module:callable" specs; None when no spec is given."""
    if not specs:
        return None
    out = []
    for spec in specs:
        module_name, _, name = spec.partition(":")
        if not module_name or not name:
            raise ValueError(f"--attribute_classifier={spec}: expected module:callable")
        try:
            factory = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--attribute_classifier={spec}: cannot load it ({e})") from e
        made = factory()
        out.extend([made] if hasattr(made, "predict") else list(made))
    return out


def _classifiers():
    """--attribute_classifier's, else the toy world's when --records sit in one, else none."""
    given = _load_classifiers(FLAGS.attribute_classifier)
    if given is not None:
        return given
    return toy_attributes.classifiers_for(os.path.dirname(data.list_files(FLAGS.records)[0]),
                                          FLAGS.train_records)


def main(argv):
    config_flags.check_usage(argv, required=("records", "output_dir"))
    # Checked before the evaluation runs: it is written (created) only at the end.
    problem = errors.unwritable_reason(FLAGS.output_dir)
    if problem:
        config_flags.fail(f"--output_dir={FLAGS.output_dir}: {problem}; choose a directory "
                          "you can write to")
    if bool(FLAGS.model) == bool(FLAGS.model_dir):
        raise app.UsageError("give --model=MODEL (a model directory) or --model_dir=RUN (a "
                             "stage-2 training run), one of the two")
    try:
        durations = [float(d) for d in FLAGS.durations]
    except ValueError as e:
        raise app.UsageError(f"--durations must be numbers of seconds, e.g. 6,3: {e}") from e
    try:
        exaggerations = [float(e) for e in FLAGS.exaggeration]
    except ValueError as e:
        raise app.UsageError(f"--exaggeration must be numbers, e.g. 0,0.7: {e}") from e
    try:
        result = evaluation.run_evaluation(
            FLAGS.model_dir, FLAGS.records, FLAGS.output_dir, gallery_size=FLAGS.gallery_size,
            durations=durations, attribute_classifiers=_classifiers(), decoder_dir=FLAGS.decoder_dir,
            batch_size=FLAGS.batch_size, num_sample=FLAGS.num_sample,
            exaggerations=exaggerations, study_size=FLAGS.study_size,
            write_summaries=FLAGS.summaries, model=FLAGS.model,
            allow_train_split=FLAGS.allow_train_split)
    except (FileNotFoundError, data.NoRecordsError, ValueError, TypeError) as e:
        # Errors a user causes (no export, no records, bad flags) end in one line, not a trace.
        logging.debug("evaluation failed", exc_info=True)
        config_flags.fail(e)
    print(report.format_retrieval_table(result))
    if result["all_test_examples_used"]:
        print(f"(the test set has {result['gallery_size']} clips, fewer than --gallery_size="
              f"{FLAGS.gallery_size}: all of them are used)")
    print(f"\nMetrics: {result['files']['metrics']}\nReport:  {result['files']['report']}")
    for path in result["files"]["figures"].values():
        print(f"Figure:  {path}")
    if "summaries" in result["files"]:
        print(f"TensorBoard: tensorboard --logdir={os.path.dirname(result['files']['summaries'])}")


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
