"""Command-line entry points: the only modules that define absl flags."""

import os
import re
import sys
import tempfile

# TensorFlow's own C++ messages below warnings (it reads this when it is first imported).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What TensorFlow prints through Abseil while it loads, before Abseil's logging is set up and so
# whatever TF_CPP_MIN_LOG_LEVEL says: a notice that it does so, and INFO lines such as "oneDNN
# custom operations are on" or "Could not find cuda drivers". Warnings and errors are kept, but for
# the "failed call to cuInit" that follows "Could not find cuda drivers" (the same fact, no GPU).
_PRE_INIT_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*)$")
_NO_DRIVER = "Could not find cuda drivers"
_NO_DRIVER_ERROR = re.compile(r"^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] failed call to cuInit")


def import_tensorflow() -> None:
    """Imports TensorFlow without its INFO lines, so that a tool's error stays its only line.

    A command-line tool calls this before importing anything that imports TensorFlow. What
    TensorFlow writes to file descriptor 2 while it loads and finds its devices is held back and
    written out again without `_PRE_INIT_NOISE`; an import error is raised as it would be."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow  # pylint: disable=import-outside-toplevel

            tensorflow.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            no_driver = any(_NO_DRIVER in line for line in lines)
            for line in lines:
                noise = _PRE_INIT_NOISE.match(line.rstrip("\n")) or (
                    no_driver and _NO_DRIVER_ERROR.match(line))
                if not noise:
                    sys.stderr.write(line)
            sys.stderr.flush()
