/* attention/attention_cuda.h: the CUDA implementations of attention.h's AttnImpl (naive.cu,
 * memeff.cu, flash.cu, flash_sm90.cu, flash_sm90_tma.cu), declared so that their definitions get C linkage; callers
 * reach them (and cudnn.cu's attn_cudnn_cuda, which says extern "C" itself) through
 * attn_impl(kernel, ATTN_CUDA), the registry of attention.c. */
#ifndef ATTENTION_CUDA_H
#define ATTENTION_CUDA_H

#include "attention/attention.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const AttnImpl attn_naive_cuda;
extern const AttnImpl attn_memeff_cuda;
extern const AttnImpl attn_flash_cuda;
extern const AttnImpl attn_flash_mma_cuda;  /* flash-mma: the mma.sync kernels alone (every GPU) */
extern const AttnImpl attn_flash_sm90_cuda; /* flash-sm90: the Hopper (wgmma) kernels, sm_90 only */
extern const AttnImpl attn_flash_tma_cuda;  /* flash-tma: flash-sm90 with the TMA, warp-specialised forward */

/* The text of the last failure of a CUDA attention call ("" if none). */
const char *attn_cuda_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
