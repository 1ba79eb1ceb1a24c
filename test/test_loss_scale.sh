#!/usr/bin/env bash
# test/test_loss_scale.sh: --loss-scale end to end on the CPU backend (fp32, where the option
# applies when given): the bad inputs; a fixed power-of-two scale trains bitwise as no scaling
# (with clipping and gradient accumulation); a scale that overflows on purpose skips steps (the
# weights untouched), a dynamic one halves, skips and recovers to a finite, falling loss; the step
# line, the JSON records and the run header say so; --resume continues a dynamic run bitwise
# (the state file records the scale, its clean-step count and the skip count).
# The decisions themselves are unit-tested in test/test_loss_scale.c; fp16 on the GPU in
# test/gpu/test_train_gpu.sh.
set -u
cd "$(dirname "$0")/.."
BIN=./train_gpt2
. test/harness.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat */*.h */*.c > "$tmp/data.txt"
RUN=(--device cpu --layers 2 --heads 2 --channels 32 --batch 4 --seq-len 16 --sample-len 0 --val-every 0
     --threads 2 --data "$tmp/data.txt" --warmup 2)

expect_usage_error() {
    local name=$1; shift
    "$BIN" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$? lines
    lines=$(wc -l <"$tmp/err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && ! grep -q '^step' "$tmp/out"; then ok
    else bad "$name: exit $rc, $lines stderr lines: $(head -c 300 "$tmp/err")"; fi
}

# --- bad input --------------------------------------------------------------------------------
expect_usage_error "loss-scale 0" "${RUN[@]}" --steps 1 --loss-scale 0
expect_usage_error "loss-scale word" "${RUN[@]}" --steps 1 --loss-scale auto
expect_usage_error "loss-scale inf" "${RUN[@]}" --steps 1 --loss-scale inf
expect_usage_error "loss-scale-window without scaling" "${RUN[@]}" --steps 1 --loss-scale-window 10
expect_usage_error "loss-scale-init with a fixed scale" "${RUN[@]}" --steps 1 --loss-scale 8 --loss-scale-init 8
expect_usage_error "loss-scale-window 0" "${RUN[@]}" --steps 1 --loss-scale dynamic --loss-scale-window 0
expect_usage_error "loss-scale-init past 2^127" "${RUN[@]}" --steps 1 --loss-scale dynamic --loss-scale-init 1e39
expect_usage_error "fp16 on the CPU" "${RUN[@]}" --steps 1 --precision fp16
expect_usage_error "grad-comm fp16" "${RUN[@]}" --steps 1 --grad-comm fp16
grep -q "fp16" "$tmp/err" && ok || bad "--grad-comm fp16: $(cat "$tmp/err")"

# --- a fixed power-of-two scale is bitwise no scaling (clipping active: the norms are above 1) ---
for extra in "" "--grad-accum 3"; do
    # shellcheck disable=SC2086
    "$BIN" "${RUN[@]}" --steps 8 $extra --save-model "$tmp/plain.bin" --log "$tmp/plain$extra.jsonl" >"$tmp/plain" 2>&1 \
        || bad "plain run ($extra) failed"
    for s in 1024 0.125; do
        # shellcheck disable=SC2086
        "$BIN" "${RUN[@]}" --steps 8 $extra --loss-scale $s --save-model "$tmp/s.bin" >"$tmp/s" 2>&1 \
            || bad "scaled run ($s $extra) failed"
        cmp -s "$tmp/plain.bin" "$tmp/s.bin" && ok || bad "--loss-scale $s $extra: weights differ from no scaling"
        grep -q "^loss scale: fixed $s" "$tmp/s" && ok || bad "header of --loss-scale $s: $(grep -m1 'loss scale' "$tmp/s")"
    done
done
pycheck "the plain run's norms are not clipped ones" - "$tmp/plain.jsonl" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"type":"step"' in l]
assert steps and max(r["norm"] for r in steps) > 1.0, "no step was clipped: the test would not cover clipping"
assert all(r["loss_scale"] == 1 and r["skipped"] is False for r in steps)
EOF
grep -q "loss scale" "$tmp/plain" && bad "a run without --loss-scale prints a loss-scale line" || ok
# a scale that is not a power of two: the same up to rounding
"$BIN" "${RUN[@]}" --steps 8 --loss-scale 1000 --log "$tmp/k.jsonl" >/dev/null 2>&1 || bad "--loss-scale 1000 failed"
pycheck "--loss-scale 1000 drifts from no scaling" - "$tmp/plain.jsonl" "$tmp/k.jsonl" <<'EOF'
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f) if '"type":"step"' in l] for f in sys.argv[1:3])
assert len(a) == len(b) == 8 and max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
EOF

# --- a fixed scale that overflows every step: every step skipped, the weights as they started ---
"$BIN" "${RUN[@]}" --steps 0 --save-model "$tmp/init.bin" >/dev/null 2>&1 || bad "--steps 0 failed"
"$BIN" "${RUN[@]}" --steps 4 --loss-scale 3e38 --save-model "$tmp/o.bin" --log "$tmp/o.jsonl" >"$tmp/o" 2>&1 \
    || bad "overflowing fixed scale failed: $(tail -2 "$tmp/o")"
n_skip=$(grep -c '| skipped' "$tmp/o")
if [ "$n_skip" -eq 4 ]; then
    cmp -s "$tmp/init.bin" "$tmp/o.bin" && ok || bad "4 skipped steps changed the weights"
else
    bad "--loss-scale 3e38 skipped $n_skip of 4 steps (expected all)"
fi
pycheck "JSON of skipped steps" - "$tmp/o.jsonl" <<'EOF'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
run = [r for r in rows if r["type"] == "run"][0]
steps = [r for r in rows if r["type"] == "step"]
assert run["loss_scaling"] == "fixed", run
assert len(steps) == 4 and all(r["skipped"] is True and r["norm"] is None and math.isclose(r["loss_scale"], 3e38, rel_tol=1e-6)
                               for r in steps)
EOF

# --- dynamic: a huge first scale overflows, halves, recovers; the loss stays finite and falls ---
DYN=("${RUN[@]}" --lr 3e-3 --loss-scale dynamic --loss-scale-init 1.7e38 --loss-scale-window 3)
"$BIN" "${DYN[@]}" --steps 40 --log "$tmp/d.jsonl" >"$tmp/d" 2>&1 || bad "dynamic run failed: $(tail -2 "$tmp/d")"
grep -q "^loss scale: dynamic, 1.7e+38 at first" "$tmp/d" && ok || bad "dynamic header: $(grep -m1 'loss scale' "$tmp/d")"
pycheck "dynamic loss scaling did not skip, halve and recover" - "$tmp/d.jsonl" <<'EOF'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
run = [r for r in rows if r["type"] == "run"][0]
s = [r for r in rows if r["type"] == "step"]
assert run["loss_scaling"] == "dynamic" and run["loss_scale_window"] == 3, run
assert len(s) == 40 and all(math.isfinite(r["loss"]) for r in s)
skips = [i for i, r in enumerate(s) if r["skipped"]]
assert skips and skips[0] == 0, "the first step at 1.7e38 must overflow: %s" % skips
for i in skips:                         # each overflow halves the scale of the next step
    if i + 1 < len(s): assert math.isclose(s[i + 1]["loss_scale"], s[i]["loss_scale"] / 2, rel_tol=1e-7), (i, s[i], s[i + 1])
    assert s[i]["norm"] is None
clean = [r for r in s if not r["skipped"]]
assert len(clean) >= 20, "too few steps ran: %d" % len(clean)
assert all(math.isfinite(r["norm"]) for r in clean)
grew = [i for i in range(1, len(s)) if math.isclose(s[i]["loss_scale"], 2 * s[i - 1]["loss_scale"], rel_tol=1e-7)]
assert grew, "the scale never doubled after 3 clean steps"
for i in grew: assert not any(s[j]["skipped"] for j in range(i - 3, i)), i
first = sum(r["loss"] for r in s[:5]) / 5
last = sum(r["loss"] for r in s[-5:]) / 5
assert last < first - 0.3, (first, last)
EOF

# --- resume continues a dynamic run bitwise: the scale, its count and the skips are in the state ---
"$BIN" "${DYN[@]}" --steps 12 --checkpoint-dir "$tmp/ra" >"$tmp/ra.out" 2>&1 || bad "straight dynamic run failed"
"$BIN" "${DYN[@]}" --steps 12 --checkpoint-dir "$tmp/rb" --checkpoint-every 6 >/dev/null 2>&1 || bad "first half failed"
rm -f "$tmp/rb/model_00000012.bin" "$tmp/rb/state_00000012.bin"
"$BIN" "${DYN[@]}" --steps 12 --checkpoint-dir "$tmp/rb" --resume >"$tmp/rb.out" 2>&1 || bad "resumed dynamic run failed"
grep -q "resume: .*(step 6)" "$tmp/rb.out" && ok || bad "did not resume from step 6: $(grep -m1 resume "$tmp/rb.out")"
tail_steps() { grep -E '^step +([7-9]|1[0-2])/' "$1" | sed -E 's/\| [0-9.]+ ms \| [0-9]+ tok\/s//'; }
if [ -n "$(tail_steps "$tmp/ra.out")" ] && [ "$(tail_steps "$tmp/ra.out")" == "$(tail_steps "$tmp/rb.out")" ]; then ok
else bad "resumed dynamic steps 7-12 differ: $(diff <(tail_steps "$tmp/ra.out") <(tail_steps "$tmp/rb.out") | head -4)"; fi
cmp -s "$tmp/ra/model_00000012.bin" "$tmp/rb/model_00000012.bin" && ok || bad "final weights differ after a dynamic resume"
grep -q '| skipped' "$tmp/ra.out" && ok || bad "the resume test's run skipped nothing (it would not test the skip count)"

echo "test_loss_scale_cli: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
