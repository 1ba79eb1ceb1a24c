/* attention/naive.cu: "standard attention" on the GPU, the baseline the documents compare against.
 *
 *   forward   S = scale * Q K^T        cuBLAS, written in the element type straight into `saved`
 *             P = softmax(S + bias)    one kernel, in place over S (fp32 math): `saved` = P
 *             O = P V                  cuBLAS
 *   backward  dP = dO V^T              cuBLAS, element type, in the workspace
 *             dS = P * (dP - rowsum(P * dP))   one kernel, fp32 math, in place over dP
 *             dV = P^T dO,  dQ = scale * dS K,  dK = scale * dS^T Q      cuBLAS
 *
 * In bf16 every (B,H,T,T) matrix (S, P, dP, dS) is stored in bf16, as PyTorch's math path and
 * llm.c's non-flash attention store them; in fp32 all are fp32. Every GEMM accumulates in fp32
 * (CUBLAS_COMPUTE_32F, no TF32).
 * Memory: saved = B H T^2 elements (P); workspace = B H T^2 elements (dP/dS) + the GEMMs' pointer
 * arrays. The GEMMs compute every score, masked or not: that is the standard design. The causal
 * softmax kernels do not read above the diagonal and write exact zeros there. Deterministic.
 *
 * Batching: GPT-2's packed layout puts head h of batch row b at b*T*ld + h*D, which no single
 * batch stride describes. By default every GEMM is one cublasGemmBatchedEx call over all B*H
 * heads, with per-head pointer arrays that a small kernel writes into the workspace (no permuted
 * copies of Q/K/V). (The first version's strided-batched calls, one per row of B or H, measured
 * slower: dev/attention_notes.md, naive v4.)
 *
 * cuBLAS is column-major; a row-major (rows x cols, ld) matrix is its column-major transpose. Per
 * head, Q/K/V are T x D row-major with ld = ld_qkv; S/P are T x T with ld = T.
 */
#include <cublas_v2.h>
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

/* One operand of a per-head GEMM: a base pointer, its type, leading dimension, the element
 * offsets between consecutive batch rows b and heads h, and its slot in the pointer arrays. */
struct Operand {
    const void *ptr;
    cudaDataType type;
    int ld;
    long long stride_b, stride_h;
    int slot;
};
static size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

/* Per-head pointer arrays: array k (k < n) holds, for bh = b*H + h, base_k + b*sb_k + h*sh_k
 * (bytes). They live at the start of the workspace. */
static const int kMaxSlots = 9;
struct PtrTable {
    const char *base[kMaxSlots];
    long long sb[kMaxSlots], sh[kMaxSlots];
    int n;
};
__global__ void fill_head_pointers(PtrTable t, const void **out, int BH, int H) {
    int bh = blockIdx.x * blockDim.x + threadIdx.x;
    if (bh >= BH) return;
    long long b = bh / H, h = bh % H;
    for (int k = 0; k < t.n; k++) out[(size_t)k * BH + bh] = t.base[k] + b * t.sb[k] + h * t.sh[k];
}
static size_t ptr_region_bytes(const AttnShape *s) {
    return ((size_t)kMaxSlots * s->B * s->H * sizeof(void *) + 255) & ~(size_t)255;
}

struct GemmCtx {
    const AttnShape *s;
    cublasHandle_t hd;
    const void **ptrs; /* kMaxSlots arrays of B*H pointers */
};

/* Writes the pointer arrays of `ops` (slot = index). */
static int prepare_pointers(GemmCtx &c, const Operand *ops, int n, void *workspace, cudaStream_t st) {
    PtrTable t;
    memset(&t, 0, sizeof t);
    t.n = n;
    for (int k = 0; k < n; k++) {
        long long es = (long long)type_size(ops[k].type);
        t.base[k] = (const char *)ops[k].ptr;
        t.sb[k] = ops[k].stride_b * es;
        t.sh[k] = ops[k].stride_h * es;
    }
    int BH = c.s->B * c.s->H;
    fill_head_pointers<<<(BH + 127) / 128, 128, 0, st>>>(t, (const void **)workspace, BH, c.s->H);
    ATTN_LAUNCH_CHECK();
    c.ptrs = (const void **)workspace;
    return 0;
}

/* C_bh = alpha * op(A_bh) op(B_bh) + beta * C_bh for every (b, h), column-major terms. */
static int gemm_per_head(const GemmCtx &c, cublasOperation_t ta, cublasOperation_t tb, int m,
                         int n, int k, float alpha, Operand A, Operand B, float beta, Operand C) {
    int BH = c.s->B * c.s->H;
    CUBLAS_TRY(cublasGemmBatchedEx(
        c.hd, ta, tb, m, n, k, &alpha, c.ptrs + (size_t)A.slot * BH, A.type, A.ld,
        c.ptrs + (size_t)B.slot * BH, B.type, B.ld, &beta,
        (void *const *)(c.ptrs + (size_t)C.slot * BH), C.type, C.ld, BH, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* Operands in the token-major layout, and the (B,H,T,T) score matrices (element type). */
static cudaDataType elem_type(const AttnShape *s) { return s->dtype == ATTN_BF16 ? CUDA_R_16BF : CUDA_R_32F; }
static Operand token_major(const AttnShape *s, const void *p, int ld, int slot) {
    Operand o = {p, elem_type(s), ld, (long long)s->T * ld, (long long)s->D, slot};
    return o;
}
static Operand scores(const AttnShape *s, const void *p, int slot) {
    long long tt = (long long)s->T * s->T;
    Operand o = {p, elem_type(s), s->T, tt * s->H, tt, slot};
    return o;
}

/* ---- softmax kernels ------------------------------------------------------------------------
 * Fast path (T a multiple of the 16-byte vector, buffers 16-byte aligned): TPR threads own one
 * row and keep it in registers, NV vectors of 16 bytes each (TPR = 32: a warp per row, 8 rows per
 * block; TPR >= 256: a block per row). One read and one write of each element; causal rows read
 * only up to the diagonal. Other T: the scalar kernels below (two passes over the row). */

static const int kRowThreads = 256;

template <typename E> struct Vec;
template <> struct Vec<bf16> {
    static const int N = 8;
    __device__ static void load(const bf16 *p, float *x) {
        uint4 u = *(const uint4 *)p;
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
        for (int e = 0; e < 4; e++) {
            float2 f = __bfloat1622float2(h[e]);
            x[2 * e] = f.x; x[2 * e + 1] = f.y;
        }
    }
    __device__ static void store(bf16 *p, const float *x) {
        uint4 u;
        __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
        for (int e = 0; e < 4; e++) h[e] = __floats2bfloat162_rn(x[2 * e], x[2 * e + 1]);
        *(uint4 *)p = u;
    }
};
template <> struct Vec<float> {
    static const int N = 4;
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

/* In place: SP holds S on entry and P on exit. */
template <typename E, int TPR, int NV>
__global__ void __launch_bounds__(RowBlock<TPR>::threads)
softmax_rows_vec(E *SP, long long rows, int T, int H, MaskDev mask) {
    const int N = Vec<E>::N;
    int lane = threadIdx.x % TPR;
    long long r = (long long)blockIdx.x * RowBlock<TPR>::rows + threadIdx.x / TPR;
    if (r >= rows) return; /* only when several rows share a block: no block-wide barrier then */
    int i = (int)(r % T), h = (int)((r / T) % H), b = (int)(r / ((long long)T * H));
    E *row = SP + r * T;
    int n_live = mask.kind == ATTN_MASK_CAUSAL ? i + 1 : T;
    float x[NV][N];
    float m = -INFINITY;
#pragma unroll
    for (int v = 0; v < NV; v++) {
        int j0 = (lane + v * TPR) * N;
        if (j0 < n_live) {
            Vec<E>::load(row + j0, x[v]);
#pragma unroll
            for (int e = 0; e < N; e++) {
                int j = j0 + e;
                x[v][e] = j < n_live ? x[v][e] + mask_bias(mask, b, h, i, j) : -INFINITY;
                m = fmaxf(m, x[v][e]);
            }
        } else {
#pragma unroll
            for (int e = 0; e < N; e++) x[v][e] = -INFINITY;
        }
    }
    m = row_reduce<TPR, true>(m);
    float l = 0.0f;
#pragma unroll
    for (int v = 0; v < NV; v++)
#pragma unroll
        for (int e = 0; e < N; e++) {
            float p = x[v][e] == -INFINITY ? 0.0f : __expf(x[v][e] - m);
            x[v][e] = p;
            l += p;
        }
    l = row_reduce<TPR, false>(l);
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int v = 0; v < NV; v++) {
        int j0 = (lane + v * TPR) * N;
        if (j0 < T) {
#pragma unroll
            for (int e = 0; e < N; e++) x[v][e] *= inv;
            Vec<E>::store(row + j0, x[v]);
        }
    }
}

/* dS = P * (dP - sum_j P dP), in place over dP. */
template <typename E, int TPR, int NV>
__global__ void __launch_bounds__(RowBlock<TPR>::threads)
softmax_rows_backward_vec(const E *P, E *dPS, long long rows, int T, int causal) {
    const int N = Vec<E>::N;
    int lane = threadIdx.x % TPR;
    long long r = (long long)blockIdx.x * RowBlock<TPR>::rows + threadIdx.x / TPR;
    if (r >= rows) return;
    int i = (int)(r % T);
    const E *p = P + r * T;
    E *d = dPS + r * T;
    int n_live = causal ? i + 1 : T;
    float pv[NV][N], dv[NV][N];
    float acc = 0.0f;
#pragma unroll
    for (int v = 0; v < NV; v++) {
        int j0 = (lane + v * TPR) * N;
        if (j0 < n_live) {
            Vec<E>::load(p + j0, pv[v]);
            Vec<E>::load(d + j0, dv[v]);
#pragma unroll
            for (int e = 0; e < N; e++) {
                if (j0 + e >= n_live) pv[v][e] = 0.0f;
                acc += pv[v][e] * dv[v][e];
            }
        } else {
#pragma unroll
            for (int e = 0; e < N; e++) pv[v][e] = dv[v][e] = 0.0f;
        }
    }
    float dsum = row_reduce<TPR, false>(acc);
#pragma unroll
    for (int v = 0; v < NV; v++) {
        int j0 = (lane + v * TPR) * N;
        if (j0 < T) {
#pragma unroll
            for (int e = 0; e < N; e++) pv[v][e] = pv[v][e] * (dv[v][e] - dsum);
            Vec<E>::store(d + j0, pv[v]);
        }
    }
}

/* ---- scalar kernels (any T): one block per score row, two passes ---------------------------- */

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

/* Row r = (b*H + h)*T + i, in place: P[r, j] = exp(S + bias - max) / sum; masked entries and
 * fully masked rows give exact zeros. Columns past the causal diagonal are not read. Each
 * element is read and written by the same thread. */
template <typename E>
__global__ void __launch_bounds__(kRowThreads)
softmax_rows(E *SP, int T, int H, MaskDev mask) {
    long long r = blockIdx.x;
    int i = (int)(r % T), h = (int)((r / T) % H), b = (int)(r / ((long long)T * H));
    E *s = SP + r * T;
    int n_live = mask.kind == ATTN_MASK_CAUSAL ? i + 1 : T;
    float m = -INFINITY, l = 0.0f;
    for (int j = threadIdx.x; j < n_live; j += blockDim.x) {
        float x = to_float(s[j]) + mask_bias(mask, b, h, i, j);
        if (x == -INFINITY) continue;
        float mn = fmaxf(m, x);
        l = l * __expf(m - mn) + __expf(x - mn);
        m = mn;
    }
    block_reduce_max_sum(m, l);
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float pj = 0.0f;
        if (j < n_live && l > 0.0f) pj = __expf(to_float(s[j]) + mask_bias(mask, b, h, i, j) - m) * inv;
        s[j] = from_float<E>(pj);
    }
}

/* dS[r, j] = P[r, j] * (dP[r, j] - sum_k P[r, k] dP[r, k]), in place over dP. */
template <typename E>
__global__ void __launch_bounds__(kRowThreads)
softmax_rows_backward(const E *P, E *dPS, int T, int causal) {
    long long r = blockIdx.x;
    int i = (int)(r % T);
    const E *p = P + r * T;
    E *d = dPS + r * T;
    int n_live = causal ? i + 1 : T;
    float acc = 0.0f;
    for (int j = threadIdx.x; j < n_live; j += blockDim.x) acc += to_float(p[j]) * to_float(d[j]);
    float dsum = block_reduce_sum(acc);
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float v = j < n_live ? to_float(p[j]) * (to_float(d[j]) - dsum) : 0.0f;
        d[j] = from_float<E>(v);
    }
}

/* ---- launching the softmax kernels ----------------------------------------------------------- */

template <typename E, int TPR, int NV>
static void launch_vec(bool fwd, const AttnShape *s, E *a, const E *p, cudaStream_t st) {
    long long rows = attn_rows(s);
    unsigned blocks = (unsigned)((rows + RowBlock<TPR>::rows - 1) / RowBlock<TPR>::rows);
    if (fwd)
        softmax_rows_vec<E, TPR, NV><<<blocks, RowBlock<TPR>::threads, 0, st>>>(a, rows, s->T, s->H, mask_dev(s));
    else
        softmax_rows_backward_vec<E, TPR, NV><<<blocks, RowBlock<TPR>::threads, 0, st>>>(
            p, a, rows, s->T, s->mask.kind == ATTN_MASK_CAUSAL);
}

/* Forward (fwd): softmax in place over a = S. Backward: a = dP becomes dS, p = P. */
template <typename E>
static int launch_softmax(bool fwd, const AttnShape *s, E *a, const E *p, cudaStream_t st) {
    const int N = 16 / (int)sizeof(E);
    int T = s->T;
    bool aligned = ((uintptr_t)a % 16 == 0) && (fwd || (uintptr_t)p % 16 == 0);
    int vecs = T / N;
    if (T % N == 0 && aligned && vecs <= 4 * 1024) {
        if (vecs <= 32) launch_vec<E, 32, 1>(fwd, s, a, p, st);
        else if (vecs <= 64) launch_vec<E, 32, 2>(fwd, s, a, p, st);
        else if (vecs <= 128) launch_vec<E, 32, 4>(fwd, s, a, p, st);
        else if (vecs <= 256) launch_vec<E, 256, 1>(fwd, s, a, p, st);
        else if (vecs <= 512) launch_vec<E, 256, 2>(fwd, s, a, p, st);
        else if (vecs <= 1024) launch_vec<E, 256, 4>(fwd, s, a, p, st);
        else launch_vec<E, 1024, 4>(fwd, s, a, p, st);
    } else {
        unsigned rows = (unsigned)attn_rows(s);
        if (fwd)
            softmax_rows<E><<<rows, kRowThreads, 0, st>>>(a, T, s->H, mask_dev(s));
        else
            softmax_rows_backward<E><<<rows, kRowThreads, 0, st>>>(p, a, T, s->mask.kind == ATTN_MASK_CAUSAL);
    }
    ATTN_LAUNCH_CHECK();
    return 0;
}

/* ---- the AttnImpl ---------------------------------------------------------------------------- */

static size_t score_elems(const AttnShape *s) { return (size_t)s->B * s->H * s->T * s->T; }

static const char *naive_unsupported(const AttnShape *s) {
    const char *why = attn_shape_problem(s);
    if (why) return why;
    if (attn_rows(s) > 0x7fffffffLL) return "too many rows for one launch";
    return NULL;
}
static size_t naive_saved_bytes(const AttnShape *s) { return score_elems(s) * attn_esize(s->dtype); }
/* The pointer arrays, then dP/dS (backward only). */
static size_t naive_workspace_bytes(const AttnShape *s) {
    return ptr_region_bytes(s) + score_elems(s) * attn_esize(s->dtype);
}

static int naive_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                         void *saved, void *workspace, void *stream) {
    const char *why = naive_unsupported(s);
    if (why) return attn_cuda_fail("naive forward: %s", why);
    cudaStream_t st = attn_stream(stream);
    GemmCtx c = {s, NULL, NULL};
    if (naive_handle(&c.hd, st)) return 1;
    int T = s->T, D = s->D;
    Operand K = token_major(s, k, s->ld_qkv, 0), Q = token_major(s, q, s->ld_qkv, 1);
    Operand SP = scores(s, saved, 2), V = token_major(s, v, s->ld_qkv, 3);
    Operand O = token_major(s, o, s->ld_o, 4);
    Operand ops[5] = {K, Q, SP, V, O};
    if (prepare_pointers(c, ops, 5, workspace, st)) return 1;
    /* S^T(col-major) = scale K Q^T: m = n = T, k = D; straight into `saved`. */
    if (gemm_per_head(c, CUBLAS_OP_T, CUBLAS_OP_N, T, T, D, s->scale, K, Q, 0.0f, SP)) return 1;
    int rc = s->dtype == ATTN_BF16 ? launch_softmax<bf16>(true, s, (bf16 *)saved, NULL, st)
                                   : launch_softmax<float>(true, s, (float *)saved, NULL, st);
    if (rc) return rc;
    /* O^T = V^T P^T: m = D, n = T, k = T. */
    return gemm_per_head(c, CUBLAS_OP_N, CUBLAS_OP_N, D, T, T, 1.0f, V, SP, 0.0f, O);
}

static int naive_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                          const void *o, const void *dout, const void *saved, void *dq, void *dk,
                          void *dv, void *workspace, void *stream) {
    const char *why = naive_unsupported(s);
    if (why) return attn_cuda_fail("naive backward: %s", why);
    cudaStream_t st = attn_stream(stream);
    GemmCtx c = {s, NULL, NULL};
    if (naive_handle(&c.hd, st)) return 1;
    int T = s->T, D = s->D;
    void *dP = (char *)workspace + ptr_region_bytes(s);
    Operand V = token_major(s, v, s->ld_qkv, 0), dO = token_major(s, dout, s->ld_o, 1);
    Operand dPS = scores(s, dP, 2), P = scores(s, saved, 3);
    Operand dV = token_major(s, dv, s->ld_qkv, 4), K = token_major(s, k, s->ld_qkv, 5);
    Operand dQ = token_major(s, dq, s->ld_qkv, 6), Q = token_major(s, q, s->ld_qkv, 7);
    Operand dK = token_major(s, dk, s->ld_qkv, 8);
    Operand ops[9] = {V, dO, dPS, P, dV, K, dQ, Q, dK};
    if (prepare_pointers(c, ops, 9, workspace, st)) return 1;
    /* dP^T = V dO^T. */
    if (gemm_per_head(c, CUBLAS_OP_T, CUBLAS_OP_N, T, T, D, 1.0f, V, dO, 0.0f, dPS)) return 1;
    int rc = s->dtype == ATTN_BF16
                 ? launch_softmax<bf16>(false, s, (bf16 *)dP, (const bf16 *)saved, st)
                 : launch_softmax<float>(false, s, (float *)dP, (const float *)saved, st);
    if (rc) return rc;
    /* dV^T = dO^T P: m = D, n = T, k = T. */
    if (gemm_per_head(c, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, 1.0f, dO, P, 0.0f, dV)) return 1;
    /* dQ^T = scale K^T dS^T. */
    if (gemm_per_head(c, CUBLAS_OP_N, CUBLAS_OP_N, D, T, T, s->scale, K, dPS, 0.0f, dQ)) return 1;
    /* dK^T = scale Q^T dS. */
    return gemm_per_head(c, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, s->scale, Q, dPS, 0.0f, dK);
}

const AttnImpl attn_naive_cuda = {ATTN_NAIVE,           ATTN_CUDA,         naive_unsupported,
                                  naive_saved_bytes,    naive_workspace_bytes, naive_forward,
                                  naive_backward};
