/* attention/flash_sm90_tma.h: the warp-specialised Hopper forward of the flash attention (TMA
 * loads by a producer warp, mbarrier rings, intra-warpgroup overlap; attention/flash_sm90_tma.cu),
 * used by flash.cu's flash-tma variant, whose backward is flash-sm90's. */
#ifndef ATTENTION_FLASH_SM90_TMA_H
#define ATTENTION_FLASH_SM90_TMA_H

#include <cuda_runtime.h>
#include "attention/attention.h"

/* NULL where the TMA forward runs s, else why not: everything flash_sm90_refuses() refuses, and
 * what the tensor maps need (ld_qkv, ld_o multiples of 8 elements, the driver's encoder). The one
 * place that decides whether flash-tma runs a shape. */
const char *flash_tma_refuses(const AttnShape *s);

/* O and L (natural log-sum-exp per row, +inf for a row that saw no key), exactly what
 * flash_sm90_forward writes. -1 where flash_tma_refuses(s), else 0, or 1 on a CUDA error. */
int flash_tma_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                      cudaStream_t stream);

#endif
