"""dev/flex_masks.py: PyTorch's FlexAttention (torch.compile'd) on the mask family, the peer of
`build/dev/bench_attention flash window=W | docs=L | alibi` in the same GPU call.

Causal bf16, H = 12, D = 64, B*T = 65536; fwd and fwd+bwd ms (median of CUDA-event timings after
warm-up) and TFLOP/s over the unmasked (query, key) pairs only, counted as bench_attention counts
them (4 D per pair forward, 3.5x that forward+backward).

    python3 dev/flex_masks.py [T ...]     (default 4096 16384)
"""
import sys
import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

H, D, TOKENS = 12, 64, 65536
flex = torch.compile(flex_attention, dynamic=False)


def unmasked_pairs(T, window=0, doc=0):
    n = 0
    for i in range(T):
        lo = 0
        if window:
            lo = max(lo, i - window + 1)
        if doc:
            lo = max(lo, i // doc * doc)
        n += i - lo + 1
    return n


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    Ts = [int(x) for x in sys.argv[1:]] or [4096, 16384]
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], device="cuda")
    cases = [
        ("causal", lambda b, h, q, k: q >= k, None, {}),
        ("window1024", lambda b, h, q, k: (q >= k) & (q - k < 1024), None, {"window": 1024}),
        ("docs2048", lambda b, h, q, k: (q >= k) & (q // 2048 == k // 2048), None, {"doc": 2048}),
        ("alibi", lambda b, h, q, k: q >= k, lambda s, b, h, q, k: s - slopes[h] * (q - k), {}),
    ]
    print(f"FlexAttention (torch {torch.__version__}), {torch.cuda.get_device_name()}, H={H} D={D} B*T={TOKENS}")
    for T in Ts:
        B = TOKENS // T
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        dout = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
        for name, mask_mod, score_mod, kw in cases:
            bm = create_block_mask(mask_mod, None, None, T, T, device="cuda")
            fwd = lambda: flex(q, k, v, score_mod=score_mod, block_mask=bm)
            def fb():
                o = flex(q, k, v, score_mod=score_mod, block_mask=bm)
                o.backward(dout)
            f_ms, fb_ms = timed(fwd), timed(fb)
            flops = 4.0 * B * H * D * unmasked_pairs(T, **kw)
            print(f"flex {name:10s} T={T:5d} B={B:2d}: fwd {f_ms:8.3f} ms {flops / f_ms / 1e9:6.1f} TFLOP/s | "
                  f"fwd+bwd {fb_ms:8.3f} ms {3.5 * flops / fb_ms / 1e9:6.1f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
