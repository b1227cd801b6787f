"""The GPU benchmark (benchmarks/gpu.py, benchmarks/gpu.sh, benchmarks/machine.py) runs on a CPU.

No timings are asserted: only that every required configuration ran, with positive throughput,
a FLOP count and a named peak, and that the datasheet table picks the right cards
(docs/performance.md, "GPU benchmark").
"""

import json
import os
import subprocess
import sys

import pytest

from speech2face.models import voice_encoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
sys.path.insert(0, BENCHMARKS)

import machine  # noqa: E402  (benchmarks/machine.py)

REQUIRED = [f"encoder/{p}/xla_{x}" for p in ("float32", "bfloat16") for x in ("off", "on")]
REQUIRED += [f"pipeline/{w}" for w in ("naive_host_stft", "host_crop_only", "device_stft")]
REQUIRED += [f"decoder/{p}/xla_off" for p in ("float32", "bfloat16")]


@pytest.mark.parametrize("name, card", [
    ("NVIDIA H200", "NVIDIA H200 SXM"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"),
    ("NVIDIA L4", "NVIDIA L4"),
    ("NVIDIA A10G", "NVIDIA A10G (A10 datasheet)"),
    ("Tesla T4", "NVIDIA T4"),
    ("Tesla V100-SXM2-16GB", "NVIDIA V100 SXM2"),
    ("Tesla V100-PCIE-32GB", "NVIDIA V100 PCIe"),
    ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
    ("NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3090"),
])
def test_known_cards_by_device_name(name, card):
    assert machine.known_card(name)[1] == card


@pytest.mark.parametrize("name", ["NVIDIA L40S", "NVIDIA H200 NVL", "CPU: AMD EPYC"])
def test_unknown_cards_are_not_guessed(name):
    assert machine.known_card(name) is None


def test_peaks_datasheet_or_measured():
    h200 = machine.peaks("NVIDIA H200", ("float32", "bfloat16"), matmul_size=64, seconds=0.1)
    assert h200["bfloat16"]["flops_per_s"] == pytest.approx(989.4e12)
    assert h200["bfloat16"]["source"].startswith("datasheet: NVIDIA H200 SXM")
    # T4 has no bfloat16 units: that peak is measured, the float32 one comes from the datasheet.
    t4 = machine.peaks("Tesla T4", ("float32", "bfloat16"), matmul_size=64, seconds=0.1)
    assert t4["float32"]["flops_per_s"] == pytest.approx(8.1e12)
    assert t4["bfloat16"]["source"].startswith("measured: 64² bfloat16 matmul")
    assert t4["bfloat16"]["flops_per_s"] > 0


def test_wrapper_is_valid_bash():
    subprocess.run(["bash", "-n", os.path.join(BENCHMARKS, "gpu.sh")], check=True)


@pytest.mark.slow
def test_tiny_run_writes_every_configuration(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "gpu.py"), "--tiny",
                           "--budget_s=3600", f"--json={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["tensorflow"] and report["device"]
    rows = {row["name"]: row for row in report["configurations"]}
    assert sorted(rows) == sorted(REQUIRED), report["skipped"]
    assert all(not s["required"] for s in report["skipped"])
    for row in rows.values():
        assert row["examples_per_s"] > 0, row
        assert row["peak_source"], row
        assert row["mfu"] is not None and row["gflops_per_s"] >= 0, row
    for precision in ("float32", "bfloat16"):
        assert report["peaks"][precision]["source"].startswith("measured:")  # a CPU
    frames = 1 + (report["setup"]["samples"] - 400) // 160
    small = voice_encoder.encoder_config("small")
    assert rows["encoder/float32/xla_off"]["flops_per_example"] == (
        3 * voice_encoder.flops_per_example(small, frames))
    assert rows["decoder/float32/xla_off"]["flops_per_example"] > 0
    assert rows["pipeline/device_stft"]["flops_per_example"] > 0


def test_fused_ops_benchmark_writes_every_row(tmp_path):
    out = tmp_path / "fused_ops.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "fused_ops.py"),
                           "--repeats=1", "--calls=1", "--encoder_batch=2", "--frames=64",
                           "--warp_batch=2", "--image_size=16", f"--json={out}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["adam_toy_decoder", "adam_toy_encoder",
                               "batch_norm_toy_encoder_fwd_bwd", "spectrogram_encoder_batch",
                               "texture_target_warp"]
    for row in results.values():
        assert row["ms_ours"] > 0 and row["ms_naive"] > 0
        assert row["speedup"] == pytest.approx(row["ms_naive"] / row["ms_ours"])
    assert "speed-up" in proc.stdout
