"""What every training stage shares, as typed configurations: data, trainer, runtime.

After Model Garden's `ExperimentConfig(task, trainer, runtime)`: each piece is a frozen dataclass
whose fields are documented here once; `train.py` makes its flags from these fields (each flag's
default is the field's), and a run's `config.json` holds them all. The stage-specific part, the
task, is `decoder_task.DecoderTaskConfig` or `encoder_task.EncoderTaskConfig`; the named
experiments that put the four together are in `speech2face.training.experiments`.
"""

import dataclasses
import math
from typing import Optional

# The paper trains for 3 epochs at a global batch of 8 (its implementation details).
PAPER_EPOCHS = 3.0
PAPER_BATCH_SIZE = 8


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the records are.

    Attributes:
      train_records: glob of training TFRecords.
      eval_records: glob of held-out TFRecords (eval losses, image grids, final numbers), or None.
      skip_corrupt_records: a corrupt or truncated record ends its file instead of the run (the
        records before it are used, the rest of that file skipped); the files found bad before
        training are logged, counted in `config.json` and the `data/*` summaries
        (docs/failures.md). Off: the run stops with an error naming the file.
      deterministic_input: training batches come in one order for `trainer.seed`, with the
        same random crops, so a run repeats exactly on the same machine and software (ours:
        the paper says nothing about it; docs/training.md). Off: the parallel reads hand on
        examples as they finish, for readers that stall on slow files (object stores), and
        every run's order is its own.
    """

    train_records: str = ""
    eval_records: Optional[str] = None
    skip_corrupt_records: bool = False
    deterministic_input: bool = True


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """How long and how often.

    Attributes:
      global_batch_size: examples per step over all replicas (the paper's 8).
      train_steps: total steps (a resumed run continues up to this); None: `epochs` passes over
        the training set, whose size comes from the records' `dataset_info.json`.
      epochs: passes over the training set when `train_steps` is None (the paper's 3).
      steps_per_loop: steps per tf.function call.
      checkpoint_every, summary_every, image_summary_every, eval_every: in steps.
      eval_batches: batches per periodic evaluation (0: the whole eval set).
      num_images: faces in the image grids.
      keep_checkpoints: checkpoints kept on disk.
      seed: model initialisation and input order.
    """

    # How much: the paper's batch and epochs (its implementation details).
    global_batch_size: int = PAPER_BATCH_SIZE
    train_steps: Optional[int] = None
    epochs: float = PAPER_EPOCHS
    # The host loop and checkpoints.
    steps_per_loop: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    # Summaries and the held-out evaluation during training.
    summary_every: int = 50
    image_summary_every: int = 500
    num_images: int = 8
    eval_every: int = 500
    eval_batches: int = 10
    seed: int = 0

    def validate(self) -> None:
        for name in ("global_batch_size", "steps_per_loop", "checkpoint_every", "summary_every",
                     "image_summary_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (--{name}), got "
                                 f"{getattr(self, name)}")
        for name in ("eval_batches", "num_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more (--{name}), got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1 (--keep_checkpoints), got "
                             f"{self.keep_checkpoints}")
        if self.train_steps is not None and self.train_steps < 1:
            raise ValueError(f"train_steps must be at least 1 (--train_steps), got "
                             f"{self.train_steps}")
        if self.train_steps is None and not self.epochs > 0:
            raise ValueError(f"epochs must be positive (--epochs), got {self.epochs}")

    def steps_for(self, num_train_examples: int) -> int:
        """`train_steps`, or `epochs` passes over `num_train_examples` at the global batch."""
        if self.train_steps is not None:
            return self.train_steps
        return max(1, math.ceil(self.epochs * num_train_examples / self.global_batch_size))


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and in what precision.

    Attributes:
      strategy: tf.distribute strategy by name (`strategy.STRATEGIES`).
      tpu: TPU name or address for `strategy="tpu"` ("local" on a TPU VM).
      mixed_precision: float32, or mixed bfloat16/float16 (float16 adds loss scaling). The
        Trainer sets the Keras dtype policy from it while it builds and trains the model.
      jit_compile: compile the per-replica step with XLA.
    """

    strategy: str = "default"
    tpu: Optional[str] = None
    mixed_precision: str = "float32"
    jit_compile: bool = False


# Task fields that say where things are, not how the model is trained: never a departure.
_LOCATION_FIELDS = ("decoder_dir", "vggface_weights")


def differences_from_paper(task, trainer: TrainerConfig, runtime: RuntimeConfig) -> dict:
    """{"task.lambda1": {"run": 1e4, "paper": 0.025}, ...}: every setting of a run that is not
    the paper's. The task configs' defaults are the paper's (`paper_decoder`, `paper_encoder`), as
    are the trainer's batch size and epochs and float32; written into each run's config.json, so
    that evaluation's report can list them (docs/design_decisions.md says why each exists)."""
    out = {}
    paper_task = type(task)()

    def value(cfg, name):  # a field whose default depends on others has `resolved_<name>()`
        resolved = getattr(cfg, f"resolved_{name}", None)
        return resolved() if callable(resolved) else getattr(cfg, name)

    for field in dataclasses.fields(task):
        run, paper = value(task, field.name), value(paper_task, field.name)
        if field.name not in _LOCATION_FIELDS and run != paper:
            out[f"task.{field.name}"] = {"run": run, "paper": paper}
    if trainer.global_batch_size != PAPER_BATCH_SIZE:
        out["trainer.global_batch_size"] = {"run": trainer.global_batch_size,
                                            "paper": PAPER_BATCH_SIZE}
    if trainer.train_steps is not None or trainer.epochs != PAPER_EPOCHS:
        run = (f"{trainer.train_steps} steps" if trainer.train_steps is not None
               else f"{trainer.epochs:g} epochs")
        out["trainer.length"] = {"run": run, "paper": f"{PAPER_EPOCHS:g} epochs"}
    if runtime.mixed_precision != RuntimeConfig.mixed_precision:
        out["runtime.mixed_precision"] = {"run": runtime.mixed_precision,
                                          "paper": RuntimeConfig.mixed_precision}
    return out
