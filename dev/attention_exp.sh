#!/usr/bin/env bash
# dev/attention_exp.sh: flash variants (compile-time switches of attention/flash.cu) timed side by
# side at D = 64: FLASH_FWD_ROW_TILES, FLASH_BWD_WARPS, and two diagnostic cuts of the backward
# (FLASH_EXP_NO_DQ: no dQ at all; FLASH_EXP_PLAIN_STORE: dQ stored, not atomically added).
# v5 switches (D = 64 only): FLASH_FWD_Q_SMEM=0|1, FLASH_FWD_MINB, FLASH_BWD_BR, FLASH_BWD_MINB,
# FLASH_BWD_KV_REGS (e.g. "v4bwd:-DFLASH_BWD_MINB=1,-DFLASH_BWD_BR=64").
# Hopper forward (attention/flash_sm90.cu, everything here is built for sm_90a): FLASH_SM90_WG
# (warpgroups per block), FLASH_SM90_BC (keys per tile), FLASH_SM90_PREFETCH, FLASH_SM90_MINB;
# a variant named "...:env=ATTN_FLASH_SM90=0" runs the base binary with that environment.
# VARIANTS="name:-DFLAG=1,-DOTHER=2 ..." picks the set, KERNELS="flash memeff" the kernels.
set -u
OUT=${OUT:-/tmp}
SRCS="attention/naive.cu attention/memeff.cu attention/flash.cu attention/flash_sm90.cu attention/cuda_table.cu"
NV="nvcc -std=c++17 -O3 -lineinfo -gencode arch=compute_90a,code=sm_90a -DFLASH_SM90=1 -I. -Xcompiler -fopenmp"
mkdir -p build/exp
VARIANTS=${VARIANTS:-"base: fwd1:-DFLASH_FWD_ROW_TILES=1 w8:-DFLASH_BWD_WARPS=8 nodq:-DFLASH_EXP_NO_DQ plain:-DFLASH_EXP_PLAIN_STORE"}
for v in $VARIANTS; do
    name=${v%%:*}; flags=${v#*:}; flags=${flags//,/ }
    case "$flags" in env=*) continue ;; esac
    $NV $flags -o build/exp/bench_$name dev/bench_attention.cu $SRCS -lcublas > build/exp/$name.log 2>&1 &
done
wait
for v in $VARIANTS; do
    name=${v%%:*}; flags=${v#*:}; bin=build/exp/bench_$name; envs=
    case "$flags" in env=*) bin=build/exp/bench_base; envs=${flags#env=}; envs=${envs//,/ } ;; esac
    echo "== $name"
    for T in 1024 4096 16384; do
        env $envs ./$bin ${KERNELS:-flash} D=${EXP_D:-64} T=$T | grep -E "^(flash|memeff|naive) "
    done
done 2>&1 | tee $OUT/exp.log
