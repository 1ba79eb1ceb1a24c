#!/usr/bin/env python3
"""dev/torch_gpt2_bench.py: the PyTorch peer of a training run, for same-call ratios.

A GPT-2 (pre-LayerNorm, tanh GELU, tied embeddings, AdamW) in plain PyTorch eager, attention by
scaled_dot_product_attention on one chosen backend, trained on random tokens (throughput does not
depend on the text) for --steps optimizer steps; prints tokens/sec over the steps after --warmup
and the peak memory PyTorch reserved, as one line and as JSON (--json FILE appends it).

  torch_gpt2_bench.py --layers 6 --channels 1024 --heads 8 --vocab 256 --seq-len 2048 \
      --batch 2 --accum 4 --precision fp32 --backend efficient --mask causal
  torch_gpt2_bench.py --layers 12 --channels 768 --heads 12 --vocab 256 --seq-len 16384 \
      --batch 1 --precision bf16 --backend cudnn

--precision fp32 trains in fp32 with TF32 matmuls allowed (PyTorch's efficient kernel then uses TF32
tensor cores too) unless --no-tf32; bf16 is autocast with fp32 weights. --mask dense is a T x T
float bias, -inf above the diagonal, broadcast over batch and heads (no gradient), as the xFormers
issue's "custom float masks" ran.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.fcproj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x, bias):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        if bias is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, C, H, V, T, causal):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList(Block(C, H) for _ in range(L))
        for b in self.blocks:
            b.causal = causal
        self.lnf = nn.LayerNorm(C)

    def forward(self, idx, targets, bias):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x, bias)
        logits = F.linear(self.lnf(x), self.wte.weight)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--channels", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="cudnn")
    ap.add_argument("--mask", choices=["causal", "none", "dense"], default="causal")
    ap.add_argument("--no-tf32", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = not a.no_tf32
    torch.backends.cudnn.allow_tf32 = not a.no_tf32
    dev = "cuda"
    torch.manual_seed(1337)
    Vp = (a.vocab + 127) // 128 * 128 if a.vocab > 256 else a.vocab
    model = GPT(a.layers, a.channels, a.heads, Vp, a.seq_len, a.mask == "causal").to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    bias = None
    if a.mask == "dense":
        dt = torch.float32 if a.precision == "fp32" else torch.bfloat16 if a.precision == "bf16" else torch.float16
        bias = torch.full((a.seq_len, a.seq_len), float("-inf"), device=dev, dtype=dt).triu(1)
    amp = None if a.precision == "fp32" else (torch.bfloat16 if a.precision == "bf16" else torch.float16)
    scaler = torch.amp.GradScaler() if a.precision == "fp16" else None
    gen = torch.Generator(device=dev).manual_seed(1)

    def step():
        for _ in range(a.accum):
            idx = torch.randint(0, a.vocab, (a.batch, a.seq_len + 1), device=dev, generator=gen)
            with torch.autocast("cuda", dtype=amp, enabled=amp is not None), sdpa_kernel([BACKENDS[a.backend]]):
                loss = model(idx[:, :-1], idx[:, 1:], bias) / a.accum
            (scaler.scale(loss) if scaler else loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    try:
        for _ in range(a.warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = step()
        torch.cuda.synchronize()
        dt_s = time.perf_counter() - t0
    except RuntimeError as e:  # no kernel for this configuration, or out of memory
        msg = str(e).split("\n")[0][:160]
        print(f"torch {a.backend} {a.precision} {a.mask}: failed: {msg}")
        rec = {"backend": a.backend, "precision": a.precision, "mask": a.mask, "failed": msg}
    else:
        tok = a.steps * a.accum * a.batch * a.seq_len / dt_s
        peak = torch.cuda.max_memory_reserved() / 2**30
        print(f"torch {a.backend} {a.precision} {a.mask} L={a.layers} C={a.channels} H={a.heads} "
              f"T={a.seq_len} B={a.batch}x{a.accum}: {tok / 1e3:.1f}K tok/s, "
              f"{1e3 * dt_s / a.steps:.1f} ms/step, peak reserved {peak:.2f} GiB, loss {loss.item() * a.accum:.3f}")
        rec = {"backend": a.backend, "precision": a.precision, "mask": a.mask, "T": a.seq_len,
               "tok_per_s": tok, "peak_reserved_gib": peak}
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
