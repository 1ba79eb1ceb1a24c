/* attention/attention_api.cu: the plain C API of attention_api.h over attn_cuda_table. */
#include <math.h>
#include <string.h>
#include "attention/attention_api.h"
#include "attention/cuda_common.cuh"

extern "C" const AttnImpl *const attn_cuda_table[ATTN_NUM_IMPLS];

static int lookup(const char *name, const char *const *names, int n) {
    for (int i = 0; name && i < n; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

/* Builds the shape and finds the impl; on failure returns the error code (message recorded). */
static int prepare(const char *kernel, const char *mask, const char *dtype, int B, int T, int H,
                   int D, int ld_qkv, int ld_o, float scale, const float *bias, long long sb,
                   long long sh, long long srow, AttnShape *s, const AttnImpl **impl) {
    static const char *const kernels[] = {"naive", "memeff", "flash"};
    static const char *const masks[] = {"none", "causal", "dense"};
    static const char *const dtypes[] = {"fp32", "bf16"};
    int ki = lookup(kernel, kernels, 3), mi = lookup(mask, masks, 3), di = lookup(dtype, dtypes, 2);
    if (ki < 0) { attn_cuda_fail("unknown kernel '%s'", kernel ? kernel : "(null)"); return ATTN_LIB_BAD_ARGUMENT; }
    if (mi < 0) { attn_cuda_fail("unknown mask '%s'", mask ? mask : "(null)"); return ATTN_LIB_BAD_ARGUMENT; }
    if (di < 0) { attn_cuda_fail("unknown dtype '%s'", dtype ? dtype : "(null)"); return ATTN_LIB_BAD_ARGUMENT; }
    memset(s, 0, sizeof *s);
    s->B = B; s->T = T; s->H = H; s->D = D;
    s->scale = scale > 0.0f ? scale : 1.0f / sqrtf((float)(D > 0 ? D : 1));
    s->ld_qkv = ld_qkv; s->ld_o = ld_o;
    s->mask.kind = (AttnMaskKind)mi;
    if (mi == ATTN_MASK_DENSE) {
        s->mask.bias = bias;
        s->mask.stride_b = sb; s->mask.stride_h = sh; s->mask.stride_row = srow;
    }
    s->dtype = (AttnDtype)di;
    *impl = attn_cuda_table[ki];
    if (!*impl) { attn_cuda_fail("kernel '%s' not built", kernel); return ATTN_LIB_UNSUPPORTED; }
    const char *why = attn_shape_problem(s);
    if (why) { attn_cuda_fail("%s", why); return ATTN_LIB_BAD_ARGUMENT; }
    why = (*impl)->unsupported(s);
    if (why) { attn_cuda_fail("%s", why); return ATTN_LIB_UNSUPPORTED; }
    return ATTN_LIB_OK;
}

extern "C" int attn_lib_buffer_sizes(const char *kernel, const char *mask, const char *dtype, int B,
                                     int T, int H, int D, size_t *saved_bytes, size_t *workspace_bytes) {
    AttnShape s;
    const AttnImpl *impl;
    static const float no_bias = 0.0f; /* sizes do not depend on the bias itself */
    int rc = prepare(kernel, mask, dtype, B, T, H, D, 3 * H * D, H * D, 0.0f, &no_bias, 0, 0, 0,
                     &s, &impl);
    if (rc) return rc;
    if (saved_bytes) *saved_bytes = impl->saved_bytes(&s);
    if (workspace_bytes) *workspace_bytes = impl->workspace_bytes(&s);
    return ATTN_LIB_OK;
}

extern "C" int attn_lib_forward(const char *kernel, const char *mask, const char *dtype, int B, int T,
                                int H, int D, int ld_qkv, int ld_o, float scale, const float *bias,
                                long long sb, long long sh, long long srow, const void *q,
                                const void *k, const void *v, void *o, void *saved, void *workspace,
                                void *stream) {
    AttnShape s;
    const AttnImpl *impl;
    int rc = prepare(kernel, mask, dtype, B, T, H, D, ld_qkv, ld_o, scale, bias, sb, sh, srow, &s, &impl);
    if (rc) return rc;
    return impl->forward(&s, q, k, v, o, saved, workspace, stream) ? ATTN_LIB_CUDA_ERROR : ATTN_LIB_OK;
}

extern "C" int attn_lib_backward(const char *kernel, const char *mask, const char *dtype, int B, int T,
                                 int H, int D, int ld_qkv, int ld_o, float scale, const float *bias,
                                 long long sb, long long sh, long long srow, const void *q,
                                 const void *k, const void *v, const void *o, const void *dout,
                                 const void *saved, void *dq, void *dk, void *dv, void *workspace,
                                 void *stream) {
    AttnShape s;
    const AttnImpl *impl;
    int rc = prepare(kernel, mask, dtype, B, T, H, D, ld_qkv, ld_o, scale, bias, sb, sh, srow, &s, &impl);
    if (rc) return rc;
    return impl->backward(&s, q, k, v, o, dout, saved, dq, dk, dv, workspace, stream)
               ? ATTN_LIB_CUDA_ERROR : ATTN_LIB_OK;
}

extern "C" const char *attn_lib_last_error(void) { return attn_cuda_last_error(); }
