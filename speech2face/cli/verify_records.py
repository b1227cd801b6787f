r"""Reads every record of a data set and checks it: both CRCs of each record and its schema.

    python -m speech2face.records.verify --records='toy/*.tfrecord'
    speech2face-verify-records --records='records/train-*.tfrecord,records/test-*.tfrecord'

Prints one line per file (records read; for a bad file, the first bad record's index, byte offset
and reason), then a total. Exit status 0 when every file is sound, 1 when any is bad (each named
on stderr as `PROG: error: FILE: ...`). What to do with a bad file: docs/failures.md.
"""

import sys

from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines

from absl import flags  # noqa: E402

from speech2face import data  # noqa: E402
from speech2face.cli import flags as config_flags  # noqa: E402
from speech2face.records import verify  # noqa: E402

flags.DEFINE_string("records", None, "Glob (or comma-separated globs) of TFRecord files.")
flags.DEFINE_bool("schema", True, "Also decode every record against the speech2face schema "
                  "(--noschema checks only the TFRecord framing and CRCs).")
FLAGS = flags.FLAGS


def main(argv):
    config_flags.check_usage(argv, required=("records",))
    prog = config_flags.prog()
    files = data.list_files(FLAGS.records)
    bad, total = [], 0
    for path in files:
        report = verify.verify_file(path, check_schema=FLAGS.schema)
        total += report.records
        state = "ok" if report.problem is None else f"BAD: {report.problem}"
        print(f"{path}: {report.records} records {state}", flush=True)
        if report.problem:
            bad.append(report)
    print(f"{len(files)} files, {total} good records, {len(bad)} bad files")
    for report in bad:
        print(f"{prog}: error: {report.path}: {report.problem}", file=sys.stderr)
    if bad:
        sys.exit(1)


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
