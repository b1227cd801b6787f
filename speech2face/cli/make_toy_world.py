r"""Builds the toy world: a small synthetic speech+face data set in the project's record schema.

    python -m data_prep.make_toy_world --output_dir=/tmp/toy [--num_speakers=300] [--seed=0]

Writes `train-*.tfrecord` and `test-*.tfrecord` (speaker-disjoint), `dataset_info.json` (counts,
attributes and a linear-probe self-check of what faces and voices carry), `speakers.json`, and,
unless `--vggface_weights` names real weights, the seeded random VGG-Face weights it used. The
default size builds in about 1-2 minutes on two CPU cores; see docs/toy_world.md.
"""


from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines

from absl import flags  # noqa: E402

from speech2face import records  # noqa: E402
from speech2face.cli import flags as config_flags  # noqa: E402
from speech2face.datasets.toy import world as toy_world  # noqa: E402

flags.DEFINE_string("output_dir", None, "Directory for the records (must hold no records yet).")
_FIELDS = config_flags.define_from(toy_world.ToyWorldConfig, skip=("max_shard_bytes",),
                                   choices={"records_layout": records.LAYOUTS})
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv):
    config_flags.check_usage(argv, required=("output_dir",))  # "--output_dir=" too
    config = toy_world.ToyWorldConfig(**config_flags.kwargs_given(_FIELDS))
    try:
        info = toy_world.build_toy_world(config, FLAGS.output_dir)
    except (ValueError, OSError) as e:  # bad settings, the output dir, weights, the disk
        config_flags.fail(e)
    print(toy_world.format_summary(info))


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
