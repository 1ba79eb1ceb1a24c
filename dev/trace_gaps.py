#!/usr/bin/env python3
"""dev/trace_gaps.py: where a training step's wall time goes between kernels, from a CUPTI trace.

  CUDA_INJECTION64_PATH=build/dev/libcupti_trace.so CUPTI_TRACE_OUT=t.csv ./train_gpt2 ... --steps 12
  python3 dev/trace_gaps.py t.csv [--top N]

Reads dev/cupti_trace.c's CSV, splits the GPU work into optimizer steps after each AdamW update
(as dev/kernel_times.py does) and prints, as medians over the second half of the steps:
  wall     from one update's last AdamW kernel end to the next one's
  busy     the union over all streams of the intervals in which a kernel, memcpy or memset ran
  idle     wall - busy: no GPU work at all
  sum      the plain sum of the operations' durations (busy plus the overlap between streams)
then, for the last step, the idle time by gap size and by cause, and its largest gaps. A gap's
cause: "host" when the API call that queued the next operation returned after the previous one
had ended (the GPU waited for the CPU: a sync, host work, launch cost), otherwise "device" (the
work was queued: the gap is the GPU's own latency from one operation to the next, e.g. kernel
launch inside a graph, the tail of one grid and the ramp of the next).
"""
import csv
import statistics
import subprocess
import sys
from collections import defaultdict

from kernel_times import short, update_ends  # dev/kernel_times.py: names and the step split

GPU_KINDS = ("kernel", "memcpy", "memset")
SYNC_APIS = ("Synchronize", "cudaMemcpy_", "cudaMemcpy_v", "cuMemcpyDtoH_v2", "cuMemcpyHtoD_v2")


def demangle(names):
    names = sorted(set(names))
    try:
        r = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, timeout=60)
        out = r.stdout.split("\n")
        if r.returncode == 0 and len(out) >= len(names):
            return dict(zip(names, out))
    except (OSError, subprocess.SubprocessError):
        pass
    return {n: n for n in names}


def load(path):
    gpu, api = [], []
    with open(path, newline="", errors="replace") as f:
        for r in csv.DictReader(f):
            row = (int(r["start_ns"]), int(r["end_ns"]), int(r["stream_or_thread"]), int(r["correlation"]),
                   int(r["graph"]), r["name"], r["kind"])
            (gpu if r["kind"] in GPU_KINDS else api).append(row)
    gpu.sort()
    api.sort()
    return gpu, api


def union(intervals):
    busy, cur_s, cur_e = 0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    return busy


def gaps_of(ops):
    """(gap_ns, index of the op after the gap) for every stretch with no GPU work at all."""
    out, reach = [], None
    for i, op in enumerate(ops):
        if reach is not None and op[0] > reach:
            out.append((op[0] - reach, i, reach))
        reach = op[1] if reach is None else max(reach, op[1])
    return out


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    top = 15
    if "--top" in argv:
        top = int(argv[argv.index("--top") + 1])
    gpu, api = load(argv[0])
    names = demangle([g[5] for g in gpu if g[6] == "kernel"])
    gpu = [(s, e, st, c, gr, short(names.get(n, n)) if k == "kernel" else n.split("_")[0], k)
           for s, e, st, c, gr, n, k in gpu]
    launch_end = {}
    for s, e, th, c, _, n, k in api:  # the latest-returning API call of each correlation id
        launch_end[c] = max(launch_end.get(c, 0), e)
    bounds = update_ends([g[5] if g[6] == "kernel" else "" for g in gpu])
    if len(bounds) < 3:
        print(f"trace_gaps: {len(gpu)} GPU operations, fewer than three AdamW updates")
        return 1
    steps = []
    for a, b in zip(bounds, bounds[1:]):
        ops = gpu[a + 1:b + 1]
        t0 = max(g[1] for g in gpu[:a + 1][-64:])  # the previous update's end
        wall = ops[-1][1] - t0 if ops else 0
        busy = union([(g[0], g[1]) for g in ops])
        steps.append(dict(ops=ops, t0=t0, wall=wall, busy=busy, sum=sum(g[1] - g[0] for g in ops)))
    tail = steps[len(steps) // 2:]
    med = lambda key: statistics.median(s[key] for s in tail) / 1e6
    print(f"{len(gpu)} GPU operations, {len(api)} API calls, {len(steps)} steps; medians over the last {len(tail)}:")
    print(f"  wall {med('wall'):.3f} ms, busy {med('busy'):.3f} ms, idle {med('wall') - med('busy'):.3f} ms, "
          f"sum of durations {med('sum'):.3f} ms, {statistics.median(len(s['ops']) for s in tail):.0f} operations a step")
    def cause(ops, i, prev_end):
        nxt = ops[i]
        if launch_end.get(nxt[3], 0) > prev_end:
            return "host"
        return "device, inside a graph" if nxt[4] != 0 and ops[i - 1][4] == nxt[4] else "device"

    def causes(step):
        out = defaultdict(int)
        for g, i, prev_end in gaps_of(step["ops"]):
            out[cause(step["ops"], i, prev_end)] += g
        return out
    per = [causes(s) for s in tail]
    print("  idle by cause (median us over those steps): " + ", ".join(
        f"{c} {statistics.median(p[c] for p in per) / 1e3:.0f}" for c in ("host", "device, inside a graph", "device")))
    st = steps[-1]
    ops = st["ops"]
    gaps = gaps_of(ops)
    lead = ops[0][0] - st["t0"] if ops else 0
    print(f"last step: wall {st['wall'] / 1e6:.3f} ms, busy {st['busy'] / 1e6:.3f} ms, "
          f"from the previous update to its first operation {lead / 1e3:.1f} us")
    edges = [1e3, 2e3, 4e3, 8e3, 16e3, 64e3, 256e3, float("inf")]
    by_size = defaultdict(lambda: [0, 0])
    by_cause = defaultdict(lambda: [0, 0])
    for g, i, prev_end in gaps:
        b = next(e for e in edges if g < e)
        by_size[b][0] += 1
        by_size[b][1] += g
        c = cause(ops, i, prev_end)
        by_cause[c][0] += 1
        by_cause[c][1] += g
    print("| idle gap | count | total us |")
    print("|---|---:|---:|")
    lo = 0
    for e in edges:
        c, t = by_size[e]
        label = f"{lo / 1e3:g}-{e / 1e3:g} us" if e != float("inf") else f">= {lo / 1e3:g} us"
        if c:
            print(f"| {label} | {c} | {t / 1e3:.1f} |")
        lo = e
    print(f"| all | {len(gaps)} | {sum(g for g, _, _ in gaps) / 1e3 + lead / 1e3:.1f} (with the lead) |")
    print("| cause | count | total us |")
    print("|---|---:|---:|")
    for why, (c, t) in sorted(by_cause.items(), key=lambda kv: -kv[1][1]):
        print(f"| {why} | {c} | {t / 1e3:.1f} |")
    per_stream = defaultdict(int)
    for g in ops:
        per_stream[g[2]] += g[1] - g[0]
    print("busy per stream (us): " + ", ".join(f"{s}: {t / 1e3:.0f}" for s, t in sorted(per_stream.items())))
    print(f"| largest gaps of the last step | us | before | after | cause |")
    print("|---|---:|---|---|---|")
    for g, i, prev_end in sorted(gaps, reverse=True)[:top]:
        nxt = ops[i]
        prev = max((o for o in ops[:i] if o[1] == prev_end), key=lambda o: o[0], default=ops[i - 1])
        print(f"| {i} | {g / 1e3:.1f} | {prev[5]} | {nxt[5]} | {cause(ops, i, prev_end)} |")
    syncs = defaultdict(int)
    for s, e, th, c, _, n, k in api:
        if s >= st["t0"] and e <= ops[-1][1] and any(x in n for x in SYNC_APIS):
            syncs[n] += e - s
    if syncs:
        print("host time in synchronising calls during the last step (us): " +
              ", ".join(f"{n}: {t / 1e3:.0f}" for n, t in sorted(syncs.items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
