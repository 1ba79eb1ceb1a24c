/* attention/cpu_common.c: shape checks shared by the CPU kernels. */
#include <stdint.h>
#include <stdio.h>
#include "attention/cpu_common.h"

/* Bytes of a token-major tensor of B*T rows with leading dimension ld, or 0 on overflow. */
static size_t tensor_bytes(int B, int T, int ld) {
    size_t rows, elems, bytes;
    if (__builtin_mul_overflow((size_t)B, (size_t)T, &rows)) return 0;
    if (__builtin_mul_overflow(rows, (size_t)ld, &elems)) return 0;
    if (__builtin_mul_overflow(elems, sizeof(float), &bytes)) return 0;
    return bytes;
}

const char *attn_cpu_unsupported(const AttnShape *s) {
    if (!s) return "no shape given";
    if (s->dtype != ATTN_FP32) return "the CPU kernels compute in fp32 only";
    if (s->B < 1 || s->T < 1 || s->H < 1 || s->D < 1) return "B, T, H and D must be >= 1";
    long long width = (long long)s->H * s->D;
    if (width > INT32_MAX) return "H*D is too large";
    if (s->ld_qkv < width || s->ld_o < width) return "ld_qkv and ld_o must be >= H*D";
    if (!tensor_bytes(s->B, s->T, s->ld_qkv) || !tensor_bytes(s->B, s->T, s->ld_o))
        return "tensors too large for this machine's address space";
    if (!isfinite(s->scale)) return "scale must be finite";
    switch (s->mask.kind) {
    case ATTN_MASK_NONE:
    case ATTN_MASK_CAUSAL:
        break;
    case ATTN_MASK_DENSE:
        if (!s->mask.bias) return "a dense mask needs a bias array";
        if (s->mask.stride_b < 0 || s->mask.stride_h < 0 || s->mask.stride_row < 0)
            return "dense mask strides must be >= 0";
        break;
    default:
        return "unknown mask kind";
    }
    return NULL;
}

int attn_cpu_check_call(const char *why_unsupported, const char *who, int pointers_present) {
    const char *why = why_unsupported;
    if (!why && !pointers_present) why = "a required buffer is NULL";
    return why ? attn_cpu_error(who, why) : 0;
}

int attn_cpu_error(const char *who, const char *why) {
    fprintf(stderr, "attention: %s: %s\n", who, why);
    return -1;
}
