#!/usr/bin/env bash
# test/gpu/test_train_gpu.sh: ./train_gpt2 on the GPU end to end -- every attention kernel trains,
# the dense mask (a materialised causal bias) gives the causal mask's losses, --resume on the GPU
# continues bit for bit, a GPU checkpoint loads on the CPU and gives the same validation loss, and
# a CPU checkpoint resumes on the GPU and continues the CPU's loss curve; the attention's model
# options (ALiBi, windows, packed documents, GQA) train on the GPU, an ALiBi GPU checkpoint
# evaluates on the CPU, and the bench's masks run there; fp16 with loss scaling: each kernel trains
# in fp16 or refuses it in one line, an fp16 run agrees with bf16's first loss, a scale that
# overflows on purpose skips, halves and recovers, --resume continues an fp16 run bit for bit (the
# scale in the state file), and the bench runs fp16 cells. While no attention kernel runs fp16
# (its unsupported() refuses the dtype) the fp16 checks after the refusal are counted as skipped.
# Where ./train_gpt2 finds no GPU (none visible, or a CPU-only build) its 35 checks are skipped
# with one line. --matmul fp8 trains (or, below compute capability 8.9, is refused in one line).
set -u
cd "$(dirname "$0")/../.."
BIN=./train_gpt2
passed=0
failed=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
skipped=0
HAVE_PY=$(command -v python3 >/dev/null 2>&1 && echo 1)
pycheck() {
    local what=$1; shift
    if [ -z "$HAVE_PY" ]; then skipped=$((skipped + 1)); cat >/dev/null; return 0; fi
    python3 "$@" && ok || bad "$what"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat */*.h */*.c > "$tmp/data.txt"
SMALL=(--layers 2 --heads 2 --channels 64 --batch 4 --seq-len 64 --data "$tmp/data.txt" --sample-len 0 --warmup 2)

# loss column of steps FROM..TO of a run's output
losses() { awk -v a="$2" -v b="$3" '/^step/ { split($2, s, "/"); if (s[1] >= a && s[1] <= b) print $5 }' "$1"; }
# val loss after the last step
final_val() { grep '^val' "$1" | tail -1 | sed -E 's/.*loss ([0-9.]+).*/\1/'; }
# close A B TOL: |A - B| <= TOL |B|, both numbers (an empty or missing value is not close)
close() {
    local num='^-?[0-9]+([.][0-9]*)?([eE][-+]?[0-9]+)?$'
    [[ ${1:-} =~ $num ]] && [[ ${2:-} =~ $num ]] || return 1
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(d <= t * m) }'
}

# No GPU for ./train_gpt2 (none visible, or a build without CUDA): skip everything, one line.
CHECKS=35
if ! "$BIN" --device cuda --steps 0 --val-every 0 "${SMALL[@]}" >"$tmp/probe" 2>"$tmp/probe.err"; then
    if grep -qE 'no CUDA (device|backend)' "$tmp/probe.err"; then
        echo "skipped: $CHECKS checks need a GPU: $(head -n1 "$tmp/probe.err")"
        echo "test_train_gpu: 0 passed, 0 failed, $CHECKS skipped"
        exit 0
    fi
    bad "--device cuda probe: $(head -n2 "$tmp/probe.err")"
fi

# 0. every kernel trains on the GPU; --mask dense equals --mask causal (same function, same data)
for k in naive memeff flash; do
    "$BIN" --device cuda --attn $k --steps 3 --val-every 0 "${SMALL[@]}" >"$tmp/k_$k" 2>&1 \
        && grep -q "attention $k" "$tmp/k_$k" && ok || bad "--attn $k on the GPU: $(tail -2 "$tmp/k_$k")"
done
for k in naive memeff; do
    "$BIN" --device cuda --attn $k --mask dense --steps 3 --val-every 0 "${SMALL[@]}" >"$tmp/d_$k" 2>&1 \
        || bad "--mask dense --attn $k on the GPU: $(tail -2 "$tmp/d_$k")"
    d=($(losses "$tmp/d_$k" 1 3)); c=($(losses "$tmp/k_$k" 1 3))
    [ ${#d[@]} -eq 3 ] && close "${d[2]}" "${c[2]}" 2e-3 && ok || bad "dense vs causal, $k: ${d[*]} vs ${c[*]}"
done

# 1. --resume on the GPU: steps 6-10 after resuming equal the straight run's (naive attention and
#    bf16: every kernel of the step is deterministic)
GPU=(--device cuda --attn naive --steps 10 --val-every 0 "${SMALL[@]}")
"$BIN" "${GPU[@]}" --checkpoint-dir "$tmp/a" >"$tmp/straight" 2>&1 || bad "straight GPU run: $(tail -2 "$tmp/straight")"
"$BIN" "${GPU[@]}" --checkpoint-dir "$tmp/b" --checkpoint-every 5 >/dev/null 2>&1 || bad "first half on the GPU"
rm -f "$tmp/b/model_00000010.bin" "$tmp/b/state_00000010.bin"
"$BIN" "${GPU[@]}" --checkpoint-dir "$tmp/b" --resume >"$tmp/resumed" 2>&1 || bad "resumed GPU run: $(tail -2 "$tmp/resumed")"
if [ -n "$(losses "$tmp/straight" 6 10)" ] && [ "$(losses "$tmp/straight" 6 10)" == "$(losses "$tmp/resumed" 6 10)" ]; then ok
else bad "GPU resume: steps 6-10 differ: $(losses "$tmp/straight" 6 10 | tr '\n' ' ') vs $(losses "$tmp/resumed" 6 10 | tr '\n' ' ')"; fi
cmp -s "$tmp/a/model_00000010.bin" "$tmp/b/model_00000010.bin" && ok || bad "GPU resume: final weights differ"

# 2. a GPU checkpoint on the CPU: same weights, same validation loss (GPU in fp32 without TF32
#    against the fp32 CPU: 1e-4 relative)
"$BIN" --device cuda --precision fp32 --no-tf32 --steps 5 --val-every 0 "${SMALL[@]}" --checkpoint-dir "$tmp/g" >"$tmp/gpu" 2>&1 \
    || bad "fp32 GPU run: $(tail -2 "$tmp/gpu")"
"$BIN" --device cpu --init "$tmp/g/model_00000005.bin" --steps 0 "${SMALL[@]}" >"$tmp/cpu_eval" 2>&1 \
    || bad "CPU --init of a GPU checkpoint: $(tail -2 "$tmp/cpu_eval")"
close "$(final_val "$tmp/cpu_eval")" "$(final_val "$tmp/gpu")" 1e-4 && ok \
    || bad "GPU checkpoint on the CPU: val $(final_val "$tmp/cpu_eval") vs GPU $(final_val "$tmp/gpu")"

# 3. a CPU checkpoint resumed on the GPU continues the CPU's curve: steps 6-8 within 1e-4
"$BIN" --device cpu --steps 8 --val-every 0 "${SMALL[@]}" --checkpoint-dir "$tmp/c" --checkpoint-every 5 >"$tmp/cpu8" 2>&1 \
    || bad "CPU run: $(tail -2 "$tmp/cpu8")"
rm -f "$tmp/c/model_00000008.bin" "$tmp/c/state_00000008.bin"
"$BIN" --device cuda --precision fp32 --no-tf32 --steps 8 --val-every 0 "${SMALL[@]}" --checkpoint-dir "$tmp/c" --resume \
    >"$tmp/gpu_resumed" 2>&1 || bad "GPU resume of a CPU checkpoint: $(tail -2 "$tmp/gpu_resumed")"
cpu_l=($(losses "$tmp/cpu8" 6 8)); gpu_l=($(losses "$tmp/gpu_resumed" 6 8))
if [ ${#cpu_l[@]} -eq 3 ] && [ ${#gpu_l[@]} -eq 3 ]; then
    for i in 0 1 2; do close "${gpu_l[$i]}" "${cpu_l[$i]}" 1e-4 && ok || bad "CPU->GPU step $((i + 6)): ${gpu_l[$i]} vs ${cpu_l[$i]}"; done
else
    bad "CPU->GPU: missing step lines"
fi

# 4. the attention's model options on the GPU (bf16, flash: its mma.sync kernels run them)
"$BIN" --device cuda --attn flash --pos alibi --steps 3 --val-every 0 "${SMALL[@]}" --checkpoint-dir "$tmp/al" >"$tmp/alibi" 2>&1 \
    && grep -q "alibi positions" "$tmp/alibi" && grep -q "attention flash-mma" "$tmp/alibi" && ok \
    || bad "--pos alibi on the GPU: $(tail -2 "$tmp/alibi")"
"$BIN" --device cpu --init "$tmp/al/model_00000003.bin" --steps 0 "${SMALL[@]}" >"$tmp/alibi_cpu" 2>&1 \
    || bad "CPU --init of an ALiBi GPU checkpoint: $(tail -2 "$tmp/alibi_cpu")"
close "$(final_val "$tmp/alibi_cpu")" "$(final_val "$tmp/alibi")" 2e-2 && ok \
    || bad "ALiBi GPU checkpoint on the CPU (fp32 vs the GPU's bf16): val $(final_val "$tmp/alibi_cpu") vs $(final_val "$tmp/alibi")"
"$BIN" --device cuda --attn flash --attn-window 16 --steps 3 --val-every 0 "${SMALL[@]}" >"$tmp/win" 2>&1 \
    && grep -q "sliding window of 16 keys" "$tmp/win" && ok || bad "--attn-window on the GPU: $(tail -2 "$tmp/win")"
"$BIN" --device cuda --attn flash --doc-sep 10 --doc-positions --steps 3 --val-every 0 "${SMALL[@]}" --log "$tmp/docs.jsonl" \
    >"$tmp/docs" 2>&1 && grep -q '"doc_sep":"10","doc_positions":true' "$tmp/docs.jsonl" && ok \
    || bad "--doc-sep --doc-positions on the GPU: $(tail -2 "$tmp/docs")"
# the same documents on the CPU (fp32) and the GPU (bf16): the first step's loss agrees to bf16
"$BIN" --device cpu --doc-sep 10 --doc-positions --steps 1 --val-every 0 "${SMALL[@]}" >"$tmp/docs_cpu" 2>&1 \
    || bad "--doc-sep on the CPU: $(tail -2 "$tmp/docs_cpu")"
close "$(losses "$tmp/docs" 1 1)" "$(losses "$tmp/docs_cpu" 1 1)" 1e-2 && ok \
    || bad "documents: GPU step 1 $(losses "$tmp/docs" 1 1) vs CPU $(losses "$tmp/docs_cpu" 1 1)"
# GQA: trains where a GPU kernel runs it, else stops in one line naming the kernel's reason
"$BIN" --device cuda --attn flash --heads 2 --kv-heads 1 --steps 2 --val-every 0 "${SMALL[@]}" >"$tmp/gqa" 2>"$tmp/gqa.err"
rc=$?
if [ "$rc" -eq 0 ]; then grep -q "2 heads (1 K/V heads)" "$tmp/gqa" && ok || bad "--kv-heads 1 on the GPU: no header"
elif [ "$rc" -eq 2 ] && [ "$(wc -l <"$tmp/gqa.err")" -eq 1 ] && grep -q "attention kernel 'flash' cannot run this configuration: " "$tmp/gqa.err"; then ok
else bad "--kv-heads 1 on the GPU: exit $rc: $(head -3 "$tmp/gqa.err")"; fi
# the bench's masks on the GPU: every kernel runs each in bf16; flash lists its reason in fp32
"$BIN" --bench custom --device cuda --data "$tmp/data.txt" --bench-models l2-c64-h2 --bench-seq-lens 64 \
    --bench-masks causal,window=16,docs,alibi --doc-sep 10 --bench-attn naive,memeff,flash --bench-steps 2 \
    --bench-precisions bf16,fp32 --bench-warmup 1 --bench-out "$tmp/bm" >"$tmp/bm.out" 2>&1 && ok \
    || bad "bench masks on the GPU: $(tail -2 "$tmp/bm.out")"
for k in naive memeff flash; do
    for m in causal window=16 docs alibi; do
        grep -q ",64,bf16,$m,$k,ok," "$tmp/bm/results.csv" && ok || bad "bench: $k did not run $m: $(grep ",bf16,$m,$k," "$tmp/bm/results.csv")"
    done
done
grep -q ",64,fp32,window=16,flash,unsupported," "$tmp/bm/results.csv" && ok \
    || bad "bench: flash's fp32 window cell is not listed as unsupported: $(grep ",fp32,window=16,flash," "$tmp/bm/results.csv")"

# 5. fp16 with loss scaling. Each kernel trains in fp16 (the default dynamic scale) or refuses it
#    with the trainer's one line (its unsupported(): the attention side of fp16 is its own work).
for k in naive memeff flash; do
    "$BIN" --device cuda --attn $k --precision fp16 --steps 3 --val-every 0 "${SMALL[@]}" >"$tmp/h_$k" 2>"$tmp/h_$k.err"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        grep -q "fp16, attention $k" "$tmp/h_$k" && grep -q "^loss scale: dynamic, 65536 at first" "$tmp/h_$k" && ok \
            || bad "--precision fp16 --attn $k: header $(grep -E '^(train|loss scale)' "$tmp/h_$k")"
    elif [ "$rc" -eq 2 ] && [ "$(wc -l <"$tmp/h_$k.err")" -eq 1 ] \
        && grep -q "attention kernel '$k' cannot run this configuration: " "$tmp/h_$k.err"; then ok
    else bad "--precision fp16 --attn $k: exit $rc: $(head -3 "$tmp/h_$k.err")"; fi
done
FP16_CHECKS=7
if ! grep -q "fp16, attention naive" "$tmp/h_naive"; then
    skipped=$((skipped + FP16_CHECKS))
    echo "skipped: $FP16_CHECKS fp16 checks (naive refuses fp16: $(head -c 200 "$tmp/h_naive.err"))"
else
    # the first loss (the same weights and data) agrees with bf16's to 16-bit rounding
    "$BIN" --device cuda --attn naive --precision bf16 --steps 1 --val-every 0 "${SMALL[@]}" >"$tmp/h_bf" 2>&1 \
        || bad "bf16 run: $(tail -2 "$tmp/h_bf")"
    close "$(losses "$tmp/h_naive" 1 1)" "$(losses "$tmp/h_bf" 1 1)" 1e-2 && ok \
        || bad "fp16 step 1 $(losses "$tmp/h_naive" 1 1) vs bf16 $(losses "$tmp/h_bf" 1 1)"
    # a scale that overflows fp16 on purpose (2^32): skipped steps, halved each time, then a falling loss
    "$BIN" --device cuda --attn naive --precision fp16 --loss-scale-init 4294967296 --loss-scale-window 4 --steps 60 \
        --lr 3e-3 --val-every 0 "${SMALL[@]}" --log "$tmp/h_over.jsonl" >"$tmp/h_over" 2>&1 && ok \
        || bad "overflowing fp16 run: $(tail -2 "$tmp/h_over")"
    grep -q '| skipped' "$tmp/h_over" && ok || bad "a loss scale of 2^32 skipped no fp16 step"
    pycheck "the overflowing fp16 run did not halve and recover" - "$tmp/h_over.jsonl" <<'EOF'
import json, math, sys
s = [json.loads(l) for l in open(sys.argv[1]) if '"type":"step"' in l]
assert len(s) == 60 and s[0]["skipped"] and all(math.isfinite(r["loss"]) for r in s)
for a, b in zip(s, s[1:]):
    if a["skipped"]: assert math.isclose(b["loss_scale"], a["loss_scale"] / 2, rel_tol=1e-6), (a, b)
clean = [r for r in s if not r["skipped"]]
assert len(clean) >= 20 and all(math.isfinite(r["norm"]) for r in clean), len(clean)
assert sum(r["loss"] for r in s[-5:]) / 5 < sum(r["loss"] for r in s[:5]) / 5 - 0.3
EOF
    # --resume continues an fp16 run bit for bit (the scale, its clean-step count and the skips are
    # in the state file; a window of 3 makes the scale change within the run)
    H=(--device cuda --attn naive --precision fp16 --loss-scale-window 3 --steps 10 --val-every 0 "${SMALL[@]}")
    "$BIN" "${H[@]}" --checkpoint-dir "$tmp/ha" >"$tmp/h_straight" 2>&1 || bad "straight fp16 run: $(tail -2 "$tmp/h_straight")"
    "$BIN" "${H[@]}" --checkpoint-dir "$tmp/hb" --checkpoint-every 5 >/dev/null 2>&1 || bad "first half in fp16"
    rm -f "$tmp/hb/model_00000010.bin" "$tmp/hb/state_00000010.bin"
    "$BIN" "${H[@]}" --checkpoint-dir "$tmp/hb" --resume >"$tmp/h_resumed" 2>&1 || bad "resumed fp16 run: $(tail -2 "$tmp/h_resumed")"
    # steps 6-10: loss, norm and scale columns
    strip() { grep -E '^step +([6-9]|10)/' "$1" | awk -F'|' '{ o = $2 $5; for (i = 6; i <= NF; i++) if ($i ~ /scale|skipped/) o = o $i; print o }'; }
    [ -n "$(strip "$tmp/h_straight")" ] && [ "$(strip "$tmp/h_straight")" == "$(strip "$tmp/h_resumed")" ] && ok \
        || bad "fp16 resume: steps 6-10 differ: $(diff <(strip "$tmp/h_straight") <(strip "$tmp/h_resumed") | head -4)"
    cmp -s "$tmp/ha/model_00000010.bin" "$tmp/hb/model_00000010.bin" && ok || bad "fp16 resume: final weights differ"
    # the bench's fp16 cells
    "$BIN" --bench custom --device cuda --data "$tmp/data.txt" --bench-models l2-c64-h2 --bench-seq-lens 64 \
        --bench-attn naive --bench-steps 2 --bench-precisions fp16,bf16 --bench-warmup 1 --bench-out "$tmp/bh" \
        >"$tmp/bh.out" 2>&1 && grep -q ",64,fp16,causal,naive,ok," "$tmp/bh/results.csv" && ok \
        || bad "bench fp16 cell: $(tail -2 "$tmp/bh.out"; grep ',fp16,' "$tmp/bh/results.csv")"
fi

# 9. --matmul fp8 end to end (compute capability 8.9+; below it, the one-line refusal): the run
#    header names it and step 20's loss is within 5% of the same bf16 run's
F8=(--device cuda --attn naive --steps 20 --val-every 0 "${SMALL[@]}")
if "$BIN" "${F8[@]}" --matmul fp8 >"$tmp/f8" 2>"$tmp/f8.err"; then
    grep -q "matmul fp8" "$tmp/f8" && ok || bad "--matmul fp8: the run header does not say so"
    "$BIN" "${F8[@]}" >"$tmp/f8_bf16" 2>&1 || bad "bf16 run beside fp8: $(tail -2 "$tmp/f8_bf16")"
    a=$(losses "$tmp/f8" 20 20); b=$(losses "$tmp/f8_bf16" 20 20)
    close "$a" "$b" 0.05 && ok || bad "--matmul fp8: step 20 loss '$a' vs bf16's '$b'"
elif grep -q "compute capability" "$tmp/f8.err" && [ "$(wc -l <"$tmp/f8.err")" -eq 1 ]; then
    ok
    echo "skipped: 1 --matmul fp8 check needs compute capability 8.9+: $(cat "$tmp/f8.err")"
    skipped=$((skipped + 1))
else
    bad "--matmul fp8 run: $(tail -2 "$tmp/f8.err")"
fi

echo "test_train_gpu: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
