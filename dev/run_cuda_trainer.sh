#!/usr/bin/env bash
# dev/run_cuda_trainer.sh: on the GPU machine: build the CUDA trainer's test and benchmark, run
# the test, then the benchmarks given as arguments ("MODEL B T [opts...]" per argument).
# Logs go to $OUT (or /tmp) as test_trainer.log and bench.log.
set -u
OUT=${OUT:-/tmp}
make -j16 GPU_ARCH=90 build/test/gpu/test_trainer build/dev/bench_trainer build/dev/bench_matmul_cuda > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
if [ "${SKIP_TEST:-0}" != 1 ]; then
  timeout 300 build/test/gpu/test_trainer > "$OUT/test_trainer.log" 2>&1
  echo "test rc=$?"
  cat "$OUT/test_trainer.log"
fi
for cfg in "$@"; do
  timeout 120 build/dev/bench_trainer $cfg 2>&1 | tee -a "$OUT/bench.log"
done
