#!/usr/bin/env bash
# Issue #14 on a lent GPU: time to `mlp`'s accuracy with mtpjax training on the GPU, against
# `mlp`'s one-core runs recorded in benchmarks/results/bench_train_mlp_cache.json (the binary is
# not needed there: --mlp-cache-only). docs/gpu.md, docs/training.md.
#
#   bash scripts/train_gpu_device.sh NAME [bench_train.py options...]
#
# Defaults: level 16, 3 seeds, 90 s of fitting per seed (--levels/--seeds/--time-limit after
# NAME override them). Installs the carried wheels in .whl/ like gpu_check_device.sh, keeps XLA
# from preallocating the GPU and from CUDA graphs (float64 failed to instantiate one on the
# H200), and writes bench_train_gpu_NAME.{json,md,png,log} into $OUT (the device tool's folder
# that comes back) or, without $OUT, benchmarks/results/. The JSON is rewritten after every run,
# so a job stopped by its time limit keeps the runs it finished (render it here with
# `benchmarks/bench_train.py --render-md FILE.json`).
set -euo pipefail
name=${1:?usage: train_gpu_device.sh NAME [bench_train.py options...]}
shift
out=${OUT:-benchmarks/results}
source "$(dirname "$0")/device_setup.sh"
export XLA_FLAGS=${XLA_FLAGS:---xla_gpu_enable_command_buffer=}
python3 benchmarks/bench_train.py --accelerator --programs mtpjax mlp --mlp-cache-only \
    --levels 16 --seeds 3 --time-limit 90 --compile-cache /tmp/bench_train_jax_cache \
    --work /tmp/bench_train_gpu --out "$out/bench_train_gpu_$name.json" \
    --plot "$out/bench_train_gpu_$name.png" "$@" 2>&1 | tee "$out/bench_train_gpu_$name.log"
