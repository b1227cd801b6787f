r"""Builds the toy world: a small synthetic speech+face data set in the project's record schema.

    python -m data_prep.make_toy_world --output_dir=/tmp/toy [--num_speakers=150] [--seed=0]

Writes `train-*.tfrecord` and `test-*.tfrecord` (speaker-disjoint), `dataset_info.json` (counts,
attributes and a linear-probe self-check of what faces and voices carry), `speakers.json`, and,
unless `--vggface_weights` names real weights, the seeded random VGG-Face weights it used. The
default size builds in about 1-2 minutes on two CPU cores; see docs/toy_world.md.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from data_prep import toy_world_lib  # noqa: E402

_DEFAULTS = toy_world_lib.ToyWorldConfig()

flags.DEFINE_string("output_dir", None, "Directory for the records (must hold no records yet).")
flags.DEFINE_integer("num_speakers", _DEFAULTS.num_speakers, "Speakers, train and test together.")
flags.DEFINE_integer("clips_per_speaker", _DEFAULTS.clips_per_speaker, "Voice clips per speaker.")
flags.DEFINE_integer(
    "faces_per_speaker",
    _DEFAULTS.faces_per_speaker,
    "Face renders per speaker (each costs one VGG-Face pass).",
)
flags.DEFINE_float("test_fraction", _DEFAULTS.test_fraction, "Share of speakers held out.")
flags.DEFINE_float("min_seconds", _DEFAULTS.min_seconds, "Shortest clip, seconds.")
flags.DEFINE_float("max_seconds", _DEFAULTS.max_seconds, "Longest clip, seconds.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of everything in the world.")
flags.DEFINE_enum(
    "spectrogram_dtype",
    _DEFAULTS.spectrogram_dtype,
    ["float16", "float32"],
    "Storage dtype of the spectrograms.",
)
flags.DEFINE_string(
    "vggface_weights",
    None,
    "rcmalli_vggface_tf_vgg16.h5 to compute face features with; default: seeded "
    "random weights, written next to the data.",
)
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = toy_world_lib.ToyWorldConfig(
        num_speakers=FLAGS.num_speakers,
        clips_per_speaker=FLAGS.clips_per_speaker,
        faces_per_speaker=FLAGS.faces_per_speaker,
        test_fraction=FLAGS.test_fraction,
        min_seconds=FLAGS.min_seconds,
        max_seconds=FLAGS.max_seconds,
        seed=FLAGS.seed,
        spectrogram_dtype=FLAGS.spectrogram_dtype,
        vggface_weights=FLAGS.vggface_weights,
    )
    try:
        info = toy_world_lib.build_toy_world(config, FLAGS.output_dir)
    except (ValueError, FileExistsError) as e:
        raise app.UsageError(str(e)) from e
    print(toy_world_lib.format_summary(info))


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    sys.modules["__main__"].__doc__ = __doc__
    app.run(main)


if __name__ == "__main__":
    run()
