r"""Writes a trained model as one self-contained directory you can hand to someone.

    speech2face-export-model --model_dir=runs/encoder --output=my_model [--decoder_dir=runs/decoder]

From a stage-2 training run (and the stage-1 run it names, unless --decoder_dir says otherwise)
writes --output: model.json (the audio constants, both models' export info and resolved configs,
the VGG-Face weights and data that produced it by SHA-256, the package version; no absolute
path), voice_encoder.keras, face_decoder.keras and, unless --nosaved_model, saved_model/ (a
TensorFlow SavedModel that turns 16 kHz waveforms into faces without this package). Then:

    python predict.py --model=my_model --audio=clip.wav --output=face.png
    python -c "import speech2face; print(speech2face.load_model('my_model')('clip.wav').face.shape)"

docs/use_a_model.md has the rest (TensorFlow Serving, the web page).
"""


from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines

from absl import flags  # noqa: E402

from speech2face.cli import flags as config_flags  # noqa: E402
from speech2face.models import artifact  # noqa: E402

flags.DEFINE_string("model_dir", None, "The stage-2 training run (with export/voice_encoder.keras).")
flags.DEFINE_string("output", None, "The model directory to write (must not exist unless "
                    "--overwrite).")
flags.DEFINE_string("decoder_dir", None, "Stage-1 run (default: the one the encoder names).")
flags.DEFINE_bool("saved_model", True, "Also write saved_model/ for serving.")
flags.DEFINE_bool("overwrite", False, "Replace an existing model directory.")
FLAGS = flags.FLAGS


def main(argv):
    config_flags.check_usage(argv, required=("model_dir", "output"))
    try:
        path = artifact.write_model(FLAGS.model_dir, FLAGS.output, FLAGS.decoder_dir,
                                    saved_model=FLAGS.saved_model, overwrite=FLAGS.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        config_flags.fail(e)
    print(f"Model written to {path}")
    print(f"  python predict.py --model={path} --audio=clip.wav --output=face.png")


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
