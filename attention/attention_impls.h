/* attention/attention_impls.h: the CPU implementation objects behind attn_impl() (internal).
 *
 * attention.c's registry points at these (strongly, so that linking attention.o pulls them out of
 * libcpu.a); they are defined in attention/<kernel>_cpu.c. The CUDA objects are declared weakly in
 * attention.c itself (attention_cuda.h declares them for CUDA code).
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

#ifdef __cplusplus
}
#endif
#endif
