"""A lock file that one process holds for the length of a `with` block: a training run's
model_dir (`training.run_dir.RunLock`), an exported model's output (`models.artifact`).

The file holds the owner's pid, host, command and start time as JSON, created with O_EXCL on a
local disk (on an object store, gfile has no exclusive create: best effort). A second holder is
refused with a `UserError` naming the owner; a lock whose process is gone on this host (a killed
run) is taken over with a warning; on another host it cannot be checked, and the message says to
delete the file once that process is gone for good. docs/failures.md, "A second instance"."""

import datetime
import json
import os
import socket
import sys

from absl import logging
import tensorflow as tf

from speech2face import errors


class LockFile:
    """`path` held for the length of a `with` block.

    Args:
      path: the lock file.
      holder: what holds it, for the refusal ("another training run").
      instead: the way out, for the refusal ("use another --model_dir").
    """

    def __init__(self, path: str, holder: str, instead: str):
        self.path, self.holder, self.instead = path, holder, instead
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
                      "started": datetime.datetime.now().isoformat(timespec="seconds")}
        self._held = False

    def _create(self) -> bool:
        """Creates the lock file, or returns False when it already exists."""
        content = json.dumps(self.owner)
        if "://" in self.path:  # no O_EXCL on object stores: best effort
            if tf.io.gfile.exists(self.path):
                return False
            with tf.io.gfile.GFile(self.path, "w") as f:
                f.write(content)
            return True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(content)
        return True

    def _holder(self) -> dict:
        try:
            with tf.io.gfile.GFile(self.path) as f:
                return json.load(f)
        except (json.JSONDecodeError, tf.errors.NotFoundError, OSError):
            return {}

    def __enter__(self):
        for _ in range(2):
            if self._create():
                self._held = True
                return self
            holder = self._holder()
            pid, host = holder.get("pid"), holder.get("host")
            same_host = host == self.owner["host"]
            if isinstance(pid, int) and same_host and not errors.process_alive(pid):
                logging.warning("Taking over %s: its process %d on %s is gone (a run that was "
                                "killed).", self.path, pid, host)
                tf.io.gfile.remove(self.path)
                continue
            raise errors.UserError(
                f"{os.path.dirname(self.path)} is in use by {self.holder} (pid {pid or '?'} on "
                f"{host or '?'}, since {holder.get('started', '?')}; lock file {self.path}): "
                f"wait for it to end or stop it, or {self.instead}. If that run is gone for "
                "good (another host), delete the lock file.")
        raise errors.UserError(f"{self.path}: could not take the lock; retry")

    def __exit__(self, *exc):
        if self._held:
            try:
                tf.io.gfile.remove(self.path)
            except tf.errors.NotFoundError:
                pass
            self._held = False
