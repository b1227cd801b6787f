"""What machine a benchmark ran on and what it can do, for the printouts and JSON of the scripts
in this folder (which run as `python benchmarks/NAME.py` and so import it as `machine`): the
host and its GPUs, a measured matmul peak, and the datasheet peaks of known cards (for MFU)."""

import os
import platform
import re
import time

import numpy as np
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


# One function for every call (a benchmark may time the peak many times): traced once per shape.
_matmul_sum = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b), tf.float32)))


def matmul_peak(n, seconds=3.0, dtype="float32"):
    """Achieved FLOP/s of an n×n×n `tf.linalg.matmul` (2·n³ FLOPs) in `dtype`, best of the runs
    that fit in `seconds`, on TensorFlow's default device (the GPU when there is one)."""
    rng = np.random.default_rng(0)
    a = tf.cast(tf.constant(rng.standard_normal((n, n)).astype(np.float32)), dtype)
    b = tf.cast(tf.constant(rng.standard_normal((n, n)).astype(np.float32)), dtype)
    matmul = lambda: _matmul_sum(a, b)  # noqa: E731
    matmul().numpy()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# Dense (no-sparsity) peak TFLOP/s of known cards: (name pattern, card, bfloat16 tensor cores with
# float32 accumulation, TF32 tensor cores, plain FP32), from the vendors' datasheets. Where a
# datasheet quotes "with sparsity" figures only, the dense figure is half of it.
#   H100 SXM / PCIe: NVIDIA H100 Tensor Core GPU datasheet (2023).
#   H200 SXM: NVIDIA H200 Tensor Core GPU datasheet (2024); the same compute as H100 SXM.
#   A100 (SXM4 and PCIe, 40 and 80 GB): NVIDIA A100 Tensor Core GPU datasheet (2021).
#   L4: NVIDIA L4 Tensor Core GPU datasheet (2023).
#   A10G: NVIDIA publishes no A10G datasheet (it is AWS's GA102 part); the NVIDIA A10 datasheet's
#     figures are used, an upper bound for the A10G.
#   T4: NVIDIA T4 datasheet (2019); Turing has no bfloat16 or TF32 tensor cores.
#   V100 SXM2 / PCIe: NVIDIA V100 Tensor Core GPU datasheet (2020); no bfloat16 or TF32.
#   RTX 4090: NVIDIA Ada GPU Architecture whitepaper (v2.01), appendix table (FP32 accumulate).
#   RTX 3090: NVIDIA Ampere GA102 GPU Architecture whitepaper (v2.0), table 9 (FP32 accumulate).
# None: the card has no such units; that precision's peak is then measured (`peaks`).
_KNOWN_CARDS = (
    (r"H200(?!.*NVL)", "NVIDIA H200 SXM", 989.4, 494.7, 66.9),
    (r"H100.*PCIe", "NVIDIA H100 PCIe", 756.5, 378.0, 51.2),
    (r"H100.*(SXM|HBM3)", "NVIDIA H100 SXM", 989.4, 494.7, 66.9),
    (r"A100", "NVIDIA A100", 312.0, 156.0, 19.5),
    (r"\bL4\b", "NVIDIA L4", 121.0, 60.0, 30.3),
    (r"\bA10G\b", "NVIDIA A10G (A10 datasheet)", 125.0, 62.5, 31.2),
    (r"\bT4\b", "NVIDIA T4", None, None, 8.1),
    (r"V100.*SXM", "NVIDIA V100 SXM2", None, None, 15.7),
    (r"V100", "NVIDIA V100 PCIe", None, None, 14.0),
    (r"RTX 4090", "NVIDIA GeForce RTX 4090", 165.2, 82.6, 82.6),
    (r"RTX 3090", "NVIDIA GeForce RTX 3090", 71.0, 35.6, 35.6),
)


def known_card(device_name: str):
    """The `_KNOWN_CARDS` row whose pattern matches a device name (as
    `tf.config.experimental.get_device_details` spells it), or None."""
    for row in _KNOWN_CARDS:
        if re.search(row[0], device_name):
            return row
    return None


def peaks(device_name: str, precisions, matmul_size: int, seconds: float = 3.0) -> dict:
    """Peak FLOP/s for each precision ("float32", "bfloat16"), and where each came from.

    A known card's datasheet figure where it has one. float32 means TF32 tensor cores on cards
    that have them while TensorFlow allows TF32 (its default), else plain FP32. For an unknown
    card, a CPU, or a precision the card has no units for: the best of an n×n matmul in that
    dtype measured now (`matmul_size` = n).

    Returns:
      {precision: {"flops_per_s": float, "source": str}}.
    """
    row = known_card(device_name)
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    out = {}
    for precision in precisions:
        figure, source = None, None
        if row is not None and precision == "bfloat16" and row[2] is not None:
            figure, source = row[2], f"datasheet: {row[1]}, dense bfloat16"
        elif row is not None and precision == "float32":
            if tf32 and row[3] is not None:
                figure, source = row[3], f"datasheet: {row[1]}, dense TF32 (TensorFlow's default)"
            else:
                figure, source = row[4], f"datasheet: {row[1]}, FP32"
        if figure is not None:
            out[precision] = {"flops_per_s": figure * 1e12, "source": source}
        else:
            why = "unknown device" if row is None else f"{row[1]} has no {precision} tensor cores"
            out[precision] = {"flops_per_s": matmul_peak(matmul_size, seconds, precision),
                              "source": f"measured: {matmul_size}² {precision} matmul ({why})"}
    return out
