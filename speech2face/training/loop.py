"""The training loop, written once for both stages (face decoder, voice encoder).

A `Task` says what a stage trains (model, optimizer, inputs, per-example losses, pictures,
export); `Trainer` does everything else the same way for every stage, after SimCLR's tf2 loop
and Model Garden's trainers:

- one per-replica step under `strategy.run`; per-example losses averaged over the GLOBAL batch
  (`tf.nn.compute_average_loss`), so gradients summed over replicas equal the single-device ones;
- `steps_per_loop` steps per `tf.function` call (`for _ in tf.range(n)`), which keeps the host
  out of the way of small steps;
- every input checked before anything is written (`run_dir.check_inputs`, `Task.check`); a lock
  on `model_dir` against a second run; a resume refused when it would change what is trained;
- checkpoints over step, model and optimizer (`checkpoints.RunState`); a rerun with the same
  `model_dir` resumes from the latest; SIGTERM/SIGINT save one and stop, unexported;
- a non-finite loss stops the run, naming the step, and keeps the last good checkpoint; a
  corrupt record stops it naming the file (or, `skip_corrupt_records`, ends that file only);
- TensorBoard scalars `losses/*`, `lr`, `grad_norm`, `perf/steps_per_sec`,
  `perf/examples_per_sec`, and the task's image grids; progress lines with an ETA;
- the resolved configuration written to `model_dir/config.json` after `Task.prepare`, so that
  it holds what the task counted over the training set.
"""

import abc
import contextlib
import dataclasses
import json
import os
import signal
import time
from typing import Dict, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from speech2face import audio, data, errors
from speech2face.records import verify
from speech2face.training import checkpoints
from speech2face.training import config as config_lib
from speech2face.training import run_dir
from speech2face.training import strategy as strategy_lib

class TrainingError(errors.UserError, RuntimeError):
    """Training cannot go on (non-finite loss, incompatible model_dir, ...)."""


class Task(abc.ABC):
    """What a stage trains; the Trainer calls these. Subclasses must define the abstract methods
    (a missing one fails at construction); the others have defaults."""

    name = "task"
    loss_names: Sequence[str] = ("total",)
    eval_file = "final_eval.json"  # where `final_evaluation`'s numbers go in model_dir
    skip_corrupt_records = False  # the Trainer sets it from its DataConfig

    def options(self, **kwargs) -> data.InputOptions:
        """`data.InputOptions(**kwargs)` with this run's handling of corrupt records."""
        return data.InputOptions(skip_corrupt=self.skip_corrupt_records, **kwargs)

    def check(self) -> None:
        """Raises a `UserError` for a bad setting or input (teachers, weights) before anything
        is written; must be cheap (the models are built later, in `build_model`)."""

    @abc.abstractmethod
    def config(self) -> dict:
        """JSON-able settings of the task, written to config.json."""
        raise NotImplementedError

    @abc.abstractmethod
    def input_options(self, training: bool) -> data.InputOptions:
        raise NotImplementedError

    def prepare(self, train_files: Sequence[str]) -> None:
        """Runs once before the model is built (e.g. statistics over the training set)."""

    @abc.abstractmethod
    def build_model(self) -> keras.Model:
        """Called inside the strategy scope."""
        raise NotImplementedError

    @abc.abstractmethod
    def build_optimizer(self) -> keras.optimizers.Optimizer:
        raise NotImplementedError

    def trainable_variables(self, model: keras.Model):
        return model.trainable_variables

    @abc.abstractmethod
    def compute_losses(self, model, batch, training: bool) -> Dict[str, tf.Tensor]:
        """Per-example losses: a dict of [b] float32 tensors with every name in loss_names."""
        raise NotImplementedError

    def summary_input_options(self) -> data.InputOptions:
        """Inputs of the fixed held-out batch handed to `summaries`."""
        return self.input_options(False)

    def summaries(self, model, batch) -> Dict[str, tuple]:
        """Pictures and sounds for TensorBoard: name -> ("image", [n, h, w, 3] float in
        [0, 1]) or ("audio", [n, samples, 1] float in [-1, 1] at 16 kHz)."""
        return {}

    @abc.abstractmethod
    def export(self, model, model_dir: str) -> str:
        """Saves what later stages load; returns the export directory."""
        raise NotImplementedError

    def final_evaluation(self, model, eval_dataset) -> dict:
        """Numbers on held-out data after training, written to model_dir (may be {})."""
        return {}


def _format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Trainer:
    """Trains `task` into `model_dir` as `data`, `trainer` and `runtime` say (see
    `speech2face.training.config`), under `strategy` (default: the current one). See the module
    docstring; `speech2face.training.experiments` builds the task from a named experiment."""

    def __init__(self, task: Task, model_dir: str, data_config: config_lib.DataConfig,
                 trainer: config_lib.TrainerConfig = config_lib.TrainerConfig(),
                 runtime: config_lib.RuntimeConfig = config_lib.RuntimeConfig(),
                 strategy: Optional[tf.distribute.Strategy] = None,
                 experiment: Optional[dict] = None):
        trainer.validate()
        strategy_lib.check_precision(runtime.mixed_precision)
        if not data_config.train_records:
            raise ValueError("no training records: set data.train_records (--train_records)")
        task.skip_corrupt_records = data_config.skip_corrupt_records
        self.task = task
        self.model_dir = model_dir
        self.data = data_config
        self.trainer = trainer
        self.runtime = runtime
        self.experiment = experiment
        self.strategy = strategy or tf.distribute.get_strategy()
        self._files = []  # the record files, to name the bad one of a DataLossError
        # With skip_corrupt_records: readings of a file that ended at a damaged record (the
        # headers walked before the run cannot see a payload damaged in place).
        self._cut_short = (tf.Variable(0, dtype=tf.int64, trainable=False, name="cut_short")
                           if data_config.skip_corrupt_records else None)
        self.names = tuple(task.loss_names)
        if "total" not in self.names:
            raise ValueError(f"task {task.name} has no 'total' loss")

    # -- input --------------------------------------------------------------------------
    def _dataset(self, pattern: str, training: bool):
        options = dataclasses.replace(self.task.input_options(training), seed=self.trainer.seed,
                                      cut_short=self._cut_short,
                                      deterministic=self.data.deterministic_input)
        return self.strategy.distribute_datasets_from_function(
            lambda ctx: data.input_fn(pattern, ctx, self.trainer.global_batch_size, training,
                                      options))

    def _image_batch(self):
        pattern = self.data.eval_records or self.data.train_records
        options = self.task.summary_input_options()
        dataset = data.input_fn(pattern, None, self.trainer.num_images, False, options)
        batch = next(iter(dataset), None)
        if batch is None:
            raise TrainingError(f"{pattern}: no example for the image summaries (the task's "
                                "input filter may drop them all)")
        return batch

    # -- steps --------------------------------------------------------------------------
    def _build_functions(self, model, optimizer, step):
        strategy, task, names = self.strategy, self.task, self.names
        global_batch = self.trainer.global_batch_size
        variables = task.trainable_variables(model)

        def replica_step(batch):
            with tf.GradientTape() as tape:
                losses = task.compute_losses(model, batch, training=True)
                loss = tf.nn.compute_average_loss(losses["total"], global_batch_size=global_batch)
                scaled = optimizer.scale_loss(loss)  # float16 loss scaling; identity otherwise
            grads = tape.gradient(scaled, variables)
            optimizer.apply_gradients(zip(grads, variables))
            # Per-replica sums over the global batch: summed over replicas, they are the means.
            out = [tf.reduce_sum(tf.cast(losses[n], tf.float32)) / global_batch for n in names]
            unscale = tf.math.divide_no_nan(tf.cast(loss, tf.float32), tf.cast(scaled, tf.float32))
            grad_norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads]) * unscale
            out.append(grad_norm / strategy.num_replicas_in_sync)
            return out

        run_step = replica_step
        if self.runtime.jit_compile:
            # XLA takes no strings: the batch's ids stay outside the compiled step.
            compiled = tf.function(replica_step, jit_compile=True)
            run_step = lambda batch: compiled(  # noqa: E731
                {k: v for k, v in batch.items() if v.dtype != tf.string})

        @tf.function
        def train_loop(iterator, num_steps):
            sums = [tf.constant(0.0) for _ in range(len(names) + 1)]
            bad_step = tf.constant(-1, tf.int64)
            for _ in tf.range(num_steps):
                if bad_step >= 0:
                    # Stop at once: the update of a non-finite step has spoilt the weights.
                    break
                per_replica = strategy.run(run_step, args=(next(iterator),))
                values = [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                          for v in per_replica]
                step.assign_add(1)
                finite = tf.reduce_all([tf.math.is_finite(v) for v in values])
                bad_step = tf.where((bad_step < 0) & tf.logical_not(finite), step.read_value(),
                                    bad_step)
                sums = [s + v for s, v in zip(sums, values)]
            return [s / tf.cast(num_steps, tf.float32) for s in sums], bad_step

        def replica_eval(batch):
            def run():
                losses = task.compute_losses(model, batch, training=False)
                return [tf.reduce_sum(tf.cast(losses[n], tf.float32)) for n in names] + [
                    tf.cast(tf.shape(losses["total"])[0], tf.float32)]

            # A replica's share of the last, partial batch can be empty: it adds nothing and is
            # not run through the model (TensorFlow 2.21's oneDNN convolutions give an empty
            # batch the input's channels on CPUs with AVX-512, and the losses then fail).
            size = tf.shape(tf.nest.flatten(batch)[0])[0]
            return tf.cond(size > 0, run, lambda: [tf.constant(0.0)] * (len(names) + 1))

        @tf.function
        def eval_step(batch):
            per_replica = strategy.run(replica_eval, args=(batch,))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for v in per_replica]

        return train_loop, eval_step

    def _evaluate(self, eval_step) -> Dict[str, float]:
        sums, count = np.zeros(len(self.names)), 0.0
        for i, batch in enumerate(self._dataset(self.data.eval_records, training=False)):
            if self.trainer.eval_batches and i >= self.trainer.eval_batches:
                break
            values = [float(v) for v in eval_step(batch)]
            sums += values[:-1]
            count += values[-1]
        return {n: s / max(count, 1.0) for n, s in zip(self.names, sums)}

    # -- the loop -----------------------------------------------------------------------
    def train(self) -> dict:
        """Trains to `train_steps` (resuming if possible); returns a summary dict. The Keras
        dtype policy is `runtime.mixed_precision` while it runs, and restored afterwards."""
        previous_policy = keras.mixed_precision.global_policy()
        strategy_lib.set_precision(self.runtime.mixed_precision)
        try:
            return self._train()
        except tf.errors.OpError as e:
            if not verify.is_corrupt_read(e):
                raise
            raise verify.corrupt_error(self._files, e, "training or evaluation") from e
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)

    def _train(self) -> dict:
        """Checks everything (writing nothing), then trains under model_dir's lock."""
        tr = self.trainer
        chief = strategy_lib.is_chief(self.strategy)
        inputs = run_dir.check_inputs(self.data, tr, self.strategy, self.model_dir)
        self._files = inputs.train_files + inputs.eval_files
        self.task.check()
        record = run_dir.RunRecord(self.model_dir, run_dir.describe(
            self.experiment, self.data, tr, self.runtime, self.task, inputs), self.task)
        if chief:
            record.check()
        if inputs.dropped:  # files with no readable record at all: read only the others
            self.data = dataclasses.replace(
                self.data, train_records=",".join(inputs.train_files),
                eval_records=",".join(inputs.eval_files) if inputs.eval_files else None)
        keras.utils.set_random_seed(tr.seed)
        self.task.prepare(inputs.train_files)  # reads only (e.g. counts over the training set)
        tf.io.gfile.makedirs(self.model_dir)
        with run_dir.RunLock(self.model_dir) if chief else contextlib.nullcontext():
            if chief:  # the task's config now holds what `prepare` counted
                record.write()
            return self._run(inputs, chief)

    def _run(self, inputs: "run_dir.Inputs", chief: bool) -> dict:
        tr, train_steps = self.trainer, inputs.train_steps

        with self.strategy.scope():
            model = self.task.build_model()
            optimizer = self.task.build_optimizer()
            if self.runtime.mixed_precision == "float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.task.trainable_variables(model))
            step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        state = checkpoints.RunState(self.model_dir, self.strategy, step, model, optimizer,
                                     tr.keep_checkpoints)
        start_step = int(step.numpy())

        train_loop, eval_step = self._build_functions(model, optimizer, step)
        iterator = iter(self._dataset(self.data.train_records, training=True))
        image_batch = self._image_batch()
        if chief:
            train_writer = tf.summary.create_file_writer(os.path.join(self.model_dir, "train"))
            eval_writer = tf.summary.create_file_writer(os.path.join(self.model_dir, "eval"))
        else:
            train_writer = eval_writer = tf.summary.create_noop_writer()
        status, last = "finished", {}

        def write_images():
            if not chief:
                return
            with train_writer.as_default(step=int(step.numpy())):
                for name, (kind, value) in self.task.summaries(model, image_batch).items():
                    if kind == "image":
                        tf.summary.image(name, value, max_outputs=tr.num_images)
                    else:
                        tf.summary.audio(name, value, audio.SAMPLE_RATE,
                                         max_outputs=tr.num_images)

        if start_step == 0:
            write_images()
        if inputs.corrupt:
            with train_writer.as_default(step=start_step):
                tf.summary.scalar("data/corrupt_files", len(inputs.corrupt))
                tf.summary.scalar("data/records_read_of_corrupt_files",
                                  sum(r.records for r in inputs.corrupt))
        with checkpoints.StopFlag() as stop:
            window_start, window_step = time.perf_counter(), int(step.numpy())
            while int(step.numpy()) < train_steps:
                current = int(step.numpy())
                num = min(tr.steps_per_loop, train_steps - current)
                for every in (tr.summary_every, tr.checkpoint_every, tr.image_summary_every,
                              tr.eval_every):
                    num = min(num, every - current % every)
                try:
                    values, bad_step = train_loop(iterator, tf.constant(num, tf.int32))
                except tf.errors.OpError as e:
                    if verify.is_corrupt_read(e):
                        state.save("before stopping on a corrupt record")
                    raise
                if int(bad_step) >= 0:
                    kept = (f"the last good checkpoint is kept: {state.latest}; lower the "
                            "learning rate or check the input data, then rerun to resume from it"
                            if state.latest else "no checkpoint was written before it; lower "
                            "the learning rate or check the input data and rerun")
                    raise TrainingError(
                        f"non-finite loss at step {int(bad_step)} (the run had reached step "
                        f"{current} without one): {kept}")
                current = int(step.numpy())
                last = dict(zip(self.names + ("grad_norm",), [float(v) for v in values]))
                if current % tr.summary_every == 0 or current == train_steps:
                    elapsed = time.perf_counter() - window_start
                    steps_per_sec = (current - window_step) / max(elapsed, 1e-9)
                    window_start, window_step = time.perf_counter(), current
                    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                    with train_writer.as_default(step=current):
                        for name, value in last.items():
                            tf.summary.scalar(name if name == "grad_norm" else f"losses/{name}",
                                              value)
                        tf.summary.scalar("lr", lr)
                        tf.summary.scalar("perf/steps_per_sec", steps_per_sec)
                        tf.summary.scalar("perf/examples_per_sec",
                                          steps_per_sec * tr.global_batch_size)
                        if self._cut_short is not None:
                            tf.summary.scalar("data/file_reads_cut_short",
                                              int(self._cut_short.numpy()))
                    eta = (train_steps - current) / max(steps_per_sec, 1e-9)
                    logging.info(
                        "step %d/%d (%.0f%%)  %s  lr %.2e  %.2f steps/s  %.1f examples/s  ETA %s",
                        current, train_steps, 100.0 * current / train_steps,
                        "  ".join(f"{n} {last[n]:.4g}" for n in self.names), lr, steps_per_sec,
                        steps_per_sec * tr.global_batch_size, _format_seconds(eta))
                if current % tr.image_summary_every == 0:
                    write_images()
                if self.data.eval_records and current % tr.eval_every == 0:
                    metrics = self._evaluate(eval_step)
                    with eval_writer.as_default(step=current):
                        for name, value in metrics.items():
                            tf.summary.scalar(f"losses/{name}", value)
                    logging.info("eval at step %d: %s", current,
                                 "  ".join(f"{n} {v:.4g}" for n, v in metrics.items()))
                if current % tr.checkpoint_every == 0 or current == train_steps:
                    state.save("periodic" if current < train_steps else "final")
                if stop.signum is not None:
                    if state.latest is None or not state.latest.endswith(f"-{current}"):
                        state.save("on " + signal.Signals(stop.signum).name)
                    status = "interrupted"
                    logging.warning("Stopped by %s at step %d of %d; not exported. Rerun the "
                                    "same command to resume.",
                                    signal.Signals(stop.signum).name, current, train_steps)
                    break
        train_writer.flush()
        eval_writer.flush()

        result = {"status": status, "start_step": start_step, "step": int(step.numpy()),
                  "train_steps": train_steps, "losses": last, "export": None}
        if self._cut_short is not None:
            result["file_reads_cut_short"] = int(self._cut_short.numpy())
            if result["file_reads_cut_short"]:
                logging.warning("--skip_corrupt_records: %d readings of a record file ended at "
                                "a damaged record and skipped the rest of that file (each "
                                "logged above; data/file_reads_cut_short in the summaries).",
                                result["file_reads_cut_short"])
        if status == "interrupted":
            result["signal"] = signal.Signals(stop.signum).name
        if not chief:
            state.remove_worker_copy()
            return result
        if status == "finished":  # an interrupted run is not exported: it is not done
            result["export"] = self.task.export(model, self.model_dir)
        if status == "finished" and self.data.eval_records:
            numbers = self.task.final_evaluation(
                model, data.input_fn(self.data.eval_records, None, tr.global_batch_size, False,
                                     self.task.input_options(False)))
            if numbers:
                result["final_evaluation"] = numbers
                with tf.io.gfile.GFile(os.path.join(self.model_dir, self.task.eval_file), "w") as f:
                    json.dump(numbers, f, indent=2)
                logging.info("Held-out numbers written to %s.",
                             os.path.join(self.model_dir, self.task.eval_file))
        return result
