"""dev/sdpa_peers.py: PyTorch's attention kernels on the shapes of `build/dev/bench_attention`,
the peers of flash and cudnn in the same GPU call: SDPA's FlashAttention-2, cuDNN and
memory-efficient backends and the torch.compile'd FlexAttention.

bf16, H = 12, B*T = 65536, causal and not; fwd and fwd+bwd ms (median of CUDA-event timings after
warm-up) and TFLOP/s counted as bench_attention counts them: 4 B H T^2 D forward (half of it when
causal), 3.5x that forward + backward.

    python3 dev/sdpa_peers.py [T ...] [D=64,128]     (default T = 1024 4096 16384, D = 64)
"""
import sys
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask

from flex_masks import flex, timed  # the compiled flex_attention and the CUDA-event timer

H, TOKENS = 12, 65536


def sdpa_runner(backend, causal):
    def run(q, k, v):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def flex_runner(T, causal):
    bm = create_block_mask(lambda b, h, q, k: q >= k, None, None, T, T, device="cuda") if causal else None
    return lambda q, k, v: flex(q, k, v, block_mask=bm)


def main():
    Ts, Ds = [], [64]
    for a in sys.argv[1:]:
        if a.startswith("D="):
            Ds = [int(x) for x in a[2:].split(",")]
        else:
            Ts.append(int(a))
    Ts = Ts or [1024, 4096, 16384]
    print(f"PyTorch {torch.__version__} attention peers, {torch.cuda.get_device_name()}, bf16, H={H}, B*T={TOKENS}")
    peers = [("sdpa-flash2", lambda T, c: sdpa_runner(SDPBackend.FLASH_ATTENTION, c)),
             ("sdpa-cudnn", lambda T, c: sdpa_runner(SDPBackend.CUDNN_ATTENTION, c)),
             ("sdpa-effic", lambda T, c: sdpa_runner(SDPBackend.EFFICIENT_ATTENTION, c)),
             ("flex", flex_runner)]
    for D in Ds:
        for T in Ts:
            B = TOKENS // T
            q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            dout = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
            for causal in (True, False):
                flops = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0)
                for name, make in peers:
                    try:
                        run = make(T, causal)
                        def fb():
                            run(q, k, v).backward(dout)
                        f_ms = timed(lambda: run(q, k, v))
                        fb_ms = timed(fb)
                        print(f"{name:11s} {'causal' if causal else 'none':6s} D={D:3d} T={T:5d} B={B:2d}: "
                              f"fwd {f_ms:8.3f} ms {flops / f_ms / 1e9:6.1f} TFLOP/s | "
                              f"fwd+bwd {fb_ms:8.3f} ms {3.5 * flops / fb_ms / 1e9:6.1f} TFLOP/s", flush=True)
                    except Exception as e:  # a backend that refuses the shape
                        print(f"{name:11s} {'causal' if causal else 'none':6s} D={D:3d} T={T:5d}: "
                              f"unavailable ({str(e).splitlines()[0][:80]})", flush=True)
                    finally:
                        q.grad = k.grad = v.grad = None


if __name__ == "__main__":
    main()
