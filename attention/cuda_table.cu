/* attention/cuda_table.cu: the CUDA implementations, in AttnKernel order. This strong definition
 * replaces the weak CPU-only one of attention/cuda_fallback.c when the CUDA objects are linked.
 * Also the error text shared by the CUDA attention code. */
#include <stdarg.h>
#include <stdio.h>
#include "attention/cuda_common.cuh"
#include "attention/attention_impls.h"

extern "C" const AttnImpl *const attn_cuda_table[ATTN_NUM_IMPLS] = {
    &attn_naive_cuda, &attn_memeff_cuda, &attn_flash_cuda, &attn_flash_sm90_cuda, &attn_flash_mma_cuda};

static char attn_cuda_error_text[512];

int attn_cuda_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(attn_cuda_error_text, sizeof attn_cuda_error_text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "attention (cuda): %s\n", attn_cuda_error_text);
    return 1;
}

extern "C" const char *attn_cuda_last_error(void) { return attn_cuda_error_text; }
