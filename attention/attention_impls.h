/* attention/attention_impls.h: the implementation objects behind attn_impl() (internal).
 *
 * attention.c builds its tables from these. The CPU impls live in attention/<kernel>_cpu.c.
 * The CUDA table is indexed by AttnKernel; an entry may be NULL (no such kernel on CUDA).
 * cuda_fallback.c gives a weak all-NULL definition so that CPU-only builds link; the CUDA
 * build's attention/cuda_table.cu provides the strong one (inside extern "C").
 */
#ifndef ATTENTION_IMPLS_H
#define ATTENTION_IMPLS_H

#include "attention/attention.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const AttnImpl attn_naive_cpu;
extern const AttnImpl attn_memeff_cpu;
extern const AttnImpl attn_flash_cpu;

extern const AttnImpl *const attn_cuda_table[ATTN_NUM_IMPLS];

#ifdef __cplusplus
}
#endif
#endif
