/* attention/flash_sm90_tma_bwd.h: flash-tma's backward main kernel on Hopper in FlashAttention-3's
 * design (TMA loads by a producer warp into mbarrier rings, dK / dV in registers across query
 * tiles, dQ added into the fp32 accumulator by TMA reduce-adds; attention/flash_sm90_tma_bwd.cu).
 * flash.cu runs the row kernels around it (D_i = rowsum(dO * O) and the zeroed accumulator
 * before, dQ's conversion after), exactly as around flash_sm90_backward_main. */
#ifndef ATTENTION_FLASH_SM90_TMA_BWD_H
#define ATTENTION_FLASH_SM90_TMA_BWD_H

#include <cuda_runtime.h>
#include "attention/attention.h"
#include "attention/flash_sm90.h"

/* dK, dV and the fp32 dQ accumulator (D = 64 or 128, causal or no mask, with the rest of the mask
 * family: window, documents, key padding, ALiBi; bf16 or fp16, GQA). -1 where it does not apply
 * (everything flash_tma_refuses() refuses, a dense bias among them; L, D_i or the accumulator not
 * 16-byte aligned), so the caller runs flash-sm90's backward; otherwise 0, or 1 on a CUDA error. */
int flash_tma_backward_main(const AttnShape *s, const AttnIO *a, cudaStream_t stream);

#endif
