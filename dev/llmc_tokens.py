#!/usr/bin/env python3
"""dev/llmc_tokens.py: helpers of dev/gpu_check.sh's llmc stage (llm.c side by side).

  llmc_tokens.py DATA TRAIN.bin VAL.bin     bytes of DATA as llm.c token files (9/10 train, the
                                            rest val): a header of 256 int32 (20240520, 1, N),
                                            then N uint16 tokens (each byte one token id < 256)
  llmc_tokens.py --row-ours LOG.jsonl MEM   a table row from this trainer's JSON log summary
  llmc_tokens.py --row-llmc OUT MEM B       a table row from llm.c's stdout: the mean of its
                                            per-step ms after the first two steps
"""
import json
import re
import struct
import sys


def write_tokens(path, data):
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, len(data), *([0] * 253)))
        f.write(struct.pack(f"<{len(data)}H", *data))


def main(argv):
    if argv[0] == "--row-ours":
        try:
            s = [json.loads(l) for l in open(argv[1]) if '"summary"' in l][-1]
        except (OSError, IndexError, ValueError):
            print("| failed | | | |")
            return
        print(f"| {s['tok_per_s'] / 1e3:.1f}K | {s['ms_per_step']:.1f} | {argv[2]} | "
              f"{s['peak_mem_bytes'] / 2**30:.2f} (cudaMemGetInfo at the end) |")
    elif argv[0] == "--row-llmc":
        text = open(argv[1], errors="replace").read()
        ms = [float(m) for m in re.findall(r"\| ([0-9.]+) ms \|", text)]
        mem = re.search(r"device memory usage: (\d+) MiB", text)
        if len(ms) < 4:
            print("| failed | | | |")
            return
        t = sum(ms[2:]) / len(ms[2:])
        own = f"{int(mem.group(1)) / 1024:.2f} (its 'device memory usage')" if mem else ""
        print(f"| {int(argv[3]) * 1024 / t:.1f}K | {t:.1f} | {argv[2]} | {own} |")
    else:
        raw = open(argv[0], "rb").read()
        n = len(raw) * 9 // 10
        write_tokens(argv[1], raw[:n])
        write_tokens(argv[2], raw[n:])


if __name__ == "__main__":
    main(sys.argv[1:])
