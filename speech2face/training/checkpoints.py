"""Where a training run keeps its state, how it resumes, and how it stops cleanly.

- `RunState`: a `tf.train.CheckpointManager` over the global step, the model's variables and the
  optimizer's, in `model_dir/checkpoints`. Built, it restores the latest checkpoint, so a rerun
  with the same `model_dir` resumes. Under `MultiWorkerMirroredStrategy` every worker takes part
  in saving (a collective operation) but only the chief's copy is kept; a worker without its own
  copy resumes from the chief's.
- `StopFlag`: SIGTERM/SIGINT set it, the loop saves a checkpoint and stops between steps.
"""

import os
import signal

from absl import logging
import tensorflow as tf

from speech2face.models import export
from speech2face.training import strategy as strategy_lib

CHECKPOINT_DIR = export.CHECKPOINT_DIR


class RunState:
    """The run's checkpoints: restores the latest on construction; `save` writes one."""

    def __init__(self, model_dir: str, strategy: tf.distribute.Strategy, step: tf.Variable,
                 model, optimizer, keep: int):
        """
        Args:
          model_dir: the run's directory.
          strategy: the run's strategy (decides who is the chief).
          step: the global step variable (int64).
          model, optimizer: built, so that their variables exist.
          keep: checkpoints kept on disk.
        """
        self.step = step
        chief_dir = os.path.join(model_dir, CHECKPOINT_DIR)
        self.chief = strategy_lib.is_chief(strategy)
        if self.chief:
            self.directory = chief_dir
        else:
            resolver = strategy.cluster_resolver
            self.directory = os.path.join(model_dir, "worker_tmp",
                                          f"{resolver.task_type}_{resolver.task_id}")
        # Variables by position, not through Keras's object graph: tf.train.Checkpoint does not
        # see every sublayer of a subclassed Keras 3 model (FaceDecoder's lists of layers were
        # silently left out, batch-norm statistics included), and optimizer variable paths
        # depend on instance names.
        self.checkpoint = tf.train.Checkpoint(step=step, model_variables=list(model.variables),
                                              optimizer_variables=list(optimizer.variables))
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                  max_to_keep=keep)
        latest = self.manager.latest_checkpoint
        if latest is None and not self.chief:
            latest = tf.train.latest_checkpoint(chief_dir)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("Resumed from %s at step %d.", latest, int(step.numpy()))
        else:
            logging.info("No checkpoint in %s: starting from scratch.", model_dir)

    @property
    def latest(self):
        """Path prefix of this worker's newest checkpoint, or None."""
        return self.manager.latest_checkpoint

    def save(self, reason: str) -> str:
        """Writes a checkpoint numbered by the current step; returns its path prefix."""
        path = self.manager.save(checkpoint_number=int(self.step.numpy()))
        logging.info("Checkpoint (%s) at step %d: %s", reason, int(self.step.numpy()), path)
        return path

    def remove_worker_copy(self) -> None:
        """Deletes a non-chief worker's temporary checkpoints (a no-op on the chief)."""
        if not self.chief:
            tf.io.gfile.rmtree(self.directory)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between tf.function calls."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # Not the main thread: leave signals alone.
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # Second signal: give up at once.
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
        self.signum = signum
        logging.warning("Received %s: saving a checkpoint after the current steps, then "
                        "stopping.", signal.Signals(signum).name)

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
