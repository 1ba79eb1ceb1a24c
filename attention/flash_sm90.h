/* attention/flash_sm90.h: the Hopper (wgmma) kernels of the flash attention, used by flash.cu.
 * flash_sm90_forward (and _backward_main) return -1 where it does not apply (not built for sm_90a, not a compute
 * capability 9.0 device, head dimension other than 64/128 (backward: 64), dense bias), so the
 * caller runs its portable kernels; otherwise 0, or 1 on a CUDA error. They read the rest of the
 * mask family (window, documents, key padding, ALiBi) and grouped-query K/V heads. */
#ifndef ATTENTION_FLASH_SM90_H
#define ATTENTION_FLASH_SM90_H

#include <cuda_runtime.h>
#include "attention/attention.h"

bool flash_sm90_enabled(void);
/* NULL where the Hopper kernels run s (forward; the backward's main kernel at D = 64), else why not:
 * the one place that decides between flash-sm90 and flash-mma. */
const char *flash_sm90_refuses(const AttnShape *s);

/* The backward's main kernel (dK, dV and the fp32 dQ accumulator) on wgmma, D = 64; flash.cu
 * runs the row kernels around it (D_i and zeroing the accumulator before, dQ's conversion after).
 * Of the call's buffers (AttnIO, attn_params.cuh) it reads q, k, v, dout, lse and dvec, writes dk
 * and dv, and adds into dq_accum. */
struct AttnIO;
int flash_sm90_backward_main(const AttnShape *s, const AttnIO *a, cudaStream_t stream);
int flash_sm90_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                       cudaStream_t stream);

#endif
