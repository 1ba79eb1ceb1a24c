#!/usr/bin/env bash
# test/test_dist.sh: multi-GPU options end to end where no GPU is needed -- each bad setting
# (--gpus with no GPU, a launcher's environment that makes no sense, several processes on the
# CPU) stops ./train_gpt2 with one line on stderr and exit code 2, before any training step.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-./train_gpt2}
passed=0
failed=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
TINY=(--layers 1 --heads 2 --channels 16 --batch 2 --seq-len 8 --steps 1 --sample-len 0)

# expect_one_line NAME NEEDLE ENV... -- ARGS...: exit 2, one stderr line holding NEEDLE, no steps
expect_one_line() {
    local name=$1 needle=$2; shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    env -u RANK -u WORLD_SIZE -u LOCAL_RANK -u SLURM_PROCID -u SLURM_NTASKS -u OMPI_COMM_WORLD_RANK \
        -u OMPI_COMM_WORLD_SIZE "${envs[@]}" timeout 60 "$BIN" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$? lines
    lines=$(wc -l <"$tmp/err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$needle" "$tmp/err" && ! grep -q '^step' "$tmp/out"; then
        ok
    else
        bad "$name: exit $rc, $lines stderr lines: $(head -c 300 "$tmp/err")"
    fi
}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "note: GPUs are visible here; --gpus without a GPU is not checked (test/gpu/test_dist.sh runs them)"
else
    expect_one_line "--gpus 2 without a GPU" "--gpus 2" -- --gpus 2 "${TINY[@]}"
    expect_one_line "torchrun world of 2 on the CPU" "rank 0 of 2" RANK=0 WORLD_SIZE=2 -- "${TINY[@]}"
fi
expect_one_line "rank outside the world" "RANK=2 is outside" RANK=2 WORLD_SIZE=2 -- "${TINY[@]}"
expect_one_line "non-numeric world" "WORLD_SIZE='two'" RANK=0 WORLD_SIZE=two -- "${TINY[@]}"
expect_one_line "slurm rank outside" "SLURM_PROCID=3" SLURM_PROCID=3 SLURM_NTASKS=2 -- "${TINY[@]}"
expect_one_line "mpi over nodes without MASTER_ADDR" "MASTER_ADDR" -u MASTER_ADDR OMPI_COMM_WORLD_RANK=0 \
    OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_SIZE=2 -- "${TINY[@]}"
expect_one_line "bad MASTER_PORT" "MASTER_PORT" RANK=0 WORLD_SIZE=2 MASTER_PORT=99999 -- "${TINY[@]}"
expect_one_line "--zero 2" "--zero" -- --zero 2 "${TINY[@]}"
expect_one_line "--gpus -1" "--gpus" -- --gpus -1 "${TINY[@]}"
expect_one_line "--dist-timeout 0" "--dist-timeout" -- --dist-timeout 0 "${TINY[@]}"
# a world of 1 from a launcher trains as usual
env RANK=0 WORLD_SIZE=1 timeout 60 "$BIN" "${TINY[@]}" --device cpu >"$tmp/out" 2>"$tmp/err" &&
    grep -q '^step' "$tmp/out" && ok || bad "a world of 1 trains: $(head -c 300 "$tmp/err")"
echo "test_dist_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
