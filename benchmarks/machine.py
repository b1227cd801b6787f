"""What machine a benchmark ran on, for its printout and its --json_out (shared by the scripts
in this folder, which run as `python benchmarks/NAME.py` and so import it as `machine`)."""

import os
import platform

import tensorflow as tf


def cpu_name() -> str:
    """The CPU model (Linux: /proc/cpuinfo), else the architecture."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    return platform.machine()


def describe() -> dict:
    """TensorFlow, Python, CPU model and cores, and the GPUs TensorFlow sees."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return {"tensorflow": tf.__version__, "python": platform.python_version(), "cpu": cpu_name(),
            "cpu_cores": os.cpu_count(), "gpus": names}
