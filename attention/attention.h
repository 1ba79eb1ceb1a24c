/* attention/attention.h: the whole contract of the attention layer.
 *
 * Three algorithms compute the same function, chosen at run time:
 *   naive   materialises S = scale * Q K^T + bias (T x T per head), P = softmax(S), O = P V;
 *           backward reads the stored P.                                   O(T^2) memory
 *   memeff  tiles over keys with an online softmax (running max m and sum l), keeps only the
 *           per-row log-sum-exp L = m + log(l); backward recomputes P = exp(S - L) tile by tile.
 *   flash   the same math organised as FlashAttention-2: outer loop over query tiles, inner
 *           loop over key tiles; backward first computes D = rowsum(dO * O), then
 *           dS = P * (dP - D) with dP = dO V^T.                                 O(T) memory
 *
 * Each algorithm exists for the CPU (plain C, fp32: the oracle) and for CUDA. Both implement
 * the AttnImpl table below; attention.c holds the tables. Adding a kernel is one new file and
 * one line in a table.
 *
 * Layout (token-major, so GPT-2's fused QKV projection feeds it without a transpose):
 *   element (b, t, h, d) of Q, K, V, dQ, dK, dV lives at X[(b*T + t)*ld_qkv + h*D + d]
 *   element (b, t, h, d) of O and dO            lives at X[(b*T + t)*ld_o   + h*D + d]
 * For a packed qkv buffer of shape (B, T, 3C), C = H*D: q = qkv, k = qkv + C, v = qkv + 2C,
 * ld_qkv = 3C; the output (B, T, C) has ld_o = C. dQ, dK, dV are overwritten, not accumulated.
 *
 * Mask (additive-bias minded): S[b,h,i,j] = scale * q_i . k_j + bias[b,h,i,j], where
 *   NONE    bias = 0
 *   CAUSAL  bias = -inf for j > i
 *   DENSE   bias read from a float array at
 *           bias[b*stride_b + h*stride_h + i*stride_row + j]; a stride of 0 broadcasts, so one
 *           T x T matrix serves every batch and head without a copy. Rows that are entirely
 *           -inf produce O = 0 and zero gradients.
 * The bias is a constant: no gradient flows into it.
 *
 * Buffers: `saved` is written by forward and read by backward (per layer, part of the
 * activation memory: P for naive, L = log-sum-exp (B, H, T) floats for memeff and flash);
 * `workspace` is scratch for one call. Both sizes come from the impl's query functions and may
 * be 0 (then NULL may be passed).
 */
#ifndef ATTENTION_H
#define ATTENTION_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { ATTN_NAIVE = 0, ATTN_MEMEFF, ATTN_FLASH, ATTN_NUM_KERNELS, ATTN_AUTO = -1 } AttnKernel;
typedef enum { ATTN_MASK_NONE = 0, ATTN_MASK_CAUSAL, ATTN_MASK_DENSE, ATTN_NUM_MASKS } AttnMaskKind;
typedef enum { ATTN_FP32 = 0, ATTN_BF16, ATTN_NUM_DTYPES } AttnDtype;
typedef enum { ATTN_CPU = 0, ATTN_CUDA, ATTN_NUM_PLACES } AttnPlace;

typedef struct {
    AttnMaskKind kind;
    const float *bias;                       /* DENSE only; fp32 in every dtype */
    long long stride_b, stride_h, stride_row; /* in elements; 0 broadcasts */
} AttnMask;

typedef struct {
    int B, T, H, D;
    float scale;      /* usually 1/sqrt(D) */
    int ld_qkv;       /* elements between consecutive tokens of q, k, v, dq, dk, dv */
    int ld_o;         /* elements between consecutive tokens of o, dout */
    AttnMask mask;
    AttnDtype dtype;  /* element type of q, k, v, o and their gradients */
} AttnShape;

/* One algorithm on one place. Functions return 0 on success, non-zero on failure.
 * unsupported() returns NULL when the shape is supported, else a short reason. */
typedef struct {
    AttnKernel kernel;
    AttnPlace place;
    const char *(*unsupported)(const AttnShape *s);
    size_t (*saved_bytes)(const AttnShape *s);
    size_t (*workspace_bytes)(const AttnShape *s);
    int (*forward)(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                   void *saved, void *workspace, void *stream);
    int (*backward)(const AttnShape *s, const void *q, const void *k, const void *v,
                    const void *o, const void *dout, const void *saved,
                    void *dq, void *dk, void *dv, void *workspace, void *stream);
} AttnImpl;

/* Names: "naive", "memeff", "flash" (and "auto" for ATTN_AUTO). */
const char *attn_kernel_name(AttnKernel k);
int attn_kernel_from_name(const char *name, AttnKernel *out); /* 0 ok, -1 unknown */
const char *attn_mask_name(AttnMaskKind m);
int attn_mask_from_name(const char *name, AttnMaskKind *out);
const char *attn_dtype_name(AttnDtype d);

/* The implementation of `k` on `place`, or NULL if this build has none. */
const AttnImpl *attn_impl(AttnKernel k, AttnPlace place);

/* Fill a shape for GPT-2's packed QKV layout (ld_qkv = 3*H*D, ld_o = H*D, scale = 1/sqrt(D)). */
AttnShape attn_shape_packed(int B, int T, int H, int D, AttnMaskKind mask, AttnDtype dtype);

/* ATTN_AUTO: the kernel this build expects to be fastest for the shape on `place` among those
 * that support it (on the CPU: flash; on CUDA: flash, else memeff, else naive). */
AttnKernel attn_resolve_auto(const AttnShape *s, AttnPlace place);

#ifdef __cplusplus
}
#endif
#endif
