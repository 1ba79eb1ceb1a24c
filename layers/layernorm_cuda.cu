/* layers/layernorm_cuda.cu: LayerNorm over C channels, with the residual add fused in front.
 *
 * Forward, per row: res = a + b (rounded to the activation type first, so a later recompute
 * from the stored res gives the same numbers), mean = sum(x)/C, rstd = 1/sqrt(var + 1e-5),
 * y = (x - mean) rstd w + b. One warp per row; the row is staged in shared memory so it is
 * read from DRAM once: bytes = 2 N C (plain) or 4 N C (fused: read a, b; write res, y).
 * Backward (g = dout w, xhat = (x - mean) rstd):
 *   dx  += rstd (g - mean(g) - xhat mean(g xhat))     (one warp per row)
 *   dw  += sum_n dout xhat,  db += sum_n dout           (row slices, then a fixed-order sum)
 * (A one-pass version keeping the row in registers was measured 2x slower on an H100: 136 us
 * against 73 us at N=16K, C=768 bf16; see dev/cuda_trainer_notes.md.)
 * For 16-bit rows of at most 768 channels (GPT-2 small) one kernel does all three
 * (layernorm_backward_fused_kernel): a warp keeps its row's dout and x in registers (3 packs a
 * lane at C = 768), so each is read once, and it sums dw / db for its rows in registers; a block
 * (16 warps) adds its warps' sums in a fixed order into one slice of the scratch and the finish
 * kernel adds the slices. DRAM bytes 4 N C x 2 (read dout, x, dinp; write dinp) against the
 * three-kernel path's ~8 N C x 2, and no second launch over the rows.
 * dres_sum (optional): the column sums of dinp after the update, i.e. the bias gradient of the
 * linear layer whose output is this residual stream (GPT-2's attproj and fcproj: their output's
 * gradient is the residual's). The fused kernel sums the values it stores (each warp in its own
 * shared-memory row, as a third slice of the partials), which saves the separate column-sum pass
 * over dinp (N C x 2 bytes read, two launches); the other path runs that pass
 * (cuda_colsum_accumulate) after it.
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

enum { LN_WARPS = 4, LN_SLICES = 128, LN_COLS = 64, LN_ROWGROUPS = 8 };

template <typename T, bool RESIDUAL>
__global__ void layernorm_forward_kernel(T *res, T *out, float *mean, float *rstd, const T *a,
                                         const T *b, const T *w, const T *bias, int N, int C) {
    extern __shared__ __align__(16) unsigned char ln_smem[];
    constexpr int P = Pack16<T>::n;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int row = blockIdx.x * LN_WARPS + warp;
    if (row >= N) return;
    T *s = reinterpret_cast<T *>(ln_smem) + (size_t)warp * C;
    const size_t off = (size_t)row * C;
    float sum = 0.0f;
    for (int i = lane * P; i < C; i += 32 * P) {
        Pack16<T> x = load16_cs(a + off + i);
        if (RESIDUAL) {
            Pack16<T> y = load16_cs(b + off + i);
            for (int j = 0; j < P; j++) x.v[j] = from_f32<T>(to_f32(x.v[j]) + to_f32(y.v[j]));
            store16(res + off + i, x);
        }
        store16(s + i, x);
        for (int j = 0; j < P; j++) sum += to_f32(x.v[j]);
    }
    float m = warp_sum(sum) / C;
    float sq = 0.0f;
    for (int i = lane * P; i < C; i += 32 * P) {
        Pack16<T> x = load16(s + i);
        for (int j = 0; j < P; j++) { float d = to_f32(x.v[j]) - m; sq += d * d; }
    }
    float r = 1.0f / sqrtf(warp_sum(sq) / C + 1e-5f);
    for (int i = lane * P; i < C; i += 32 * P) {
        Pack16<T> x = load16(s + i), ww = load16(w + i), bb = load16(bias + i), y;
        for (int j = 0; j < P; j++)
            y.v[j] = from_f32<T>((to_f32(x.v[j]) - m) * r * to_f32(ww.v[j]) + to_f32(bb.v[j]));
        store16(out + off + i, y);
    }
    if (lane == 0) { mean[row] = m; rstd[row] = r; }
}

template <typename T, bool RESIDUAL>
static void launch_layernorm(T *res, T *out, float *mean, float *rstd, const T *a, const T *b,
                             const T *w, const T *bias, int N, int C, cudaStream_t stream) {
    size_t smem = (size_t)LN_WARPS * C * sizeof(T);
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(layernorm_forward_kernel<T, RESIDUAL>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    layernorm_forward_kernel<T, RESIDUAL><<<ceil_div_u(N, LN_WARPS), 32 * LN_WARPS, smem, stream>>>(
        res, out, mean, rstd, a, b, w, bias, N, C);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_layernorm_forward(Precision p, void *out, float *mean, float *rstd,
                                       const void *inp, const void *w, const void *b, int N,
                                       int C, cudaStream_t stream) {
    if (N <= 0) return;
    if (p == PRECISION_BF16)
        launch_layernorm<bf16, false>(NULL, (bf16 *)out, mean, rstd, (const bf16 *)inp, NULL,
                                      (const bf16 *)w, (const bf16 *)b, N, C, stream);
    else if (p == PRECISION_FP16)
        launch_layernorm<half, false>(NULL, (half *)out, mean, rstd, (const half *)inp, NULL,
                                      (const half *)w, (const half *)b, N, C, stream);
    else
        launch_layernorm<float, false>(NULL, (float *)out, mean, rstd, (const float *)inp, NULL,
                                       (const float *)w, (const float *)b, N, C, stream);
}

extern "C" void cuda_residual_layernorm_forward(Precision p, void *res, void *out, float *mean,
                                                float *rstd, const void *a, const void *b,
                                                const void *w, const void *bias, int N, int C,
                                                cudaStream_t stream) {
    if (N <= 0) return;
    if (p == PRECISION_BF16)
        launch_layernorm<bf16, true>((bf16 *)res, (bf16 *)out, mean, rstd, (const bf16 *)a,
                                     (const bf16 *)b, (const bf16 *)w, (const bf16 *)bias, N, C, stream);
    else if (p == PRECISION_FP16)
        launch_layernorm<half, true>((half *)res, (half *)out, mean, rstd, (const half *)a,
                                     (const half *)b, (const half *)w, (const half *)bias, N, C, stream);
    else
        launch_layernorm<float, true>((float *)res, (float *)out, mean, rstd, (const float *)a,
                                      (const float *)b, (const float *)w, (const float *)bias, N, C, stream);
}

/* dx for one row per warp; accumulates into dinp. */
template <typename T>
__global__ void layernorm_backward_input_kernel(T *dinp, const T *dout, const T *inp, const T *w,
                                                const float *mean, const float *rstd, int N, int C) {
    constexpr int P = Pack16<T>::n;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + warp;
    if (row >= N) return;
    const size_t off = (size_t)row * C;
    float m = mean[row], r = rstd[row];
    float g_sum = 0.0f, gx_sum = 0.0f;
    for (int i = lane * P; i < C; i += 32 * P) {
        Pack16<T> dy = load16(dout + off + i), x = load16(inp + off + i), ww = load16(w + i);
        for (int j = 0; j < P; j++) {
            float g = to_f32(dy.v[j]) * to_f32(ww.v[j]);
            g_sum += g;
            gx_sum += g * (to_f32(x.v[j]) - m) * r;
        }
    }
    float g_mean = warp_sum(g_sum) / C, gx_mean = warp_sum(gx_sum) / C;
    for (int i = lane * P; i < C; i += 32 * P) {
        Pack16<T> dy = load16_cs(dout + off + i), x = load16_cs(inp + off + i), ww = load16(w + i);
        Pack16<T> dx = load16(dinp + off + i);
        for (int j = 0; j < P; j++) {
            float xhat = (to_f32(x.v[j]) - m) * r;
            float g = to_f32(dy.v[j]) * to_f32(ww.v[j]);
            dx.v[j] = from_f32<T>(to_f32(dx.v[j]) + r * (g - g_mean - xhat * gx_mean));
        }
        store16(dinp + off + i, dx);
    }
}

/* Partial sums of dout*xhat and dout over a slice of rows: block (32, 8), 2 columns a thread. */
template <typename T>
__global__ void layernorm_params_partials_kernel(float *partials, const T *dout, const T *inp,
                                                 const float *mean, const float *rstd, int N,
                                                 int C, int rows_per_slice) {
    __shared__ float acc_w[LN_ROWGROUPS][LN_COLS], acc_b[LN_ROWGROUPS][LN_COLS];
    int c = blockIdx.x * LN_COLS + 2 * threadIdx.x;
    int n0 = blockIdx.y * rows_per_slice, n1 = min(N, n0 + rows_per_slice);
    float w0 = 0.0f, w1 = 0.0f, b0 = 0.0f, b1 = 0.0f;
    if (c < C) {
        for (int n = n0 + threadIdx.y; n < n1; n += LN_ROWGROUPS) {
            size_t o = (size_t)n * C + c;
            float m = mean[n], r = rstd[n];
            float d0 = to_f32(dout[o]), d1 = to_f32(dout[o + 1]);
            w0 += d0 * (to_f32(inp[o]) - m) * r;
            w1 += d1 * (to_f32(inp[o + 1]) - m) * r;
            b0 += d0; b1 += d1;
        }
    }
    acc_w[threadIdx.y][2 * threadIdx.x] = w0; acc_w[threadIdx.y][2 * threadIdx.x + 1] = w1;
    acc_b[threadIdx.y][2 * threadIdx.x] = b0; acc_b[threadIdx.y][2 * threadIdx.x + 1] = b1;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int j = 0; j < 2; j++) {
            float sw = 0.0f, sb = 0.0f;
            for (int y = 0; y < LN_ROWGROUPS; y++) {
                sw += acc_w[y][2 * threadIdx.x + j];
                sb += acc_b[y][2 * threadIdx.x + j];
            }
            partials[(size_t)blockIdx.y * 2 * C + c + j] = sw;
            partials[(size_t)blockIdx.y * 2 * C + C + c + j] = sb;
        }
    }
}
/* block (32, LN_ROWGROUPS): column blockIdx.x * 32 + x; thread y adds slices y, y + 8, ... in
 * order, thread y = 0 then the 8 sums in order (a thread per column adding all S slices one after
 * another was latency-bound: 7 us a call at S = 128, C = 768 on an H200). A slice is K C floats:
 * dw's, db's and, with K = 3, dres_sum's. */
__global__ void layernorm_params_finish_kernel(float *dw, float *db, float *dd, const float *partials, int S,
                                               int C, int K) {
    __shared__ float accw[LN_ROWGROUPS][32], accb[LN_ROWGROUPS][32], accd[LN_ROWGROUPS][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    float sw = 0.0f, sb = 0.0f, sd = 0.0f;
    if (c < C) {
#pragma unroll 4
        for (int i = threadIdx.y; i < S; i += LN_ROWGROUPS) {
            sw += partials[(size_t)i * K * C + c];
            sb += partials[(size_t)i * K * C + C + c];
            if (K == 3) sd += partials[(size_t)i * K * C + 2 * C + c];
        }
    }
    accw[threadIdx.y][threadIdx.x] = sw;
    accb[threadIdx.y][threadIdx.x] = sb;
    accd[threadIdx.y][threadIdx.x] = sd;
    __syncthreads();
    if (threadIdx.y != 0 || c >= C) return;
    float tw = 0.0f, tb = 0.0f, td = 0.0f;
    for (int y = 0; y < LN_ROWGROUPS; y++) {
        tw += accw[y][threadIdx.x];
        tb += accb[y][threadIdx.x];
        td += accd[y][threadIdx.x];
    }
    dw[c] += tw;
    db[c] += tb;
    if (K == 3) dd[c] += td;
}
static void layernorm_params_finish(float *dw, float *db, float *dd, const float *partials, int S, int C,
                                    cudaStream_t stream) {
    layernorm_params_finish_kernel<<<ceil_div_u(C, 32), dim3(32, LN_ROWGROUPS), 0, stream>>>(dw, db, dd, partials, S,
                                                                                           C, dd ? 3 : 2);
    CUDA_LAUNCH_CHECK();
}

/* One pass: dx, and this block's slice of the dw / db sums (with DRES also of the updated dinp).
 * NP packs a lane (C <= 32 NP P). */
enum { LNF_WARPS = 16 };
template <typename T, int NP, bool DRES>
__global__ void __launch_bounds__(32 * LNF_WARPS, 1)
layernorm_backward_fused_kernel(T *dinp, float *partials, const T *dout, const T *inp, const T *w,
                                const float *mean, const float *rstd, int N, int C) {
    constexpr int P = Pack16<T>::n, K = DRES ? 3 : 2;
    /* [LNF_WARPS / 2][K C] for the block's sums; with DRES first each warp's dinp sums,
     * [LNF_WARPS][NP P][32] (lane-minor: no bank conflicts; 128 registers a thread are already
     * taken, so these live in shared memory) */
    extern __shared__ float lnf_smem[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *dsum = lnf_smem + (size_t)(LNF_WARPS / 2) * K * C + (size_t)warp * NP * P * 32;
    float aw[NP][P], ab[NP][P];
#pragma unroll
    for (int q = 0; q < NP; q++)
#pragma unroll
        for (int j = 0; j < P; j++) {
            aw[q][j] = ab[q][j] = 0.0f;
            if (DRES) dsum[(q * P + j) * 32 + lane] = 0.0f;
        }
    for (int row = blockIdx.x * LNF_WARPS + warp; row < N; row += gridDim.x * LNF_WARPS) {
        const size_t off = (size_t)row * C;
        Pack16<T> dy[NP], x[NP], ww[NP]; /* w from L1 each row: registers are the limit here */
#pragma unroll
        for (int q = 0; q < NP; q++) {
            int c = (lane + 32 * q) * P;
            if (c < C) { dy[q] = load16_cs(dout + off + c); x[q] = load16_cs(inp + off + c); ww[q] = load16(w + c); }
        }
        const float m = mean[row], r = rstd[row];
        float g_sum = 0.0f, gx_sum = 0.0f;
#pragma unroll
        for (int q = 0; q < NP; q++) {
            if ((lane + 32 * q) * P >= C) continue;
#pragma unroll
            for (int j = 0; j < P; j++) {
                float d = to_f32(dy[q].v[j]), xhat = (to_f32(x[q].v[j]) - m) * r;
                float g = d * to_f32(ww[q].v[j]);
                g_sum += g;
                gx_sum += g * xhat;
                aw[q][j] += d * xhat;
                ab[q][j] += d;
            }
        }
        const float g_mean = warp_sum(g_sum) / C, gx_mean = warp_sum(gx_sum) / C;
        /* the packed words are all that crosses the reductions (else converted floats do, and spill) */
#pragma unroll
        for (int q = 0; q < NP; q++)
#pragma unroll
            for (int k = 0; k < 4; k++) {
                asm volatile("" : "+r"(reinterpret_cast<unsigned *>(&dy[q])[k]));
                asm volatile("" : "+r"(reinterpret_cast<unsigned *>(&x[q])[k]));
                asm volatile("" : "+r"(reinterpret_cast<unsigned *>(&ww[q])[k]));
            }
#pragma unroll
        for (int q = 0; q < NP; q++) {
            int c = (lane + 32 * q) * P;
            if (c >= C) continue;
            Pack16<T> dx = load16(dinp + off + c);
#pragma unroll
            for (int j = 0; j < P; j++) {
                float xhat = (to_f32(x[q].v[j]) - m) * r;
                float g = to_f32(dy[q].v[j]) * to_f32(ww[q].v[j]);
                dx.v[j] = from_f32<T>(to_f32(dx.v[j]) + r * (g - g_mean - xhat * gx_mean));
                if (DRES) dsum[(q * P + j) * 32 + lane] += to_f32(dx.v[j]);
            }
            store16(dinp + off + c, dx);
        }
    }
    /* the block's sums in a fixed order: warps 8..15 store, warps 0..7 add theirs, then slot 0..7 */
    constexpr int HALF = LNF_WARPS / 2;
    float *slot = lnf_smem + (size_t)(warp % HALF) * K * C;
    for (int pass = 0; pass < 2; pass++) {
        if ((warp >= HALF) == (pass == 0)) {
#pragma unroll
            for (int q = 0; q < NP; q++) {
                int c = (lane + 32 * q) * P;
                if (c >= C) continue;
#pragma unroll
                for (int j = 0; j < P; j++) {
                    if (pass == 0) { slot[c + j] = aw[q][j]; slot[C + c + j] = ab[q][j]; }
                    else { slot[c + j] += aw[q][j]; slot[C + c + j] += ab[q][j]; }
                }
            }
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) {
        float t = 0.0f;
        for (int k = 0; k < HALF; k++) t += lnf_smem[(size_t)k * K * C + i];
        partials[(size_t)blockIdx.x * K * C + i] = t;
    }
    if (DRES) { /* column c's sums: warp by warp in order, from its lane-minor slot */
        const float *all = lnf_smem + (size_t)HALF * K * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            int idx = ((c / (32 * P)) * P + c % P) * 32 + (c / P) % 32;
            float t = 0.0f;
            for (int k = 0; k < LNF_WARPS; k++) t += all[(size_t)k * NP * P * 32 + idx];
            partials[(size_t)blockIdx.x * K * C + 2 * C + c] = t;
        }
    }
}

template <typename T>
using LnFusedFn = void (*)(T *, float *, const T *, const T *, const T *, const float *, const float *, int, int);
template <typename T, int NP>
static LnFusedFn<T> ln_fused_kernel(bool dres) {
    return dres ? layernorm_backward_fused_kernel<T, NP, true> : layernorm_backward_fused_kernel<T, NP, false>;
}

/* The fused path where it applies (16-bit rows of at most 3 packs a lane: C <= 768); 0 otherwise. */
template <typename T>
static int layernorm_backward_fused(T *dinp, float *dw, float *db, float *dres_sum, const T *dout, const T *inp,
                                    const T *w, const float *mean, const float *rstd, int N, int C,
                                    float *scratch, cudaStream_t stream) {
    constexpr int P = Pack16<T>::n;
    if (sizeof(T) != 2 || C % P != 0 || C > 3 * 32 * P) return 0;
    int S = ceil_div_u(N, LNF_WARPS);
    if (S > LN_SLICES) S = LN_SLICES;
    const int np = C > 2 * 32 * P ? 3 : C > 32 * P ? 2 : 1;
    const bool dres = dres_sum != NULL;
    size_t smem = (size_t)(LNF_WARPS / 2) * (dres ? 3 : 2) * C * sizeof(float);
    if (dres) smem += (size_t)LNF_WARPS * np * P * 32 * sizeof(float);
    LnFusedFn<T> kernel = np == 3 ? ln_fused_kernel<T, 3>(dres) : np == 2 ? ln_fused_kernel<T, 2>(dres)
                                                                       : ln_fused_kernel<T, 1>(dres);
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    kernel<<<S, 32 * LNF_WARPS, smem, stream>>>(dinp, scratch, dout, inp, w, mean, rstd, N, C);
    CUDA_LAUNCH_CHECK();
    layernorm_params_finish(dw, db, dres_sum, scratch, S, C, stream);
    return 1;
}

/* 1 if dres_sum was summed too (the fused path), 0 if the caller must. */
template <typename T>
static int layernorm_backward(T *dinp, float *dw, float *db, float *dres_sum, const T *dout, const T *inp,
                              const T *w, const float *mean, const float *rstd, int N, int C,
                              float *scratch, cudaStream_t stream) {
    if (layernorm_backward_fused(dinp, dw, db, dres_sum, dout, inp, w, mean, rstd, N, C, scratch, stream)) return 1;
    layernorm_backward_input_kernel<T><<<ceil_div_u(N, 8), 256, 0, stream>>>(dinp, dout, inp, w, mean, rstd, N, C);
    CUDA_LAUNCH_CHECK();
    int S = (N + 31) / 32;
    if (S > LN_SLICES) S = LN_SLICES;
    int rows = (N + S - 1) / S;
    dim3 grid(ceil_div_u(C, LN_COLS), S), block(32, LN_ROWGROUPS);
    layernorm_params_partials_kernel<T><<<grid, block, 0, stream>>>(scratch, dout, inp, mean, rstd, N, C, rows);
    CUDA_LAUNCH_CHECK();
    layernorm_params_finish(dw, db, NULL, scratch, S, C, stream);
    return 0;
}

/* 3 C floats a slice (dw, db, dres_sum), at least what the column sum of the other path needs. */
extern "C" size_t cuda_layernorm_scratch_floats(int C) {
    size_t ln = (size_t)3 * LN_SLICES * C, cs = cuda_colsum_scratch_floats(C);
    return ln > cs ? ln : cs;
}

extern "C" void cuda_layernorm_backward(Precision p, void *dinp, float *dw, float *db, float *dres_sum,
                                        const void *dout, const void *inp, const void *w,
                                        const float *mean, const float *rstd, int N, int C,
                                        float *scratch, cudaStream_t stream) {
    if (N <= 0) return;
    int summed;
    if (p == PRECISION_BF16)
        summed = layernorm_backward((bf16 *)dinp, dw, db, dres_sum, (const bf16 *)dout, (const bf16 *)inp,
                                    (const bf16 *)w, mean, rstd, N, C, scratch, stream);
    else if (p == PRECISION_FP16)
        summed = layernorm_backward((half *)dinp, dw, db, dres_sum, (const half *)dout, (const half *)inp,
                                    (const half *)w, mean, rstd, N, C, scratch, stream);
    else
        summed = layernorm_backward((float *)dinp, dw, db, dres_sum, (const float *)dout, (const float *)inp,
                                    (const float *)w, mean, rstd, N, C, scratch, stream);
    /* after the finish above has read the scratch (same stream) */
    if (dres_sum && !summed) cuda_colsum_accumulate(p, dres_sum, dinp, N, C, C, 1.0f, scratch, stream);
}
