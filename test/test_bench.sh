#!/usr/bin/env bash
# test/test_bench.sh: ./train_gpt2 --bench on the CPU with a tiny model -- results.md, .csv and
# .json exist and agree cell for cell, cells the CPU cannot run (bf16) are recorded with their
# reason, a cell too big for the host recorded as OOM, the batch policies, the time budget, a missing plotter, bad input (one line, exit 2),
# and the PNG charts decode (signature, IHDR, CRCs, inflated size).
# Optional tools: without gnuplot the chart checks are skipped (the program then only warns), and
# without python3 the table-agreement and PNG-decoding checks are skipped; each counts as skipped.
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_GPT2:-./train_gpt2}
passed=0
failed=0
ok()  { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
skip_gnuplot=0   # checks skipped for want of gnuplot
skip_python=0    # ... and of python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
have_python=0
command -v python3 >/dev/null 2>&1 && have_python=1
have_gnuplot=0
command -v gnuplot >/dev/null 2>&1 && have_gnuplot=1

cat */*.h */*.c >"$tmp/data.txt"
TINY=(--bench custom --device cpu --data "$tmp/data.txt" --bench-models l2-c32-h2 --bench-steps 2
      --bench-warmup 1 --threads 2)

# expect_usage_error NAME ARGS...: exit 2 with exactly one line on stderr.
expect_usage_error() {
    local name=$1; shift
    "$BIN" "$@" >"$tmp/usage.out" 2>"$tmp/usage.err"
    local rc=$? lines
    lines=$(wc -l <"$tmp/usage.err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ]; then ok; else bad "$name: exit $rc, $lines stderr lines: $(head -c 300 "$tmp/usage.err")"; fi
}

# --- the main sweep: 3 kernels x 2 lengths x 2 precisions x 2 masks ---------------------------
OUT="$tmp/out"
"$BIN" "${TINY[@]}" --bench-seq-lens 16,32 --bench-attn naive,memeff,flash --bench-masks causal,dense \
    --bench-precisions fp32,bf16 --bench-out "$OUT" >"$tmp/run" 2>"$tmp/run.err"
rc=$?
[ "$rc" -eq 0 ] && ok || bad "bench run exited $rc: $(tail -3 "$tmp/run.err")"
for f in results.md results.csv results.json plot.gp; do
    [ -s "$OUT/$f" ] && ok || bad "$f missing or empty"
done
for f in tokens_per_sec.png peak_memory.png; do
    if [ "$have_gnuplot" -eq 1 ]; then
        [ -s "$OUT/$f" ] && ok || bad "$f missing or empty"
    else
        skip_gnuplot=$((skip_gnuplot + 1))
    fi
done
grep -q '^| model | T | precision | mask | naive batch | naive tok/s |' "$tmp/run" && ok \
    || bad "the markdown table is not printed to stdout"
grep -q 'memeff speedup' "$OUT/results.md" && ok || bad "results.md has no speedup column"
grep -q 'unsupported' "$OUT/results.md" && grep -q 'fp32 only' "$OUT/results.md" && ok \
    || bad "results.md does not record the unsupported bf16 cells with their reason"
if [ "$have_gnuplot" -eq 1 ]; then
    [ ! -s "$tmp/run.err" ] && ok || bad "a clean sweep wrote to stderr: $(head -2 "$tmp/run.err")"
else  # the one warning about the missing plotter, nothing else
    [ "$(wc -l <"$tmp/run.err")" -eq 1 ] && grep -q 'warning: gnuplot not found' "$tmp/run.err" && ok \
        || bad "a sweep without gnuplot wrote more than its one warning to stderr: $(head -2 "$tmp/run.err")"
fi

if [ "$have_python" -eq 1 ]; then
    python3 - "$OUT" <<'EOF' && ok || bad "results.md, .csv and .json disagree or hold wrong values"
import csv, json, math, sys
d = sys.argv[1]
j = json.load(open(f"{d}/results.json"))
rows = list(csv.DictReader(open(f"{d}/results.csv")))
md = [l for l in open(f"{d}/results.md") if l.startswith("| l2-c32-h2 |")]
cells = j["cells"]
assert len(cells) == 24 == len(rows), (len(cells), len(rows))
assert len(md) * 3 == len(cells), len(md)          # one markdown row per 3 kernels
assert j["grid"] == "custom" and j["backend"] == "cpu" and j["timed_steps"] == 2
for c, r in zip(cells, rows):
    assert (c["kernel"], c["seq_len"], c["precision"], c["mask"], c["status"]) == \
           (r["kernel"], int(r["seq_len"]), r["precision"], r["mask"], r["status"])
    if c["precision"] == "bf16":
        assert c["status"] == "unsupported" and "fp32" in c["reason"], c
        assert c["tok_per_s"] is None and r["tok_per_s"] == ""
    else:
        assert c["status"] == "ok" and c["reason"] is None, c
        assert c["tok_per_s"] > 0 and c["ms_per_step"] > 0 and c["batch"] == 4, c
        assert abs(float(r["tok_per_s"]) - c["tok_per_s"]) <= 0.1
        assert math.isfinite(c["loss_last"]) and 4.0 < c["loss_first"] < 7.0, c
        assert c["mfu"] is None                     # no peak FLOP/s known on the CPU
        if c["kernel"] == "naive": assert c["speedup_vs_naive"] == 1.0
        else: assert c["speedup_vs_naive"] > 0
# the three kernels compute the same function: same first loss in every row
for i in range(0, 24, 3):
    a = [cells[i + k]["loss_first"] for k in range(3)]
    if cells[i]["status"] == "ok": assert max(a) - min(a) < 1e-3, a
EOF
else
    skip_python=$((skip_python + 1))
fi

# --- the charts are valid PNGs ---------------------------------------------------------------
for png in tokens_per_sec.png peak_memory.png; do
    if [ "$have_gnuplot" -eq 0 ]; then
        skip_gnuplot=$((skip_gnuplot + 2))   # signature, decoding
        continue
    fi
    sig=$(head -c 8 "$OUT/$png" | od -An -tx1 | tr -d ' \n')
    [ "$sig" = "89504e470d0a1a0a" ] && ok || bad "$png: no PNG signature ($sig)"
    if [ "$have_python" -eq 1 ]; then
        python3 - "$OUT/$png" <<'EOF' && ok || bad "$png does not decode"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
pos, chunks = 8, []
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
    assert zlib.crc32(kind + body) & 0xffffffff == crc, kind
    chunks.append((kind, body))
    pos += 12 + n
assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
assert w > 100 and h > 100, (w, h)
pixels = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
if interlace == 0:
    assert len(pixels) == h * (1 + (w * channels * depth + 7) // 8), (len(pixels), w, h)
assert len(set(pixels[::97])) > 2                    # not a blank image
EOF
    else
        skip_python=$((skip_python + 1))
    fi
done
grep -q 'logscale x 2' "$OUT/plot.gp" && ok || bad "plot.gp does not put context length on the x axis"

# --- batch policies ----------------------------------------------------------------------------
"$BIN" "${TINY[@]}" --bench-seq-lens 16 --bench-attn flash --tokens-per-step 256 --bench-max-batch 4 \
    --bench-out "$tmp/tok" >/dev/null 2>&1 && ok || bad "--tokens-per-step run failed"
grep -q ',ok,4,4,256,' "$tmp/tok/results.csv" && ok \
    || bad "--tokens-per-step 256 at T=16 with --bench-max-batch 4 is not B=4 x 4: $(tail -1 "$tmp/tok/results.csv")"
grep -q '| 4x4 |' "$tmp/tok/results.md" && ok || bad "results.md does not show the batch as 4x4"
"$BIN" "${TINY[@]}" --bench-seq-lens 16 --bench-attn naive --bench-batch max --bench-max-batch 3 \
    --bench-out "$tmp/max" >/dev/null 2>&1 && ok || bad "--bench-batch max run failed"
grep -q ',ok,3,1,48,' "$tmp/max/results.csv" && ok || bad "--bench-batch max on the CPU is not the cap"

# a cell too big for the host is recorded as OOM with the bytes needed, and the sweep goes on
"$BIN" "${TINY[@]}" --bench-seq-lens 16,4096 --bench-attn flash --bench-batch 1048576 --bench-max-batch 1048576 \
    --bench-out "$tmp/oom" >"$tmp/oom.out" 2>&1 && ok || bad "a sweep with an OOM cell failed: $(tail -2 "$tmp/oom.out")"
grep -q ',4096,fp32,causal,flash,oom,.*needs [0-9.]* GiB of host memory' "$tmp/oom/results.csv" && ok \
    || bad "the oversized cell is not recorded as OOM with the bytes needed"
grep -q '| OOM |' "$tmp/oom/results.md" && ok || bad "results.md does not show OOM"

# --- the masks beyond causal: every CPU kernel runs them, the CUDA-only variants are listed ----------
"$BIN" "${TINY[@]}" --bench-seq-lens 32 --bench-attn naive,memeff,flash,flash-mma --doc-sep 10 \
    --bench-masks causal,window=8,docs,alibi,alibi+docs,none+window=4 --bench-out "$tmp/masks" >"$tmp/masks.out" 2>&1 \
    && ok || bad "a sweep of masks failed: $(tail -2 "$tmp/masks.out")"
[ "$(grep -c ',ok,' "$tmp/masks/results.csv")" -eq 18 ] && ok || bad "not every CPU kernel ran every mask"
grep -q '| l2-c32-h2 | 32 | alibi+docs |' "$tmp/masks/results.md" && ok || bad "no alibi+docs row"
grep -q -- '- l2-c32-h2, T=32, fp32, window=8 -- flash-mma: unsupported: ' "$tmp/masks/results.md" && ok \
    || bad "the CUDA-only kernel's cells are not listed with their reason"
grep -q "docs: packed documents.*each token 10: [1-9][0-9]* in the training data" "$tmp/masks/results.md" && ok \
    || bad "results.md does not say where the documents start: $(grep docs "$tmp/masks/results.md")"
if [ "$have_python" -eq 1 ]; then
    python3 - "$tmp/masks" <<'EOF' && ok || bad "the masks' cells disagree between kernels or with the plain causal model"
import json, sys
cells = json.load(open(sys.argv[1] + "/results.json"))["cells"]
rows = {}
for c in cells:
    rows.setdefault(c["mask"], []).append(c)
assert sorted(rows) == sorted(["causal", "window=8", "docs", "alibi", "alibi+docs", "none+window=4"]), sorted(rows)
for mask, r in rows.items():
    ran = [c for c in r if c["status"] == "ok"]
    assert [c["kernel"] for c in ran] == ["naive", "memeff", "flash"], (mask, r)
    first = [c["loss_first"] for c in ran]
    assert max(first) - min(first) < 1e-3, (mask, first)   # the same function in every kernel
    assert r[3]["status"] == "unsupported" and r[3]["reason"], r[3]
# the masks change the model: the first losses are not all the causal one
assert len({round(rows[m][0]["loss_first"], 5) for m in rows}) > 2, [rows[m][0]["loss_first"] for m in rows]
EOF
else
    skip_python=$((skip_python + 1))
fi

# --- the time budget skips cells; a missing plotter only warns ----------------------------------
"$BIN" "${TINY[@]}" --bench-seq-lens 16,32 --bench-max-seconds 0.000001 --bench-out "$tmp/skip" \
    >"$tmp/skip.out" 2>&1 && ok || bad "a spent time budget failed the run"
[ "$(grep -c ',skipped,' "$tmp/skip/results.csv")" -eq 6 ] && ok || bad "cells past the budget are not recorded as skipped"
mkdir -p "$tmp/emptybin"
PATH="$tmp/emptybin" "$BIN" "${TINY[@]}" --bench-seq-lens 16 --bench-attn flash --bench-out "$tmp/noplot" \
    >/dev/null 2>"$tmp/noplot.err"
rc=$?
[ "$rc" -eq 0 ] && [ -s "$tmp/noplot/results.md" ] && [ -s "$tmp/noplot/results.json" ] && ok \
    || bad "without gnuplot: exit $rc or tables missing"
grep -q 'warning: gnuplot not found' "$tmp/noplot.err" && [ "$(wc -l <"$tmp/noplot.err")" -eq 1 ] && ok \
    || bad "without gnuplot: no one-line warning: $(cat "$tmp/noplot.err")"

# --- presets build their grids -------------------------------------------------------------------
"$BIN" --bench xformers-issue --device cpu --data "$tmp/data.txt" --bench-max-seconds 0.000001 \
    --bench-out "$tmp/xf" >"$tmp/xf.out" 2>&1 && grep -q '24 cells' "$tmp/xf.out" && ok \
    || bad "xformers-issue is not a 24-cell grid: $(head -3 "$tmp/xf.out")"
grep -q '| l6-c1024-h8 | 2048 | fp32 | dense |' "$tmp/xf/results.md" && ok || bad "xformers-issue table rows"
grep -q '| l6-c1024-h8 | 2048 | bf16 | alibi |' "$tmp/xf/results.md" && ok || bad "xformers-issue has no ALiBi row"
nk=$("$BIN" --help | sed -n 's/.*attention kernel: \(.*\) or auto.*/\1/p' | tr ',' '\n' | wc -l)
"$BIN" --bench masks --device cpu --data "$tmp/data.txt" --bench-max-seconds 0.000001 \
    --bench-out "$tmp/mk" >"$tmp/mk.out" 2>&1 && grep -qF "$((nk * 8)) cells ($nk kernels x 1 models x 2 context lengths x 1 precisions x 4 masks)" "$tmp/mk.out" && ok \
    || bad "masks is not every registry kernel ($nk) x 2 lengths x 4 masks: $(head -3 "$tmp/mk.out")"
for row in '| gpt2 | 4096 | causal |' '| gpt2 | 16384 | window=1024 |' '| gpt2 | 4096 | docs |' '| gpt2 | 16384 | alibi |'; do
    grep -qF "$row" "$tmp/mk/results.md" && ok || bad "masks: no row $row"
done
grep -q '"batch_policy": "tokens"' "$tmp/mk/results.json" && grep -q '65536 tokens per step' "$tmp/mk/results.md" \
    && grep -q "docs: packed documents.*'<page>'" "$tmp/mk/results.md" \
    && ok || bad "masks: not 65536 tokens a step, or no documents line"
"$BIN" --bench masks --bench-quick --device cpu --data "$tmp/data.txt" --bench-max-seconds 0.000001 \
    --bench-out "$tmp/mq" >"$tmp/mq.out" 2>&1 && grep -q "$((nk * 4)) cells" "$tmp/mq.out" && ok \
    || bad "masks --bench-quick is not one length: $(head -3 "$tmp/mq.out")"
"$BIN" --bench flash-blog --device cpu --data "$tmp/data.txt" --bench-max-seconds 0.000001 \
    --bench-out "$tmp/fb" >"$tmp/fb.out" 2>&1 && grep -q '45 cells' "$tmp/fb.out" && ok \
    || bad "flash-blog is not a 45-cell grid: $(head -3 "$tmp/fb.out")"
grep -q 'without biases' "$tmp/fb/results.md" && grep -q '"vocab": 16384' "$tmp/fb/results.json" && ok \
    || bad "flash-blog: vocab 16384 / the biases note"
# flash-blog's models have no linear biases: a tiny CPU run of that grid keeps them at zero
"$BIN" --bench flash-blog --device cpu --data "$tmp/data.txt" --bench-models l2-c32-h2 --bench-precisions fp32 \
    --bench-seq-lens 16,32 --bench-max-batch 2 --bench-steps 2 --bench-warmup 1 --bench-out "$tmp/fbt" \
    >/dev/null 2>&1 && ok || bad "tiny flash-blog run failed"
grep -q '"linear_biases": false, "biases_trained": false' "$tmp/fbt/results.json" && \
    [ "$(grep -c '"status": "ok"' "$tmp/fbt/results.json")" -eq 6 ] && ok \
    || bad "tiny flash-blog: cells did not run, or the linear biases were trained"
grep -q 'without biases (ModelOptions.no_linear_bias; checked: they stayed zero)' "$tmp/fbt/results.md" && ok \
    || bad "tiny flash-blog: results.md does not say the biases were dropped"
"$BIN" --bench flash-blog --bench-quick --device cpu --data "$tmp/data.txt" --bench-max-seconds 0.000001 \
    --bench-out "$tmp/fq" >"$tmp/fq.out" 2>&1 && grep -q '18 cells' "$tmp/fq.out" && ok \
    || bad "flash-blog --bench-quick is not 18 cells: $(head -3 "$tmp/fq.out")"

# --- bad input: one line, exit 2 --------------------------------------------------------------
expect_usage_error "unknown grid" --bench nope
expect_usage_error "unknown kernel" "${TINY[@]}" --bench-attn naive,fastest
expect_usage_error "unknown preset" "${TINY[@]}" --bench-models gpt5
expect_usage_error "bad shape" "${TINY[@]}" --bench-models l2-c30-h4
expect_usage_error "unknown precision" "${TINY[@]}" --bench-precisions fp8
expect_usage_error "unknown mask" "${TINY[@]}" --bench-masks diagonal
expect_usage_error "zero window" "${TINY[@]}" --bench-masks window=0
expect_usage_error "a piece twice" "${TINY[@]}" --bench-masks alibi+alibi
expect_usage_error "two kinds" "${TINY[@]}" --bench-masks causal+none
expect_usage_error "an empty piece" "${TINY[@]}" --bench-masks docs+
expect_usage_error "a mask twice under two names" "${TINY[@]}" --bench-masks alibi,causal+alibi
expect_usage_error "--attn-window with --bench" "${TINY[@]}" --attn-window 4
expect_usage_error "--pos with --bench" "${TINY[@]}" --pos alibi
expect_usage_error "--doc-sep without a docs mask" "${TINY[@]}" --doc-sep 10
expect_usage_error "zero length" "${TINY[@]}" --bench-seq-lens 0
expect_usage_error "empty entry" "${TINY[@]}" --bench-seq-lens 16,,32
expect_usage_error "repeated entry" "${TINY[@]}" --bench-attn flash,flash
expect_usage_error "bad batch" "${TINY[@]}" --bench-batch lots
expect_usage_error "batch and tokens" "${TINY[@]}" --bench-batch 2 --tokens-per-step 64
expect_usage_error "zero steps" "${TINY[@]}" --bench-steps 0
expect_usage_error "unwritable out dir" "${TINY[@]}" --bench-out /proc/no/such
expect_usage_error "missing data" "${TINY[@]}" --data "$tmp/nope.txt"
"$BIN" --help | grep -q -- '--bench-seq-lens' && ok || bad "--help does not list the bench options"

[ "$skip_gnuplot" -gt 0 ] && echo "skipped: $skip_gnuplot checks need gnuplot (apt-get install gnuplot-nox)"
[ "$skip_python" -gt 0 ] && echo "skipped: $skip_python checks need python3 (apt-get install python3)"
echo "test_bench: $passed passed, $failed failed, $((skip_gnuplot + skip_python)) skipped"
[ "$failed" -eq 0 ]
