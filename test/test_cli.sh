#!/usr/bin/env bash
# test/test_cli.sh: ./train_gpt2 end to end on the CPU -- every bad input gives one line on stderr
# and exit code 2; a short run lowers the validation loss and prints a sample; --resume continues
# bit for bit; checkpoints are llm.c model files that --init reads back; --log writes JSON lines.
set -u
cd "$(dirname "$0")/.."
BIN=./train_gpt2
passed=0
failed=0
ok()   { passed=$((passed + 1)); }
bad()  { failed=$((failed + 1)); echo "FAIL: $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Our own data: the project's headers, a few hundred KB of text.
cat */*.h */*.c > "$tmp/data.txt"
TINY=(--device cpu --layers 2 --heads 2 --channels 32 --batch 2 --seq-len 16 --sample-len 0)

# expect_usage_error NAME ARGS...: exit code 2, exactly one line on stderr, no step lines.
expect_usage_error() {
    local name=$1; shift
    "$BIN" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    local lines
    lines=$(wc -l <"$tmp/err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && ! grep -q '^step' "$tmp/out"; then
        ok
    else
        bad "$name: exit $rc, $lines stderr lines: $(head -c 300 "$tmp/err")"
    fi
}

# --- bad input ------------------------------------------------------------------------------
expect_usage_error "unknown option" --frobnicate
expect_usage_error "unknown short option" -Z
expect_usage_error "missing value" --batch
expect_usage_error "non-numeric" --batch abc
expect_usage_error "trailing junk" --lr 1e-3x
expect_usage_error "batch zero" --batch 0
expect_usage_error "negative lr" --lr -1
expect_usage_error "huge seq-len" --seq-len 99999999999
expect_usage_error "positional" "${TINY[@]}" extra
expect_usage_error "heads not dividing channels" "${TINY[@]}" --heads 3 --data "$tmp/data.txt"
expect_usage_error "seq-len over max" "${TINY[@]}" --max-seq-len 8 --data "$tmp/data.txt"
expect_usage_error "unknown preset" --model gpt5 --data "$tmp/data.txt"
expect_usage_error "unknown attention" "${TINY[@]}" --attn fastest --data "$tmp/data.txt"
expect_usage_error "unknown mask" "${TINY[@]}" --mask diagonal --data "$tmp/data.txt"
expect_usage_error "unknown precision" "${TINY[@]}" --precision fp8 --data "$tmp/data.txt"
expect_usage_error "cpu bf16" "${TINY[@]}" --precision bf16 --data "$tmp/data.txt"
expect_usage_error "unknown device" --device tpu --data "$tmp/data.txt"
expect_usage_error "missing data" "${TINY[@]}" --data "$tmp/nope.txt"
: >"$tmp/empty.bin"
expect_usage_error "empty data" "${TINY[@]}" --data "$tmp/empty.bin"
expect_usage_error "directory as data" "${TINY[@]}" --data "$tmp"
head -c 20 "$tmp/data.txt" >"$tmp/small.txt"
expect_usage_error "too-small data" "${TINY[@]}" --data "$tmp/small.txt"
# an llm.c token file whose header promises more tokens than it holds
python3 - "$tmp/trunc.bin" <<'EOF'
import struct, sys
h = [0] * 256; h[0] = 20240520; h[1] = 1; h[2] = 1000
open(sys.argv[1], "wb").write(struct.pack("<256i", *h) + struct.pack("<10H", *range(10)))
EOF
expect_usage_error "truncated token file" "${TINY[@]}" --data "$tmp/trunc.bin"
expect_usage_error "missing model file" "${TINY[@]}" --data "$tmp/data.txt" --init "$tmp/none.bin"
head -c 4096 /dev/urandom >"$tmp/garbage.bin"
expect_usage_error "model wrong magic" "${TINY[@]}" --data "$tmp/data.txt" --init "$tmp/garbage.bin"
expect_usage_error "unwritable checkpoint dir" "${TINY[@]}" --data "$tmp/data.txt" --checkpoint-dir /proc/no/such
expect_usage_error "checkpoint dir is a file" "${TINY[@]}" --data "$tmp/data.txt" --checkpoint-dir "$tmp/data.txt"
expect_usage_error "unwritable log" "${TINY[@]}" --data "$tmp/data.txt" --log /proc/no/such/log.json
expect_usage_error "resume without dir" "${TINY[@]}" --data "$tmp/data.txt" --resume

# --- help and version -----------------------------------------------------------------------
"$BIN" --help >"$tmp/help" 2>&1 && ok || bad "--help exit code"
for opt in data val-data init model layers heads channels vocab max-seq-len batch seq-len \
           grad-accum steps lr warmup weight-decay grad-clip seed attn precision device \
           val-every sample-every sample-len checkpoint-dir checkpoint-every resume log mask; do
    grep -q -- "--$opt" "$tmp/help" && ok || bad "--help does not list --$opt"
done
grep -q "default" "$tmp/help" && ok || bad "--help shows no defaults"
# README lists every option --help knows
missing=""
for opt in $(grep -oE -- '--[a-z0-9-]+' "$tmp/help" | sort -u); do
    grep -q -- "$opt" README.md || missing="$missing $opt"
done
[ -z "$missing" ] && ok || bad "README does not list:$missing"
"$BIN" --version | grep -q "train_gpt2 " && ok || bad "--version"

# --- a short run learns --------------------------------------------------------------------
"$BIN" "${TINY[@]}" --data "$tmp/data.txt" --steps 60 --lr 3e-3 --warmup 5 --val-every 60 \
    --sample-len 40 --log "$tmp/log.jsonl" >"$tmp/run" 2>&1
rc=$?
[ "$rc" -eq 0 ] && ok || bad "training run exited $rc: $(tail -3 "$tmp/run")"
first=$(grep '^val' "$tmp/run" | head -1 | sed -E 's/.*loss ([0-9.]+).*/\1/')
last=$(grep '^val' "$tmp/run" | tail -1 | sed -E 's/.*loss ([0-9.]+).*/\1/')
python3 -c "import sys; sys.exit(0 if float('$last') < float('$first') - 0.5 else 1)" 2>/dev/null \
    && ok || bad "validation loss did not fall by 0.5 nat: $first -> $last"
grep -q '^sample' "$tmp/run" && ok || bad "no sample printed"
python3 - "$tmp/log.jsonl" <<'EOF' && ok || bad "log is not JSON lines with 60 steps"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if r["type"] == "step"]
assert len(steps) == 60 and all("loss" in r and "tok_per_s" in r for r in steps)
assert any(r["type"] == "val" for r in rows)
EOF

# --- resume is bitwise identical -------------------------------------------------------------
COMMON=("${TINY[@]}" --data "$tmp/data.txt" --steps 10 --warmup 2 --val-every 0 --shuffle)
"$BIN" "${COMMON[@]}" --checkpoint-dir "$tmp/a" >"$tmp/straight" 2>&1 || bad "straight run failed"
"$BIN" "${COMMON[@]}" --checkpoint-dir "$tmp/b" --checkpoint-every 5 >/dev/null 2>&1 || bad "first half failed"
rm -f "$tmp/b/model_00000010.bin" "$tmp/b/state_00000010.bin"
"$BIN" "${COMMON[@]}" --checkpoint-dir "$tmp/b" --resume >"$tmp/resumed" 2>&1 || bad "resumed run failed"
losses() { grep -E '^step +([6-9]|10)/' "$1" | sed -E 's/\| [0-9.]+ ms.*//'; }
if [ -n "$(losses "$tmp/straight")" ] && [ "$(losses "$tmp/straight")" == "$(losses "$tmp/resumed")" ]; then
    ok
else
    bad "resumed steps 6-10 differ from the straight run"
fi
cmp -s "$tmp/a/model_00000010.bin" "$tmp/b/model_00000010.bin" && ok || bad "final weights differ after resume"

# --- checkpoints are llm.c model files that --init reads ----------------------------------------
"$BIN" "${TINY[@]}" --data "$tmp/data.txt" --init "$tmp/a/model_00000010.bin" --steps 0 >"$tmp/init" 2>&1 \
    && ok || bad "--init of a checkpoint failed: $(tail -2 "$tmp/init")"
expect_usage_error "init with conflicting shape" "${TINY[@]}" --data "$tmp/data.txt" \
    --init "$tmp/a/model_00000010.bin" --layers 3
ls "$tmp/a" | grep -q '\.tmp$' && bad "temporary files left in the checkpoint dir" || ok

# --- every attention kernel trains -------------------------------------------------------------
for k in naive memeff flash; do
    "$BIN" "${TINY[@]}" --data "$tmp/data.txt" --steps 3 --attn $k --val-every 0 >"$tmp/k" 2>&1 \
        && grep -q "attention $k" "$tmp/k" && ok || bad "--attn $k: $(tail -2 "$tmp/k")"
done
"$BIN" "${TINY[@]}" --data "$tmp/data.txt" --steps 3 --mask dense --attn naive --val-every 0 >"$tmp/k" 2>&1 \
    && ok || bad "--mask dense: $(tail -2 "$tmp/k")"

# --- BPE token data: samples decoded and bits per byte per byte of text ------------------------
./tokenize train --input "$tmp/data.txt" --vocab-size 400 --out "$tmp/vocab.bin" >/dev/null 2>&1 \
 && ./tokenize encode --vocab "$tmp/vocab.bin" --input "$tmp/data.txt" --out "$tmp/data.tok" >/dev/null 2>&1 \
 && ok || bad "tokenize train/encode"
"$BIN" "${TINY[@]}" --data "$tmp/data.tok" --vocab-file "$tmp/vocab.bin" --steps 2 --val-every 0 \
    --sample-len 10 >"$tmp/bpe" 2>&1 && ok || bad "training on BPE tokens: $(tail -2 "$tmp/bpe")"
grep -q "vocab 400" "$tmp/bpe" && ok || bad "vocabulary not taken from --vocab-file"
# bits per byte = loss / ln 2 / (bytes per token); with ~2 bytes a token it is well below bits/token
python3 - "$tmp/bpe" <<'PYEOF' && ok || bad "bpb of BPE data is not loss/ln2 divided by bytes per token"
import re, sys, math
line = [l for l in open(sys.argv[1], errors="replace") if l.startswith("val")][-1]
loss, bpb = map(float, re.findall(r"loss ([0-9.]+) \| bpb ([0-9.]+)", line)[0])
assert 1.3 < (loss / math.log(2)) / bpb < 4.0, (loss, bpb)
PYEOF
grep -q '^sample' "$tmp/bpe" && ! grep -q '<[0-9]*>' "$tmp/bpe" && ok || bad "BPE sample not decoded"
expect_usage_error "vocab file with byte data" "${TINY[@]}" --data "$tmp/data.txt" --vocab-file "$tmp/vocab.bin"
expect_usage_error "corrupt vocab file" "${TINY[@]}" --data "$tmp/data.tok" --vocab-file "$tmp/garbage.bin"

echo "test_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
