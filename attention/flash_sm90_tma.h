/* attention/flash_sm90_tma.h: the warp-specialised Hopper forward of the flash attention (TMA
 * loads by a producer warp, mbarrier rings, intra-warpgroup overlap; attention/flash_sm90_tma.cu),
 * used by flash.cu's flash-tma variant (its backward: flash_sm90_tma_bwd.cu), and the tensor-map
 * helpers that both share. */
#ifndef ATTENTION_FLASH_SM90_TMA_H
#define ATTENTION_FLASH_SM90_TMA_H

#include <cuda.h> /* CUtensorMap and its enums (types only: nothing links against the driver library) */
#include <cuda_runtime.h>
#include "attention/attention.h"

/* NULL where the TMA forward runs s, else why not: everything flash_sm90_refuses() refuses, and
 * what the tensor maps need (ld_qkv, ld_o multiples of 8 elements, the driver's encoder). The one
 * place that decides whether flash-tma runs a shape. */
const char *flash_tma_refuses(const AttnShape *s);

/* cuTensorMapEncodeTiled (the driver's, looked up through the runtime) with the settings both
 * flash-tma kernels use: unit element strides, no interleave, 256-byte L2 promotion, zeros read
 * (and reduce-adds clipped) outside the tensor. CUDA_ERROR_NOT_SUPPORTED without the encoder. */
CUresult flash_tma_encode(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank, const void *base,
                          const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box, CUtensorMapSwizzle swz);

/* The 3-D tensor map (columns, tokens, sequences) of a token-major 16-bit tensor whose rows are
 * ld elements apart, cols wide (its heads): boxes of 64 columns x box_rows tokens, 128-byte
 * swizzle (wgmma_sm90.cuh's SW128 panels); tokens past T read as zeros. 0, or 1 after
 * attn_cuda_fail. Defined in an sm_90a build only. */
int flash_tma_map_tokens(CUtensorMap *map, const void *base, AttnDtype dtype, int cols, int T, int B, long long ld,
                         int box_rows);

/* O and L (natural log-sum-exp per row, +inf for a row that saw no key), exactly what
 * flash_sm90_forward writes. counter: one int of device scratch (the persistent blocks' tile
 * counter, zeroed on the stream here by a one-thread kernel). -1 where flash_tma_refuses(s),
 * else 0, or 1 on a CUDA error. */
int flash_tma_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                      int *counter, cudaStream_t stream);

#endif
