/* attention/cuda_fallback.c: the CUDA kernel table of a build without CUDA: all NULL.
 *
 * Weak, so that attention/cuda_table.cu's strong definition replaces it in a CUDA build. */
#include "attention/attention_impls.h"

__attribute__((weak)) const AttnImpl *const attn_cuda_table[ATTN_NUM_IMPLS] = {0};
