#!/usr/bin/env bash
# The GPU benchmark in one command (docs/performance.md, "GPU benchmark"):
#
#   benchmarks/gpu.sh [OUT.json] [more gpu.py flags]      (OUT.json defaults to gpu.json)
#
# Prints the GPUs the driver sees, then runs benchmarks/gpu.py with its 400 s budget under a hard
# 480 s limit, so the whole run ends within 8 minutes; gpu.py writes OUT.json after every
# configuration, so a run cut short still leaves what it measured.
set -euo pipefail

out="${1:-gpu.json}"
shift || true
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# XLA finds libdevice in the pip CUDA wheels (nvidia/cuda_nvcc) and in /usr/local/cuda by itself;
# point it elsewhere only when the user names a CUDA directory and has not set XLA_FLAGS.
if [[ -n "${CUDA_DIR:-}" && -z "${XLA_FLAGS:-}" ]]; then
  export XLA_FLAGS="--xla_gpu_cuda_data_dir=${CUDA_DIR}"
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -L
else
  echo "gpu.sh: nvidia-smi not found; gpu.py reports the devices TensorFlow sees"
fi

status=0
timeout --signal=TERM --kill-after=15 480 \
  "${PYTHON:-python}" "${repo}/benchmarks/gpu.py" --json="${out}" "$@" || status=$?
if [[ ${status} -eq 124 ]]; then
  echo "gpu.sh: gpu.py ran past 480 s and was stopped; ${out} holds what it finished" >&2
fi
exit "${status}"
