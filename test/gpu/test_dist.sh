#!/usr/bin/env bash
# test/gpu/test_dist.sh: data-parallel training on 2 GPUs against 1 GPU (needs >= 2 GPUs; with
# fewer it reports 0 passed with a note).
#   1. fp32 (TF32 off): 2 GPUs x B=4 reproduce 1 GPU x B=4 x grad-accum 2 -- the same windows
#      per step, per-micro-batch gradients scaled by the same power of two; step 1 equal, later
#      steps within 1e-5 (only the order of gradient sums differs).
#   2. bf16: step 1 equal, then within bf16 noise (gradients summed in bf16, the default);
#      with --grad-comm fp32 as the fp32 case. Buckets of 1 layer (--dp-bucket-layers 1) and the
#      flat all-reduce (--dp-overlap 0) sum the same gradients as the default buckets of 3.
#   3. ZeRO-1 gives the losses of plain data parallel (fp32 and bf16), with its gradients reduced
#      per bucket during backward and its weights gathered per layer, with the bucket reduce
#      alone, and with the single reduce-scatter + all-gather (the default); --zero-overlap and
#      --zero-gather-overlap are set explicitly, so every variant is checked whatever the defaults.
#   4. A 2-GPU ZeRO-1 checkpoint resumes on 1 GPU (grad-accum 2) and continues the 1-GPU curve.
#   5. Failure: rank 1 killed -> rank 0 (torchrun-style launch) stops within --dist-timeout with a
#      message; a worker of --gpus 2 killed -> the launcher stops the other and fails fast.
set -u
cd "$(dirname "$0")/../.."
BIN=${BIN:-./train_gpt2}
export NCCL_NVLS_ENABLE=0
passed=0
failed=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [ "${ngpu:-0}" -lt 2 ]; then
    echo "note: test_dist_gpu needs 2 GPUs, ${ngpu:-0} visible: nothing run"
    echo "test_dist_gpu: 0 passed, 0 failed"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat */*.h */*.c > "$tmp/data.txt"
COMMON=(--data "$tmp/data.txt" --model d4 --seq-len 64 --steps 6 --lr 1e-3 --warmup 2 --val-every 0
        --val-batches 4 --sample-len 0 --attn naive)

run() { # NAME ARGS...: runs, logs to $tmp/NAME.jsonl; counts a failure when it does not finish
    local name=$1; shift
    if timeout 240 "$@" --log "$tmp/$name.jsonl" >"$tmp/$name.out" 2>"$tmp/$name.err"; then return 0; fi
    bad "$name failed: $(tail -n 3 "$tmp/$name.err")"
    return 1
}

# compare NAME A B FIRST LAST TOL [STEP1_TOL]: step losses FIRST..LAST of two logs within TOL
compare() {
    python3 - "$tmp/$2.jsonl" "$tmp/$3.jsonl" "$4" "$5" "$6" "${7:-$6}" <<'EOF'
import json, sys
def steps(p):
    return {r["step"]: r for r in map(json.loads, open(p)) if r.get("type") == "step"}
def val(p):
    v = [r["loss"] for r in map(json.loads, open(p)) if r.get("type") == "val"]
    return v[-1] if v else None
a, b = steps(sys.argv[1]), steps(sys.argv[2])
first, last, tol, tol1 = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
worst, ok = 0.0, True
for s in range(first, last + 1):
    if s not in a or s not in b:
        print("  missing step", s); ok = False; continue
    d = abs(a[s]["loss"] - b[s]["loss"])
    worst = max(worst, d)
    if d > (tol1 if s == first else tol): ok = False
    print("  step %d: loss %.6f vs %.6f (diff %.1e), norm %.6f vs %.6f" % (s, a[s]["loss"], b[s]["loss"], d, a[s]["norm"], b[s]["norm"]))
va, vb = val(sys.argv[1]), val(sys.argv[2])
if va is not None and vb is not None and last == max(a):
    print("  final val loss %.6f vs %.6f" % (va, vb))
print("  largest loss difference %.2e (tolerance %.0e)" % (worst, tol))
sys.exit(0 if ok else 1)
EOF
}

check() { # NAME A B FIRST LAST TOL [STEP1_TOL]
    local name=$1; shift
    echo "$name:"
    if compare "$name" "$@"; then ok; else bad "$name"; fi
}

# --- 1, 2: one GPU with accumulation vs two GPUs ---------------------------------------------
FP32=(--precision fp32 --no-tf32)
run one_fp32 env CUDA_VISIBLE_DEVICES=0 "$BIN" --device cuda "${FP32[@]}" "${COMMON[@]}" --batch 4 --grad-accum 2
run two_fp32 "$BIN" --gpus 2 "${FP32[@]}" "${COMMON[@]}" --batch 4
check "fp32: 1 GPU x accum 2 vs 2 GPUs" one_fp32 two_fp32 1 6 1e-5 1e-6
grep -q "2 GPUs" "$tmp/two_fp32.out" && ok || bad "the step line says 2 GPUs"
[ "$(grep -c '^step' "$tmp/two_fp32.out")" -eq 6 ] && ok || bad "rank 0 alone prints step lines"

run one_bf16 env CUDA_VISIBLE_DEVICES=0 "$BIN" --device cuda --precision bf16 "${COMMON[@]}" --batch 4 --grad-accum 2
run two_bf16 "$BIN" --gpus 2 --precision bf16 "${COMMON[@]}" --batch 4
check "bf16 (gradients summed in bf16): 1 GPU x accum 2 vs 2 GPUs" one_bf16 two_bf16 1 6 2e-2 1e-6
run two_bf16_f32comm "$BIN" --gpus 2 --precision bf16 --grad-comm fp32 "${COMMON[@]}" --batch 4
check "bf16, --grad-comm fp32: 1 GPU x accum 2 vs 2 GPUs" one_bf16 two_bf16_f32comm 1 6 1e-5 1e-6
# buckets of 1 layer and of 3 (the default; d4: layers 3-1, then 0) and the flat all-reduce sum
# the same gradients
run two_fp32_b1 "$BIN" --gpus 2 --dp-bucket-layers 1 "${FP32[@]}" "${COMMON[@]}" --batch 4
check "fp32: buckets of 1 layer vs 3" two_fp32 two_fp32_b1 1 6 1e-5 1e-6
run two_bf16_flat "$BIN" --gpus 2 --dp-overlap 0 --precision bf16 "${COMMON[@]}" --batch 4
check "bf16 comm: one flat all-reduce vs buckets of 3 layers" two_bf16 two_bf16_flat 1 6 1e-5 1e-6

# --- 3: ZeRO-1 -------------------------------------------------------------------------------
ZNEW=(--zero-overlap 1 --zero-gather-overlap 1)
ZRS=(--zero-overlap 1 --zero-gather-overlap 0)
ZOLD=(--zero-overlap 0 --zero-gather-overlap 0)
run zero_fp32 "$BIN" --gpus 2 --zero 1 "${ZNEW[@]}" "${FP32[@]}" "${COMMON[@]}" --batch 4
check "fp32: ZeRO-1 (bucket reduce + per-layer gather) vs plain data parallel" two_fp32 zero_fp32 1 6 1e-5 1e-6
run zero_fp32_rs "$BIN" --gpus 2 --zero 1 "${ZRS[@]}" "${FP32[@]}" "${COMMON[@]}" --batch 4
check "fp32: ZeRO-1 (bucket reduce, one all-gather) vs plain data parallel" two_fp32 zero_fp32_rs 1 6 1e-5 1e-6
run zero_fp32_old "$BIN" --gpus 2 --zero 1 "${ZOLD[@]}" "${FP32[@]}" "${COMMON[@]}" --batch 4
check "fp32: ZeRO-1 (one reduce-scatter, one all-gather) vs plain data parallel" two_fp32 zero_fp32_old 1 6 1e-5 1e-6
run zero_bf16 "$BIN" --gpus 2 --zero 1 "${ZNEW[@]}" --precision bf16 "${COMMON[@]}" --batch 4
check "bf16: ZeRO-1 (bucket reduce + per-layer gather) vs plain data parallel" two_bf16 zero_bf16 1 6 2e-2 1e-6
run zero_bf16_old "$BIN" --gpus 2 --zero 1 "${ZOLD[@]}" --precision bf16 "${COMMON[@]}" --batch 4
check "bf16: ZeRO-1 bucket reduce + per-layer gather vs the old single collectives (same bf16 sums)" \
    zero_bf16_old zero_bf16 1 6 1e-5 1e-6

# --- 4: a 2-GPU ZeRO-1 checkpoint resumed on 1 GPU -------------------------------------------
ck="$tmp/ck"
run leg1 "$BIN" --gpus 2 --zero 1 "${FP32[@]}" "${COMMON[@]}" --batch 4 --checkpoint-dir "$ck" --checkpoint-every 3
rm -f "$ck"/model_00000006.bin "$ck"/state_00000006.bin
run leg2 env CUDA_VISIBLE_DEVICES=0 "$BIN" --device cuda "${FP32[@]}" "${COMMON[@]}" --batch 4 --grad-accum 2 \
    --checkpoint-dir "$ck" --resume
grep -q "steps from 3" "$tmp/leg2.out" && ok || bad "the resumed run starts at step 3: $(grep '^train' "$tmp/leg2.out")"
check "resume of a 2-GPU ZeRO-1 checkpoint on 1 GPU" one_fp32 leg2 4 6 1e-4

# --- 5: failures ------------------------------------------------------------------------------
LONG=(--data "$tmp/data.txt" --model d4 --seq-len 64 --batch 4 --steps 1000000 --val-every 0 --sample-len 0)
wait_for_step() { # LOG: until a step line is logged (60 s at most)
    for _ in $(seq 600); do grep -q '"step"' "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
port=$((29600 + RANDOM % 1000))
env RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_PORT=$port "$BIN" "${LONG[@]}" --dist-timeout 10 \
    --log "$tmp/kill0.jsonl" >"$tmp/kill0.out" 2>"$tmp/kill0.err" &
r0=$!
env RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_PORT=$port "$BIN" "${LONG[@]}" --dist-timeout 10 \
    >/dev/null 2>"$tmp/kill1.err" &
r1=$!
if wait_for_step "$tmp/kill0.jsonl"; then
    kill -9 $r1
    t0=$(date +%s)
    for _ in $(seq 450); do kill -0 $r0 2>/dev/null || break; sleep 0.1; done
    took=$(( $(date +%s) - t0 ))
    if kill -0 $r0 2>/dev/null; then
        bad "rank 0 still runs ${took}s after rank 1 was killed"; kill -9 $r0
    else
        wait $r0; rc=$?
        echo "killed rank 1: rank 0 exited $rc after ${took}s: $(tail -n 1 "$tmp/kill0.err")"
        [ $rc -ne 0 ] && grep -q "rank 0 of 2" "$tmp/kill0.err" && ok || bad "rank 0's exit $rc / message"
    fi
else
    bad "the torchrun-style pair never logged a step: $(tail -n 2 "$tmp/kill0.err" "$tmp/kill1.err")"
    kill -9 $r0 $r1 2>/dev/null
fi
wait 2>/dev/null

"$BIN" --gpus 2 "${LONG[@]}" --dist-timeout 10 --log "$tmp/kill2.jsonl" >"$tmp/kill2.out" 2>"$tmp/kill2.err" &
launcher=$!
if wait_for_step "$tmp/kill2.jsonl"; then
    victim=$(pgrep -P $launcher | tail -n 1)
    kill -9 "$victim"
    t0=$(date +%s)
    for _ in $(seq 300); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
    took=$(( $(date +%s) - t0 ))
    if kill -0 $launcher 2>/dev/null; then
        bad "--gpus 2 still runs ${took}s after a worker was killed"; kill -9 $(pgrep -P $launcher) $launcher
    else
        wait $launcher; rc=$?
        echo "killed a worker of --gpus 2: the launcher exited $rc after ${took}s: $(grep -m1 'worker' "$tmp/kill2.err")"
        [ $rc -ne 0 ] && [ -z "$(pgrep -P $launcher)" ] && ok || bad "launcher exit $rc"
    fi
else
    bad "--gpus 2 never logged a step: $(tail -n 2 "$tmp/kill2.err")"
    kill -9 $launcher 2>/dev/null
fi

echo "test_dist_gpu: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
