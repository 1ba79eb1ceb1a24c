/* layers/matmul_cuda.cu: the fully connected layer through cuBLASLt, with fused epilogues.
 *
 * Row-major (N, C) activations are column-major (C, N) matrices to cuBLAS, so with W (OC, C)
 * row-major (= column-major C x OC):
 *   forward       out^T (OC x N)  = W^T-ish: op(A)=W^T (OC x C), B = inp^T (C x N)   m=OC n=N k=C
 *   input grad    dinp^T (C x N)  = W (C x OC) * dout^T (OC x N)                     m=C n=N k=OC
 *   weight grad   dW^T (C x OC)  += inp^T (C x N) * dout (N x OC)                    m=C n=OC k=N
 * FLOPs: 2 N C OC each. Epilogues fold the pointwise work into the GEMM's store:
 *   forward: BIAS, or GELU_AUX_BIAS (writes the pre-activation to aux and GELU to out);
 *   input grad: DGELU (multiplies by GELU'(aux) on the way out);
 *   weight grad: BGRADB (the bias gradient is the sum of dout over k = N), off by default:
 *   measured slower than colsum_cuda.cu's separate pass.
 * When cuBLASLt offers no algorithm for a fused form (or fusion is switched off), the plain
 * GEMM runs and the pointwise kernels (gelu_cuda.cu, colsum_cuda.cu) do the rest: same math.
 * Parameter gradients are fp32 in every precision (bf16 or fp16 A/B with fp32 C/D and fp32 compute;
 * activations out of a 16-bit GEMM are rounded from the fp32 accumulator, fp16 saturating to inf).
 * One handle and one 32 MiB workspace per process, offered to the GEMMs that gain from it
 * (workspace_for); algorithm choices are cached per shape.
 * The FP8 GEMMs of --matmul fp8 (cuda_matmul_fp8, driven by layers/fp8_cuda.cu) go through the
 * same path with E4M3 / E5M2 operands, a device scale per operand and fp32 accumulation.
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"
#include <cublasLt.h>
#include <string.h>

#define CUBLAS_CHECK(call)                                                                 \
    do {                                                                                   \
        cublasStatus_t st_ = (call);                                                       \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                \
            fprintf(stderr, "cuBLASLt error %d at %s:%d\n", (int)st_, __FILE__, __LINE__); \
            return -1;                                                                     \
        }                                                                                  \
    } while (0)

static cublasLtHandle_t g_lt = NULL;
static void *g_workspace = NULL;
static const size_t g_workspace_bytes = 32u << 20;
static int g_tf32 = 1, g_fusion = 1, g_bgrad_epilogue = 0;
static long g_fallbacks = 0;

extern "C" int cuda_matmul_init(void) {
    if (g_lt) return 0;
    if (cublasLtCreate(&g_lt) != CUBLAS_STATUS_SUCCESS) return -1;
    if (cudaMalloc(&g_workspace, g_workspace_bytes) != cudaSuccess) {
        cublasLtDestroy(g_lt);
        g_lt = NULL;
        return -1;
    }
    return 0;
}
extern "C" void cuda_matmul_shutdown(void) {
    if (!g_lt) return;
    cudaFree(g_workspace);
    cublasLtDestroy(g_lt);
    g_lt = NULL;
    g_workspace = NULL;
}
extern "C" void cuda_matmul_set_tf32(int enabled) { g_tf32 = enabled != 0; }
extern "C" int cuda_matmul_get_tf32(void) { return g_tf32; }
extern "C" void cuda_matmul_set_fusion(int enabled) { g_fusion = enabled != 0; }
extern "C" void cuda_matmul_set_bias_grad_epilogue(int enabled) { g_bgrad_epilogue = enabled != 0; }
extern "C" long cuda_matmul_fallback_count(void) { return g_fallbacks; }
extern "C" size_t cuda_matmul_workspace_bytes(void) { return g_workspace_bytes; }

/* Largest power of two up to 256 dividing the address (cuBLASLt picks kernels by alignment). */
static int alignment_of(const void *p, int ld, int elem) {
    uintptr_t a = (uintptr_t)p | (uintptr_t)((size_t)ld * elem) | 256u;
    return (int)(a & (~a + 1));
}

typedef struct {
    int m, n, k, lda, ldb, ldd, ldaux, transa, transb, epilogue, a_type, b_type, d_type, compute;
    int align_a, align_b, align_d, align_aux, beta_nonzero, scaled, fast_accum;
} MatmulKey;
typedef struct {
    MatmulKey key;
    int found; /* 1: algo valid, 0: cuBLASLt offers none */
    cublasLtMatmulAlgo_t algo;
    size_t workspace; /* the bytes it was chosen with and runs with (workspace_for) */
} MatmulCacheEntry;
enum { MATMUL_CACHE_SIZE = 256 };
static MatmulCacheEntry g_cache[MATMUL_CACHE_SIZE];
static int g_cache_used = 0;

static int type_bytes(cudaDataType t) {
    return t == CUDA_R_32F ? 4 : t == CUDA_R_8F_E4M3 || t == CUDA_R_8F_E5M2 ? 1 : 2;
}
static const char *type_name(cudaDataType t) {
    switch (t) {
    case CUDA_R_32F: return "fp32";
    case CUDA_R_16BF: return "bf16";
    case CUDA_R_16F: return "fp16";
    case CUDA_R_8F_E4M3: return "e4m3";
    case CUDA_R_8F_E5M2: return "e5m2";
    default: return "?";
    }
}

/* The workspace a GEMM is offered: 0 or the whole 32 MiB. Given one, cuBLASLt's Hopper kernels
 * keep a tile counter in it (a dynamically balanced persistent schedule), zeroed by a 4-byte
 * memset before every call; without one the same kernel runs a static schedule and no memset,
 * and a weight gradient one un-split kernel instead of split-K and its reduce. A memset between
 * two kernels leaves the GPU idle ~3-5 us (dev/trace_gaps.py: 111 of them, ~0.5 ms of a GPT-2
 * 124M B = 16 step). In a CUDA graph, 20 calls back to back (dev/bench_matmul_algos, H200,
 * 2026-12-04, bf16, C = 768): without the workspace a layer's forward and input-gradient GEMMs
 * are 2-8% faster at N = 16384 tokens and 0.5-3% at 65536; the weight gradients (k = N) 0-15%
 * faster at 16384, at 65536 qkv's 8% faster but the others 1-23% slower (there split-K pays:
 * the output is 768 x 768 to 768 x 3072, few tiles); the lm head's (50304 x 16384 x 768) 2-7%
 * slower; fcproj's DGELU input gradient 2.6-2.8x slower (the one workspace-free algorithm).
 * So 16-bit GEMMs get none, except
 * DGELU's, those of more than 2^38 multiply-adds and those with k above 32768; fp32 (TF32) and
 * FP8 GEMMs, not measured without, keep it. A shape without a workspace-free algorithm falls
 * back to the workspace. */
static size_t workspace_for(cudaDataType a_type, int m, int n, int k, cublasLtEpilogue_t epilogue) {
    const int sixteen_bit = a_type == CUDA_R_16BF || a_type == CUDA_R_16F;
    const int dgelu = epilogue == CUBLASLT_EPILOGUE_DGELU || epilogue == CUBLASLT_EPILOGUE_DGELU_BGRAD;
    const int large = (double)m * n * k > 274877906944.0 /* 2^38 */ || k > 32768;
    return sixteen_bit && !dgelu && !large ? 0 : g_workspace_bytes;
}

/* What the last refused or failed GEMM was (cuda_matmul_last_refusal). */
static char g_refusal[512] = "";
static void note_refusal(const char *what, cublasStatus_t st, const MatmulKey *k, cudaDataType at,
                         cudaDataType bt, cudaDataType dt, const void *a_scale, const void *b_scale) {
    snprintf(g_refusal, sizeof g_refusal,
             "%s: status %d (%s); m=%d n=%d k=%d op(A)=%c op(B)=%c lda=%d ldb=%d ldd=%d A %s B %s D %s "
             "epilogue %d fast_accum %d; alignment A %d B %d D %d bytes; scale pointers A %p B %p",
             what, (int)st, cublasLtGetStatusName(st), k->m, k->n, k->k, k->transa ? 'T' : 'N', k->transb ? 'T' : 'N',
             k->lda, k->ldb, k->ldd, type_name(at), type_name(bt), type_name(dt), k->epilogue, k->fast_accum,
             k->align_a, k->align_b, k->align_d, a_scale, b_scale);
}
extern "C" const char *cuda_matmul_last_refusal(void) { return g_refusal; }

/* D (m x n, ld ldd) = alpha sa sb op(A) op(B) + beta D, with an epilogue; sa, sb: device floats
 * (a_scale, b_scale; NULL = 1, the 16-bit and fp32 GEMMs). FP8 A/B (Hopper and Ada) take only
 * op(A) = T, op(B) = N, dimensions in multiples of 16 and 16-byte aligned pointers, the scale
 * pointers too. Returns 0 on success, 1 when cuBLASLt has no algorithm for this combination or
 * refuses it at run time (g_refusal says which, with the status), -1 on error. */
static int lt_matmul_typed(cudaDataType a_type, cudaDataType b_type, cudaDataType d_type, int m, int n, int k,
                           const void *A, int lda, int transa, const void *B, int ldb, int transb, void *D,
                           int ldd, float alpha, float beta, cublasLtEpilogue_t epilogue, const void *bias,
                           void *aux, int ldaux, const float *a_scale, const float *b_scale, int fast_accum,
                           cudaStream_t stream) {
    if (!g_lt && cuda_matmul_init() != 0) return -1;
    int a_size = type_bytes(a_type), b_size = type_bytes(b_type), d_size = type_bytes(d_type);
    cublasComputeType_t compute =
        (a_type == CUDA_R_32F && g_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    MatmulKey key;
    memset(&key, 0, sizeof key);
    key.m = m; key.n = n; key.k = k; key.lda = lda; key.ldb = ldb; key.ldd = ldd;
    key.ldaux = aux ? ldaux : 0; key.transa = transa; key.transb = transb;
    key.epilogue = (int)epilogue; key.a_type = (int)a_type; key.b_type = (int)b_type; key.d_type = (int)d_type;
    key.compute = (int)compute; key.beta_nonzero = beta != 0.0f;
    key.scaled = (a_scale != NULL) | (b_scale != NULL) << 1; key.fast_accum = fast_accum != 0;
    key.align_a = alignment_of(A, lda, a_size);
    key.align_b = alignment_of(B, ldb, b_size);
    key.align_d = alignment_of(D, ldd, d_size);
    key.align_aux = aux ? alignment_of(aux, ldaux, d_size) : 0;

    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasOperation_t opa = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    int8_t fast = fast_accum != 0;
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
    int rc = -1;
    cublasLtMatmulAlgo_t algo;
    size_t workspace = 0;
    MatmulCacheEntry *hit = NULL;
    if (cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa) ||
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb) ||
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                       sizeof epilogue))
        goto done;
    if (bias && cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                               sizeof bias))
        goto done;
    if (aux) {
        int64_t ldaux64 = ldaux;
        if (cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                           &aux, sizeof aux) ||
            cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ldaux64,
                                           sizeof ldaux64))
            goto done;
    }
    if ((a_scale && cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale,
                                                   sizeof a_scale)) ||
        (b_scale && cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale,
                                                   sizeof b_scale)) ||
        (fast && cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast)))
        goto done;
    if (cublasLtMatrixLayoutCreate(&la, a_type, transa ? k : m, transa ? m : k, lda) ||
        cublasLtMatrixLayoutCreate(&lb, b_type, transb ? n : k, transb ? k : n, ldb) ||
        cublasLtMatrixLayoutCreate(&ld, d_type, m, n, ldd))
        goto done;

    for (int i = 0; i < g_cache_used; i++)
        if (memcmp(&g_cache[i].key, &key, sizeof key) == 0) { hit = &g_cache[i]; break; }
    if (hit) {
        if (!hit->found) { rc = 1; goto done; }
        algo = hit->algo;
        workspace = hit->workspace;
    } else {
        cublasLtMatmulPreference_t pref = NULL;
        cublasLtMatmulHeuristicResult_t result;
        int found = 0;
        uint32_t aa = key.align_a, ab = key.align_b, ad = key.align_d;
        if (cublasLtMatmulPreferenceCreate(&pref)) goto done;
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad, sizeof ad);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof ad);
        workspace = workspace_for(a_type, m, n, k, epilogue);
        for (;;) { /* without a workspace first where workspace_for says so, then with it */
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                 sizeof workspace);
            st = cublasLtMatmulAlgoGetHeuristic(g_lt, desc, la, lb, ld, ld, pref, 1, &result, &found);
            if ((st == CUBLAS_STATUS_SUCCESS && found > 0) || workspace == g_workspace_bytes) break;
            workspace = g_workspace_bytes;
        }
        cublasLtMatmulPreferenceDestroy(pref);
        if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
            found = 0;
            note_refusal("no cuBLASLt algorithm", st, &key, a_type, b_type, d_type, a_scale, b_scale);
        }
        if (g_cache_used < MATMUL_CACHE_SIZE) {
            MatmulCacheEntry *e = &g_cache[g_cache_used++];
            e->key = key;
            e->found = found != 0;
            if (found) e->algo = result.algo;
            e->workspace = workspace;
            hit = e;
        }
        if (!found) { rc = 1; goto done; }
        algo = result.algo;
    }
    st = cublasLtMatmul(g_lt, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &algo, workspace ? g_workspace : NULL,
                        workspace, stream);
    rc = 0;
    if (st != CUBLAS_STATUS_SUCCESS) {
        /* refused at run time (e.g. NOT_SUPPORTED for an alignment the heuristic did not weigh):
         * a refusal like the heuristic's, remembered, so a fused form falls back from now on */
        note_refusal("cublasLtMatmul refused", st, &key, a_type, b_type, d_type, a_scale, b_scale);
        if (hit) hit->found = 0;
        rc = 1;
    }
done:
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    cublasLtMatmulDescDestroy(desc);
    return rc;
}

/* The 16-bit and fp32 GEMMs: A and B of one type, no scales. */
static int lt_matmul(cudaDataType ab_type, cudaDataType d_type, int m, int n, int k,
                     const void *A, int lda, int transa, const void *B, int ldb, int transb,
                     void *D, int ldd, float alpha, float beta, cublasLtEpilogue_t epilogue,
                     const void *bias, void *aux, int ldaux, cudaStream_t stream) {
    return lt_matmul_typed(ab_type, ab_type, d_type, m, n, k, A, lda, transa, B, ldb, transb, D, ldd, alpha,
                           beta, epilogue, bias, aux, ldaux, NULL, NULL, 0, stream);
}

/* The FP8 GEMM of layers_cuda.h (cuda_matmul_fp8): "TN" only, contiguous operands. */
extern "C" int cuda_matmul_fp8(int m, int n, int k, const void *A, int a_e5m2, const float *a_descale,
                               const void *B, int b_e5m2, const float *b_descale, void *D, int d_fp32,
                               float alpha, float beta, Fp8Epilogue epi, const void *bias, void *aux,
                               int fast_accum, cudaStream_t stream) {
    cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_DEFAULT;
    if (epi == FP8_EPI_BIAS) e = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (epi == FP8_EPI_GELU_AUX) e = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    if (epi == FP8_EPI_DGELU) e = CUBLASLT_EPILOGUE_DGELU;
    if (epi == FP8_EPI_GELU_AUX && !g_fusion) return 1;
    if (epi == FP8_EPI_DGELU && !g_fusion) return 1;
    int rc = lt_matmul_typed(a_e5m2 ? CUDA_R_8F_E5M2 : CUDA_R_8F_E4M3, b_e5m2 ? CUDA_R_8F_E5M2 : CUDA_R_8F_E4M3,
                             d_fp32 ? CUDA_R_32F : CUDA_R_16BF, m, n, k, A, k, 1, B, k, 0, D, m, alpha, beta, e,
                             e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ? bias : NULL,
                             aux, m, a_descale, b_descale, fast_accum, stream);
    if (rc == 1 && (epi == FP8_EPI_GELU_AUX || epi == FP8_EPI_DGELU)) g_fallbacks++;
    return rc;
}

static cudaDataType act_type(Precision p) {
    return p == PRECISION_BF16 ? CUDA_R_16BF : p == PRECISION_FP16 ? CUDA_R_16F : CUDA_R_32F;
}

__global__ void add_into_kernel(float *dst, const float *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] += src[i];
}

extern "C" int cuda_matmul_forward(Precision p, void *out, void *gelu_pre, const void *inp,
                                   const void *weight, const void *bias, int N, int C, int OC,
                                   int ld_out, cudaStream_t stream) {
    cudaDataType t = act_type(p);
    if (ld_out == 0) ld_out = OC;
    if (!gelu_pre)
        return lt_matmul(t, t, OC, N, C, weight, C, 1, inp, C, 0, out, ld_out, 1.0f, 0.0f,
                         bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, bias, NULL, 0,
                         stream) == 0 ? 0 : -1;
    if (g_fusion) {
        int rc = lt_matmul(t, t, OC, N, C, weight, C, 1, inp, C, 0, out, ld_out, 1.0f, 0.0f,
                           bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX,
                           bias, gelu_pre, OC, stream);
        if (rc <= 0) return rc;
        g_fallbacks++;
    }
    /* unfused: GEMM (+bias) into gelu_pre, then GELU into out */
    if (ld_out != OC) return -1;
    if (lt_matmul(t, t, OC, N, C, weight, C, 1, inp, C, 0, gelu_pre, OC, 1.0f, 0.0f,
                  bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, bias, NULL, 0,
                  stream) != 0)
        return -1;
    cuda_gelu_forward(p, out, gelu_pre, (size_t)N * OC, stream);
    return 0;
}

extern "C" int cuda_matmul_backward(Precision p, void *dinp, float *dweight, float *dbias,
                                    const void *dout, const void *inp, const void *weight,
                                    const void *gelu_pre, int N, int C, int OC, int ld_dout,
                                    float alpha, float *scratch, cudaStream_t stream) {
    cudaDataType t = act_type(p);
    if (ld_dout == 0) ld_dout = OC;
    if (dinp) {
        int rc = 1;
        if (gelu_pre && g_fusion) {
            rc = lt_matmul(t, t, C, N, OC, weight, C, 0, dout, ld_dout, 0, dinp, C, alpha, 0.0f,
                           CUBLASLT_EPILOGUE_DGELU, NULL, (void *)gelu_pre, C, stream);
            if (rc < 0) return -1;
            if (rc == 1) g_fallbacks++;
        }
        if (rc == 1) {
            if (lt_matmul(t, t, C, N, OC, weight, C, 0, dout, ld_dout, 0, dinp, C, alpha, 0.0f,
                          CUBLASLT_EPILOGUE_DEFAULT, NULL, NULL, 0, stream) != 0)
                return -1;
            if (gelu_pre) cuda_gelu_backward(p, dinp, gelu_pre, dinp, (size_t)N * C, stream);
        }
    }
    /* The bias gradient epilogue overwrites its vector and ignores alpha, so it writes into
     * scratch and a tiny kernel adds it; only used when alpha == 1. Off by default: on an H100
     * (N=16K, C=768, bf16) BGRADB added 46/19/53/18 us to the qkv/attproj/fc/fcproj weight
     * GEMMs, the separate column sum 40/15/49/19 us (dev/cuda_trainer_notes.md). */
    if (!dweight) return 0; /* the input gradient only (--matmul fp8's dGELU layer) */
    int bias_done = 0;
    if (dbias && g_fusion && g_bgrad_epilogue && alpha == 1.0f) {
        int rc = lt_matmul(t, CUDA_R_32F, C, OC, N, inp, C, 0, dout, ld_dout, 1, dweight, C,
                           alpha, 1.0f, CUBLASLT_EPILOGUE_BGRADB, scratch, NULL, 0, stream);
        if (rc < 0) return -1;
        if (rc == 0) {
            add_into_kernel<<<ceil_div_u(OC, 256), 256, 0, stream>>>(dbias, scratch, OC);
            CUDA_LAUNCH_CHECK();
            bias_done = 1;
        } else {
            g_fallbacks++;
        }
    }
    if (!bias_done) {
        if (lt_matmul(t, CUDA_R_32F, C, OC, N, inp, C, 0, dout, ld_dout, 1, dweight, C, alpha,
                      1.0f, CUBLASLT_EPILOGUE_DEFAULT, NULL, NULL, 0, stream) != 0)
            return -1;
        if (dbias) cuda_colsum_accumulate(p, dbias, dout, N, OC, ld_dout, alpha, scratch, stream);
    }
    return 0;
}
