"""tf.distribute strategies and numeric policies by name (the `--strategy`, `--mixed_precision`
flags of train.py), and which worker is the chief."""

from typing import Optional

from absl import logging
import keras
import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "bfloat16", "float16")


def get_strategy(name: str = "default", tpu: Optional[str] = None) -> tf.distribute.Strategy:
    """Returns the named strategy.

    Args:
      name: `default` (no distribution: whatever device TF picks), `one_device` (first GPU, else
        CPU), `mirrored` (all local GPUs, or all logical CPUs when there is no GPU),
        `multi_worker_mirrored` (reads `TF_CONFIG`), `tpu` (needs `tpu`).
      tpu: TPU name or grpc address for `tpu`; "" or "local" for a TPU VM.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        if tpu is None:
            raise ValueError("--strategy=tpu needs --tpu=NAME (or --tpu=local on a TPU VM)")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if tpu == "local" else tpu
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the worker that writes checkpoints, summaries and exports (multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def check_precision(precision: str) -> None:
    """Raises ValueError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")


def set_precision(precision: str) -> None:
    """Sets the Keras global dtype policy: float32, or mixed bfloat16/float16 compute.

    `loop.Trainer` calls it from its runtime config before it builds models (and adds loss
    scaling for float16); call it yourself only to build models outside a Trainer.
    """
    check_precision(precision)
    policy = "float32" if precision == "float32" else f"mixed_{precision}"
    keras.mixed_precision.set_global_policy(policy)
    logging.info("Keras dtype policy: %s.", policy)
