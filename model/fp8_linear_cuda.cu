/* model/fp8_linear_cuda.cu: the linear layers in FP8 (see fp8_linear_cuda.h). */
#include "model/fp8_linear_cuda.h"
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

#include <string.h>

/* Tensor numbers (memory_plan_cuda.h): inputs, weights, output gradients of linear k in layer l. */
static int t_in(const Fp8Linear *, int l, int k) { return l * FP8_LINEARS + k; }
static int t_w(const Fp8Linear *f, int l, int k) { return (f->L + l) * FP8_LINEARS + k; }
static int t_g(const Fp8Linear *f, int l, int k) { return (2 * f->L + l) * FP8_LINEARS + k; }
static int in_width(const Fp8Linear *f, int k) { return k == FP8_FCPROJ ? 4 * f->C : f->C; }
static int out_width(const Fp8Linear *f, int k) { return k == FP8_QKV ? f->Q : k == FP8_FC ? 4 * f->C : f->C; }
/* Offsets of linear k's weight in a layer's w8 (elements, = bytes) and of its input in xt8 per row. */
static size_t w_offset(const Fp8Linear *f, int k) {
    size_t off = 0;
    for (int j = 0; j < k; j++) off += (size_t)out_width(f, j) * in_width(f, j);
    return off;
}
static size_t xt_offset_per_row(const Fp8Linear *f, int k) { return (size_t)k * f->C; /* C, C, C, then 4C */ }

void fp8_bind(Fp8Linear *f, const Fp8Buffers *b, int L, int C, int Q, cudaStream_t st) {
    memset(f, 0, sizeof *f);
    f->b = *b;
    f->L = L;
    f->C = C;
    f->Q = Q;
    size_t n = (size_t)12 * L;
    CUDA_CHECK(cudaMemsetAsync(f->b.amax_hist, 0, n * FP8_AMAX_HISTORY * sizeof(float), st));
    cuda_fill_f32(f->b.scale, 1.0f, n, st);
    cuda_fill_f32(f->b.scale_inv, 1.0f, n, st);
}

/* Cast into out / out_t with tensor t's scale, recording its amax; a first pass measures the amax
 * and sets the scale from it first. */
static void cast(Fp8Linear *f, Fp8Format fmt, int t, void *out, void *out_t, const void *in, int rows, int cols,
                 cudaStream_t st) {
    float *amax = f->b.amax_hist + (size_t)t * FP8_AMAX_HISTORY, *s = f->b.scale + t, *si = f->b.scale_inv + t;
    if (f->jit) {
        cuda_fp8_cast_transpose(fmt, NULL, NULL, in, rows, cols, cols, s, amax, st);
        cuda_fp8_scale_from_current(fmt, amax, s, si, FP8_MARGIN, st);
    }
    cuda_fp8_cast_transpose(fmt, out, out_t, in, rows, cols, cols, s, amax, st);
}

void fp8_begin_forward(Fp8Linear *f, cudaStream_t st) {
    f->jit = !f->primed_fwd;
    f->primed_fwd = 1;
    cuda_fp8_update_scales(f->b.amax_hist, f->b.scale, f->b.scale_inv, 8 * f->L, 12 * f->L, FP8_AMAX_HISTORY,
                           FP8_MARGIN, st);
}

void fp8_cast_weights(Fp8Linear *f, int l, const void *const w[FP8_LINEARS], cudaStream_t st) {
    for (int k = 0; k < FP8_LINEARS; k++) {
        size_t off = (size_t)l * f->b.w_per_layer + w_offset(f, k);
        cast(f, FP8_E4M3, t_w(f, l, k), f->b.w8 + off, f->b.wt8 + off, w[k], out_width(f, k), in_width(f, k), st);
    }
}

static unsigned char *xt(const Fp8Linear *f, int l, int k, int N) {
    return f->b.xt8 + (size_t)l * f->b.xt_per_layer + (size_t)N * xt_offset_per_row(f, k);
}

int fp8_forward(Fp8Linear *f, int l, int k, void *out, void *gelu_pre, const void *inp, const void *bias, int N,
                cudaStream_t st) {
    int IC = in_width(f, k), OC = out_width(f, k), ti = t_in(f, l, k), tw = t_w(f, l, k);
    cast(f, FP8_E4M3, ti, f->b.x8, xt(f, l, k, N), inp, N, IC, st);
    size_t woff = (size_t)l * f->b.w_per_layer + w_offset(f, k);
    return cuda_matmul_forward_fp8(out, gelu_pre, f->b.x8, f->b.scale_inv + ti, f->b.w8 + woff, f->b.scale_inv + tw,
                                   bias, N, IC, OC, 0, st);
}

void fp8_begin_backward(Fp8Linear *f) {
    f->jit = !f->primed_bwd;
    f->primed_bwd = 1;
}

int fp8_backward(Fp8Linear *f, int l, int k, void *dinp, float *dweight, float *dbias, const void *dout,
                 const void *gelu_pre, int N, float alpha, float *scratch, cudaStream_t st) {
    int IC = in_width(f, k), OC = out_width(f, k), ti = t_in(f, l, k), tw = t_w(f, l, k), tg = t_g(f, l, k);
    cast(f, FP8_E5M2, tg, f->b.g8, f->b.gt8, dout, N, OC, st);
    size_t woff = (size_t)l * f->b.w_per_layer + w_offset(f, k);
    return cuda_matmul_backward_fp8(dinp, dweight, dbias, dout, f->b.g8, f->b.gt8, f->b.scale_inv + tg, xt(f, l, k, N),
                                    f->b.scale_inv + ti, f->b.wt8 + woff, f->b.scale_inv + tw, gelu_pre, N, IC, OC,
                                    alpha, scratch, f->b.wgrad, st);
}
