#!/usr/bin/env bash
# test/test_matmul_fp8.sh: --matmul on the CPU: the option is parsed, listed in --help (with its
# default and what stays bf16) and in README; every refusal is one line and exit code 2 (fp8 on the
# CPU, an unknown value, with --bench, with --recompute on any device); a default run trains, has no
# "matmul:" header line and records its GEMMs' input type in the JSON run record. FP8 itself runs on
# a GPU: test/gpu/test_trainer.cu and test/gpu/test_train_gpu.sh.
set -u
cd "$(dirname "$0")/.."
BIN=./train_gpt2
passed=0
failed=0
skipped=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
HAVE_PY=$(command -v python3 >/dev/null 2>&1 && echo 1)
pycheck() {
    local what=$1; shift
    if [ -z "$HAVE_PY" ]; then skipped=$((skipped + 1)); cat >/dev/null; return 0; fi
    python3 "$@" && ok || bad "$what"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat */*.h > "$tmp/data.txt"
RUN=(--device cpu --layers 2 --heads 2 --channels 32 --batch 2 --seq-len 16 --sample-len 0 --val-every 0
     --threads 2 --data "$tmp/data.txt")

# expect_usage_error NAME PATTERN ARGS...: exit 2, one stderr line matching PATTERN, no step lines
expect_usage_error() {
    local name=$1 pattern=$2; shift 2
    "$BIN" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$? lines
    lines=$(wc -l <"$tmp/err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "$pattern" "$tmp/err" && ! grep -q '^step' "$tmp/out"; then ok
    else bad "$name: exit $rc, $lines stderr lines: $(head -c 300 "$tmp/err")"; fi
}

# --- --help and README -------------------------------------------------------------------------
"$BIN" --help >"$tmp/help" 2>&1 || bad "--help failed"
line=$(grep -- "--matmul M" "$tmp/help")
[ -n "$line" ] && ok || bad "--help does not list --matmul M"
for word in "bf16, or fp8" "sm89" "--precision bf16" "E4M3" "E5M2" "last 16 forward passes" "lm head and attention stay bf16" \
            "\[default: bf16\]"; do
    grep -q -- "$word" <<<"$line" && ok || bad "--help's --matmul line lacks '$word': $line"
done
grep -qF -- "$line" README.md && ok || bad "README's options block does not hold --help's --matmul line"

# --- refusals ------------------------------------------------------------------------------------
expect_usage_error "fp8 on the CPU" "runs on a GPU" "${RUN[@]}" --steps 1 --matmul fp8
expect_usage_error "fp8 on the CPU, fp32 given" "runs on a GPU" "${RUN[@]}" --steps 1 --precision fp32 --matmul fp8
expect_usage_error "unknown --matmul" "expects bf16 or fp8, got 'fp4'" "${RUN[@]}" --steps 1 --matmul fp4
expect_usage_error "empty --matmul" "--matmul" "${RUN[@]}" --steps 1 --matmul ""
expect_usage_error "--matmul fp8 with --bench" "applies to training runs" --bench custom --matmul fp8 --device cpu
# device auto: refused on the CPU fallback, or (a GPU build on a GPU) for --recompute
AUTO=("${RUN[@]}")
AUTO[1]=auto
expect_usage_error "--matmul fp8 --recompute" "--matmul fp8" "${AUTO[@]}" --steps 1 --matmul fp8 --recompute

# --- a default run: bf16 accepted, no matmul line, the JSON run record says what the GEMMs read ---
"$BIN" "${RUN[@]}" --steps 3 --log "$tmp/a.jsonl" >"$tmp/a" 2>&1 && ok || bad "default run failed: $(tail -2 "$tmp/a")"
"$BIN" "${RUN[@]}" --steps 3 --matmul bf16 --log "$tmp/b.jsonl" >"$tmp/b" 2>&1 && ok || bad "--matmul bf16 run failed"
grep -q "^matmul:" "$tmp/a" && bad "a run without --matmul fp8 prints a matmul line" || ok
strip() { grep '^step' "$1" | sed -E 's/\| [0-9.]+ ms \| [0-9]+ tok\/s//'; }
[ -n "$(strip "$tmp/a")" ] && [ "$(strip "$tmp/a")" == "$(strip "$tmp/b")" ] && ok \
    || bad "--matmul bf16 (the default) trains differently from no --matmul"
pycheck "JSON run record's matmul" - "$tmp/a.jsonl" <<'EOF'
import json, sys
run = [json.loads(l) for l in open(sys.argv[1]) if '"type":"run"' in l][0]
assert run["matmul"] == "fp32" and run["precision"] == "fp32", run
EOF

echo "test_matmul_fp8_cli: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
