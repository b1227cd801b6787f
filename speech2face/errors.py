"""The project's one exception for errors a user causes and can fix (docs/failures.md).

A `UserError`'s message names the thing that is wrong and the fix; every command-line tool runs
under `speech2face.cli.flags.run_main`, which prints it as one line `PROG: error: MESSAGE` and
exits with status 1. Anything else that escapes a tool is a bug and keeps its traceback.

The library's own error classes for bad input (`data.NoRecordsError`, `records.RecordError`,
`dataset_info.DatasetInfoError`, `loop.TrainingError`, ...) derive from it, besides the built-in
class callers already catch (ValueError, RuntimeError).
"""

import os


class UserError(Exception):
    """An error the user caused (bad flag, missing or corrupt input, a busy or read-only
    directory): its message says what and how to fix it."""


def unwritable_reason(directory: str):
    """Why files cannot be written into `directory` (created if missing), or None: its nearest
    existing ancestor is a file, or is not writable by this user."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (someone else's counts): a lock or claim file
    whose process is gone was left by a killed run, and may be taken over."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
