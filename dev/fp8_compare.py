#!/usr/bin/env python3
"""dev/fp8_compare.py: a bf16 and an --matmul fp8 training run's JSON logs (--log) side by side.

    python3 dev/fp8_compare.py bf16.jsonl fp8.jsonl [--tol 0.01] [--window 50]

Prints the mean training loss per window of steps, every validation loss and their relative
differences (fp8 - bf16) / bf16, and each run's median tokens/sec and MFU over the steps after the
first 10 (warm-up, graph capture) and its device memory. Exit status 1 when the last window's mean
training loss or the last validation loss differs by more than --tol (issue #13: within 1%).
"""
import json
import statistics
import sys


def load(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    run = [r for r in rows if r["type"] == "run"]
    steps = [r for r in rows if r["type"] == "step"]
    vals = {r["step"]: r["loss"] for r in rows if r["type"] == "val"}
    return (run[-1] if run else {}), steps, vals


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    tol, window = 0.01, 50
    for i, a in enumerate(argv):
        if a == "--tol": tol = float(argv[i + 1])
        if a == "--window": window = int(argv[i + 1])
    if len(args) < 2:
        print(__doc__)
        return 2
    (rb, sb, vb), (r8, s8, v8) = load(args[0]), load(args[1])
    print("runs: %s matmul %s | %s matmul %s" % (args[0], rb.get("matmul"), args[1], r8.get("matmul")))
    n = min(len(sb), len(s8))
    worst = 0.0
    last_rel = None
    print("%-12s %10s %10s %9s" % ("steps", "bf16", "fp8", "rel"))
    for a in range(0, n, window):
        b = min(n, a + window)
        mb = statistics.mean(r["loss"] for r in sb[a:b])
        m8 = statistics.mean(r["loss"] for r in s8[a:b])
        last_rel = (m8 - mb) / mb
        print("%-12s %10.4f %10.4f %+8.2f%%" % ("%d-%d" % (a + 1, b), mb, m8, 100 * last_rel))
    val_rel = None
    for step in sorted(set(vb) & set(v8)):
        val_rel = (v8[step] - vb[step]) / vb[step]
        print("val @%-7d %10.4f %10.4f %+8.2f%%" % (step, vb[step], v8[step], 100 * val_rel))
    for name, s in (("bf16", sb), ("fp8", s8)):
        tail = s[10:] or s
        print("%-5s median %.1fK tok/s, %.2f ms/step, MFU %.1f%%, device memory %.2f GiB" % (
            name, statistics.median(r["tok_per_s"] for r in tail) / 1e3, statistics.median(r["ms"] for r in tail),
            100 * statistics.median(r["mfu"] for r in tail), max(r["mem_bytes"] for r in s) / 2**30))
    bad = [x for x in (last_rel, val_rel) if x is not None and abs(x) > tol]
    print("within %.1f%%: %s" % (100 * tol, "yes" if not bad else "NO"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
