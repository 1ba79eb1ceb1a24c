/* attention/naive.cu: "standard attention" on the GPU, the baseline the documents compare against.
 *
 *   forward   S = scale * Q K^T        cuBLAS, fp32 output (bf16, fp16: into the workspace; fp32:
 *                                      straight into `saved`)
 *             P = softmax(S + mask)    one kernel: reads S once, adds the bias and ALiBi, masks
 *                                      (causal, window, documents, key padding), writes P once
 *                                      into `saved` in the element type
 *             O = P V                  cuBLAS
 *   backward  dP = dO V^T              cuBLAS, fp32 output, in the workspace
 *             dS = P * (dP - rowsum(P * dP))   one kernel, fp32 math; written in the element
 *                                      type (bf16, fp16: its own workspace region; fp32: in place over
 *                                      dP) and, with a bias gradient, added into dbias
 *             dV = P^T dO,  dQ = scale * dS K,  dK = scale * dS^T Q      cuBLAS
 *
 * Precision: every GEMM accumulates in fp32 (CUBLAS_COMPUTE_32F, default math mode: no TF32).
 * In bf16 and fp16 (the 16-bit dtypes, CUDA_R_16BF / CUDA_R_16F inputs) only P (what `saved`
 * holds) and dS (a GEMM input) are rounded to the element type; S, dP, the softmax and
 * rowsum(P * dP) stay fp32, as in the fused kernels (so fp16 never holds a raw score, whose range
 * it could exceed). O, dQ, dK, dV are cuBLAS's fp32 results rounded to the element type. rowsum(P * dP) is taken from the
 * stored (rounded) P, which is the P that O = P V used.
 *
 * Memory: saved = B H T^2 elements (P, the element type). workspace = the GEMMs' pointer arrays
 * + B H T^2 fp32 (S in the 16-bit forward, dP in every backward) + B H T^2 16-bit (dS, 16-bit
 * dtypes only) + 2 B T Hkv D fp32 (16-bit with grouped-query attention only: dK and dV summed
 * over the group).
 * The GEMMs compute every score, masked or not: that is the standard design. The row kernels
 * read only the keys inside a row's interval (causal, window, key padding) and write exact
 * zeros outside it.
 *
 * Mask (attention.h): the structural pieces give each query row i one interval of keys
 * [lo, hi) (causal, window, key padding; closed form per row); documents are tested element by
 * element (doc[b, j] == doc[b, i]); the bias (any kind, broadcast strides) and ALiBi
 * (-slope[h] |i - j|) are added to the scaled score. A row that sees no key gets P = 0, hence
 * O = 0 and zero gradients. doc is not checked to be non-decreasing (it lives on the device);
 * the element test is attention.h's definition either way.
 *
 * Grouped-query attention: query head h reads K/V head g = h / (H / Hkv) in place: the pointer
 * arrays hold K/V head g's address for every query head of its group. dK and dV of head g are the
 * sums over the group: one GEMM call per position hl in the group, over all (b, g), with beta = 0
 * for hl = 0 and beta = 1 after (deterministic: a fixed order). fp32 accumulates straight into
 * dK/dV; bf16 and fp16 accumulate in an fp32 workspace array and round once at the end.
 *
 * Deterministic, except dbias when its strides broadcast (a stride of 0): dbias entries shared
 * by several (b, h, i) receive fp32 atomic adds, so their value is reproducible only up to
 * rounding order. Without broadcasting each entry receives one add, and the result is exact.
 *
 * Batching: GPT-2's packed layout puts head h of batch row b at b*T*ld + h*D, which no single
 * batch stride describes. Every GEMM is one cublasGemmBatchedEx call (per group position for the
 * dK/dV sums), with per-head pointer arrays that a small kernel writes into the workspace (no
 * permuted copies of Q/K/V). (Strided-batched calls, one per row of B or H, measured slower:
 * dev/attention_notes.md, naive v4.)
 *
 * cuBLAS is column-major; a row-major (rows x cols, ld) matrix is its column-major transpose. Per
 * head, Q/K/V are T x D row-major with ld = ld_qkv; S/P/dP/dS are T x T with ld = T.
 */
#include <cublas_v2.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "attention/cuda_common.cuh"

/* ---- cuBLAS plumbing ------------------------------------------------------------------------ */

static const char *cublas_status_text(cublasStatus_t st) {
    switch (st) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "alloc failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "arch mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}
#define CUBLAS_TRY(call)                                                                     \
    do {                                                                                     \
        cublasStatus_t st_ = (call);                                                         \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                    \
            return attn_cuda_fail("%s:%d: %s: cuBLAS %s", __FILE__, __LINE__, #call,         \
                                  cublas_status_text(st_));                                  \
    } while (0)

/* One handle per device, created on first use. */
static int naive_handle(cublasHandle_t *out, cudaStream_t stream) {
    static cublasHandle_t handles[64];
    int dev = 0;
    ATTN_CUDA_TRY(cudaGetDevice(&dev));
    if (dev < 0 || dev >= 64) return attn_cuda_fail("naive: device %d out of range", dev);
    if (!handles[dev]) {
        CUBLAS_TRY(cublasCreate(&handles[dev]));
        CUBLAS_TRY(cublasSetMathMode(handles[dev], CUBLAS_DEFAULT_MATH));
    }
    CUBLAS_TRY(cublasSetStream(handles[dev], stream));
    *out = handles[dev];
    return 0;
}

/* ---- sizes ----------------------------------------------------------------------------------- */

static bool mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}
static bool add_ok(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}
static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static int group_size(const AttnShape *s) { return s->H / attn_kv_heads(s); }
/* bf16 and fp16: the 16-bit element types, whose P and dS are rounded into their own buffers. */
static bool is_16bit(const AttnShape *s) { return s->dtype == ATTN_BF16 || s->dtype == ATTN_FP16; }
/* 16-bit with more than one query head per K/V head: dK/dV are summed in fp32 first. */
static bool needs_kv_accumulator(const AttnShape *s) { return is_16bit(s) && group_size(s) > 1; }

/* The pointer arrays hold kMaxSlots arrays of B*H pointers. */
static const int kMaxSlots = 10;

/* Byte offsets into the workspace (the pointer arrays start at 0); each region 256-aligned. */
struct WsLayout {
    size_t scores; /* B H T^2 fp32: S (16-bit forward), dP (backward; fp32: dS too, in place) */
    size_t ds;     /* B H T^2 16-bit: dS (bf16 and fp16 only) */
    size_t acc;    /* 2 x B T Hkv D fp32: dK, dV accumulators (needs_kv_accumulator only) */
    size_t total;
};
/* false when a size overflows size_t. */
static bool ws_layout(const AttnShape *s, WsLayout *w) {
    size_t heads, ptrs, elems, sbytes, dsbytes = 0, accbytes = 0, at;
    if (!mul_ok((size_t)s->B, (size_t)s->H, &heads) || !mul_ok(heads, kMaxSlots * sizeof(void *), &ptrs) ||
        !mul_ok(heads, (size_t)s->T, &elems) || !mul_ok(elems, (size_t)s->T, &elems) ||
        !mul_ok(elems, 4, &sbytes))
        return false;
    if (is_16bit(s) && !mul_ok(elems, 2, &dsbytes)) return false;
    if (needs_kv_accumulator(s)) {
        size_t n;
        if (!mul_ok((size_t)s->B * s->T, (size_t)attn_kv_heads(s) * s->D, &n) || !mul_ok(n, 2 * sizeof(float), &accbytes))
            return false;
    }
    if (ptrs > SIZE_MAX - 255) return false;
    w->scores = align256(ptrs);
    if (!add_ok(w->scores, sbytes, &at) || at > SIZE_MAX - 255) return false;
    w->ds = align256(at);
    if (!add_ok(w->ds, dsbytes, &at) || at > SIZE_MAX - 255) return false;
    w->acc = align256(at);
    return add_ok(w->acc, accbytes, &w->total);
}

/* ---- the mask as the row kernels see it ------------------------------------------------------ */

struct NaiveMask {
    int causal, window;
    const int *doc, *key_begin, *key_end; /* device, or NULL */
    const float *bias;                    /* device, or NULL; any kind */
    float *dbias;                         /* device, or NULL */
    long long sb, sh, srow;               /* of bias and dbias */
    const float *slopes;                  /* device, or NULL */
};
static NaiveMask naive_mask(const AttnShape *s) {
    const AttnMask *m = &s->mask;
    NaiveMask x;
    x.causal = m->kind == ATTN_MASK_CAUSAL;
    x.window = m->window;
    x.doc = m->doc;
    x.key_begin = m->key_begin;
    x.key_end = m->key_end;
    x.bias = m->bias;
    x.dbias = m->bias ? m->dbias : NULL;
    x.sb = m->stride_b;
    x.sh = m->stride_h;
    x.srow = m->stride_row;
    x.slopes = m->alibi_slopes;
    return x;
}
/* Pieces that change scores inside a row's interval (the forward kernels' EXTRA instantiation). */
static bool mask_edits_scores(const NaiveMask &m) { return m.bias || m.doc || m.slopes; }

/* Query row i of sequence b, head h. [lo, hi) is the intersection of the causal, window and key
 * padding intervals (0 <= lo <= hi <= T; as attn_row_keys on the CPU, documents aside). */
struct RowMask {
    int i, lo, hi;
    const int *doc; /* doc row of sequence b, or NULL */
    int doc_i;
    const float *bias; /* bias row of (b, h, i), or NULL */
    float *dbias;      /* dbias row of (b, h, i), or NULL */
    float slope;
};
__device__ __forceinline__ RowMask row_mask(const NaiveMask &m, int b, int h, int i, int T) {
    RowMask r;
    r.i = i;
    int a = 0, e = m.causal ? i + 1 : T;
    if (m.window > 0) {
        a = max(a, i - m.window + 1);                            /* i >= 0, window <= INT_MAX */
        if (!m.causal && i < T - m.window) e = min(e, i + m.window); /* no overflow: i + w < T */
    }
    if (m.key_begin) a = max(a, __ldg(m.key_begin + b));
    if (m.key_end) e = min(e, __ldg(m.key_end + b));
    e = max(0, min(e, T));
    r.lo = max(0, min(a, e));
    r.hi = e;
    r.doc = m.doc ? m.doc + (long long)b * T : nullptr;
    r.doc_i = r.doc ? __ldg(r.doc + i) : 0;
    long long at = (long long)b * m.sb + (long long)h * m.sh + (long long)i * m.srow;
    r.bias = m.bias ? m.bias + at : nullptr;
    r.dbias = m.dbias ? m.dbias + at : nullptr;
    r.slope = m.slopes ? __ldg(m.slopes + h) : 0.0f;
    return r;
}
/* Score x = scale q_i . k_j of a key j inside [lo, hi): + bias - slope |i - j|, or -inf across a
 * document boundary. Without EXTRA no piece is present and x is returned as is. */
template <bool EXTRA>
__device__ __forceinline__ float adjust_score(const RowMask &r, int j, float x) {
    if (!EXTRA) return x;
    if (r.doc && __ldg(r.doc + j) != r.doc_i) return -INFINITY;
    if (r.bias) x += __ldg(r.bias + j);
    if (r.slope != 0.0f) x -= r.slope * (float)abs(r.i - j);
    return x;
}

/* ---- per-head GEMMs through pointer arrays ----------------------------------------------------
 * Entry idx of every pointer array (0 <= idx < B*H) is query head h of sequence b with
 *   idx = hl * (B*Hkv) + b * Hkv + g,   h = g * group + hl   (group = H / Hkv, hl < group),
 * so entries [hl*B*Hkv, (hl+1)*B*Hkv) are the hl-th query head of every (b, g) group: one batched
 * call over that slice sums position hl of each group into dK/dV. An operand indexed by K/V head
 * (kv) stores the address of (b, g) at every idx of its group; a query-head operand that of (b, h). */

/* One operand: base pointer, type, leading dimension, element offsets between consecutive
 * sequences b and heads, whether its head index is the K/V head g (kv) or the query head h, and
 * its slot in the pointer arrays. */
struct Operand {
    const void *ptr;
    cudaDataType type;
    int ld;
    long long stride_b, stride_h;
    int kv;
    int slot;
};
static size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

struct PtrTable {
    const char *base[kMaxSlots];
    long long sb[kMaxSlots], sh[kMaxSlots]; /* bytes */
    int kv[kMaxSlots];
    int n;
};
__global__ void fill_head_pointers(PtrTable t, const void **out, int B, int H, int Hkv) {
    int BH = B * H, idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= BH) return;
    int BG = B * Hkv, group = H / Hkv;
    int hl = idx / BG, rem = idx % BG, b = rem / Hkv, g = rem % Hkv, h = g * group + hl;
    for (int k = 0; k < t.n; k++)
        out[(size_t)k * BH + idx] = t.base[k] + (long long)b * t.sb[k] + (long long)(t.kv[k] ? g : h) * t.sh[k];
}

struct GemmCtx {
    const AttnShape *s;
    cublasHandle_t hd;
    const void **ptrs; /* kMaxSlots arrays of B*H pointers, at the start of the workspace */
};

/* Writes the pointer arrays of ops[0..n) (ops[k].slot == k). */
static int prepare_pointers(GemmCtx &c, const Operand *ops, int n, void *workspace, cudaStream_t st) {
    if (n > kMaxSlots) return attn_cuda_fail("naive: %d operands > %d slots", n, kMaxSlots);
    PtrTable t;
    memset(&t, 0, sizeof t);
    t.n = n;
    for (int k = 0; k < n; k++) {
        long long es = (long long)type_size(ops[k].type);
        t.base[k] = (const char *)ops[k].ptr;
        t.sb[k] = ops[k].stride_b * es;
        t.sh[k] = ops[k].stride_h * es;
        t.kv[k] = ops[k].kv;
    }
    int BH = c.s->B * c.s->H;
    fill_head_pointers<<<(BH + 127) / 128, 128, 0, st>>>(t, (const void **)workspace, c.s->B, c.s->H,
                                                          attn_kv_heads(c.s));
    ATTN_LAUNCH_CHECK();
    c.ptrs = (const void **)workspace;
    return 0;
}

/* C_idx = alpha op(A_idx) op(B_idx) + beta C_idx for idx in [first, first + count), column-major. */
static int gemm_heads(const GemmCtx &c, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      float alpha, Operand A, Operand B, float beta, Operand C, int first, int count) {
    size_t BH = (size_t)c.s->B * c.s->H;
    CUBLAS_TRY(cublasGemmBatchedEx(
        c.hd, ta, tb, m, n, k, &alpha, c.ptrs + A.slot * BH + first, A.type, A.ld,
        c.ptrs + B.slot * BH + first, B.type, B.ld, &beta,
        (void *const *)(c.ptrs + C.slot * BH + first), C.type, C.ld, count, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
    return 0;
}
/* Every head. */
static int gemm_all(const GemmCtx &c, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    float alpha, Operand A, Operand B, Operand C) {
    return gemm_heads(c, ta, tb, m, n, k, alpha, A, B, 0.0f, C, 0, c.s->B * c.s->H);
}
/* C_(b,g) = alpha sum over the group's query heads of op(A) op(B): one call per position in the
 * group, beta = 0 then 1 (a fixed order: deterministic). */
static int gemm_group_sum(const GemmCtx &c, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                          float alpha, Operand A, Operand B, Operand C) {
    int BG = c.s->B * attn_kv_heads(c.s), group = group_size(c.s);
    for (int hl = 0; hl < group; hl++)
        if (gemm_heads(c, ta, tb, m, n, k, alpha, A, B, hl ? 1.0f : 0.0f, C, hl * BG, BG)) return 1;
    return 0;
}

/* Operands in the token-major layout, the (B,H,T,T) score matrices, the dK/dV accumulators. */
/* The cuBLAS type of the element type (attn_shape_basics has refused any other dtype). */
static cudaDataType elem_type(const AttnShape *s) {
    switch (s->dtype) {
    case ATTN_BF16: return CUDA_R_16BF;
    case ATTN_FP16: return CUDA_R_16F;
    default: return CUDA_R_32F;
    }
}
static Operand token_major(const AttnShape *s, const void *p, int ld, int kv, int slot) {
    Operand o = {p, elem_type(s), ld, (long long)s->T * ld, (long long)s->D, kv, slot};
    return o;
}
static Operand scores(const AttnShape *s, const void *p, cudaDataType type, int slot) {
    long long tt = (long long)s->T * s->T;
    Operand o = {p, type, s->T, tt * s->H, tt, 0, slot};
    return o;
}
static Operand kv_accumulator(const AttnShape *s, const void *p, int slot) {
    int ld = attn_kv_heads(s) * s->D;
    Operand o = {p, CUDA_R_32F, ld, (long long)s->T * ld, (long long)s->D, 1, slot};
    return o;
}

/* ---- row kernels ------------------------------------------------------------------------------
 * Row r = (b*H + h)*T + i of the (B,H,T,T) matrices. Fast path (T % 4 == 0, buffers 16-byte
 * aligned, T <= 16384): TPR threads own one row and keep it in registers, NV vectors of 4
 * elements each (the fp32 S/dP as float4; P/dS as 4 elements of the dtype); TPR = 32: a warp per
 * row, 8 rows per block, up to T = 1024 (32 elements per thread, as v4's bf16 rows); TPR >= 256:
 * a block per row. One read of each element inside the row's
 * interval, one write of every element. Other T: the scalar kernels (one block per row, two
 * passes). */

static const int kRowThreads = 256;

template <typename E> struct Vec4;
template <> struct Vec4<bf16> {
    __device__ static void load(const bf16 *p, float *x) {
        uint2 u = *(const uint2 *)p;
        float2 a = __bfloat1622float2(*(const __nv_bfloat162 *)&u.x);
        float2 b = __bfloat1622float2(*(const __nv_bfloat162 *)&u.y);
        x[0] = a.x; x[1] = a.y; x[2] = b.x; x[3] = b.y;
    }
    __device__ static void store(bf16 *p, const float *x) {
        __nv_bfloat162 a = __floats2bfloat162_rn(x[0], x[1]), b = __floats2bfloat162_rn(x[2], x[3]);
        uint2 u;
        u.x = *(const unsigned *)&a;
        u.y = *(const unsigned *)&b;
        *(uint2 *)p = u;
    }
};
template <> struct Vec4<fp16> {
    __device__ static void load(const fp16 *p, float *x) {
        uint2 u = *(const uint2 *)p;
        float2 a = __half22float2(*(const __half2 *)&u.x);
        float2 b = __half22float2(*(const __half2 *)&u.y);
        x[0] = a.x; x[1] = a.y; x[2] = b.x; x[3] = b.y;
    }
    __device__ static void store(fp16 *p, const float *x) {
        __half2 a = __floats2half2_rn(x[0], x[1]), b = __floats2half2_rn(x[2], x[3]);
        uint2 u;
        u.x = *(const unsigned *)&a;
        u.y = *(const unsigned *)&b;
        *(uint2 *)p = u;
    }
};
template <> struct Vec4<float> {
    __device__ static void load(const float *p, float *x) {
        float4 u = *(const float4 *)p;
        x[0] = u.x; x[1] = u.y; x[2] = u.z; x[3] = u.w;
    }
    __device__ static void store(float *p, const float *x) { *(float4 *)p = make_float4(x[0], x[1], x[2], x[3]); }
};

/* Max or sum over the TPR threads of a row (TPR = 32: the warp; else the whole block). */
template <int TPR, bool MAX> __device__ __forceinline__ float row_reduce(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? fmaxf(v, w) : v + w;
    }
    if (TPR == 32) return v;
    __shared__ float part[TPR / 32 > 0 ? TPR / 32 : 1];
    __syncthreads(); /* the previous reduction's readers are done */
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
    __syncthreads();
    v = part[0];
    for (int w = 1; w < TPR / 32; w++) v = MAX ? fmaxf(v, part[w]) : v + part[w];
    return v;
}

template <int TPR> struct RowBlock {
    static const int threads = TPR >= kRowThreads ? TPR : kRowThreads;
    static const int rows = threads / TPR;
};

__device__ __forceinline__ void row_coords(long long r, int T, int H, int &b, int &h, int &i) {
    i = (int)(r % T);
    h = (int)((r / T) % H);
    b = (int)(r / ((long long)T * H));
}

/* P = softmax(S + mask) of one row. S (fp32) and P may be the same buffer (fp32): each element is
 * read and written by the same thread. */
template <typename E, int TPR, int NV, bool EXTRA>
__global__ void __launch_bounds__(RowBlock<TPR>::threads)
softmax_forward_vec(const float *S, E *P, long long rows, int T, int H, NaiveMask mask) {
    int lane = threadIdx.x % TPR;
    long long r = (long long)blockIdx.x * RowBlock<TPR>::rows + threadIdx.x / TPR;
    if (r >= rows) return; /* only when several rows share a block: no block-wide barrier then */
    int b, h, i;
    row_coords(r, T, H, b, h, i);
    const RowMask rm = row_mask(mask, b, h, i, T);
    const float *srow = S + r * T;
    E *prow = P + r * T;
    float x[NV][4];
    float m = -INFINITY;
#pragma unroll
    for (int v = 0; v < NV; v++) {
        int j0 = (lane + v * TPR) * 4;
        if (j0 < rm.hi && j0 + 4 > rm.lo) {
            Vec4<float>::load(srow + j0, x[v]);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int j = j0 + e;
                x[v][e] = j >= rm.lo && j < rm.hi ? adjust_score<EXTRA>(rm, j, x[v][e]) : -INFINITY;
                m = fmaxf(m, x[v][e]);
            }
        } else {
#pragma unroll
            for (int e = 0; e < 4; e++) x[v][e] = -INFINITY;
        }
    }
    m = row_reduce<TPR, true>(m);
    float l = 0.0f;
#pragma unroll
    for (int v = 0; v < NV; v++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float p = x[v][e] == -INFINITY ? 0.0f : __expf(x[v][e] - m);
            x[v][e] = p;
            l += p;
        }
    l = row_reduce<TPR, false>(l);
    float inv = l > 0.0f ? 1.0f / l : 0.0f; /* l = 0: the row sees no key, P = 0 */
#pragma unroll
    for (int v = 0; v < NV; v++) {
        int j0 = (lane + v * TPR) * 4;
        if (j0 < T) { /* T % 4 == 0: the whole vector is inside the row */
#pragma unroll
            for (int e = 0; e < 4; e++) x[v][e] *= inv;
            Vec4<E>::store(prow + j0, x[v]);
        }
    }
}

/* dS = P * (dP - sum_j P dP) of one row (fp32 math), and dbias += dS (DBIAS). Outside the row's
 * interval P is 0 (forward wrote it so) and is not read; inside, P = 0 (a document boundary, a
 * -inf bias) gives dS = 0 too. dS may be the same buffer as dP (fp32): same-thread elements. */
template <typename E, int TPR, int NV, bool DBIAS>
__global__ void __launch_bounds__(RowBlock<TPR>::threads)
softmax_backward_vec(const E *P, const float *dP, E *dS, long long rows, int T, int H, NaiveMask mask) {
    int lane = threadIdx.x % TPR;
    long long r = (long long)blockIdx.x * RowBlock<TPR>::rows + threadIdx.x / TPR;
    if (r >= rows) return;
    int b, h, i;
    row_coords(r, T, H, b, h, i);
    const RowMask rm = row_mask(mask, b, h, i, T);
    const E *prow = P + r * T;
    const float *dprow = dP + r * T;
    E *dsrow = dS + r * T;
    float pv[NV][4], dv[NV][4];
    float acc = 0.0f;
#pragma unroll
    for (int v = 0; v < NV; v++) {
        int j0 = (lane + v * TPR) * 4;
        if (j0 < rm.hi && j0 + 4 > rm.lo) {
            Vec4<E>::load(prow + j0, pv[v]);
            Vec4<float>::load(dprow + j0, dv[v]);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int j = j0 + e;
                if (j < rm.lo || j >= rm.hi) pv[v][e] = 0.0f;
                acc += pv[v][e] != 0.0f ? pv[v][e] * dv[v][e] : 0.0f;
            }
        } else {
#pragma unroll
            for (int e = 0; e < 4; e++) pv[v][e] = dv[v][e] = 0.0f;
        }
    }
    float dsum = row_reduce<TPR, false>(acc);
#pragma unroll
    for (int v = 0; v < NV; v++) {
        int j0 = (lane + v * TPR) * 4;
        if (j0 < T) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float ds = pv[v][e] != 0.0f ? pv[v][e] * (dv[v][e] - dsum) : 0.0f;
                if (DBIAS && ds != 0.0f) atomicAdd(rm.dbias + j0 + e, ds);
                pv[v][e] = ds;
            }
            Vec4<E>::store(dsrow + j0, pv[v]);
        }
    }
}

/* Reduces a running (max, sum of exp(x - max)) pair over the block; every thread gets the result. */
__device__ void block_reduce_max_sum(float &m, float &l) {
    __shared__ float sm[32], sl[32];
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
        float mn = fmaxf(m, m2);
        l = (mn == -INFINITY) ? 0.0f : l * __expf(m - mn) + l2 * __expf(m2 - mn);
        m = mn;
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    if (lane == 0) { sm[warp] = m; sl[warp] = l; }
    __syncthreads();
    m = -INFINITY; l = 0.0f;
    for (int w = 0; w < nw; w++) {
        float mn = fmaxf(m, sm[w]);
        l = (mn == -INFINITY) ? 0.0f : l * __expf(m - mn) + sl[w] * __expf(sm[w] - mn);
        m = mn;
    }
    __syncthreads();
}
__device__ float block_reduce_sum(float x) {
    __shared__ float s[32];
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    if (lane == 0) s[warp] = x;
    __syncthreads();
    x = 0.0f;
    for (int w = 0; w < nw; w++) x += s[w];
    __syncthreads();
    return x;
}

/* Scalar forward (any T): one block per row, two passes over S. S and P may be one buffer (fp32):
 * the first pass only reads and ends at the block barrier in block_reduce_max_sum; in the second,
 * each element is read and then written by one thread. */
template <typename E, bool EXTRA>
__global__ void __launch_bounds__(kRowThreads)
softmax_forward_rows(const float *S, E *P, int T, int H, NaiveMask mask) {
    long long r = blockIdx.x;
    int b, h, i;
    row_coords(r, T, H, b, h, i);
    const RowMask rm = row_mask(mask, b, h, i, T);
    const float *srow = S + r * T;
    E *prow = P + r * T;
    float m = -INFINITY, l = 0.0f;
    for (int j = rm.lo + threadIdx.x; j < rm.hi; j += blockDim.x) {
        float x = adjust_score<EXTRA>(rm, j, srow[j]);
        if (x == -INFINITY) continue;
        float mn = fmaxf(m, x);
        l = l * __expf(m - mn) + __expf(x - mn);
        m = mn;
    }
    block_reduce_max_sum(m, l);
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float pj = 0.0f;
        if (j >= rm.lo && j < rm.hi && l > 0.0f) {
            float x = adjust_score<EXTRA>(rm, j, srow[j]);
            if (x != -INFINITY) pj = __expf(x - m) * inv;
        }
        prow[j] = from_float<E>(pj);
    }
}

/* Scalar backward (any T): one block per row, two passes. dS may be dP's buffer (fp32), as in
 * the scalar forward: the first pass only reads and ends at the barrier in block_reduce_sum. */
template <typename E, bool DBIAS>
__global__ void __launch_bounds__(kRowThreads)
softmax_backward_rows(const E *P, const float *dP, E *dS, int T, int H, NaiveMask mask) {
    long long r = blockIdx.x;
    int b, h, i;
    row_coords(r, T, H, b, h, i);
    const RowMask rm = row_mask(mask, b, h, i, T);
    const E *prow = P + r * T;
    const float *dprow = dP + r * T;
    E *dsrow = dS + r * T;
    float acc = 0.0f;
    for (int j = rm.lo + threadIdx.x; j < rm.hi; j += blockDim.x) {
        float p = to_float(prow[j]);
        if (p != 0.0f) acc += p * dprow[j];
    }
    float dsum = block_reduce_sum(acc);
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float ds = 0.0f;
        if (j >= rm.lo && j < rm.hi) {
            float p = to_float(prow[j]);
            if (p != 0.0f) ds = p * (dprow[j] - dsum);
        }
        if (DBIAS && ds != 0.0f) atomicAdd(rm.dbias + j, ds);
        dsrow[j] = from_float<E>(ds);
    }
}

/* 16-bit dK/dV from their fp32 group sums: acc is (B*T, Hkv*D) contiguous, out token-major (ld). */
template <typename E>
__global__ void store_kv_grad(const float *acc, E *out, long long n, int width, int ld) {
    for (long long x = (long long)blockIdx.x * blockDim.x + threadIdx.x; x < n; x += (long long)gridDim.x * blockDim.x) {
        long long row = x / width;
        int c = (int)(x % width);
        out[row * ld + c] = from_float<E>(acc[x]);
    }
}

/* ---- launching the row kernels --------------------------------------------------------------- */

/* Forward: f32 = S, out = P (p unused). Backward: f32 = dP, p = P, out = dS. FLAG: EXTRA forward
 * (the mask edits scores), DBIAS backward. */
template <typename E, bool FLAG, int TPR, int NV>
static void launch_vec(bool fwd, const AttnShape *s, const NaiveMask &m, const float *f32, const E *p, E *out,
                       cudaStream_t st) {
    long long rows = attn_rows(s);
    unsigned blocks = (unsigned)((rows + RowBlock<TPR>::rows - 1) / RowBlock<TPR>::rows);
    if (fwd)
        softmax_forward_vec<E, TPR, NV, FLAG><<<blocks, RowBlock<TPR>::threads, 0, st>>>(f32, out, rows, s->T, s->H, m);
    else
        softmax_backward_vec<E, TPR, NV, FLAG><<<blocks, RowBlock<TPR>::threads, 0, st>>>(p, f32, out, rows, s->T,
                                                                                          s->H, m);
}

static const int kMaxVecs = 4 * 1024; /* the largest fast-path row: 1024 threads x 4 vectors of 4 */

template <typename E, bool FLAG>
static int launch_rows(bool fwd, const AttnShape *s, const NaiveMask &m, const float *f32, const E *p, E *out,
                       cudaStream_t st) {
    int T = s->T;
    bool aligned = (uintptr_t)f32 % 16 == 0 && (uintptr_t)out % 16 == 0 && (fwd || (uintptr_t)p % 16 == 0);
    int vecs = T / 4;
    if (T % 4 == 0 && aligned && vecs <= kMaxVecs) {
        if (vecs <= 32) launch_vec<E, FLAG, 32, 1>(fwd, s, m, f32, p, out, st);
        else if (vecs <= 64) launch_vec<E, FLAG, 32, 2>(fwd, s, m, f32, p, out, st);
        else if (vecs <= 128) launch_vec<E, FLAG, 32, 4>(fwd, s, m, f32, p, out, st);
        else if (vecs <= 256) launch_vec<E, FLAG, 32, 8>(fwd, s, m, f32, p, out, st);
        else if (vecs <= 512) launch_vec<E, FLAG, 256, 2>(fwd, s, m, f32, p, out, st);
        else if (vecs <= 1024) launch_vec<E, FLAG, 256, 4>(fwd, s, m, f32, p, out, st);
        else launch_vec<E, FLAG, 1024, 4>(fwd, s, m, f32, p, out, st);
    } else {
        unsigned rows = (unsigned)attn_rows(s); /* <= INT_MAX: naive_unsupported */
        if (fwd)
            softmax_forward_rows<E, FLAG><<<rows, kRowThreads, 0, st>>>(f32, out, T, s->H, m);
        else
            softmax_backward_rows<E, FLAG><<<rows, kRowThreads, 0, st>>>(p, f32, out, T, s->H, m);
    }
    ATTN_LAUNCH_CHECK();
    return 0;
}
template <typename E>
static int launch_rows(bool fwd, const AttnShape *s, const float *f32, const E *p, E *out, cudaStream_t st) {
    NaiveMask m = naive_mask(s);
    bool flag = fwd ? mask_edits_scores(m) : m.dbias != NULL;
    return flag ? launch_rows<E, true>(fwd, s, m, f32, p, out, st) : launch_rows<E, false>(fwd, s, m, f32, p, out, st);
}

/* ---- the AttnImpl ---------------------------------------------------------------------------- */

static const char *naive_unsupported(const AttnShape *s) {
    if (!s) return "no shape given";
    if ((long long)s->H * s->D > INT32_MAX) return "H*D is too large";
    const char *why = attn_shape_basics(s);
    if (why) return why;
    if (s->Hkv < 0 || s->H % attn_kv_heads(s)) return "Hkv must divide H";
    if (!isfinite(s->scale)) return "scale must be finite";
    const AttnMask *m = &s->mask;
    if (m->bias && (m->stride_b < 0 || m->stride_h < 0 || m->stride_row < 0)) return "bias strides must be >= 0";
    if (m->dbias && !m->bias) return "a bias gradient needs a bias";
    if (m->window < 0) return "window must be >= 0";
    if ((long long)s->B * s->H > INT32_MAX) return "B*H heads exceed one cuBLAS batch";
    if (attn_rows(s) > INT32_MAX) return "B*H*T rows exceed one launch";
    WsLayout w;
    size_t saved;
    if (!ws_layout(s, &w) || !mul_ok((size_t)attn_rows(s) * s->T, attn_esize(s->dtype), &saved))
        return "B*H*T*T scores do not fit in the address space";
    return NULL;
}
static size_t naive_saved_bytes(const AttnShape *s) {
    if (naive_unsupported(s)) return 0;
    return (size_t)attn_rows(s) * s->T * attn_esize(s->dtype);
}
static size_t naive_workspace_bytes(const AttnShape *s) {
    WsLayout w;
    if (naive_unsupported(s) || !ws_layout(s, &w)) return 0;
    return w.total;
}

static int naive_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                         void *saved, void *workspace, void *stream) {
    const char *why = naive_unsupported(s);
    if (why) return attn_cuda_fail("naive forward: %s", why);
    if (!q || !k || !v || !o || !saved || !workspace) return attn_cuda_fail("naive forward: a required buffer is NULL");
    cudaStream_t st = attn_stream(stream);
    GemmCtx c = {s, NULL, NULL};
    if (naive_handle(&c.hd, st)) return 1;
    WsLayout w;
    ws_layout(s, &w);
    const bool narrow = is_16bit(s);
    int T = s->T, D = s->D;
    /* fp32: S straight into `saved`, the softmax in place; bf16, fp16: S in the workspace. */
    float *S = narrow ? (float *)((char *)workspace + w.scores) : (float *)saved;
    Operand ops[6] = {token_major(s, k, s->ld_qkv, 1, 0), token_major(s, q, s->ld_qkv, 0, 1),
                      scores(s, S, CUDA_R_32F, 2),        token_major(s, v, s->ld_qkv, 1, 3),
                      scores(s, saved, elem_type(s), 4),  token_major(s, o, s->ld_o, 0, 5)};
    const Operand &K = ops[0], &Q = ops[1], &Sop = ops[2], &V = ops[3], &P = ops[4], &O = ops[5];
    if (prepare_pointers(c, ops, 6, workspace, st)) return 1;
    /* S^T (col-major T x T, ld T) = scale K Q^T: m = n = T, k = D; C(j, i) = row-major S[i][j]. */
    if (gemm_all(c, CUBLAS_OP_T, CUBLAS_OP_N, T, T, D, s->scale, K, Q, Sop)) return 1;
    int rc = s->dtype == ATTN_BF16   ? launch_rows<bf16>(true, s, S, NULL, (bf16 *)saved, st)
             : s->dtype == ATTN_FP16 ? launch_rows<fp16>(true, s, S, NULL, (fp16 *)saved, st)
                                     : launch_rows<float>(true, s, S, NULL, (float *)saved, st);
    if (rc) return rc;
    /* O^T = V^T P^T: m = D, n = T, k = T. */
    return gemm_all(c, CUBLAS_OP_N, CUBLAS_OP_N, D, T, T, 1.0f, V, P, O);
}

static int naive_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                          const void *o, const void *dout, const void *saved, void *dq, void *dk,
                          void *dv, void *workspace, void *stream) {
    const char *why = naive_unsupported(s);
    if (why) return attn_cuda_fail("naive backward: %s", why);
    if (!q || !k || !v || !dout || !saved || !dq || !dk || !dv || !workspace)
        return attn_cuda_fail("naive backward: a required buffer is NULL");
    cudaStream_t st = attn_stream(stream);
    GemmCtx c = {s, NULL, NULL};
    if (naive_handle(&c.hd, st)) return 1;
    WsLayout w;
    ws_layout(s, &w);
    const bool narrow = is_16bit(s), acc = needs_kv_accumulator(s);
    int T = s->T, D = s->D;
    float *dP = (float *)((char *)workspace + w.scores);
    /* dS: bf16, fp16 in its own region; fp32 in place over dP. */
    void *dS = narrow ? (void *)((char *)workspace + w.ds) : (void *)dP;
    float *dk_acc = acc ? (float *)((char *)workspace + w.acc) : NULL;
    float *dv_acc = acc ? dk_acc + (size_t)s->B * T * attn_kv_heads(s) * D : NULL;
    Operand ops[10] = {token_major(s, v, s->ld_qkv, 1, 0),
                       token_major(s, dout, s->ld_o, 0, 1),
                       scores(s, dP, CUDA_R_32F, 2),
                       scores(s, saved, elem_type(s), 3),
                       scores(s, dS, elem_type(s), 4),
                       acc ? kv_accumulator(s, dv_acc, 5) : token_major(s, dv, s->ld_qkv, 1, 5),
                       token_major(s, k, s->ld_qkv, 1, 6),
                       token_major(s, dq, s->ld_qkv, 0, 7),
                       token_major(s, q, s->ld_qkv, 0, 8),
                       acc ? kv_accumulator(s, dk_acc, 9) : token_major(s, dk, s->ld_qkv, 1, 9)};
    const Operand &V = ops[0], &dO = ops[1], &dPop = ops[2], &P = ops[3], &dSop = ops[4], &dV = ops[5];
    const Operand &K = ops[6], &dQ = ops[7], &Q = ops[8], &dK = ops[9];
    if (prepare_pointers(c, ops, 10, workspace, st)) return 1;
    /* dP^T = V dO^T (fp32). */
    if (gemm_all(c, CUBLAS_OP_T, CUBLAS_OP_N, T, T, D, 1.0f, V, dO, dPop)) return 1;
    int rc = s->dtype == ATTN_BF16   ? launch_rows<bf16>(false, s, dP, (const bf16 *)saved, (bf16 *)dS, st)
             : s->dtype == ATTN_FP16 ? launch_rows<fp16>(false, s, dP, (const fp16 *)saved, (fp16 *)dS, st)
                                     : launch_rows<float>(false, s, dP, (const float *)saved, (float *)dS, st);
    if (rc) return rc;
    /* dV^T = dO^T P (summed over the group): m = D, n = T, k = T. */
    if (gemm_group_sum(c, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, 1.0f, dO, P, dV)) return 1;
    /* dQ^T = scale K^T dS^T. */
    if (gemm_all(c, CUBLAS_OP_N, CUBLAS_OP_N, D, T, T, s->scale, K, dSop, dQ)) return 1;
    /* dK^T = scale Q^T dS (summed over the group). */
    if (gemm_group_sum(c, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, s->scale, Q, dSop, dK)) return 1;
    if (acc) {
        int width = attn_kv_heads(s) * D;
        long long n = (long long)s->B * T * width;
        unsigned blocks = (unsigned)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
        if (s->dtype == ATTN_FP16) {
            store_kv_grad<fp16><<<blocks, 256, 0, st>>>(dk_acc, (fp16 *)dk, n, width, s->ld_qkv);
            ATTN_LAUNCH_CHECK();
            store_kv_grad<fp16><<<blocks, 256, 0, st>>>(dv_acc, (fp16 *)dv, n, width, s->ld_qkv);
        } else {
            store_kv_grad<bf16><<<blocks, 256, 0, st>>>(dk_acc, (bf16 *)dk, n, width, s->ld_qkv);
            ATTN_LAUNCH_CHECK();
            store_kv_grad<bf16><<<blocks, 256, 0, st>>>(dv_acc, (bf16 *)dv, n, width, s->ld_qkv);
        }
        ATTN_LAUNCH_CHECK();
    }
    return 0;
}

const AttnImpl attn_naive_cuda = {ATTN_NAIVE,           ATTN_CUDA,         naive_unsupported,
                                  naive_saved_bytes,    naive_workspace_bytes, naive_forward,
                                  naive_backward};
