/* dev/bench_matmul_algos.cu: does cuBLASLt's first heuristic pick the fastest kernel for the
 * trainer's GEMMs? For each GEMM of a GPT-2 124M step (C = 768, vocab 50304, bf16, the same
 * operand layouts and epilogues as layers/matmul_cuda.cu) it asks for up to 16 algorithms and
 * times each (CUDA events, median of 10 after 2 warm-ups), printing the first one's time, the
 * best one's and their ratio. Experiment only: production keeps the first heuristic unless this
 * shows a gap worth an autotuner. The "+bgrad" rows ask for the bias gradient from the GEMM
 * itself (fp32, into the bias pointer): fcproj's input gradient with DGELU_BGRAD would give fc's
 * bias gradient, a weight gradient with BGRADB its own, against colsum_cuda.cu's separate pass.
 * The "(alt)" rows are the fused GEMMs without their GELU work (or without the aux store): what
 * the epilogue costs. Neither they nor "+bgrad" / "bf16 out" count in the per-layer sums.
 * Below each row, the first pick inside a CUDA graph, 20 calls back to back (graph_ms): with the
 * 32 MiB workspace (cuBLASLt may put a memset of it before the kernel) and with none.
 *   build/dev/bench_matmul_algos [N ...]      (default N = 16384 and 65536 tokens)
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <algorithm>
#include <vector>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)
#define LT(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { printf("cuBLASLt %d at %d\n", (int)s_, __LINE__); exit(1); } } while (0)

static cublasLtHandle_t lt;
static void *ws;
static const size_t ws_bytes = 32u << 20;

/* small bf16 values, never zero, filled on the device (the lm head's operands are GBs) */
__global__ void fill_kernel(unsigned short *p, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned s = (unsigned)(i * 2654435761u) ^ 0x9e3779b9u;
        s = s * 1664525u + 1013904223u;
        p[i] = (unsigned short)((0x3c00 + (s >> 23)) ^ ((s >> 8) & 0x8000));
    }
}
static void *dalloc(size_t bytes) {
    void *p;
    CK(cudaMalloc(&p, bytes));
    fill_kernel<<<1024, 256>>>((unsigned short *)p, bytes / 2);
    CK(cudaDeviceSynchronize());
    return p;
}

struct Gemm {
    const char *name;
    int m, n, k, transa, transb, d32, beta1;
    cublasLtEpilogue_t epi;
    int has_bias, has_aux, bias32; /* bias32: the bias (gradient) vector in fp32 */
};

/* "algo id/tile/stages/splitK/cluster" of one heuristic result, to tell kernels apart */
static const char *algo_desc(const cublasLtMatmulAlgo_t *a, char *buf, size_t n) {
    int id = 0; uint32_t tile = 0, stages = 0, cluster = 0; int32_t splitk = 0; size_t w;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, &w);
    snprintf(buf, n, "a%d/t%u/s%u/k%d/c%u", id, tile, stages, splitk, cluster);
    return buf;
}

static float median_ms(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                       cublasLtMatrixLayout_t ld, const cublasLtMatmulAlgo_t *algo, const void *A,
                       const void *B, void *D, float beta) {
    float alpha = 1.0f;
    cudaEvent_t a, b;
    cudaEventCreate(&a); cudaEventCreate(&b);
    std::vector<float> t;
    for (int i = 0; i < 12; i++) {
        cudaEventRecord(a);
        if (cublasLtMatmul(lt, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, algo, ws, ws_bytes, 0) !=
            CUBLAS_STATUS_SUCCESS) { cudaEventDestroy(a); cudaEventDestroy(b); return -1.0f; }
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms;
        cudaEventElapsedTime(&ms, a, b);
        if (i >= 2) t.push_back(ms);
    }
    cudaEventDestroy(a); cudaEventDestroy(b);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

/* The first pick's cost inside a CUDA graph, as the trainer runs it: one call captured to count the
 * graph nodes cuBLASLt makes of it (a kernel, or a memset of its workspace before the kernel),
 * then 20 calls back to back in one graph, timed per call (median of 5 replays). With workspace
 * bytes wsb (0: the algorithms that need none). *nodes, *memsets: what one call adds. */
static float graph_ms(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                      cublasLtMatrixLayout_t ld, const cublasLtMatmulAlgo_t *algo, const void *A, const void *B,
                      void *D, float beta, size_t wsb, int *nodes, int *memsets) {
    float alpha = 1.0f;
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    float out = -1.0f;
    for (int reps : {1, 20}) {
        cudaGraph_t g;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        int ok = 1;
        for (int r = 0; r < reps && ok; r++)
            ok = cublasLtMatmul(lt, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, algo, wsb ? ws : NULL, wsb, st) ==
                 CUBLAS_STATUS_SUCCESS;
        CK(cudaStreamEndCapture(st, &g));
        if (!ok) { cudaGraphDestroy(g); break; }
        if (reps == 1) {
            size_t n = 0;
            CK(cudaGraphGetNodes(g, NULL, &n));
            std::vector<cudaGraphNode_t> v(n);
            CK(cudaGraphGetNodes(g, v.data(), &n));
            *nodes = (int)n;
            *memsets = 0;
            for (auto nd : v) {
                cudaGraphNodeType t;
                CK(cudaGraphNodeGetType(nd, &t));
                *memsets += t == cudaGraphNodeTypeMemset;
            }
            cudaGraphDestroy(g);
            continue;
        }
        cudaGraphExec_t ex;
        CK(cudaGraphInstantiate(&ex, g, 0));
        cudaEvent_t a, b;
        cudaEventCreate(&a); cudaEventCreate(&b);
        std::vector<float> t;
        for (int i = 0; i < 7; i++) {
            cudaEventRecord(a, st);
            CK(cudaGraphLaunch(ex, st));
            cudaEventRecord(b, st);
            CK(cudaEventSynchronize(b));
            float ms;
            cudaEventElapsedTime(&ms, a, b);
            if (i >= 2) t.push_back(ms / reps);
        }
        std::sort(t.begin(), t.end());
        out = t[t.size() / 2];
        cudaEventDestroy(a); cudaEventDestroy(b);
        cudaGraphExecDestroy(ex);
        cudaGraphDestroy(g);
    }
    cudaStreamDestroy(st);
    return out;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines survive a crash */
    std::vector<int> Ns;
    for (int i = 1; i < argc; i++) Ns.push_back(atoi(argv[i]));
    if (Ns.empty()) Ns = {16384, 65536};
    LT(cublasLtCreate(&lt));
    CK(cudaMalloc(&ws, ws_bytes));
    const int C = 768, V = 50304;
    int Nmax = *std::max_element(Ns.begin(), Ns.end());
    /* every operand fits the largest: the logits (or their gradient) N x V */
    size_t big = std::max((size_t)Nmax * V, (size_t)V * C * 2);
    void *A = dalloc(big * 2);
    void *B = dalloc(big * 2);
    void *D = dalloc(big * 2); /* bf16 N x V, or fp32 V x C */
    void *aux = dalloc((size_t)Nmax * 4 * C * 2);
    void *bias = dalloc(4 * C * 4);
    double total_first = 0, total_best = 0, graph_first = 0, graph_zero = 0;
    for (int N : Ns) {
        /* m, n, k, transa, transb, fp32 D, beta 1, epilogue, bias, aux: as lt_matmul is called */
        Gemm G[] = {
            {"qkv fwd", 3 * C, N, C, 1, 0, 0, 0, CUBLASLT_EPILOGUE_BIAS, 1, 0},
            {"attproj fwd", C, N, C, 1, 0, 0, 0, CUBLASLT_EPILOGUE_BIAS, 1, 0},
            {"fc fwd+gelu", 4 * C, N, C, 1, 0, 0, 0, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, 1, 1},
            {"fc fwd bias (alt)", 4 * C, N, C, 1, 0, 0, 0, CUBLASLT_EPILOGUE_BIAS, 1, 0},
            {"fc fwd gelu (alt)", 4 * C, N, C, 1, 0, 0, 0, CUBLASLT_EPILOGUE_GELU_BIAS, 1, 0},
            {"fcproj fwd", C, N, 4 * C, 1, 0, 0, 0, CUBLASLT_EPILOGUE_BIAS, 1, 0},
            {"lm head fwd", V, N, C, 1, 0, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"qkv dinp", C, N, 3 * C, 0, 0, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"attproj dinp", C, N, C, 0, 0, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"fc dinp", C, N, 4 * C, 0, 0, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"fcproj dinp+dgelu", 4 * C, N, C, 0, 0, 0, 0, CUBLASLT_EPILOGUE_DGELU, 0, 1},
            {"fcproj dinp (alt)", 4 * C, N, C, 0, 0, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"fcproj dinp+dgelu+bgrad", 4 * C, N, C, 0, 0, 0, 0, CUBLASLT_EPILOGUE_DGELU_BGRAD, 1, 1, 1},
            {"lm head dinp", C, N, V, 0, 0, 0, 0, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"qkv dW", C, 3 * C, N, 0, 1, 1, 1, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"attproj dW", C, C, N, 0, 1, 1, 1, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"fc dW", C, 4 * C, N, 0, 1, 1, 1, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"fc dW+bgrad", C, 4 * C, N, 0, 1, 1, 1, CUBLASLT_EPILOGUE_BGRADB, 1, 0, 1},
            {"fcproj dW", 4 * C, C, N, 0, 1, 1, 1, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"lm head dW", C, V, N, 0, 1, 1, 1, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"qkv dW bf16 out", C, 3 * C, N, 0, 1, 0, 1, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
            {"fc dW bf16 out", C, 4 * C, N, 0, 1, 0, 1, CUBLASLT_EPILOGUE_DEFAULT, 0, 0},
        };
        printf("N = %d tokens, C = %d, bf16 in, fp32 compute; ms (TFLOP/s)\n", N, C);
        printf("%-20s %5s %16s %16s %7s  %s\n", "gemm", "algos", "first", "best", "ratio", "best index");
        for (auto &g : G) {
            cublasLtMatmulDesc_t desc;
            LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            cublasOperation_t opa = g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, opb = g.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
            LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
            LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
            LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &g.epi, sizeof g.epi));
            if (g.has_bias) LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
            if (g.bias32) {
                cudaDataType bt = CUDA_R_32F;
                LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
            }
            if (g.has_aux) {
                int64_t ldaux = g.m;
                LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
                LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ldaux, sizeof ldaux));
            }
            cublasLtMatrixLayout_t la, lb, ld;
            LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, g.transa ? g.k : g.m, g.transa ? g.m : g.k, g.transa ? g.k : g.m));
            LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, g.transb ? g.n : g.k, g.transb ? g.k : g.n, g.transb ? g.n : g.k));
            LT(cublasLtMatrixLayoutCreate(&ld, g.d32 ? CUDA_R_32F : CUDA_R_16BF, g.m, g.n, g.m));
            cublasLtMatmulPreference_t pref;
            LT(cublasLtMatmulPreferenceCreate(&pref));
            LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
            cublasLtMatmulHeuristicResult_t res[16];
            int found = 0;
            cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 16, res, &found);
            double fl = 2.0 * g.m * g.n * g.k;
            float first = -1, best = 1e30f;
            int bi = -1;
            for (int i = 0; i < found; i++) {
                float ms = median_ms(desc, la, lb, ld, &res[i].algo, A, B, D, g.beta1 ? 1.0f : 0.0f);
                if (i == 0) first = ms;
                if (ms > 0 && ms < best) { best = ms; bi = i; }
            }
            if (found && first > 0) {
                char d0[64], d1[64];
                printf("%-20s %5d %7.3f (%5.0f) %7.3f (%5.0f) %7.3f  %d  %s -> %s\n", g.name, found, first, fl / first / 1e9,
                       best, fl / best / 1e9, first / best, bi, algo_desc(&res[0].algo, d0, sizeof d0),
                       algo_desc(&res[bi].algo, d1, sizeof d1));
                if (!strstr(g.name, "bf16 out") && !strstr(g.name, "+bgrad") && !strstr(g.name, "(alt)")) { total_first += first; total_best += best; }
            } else {
                printf("%-20s %5d no algorithm\n", g.name, found);
            }
            /* in a graph, 20 back to back: the first pick with the workspace, and with none */
            if (found && !strstr(g.name, "(alt)")) {
                int n32 = 0, m32 = 0, n0 = 0, m0 = 0;
                float beta = g.beta1 ? 1.0f : 0.0f;
                float t32 = graph_ms(desc, la, lb, ld, &res[0].algo, A, B, D, beta, ws_bytes, &n32, &m32);
                size_t zero = 0;
                LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &zero, sizeof zero));
                cublasLtMatmulHeuristicResult_t r0;
                int f0 = 0;
                cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &r0, &f0);
                float t0 = f0 ? graph_ms(desc, la, lb, ld, &r0.algo, A, B, D, beta, 0, &n0, &m0) : -1.0f;
                char d0[64];
                printf("  in a graph x20: workspace 32 MiB %.4f ms/call (%d nodes, %d memset)  |  workspace 0 %.4f ms/call "
                       "(%d nodes, %d memset) %s  ratio %.3f\n", t32, n32, m32, t0, n0, m0,
                       f0 ? algo_desc(&r0.algo, d0, sizeof d0) : "none", t0 > 0 ? t32 / t0 : 0.0);
                if (!strstr(g.name, "bf16 out") && !strstr(g.name, "+bgrad")) {
                    graph_first += t32;
                    graph_zero += t0 > 0 ? t0 : t32;
                }
            }
            cublasLtMatmulPreferenceDestroy(pref);
            cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb); cublasLtMatrixLayoutDestroy(ld);
            cublasLtMatmulDescDestroy(desc);
        }
        printf("sum over one layer's GEMMs + lm head: first %.3f ms, best %.3f ms\n", total_first, total_best);
        printf("in graphs (first pick): workspace 32 MiB %.3f ms, workspace 0 %.3f ms\n\n", graph_first, graph_zero);
        total_first = total_best = graph_first = graph_zero = 0;
    }
    return 0;
}
