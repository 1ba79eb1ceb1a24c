/* layers/fp8_cuda.cu: the linear layer in FP8 (--matmul fp8): casts with amax, delayed scaling,
 * and the three GEMMs of layers/matmul_cuda.cu's cuda_matmul_fp8.
 *
 * cuBLASLt's FP8 GEMM takes only the "TN" layout: with row-major operands, both A and B must
 * have the reduction dimension k contiguous (A row-major (m, k), B row-major (n, k)). So, for
 * a layer out (N, OC) = inp (N, C) W^T + b with W (OC, C):
 *   forward      out^T   (OC x N):  A = W   (OC, C)   E4M3,  B = inp   (N, C)   E4M3   k = C
 *   input grad   dinp^T  (C x N):   A = W^T (C, OC)   E4M3,  B = dout  (N, OC)  E5M2   k = OC
 *   weight grad  dW^T    (C x OC):  A = inp^T (C, N)  E4M3,  B = dout^T (OC, N) E5M2   k = N
 * which needs transposed FP8 copies of the weight, the input and the output gradient. One cast
 * kernel writes a tensor's FP8 copy and/or its transpose (a 64 x 64 tile through shared memory)
 * and records its amax:
 *   forward:  W -> W8 and W8^T (kept for backward), inp -> inp8        (bytes: 2 in, 2 + 1 out)
 *   backward: dout -> dout8 and dout8^T, inp -> inp8^T                 (2 in, 2 out; 2 in, 1 out)
 *             (the dGELU layer, fcproj: dout -> dout8^T only; its input gradient runs in bf16,
 *             kDgeluInputGradBf16 below)
 * The input is cast twice (forward, and transposed again in backward from the bf16 activation
 * the trainer keeps anyway) rather than keeping an FP8 transpose per layer: not the same bytes
 * (forward writing the transpose too would cost 1 byte an element, the recast costs 2 read + 1
 * written: 2.1 GB a step more at GPT-2 124M, B = 16, ~0.6 ms), but no memory (keeping them: 7 N C
 * bytes a layer, 1.06 GB at B = 16). Per element of each linear layer's input: 2+1 bytes forward,
 * 2+1 backward; of its output gradient: 2+2 (2+1 for the dGELU layer, whose input gradient is
 * bf16); of its weight: 2+2 per forward.
 *
 * Scaling (Transformer Engine's delayed scaling, margin 0): each tensor has a slot (layers_cuda.h)
 * with scale, 1/scale, the amax of this step and a 16-step amax history. A cast multiplies by
 * the slot's scale and saturates to the format's largest finite value (so a sudden 100x larger
 * tensor clips for one step, never becomes inf); cuda_fp8_roll after the step moves amax into the
 * history and sets scale = fp8_max / max(history). The first step has no history: with
 * Fp8Work.calibrate the layer measures each tensor first (one extra read) and sets its scale
 * from that amax (host-driven, for the first, eager call only: a captured graph never
 * calibrates). The bias gradient is the column sum of the bf16 output gradient, as in bf16.
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"
#include <cuda_fp8.h>
#include <stdint.h>

/* Forward GEMMs use cuBLASLt's FP8 fast accumulation (no periodic promotion of the tensor cores'
 * partial sums); backward ones do not (Transformer Engine's choice: the gradients' sums are
 * longer, k = N). The test bounds (test/gpu/test_fp8.cu) apply to both. */
static const int kFastAccumForward = 1;

/* fcproj's input gradient (the one with the dGELU epilogue) runs in bf16, not FP8. On the H200
 * (dev/fp8_probe, GPT-2 124M, N = 16384, 4C -> C): FP8 with cuBLASLt's DGELU epilogue 0.420 ms
 * (184 TFLOP/s: that epilogue is slow in FP8), FP8 without it 0.078 ms + the separate dGELU pass
 * (gelu_cuda.cu: read dinp and the pre-activation, write dinp, 3 x 100.7 MB at ~3 TB/s = 0.10 ms,
 * predicted) = 0.18 ms, bf16 with the epilogue 0.161 ms (measured). bf16 also skips that
 * layer's non-transposed E5M2 copy of the output gradient (only the weight gradient needs the
 * transpose). 1: bf16 (from the bf16 weight); 0: FP8 (+ epilogue, or its fallback). */
static const int kDgeluInputGradBf16 = 1;
extern "C" int cuda_fp8_dgelu_input_grad_is_bf16(void) { return kDgeluInputGradBf16; }

enum { CAST_TILE = 64, CAST_THREADS = 256 };

template <bool E5M2> __device__ __forceinline__ uint8_t to_fp8(float v) {
    return (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, E5M2 ? __NV_E5M2 : __NV_E4M3);
}

/* One 64 x 64 tile of x (rows, cols) per block; cols and rows multiples of 8 (8-element vectors). */
template <bool E5M2>
__global__ void __launch_bounds__(CAST_THREADS)
    fp8_cast_kernel(uint8_t *out, uint8_t *out_t, const bf16 *x, int rows, int cols, float *slot, int record_amax) {
    __shared__ __align__(16) uint8_t tile[CAST_TILE][CAST_TILE + 8]; /* rows of 72 bytes: 8-byte stores */
    __shared__ float red[32];
    const float scale = slot[FP8_SLOT_SCALE];
    const int r0 = blockIdx.y * CAST_TILE, c0 = blockIdx.x * CAST_TILE;
    float amax = 0.0f;
    for (int it = threadIdx.x; it < CAST_TILE * (CAST_TILE / 8); it += CAST_THREADS) {
        int r = it / (CAST_TILE / 8), cg = it % (CAST_TILE / 8);
        int gr = r0 + r, gc = c0 + cg * 8;
        if (gr >= rows || gc >= cols) continue;
        uint4 raw = *(const uint4 *)(x + (size_t)gr * cols + gc);
        const bf16 *v = (const bf16 *)&raw;
        union { uint8_t b[8]; uint2 u; } q;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float f = __bfloat162float(v[j]);
            amax = fmaxf(amax, fabsf(f));
            q.b[j] = to_fp8<E5M2>(f * scale);
        }
        if (out) *(uint2 *)(out + (size_t)gr * cols + gc) = q.u;
        if (out_t) *(uint2 *)&tile[r][cg * 8] = q.u;
    }
    if (out_t) {
        __syncthreads();
        for (int it = threadIdx.x; it < CAST_TILE * (CAST_TILE / 8); it += CAST_THREADS) {
            int c = it / (CAST_TILE / 8), rg = it % (CAST_TILE / 8);
            int gc = c0 + c, gr = r0 + rg * 8;
            if (gc >= cols || gr >= rows) continue;
            union { uint8_t b[8]; uint2 u; } q;
#pragma unroll
            for (int j = 0; j < 8; j++) q.b[j] = tile[rg * 8 + j][c];
            *(uint2 *)(out_t + (size_t)gc * rows + gr) = q.u;
        }
    }
    if (record_amax) {
        amax = block_max(amax, red);
        /* non-negative floats order as their bit patterns; fabsf never gives -0 here */
        if (threadIdx.x == 0 && amax > 0.0f) atomicMax((unsigned *)&slot[FP8_SLOT_AMAX], __float_as_uint(amax));
    }
}

/* Calibration: the scale from this step's amax (the slot has no history yet). */
__global__ void fp8_adopt_kernel(float *slot) {
    float a = slot[FP8_SLOT_AMAX], s = slot[FP8_SLOT_MAX] / a;
    if (a > 0.0f && isfinite(a) && isfinite(s)) {
        slot[FP8_SLOT_SCALE] = s;
        slot[FP8_SLOT_DESCALE] = 1.0f / s;
    }
}

__global__ void fp8_init_kernel(float *slots, int n_slots) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_slots) return;
    float *s = slots + (size_t)i * FP8_SLOT_FLOATS;
    for (int j = 0; j < FP8_SLOT_FLOATS; j++) s[j] = 0.0f;
    s[FP8_SLOT_SCALE] = 1.0f;
    s[FP8_SLOT_DESCALE] = 1.0f;
    s[FP8_SLOT_MAX] = i % 3 == 2 ? 57344.0f : 448.0f; /* the output gradient: E5M2 */
}

__global__ void fp8_roll_kernel(float *slots, int n_slots) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_slots) return;
    float *s = slots + (size_t)i * FP8_SLOT_FLOATS, *h = s + FP8_SLOT_HISTORY;
    float a = s[FP8_SLOT_AMAX];
    for (int j = FP8_HISTORY - 1; j > 0; j--) h[j] = h[j - 1];
    h[0] = isfinite(a) ? a : h[1]; /* an inf step repeats the previous amax */
    float m = 0.0f;
    for (int j = 0; j < FP8_HISTORY; j++) m = fmaxf(m, h[j]);
    float sc = s[FP8_SLOT_MAX] / m;
    if (m > 0.0f && isfinite(sc)) {
        s[FP8_SLOT_SCALE] = sc;
        s[FP8_SLOT_DESCALE] = 1.0f / sc;
    }
    s[FP8_SLOT_AMAX] = 0.0f;
}

/* out[n, o] += bias[o]: where cuBLASLt takes no bias epilogue with FP8 */
__global__ void fp8_bias_add_kernel(bf16 *out, const bf16 *bias, size_t n, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16_rn(__bfloat162float(out[i]) + __bfloat162float(bias[i % OC]));
}

extern "C" void cuda_fp8_init_slots(float *slots, int n_linear, cudaStream_t stream) {
    int n = 3 * n_linear;
    if (n <= 0) return;
    fp8_init_kernel<<<ceil_div_u(n, 128), 128, 0, stream>>>(slots, n);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_fp8_roll(float *slots, int n_slots, cudaStream_t stream) {
    if (n_slots <= 0) return;
    fp8_roll_kernel<<<ceil_div_u(n_slots, 128), 128, 0, stream>>>(slots, n_slots);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_fp8_cast(unsigned char *out, unsigned char *out_t, const void *x, int rows, int cols,
                              float *slot, int e5m2, int record_amax, cudaStream_t stream) {
    dim3 grid(ceil_div_u(cols, CAST_TILE), ceil_div_u(rows, CAST_TILE));
    if (e5m2)
        fp8_cast_kernel<true><<<grid, CAST_THREADS, 0, stream>>>(out, out_t, (const bf16 *)x, rows, cols, slot, record_amax);
    else
        fp8_cast_kernel<false><<<grid, CAST_THREADS, 0, stream>>>(out, out_t, (const bf16 *)x, rows, cols, slot, record_amax);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_fp8_calibrate(float *slot, const void *x, int rows, int cols, cudaStream_t stream) {
    cuda_fp8_cast(NULL, NULL, x, rows, cols, slot, 0, 1, stream);
    fp8_adopt_kernel<<<1, 1, 0, stream>>>(slot);
    CUDA_LAUNCH_CHECK();
}

extern "C" size_t cuda_fp8_work_bytes(size_t N, int max_width) {
    size_t one = (N * (size_t)max_width + 255) & ~(size_t)255;
    return 3 * one;
}

static int refused(const char *what) {
    fprintf(stderr, "fp8 matmul (%s): %s\n", what, cuda_matmul_last_refusal());
    return -1;
}

extern "C" int cuda_fp8_matmul_forward(const Fp8Linear *f, const Fp8Work *w, void *out, void *gelu_pre,
                                       const void *inp, const void *weight, const void *bias, int N, int C, int OC,
                                       cudaStream_t stream) {
    if (w->calibrate) {
        cuda_fp8_calibrate(f->x, inp, N, C, stream);
        cuda_fp8_calibrate(f->w, weight, OC, C, stream);
    }
    cuda_fp8_cast(f->w8, f->wt8, weight, OC, C, f->w, 0, 1, stream);
    cuda_fp8_cast(w->a, NULL, inp, N, C, f->x, 0, 1, stream);
    const float *dw = f->w + FP8_SLOT_DESCALE, *dx = f->x + FP8_SLOT_DESCALE;
    const int fast = kFastAccumForward;
    int rc;
    if (gelu_pre) {
        rc = cuda_matmul_fp8(OC, N, C, f->w8, 0, dw, w->a, 0, dx, out, 0, 1.0f, 0.0f, FP8_EPI_GELU_AUX, bias,
                             gelu_pre, fast, stream);
        if (rc == 0) return 0;
        if (rc < 0) return refused("forward, GELU epilogue");
    }
    /* plain (+ bias) into out, or into gelu_pre and then GELU */
    void *dst = gelu_pre ? gelu_pre : out;
    rc = cuda_matmul_fp8(OC, N, C, f->w8, 0, dw, w->a, 0, dx, dst, 0, 1.0f, 0.0f, FP8_EPI_BIAS, bias, NULL, fast,
                         stream);
    if (rc == 1 && bias) {
        rc = cuda_matmul_fp8(OC, N, C, f->w8, 0, dw, w->a, 0, dx, dst, 0, 1.0f, 0.0f, FP8_EPI_NONE, NULL, NULL, fast,
                             stream);
        if (rc == 0) {
            size_t n = (size_t)N * OC;
            fp8_bias_add_kernel<<<ceil_div_u(n, 256), 256, 0, stream>>>((bf16 *)dst, (const bf16 *)bias, n, OC);
            CUDA_LAUNCH_CHECK();
        }
    }
    if (rc != 0) return refused("forward");
    if (gelu_pre) cuda_gelu_forward(PRECISION_BF16, out, gelu_pre, (size_t)N * OC, stream);
    return 0;
}

extern "C" int cuda_fp8_matmul_backward(const Fp8Linear *f, const Fp8Work *w, void *dinp, float *dweight,
                                        float *dbias, const void *dout, const void *inp, const void *weight,
                                        const void *gelu_pre, int N, int C, int OC, float alpha, float *scratch,
                                        cudaStream_t stream) {
    const int dinp_bf16 = dinp && gelu_pre && kDgeluInputGradBf16;
    const int need_g8 = dinp && !dinp_bf16; /* the non-transposed E5M2 copy: the FP8 input gradient only */
    if (w->calibrate) cuda_fp8_calibrate(f->g, dout, N, OC, stream);
    cuda_fp8_cast(need_g8 ? w->g : NULL, w->gt, dout, N, OC, f->g, 1, 1, stream);
    const float *dw = f->w + FP8_SLOT_DESCALE, *dx = f->x + FP8_SLOT_DESCALE, *dg = f->g + FP8_SLOT_DESCALE;
    if (dinp_bf16) {
        /* input gradient only (dweight NULL): GEMM with its dGELU epilogue, or GEMM + dGELU */
        if (cuda_matmul_backward(PRECISION_BF16, dinp, NULL, NULL, dout, NULL, weight, gelu_pre, N, C, OC, 0, alpha,
                                 scratch, stream) != 0)
            return refused("input gradient, bf16 with dGELU");
    } else if (dinp) {
        int rc = 1;
        if (gelu_pre) {
            rc = cuda_matmul_fp8(C, N, OC, f->wt8, 0, dw, w->g, 1, dg, dinp, 0, alpha, 0.0f, FP8_EPI_DGELU, NULL,
                                 (void *)gelu_pre, 0, stream);
            if (rc < 0) return refused("input gradient, dGELU epilogue");
        }
        if (rc == 1) {
            if (cuda_matmul_fp8(C, N, OC, f->wt8, 0, dw, w->g, 1, dg, dinp, 0, alpha, 0.0f, FP8_EPI_NONE, NULL, NULL, 0,
                                stream) != 0)
                return refused("input gradient");
            if (gelu_pre) cuda_gelu_backward(PRECISION_BF16, dinp, gelu_pre, dinp, (size_t)N * C, stream);
        }
    }
    /* the input's transpose, with forward's scale (unchanged until the roll after this step) */
    cuda_fp8_cast(NULL, w->a, inp, N, C, f->x, 0, 0, stream);
    if (cuda_matmul_fp8(C, OC, N, w->a, 0, dx, w->gt, 1, dg, dweight, 1, alpha, 1.0f, FP8_EPI_NONE, NULL, NULL, 0,
                        stream) != 0)
        return refused("weight gradient");
    if (dbias) cuda_colsum_accumulate(PRECISION_BF16, dbias, dout, N, OC, OC, alpha, scratch, stream);
    return 0;
}
