/* layers/colsum_cuda.cu: column sums of an (N, C) matrix, the reduction behind bias gradients.
 *
 * dst[c] += alpha * sum_n x[n, c]. Two stages so the order of additions never depends on
 * scheduling (bitwise reproducible, no atomics): S row slices each sum their rows into
 * partials[s][c] (threads along c keep the reads coalesced: a warp reads 64 consecutive
 * columns of one row), then one pass adds the S partials of each column in order.
 * Bytes: one read of x (N*C elements) plus S*C floats written and read: S = 128 keeps the
 * second term small (C=768: 0.4 MB against 25 MB of bf16 x at N=16K).
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

enum { COLSUM_SLICES = 128, COLSUM_ROWS_PER_THREAD_GROUP = 8, COLSUM_COLS = 64 };

static int colsum_slices(int N) {
    int s = (N + 31) / 32;
    return s < COLSUM_SLICES ? (s > 0 ? s : 1) : COLSUM_SLICES;
}

size_t cuda_colsum_scratch_floats(int C) { return (size_t)COLSUM_SLICES * C; }

__device__ __forceinline__ void load_pair(const float *p, float &a, float &b) {
    float2 v = *reinterpret_cast<const float2 *>(p);
    a = v.x; b = v.y;
}
__device__ __forceinline__ void load_pair(const bf16 *p, float &a, float &b) {
    __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162 *>(p);
    a = __low2float(v); b = __high2float(v);
}

/* block (32, 8): thread x owns columns c, c+1; thread y strides over the slice's rows. */
template <typename T>
__global__ void colsum_partials_kernel(float *partials, const T *x, int N, int C, int ld,
                                       int rows_per_slice) {
    __shared__ float acc[COLSUM_ROWS_PER_THREAD_GROUP][COLSUM_COLS];
    int c = blockIdx.x * COLSUM_COLS + 2 * threadIdx.x;
    int n0 = blockIdx.y * rows_per_slice;
    int n1 = min(N, n0 + rows_per_slice);
    float s0 = 0.0f, s1 = 0.0f;
    if (c < C) {
        for (int n = n0 + threadIdx.y; n < n1; n += COLSUM_ROWS_PER_THREAD_GROUP) {
            float a, b;
            load_pair(x + (size_t)n * ld + c, a, b);
            s0 += a; s1 += b;
        }
    }
    acc[threadIdx.y][2 * threadIdx.x] = s0;
    acc[threadIdx.y][2 * threadIdx.x + 1] = s1;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int j = 0; j < 2; j++) {
            float s = 0.0f;
            for (int y = 0; y < COLSUM_ROWS_PER_THREAD_GROUP; y++) s += acc[y][2 * threadIdx.x + j];
            partials[(size_t)blockIdx.y * C + c + j] = s;
        }
    }
}

__global__ void colsum_finish_kernel(float *dst, const float *partials, int S, int C, float alpha) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int i = 0; i < S; i++) s += partials[(size_t)i * C + c];
    dst[c] += alpha * s;
}

template <typename T>
static void colsum_accumulate(float *dst, const T *x, int N, int C, int ld, float alpha,
                              float *scratch, cudaStream_t stream) {
    int S = colsum_slices(N);
    int rows = (N + S - 1) / S;
    dim3 grid(ceil_div_u(C, COLSUM_COLS), S), block(32, COLSUM_ROWS_PER_THREAD_GROUP);
    colsum_partials_kernel<T><<<grid, block, 0, stream>>>(scratch, x, N, C, ld, rows);
    CUDA_LAUNCH_CHECK();
    colsum_finish_kernel<<<ceil_div_u(C, 256), 256, 0, stream>>>(dst, scratch, S, C, alpha);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_colsum_accumulate(Precision p, float *dst, const void *x, int N, int C,
                                       int ld, float alpha, float *scratch,
                                       cudaStream_t stream) {
    if (N <= 0) return;
    if (ld == 0) ld = C;
    if (p == PRECISION_BF16)
        colsum_accumulate(dst, (const bf16 *)x, N, C, ld, alpha, scratch, stream);
    else
        colsum_accumulate(dst, (const float *)x, N, C, ld, alpha, scratch, stream);
}
