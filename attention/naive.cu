/* attention/naive.cu: "standard attention" on the GPU, the baseline the documents compare against.
 *
 * The query rows of every head run in chunks of R rows (R: chunk_plan() below; one chunk when
 * T <= R). For each chunk c, rows [i0, i0 + n), over all B*H heads at once:
 *   forward   S_c = scale * Q_c K^T        cuBLAS, fp32 output (bf16, fp16: into the chunk buffer
 *                                          of the workspace; fp32: straight into `saved`)
 *             P_c = softmax(S_c + mask)    one kernel: reads S once, adds the bias and ALiBi,
 *                                          masks (causal, window, documents, key padding), writes
 *                                          the rows of P once into `saved` in the element type
 *             O_c = P_c V                  cuBLAS
 *   backward  dV = P^T dO                  cuBLAS, once over the whole stored P
 *             then per chunk:
 *             dP_c = dO_c V^T              cuBLAS, fp32 output, in the chunk buffer
 *             dS_c = P_c * (dP_c - rowsum(P_c * dP_c))   one kernel, fp32 math; written in the
 *                                          element type (bf16, fp16: the 16-bit chunk buffer;
 *                                          fp32: in place over dP_c) and, with a bias gradient,
 *                                          added into dbias
 *             dQ_c = scale dS_c K,  dK += scale dS_c^T Q_c     cuBLAS (dK: beta = 1 over chunks)
 * Each chunk's GEMMs cover only the keys its rows can see where the mask says so on the host:
 * causal (keys < i0 + n) and the window (keys > i0 - window, and < i0 + n - 1 + window without
 * causal); S_c, dP_c and dS_c outside that range are never written or read. The row kernels
 * read only the keys inside a row's interval and write exact zeros outside it (P over the whole
 * row, since dV reads all of P; dS over the chunk's key range).
 *
 * Precision: every GEMM accumulates in fp32 (CUBLAS_COMPUTE_32F, default math mode: no TF32).
 * In bf16 and fp16 (the 16-bit dtypes, CUDA_R_16BF / CUDA_R_16F inputs) only P (what `saved`
 * holds) and dS (a GEMM input) are rounded to the element type; S, dP, the softmax and
 * rowsum(P * dP) stay fp32, as in the fused kernels (so fp16 never holds a raw score, whose range
 * it could exceed). O, dQ, dV are cuBLAS's fp32 results rounded to the element type; dK (when
 * there is more than one chunk) and the group sums of grouped-query attention are summed in an
 * fp32 array and rounded once. rowsum(P * dP) is taken from the stored (rounded) P, which is the
 * P that O = P V used.
 *
 * Memory: saved = B H T^2 elements (P, the element type): standard attention's one T x T matrix
 * per head. workspace (one call's scratch, nothing kept from forward to backward) = the GEMMs'
 * pointer arrays (kSlots x chunks x B H pointers) + B H R T fp32 (the chunk's S in the 16-bit
 * forward, its dP in every backward) + B H R T 16-bit (the chunk's dS, 16-bit dtypes only)
 * + B T Hkv D fp32 (16-bit with more than one chunk or grouped-query attention: dK's sum)
 * + B T Hkv D fp32 (16-bit grouped-query attention: dV's group sum). With R = T/16 (T >= 4096)
 * the chunk buffers are 0.375 bytes per score in bf16, beside P's 2 (T = 1024: R = 256, 1.5).
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
 * for hl = 0 and beta = 1 after (dK with several chunks: beta = 1 throughout, on a zeroed sum;
 * deterministic either way: a fixed order).
 *
 * Deterministic, except dbias when its strides broadcast (a stride of 0): dbias entries shared
 * by several (b, h, i) receive fp32 atomic adds, so their value is reproducible only up to
 * rounding order. Without broadcasting each entry receives one add, and the result is exact.
 *
 * Batching: GPT-2's packed layout puts head h of batch row b at b*T*ld + h*D, which no single
 * batch stride describes. Every GEMM is one cublasGemmBatchedEx call (per group position for the
 * dK/dV sums) over per-head pointer arrays, written for every operand and chunk by one small
 * kernel at the start of each pass (no permuted copies of Q/K/V). (Strided-batched calls, one per
 * row of B or H, measured slower: dev/attention_notes.md, naive v4.)
 *
 * cuBLAS is column-major; a row-major (rows x cols, ld) matrix is its column-major transpose. Per
 * head, Q/K/V are T x D row-major with ld = ld_qkv; P is T x T and a chunk's S/dP/dS are R x T,
 * all with ld = T (column j of a chunk buffer is key j).
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

/* ---- sizes and the chunk plan ------------------------------------------------------------------ */

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

/* Query-row chunks: at most kMaxChunks of them, each a multiple of 64 rows and at least
 * kMinChunkRows (one chunk when T is no larger). From T = 4096 on the chunk buffers hold about
 * 1/16 of the rows (R = T/16 rounded up to 64); below, R = 256. Each extra chunk costs 3 launches
 * in the forward and 3 + (H / Hkv) in the backward, and the fp32 dK sum is read and written once
 * per chunk, 8 D / R bytes per score: hence at least 256 rows (dev/attention_notes.md, naive v9). */
static const int kMaxChunks = 16, kMinChunkRows = 256;

struct ChunkPlan {
    int T, rows, count; /* rows per chunk (the last may have fewer), number of chunks */
    int causal, window; /* what bounds a chunk's keys on the host */
};
static ChunkPlan chunk_plan(const AttnShape *s) {
    int T = s->T;
    int rows = (int)(((long long)T + kMaxChunks - 1) / kMaxChunks);
    rows = (rows + 63) / 64 * 64;
    if (rows < kMinChunkRows) rows = kMinChunkRows;
    if (rows > T) rows = T;
    ChunkPlan p = {T, rows, (int)(((long long)T + rows - 1) / rows), s->mask.kind == ATTN_MASK_CAUSAL,
                   s->mask.window};
    return p;
}
/* Chunk c: query rows [i0, i0 + n) and the keys [klo, khi) any of them can see through causal and
 * window (the hull of row_mask's intervals; key padding and documents are per sequence, on the
 * device, and left to the row kernels). Chunk 0 has i0 = klo = 0. */
struct ChunkSpan {
    int i0, n, klo, khi;
};
__host__ __device__ inline ChunkSpan chunk_span(const ChunkPlan &p, int c) {
    ChunkSpan x;
    x.i0 = c * p.rows;
    x.n = p.T - x.i0 < p.rows ? p.T - x.i0 : p.rows;
    x.klo = p.window > 0 && x.i0 - p.window + 1 > 0 ? x.i0 - p.window + 1 : 0;
    long long e = p.causal ? (long long)x.i0 + x.n : p.window > 0 ? (long long)x.i0 + x.n - 1 + p.window : p.T;
    x.khi = e < p.T ? (int)e : p.T;
    return x;
}

/* The operands of the GEMMs, one slot each in the pointer arrays. */
enum Slot {
    SLOT_Q, SLOT_K, SLOT_V, SLOT_O, SLOT_DO, SLOT_DQ, SLOT_DK, SLOT_DV,
    SLOT_P,   /* `saved`: the B H T x T rows of P (fp32 forward: S too, in place) */
    SLOT_F32, /* the fp32 chunk buffer: S_c (16-bit forward), dP_c */
    SLOT_DS,  /* dS_c: the 16-bit chunk buffer, or SLOT_F32's (fp32, in place) */
    kSlots
};

/* Byte offsets into the workspace (the pointer arrays start at 0); each region 256-aligned. */
struct WsLayout {
    ChunkPlan plan;
    size_t f32;    /* B H R T fp32: S_c (16-bit forward), dP_c (backward; fp32: dS_c too, in place) */
    size_t ds;     /* B H R T 16-bit: dS_c (bf16 and fp16 only) */
    size_t dk_acc; /* B T Hkv D fp32: dK's sum over chunks and the group (has_dk_acc) */
    size_t dv_acc; /* B T Hkv D fp32: dV's sum over the group (has_dv_acc) */
    size_t total;
    bool has_dk_acc, has_dv_acc;
};
/* false when a size overflows size_t. */
static bool ws_layout(const AttnShape *s, WsLayout *w) {
    w->plan = chunk_plan(s);
    const bool narrow = is_16bit(s);
    w->has_dk_acc = narrow && (w->plan.count > 1 || group_size(s) > 1);
    w->has_dv_acc = narrow && group_size(s) > 1;
    size_t heads, ptrs, elems, f32b, dsb = 0, kvb = 0, at;
    if (!mul_ok((size_t)s->B, (size_t)s->H, &heads) || !mul_ok(heads, (size_t)w->plan.count, &ptrs) ||
        !mul_ok(ptrs, kSlots * sizeof(void *), &ptrs) || !mul_ok(heads, (size_t)w->plan.rows, &elems) ||
        !mul_ok(elems, (size_t)s->T, &elems) || !mul_ok(elems, 4, &f32b))
        return false;
    if (narrow && !mul_ok(elems, 2, &dsb)) return false;
    if (w->has_dk_acc && (!mul_ok((size_t)s->B * s->T, (size_t)attn_kv_heads(s) * s->D, &kvb) || !mul_ok(kvb, 4, &kvb)))
        return false;
    if (ptrs > SIZE_MAX - 255) return false;
    w->f32 = align256(ptrs);
    if (!add_ok(w->f32, f32b, &at) || at > SIZE_MAX - 255) return false;
    w->ds = align256(at);
    if (!add_ok(w->ds, dsb, &at) || at > SIZE_MAX - 255) return false;
    w->dk_acc = align256(at);
    if (!add_ok(w->dk_acc, w->has_dk_acc ? kvb : 0, &at) || at > SIZE_MAX - 255) return false;
    w->dv_acc = align256(at);
    return add_ok(w->dv_acc, w->has_dv_acc ? kvb : 0, &w->total);
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
 * Array (slot, chunk c) holds B*H pointers, entry idx (0 <= idx < B*H) for query head h of
 * sequence b with
 *   idx = hl * (B*Hkv) + b * Hkv + g,   h = g * group + hl   (group = H / Hkv, hl < group),
 * so entries [hl*B*Hkv, (hl+1)*B*Hkv) are the hl-th query head of every (b, g) group: one batched
 * call over that slice sums position hl of each group into dK/dV. An operand indexed by K/V head
 * (kv) stores the address of (b, g) at every idx of its group; a query-head operand that of (b, h).
 * Each pointer is moved to chunk c's first query row i0 and first key klo. */

/* One operand: base pointer, type, leading dimension, element offsets between consecutive
 * sequences b and heads, element offsets per query row and per key (chunk c's pointer is
 * base + i0 * per_query + klo * per_key), and whether its head index is the K/V head g (kv) or the
 * query head h. */
struct Operand {
    const void *ptr;
    cudaDataType type;
    int ld;
    long long stride_b, stride_h, per_query, per_key;
    int kv;
};
static size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

/* The cuBLAS type of the element type (attn_shape_basics has refused any other dtype). */
static cudaDataType elem_type(const AttnShape *s) {
    switch (s->dtype) {
    case ATTN_BF16: return CUDA_R_16BF;
    case ATTN_FP16: return CUDA_R_16F;
    default: return CUDA_R_32F;
    }
}
/* Q, K, V, O and gradients in the token-major layout: a query (q) or key (kv) row is a token. */
static Operand token_major(const AttnShape *s, const void *p, int ld, int kv) {
    Operand o = {p, elem_type(s), ld, (long long)s->T * ld, (long long)s->D, kv ? 0 : (long long)ld,
                 kv ? (long long)ld : 0, kv};
    return o;
}
/* The fp32 dK / dV sums: (B T, Hkv D) contiguous, K/V heads. */
static Operand kv_accumulator(const AttnShape *s, const void *p) {
    int ld = attn_kv_heads(s) * s->D;
    Operand o = {p, CUDA_R_32F, ld, (long long)s->T * ld, (long long)s->D, 0, (long long)ld, 1};
    return o;
}
/* Score rows with ld = T, `rows` rows per head (T: P in `saved`, whose chunk starts at row i0;
 * R: a chunk buffer, whose row 0 is query i0); column j is key j. */
static Operand score_rows(const AttnShape *s, const void *p, cudaDataType type, int rows, bool from_i0) {
    long long per_head = (long long)rows * s->T;
    Operand o = {p, type, s->T, per_head * s->H, per_head, from_i0 ? (long long)s->T : 0, 1, 0};
    return o;
}

struct PtrTable {
    const char *base[kSlots];
    long long sb[kSlots], sh[kSlots], oq[kSlots], ok[kSlots]; /* bytes */
    int kv[kSlots];
};
__global__ void fill_head_pointers(PtrTable t, ChunkPlan plan, const void **out, int B, int H, int Hkv) {
    long long BH = (long long)B * H, per_slot = BH * plan.count;
    for (long long x = (long long)blockIdx.x * blockDim.x + threadIdx.x; x < per_slot * kSlots;
         x += (long long)gridDim.x * blockDim.x) {
        int k = (int)(x / per_slot), c = (int)((x % per_slot) / BH), idx = (int)(x % BH);
        int BG = B * Hkv, group = H / Hkv;
        int hl = idx / BG, rem = idx % BG, b = rem / Hkv, g = rem % Hkv, h = g * group + hl;
        ChunkSpan sp = chunk_span(plan, c);
        out[x] = t.base[k] ? t.base[k] + (long long)b * t.sb[k] + (long long)(t.kv[k] ? g : h) * t.sh[k] +
                                 (long long)sp.i0 * t.oq[k] + (long long)sp.klo * t.ok[k]
                           : nullptr;
    }
}

/* What a pass hands to naive_setup: its buffers (NULL where the pass has none). */
struct NaiveBufs {
    const void *q, *k, *v, *o, *dout, *saved;
    void *dq, *dk, *dv;
};

struct GemmCtx {
    const AttnShape *s;
    cublasHandle_t hd;
    cudaStream_t st;
    WsLayout w;
    const void **ptrs; /* kSlots x chunks arrays of B*H pointers, at the start of the workspace */
    Operand ops[kSlots];
    float *f32;        /* the fp32 chunk buffer */
    void *ds;          /* dS_c: the 16-bit chunk buffer, or f32 (fp32) */
    float *dk_acc, *dv_acc; /* NULL unless w.has_dk_acc / has_dv_acc */
};

/* The prologue of both passes: cuBLAS handle, workspace layout, every operand, and the pointer
 * arrays of every operand and chunk in one launch. */
static int naive_setup(GemmCtx &c, const AttnShape *s, const NaiveBufs &b, void *workspace, cudaStream_t st) {
    c.s = s;
    c.st = st;
    if (naive_handle(&c.hd, st)) return 1;
    if (!ws_layout(s, &c.w)) return attn_cuda_fail("naive: workspace size overflows");
    char *ws = (char *)workspace;
    const bool narrow = is_16bit(s);
    c.ptrs = (const void **)ws;
    c.f32 = (float *)(ws + c.w.f32);
    c.ds = narrow ? (void *)(ws + c.w.ds) : (void *)c.f32;
    c.dk_acc = c.w.has_dk_acc ? (float *)(ws + c.w.dk_acc) : NULL;
    c.dv_acc = c.w.has_dv_acc ? (float *)(ws + c.w.dv_acc) : NULL;
    int R = c.w.plan.rows;
    Operand *o = c.ops;
    o[SLOT_Q] = token_major(s, b.q, s->ld_qkv, 0);
    o[SLOT_K] = token_major(s, b.k, s->ld_qkv, 1);
    o[SLOT_V] = token_major(s, b.v, s->ld_qkv, 1);
    o[SLOT_O] = token_major(s, b.o, s->ld_o, 0);
    o[SLOT_DO] = token_major(s, b.dout, s->ld_o, 0);
    o[SLOT_DQ] = token_major(s, b.dq, s->ld_qkv, 0);
    o[SLOT_DK] = c.dk_acc ? kv_accumulator(s, c.dk_acc) : token_major(s, b.dk, s->ld_qkv, 1);
    o[SLOT_DV] = c.dv_acc ? kv_accumulator(s, c.dv_acc) : token_major(s, b.dv, s->ld_qkv, 1);
    o[SLOT_P] = score_rows(s, b.saved, elem_type(s), s->T, true);
    o[SLOT_F32] = score_rows(s, c.f32, CUDA_R_32F, R, false);
    o[SLOT_DS] = score_rows(s, c.ds, elem_type(s), R, false);
    PtrTable t;
    memset(&t, 0, sizeof t);
    for (int k = 0; k < kSlots; k++) {
        long long es = (long long)type_size(o[k].type);
        t.base[k] = (const char *)o[k].ptr;
        t.sb[k] = o[k].stride_b * es;
        t.sh[k] = o[k].stride_h * es;
        t.oq[k] = o[k].per_query * es;
        t.ok[k] = o[k].per_key * es;
        t.kv[k] = o[k].kv;
    }
    long long n = (long long)s->B * s->H * c.w.plan.count * kSlots;
    unsigned blocks = (unsigned)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
    fill_head_pointers<<<blocks, 256, 0, st>>>(t, c.w.plan, c.ptrs, s->B, s->H, attn_kv_heads(s));
    ATTN_LAUNCH_CHECK();
    return 0;
}

/* C_idx = alpha op(A_idx) op(B_idx) + beta C_idx for idx in [first, first + count) of chunk
 * `chunk`'s pointers, column-major. */
static int gemm_heads(const GemmCtx &c, int chunk, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                      int k, float alpha, Slot A, Slot B, float beta, Slot C, int first, int count) {
    size_t BH = (size_t)c.s->B * c.s->H, nc = (size_t)c.w.plan.count;
    const Operand &a = c.ops[A], &b = c.ops[B], &d = c.ops[C];
    CUBLAS_TRY(cublasGemmBatchedEx(c.hd, ta, tb, m, n, k, &alpha, c.ptrs + (A * nc + chunk) * BH + first, a.type,
                                   a.ld, c.ptrs + (B * nc + chunk) * BH + first, b.type, b.ld, &beta,
                                   (void *const *)(c.ptrs + (C * nc + chunk) * BH + first), d.type, d.ld, count,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}
/* Every head, beta = 0. */
static int gemm_all(const GemmCtx &c, int chunk, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    float alpha, Slot A, Slot B, Slot C) {
    return gemm_heads(c, chunk, ta, tb, m, n, k, alpha, A, B, 0.0f, C, 0, c.s->B * c.s->H);
}
/* C_(b,g) (+)= alpha sum over the group's query heads of op(A) op(B): one call per position in the
 * group, beta = 0 for the first unless `accumulate`, 1 after (a fixed order: deterministic). */
static int gemm_group_sum(const GemmCtx &c, int chunk, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                          int k, float alpha, Slot A, Slot B, Slot C, bool accumulate) {
    int BG = c.s->B * attn_kv_heads(c.s), group = group_size(c.s);
    for (int hl = 0; hl < group; hl++)
        if (gemm_heads(c, chunk, ta, tb, m, n, k, alpha, A, B, accumulate || hl ? 1.0f : 0.0f, C, hl * BG, BG))
            return 1;
    return 0;
}

/* ---- row kernels ------------------------------------------------------------------------------
 * Row r = head * n + il (head = b*H + h) of a chunk of n query rows, query i = i0 + il. Each
 * array's row (head, il) is at base + (head * rows_per_head + il) * T, where base is already at
 * the chunk's first row (P in `saved`: T rows per head; the chunk buffers: R). Fast path
 * (T % 4 == 0, row starts 4-element aligned, T <= 16384): TPR threads own one row and keep it in
 * registers, NV vectors of 4 elements each (the fp32 S/dP as float4; P/dS as 4 elements of the
 * dtype); TPR = 32: a warp per row, 8 rows per block, up to T = 1024 (32 elements per thread, as
 * v4's bf16 rows); TPR >= 256: a block per row. One read of each element inside the row's
 * interval, one write of every element of the output row (P) or of the chunk's key range (dS).
 * Other T: the scalar kernels (one block per row, two passes). */

static const int kRowThreads = 256;

/* A chunk as the row kernels see it: ChunkSpan plus each array's rows per head. */
struct RowSpan {
    int i0, n, klo, khi;
    long long hs_in, hs_p, hs_out; /* the fp32 input (S or dP), P (backward), the output (P or dS) */
};

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

/* Row r of the chunk: its head (b*H + h), its row il in the chunk, b, h and the query i. */
__device__ __forceinline__ void row_coords(long long r, const RowSpan &sp, int H, long long &head, int &il, int &b,
                                           int &h, int &i) {
    head = r / sp.n;
    il = (int)(r % sp.n);
    h = (int)(head % H);
    b = (int)(head / H);
    i = sp.i0 + il;
}

/* P = softmax(S + mask) of one row. S (fp32) and P may be the same buffer (fp32): each element is
 * read and written by the same thread. */
template <typename E, int TPR, int NV, bool EXTRA>
__global__ void __launch_bounds__(RowBlock<TPR>::threads)
softmax_forward_vec(const float *S, E *P, RowSpan sp, long long rows, int T, int H, NaiveMask mask) {
    int lane = threadIdx.x % TPR;
    long long r = (long long)blockIdx.x * RowBlock<TPR>::rows + threadIdx.x / TPR;
    if (r >= rows) return; /* only when several rows share a block: no block-wide barrier then */
    long long head;
    int il, b, h, i;
    row_coords(r, sp, H, head, il, b, h, i);
    const RowMask rm = row_mask(mask, b, h, i, T);
    const float *srow = S + (head * sp.hs_in + il) * T;
    E *prow = P + (head * sp.hs_out + il) * T;
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
 * -inf bias) gives dS = 0 too. dS is written over the vectors that meet the chunk's key range
 * [klo, khi) (the GEMMs read no other). dS may be the same buffer as dP (fp32): same-thread
 * elements. */
template <typename E, int TPR, int NV, bool DBIAS>
__global__ void __launch_bounds__(RowBlock<TPR>::threads)
softmax_backward_vec(const E *P, const float *dP, E *dS, RowSpan sp, long long rows, int T, int H, NaiveMask mask) {
    int lane = threadIdx.x % TPR;
    long long r = (long long)blockIdx.x * RowBlock<TPR>::rows + threadIdx.x / TPR;
    if (r >= rows) return;
    long long head;
    int il, b, h, i;
    row_coords(r, sp, H, head, il, b, h, i);
    const RowMask rm = row_mask(mask, b, h, i, T);
    const E *prow = P + (head * sp.hs_p + il) * T;
    const float *dprow = dP + (head * sp.hs_in + il) * T;
    E *dsrow = dS + (head * sp.hs_out + il) * T;
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
        if (j0 < sp.khi && j0 + 4 > sp.klo) { /* khi <= T, T % 4 == 0: inside the row */
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
softmax_forward_rows(const float *S, E *P, RowSpan sp, int T, int H, NaiveMask mask) {
    long long head;
    int il, b, h, i;
    row_coords(blockIdx.x, sp, H, head, il, b, h, i);
    const RowMask rm = row_mask(mask, b, h, i, T);
    const float *srow = S + (head * sp.hs_in + il) * T;
    E *prow = P + (head * sp.hs_out + il) * T;
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

/* Scalar backward (any T): one block per row, two passes; dS over the chunk's key range. dS may
 * be dP's buffer (fp32), as in the scalar forward: the first pass only reads and ends at the
 * barrier in block_reduce_sum. */
template <typename E, bool DBIAS>
__global__ void __launch_bounds__(kRowThreads)
softmax_backward_rows(const E *P, const float *dP, E *dS, RowSpan sp, int T, int H, NaiveMask mask) {
    long long head;
    int il, b, h, i;
    row_coords(blockIdx.x, sp, H, head, il, b, h, i);
    const RowMask rm = row_mask(mask, b, h, i, T);
    const E *prow = P + (head * sp.hs_p + il) * T;
    const float *dprow = dP + (head * sp.hs_in + il) * T;
    E *dsrow = dS + (head * sp.hs_out + il) * T;
    float acc = 0.0f;
    for (int j = rm.lo + threadIdx.x; j < rm.hi; j += blockDim.x) {
        float p = to_float(prow[j]);
        if (p != 0.0f) acc += p * dprow[j];
    }
    float dsum = block_reduce_sum(acc);
    for (int j = sp.klo + threadIdx.x; j < sp.khi; j += blockDim.x) {
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
static void launch_vec(bool fwd, const AttnShape *s, const NaiveMask &m, const RowSpan &sp, const float *f32,
                       const E *p, E *out, cudaStream_t st) {
    long long rows = (long long)s->B * s->H * sp.n;
    unsigned blocks = (unsigned)((rows + RowBlock<TPR>::rows - 1) / RowBlock<TPR>::rows);
    if (fwd)
        softmax_forward_vec<E, TPR, NV, FLAG><<<blocks, RowBlock<TPR>::threads, 0, st>>>(f32, out, sp, rows, s->T,
                                                                                         s->H, m);
    else
        softmax_backward_vec<E, TPR, NV, FLAG><<<blocks, RowBlock<TPR>::threads, 0, st>>>(p, f32, out, sp, rows,
                                                                                          s->T, s->H, m);
}

static const int kMaxVecs = 4 * 1024; /* the largest fast-path row: 1024 threads x 4 vectors of 4 */

template <typename E, bool FLAG>
static int launch_rows(bool fwd, const AttnShape *s, const NaiveMask &m, const RowSpan &sp, const float *f32,
                       const E *p, E *out, cudaStream_t st) {
    int T = s->T;
    /* every row start 4-element aligned: the bases (T % 4 == 0 keeps the rows so) */
    bool aligned = (uintptr_t)f32 % 16 == 0 && (uintptr_t)out % (4 * sizeof(E)) == 0 &&
                   (fwd || (uintptr_t)p % (4 * sizeof(E)) == 0);
    int vecs = T / 4;
    if (T % 4 == 0 && aligned && vecs <= kMaxVecs) {
        if (vecs <= 32) launch_vec<E, FLAG, 32, 1>(fwd, s, m, sp, f32, p, out, st);
        else if (vecs <= 64) launch_vec<E, FLAG, 32, 2>(fwd, s, m, sp, f32, p, out, st);
        else if (vecs <= 128) launch_vec<E, FLAG, 32, 4>(fwd, s, m, sp, f32, p, out, st);
        else if (vecs <= 256) launch_vec<E, FLAG, 32, 8>(fwd, s, m, sp, f32, p, out, st);
        else if (vecs <= 512) launch_vec<E, FLAG, 256, 2>(fwd, s, m, sp, f32, p, out, st);
        else if (vecs <= 1024) launch_vec<E, FLAG, 256, 4>(fwd, s, m, sp, f32, p, out, st);
        else launch_vec<E, FLAG, 1024, 4>(fwd, s, m, sp, f32, p, out, st);
    } else {
        unsigned rows = (unsigned)((long long)s->B * s->H * sp.n); /* <= B*H*T <= INT_MAX: naive_unsupported */
        if (fwd)
            softmax_forward_rows<E, FLAG><<<rows, kRowThreads, 0, st>>>(f32, out, sp, T, s->H, m);
        else
            softmax_backward_rows<E, FLAG><<<rows, kRowThreads, 0, st>>>(p, f32, out, sp, T, s->H, m);
    }
    ATTN_LAUNCH_CHECK();
    return 0;
}
template <typename E>
static int launch_rows_of(bool fwd, bool flag, const AttnShape *s, const NaiveMask &m, const RowSpan &sp,
                          const float *f32, const void *p, void *out, cudaStream_t st) {
    return flag ? launch_rows<E, true>(fwd, s, m, sp, f32, (const E *)p, (E *)out, st)
                : launch_rows<E, false>(fwd, s, m, sp, f32, (const E *)p, (E *)out, st);
}
/* The row kernel of chunk `x` (forward: S_c -> P's rows; backward: P's rows, dP_c -> dS_c) for the
 * shape's dtype. */
static int launch_rows(bool fwd, const GemmCtx &c, const ChunkSpan &x, const void *saved) {
    const AttnShape *s = c.s;
    NaiveMask m = naive_mask(s);
    bool flag = fwd ? mask_edits_scores(m) : m.dbias != NULL;
    long long T = s->T, R = c.w.plan.rows;
    RowSpan sp = {x.i0, x.n, x.klo, x.khi, R, T, R};
    const float *f32 = c.f32;
    void *p = (char *)saved + (size_t)x.i0 * T * attn_esize(s->dtype), *out = c.ds;
    if (fwd) {
        out = p; /* P's rows in `saved` */
        sp.hs_out = T;
        if (!is_16bit(s)) { f32 = (const float *)p; sp.hs_in = T; } /* fp32: S in `saved`, in place */
    }
    switch (s->dtype) {
    case ATTN_BF16: return launch_rows_of<bf16>(fwd, flag, s, m, sp, f32, p, out, c.st);
    case ATTN_FP16: return launch_rows_of<fp16>(fwd, flag, s, m, sp, f32, p, out, c.st);
    default: return launch_rows_of<float>(fwd, flag, s, m, sp, f32, p, out, c.st);
    }
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
    NaiveBufs b = {q, k, v, o, NULL, saved, NULL, NULL, NULL};
    GemmCtx c;
    if (naive_setup(c, s, b, workspace, attn_stream(stream))) return 1;
    /* S_c: the fp32 chunk buffer (bf16, fp16), or straight into P's rows in `saved` (fp32). */
    const Slot S = is_16bit(s) ? SLOT_F32 : SLOT_P;
    for (int ch = 0; ch < c.w.plan.count; ch++) {
        ChunkSpan x = chunk_span(c.w.plan, ch);
        int kn = x.khi - x.klo;
        /* S_c^T (col-major kn x n, ld T) = scale K_keys Q_c^T: C(j, i) = row-major S[i0 + i][klo + j]. */
        if (gemm_all(c, ch, CUBLAS_OP_T, CUBLAS_OP_N, kn, x.n, s->D, s->scale, SLOT_K, SLOT_Q, S)) return 1;
        if (launch_rows(true, c, x, saved)) return 1;
        /* O_c^T = V_keys^T P_c^T: m = D, n = rows, k = keys. */
        if (gemm_all(c, ch, CUBLAS_OP_N, CUBLAS_OP_N, s->D, x.n, kn, 1.0f, SLOT_V, SLOT_P, SLOT_O)) return 1;
    }
    return 0;
}

/* 16-bit dK/dV from their fp32 sums: acc is (B*T, Hkv*D) contiguous, out token-major (ld). */
static int store_kv(const AttnShape *s, const float *acc, void *out, cudaStream_t st) {
    int width = attn_kv_heads(s) * s->D;
    long long n = (long long)s->B * s->T * width;
    unsigned blocks = (unsigned)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
    if (s->dtype == ATTN_FP16) store_kv_grad<fp16><<<blocks, 256, 0, st>>>(acc, (fp16 *)out, n, width, s->ld_qkv);
    else store_kv_grad<bf16><<<blocks, 256, 0, st>>>(acc, (bf16 *)out, n, width, s->ld_qkv);
    ATTN_LAUNCH_CHECK();
    return 0;
}

static int naive_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                          const void *o, const void *dout, const void *saved, void *dq, void *dk,
                          void *dv, void *workspace, void *stream) {
    const char *why = naive_unsupported(s);
    if (why) return attn_cuda_fail("naive backward: %s", why);
    if (!q || !k || !v || !dout || !saved || !dq || !dk || !dv || !workspace)
        return attn_cuda_fail("naive backward: a required buffer is NULL");
    cudaStream_t st = attn_stream(stream);
    NaiveBufs b = {q, k, v, NULL, dout, saved, dq, dk, dv};
    GemmCtx c;
    if (naive_setup(c, s, b, workspace, st)) return 1;
    const int T = s->T, D = s->D, nc = c.w.plan.count;
    /* dV^T = dO^T P over the whole stored P (summed over the group): m = D, n = T, k = T. */
    if (gemm_group_sum(c, 0, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, 1.0f, SLOT_DO, SLOT_P, SLOT_DV, false)) return 1;
    /* dK sums over the chunks, each adding into its key range: zeroed first when there are several. */
    const bool accumulate = nc > 1;
    if (accumulate) {
        size_t width = (size_t)attn_kv_heads(s) * D * sizeof(float), rows = (size_t)s->B * T;
        if (c.dk_acc) ATTN_CUDA_TRY(cudaMemsetAsync(c.dk_acc, 0, width * rows, st));
        else ATTN_CUDA_TRY(cudaMemset2DAsync(dk, (size_t)s->ld_qkv * sizeof(float), 0, width, rows, st)); /* fp32 */
    }
    for (int ch = 0; ch < nc; ch++) {
        ChunkSpan x = chunk_span(c.w.plan, ch);
        int kn = x.khi - x.klo;
        /* dP_c^T = V_keys dO_c^T (fp32). */
        if (gemm_all(c, ch, CUBLAS_OP_T, CUBLAS_OP_N, kn, x.n, D, 1.0f, SLOT_V, SLOT_DO, SLOT_F32)) return 1;
        if (launch_rows(false, c, x, saved)) return 1;
        /* dQ_c^T = scale K_keys^T dS_c^T: m = D, n = rows, k = keys. */
        if (gemm_all(c, ch, CUBLAS_OP_N, CUBLAS_OP_N, D, x.n, kn, s->scale, SLOT_K, SLOT_DS, SLOT_DQ)) return 1;
        /* dK_keys^T (+)= scale Q_c^T dS_c (summed over the group): m = D, n = keys, k = rows. */
        if (gemm_group_sum(c, ch, CUBLAS_OP_N, CUBLAS_OP_T, D, kn, x.n, s->scale, SLOT_Q, SLOT_DS, SLOT_DK, accumulate))
            return 1;
    }
    if (c.dk_acc && store_kv(s, c.dk_acc, dk, st)) return 1;
    if (c.dv_acc && store_kv(s, c.dv_acc, dv, st)) return 1;
    return 0;
}

const AttnImpl attn_naive_cuda = {ATTN_NAIVE,           ATTN_CUDA,         naive_unsupported,
                                  naive_saved_bytes,    naive_workspace_bytes, naive_forward,
                                  naive_backward};
