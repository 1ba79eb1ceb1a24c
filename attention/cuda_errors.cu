/* attention/cuda_errors.cu: the error text shared by the CUDA attention code (attn_cuda_fail,
 * attn_cuda_last_error). The CUDA kernels themselves reach the registry through attention.c. */
#include <stdarg.h>
#include <stdio.h>
#include "attention/cuda_common.cuh"

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
