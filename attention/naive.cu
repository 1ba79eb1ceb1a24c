/* attention/naive.cu: "standard attention" on the GPU, the baseline the documents compare against.
 *
 *   forward   S = scale * Q K^T        cuBLAS, fp32 result in the workspace   (B,H,T,T)
 *             P = softmax(S + bias)    one kernel, P kept in `saved` in the element type
 *             O = P V                  cuBLAS
 *   backward  dP = dO V^T              cuBLAS, fp32 in the workspace
 *             dS = P * (dP - rowsum(P * dP))   one kernel (fp32: in place; bf16: own buffer)
 *             dV = P^T dO,  dQ = scale * dS K,  dK = scale * dS^T Q      cuBLAS
 *
 * Memory: saved = B H T^2 elements (P), workspace = B H T^2 fp32 (+ B H T^2 bf16 for dS in bf16).
 * Every GEMM accumulates in fp32 (CUBLAS_COMPUTE_32F, no TF32). The GEMMs compute every score,
 * masked or not: that is the standard design; the causal softmax writes exact zeros above the
 * diagonal. Deterministic.
 *
 * cuBLAS is column-major; a row-major (rows x cols, ld) matrix is its column-major transpose. Per
 * head, Q/K/V are T x D row-major with ld = ld_qkv; S/P are T x T with ld = T.
 */
#include <cublas_v2.h>
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

/* One operand of a per-head GEMM: a base pointer, its type, leading dimension, and the element
 * offsets between consecutive batch rows b and heads h. */
struct Operand {
    const void *ptr;
    cudaDataType type;
    int ld;
    long long stride_b, stride_h;
};
static size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }
static const char *offset_ptr(const Operand &x, long long elems) {
    return (const char *)x.ptr + elems * (long long)type_size(x.type);
}

/* C_bh = alpha * op(A_bh) op(B_bh) + beta * C_bh for every (b, h), column-major terms: one
 * strided-batched call per row of the larger of B and H (batched over the larger). */
static int gemm_per_head(cublasHandle_t hd, const AttnShape *s, cublasOperation_t ta,
                         cublasOperation_t tb, int m, int n, int k, float alpha, Operand A,
                         Operand B, float beta, Operand C) {
    int batch_over_heads = s->H >= s->B;
    int count = batch_over_heads ? s->H : s->B, loops = batch_over_heads ? s->B : s->H;
    for (int l = 0; l < loops; l++) {
        long long oa = l * (batch_over_heads ? A.stride_b : A.stride_h);
        long long ob = l * (batch_over_heads ? B.stride_b : B.stride_h);
        long long oc = l * (batch_over_heads ? C.stride_b : C.stride_h);
        long long sa = batch_over_heads ? A.stride_h : A.stride_b;
        long long sb = batch_over_heads ? B.stride_h : B.stride_b;
        long long sc = batch_over_heads ? C.stride_h : C.stride_b;
        CUBLAS_TRY(cublasGemmStridedBatchedEx(
            hd, ta, tb, m, n, k, &alpha, offset_ptr(A, oa), A.type, A.ld, sa, offset_ptr(B, ob),
            B.type, B.ld, sb, &beta, (void *)offset_ptr(C, oc), C.type, C.ld, sc, count,
            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    return 0;
}

/* Operands in the token-major layout, and the (B,H,T,T) score matrices. */
static Operand token_major(const AttnShape *s, const void *p, int ld) {
    Operand o = {p, s->dtype == ATTN_BF16 ? CUDA_R_16BF : CUDA_R_32F, ld, (long long)s->T * ld,
                 (long long)s->D};
    return o;
}
static Operand scores(const AttnShape *s, const void *p, cudaDataType type) {
    long long tt = (long long)s->T * s->T;
    Operand o = {p, type, s->T, tt * s->H, tt};
    return o;
}

/* ---- softmax kernels: one block per score row ---------------------------------------------- */

static const int kRowThreads = 256;

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

/* Row r = (b*H + h)*T + i: P[r, j] = exp(S + bias - max) / sum; masked entries and fully
 * masked rows give exact zeros. Columns past the causal diagonal are not read. */
template <typename E>
__global__ void __launch_bounds__(kRowThreads)
softmax_rows(const float *__restrict__ S, E *__restrict__ P, int T, int H, MaskDev mask) {
    long long r = blockIdx.x;
    int i = (int)(r % T), h = (int)((r / T) % H), b = (int)(r / ((long long)T * H));
    const float *s = S + r * T;
    E *p = P + r * T;
    int n_live = mask.kind == ATTN_MASK_CAUSAL ? i + 1 : T;
    float m = -INFINITY, l = 0.0f;
    for (int j = threadIdx.x; j < n_live; j += blockDim.x) {
        float x = s[j] + mask_bias(mask, b, h, i, j);
        if (x == -INFINITY) continue;
        float mn = fmaxf(m, x);
        l = l * __expf(m - mn) + __expf(x - mn);
        m = mn;
    }
    block_reduce_max_sum(m, l);
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float pj = 0.0f;
        if (j < n_live && l > 0.0f) pj = __expf(s[j] + mask_bias(mask, b, h, i, j) - m) * inv;
        p[j] = from_float<E>(pj);
    }
}

/* dS[r, j] = P[r, j] * (dP[r, j] - sum_k P[r, k] dP[r, k]). dS may alias dP (fp32). */
template <typename E>
__global__ void __launch_bounds__(kRowThreads)
softmax_rows_backward(const E *__restrict__ P, const float *dP, E *dS, int T, int causal) {
    long long r = blockIdx.x;
    int i = (int)(r % T);
    const E *p = P + r * T;
    const float *dp = dP + r * T;
    E *ds = dS + r * T;
    int n_live = causal ? i + 1 : T;
    float acc = 0.0f;
    for (int j = threadIdx.x; j < n_live; j += blockDim.x) acc += to_float(p[j]) * dp[j];
    float d = block_reduce_sum(acc);
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float v = j < n_live ? to_float(p[j]) * (dp[j] - d) : 0.0f;
        ds[j] = from_float<E>(v);
    }
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
static size_t naive_workspace_bytes(const AttnShape *s) {
    return score_elems(s) * (4 + (s->dtype == ATTN_BF16 ? 2 : 0));
}

static int naive_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                         void *saved, void *workspace, void *stream) {
    const char *why = naive_unsupported(s);
    if (why) return attn_cuda_fail("naive forward: %s", why);
    cudaStream_t st = attn_stream(stream);
    cublasHandle_t hd;
    if (naive_handle(&hd, st)) return 1;
    int T = s->T, D = s->D;
    cudaDataType et = s->dtype == ATTN_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    float *S = (float *)workspace;
    /* S^T(col-major) = K Q^T: m = n = T, k = D. */
    if (gemm_per_head(hd, s, CUBLAS_OP_T, CUBLAS_OP_N, T, T, D, s->scale,
                      token_major(s, k, s->ld_qkv), token_major(s, q, s->ld_qkv), 0.0f,
                      scores(s, S, CUDA_R_32F)))
        return 1;
    long long rows = attn_rows(s);
    if (s->dtype == ATTN_BF16)
        softmax_rows<bf16><<<(unsigned)rows, kRowThreads, 0, st>>>(S, (bf16 *)saved, T, s->H, mask_dev(s));
    else
        softmax_rows<float><<<(unsigned)rows, kRowThreads, 0, st>>>(S, (float *)saved, T, s->H, mask_dev(s));
    ATTN_LAUNCH_CHECK();
    /* O^T = V^T P^T: m = D, n = T, k = T. */
    return gemm_per_head(hd, s, CUBLAS_OP_N, CUBLAS_OP_N, D, T, T, 1.0f,
                         token_major(s, v, s->ld_qkv), scores(s, saved, et), 0.0f,
                         token_major(s, o, s->ld_o));
}

static int naive_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                          const void *o, const void *dout, const void *saved, void *dq, void *dk,
                          void *dv, void *workspace, void *stream) {
    const char *why = naive_unsupported(s);
    if (why) return attn_cuda_fail("naive backward: %s", why);
    cudaStream_t st = attn_stream(stream);
    cublasHandle_t hd;
    if (naive_handle(&hd, st)) return 1;
    int T = s->T, D = s->D;
    int bf = s->dtype == ATTN_BF16;
    cudaDataType et = bf ? CUDA_R_16BF : CUDA_R_32F;
    float *dP = (float *)workspace;
    void *dS = bf ? (void *)(dP + score_elems(s)) : (void *)dP;
    /* dP^T = V dO^T. */
    if (gemm_per_head(hd, s, CUBLAS_OP_T, CUBLAS_OP_N, T, T, D, 1.0f,
                      token_major(s, v, s->ld_qkv), token_major(s, dout, s->ld_o), 0.0f,
                      scores(s, dP, CUDA_R_32F)))
        return 1;
    long long rows = attn_rows(s);
    int causal = s->mask.kind == ATTN_MASK_CAUSAL;
    if (bf)
        softmax_rows_backward<bf16><<<(unsigned)rows, kRowThreads, 0, st>>>(
            (const bf16 *)saved, dP, (bf16 *)dS, T, causal);
    else
        softmax_rows_backward<float><<<(unsigned)rows, kRowThreads, 0, st>>>(
            (const float *)saved, dP, (float *)dS, T, causal);
    ATTN_LAUNCH_CHECK();
    /* dV^T = dO^T P: m = D, n = T, k = T. */
    if (gemm_per_head(hd, s, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, 1.0f,
                      token_major(s, dout, s->ld_o), scores(s, saved, et), 0.0f,
                      token_major(s, dv, s->ld_qkv)))
        return 1;
    /* dQ^T = scale K^T dS^T. */
    if (gemm_per_head(hd, s, CUBLAS_OP_N, CUBLAS_OP_N, D, T, T, s->scale,
                      token_major(s, k, s->ld_qkv), scores(s, dS, et), 0.0f,
                      token_major(s, dq, s->ld_qkv)))
        return 1;
    /* dK^T = scale Q^T dS. */
    return gemm_per_head(hd, s, CUBLAS_OP_N, CUBLAS_OP_T, D, T, T, s->scale,
                         token_major(s, q, s->ld_qkv), scores(s, dS, et), 0.0f,
                         token_major(s, dk, s->ld_qkv));
}

const AttnImpl attn_naive_cuda = {ATTN_NAIVE,           ATTN_CUDA,         naive_unsupported,
                                  naive_saved_bytes,    naive_workspace_bytes, naive_forward,
                                  naive_backward};
