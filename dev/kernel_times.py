#!/usr/bin/env python3
"""dev/kernel_times.py: one training step's GPU time per kernel, from an ncu CSV.

  ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
      ./train_gpt2 ... --no-cuda-graph --steps 3 > ncu.csv
  python3 dev/kernel_times.py ncu.csv [STEP]

Splits the kernel sequence into optimizer steps at each AdamW kernel and prints, for step STEP
(default: the last complete one), every kernel name with its launches, total microseconds and
share of the step, largest first. ncu runs the kernels one at a time, so the sum is the step's
GPU time without overlap or launch gaps; --cache-control none keeps L2 warm between kernels as
in a real step (a kernel reading what the previous one wrote finds it there).
"""
import csv
import re
import sys
from collections import defaultdict


def short(name):
    name = re.sub(r"\(.*", "", name)          # argument list
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"<.*", "", name)           # template arguments
    return name.strip()[:70]


def update_ends(names):
    """Indices of the last AdamW kernel of each update: a step ends there (several AdamW
    launches in a row are one update)."""
    ends = [i for i, n in enumerate(names) if "adamw" in n.lower()]
    return [i for k, i in enumerate(ends) if k + 1 == len(ends) or ends[k + 1] != i + 1]


def main(argv):
    rows = []
    with open(argv[0], newline="", errors="replace") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        v = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "ns")
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(unit, 1e-3)
        rows.append((short(r["Kernel Name"]), v * scale))
    bounds = update_ends([n for n, _ in rows])
    if len(bounds) < 2:
        print(f"kernel_times: {len(rows)} kernels, fewer than two AdamW updates found")
        return 1
    step = int(argv[1]) if len(argv) > 1 else len(bounds) - 1
    lo, hi = bounds[step - 1] + 1, bounds[step] + 1
    acc = defaultdict(lambda: [0, 0.0])
    for n, us in rows[lo:hi]:
        acc[n][0] += 1
        acc[n][1] += us
    total = sum(a[1] for a in acc.values())
    print(f"step {step + 1}: {hi - lo} kernels, {total / 1e3:.3f} ms of GPU time (kernels one at a time)")
    print("| kernel | launches | us | share |")
    print("|---|---:|---:|---:|")
    for n, (c, us) in sorted(acc.items(), key=lambda kv: -kv[1][1]):
        print(f"| {n} | {c} | {us:.1f} | {100 * us / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
