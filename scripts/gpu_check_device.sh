#!/usr/bin/env bash
# One run of benchmarks/gpu_check.py on a lent GPU machine without network (docs/gpu.md).
#
#   bash scripts/gpu_check_device.sh NAME [gpu_check.py options...]
#
# Installs the carried wheels in .whl/ (ase, matscipy, jax-md; see docs/gpu.md) next to the
# machine's own CUDA jax, keeps XLA from preallocating the GPU (float64 failed to instantiate a
# CUDA graph with preallocation on the H200), and writes gpu_check_NAME.json and .log into
# $OUT (the device tool's folder that comes back) or, without $OUT, benchmarks/results/. The
# JSON is rewritten after every item, so a run stopped by its time limit keeps what it measured.
set -euo pipefail
name=${1:?usage: gpu_check_device.sh NAME [gpu_check.py options...]}
shift
out=${OUT:-benchmarks/results}
source "$(dirname "$0")/device_setup.sh"
python3 benchmarks/gpu_check.py --out "$out/gpu_check_$name.json" "$@" 2>&1 \
    | tee "$out/gpu_check_$name.log"
