#!/usr/bin/env bash
# test/test_cpu_only_build.sh: the build without CUDA -- `make CPU_ONLY=1` makes a CPU-only
# ./train_gpt2 with gcc alone (train_gpt2.cu compiled as C), even where nvcc is installed, that
# links no CUDA library, trains, and says which backend it uses; and the build choice (dry runs):
# `make NVCC=` is the same build, an nvcc without a CUDA installation beside it falls back to gcc
# with a one-line note, `make CUDA=1` without CUDA stops with one line, CPU_ONLY=1 CUDA=1 too.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The inner makes must not inherit an outer make's flags: under `make -j8 test` MAKEFLAGS holds
# the jobserver, and the inner make warns about it; and under `make NVCC= test` (or CPU_ONLY=1,
# CUDA=1) the outer make exports that variable to its recipes' environment, which would decide
# the inner builds' choice instead of the arguments each check gives.
NO_OUTER="-u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES -u NVCC -u CPU_ONLY -u CUDA"
inner_make() { env $NO_OUTER make "$@"; }
# a copy of the tree as git has it (tracked and untracked-not-ignored files), built from scratch
git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$tmp"
(cd "$tmp" && inner_make -s -j2 CPU_ONLY=1 train_gpt2 >build.log 2>&1) && ok || bad "CPU-only build failed: $(tail -5 "$tmp/build.log")"
grep -qE "warning|nvcc" "$tmp/build.log" && bad "CPU-only build printed warnings or used nvcc: $(grep -m2 -E 'warning|nvcc' "$tmp/build.log")" || ok
if [ -x "$tmp/train_gpt2" ]; then
    ldd "$tmp/train_gpt2" | grep -qE "cuda|cublas|nccl" && bad "CPU-only binary links CUDA libraries" || ok
    (cd "$tmp" && ./train_gpt2 --layers 2 --heads 2 --channels 32 --batch 2 --seq-len 16 --steps 3 \
        --val-every 0 --sample-len 8 >run.log 2>&1) && ok || bad "CPU-only run failed: $(tail -3 "$tmp/run.log")"
    grep -q "using the CPU backend" "$tmp/run.log" && grep -q "^sample" "$tmp/run.log" && ok \
        || bad "CPU-only run did not say its backend or print a sample"
fi

# --- the build choice, as dry runs (make -n -B: the commands it would run) -------------------
# dry NAME ENV... -- MAKE-ARGS...: runs `make -n -B MAKE-ARGS` in the copy under the given
# environment; output in $tmp/NAME.out (stdout) and $tmp/NAME.err, exit status in rc.
dry() {
    local name=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    (cd "$tmp" && env $NO_OUTER -u CUDA_HOME "${envs[@]}" \
        make -n -B BUILD=dry "$@" >"$name.out" 2>"$name.err")
    rc=$?
}
# the dry run compiles train_gpt2.cu as C and runs no nvcc (a note may name one)
gcc_only() { grep -q -- '-x c -c train_gpt2.cu' "$tmp/$1.out" && ! grep -v '^note:' "$tmp/$1.out" | grep -q 'nvcc'; }
dry nvcc_empty -- NVCC= all
[ "$rc" -eq 0 ] && gcc_only nvcc_empty && [ ! -s "$tmp/nvcc_empty.err" ] && ok \
    || bad "make NVCC= is not the gcc-only build (exit $rc): $(head -c 300 "$tmp/nvcc_empty.err")"
grep -q 'libattention' "$tmp/nvcc_empty.out" && bad "the gcc-only build makes libattention" || ok
# an nvcc on PATH with no CUDA installation beside it (a stray wrapper)
mkdir -p "$tmp/fake/bin"
printf '#!/bin/sh\necho "fake nvcc" >&2\nexit 1\n' >"$tmp/fake/bin/nvcc"
chmod +x "$tmp/fake/bin/nvcc"
dry wrapper "PATH=$tmp/fake/bin:$PATH" -- train_gpt2
[ "$rc" -eq 0 ] && gcc_only wrapper && ok || bad "an nvcc without CUDA headers is used (exit $rc): $(grep -m1 nvcc "$tmp/wrapper.out")"
[ "$(grep -c '^note: .*no CUDA installation' "$tmp/wrapper.out")" -eq 1 ] && ok \
    || bad "falling back from an nvcc without CUDA headers gives no one-line note: $(head -c 300 "$tmp/wrapper.out")"
dry wrapper_cpu "PATH=$tmp/fake/bin:$PATH" -- CPU_ONLY=1 train_gpt2
[ "$rc" -eq 0 ] && gcc_only wrapper_cpu && ! grep -q '^note:' "$tmp/wrapper_cpu.out" && ok \
    || bad "CPU_ONLY=1 is not the quiet gcc-only build (exit $rc)"
dry cuda_missing "PATH=$tmp/fake/bin:$PATH" -- CUDA=1 train_gpt2
[ "$rc" -ne 0 ] && [ "$(wc -l <"$tmp/cuda_missing.err")" -eq 1 ] && grep -q 'CUDA=1' "$tmp/cuda_missing.err" && ok \
    || bad "make CUDA=1 without CUDA: exit $rc, not one line: $(head -c 300 "$tmp/cuda_missing.err")"
dry both -- CUDA=1 CPU_ONLY=1 train_gpt2
[ "$rc" -ne 0 ] && [ "$(wc -l <"$tmp/both.err")" -eq 1 ] && ok \
    || bad "make CUDA=1 CPU_ONLY=1: exit $rc, not one line: $(head -c 300 "$tmp/both.err")"

echo "test_cpu_only_build: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
