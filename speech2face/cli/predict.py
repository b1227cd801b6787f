r"""Predicts faces from speech with a trained Speech2Face model.

    python predict.py --model=MODEL --audio=clip.wav --output=face.png
    python predict.py --model_dir=runs/encoder --audio=clip.wav --output=face.png
    python predict.py --model_dir=runs/encoder --audio=a.mp4 --audio=b.m4a --output=face.png
    python predict.py --model_dir=runs/encoder --audio=clips/ --output=faces/ --save_features

Any audio or video file that has an audio track, of any length: it is fitted to the 6 s the
encoder was trained on (tiled if shorter, its first 6 s if longer). --model is a model directory
(`speech2face-export-model`, or the demo's WORKDIR/model); --model_dir a stage-2 training run. A directory stands for its
audio/video files. Outputs (see speech2face/prediction.py): one input -> --output itself;
several -> face_<input name>.png beside --output, and --output holds a labelled contact sheet of
them all; a directory --output -> <input name>.png inside it. --save_features writes v_s (the
4096-D face feature predicted from the voice) beside each PNG as .npy.

A file that cannot be read, or holds under 1 s of sound in its first 6 s (shorter, or digital
silence), is reported and skipped; the others are still written, and the exit status is then 1.
"""

import sys

from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines

from absl import app, flags  # noqa: E402

from speech2face.cli import flags as config_flags  # noqa: E402

from speech2face import prediction  # noqa: E402

flags.DEFINE_string("model", None, "A model directory (model.json; written by "
                    "speech2face-export-model or the demo). Or give --model_dir.")
flags.DEFINE_string("model_dir", None, "A stage-2 run directory (with export/voice_encoder.keras).")
flags.DEFINE_multi_string("audio", [], "Audio/video file or directory; repeat for several.")
flags.DEFINE_string("output", "face.png", "PNG file name, or a directory (ending in / or "
                    "existing).")
flags.DEFINE_bool("save_features", False, "Also save v_s as .npy beside each PNG.")
flags.DEFINE_string("decoder_dir", None, "Stage-1 run to decode faces with (default: the one "
                    "the encoder was trained against).")
flags.DEFINE_integer("image_size", 256, "Side of the face PNGs in pixels.", lower_bound=1,
                     upper_bound=prediction.MAX_IMAGE_SIZE)
flags.DEFINE_float("exaggeration", 0.0, "Decode mean + (1 + e)(v_s - mean), mean = the decoder's "
                   "training mean feature: e > 0 exaggerates what sets the face apart from the "
                   "average (the paper's renders used 0.7; docs/evaluation.md).", lower_bound=-1.0)
FLAGS = flags.FLAGS


def main(argv):
    paths = FLAGS.audio + argv[1:]  # bare arguments count as --audio too
    if bool(FLAGS.model) == bool(FLAGS.model_dir):
        raise app.UsageError("give --model=MODEL (a model directory) or --model_dir=RUN (a "
                             "stage-2 training run), one of the two")
    if not paths or not all(paths):
        raise app.UsageError("give at least one --audio=FILE (or directory), none of them empty")
    try:
        results = prediction.predict_files(FLAGS.model_dir, paths, FLAGS.output,
                                           save_features=FLAGS.save_features,
                                           decoder_dir=FLAGS.decoder_dir,
                                           image_size=FLAGS.image_size,
                                           exaggeration=FLAGS.exaggeration,
                                           model=FLAGS.model)
    except (FileNotFoundError, ValueError) as e:
        config_flags.fail(e)
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok:
            print(f"{r.path} -> {r.output}")
    if results.sheet:
        print(f"contact sheet: {results.sheet}")
    for r in failed:
        print(f"{config_flags.prog()}: error: {r.output}", file=sys.stderr)
    if failed:
        if len(results) > 1:  # one input: its error line says it all
            print(f"{config_flags.prog()}: {len(failed)} of {len(results)} inputs failed",
                  file=sys.stderr)
        sys.exit(1)


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
