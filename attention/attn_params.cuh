/* attention/attn_params.cuh: the one parameter struct of every tiled attention kernel (flash.cu's
 * mma.sync kernels, flash_sm90.cu's wgmma ones, flash_sm90_tma.cu's and flash_sm90_tma_bwd.cu's
 * TMA ones, memeff.cu's tensor-core and CUDA-core ones), and the host-side builder that fills it
 * from an AttnShape and the call's buffers.
 *
 * Every kernel reads the fields it needs and ignores the rest: a forward never touches dq or
 * dout, the TMA kernels read q, k, v (and dO, L, D_i, the dQ accumulator) through tensor maps
 * and take only what they write from here, and the plain (non-EXTRA) instantiations never read
 * x or bias. One struct instead of one per kernel means the fields the kernels share (the
 * geometry, the scale, the mask) are filled in one place, by attn_params(), the same way for all.
 */
#ifndef ATTENTION_ATTN_PARAMS_CUH
#define ATTENTION_ATTN_PARAMS_CUH

#include <string.h>
#include "attention/cuda_common.cuh"
#include "attention/flash_mask.cuh"
#include "attention/tc_attention.cuh"

/* The buffers of one call as attention.h's entry points take them (untyped; a pointer a pass
 * does not use is NULL): the inputs q, k, v and, backward, o and dout; the outputs out (forward)
 * or dq, dk, dv; L (`saved`), and the backward's D_i and fp32 dQ accumulator (in the workspace,
 * where a kernel has them). */
struct AttnIO {
    const void *q, *k, *v, *o, *dout;
    void *out, *dq, *dk, *dv;
    float *lse, *dvec, *dq_accum;
};

/* The kernels' parameters for element type E (bf16, fp16, or fp32 for memeff). */
template <typename E> struct AttnParams {
    const E *q, *k, *v, *o, *dout;
    E *out, *dq, *dk, *dv;
    float *lse, *dvec, *dq_accum; /* L (B, H, T); D_i (B, H, T); dQ's fp32 accumulator (B, H, T, D) */
    int T, H;
    int Hkv, group;               /* K/V heads and query heads per K/V head (H = Hkv * group) */
    int ld_qkv, ld_o;             /* as AttnShape's (int): every product with them is taken in 64 bits */
    float scale, scale_log2;      /* scale_log2 = scale * log2(e): the base-2 softmax's */
    int kind;                     /* AttnMaskKind: memeff's plain kernels read it at run time */
    int dbias_atomic;             /* memeff: 1 when a stride of 0 shares dbias entries between blocks */
    FlashMask x;                  /* window, documents, key padding, ALiBi: read by the EXTRA kernels */
    FlashBias bias;               /* the dense bias and its gradient, where a kernel reads them */
};

/* The fields every kernel shares, from the shape, and the buffers, typed: the geometry, the scale
 * in both units, the mask kind, and the mask's pieces (FlashMask, FlashBias) as the caller gave
 * them. The mask is filled whatever the shape: without flash_mask_has_extras(s) its pointers are
 * NULL and its window 0, which is what the kernels that read it expect, and its inv_scale is
 * what a dense bias alone is scaled by. dbias_atomic is left 0 (memeff_params sets it). */
template <typename E> static AttnParams<E> attn_params(const AttnShape *s, const AttnIO &io) {
    AttnParams<E> p;
    memset(&p, 0, sizeof p);
    p.q = (const E *)io.q; p.k = (const E *)io.k; p.v = (const E *)io.v;
    p.o = (const E *)io.o; p.dout = (const E *)io.dout;
    p.out = (E *)io.out; p.dq = (E *)io.dq; p.dk = (E *)io.dk; p.dv = (E *)io.dv;
    p.lse = io.lse; p.dvec = io.dvec; p.dq_accum = io.dq_accum;
    p.T = s->T; p.H = s->H;
    p.Hkv = attn_kv_heads(s); p.group = s->H / p.Hkv;
    p.ld_qkv = s->ld_qkv; p.ld_o = s->ld_o;
    p.scale = s->scale;
    p.scale_log2 = s->scale * LOG2E_F;
    p.kind = (int)s->mask.kind;
    p.x = flash_mask(s);
    p.bias = flash_bias(s);
    return p;
}

/* Query head h's ALiBi slope in the unscaled units the kernels add it in (slope / scale), or 0
 * without ALiBi. */
__device__ __forceinline__ float flash_mask_slope(const FlashMask &x, int h) {
    return x.slopes ? __ldg(x.slopes + h) * x.inv_scale : 0.0f;
}

/* The kind and dense bias as mask_tile and mask_bias read them (MaskDev: the plain kernels'
 * view, whose DENSE bias is the same array as p.bias's). */
template <typename E> __device__ __forceinline__ MaskDev attn_mask_dev(const AttnParams<E> &p) {
    return MaskDev{p.kind, p.bias.bias, p.bias.stride_b, p.bias.stride_h, p.bias.stride_row};
}

#endif
