r"""Builds TFRecords from real data (AVSpeech, VoxCeleb2, or a pairs CSV) with Apache Beam.

    python -m data_prep.build_records --manifest=avspeech_train.csv --manifest_format=avspeech \
        --media_dir=/data/avspeech/videos --output_dir=/data/records \
        --vggface_weights=/data/rcmalli_vggface_tf_vgg16.h5 [--runner=...] [beam options]

    python -m data_prep.build_records --manifest=avspeech_train.csv \
        --test_manifest=avspeech_test.csv --manifest_format=avspeech ...   # AVSpeech's own split

    python -m data_prep.build_records --manifest_format=voxceleb2 \
        --media_dir=/data/voxceleb2/dev/mp4 --output_dir=... --vggface_weights=...

Writes `{train,test}-*.tfrecord` shards (~150 MB, the `speech2face.records` schema, split by
speaker hash, or with --test_manifest by manifest), `rejects.jsonl` (every skipped item with its
reason) and `dataset_info.json` (counts per split, source and reject reason; schema version;
weights hash; this command line).

`--records_layout=waveform_int16` stores each clip's int16 waveform and no spectrogram (3× less
storage and I/O; readers compute the spectrogram, on the accelerator when training); the default
`spectrogram_float16` stores the spectrogram of the first 6 s too (docs/data.md, "Record layouts").

Without --runner the DirectRunner runs on this machine with one process per core
(`--direct_num_workers=N` and `--direct_running_mode=in_memory|multi_threading|multi_processing`
change that). Any other Beam runner takes its usual options, passed through unchanged, e.g.
`--runner=DataflowRunner --project=P --region=R --temp_location=gs://... --setup_file=./setup.py`
or `--runner=FlinkRunner --flink_master=host:8081`; see docs/data.md.
"""

import logging as std_logging
import shlex
import sys

from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines


class _NoApitoolsWarning(std_logging.Filter):
    """Drops the warning Beam logs at import where apache-beam[gcp]'s apitools is missing
    (irrelevant unless the build reads BigQuery), so that an error stays the only line."""

    def filter(self, record):
        return "apitools not found" not in record.getMessage()


std_logging.getLogger().addFilter(_NoApitoolsWarning())

from absl import flags, logging  # noqa: E402

from speech2face.datasets.real import build, faces, manifests, runners, shards  # noqa: E402
from speech2face import records  # noqa: E402
from speech2face.cli import flags as config_flags  # noqa: E402

# One flag per BuildConfig field (its docstring is the help); the shard size is set in MiB.
_FIELDS = config_flags.define_from(
    build.BuildConfig, names={"random_weights_for_tests": "allow_random_weights_for_tests"},
    skip=("target_shard_bytes", "command_line"),
    choices={"manifest_format": manifests.FORMATS, "detector": faces.DETECTORS,
             "records_layout": records.LAYOUTS})
flags.DEFINE_integer("shard_mb", build.BuildConfig.target_shard_bytes // 2**20,
                     "Target shard size, MiB.", lower_bound=1)
flags.DEFINE_integer("num_workers", None, "DirectRunner workers (default: the CPU cores).",
                     lower_bound=1)
flags.mark_flags_as_required(["manifest_format", "media_dir", "output_dir"])
FLAGS = flags.FLAGS


def main(argv):
    # Whatever absl does not know goes to Beam (argv[0] is the program).
    beam_args = argv[1:]
    for name in ("manifest_format", "media_dir", "output_dir"):
        if not FLAGS[name].value:  # "--output_dir=" would build into the working directory
            config_flags.fail(f"--{name} is required (it is empty)")
    # Beam relays every worker's INFO lines (gRPC channels, bundle statistics): they would bury
    # the build's own messages. --verbosity=1 brings them back.
    if FLAGS.verbosity < 1:
        std_logging.getLogger("apache_beam").setLevel(std_logging.WARNING)
    if FLAGS.vggface_weights and FLAGS.allow_random_weights_for_tests:
        config_flags.fail("give --vggface_weights or --allow_random_weights_for_tests, not both")
    config = build.BuildConfig(
        **{"manifest": None, "vggface_weights": None, **config_flags.kwargs_given(_FIELDS)},
        target_shard_bytes=FLAGS.shard_mb * 2**20,
        command_line=shlex.join([sys.executable, "-m", "data_prep.build_records", *sys.argv[1:]]),
    )
    try:
        options = runners.pipeline_options(beam_args, FLAGS.num_workers)
        info = build.build_records(config, options).info
    except (ValueError, OSError) as e:
        # Bad flags, files, weights (WeightsFileError), output dir, an empty build: one line
        # naming the thing and what to do; nothing was written (or output_dir is unchanged).
        config_flags.fail(e)
    logging.info("Done: %s", FLAGS.output_dir)
    print(shards.format_summary(info))


def _parse_flags(argv):
    # Unknown flags are Beam pipeline options; absl must leave them in argv instead of failing.
    # A bad value of a known flag (--num_workers=0) is one line, as absl's own parser makes it.
    try:
        return flags.FLAGS(argv, known_only=True)
    except flags.Error as e:
        config_flags.fail(e)


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
