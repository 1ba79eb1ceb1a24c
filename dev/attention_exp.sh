#!/usr/bin/env bash
# dev/attention_exp.sh: variants of the flash kernels timed side by side with the production
# build, in one call on the GPU.
#
#   VARIANTS="name:dev/flash_v7.cu other:dev/flash_sm90_v3.cu" bash dev/attention_exp.sh
#
# A variant is a copy of attention/flash.cu or attention/flash_sm90.cu with the change to try
# (kept in dev/ as numbered versions, as llm.c's dev/cuda does); it replaces the production file
# of the same kind in the benchmark's build. The production kernels carry no -D or environment
# switches: the tile shapes, warp counts and pipelines they once selected were measured (v1-v6 in
# dev/attention_notes.md) and the chosen ones are constants. "base" is always run;
# `build/dev/bench_attention flash-mma` times the mma.sync kernels alone on Hopper.
# KERNELS="flash memeff" picks the kernels, EXP_D the head dimension (default 64).
set -u
OUT=${OUT:-/tmp}
NV="nvcc -std=c++17 -O3 -lineinfo -gencode arch=compute_90a,code=sm_90a -DFLASH_SM90=1 -I. -Xcompiler -fopenmp"
BASE="attention/naive.cu attention/memeff.cu attention/flash.cu attention/flash_sm90.cu attention/cuda_errors.cu"
make -s build/libcpu.a || exit 1   # the CPU side of attention.h (names, shape helpers)
mkdir -p build/exp
VARIANTS="base: ${VARIANTS:-}"
for v in $VARIANTS; do
    name=${v%%:*}; file=${v#*:}; srcs=$BASE
    case "$file" in
        *flash_sm90*) srcs=${BASE/attention\/flash_sm90.cu/$file} ;;
        ?*) srcs=${BASE/attention\/flash.cu/$file} ;;
    esac
    $NV -o build/exp/bench_$name dev/bench_attention.cu $srcs build/libcpu.a -lcublas > build/exp/$name.log 2>&1 &
done
wait
for v in $VARIANTS; do
    name=${v%%:*}
    echo "== $name"
    for T in 1024 4096 16384; do
        ./build/exp/bench_$name ${KERNELS:-flash} D=${EXP_D:-64} T=$T | grep -E "^(flash|memeff|naive)"
    done
done 2>&1 | tee $OUT/exp.log
