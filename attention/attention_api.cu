/* attention/attention_api.cu: the plain C API of attention_api.h over the registry's CUDA column
 * (attn_impl(kernel, ATTN_CUDA)); kernel and mask names are the registry's (attention.c). */
#include <math.h>
#include <string.h>
#include <string>
#include "attention/attention_api.h"
#include "attention/cuda_common.cuh"

/* Builds the shape and finds the impl; on failure returns the error code (message recorded). */
static int prepare(const char *kernel, const char *mask, const char *dtype, int B, int T, int H,
                   int D, int ld_qkv, int ld_o, float scale, const float *bias, long long sb,
                   long long sh, long long srow, AttnShape *s, const AttnImpl **impl) {
    AttnKernel k;
    AttnMaskKind mk;
    int di = -1;
    for (int i = 0; dtype && i < ATTN_NUM_DTYPES; i++)
        if (!strcmp(dtype, attn_dtype_name((AttnDtype)i))) di = i;
    if (attn_kernel_from_name(kernel, &k) != 0 || k == ATTN_AUTO) {
        attn_cuda_fail("unknown kernel '%s' (expected one of %s)", kernel ? kernel : "(null)", attn_kernel_names_list());
        return ATTN_LIB_BAD_ARGUMENT;
    }
    if (attn_mask_from_name(mask, &mk) != 0) { attn_cuda_fail("unknown mask '%s'", mask ? mask : "(null)"); return ATTN_LIB_BAD_ARGUMENT; }
    if (di < 0) { attn_cuda_fail("unknown dtype '%s'", dtype ? dtype : "(null)"); return ATTN_LIB_BAD_ARGUMENT; }
    memset(s, 0, sizeof *s);
    s->B = B; s->T = T; s->H = H; s->D = D;
    s->scale = scale > 0.0f ? scale : 1.0f / sqrtf((float)(D > 0 ? D : 1));
    s->ld_qkv = ld_qkv; s->ld_o = ld_o;
    s->mask.kind = mk;
    if (mk == ATTN_MASK_DENSE) {
        s->mask.bias = bias;
        s->mask.stride_b = sb; s->mask.stride_h = sh; s->mask.stride_row = srow;
    }
    s->dtype = (AttnDtype)di;
    *impl = attn_impl(k, ATTN_CUDA);
    if (!*impl) { attn_cuda_fail("kernel '%s' not built into this library", kernel); return ATTN_LIB_UNSUPPORTED; }
    const char *why = attn_shape_basics(s);
    if (why) { attn_cuda_fail("%s", why); return ATTN_LIB_BAD_ARGUMENT; }
    why = (*impl)->unsupported(s);
    if (why) { attn_cuda_fail("%s", why); return ATTN_LIB_UNSUPPORTED; }
    return ATTN_LIB_OK;
}

extern "C" const char *attn_lib_kernel_names(void) {
    /* the registry's names that this library has a CUDA implementation of (built once, thread-safe) */
    static const std::string list = [] {
        std::string l;
        for (int i = 0; i < ATTN_NUM_IMPLS; i++)
            if (attn_impl((AttnKernel)i, ATTN_CUDA)) l += (l.empty() ? "" : ",") + std::string(attn_kernel_name((AttnKernel)i));
        return l;
    }();
    return list.c_str();
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
