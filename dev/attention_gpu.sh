#!/usr/bin/env bash
# dev/attention_gpu.sh: one device-machine session for the attention kernels: build (make, or
# plain nvcc if the rest of the tree does not build), GPU tests, the ctypes check, the benchmark.
# Logs go to $OUT (or /tmp). Usage: bash dev/attention_gpu.sh [bench kernels...]
set -u
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv
date -u
SRCS="$(echo attention/*.c) attention/naive.cu attention/memeff.cu attention/flash.cu attention/flash_sm90.cu attention/cuda_errors.cu attention/attention_api.cu"
NV="nvcc -std=c++17 -O3 -lineinfo -gencode arch=compute_90,code=sm_90 -I. -Xcompiler -fopenmp"
if ! make -j16 GPU_ARCH=90 build/test/gpu/test_attention build/dev/bench_attention libattention > $OUT/build.log 2>&1; then
    echo "make failed (see build.log), building directly"; tail -5 $OUT/build.log
    mkdir -p build/test/gpu build/dev
    $NV -o build/test/gpu/test_attention test/gpu/test_attention.cu $SRCS -lcublas &
    $NV -o build/dev/bench_attention dev/bench_attention.cu $SRCS -lcublas &
    $NV -Xcompiler -fPIC -shared -o build/libattention.so $SRCS -lcublas &
    wait
fi
echo "== test"; OMP_NUM_THREADS=16 timeout 200 ./build/test/gpu/test_attention > $OUT/test.log 2>&1; echo "rc=$?"
grep -c FAIL $OUT/test.log; grep FAIL $OUT/test.log | head -40; tail -2 $OUT/test.log
echo "== ctypes"; PYTHONUNBUFFERED=1 timeout 120 python3 dev/attention_ctypes.py build/libattention.so 2>&1 | tee $OUT/ctypes.log | tail -30
echo "== bench"; timeout 300 ./build/dev/bench_attention "$@" 2>&1 | tee $OUT/bench.log | tail -40
