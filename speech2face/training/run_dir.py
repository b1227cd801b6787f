"""A training run's directory: the checks before anything is written, the lock that keeps a
second `train.py` out, and `config.json` with its check that a resumed run trains what the
first part trained (docs/failures.md).

- `check_writable`: the model_dir (or the nearest directory above it that exists) is writable.
- `RunLock`: `model_dir/train.lock` holds the pid, host and command of the run that owns the
  directory; a second run is refused while that process lives; a lock left by a dead process on
  this host is taken over with a warning.
- `RunRecord`: `config.json`. On a resume (the directory holds a checkpoint) every setting that
  changes what is trained must be as recorded, else the run is refused naming the fields; the
  settings in `SAFE_ON_RESUME` (length, intervals, strategy) may change, and each change is
  appended to `resumed` in the record.
"""

import dataclasses
import json
import os
import sys
from typing import List, Optional
from absl import logging
import keras
import tensorflow as tf

from speech2face import data, errors, lockfile, records
from speech2face.models import export
from speech2face.records import dataset_info, verify
from speech2face.training import config as config_lib

LOCK_FILE = "train.lock"
# What a resumed run may change: how long, how often, where it runs; not what it trains.
SAFE_ON_RESUME = frozenset({
    "data.eval_records", "data.skip_corrupt_records", "data.deterministic_input",
    "trainer.train_steps", "trainer.epochs", "trainer.steps_per_loop",
    "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.summary_every",
    "trainer.image_summary_every", "trainer.num_images", "trainer.eval_every",
    "trainer.eval_batches", "runtime.strategy", "runtime.tpu", "runtime.jit_compile"})
# Paths compared as absolute paths, so that a rerun from another directory still matches.
_PATH_FIELDS = frozenset({"data.train_records", "data.eval_records", "task.decoder_dir",
                          "task.vggface_weights"})


def _is_local(path: str) -> bool:
    return "://" not in path


def check_writable(directory: str, flag: str = "--model_dir") -> None:
    """Raises a `UserError` unless `directory` can be written: it is a writable directory, or
    does not exist and the nearest existing directory above it is writable. Remote paths
    (gs://...) are left to the first write."""
    if not _is_local(directory):
        return
    path = os.path.abspath(directory)
    if os.path.exists(path) and not os.path.isdir(path):
        raise errors.UserError(f"{flag}={directory} is a file, not a directory: choose another "
                               "path")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):  # under a file: "not writable" (0644) or passed (0755)
        raise errors.UserError(f"{flag}={directory} cannot be created: {parent} is a file, not "
                               "a directory: choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "is" if parent == path else f"cannot be created: {parent} is"
        raise errors.UserError(f"{flag}={directory} {what} not writable: choose a writable "
                               "directory or fix its permissions")


@dataclasses.dataclass
class Inputs:
    """What `check_inputs` found.

    Attributes:
      train_files, eval_files: the record files to read (with `skip_corrupt_records`, without
        those holding no readable record).
      train_steps: the run's length (`TrainerConfig.steps_for` over dataset_info's count).
      corrupt: with `skip_corrupt_records`, a `verify.FileReport` per corrupt file.
      dropped: files left out, not one readable record in them.
    """

    train_files: List[str]
    eval_files: List[str]
    train_steps: int
    corrupt: List[verify.FileReport] = dataclasses.field(default_factory=list)
    dropped: List[str] = dataclasses.field(default_factory=list)


def check_inputs(data_config, trainer, strategy, model_dir: str) -> Inputs:
    """Checks, before anything is written, what a run reads and where it writes: model_dir
    writable, the global batch divisible among the replicas, the record files there and sound
    (their first record headers; with `skip_corrupt_records`, every header, each bad file
    logged), the first file's schema, and the run's length. Raises a `UserError` naming what
    is wrong."""
    check_writable(model_dir)
    replicas = strategy.num_replicas_in_sync
    if trainer.global_batch_size % replicas:
        raise errors.UserError(
            f"--global_batch_size={trainer.global_batch_size} does not split evenly over the "
            f"strategy's {replicas} replicas: use a multiple of {replicas}")
    train_files = data.list_files(data_config.train_records)
    eval_files = data.list_files(data_config.eval_records) if data_config.eval_records else []
    inputs = Inputs(train_files, eval_files, 0)
    if data_config.skip_corrupt_records:
        inputs.corrupt = [r for r in map(verify.walk, train_files + eval_files) if r.problem]
        for r in inputs.corrupt:
            logging.warning("Corrupt records in %s: %s. --skip_corrupt_records: its first %d "
                            "records are read, the rest of it skipped.", r.path, r.problem,
                            r.records)
        inputs.dropped = [r.path for r in inputs.corrupt if r.records == 0]
        inputs.train_files = [f for f in train_files if f not in inputs.dropped]
        inputs.eval_files = [f for f in eval_files if f not in inputs.dropped]
        for kind, before, after in (("training", train_files, inputs.train_files),
                                    ("evaluation", eval_files, inputs.eval_files)):
            if before and not after:
                raise verify.CorruptRecordsError(
                    f"none of the {len(before)} {kind} files holds a readable record (first: "
                    f"{inputs.corrupt[0].path}: {inputs.corrupt[0].problem}): rebuild them")
        if inputs.corrupt:
            logging.warning("%d corrupt record files, %d of them skipped whole.",
                            len(inputs.corrupt), len(inputs.dropped))
    else:
        verify.check_files(train_files, "training")
        verify.check_files(eval_files, "evaluation")
    for files in (inputs.train_files, inputs.eval_files):
        if files:
            records.read_spec(files[0])
    info = dataset_info.read_if_present(dataset_info.directory_of(train_files))
    split_size = int(info.counts["train"]["clips"]) if info and "train" in info.counts else None
    if split_size is not None and trainer.global_batch_size > split_size:
        # Each batch would hold every example more than once (and its memory grows with it).
        raise errors.UserError(
            f"--global_batch_size={trainer.global_batch_size} is larger than the training "
            f"set ({split_size} examples in "
            f"{dataset_info.path_for(dataset_info.directory_of(train_files))}): use at most "
            f"{split_size}")
    if trainer.train_steps is None:
        num_examples = dataset_info.num_examples(train_files, "train")
        inputs.train_steps = trainer.steps_for(num_examples)
        logging.info("Training for %g epochs over %d examples at batch %d: %d steps.",
                     trainer.epochs, num_examples, trainer.global_batch_size, inputs.train_steps)
    else:
        inputs.train_steps = trainer.train_steps
    return inputs


class RunLock(lockfile.LockFile):
    """`model_dir/train.lock` for the length of a `with` block (see the module docstring)."""

    def __init__(self, model_dir: str):
        super().__init__(os.path.join(model_dir, LOCK_FILE), "another training run",
                         "use another --model_dir")


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _flat(run: dict, task_config: dict) -> dict:
    """{"section.field": value} of what a run trains with (JSON values)."""
    out = {}
    for section in ("data", "trainer", "runtime"):
        for name, value in (run.get(section) or {}).items():
            out[f"{section}.{name}"] = value
    for name, value in task_config.items():
        out[f"task.{name}"] = value
    out.pop("trainer.resolved_train_steps", None)
    return out


def _normal(key: str, value):
    if key in _PATH_FIELDS and isinstance(value, str) and value:
        return ",".join(os.path.abspath(p.strip()) if _is_local(p) else p.strip()
                        for p in value.split(","))
    return value


class RunRecord:
    """`model_dir/config.json` of a run: `check` (reads only) before anything is written,
    `write` once training may start (and again after `Task.prepare`)."""

    def __init__(self, model_dir: str, run: dict, task):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, export.RUN_CONFIG)
        self.run, self.task = run, task
        self.resumed = []

    def check(self) -> None:
        """Raises a `UserError` when model_dir holds another stage or architecture, or, when
        it holds a checkpoint, a run that trained with other settings (named, with both
        values); keeps the changes of the safe settings for `write`."""
        previous = export.read_run_config(self.model_dir) if tf.io.gfile.exists(
            self.path) else None
        if not previous:
            return
        task_config = self.task.config()
        if previous.get("stage") != self.task.name or previous.get("task", {}).get(
                "architecture") != task_config.get("architecture"):
            raise errors.UserError(
                f"{self.model_dir} holds a {previous.get('stage')} run with architecture "
                f"{previous.get('task', {}).get('architecture')}; this run is {self.task.name} "
                f"with {task_config.get('architecture')}. Use a new --model_dir.")
        step = export.trained_step(self.model_dir)
        if step == 0:
            return  # nothing trained yet: the new settings simply replace the old
        before = _flat(previous, previous.get("task") or {})
        now = _flat(_jsonable(self.run), _jsonable(task_config))
        changed = {key: {"was": before[key], "now": value} for key, value in now.items()
                   if key in before and _normal(key, before[key]) != _normal(key, value)}
        refused = {k: v for k, v in changed.items() if k not in SAFE_ON_RESUME}
        if refused:
            shown = "; ".join(f"{k}: {v['was']!r} in the run, {v['now']!r} now"
                              for k, v in sorted(refused.items()))
            raise errors.UserError(
                f"{self.model_dir} holds a run trained to step {step} with other settings "
                f"({shown}): resuming would mix the two. Rerun with the recorded settings "
                f"(--from_config={self.path}), or use a new --model_dir")
        self.resumed = list(previous.get("resumed") or [])
        if changed:
            logging.info("Resuming at step %d with changed settings: %s", step,
                         ", ".join(f"{k} {v['was']} -> {v['now']}" for k, v in changed.items()))
        self.resumed.append({"at_step": step, "command": sys.argv, "changed": changed})

    def write(self) -> None:
        resolved = {"stage": self.task.name, **self.run, "task": self.task.config(),
                    "command": sys.argv, "tensorflow": tf.__version__,
                    "keras": keras.__version__}
        if self.resumed:
            resolved["resumed"] = self.resumed
        tmp = self.path + ".tmp"
        with tf.io.gfile.GFile(tmp, "w") as f:
            json.dump(resolved, f, indent=2, default=str)
        tf.io.gfile.rename(tmp, self.path, overwrite=True)


def describe(experiment: Optional[dict], data_config, trainer, runtime, task,
             inputs: Inputs) -> dict:
    """What config.json records of a run besides its task: the experiment, the data, trainer
    and runtime sections, `differs_from_paper`, and the corrupt files skipped."""
    cfg = getattr(task, "cfg", None)  # the task's config dataclass (both stages have one)
    run = {"experiment": experiment, "data": dataclasses.asdict(data_config),
           "trainer": {**dataclasses.asdict(trainer), "resolved_train_steps": inputs.train_steps},
           "runtime": dataclasses.asdict(runtime),
           "differs_from_paper": (config_lib.differences_from_paper(cfg, trainer, runtime)
                                  if dataclasses.is_dataclass(cfg) else {})}
    if inputs.corrupt:
        run["corrupt_records"] = [r.summary() for r in inputs.corrupt]
    return run
