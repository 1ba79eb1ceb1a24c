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
 * A fourth, cudnn, is NVIDIA's: cuDNN's fused flash attention, on CUDA only (a reference).
 *
 * Each algorithm exists for the CPU (plain C, fp32: the oracle) and for CUDA. Both implement
 * the AttnImpl table below; attention.c holds the registry, one row per kernel (name, CPU impl,
 * CUDA impl, rank for auto). Adding a kernel is one new file, one row and its enum value below
 * (cudnn, cuDNN's fused attention, was added so; attention/README.md counts the files).
 *
 * Layout (token-major, so GPT-2's fused QKV projection feeds it without a transpose):
 *   element (b, t, h, d) of Q, K, V, dQ, dK, dV lives at X[(b*T + t)*ld_qkv + h*D + d]
 *   element (b, t, h, d) of O and dO            lives at X[(b*T + t)*ld_o   + h*D + d]
 * For a packed qkv buffer of shape (B, T, 3C), C = H*D: q = qkv, k = qkv + C, v = qkv + 2C,
 * ld_qkv = 3C; the output (B, T, C) has ld_o = C. dQ, dK, dV are overwritten, not accumulated.
 *
 * Grouped-query attention: K and V have Hkv heads (Hkv divides H; Hkv = H is plain multi-head,
 * Hkv = 1 multi-query); query head h reads K/V head h / (H / Hkv) in place, without a copy, and
 * dK, dV of a K/V head are the sums over its group of query heads. Element (b, t, g, d) of K, V,
 * dK, dV lives at X[(b*T + t)*ld_qkv + g*D + d], g < Hkv. GPT-2's packed projection of
 * C + 2*Hkv*D outputs: q = qkv, k = qkv + C, v = qkv + C + Hkv*D, ld_qkv = C + 2*Hkv*D.
 *
 * Mask and bias (additive-bias minded, composable): for query i and key j of sequence b, head h,
 *   S[b,h,i,j] = scale * q_i . k_j + bias[b,h,i,j] - slope[h] * |i - j|    or -inf if masked,
 *   masked(i, j) = (causal && j > i)
 *               || (window > 0 && (causal ? j <= i - window : |i - j| >= window))
 *               || (doc && doc[b*T + i] != doc[b*T + j])
 *               || (key_begin && j < key_begin[b]) || (key_end && j >= key_end[b])
 * with these pieces, each optional:
 *   kind     NONE (no structural mask), CAUSAL (j > i masked), or DENSE: no structural mask, the
 *            bias alone (the name kept for --mask dense, a causal mask given as a -inf bias)
 *   bias     additive float array (fp32 in every dtype) at
 *            bias[b*stride_b + h*stride_h + i*stride_row + j]; a stride of 0 broadcasts, so one
 *            T x T matrix serves every batch and head without a copy. Required with DENSE,
 *            allowed with CAUSAL and NONE (dense + causal).
 *   dbias    NULL: the bias is a constant (no gradient is computed or stored). Else backward
 *            ADDS dL/dbias into dbias, laid out with bias's strides: entries that a stride of 0
 *            broadcasts receive the sum over that dimension (the caller zeroes it first).
 *   window   sliding window: query i sees keys (i - window, i] when causal; 0 = none
 *   doc      packed documents: (B, T) ints, doc[b*T + t] = the position where t's document
 *            starts (non-decreasing in t); attention never crosses a document boundary.
 *            attn_doc_from_starts() builds it from per-sequence document starts (varlen).
 *   key_begin, key_end   key padding: (B) ints each, the valid keys of sequence b are
 *            [key_begin[b], key_end[b]) (left padding: key_begin > 0; right padding: key_end < T);
 *            either may be NULL (no bound on that side)
 *   alibi_slopes   ALiBi: (H) floats, computed in the kernel; attn_alibi_slopes() gives the
 *            standard 2^(-8(h+1)/H).
 * Rows whose every key is masked (or -inf) produce O = 0 and zero gradients. A kernel that does
 * not implement a piece says so in unsupported(); a mask that removes whole key tiles lets a
 * tiled kernel skip them, so cost follows the unmasked area.
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

/* The kernels of the registry (attention.c, one row each). First the algorithms that exist on both
 * places (ATTN_NUM_KERNELS of them: the CPU ones are the oracle), then CUDA-only entries: the
 * variants of one algorithm (flash on CUDA is flash-sm90, the Hopper wgmma kernels on compute
 * capability 9.0, or flash-mma, the mma.sync kernels of every GPU; attn_resolve() turns flash into
 * the one that runs) and cudnn, cuDNN's fused attention (attention/cudnn.cu, built where cuDNN
 * and its frontend are found; no CPU counterpart). flash-tma, the TMA, warp-specialised kernels
 * (attention/flash_sm90_tma.cu, flash_sm90_tma_bwd.cu), is the variant flash resolves to first on
 * Hopper. */
typedef enum {
    ATTN_NAIVE = 0, ATTN_MEMEFF, ATTN_FLASH, ATTN_NUM_KERNELS,
    ATTN_FLASH_SM90 = ATTN_NUM_KERNELS, ATTN_FLASH_MMA, ATTN_CUDNN, ATTN_FLASH_TMA, ATTN_NUM_IMPLS,
    ATTN_AUTO = -1
} AttnKernel;
typedef enum { ATTN_MASK_NONE = 0, ATTN_MASK_CAUSAL, ATTN_MASK_DENSE, ATTN_NUM_MASKS } AttnMaskKind;
/* Element types of q, k, v, o and their gradients. Every kernel computes scores, softmax and
 * accumulators in fp32 whatever the element type; bf16 and fp16 round only what is stored or fed
 * to a 16-bit GEMM (P, dS, the outputs). fp16 outputs assume |x| < 65504 (an overflow is inf); a
 * gradient below fp16's subnormal range (~6e-8) rounds to 0 unless the caller scales the loss. The
 * CPU kernels are fp32 only. */
typedef enum { ATTN_FP32 = 0, ATTN_BF16, ATTN_FP16, ATTN_NUM_DTYPES } AttnDtype;
typedef enum { ATTN_CPU = 0, ATTN_CUDA, ATTN_NUM_PLACES } AttnPlace;

typedef struct {
    AttnMaskKind kind;
    const float *bias;                       /* required with DENSE, optional otherwise; fp32 */
    long long stride_b, stride_h, stride_row; /* of bias and dbias, in elements; 0 broadcasts */
    float *dbias;                            /* NULL: constant bias; else backward adds dL/dbias */
    int window;                              /* > 0: sliding window of this many keys */
    const int *doc;                          /* NULL, or (B, T) document starts per token */
    const int *key_begin, *key_end;          /* NULL, or (B) each: the valid keys [begin, end) */
    const float *alibi_slopes;               /* NULL, or (H) ALiBi slopes */
} AttnMask;

typedef struct {
    int B, T, H, D;
    int Hkv;          /* heads of K and V (dividing H); 0 means H */
    float scale;      /* usually 1/sqrt(D) */
    int ld_qkv;       /* elements between consecutive tokens of q, k, v, dq, dk, dv */
    int ld_o;         /* elements between consecutive tokens of o, dout */
    AttnMask mask;
    AttnDtype dtype;  /* element type of q, k, v, o and their gradients */
    int tf32;         /* fp32 only: 1 allows TF32 tensor cores for the products (inputs, P and dS
                       * rounded to 10-bit mantissas, fp32 accumulate; memeff uses it), 0 (the
                       * default of every constructor here and of the library API) keeps exact fp32 */
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

/* Names: the registry's ("naive", "memeff", "flash", "flash-sm90", "flash-mma", "cudnn", "flash-tma"), and
 * "auto" for ATTN_AUTO. */
const char *attn_kernel_name(AttnKernel k);
int attn_kernel_from_name(const char *name, AttnKernel *out); /* 0 ok, -1 unknown */
/* The kernel names of the registry, comma separated: "naive, memeff, flash, ..." (for help texts
 * and errors; "auto" not included). */
const char *attn_kernel_names_list(void);
/* 1 when k is a variant of another kernel (flash-sm90, flash-mma: reached through flash; flash-tma:
 * flash's too, by name only), else 0. */
int attn_kernel_is_variant(AttnKernel k);
const char *attn_mask_name(AttnMaskKind m);
int attn_mask_from_name(const char *name, AttnMaskKind *out);
const char *attn_dtype_name(AttnDtype d);

/* The implementation of `k` on `place`, or NULL if this build has none. */
const AttnImpl *attn_impl(AttnKernel k, AttnPlace place);

/* Fill a shape for GPT-2's packed QKV layout (ld_qkv = 3*H*D, ld_o = H*D, scale = 1/sqrt(D)). */
AttnShape attn_shape_packed(int B, int T, int H, int D, AttnMaskKind mask, AttnDtype dtype);

/* The same for grouped-query attention: K and V with Hkv heads, ld_qkv = (H + 2*Hkv)*D. */
AttnShape attn_shape_packed_gqa(int B, int T, int H, int Hkv, int D, AttnMaskKind mask, AttnDtype dtype);

/* K/V heads of a shape (Hkv, or H when Hkv is 0). */
static inline int attn_kv_heads(const AttnShape *s) { return s->Hkv > 0 ? s->Hkv : s->H; }

/* 1 when the mask holds any piece beyond kind NONE / CAUSAL / DENSE with a constant bias (what
 * the first kernels implemented): a window, documents, key padding, ALiBi, a bias with
 * CAUSAL or NONE, or a bias gradient. */
int attn_mask_has_extras(const AttnMask *m);

/* doc (B, T) from per-sequence document starts: sequence b's documents start at positions
 * starts[offsets[b]] .. starts[offsets[b+1]-1] (increasing; the first is 0, or position 0 is
 * taken to start one). 0, or -1 when a start is out of [0, T) or not increasing. */
int attn_doc_from_starts(int B, int T, const int *starts, const int *offsets, int *doc);

/* The standard ALiBi slopes for H heads: slope[h] = 2^(-8(h+1)/H). */
void attn_alibi_slopes(int H, float *slopes);

/* The kernel that runs a request: ATTN_AUTO as attn_resolve_auto, then an algorithm with variants
 * on `place` as the first variant that supports the shape (flash on an H200: flash-sm90 where its
 * kernels apply, else flash-mma). Anything else unchanged. */
AttnKernel attn_resolve(AttnKernel k, const AttnShape *s, AttnPlace place);

/* ATTN_AUTO: the kernel this build expects to be fastest for the shape on `place` among those
 * that support it, by the registry's auto rank (on the CPU: flash; on CUDA: flash, else memeff,
 * else naive, else cudnn, which is thus never chosen where one of ours runs). */
AttnKernel attn_resolve_auto(const AttnShape *s, AttnPlace place);

#ifdef __cplusplus
}
#endif
#endif
