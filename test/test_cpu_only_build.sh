#!/usr/bin/env bash
# test/test_cpu_only_build.sh: the build without nvcc -- gcc alone makes a CPU-only ./train_gpt2
# (train_gpt2.cu compiled as C) that trains, and says which backend it uses.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a copy of the tree as git has it (tracked and untracked-not-ignored files), built from scratch
git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$tmp"
(cd "$tmp" && make -s -j2 NVCC= train_gpt2 >build.log 2>&1) && ok || bad "CPU-only build failed: $(tail -5 "$tmp/build.log")"
grep -qE "warning|nvcc" "$tmp/build.log" && bad "CPU-only build printed warnings or used nvcc" || ok
if [ -x "$tmp/train_gpt2" ]; then
    ldd "$tmp/train_gpt2" | grep -qE "cuda|cublas|nccl" && bad "CPU-only binary links CUDA libraries" || ok
    (cd "$tmp" && ./train_gpt2 --layers 2 --heads 2 --channels 32 --batch 2 --seq-len 16 --steps 3 \
        --val-every 0 --sample-len 8 >run.log 2>&1) && ok || bad "CPU-only run failed: $(tail -3 "$tmp/run.log")"
    grep -q "using the CPU backend" "$tmp/run.log" && grep -q "^sample" "$tmp/run.log" && ok \
        || bad "CPU-only run did not say its backend or print a sample"
fi
echo "test_cpu_only_build: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
