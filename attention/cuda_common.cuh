/* attention/cuda_common.cuh: what the CUDA attention kernels share.
 *
 * Error handling returns non-zero (never exits): the first failure's text is kept for
 * attn_cuda_last_error(); element conversions between fp32 and bf16/fp16; the mask as the kernels see it;
 * the token-major addressing of attention.h.
 */
#ifndef ATTENTION_CUDA_COMMON_CUH
#define ATTENTION_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include "attention/attention.h"
#include "attention/attention_cuda.h"

typedef __nv_bfloat16 bf16;
typedef __half fp16;

/* Records a message (also printed to stderr) and returns 1, so `return attn_cuda_fail(...)`. */
int attn_cuda_fail(const char *fmt, ...);

#define ATTN_CUDA_TRY(call)                                                                  \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess)                                                               \
            return attn_cuda_fail("%s:%d: %s: %s", __FILE__, __LINE__, #call,                \
                                  cudaGetErrorString(e_));                                   \
    } while (0)

/* After every launch: a bad configuration shows up here, not at the next sync. */
#define ATTN_LAUNCH_CHECK() ATTN_CUDA_TRY(cudaGetLastError())

static inline cudaStream_t attn_stream(void *stream) { return (cudaStream_t)stream; }
/* Bytes per element: 4 for fp32, 2 for bf16 and fp16 (0 for a value outside the enum, which
 * attn_shape_basics refuses first). */
static inline size_t attn_esize(AttnDtype d) {
    switch (d) {
    case ATTN_FP32: return 4;
    case ATTN_BF16: case ATTN_FP16: return 2;
    default: return 0;
    }
}
static inline long long attn_rows(const AttnShape *s) { return (long long)s->B * s->H * s->T; }

/* ---- element conversion -------------------------------------------------------------------- */
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(fp16 x) { return __half2float(x); }
template <typename E> __device__ __forceinline__ E from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ fp16 from_float<fp16>(float x) { return __float2half_rn(x); }

/* ---- the mask as kernels see it ------------------------------------------------------------ */
struct MaskDev {
    int kind;
    const float *bias;
    long long stride_b, stride_h, stride_row;
};
static inline MaskDev mask_dev(const AttnShape *s) {
    MaskDev m = {(int)s->mask.kind, s->mask.bias, s->mask.stride_b, s->mask.stride_h,
                 s->mask.stride_row};
    return m;
}
/* The additive bias of score (b, h, i, j): 0, -inf above the diagonal, or the dense array. */
__device__ __forceinline__ float mask_bias(const MaskDev &m, int b, int h, int i, int j) {
    if (m.kind == ATTN_MASK_CAUSAL) return j > i ? -INFINITY : 0.0f;
    if (m.kind == ATTN_MASK_DENSE)
        return __ldg(m.bias + b * m.stride_b + h * m.stride_h + i * m.stride_row + j);
    return 0.0f;
}

/* ---- the grid of the tiled kernels ----------------------------------------------------------
 * x = tile of rows within one head, y = batch*head. x runs fastest, so the blocks resident
 * together are tiles of the same few heads and share that head's K/V (forward) or Q/dO and the
 * dQ accumulator (backward) in L2, instead of each streaming its own head from DRAM (measured
 * against the other order in dev/attention_notes.md). */
static inline dim3 attn_tile_grid(const AttnShape *s, int rows_per_tile) {
    unsigned tiles = (unsigned)((s->T + rows_per_tile - 1) / rows_per_tile), heads = (unsigned)(s->B * s->H);
    return dim3(tiles, heads);
}
__device__ __forceinline__ int attn_block_head() { return blockIdx.y; }
/* Tiles in launch order; heavy_first reverses them (causal: the last query tiles do the most). */
__device__ __forceinline__ int attn_block_tile(bool heavy_first) {
    int i = blockIdx.x, n = gridDim.x;
    return heavy_first ? n - 1 - i : i;
}
static const long long kAttnMaxHeads = 65535; /* grid y limit */

/* Launches a tiled kernel over attn_tile_grid(s, rows_per_tile) with `smem` bytes of dynamic
 * shared memory, raising the kernel's limit first (needed above 48 KB). 0, or 1 on an error. */
template <typename Params>
static int attn_launch_tiled(void (*kernel)(Params), const AttnShape *s, int rows_per_tile, int threads, int smem,
                             Params p, cudaStream_t st) {
    ATTN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<attn_tile_grid(s, rows_per_tile), threads, smem, st>>>(p);
    ATTN_LAUNCH_CHECK();
    return 0;
}

/* Common checks of a shape, as unsupported() reasons. */
static inline const char *attn_shape_basics(const AttnShape *s) {
    if (s->B < 1 || s->T < 1 || s->H < 1 || s->D < 1) return "empty shape";
    if (s->dtype != ATTN_FP32 && s->dtype != ATTN_BF16 && s->dtype != ATTN_FP16) return "unknown dtype";
    if (s->mask.kind < 0 || s->mask.kind >= ATTN_NUM_MASKS) return "unknown mask";
    if (s->mask.kind == ATTN_MASK_DENSE && !s->mask.bias) return "dense mask without bias";
    if (s->ld_qkv < s->H * s->D || s->ld_o < s->H * s->D) return "leading dimension < H*D";
    return NULL;
}

#endif
