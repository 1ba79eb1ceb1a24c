/* layers/encoder_cuda.cu: token + position embedding, forward and backward.
 *
 * Forward: out[n, :] = wte[inp[n], :] + wpe[t, :] with t = n % T, or t = pos[n] when each token
 * has its own position (packed documents restarting theirs), or wte alone without a position
 * table (ALiBi); one 16-byte pack per thread.
 * Backward without atomics, in a fixed order (reproducible):
 *   dwpe[t, c] += sum_b dout[b, t, c]: a thread per (t, c) walks the batch;
 *   dwte[v, :] += sum of dout rows whose token is v: the host (which holds the tokens) groups
 *   rows by token with a counting sort; a block per distinct token sums its rows (its warps
 *   taking turns over them, needing C a multiple of 16 bytes' worth of elements). With per-token
 *   positions dwpe is the same kind of grouped sum (rows grouped by position), by the same kernel.
 * Bytes: forward 3 N C, backward 2 N C reads of dout plus the touched rows of dwte.
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"
#include <string.h>

/* pos: NULL (position n % T) or N positions; wpe: NULL (no position table) or the table. */
template <typename T>
__global__ void encoder_forward_kernel(T *out, const int *inp, const int *pos, const T *wte, const T *wpe,
                                       int N, int T_, int C) {
    constexpr int P = Pack16<T>::n;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t packs_per_row = C / P;
    if (idx >= (size_t)N * packs_per_row) return;
    int n = (int)(idx / packs_per_row), c = (int)(idx % packs_per_row) * P;
    Pack16<T> a = load16(wte + (size_t)inp[n] * C + c), r;
    if (!wpe) {
        store16(out + (size_t)n * C + c, a);
        return;
    }
    int t = pos ? pos[n] : n % T_;
    Pack16<T> b = load16(wpe + (size_t)t * C + c);
    for (int j = 0; j < P; j++) r.v[j] = from_f32<T>(to_f32(a.v[j]) + to_f32(b.v[j]));
    store16(out + (size_t)n * C + c, r);
}

template <typename T>
__global__ void encoder_backward_wpe_kernel(float *dwpe, const T *dout, int B, int T_, int C) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= T_ * C) return;
    int t = idx / C, c = idx % C;
    float s = 0.0f;
    for (int b = 0; b < B; b++) s += to_f32(dout[((size_t)b * T_ + t) * C + c]);
    dwpe[(size_t)t * C + c] += s;
}

/* A block per distinct token (or position): grid-stride over them, so the grid is fixed for graph
 * replay. rows[start[u] .. start[u+1]) are the rows of group u, ascending. Byte data makes the
 * groups lopsided (a space is ~1/7 of enwik8: ~2300 of 16384 rows), so a group's rows are split
 * over the block's ENC_WARPS warps (warp w takes rows w, w + ENC_WARPS, ..., ENC_UNROLL at a time
 * in flight), each lane holding ENC_PACKS 16-byte packs of the columns, and the warps' sums are
 * added in warp order through shared memory: a fixed order, as before. (The block-per-group
 * kernel with a thread per column and one row at a time took 0.43 ms at GPT-2 124M, B = 16, on
 * enwik8 bytes: ncu on an H200, dev/cuda_trainer_notes.md.) */
enum { ENC_WARPS = 8, ENC_PACKS = 4, ENC_UNROLL = 4 };
template <typename T>
__global__ void __launch_bounds__(ENC_WARPS * 32)
encoder_backward_wte_kernel(float *dwte, const T *dout, const int *uniq, const int *start,
                            const int *rows, const int *num_uniq, int C) {
    constexpr int P = Pack16<T>::n, W = 32 * P * ENC_PACKS; /* columns per pass */
    __shared__ float acc[ENC_WARPS][W];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int U = *num_uniq;
    for (int u = blockIdx.x; u < U; u += gridDim.x) {
        const int tok = uniq[u], k0 = start[u], k1 = start[u + 1];
        for (int c0 = 0; c0 < C; c0 += W) {
            float s[ENC_PACKS][P];
#pragma unroll
            for (int q = 0; q < ENC_PACKS; q++)
#pragma unroll
                for (int j = 0; j < P; j++) s[q][j] = 0.0f;
            for (int k = k0 + warp; k < k1; k += ENC_WARPS * ENC_UNROLL) {
                int r[ENC_UNROLL];
#pragma unroll
                for (int i = 0; i < ENC_UNROLL; i++) r[i] = k + i * ENC_WARPS < k1 ? rows[k + i * ENC_WARPS] : -1;
#pragma unroll
                for (int i = 0; i < ENC_UNROLL; i++) {
                    if (r[i] < 0) continue;
#pragma unroll
                    for (int q = 0; q < ENC_PACKS; q++) {
                        int c = c0 + (lane + 32 * q) * P;
                        if (c < C) {
                            Pack16<T> v = load16(dout + (size_t)r[i] * C + c);
#pragma unroll
                            for (int j = 0; j < P; j++) s[q][j] += to_f32(v.v[j]);
                        }
                    }
                }
            }
#pragma unroll
            for (int q = 0; q < ENC_PACKS; q++)
#pragma unroll
                for (int j = 0; j < P; j++) acc[warp][(lane + 32 * q) * P + j] = s[q][j];
            __syncthreads();
            for (int i = threadIdx.x; i < W && c0 + i < C; i += blockDim.x) {
                float t = 0.0f;
                for (int w = 0; w < ENC_WARPS; w++) t += acc[w][i];
                dwte[(size_t)tok * C + c0 + i] += t;
            }
            __syncthreads();
        }
    }
}

extern "C" void cuda_encoder_forward(Precision p, void *out, const int *inp, const int *pos, const void *wte,
                                     const void *wpe, int B, int T, int C, cudaStream_t stream) {
    int N = B * T;
    if (N <= 0) return;
    int P = 16 / precision_esize(p); /* elements per 16-byte pack */
    unsigned blocks = ceil_div_u((size_t)N * (C / P), 256);
    if (p == PRECISION_BF16)
        encoder_forward_kernel<<<blocks, 256, 0, stream>>>((bf16 *)out, inp, pos, (const bf16 *)wte,
                                                           (const bf16 *)wpe, N, T, C);
    else if (p == PRECISION_FP16)
        encoder_forward_kernel<<<blocks, 256, 0, stream>>>((half *)out, inp, pos, (const half *)wte,
                                                           (const half *)wpe, N, T, C);
    else
        encoder_forward_kernel<<<blocks, 256, 0, stream>>>((float *)out, inp, pos, (const float *)wte,
                                                           (const float *)wpe, N, T, C);
    CUDA_LAUNCH_CHECK();
}

extern "C" int cuda_encoder_group_tokens(const int *inp, int N, int V, int *uniq, int *start,
                                         int *rows, int *counts) {
    memset(counts, 0, sizeof(int) * (size_t)(V + 1));
    for (int n = 0; n < N; n++) counts[inp[n]]++;
    int U = 0, offset = 0;
    for (int v = 0; v < V; v++) {
        if (!counts[v]) continue;
        uniq[U] = v;
        start[U] = offset;
        U++;
        int c = counts[v];
        counts[v] = offset; /* now the next free slot of token v */
        offset += c;
    }
    start[U] = offset;
    for (int n = 0; n < N; n++) rows[counts[inp[n]]++] = n;
    return U;
}

/* The grouped sum dst[uniq[u]] += sum of dout rows rows[start[u] .. start[u+1]) for u < *num_uniq. */
template <typename T>
static void grouped_rows_sum(float *dst, const T *dout, const EncoderGroups *g, int C, cudaStream_t stream) {
    const unsigned blocks = 1024;
    encoder_backward_wte_kernel<<<blocks, ENC_WARPS * 32, 0, stream>>>(dst, dout, g->uniq, g->start, g->rows,
                                                                       g->num_uniq, C);
    CUDA_LAUNCH_CHECK();
}

template <typename T>
static void encoder_backward_typed(float *dwte, float *dwpe, const T *dout, const EncoderGroups *by_token,
                                   const EncoderGroups *by_pos, int B, int T_, int C, cudaStream_t stream) {
    if (dwpe && by_pos) {
        grouped_rows_sum(dwpe, dout, by_pos, C, stream);
    } else if (dwpe) {
        encoder_backward_wpe_kernel<<<ceil_div_u((size_t)T_ * C, 256), 256, 0, stream>>>(dwpe, dout, B, T_, C);
        CUDA_LAUNCH_CHECK();
    }
    grouped_rows_sum(dwte, dout, by_token, C, stream);
}

extern "C" void cuda_encoder_backward(Precision p, float *dwte, float *dwpe, const void *dout,
                                      const EncoderGroups *by_token, const EncoderGroups *by_pos,
                                      int B, int T, int C, cudaStream_t stream) {
    if (B * T <= 0) return;
    if (p == PRECISION_BF16)
        encoder_backward_typed(dwte, dwpe, (const bf16 *)dout, by_token, by_pos, B, T, C, stream);
    else if (p == PRECISION_FP16)
        encoder_backward_typed(dwte, dwpe, (const half *)dout, by_token, by_pos, B, T, C, stream);
    else
        encoder_backward_typed(dwte, dwpe, (const float *)dout, by_token, by_pos, B, T, C, stream);
}
