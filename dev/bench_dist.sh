#!/usr/bin/env bash
# dev/bench_dist.sh: data-parallel throughput on the GPUs of one node.
#   GPT-2 124M (vocab 50257), T = 1024, bf16, B = 16 and 64 per GPU ($BATCHES): tokens/sec on 1, 2 and 4 GPUs
#   (those that are visible) and the scaling efficiency against 1 GPU x N;
#   GPT-2 large on 4 GPUs, B = 8 per GPU, with ZeRO-1 and without: tokens/sec and memory per GPU.
# Data: the project's sources repeated to a few MB of bytes (throughput does not depend on the
# token values; the embedded corpus's validation split is too short for 4 x 16 windows).
# Usage: dev/bench_dist.sh [OUT_DIR]  (default bench_out/dist); STEPS=N to change the 30 steps.
# Every run's summary line (after 3 warm-up steps) is collected into OUT_DIR/results.md.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-./train_gpt2}
OUT=${1:-bench_out/dist}
STEPS=${STEPS:-30}
export NCCL_NVLS_ENABLE=0
mkdir -p "$OUT"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
[ "${ngpu:-0}" -ge 1 ] || { echo "bench_dist: no GPU visible"; exit 2; }

data="$OUT/data.txt"
for _ in $(seq 12); do cat */*.h */*.c; done >"$data"
results="$OUT/results.md"
{
    echo "# Data-parallel benchmark ($(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1), $ngpu visible)"
    echo
    echo '| model | GPUs | B/GPU | ZeRO | tok/s | ms/step | per-GPU memory (GiB) | scaling efficiency |'
    echo '| --- | --- | --- | --- | --- | --- | --- | --- |'
} >"$results"

declare -A base
# one NAME MODEL GPUS B ZERO [OPTION...]: a run (more train_gpt2 options last); appends its row
one() {
    local name=$1 model=$2 gpus=$3 B=$4 zero=$5; shift 5
    local extra=("$@")
    local args=(--data "$data" --val-data "$data" --model "$model" --vocab 50257 --seq-len 1024 --batch "$B" --precision bf16 --attn flash
                --steps "$STEPS" --warmup 5 --val-every 0 --val-batches 1 --sample-len 0 --zero "$zero"
                --log "$OUT/$name.jsonl" "${extra[@]}")
    local cmd=("$BIN" "${args[@]}")
    [ "$gpus" -gt 1 ] && cmd=("$BIN" --gpus "$gpus" "${args[@]}")
    echo "== $name: ${cmd[*]}"
    if [ "$gpus" -eq 1 ]; then
        env CUDA_VISIBLE_DEVICES=0 timeout 300 "${cmd[@]}" >"$OUT/$name.out" 2>&1
    else
        timeout 300 "${cmd[@]}" >"$OUT/$name.out" 2>&1
    fi
    local rc=$?
    grep -E '^(step +(1|2|10|'"$STEPS"')/|summary|dist|train)' "$OUT/$name.out"
    if [ $rc -ne 0 ]; then
        echo "   failed ($rc): $(tail -n 2 "$OUT/$name.out")"
        echo "| $model | $gpus | $B | $zero | failed | | | |" >>"$results"
        return
    fi
    python3 - "$OUT/$name.jsonl" "$model" "$gpus" "$B" "$zero${extra[*]:+ (${extra[*]})}" "${base[$model-$B]:-}" >>"$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = [r for r in rows if r.get("type") == "summary"][-1]
mem = max(r.get("device_used_bytes", 0) for r in rows if r.get("type") == "step") / 2**30
model, gpus, B, zero, base = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
eff = "%.1f%%" % (100 * s["tok_per_s"] / (gpus * float(base))) if base and gpus > 1 else "-"
print("| %s | %d | %s | %s | %.0f | %.1f | %.1f | %s |" % (model, gpus, B, zero, s["tok_per_s"], s["ms_per_step"], mem, eff))
EOF
    if [ "$gpus" -eq 1 ]; then
        base[$model-$B]=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "summary" in l][-1]["tok_per_s"])' "$OUT/$name.jsonl")
    fi
}

for B in ${BATCHES:-16 64}; do
    one gpt2_1gpu_B$B gpt2 1 $B 0
    for g in 2 4; do
        [ "$ngpu" -ge $g ] || continue
        one gpt2_${g}gpu_B$B gpt2 $g $B 0
        one gpt2_${g}gpu_zero1_B$B gpt2 $g $B 1
        one gpt2_${g}gpu_zero1_buckets_B$B gpt2 $g $B 1 --zero-overlap 1
        one gpt2_${g}gpu_nooverlap_B$B gpt2 $g $B 0 --dp-overlap 0
    done
done
if [ "$ngpu" -ge 4 ]; then
    one large_1gpu gpt2-large 1 8 0
    one large_4gpu_zero1 gpt2-large 4 8 1
    one large_4gpu gpt2-large 4 8 0
fi
echo
cat "$results"
