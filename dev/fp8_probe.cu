/* dev/fp8_probe.cu: which FP8 GEMMs of --matmul fp8 cuBLASLt accepts on this GPU, and how fast
 * they are against the bf16 GEMMs they replace. Standalone (cuBLASLt and the CUDA runtime only):
 *   nvcc -O3 -std=c++17 -arch=sm_90 dev/fp8_probe.cu -lcublasLt -o fp8_probe && ./fp8_probe [N] [C]
 *   (or make build/dev/fp8_probe)
 * GPT-2 124M by default: C = 768, N = B T = 16384. For each of the four linear layers of a block
 * (qkv C -> 3C, attproj C -> C, fc C -> 4C with GELU, fcproj 4C -> C with dGELU on its input
 * gradient) it runs the trainer's three GEMMs in the trainer's layouts and types:
 *   FP8 (layers/fp8_cuda.cu, all "TN": op(A) = T, op(B) = N, column-major terms)
 *     fwd    m=OC n=N k=C   A=W E4M3, B=inp E4M3, D bf16, BIAS or GELU_AUX_BIAS, fast accumulation
 *     dinp   m=C  n=N k=OC  A=W^T E4M3, B=dout E5M2, D bf16 (DGELU for fcproj)
 *     dW     m=C  n=OC k=N  A=inp^T E4M3, B=dout^T E5M2, D fp32 += (beta 1)
 *   bf16 (layers/matmul_cuda.cu): fwd T,N; dinp N,N; dW N,T with fp32 D.
 * plus the variants the trainer falls back to (no epilogue, no fast accumulation) and the scale
 * pointers 4 bytes apart instead of 16 (the suspected cause of an earlier "matmul failed in
 * attproj"). Prints, per GEMM: accepted or the cuBLASLt status, median time of 20 (CUDA events,
 * after 3 warm-ups), TFLOP/s (2 m n k), and the FP8/bf16 ratio; then fast accumulation's
 * difference from the promoted sums; then the step total for 12 layers, with fcproj's input
 * gradient as the trainer routes it (layers/fp8_cuda.cu: bf16 with its dGELU epilogue, because
 * FP8's DGELU epilogue measured 0.420 ms against bf16's 0.161 on the H200) and the alternative
 * it rejected (FP8 without the epilogue + a separate dGELU pass, timed here as a plain kernel
 * with the trainer's bytes: read dinp and the pre-activation, write dinp, bf16).
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define CK(x)                                                                                   \
    do {                                                                                        \
        cudaError_t e_ = (x);                                                                   \
        if (e_ != cudaSuccess) { printf("CUDA: %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(1); } \
    } while (0)

static cublasLtHandle_t lt;
static void *workspace;
static const size_t kWorkspace = 32u << 20;

static int tbytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : t == CUDA_R_16BF ? 2 : 1; }
static const char *tname(cudaDataType t) {
    return t == CUDA_R_32F ? "fp32" : t == CUDA_R_16BF ? "bf16" : t == CUDA_R_8F_E4M3 ? "e4m3" : "e5m2";
}

/* device buffer of n values of type t, random in [-amp, amp] (never a NaN pattern) */
static void *buffer(cudaDataType t, size_t n, float amp, unsigned seed) {
    std::vector<unsigned char> h(n * tbytes(t));
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        float v = amp * (((seed >> 8) & 0xffff) / 32768.0f - 1.0f);
        if (t == CUDA_R_32F) memcpy(&h[i * 4], &v, 4);
        else if (t == CUDA_R_16BF) { __nv_bfloat16 b = __float2bfloat16_rn(v); memcpy(&h[i * 2], &b, 2); }
        else h[i] = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, t == CUDA_R_8F_E5M2 ? __NV_E5M2 : __NV_E4M3);
    }
    void *d;
    CK(cudaMalloc(&d, h.size() + 256));
    CK(cudaMemcpy(d, h.data(), h.size(), cudaMemcpyHostToDevice));
    return d;
}

/* dinp *= GELU'(pre), bf16, the tanh form: the bytes of gelu_cuda.cu's backward pass (2 read, 1 written) */
__global__ void dgelu_pass(__nv_bfloat16 *d, const __nv_bfloat16 *pre, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = __bfloat162float(pre[i]), u = 0.7978845608f * (x + 0.044715f * x * x * x), t = tanhf(u);
    float g = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * x * x);
    d[i] = __float2bfloat16_rn(__bfloat162float(d[i]) * g);
}
static double time_dgelu(size_t n) {
    void *d = buffer(CUDA_R_16BF, n, 1.0f, 11), *pre = buffer(CUDA_R_16BF, n, 3.0f, 12);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> t;
    for (int i = 0; i < 23; i++) {
        CK(cudaEventRecord(e0));
        dgelu_pass<<<(unsigned)((n + 255) / 256), 256>>>((__nv_bfloat16 *)d, (const __nv_bfloat16 *)pre, n);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 3) t.push_back(ms);
    }
    CK(cudaGetLastError());
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(d);
    cudaFree(pre);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

struct Gemm {
    const char *layer, *what;
    int m, n, k, transa, transb;
    cudaDataType at, bt, dt;
    cublasLtEpilogue_t epi;
    float beta;
    int fast;
    int scale_stride; /* bytes between the A and B scale floats (16: each at its own 16-byte slot) */
};

struct Result {
    int ok;
    cublasStatus_t status;
    const char *stage;
    double ms, tflops;
};

/* Runs g on fresh buffers; out (if not NULL) gets D's device pointer (the caller frees it). */
static Result run(const Gemm &g, void **out_d = NULL, unsigned seed = 1) {
    Result r = {0, CUBLAS_STATUS_SUCCESS, "", 0, 0};
    size_t a_n = (size_t)g.m * g.k, b_n = (size_t)g.k * g.n, d_n = (size_t)g.m * g.n;
    void *A = buffer(g.at, a_n, 1.0f, seed), *B = buffer(g.bt, b_n, 1.0f, seed + 1), *D = buffer(g.dt, d_n, 0.1f, seed + 2);
    void *bias = buffer(CUDA_R_16BF, g.m, 0.1f, seed + 3), *aux = buffer(CUDA_R_16BF, d_n, 1.0f, seed + 4);
    float *scales;
    CK(cudaMalloc((void **)&scales, 256));
    float ones[64];
    for (int i = 0; i < 64; i++) ones[i] = 1.0f;
    CK(cudaMemcpy(scales, ones, 256, cudaMemcpyHostToDevice));
    const int fp8 = g.at == CUDA_R_8F_E4M3 || g.at == CUDA_R_8F_E5M2;
    const float *sa = scales, *sb = (const float *)((const char *)scales + g.scale_stride);
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasOperation_t opa = g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, opb = g.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    int8_t fast = g.fast;
    int64_t ldaux = g.m;
    float alpha = 1.0f, beta = g.beta;
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
#define TRY(stage_, call)                                                  \
    do {                                                                   \
        r.status = (call);                                                 \
        if (r.status != CUBLAS_STATUS_SUCCESS) { r.stage = stage_; goto done; } \
    } while (0)
    TRY("desc", cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    TRY("transa", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    TRY("transb", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    TRY("epilogue", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &g.epi, sizeof g.epi));
    if (g.epi == CUBLASLT_EPILOGUE_BIAS || g.epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS)
        TRY("bias", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    if (g.epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || g.epi == CUBLASLT_EPILOGUE_DGELU) {
        TRY("aux", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
        TRY("aux ld", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ldaux, sizeof ldaux));
    }
    if (fp8) {
        TRY("a scale", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa));
        TRY("b scale", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb));
        if (fast) TRY("fast accum", cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
    }
    TRY("layout A", cublasLtMatrixLayoutCreate(&la, g.at, g.transa ? g.k : g.m, g.transa ? g.m : g.k, g.transa ? g.k : g.m));
    TRY("layout B", cublasLtMatrixLayoutCreate(&lb, g.bt, g.transb ? g.n : g.k, g.transb ? g.k : g.n, g.transb ? g.n : g.k));
    TRY("layout D", cublasLtMatrixLayoutCreate(&ld, g.dt, g.m, g.n, g.m));
    TRY("preference", cublasLtMatmulPreferenceCreate(&pref));
    TRY("workspace", cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWorkspace,
                                                          sizeof kWorkspace));
    TRY("heuristic", cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &heur, &found));
    if (!found) { r.status = CUBLAS_STATUS_NOT_SUPPORTED; r.stage = "no algorithm"; goto done; }
    {
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        std::vector<float> t;
        for (int i = 0; i < 23; i++) {
            CK(cudaEventRecord(e0));
            r.status = cublasLtMatmul(lt, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &heur.algo, workspace,
                                      kWorkspace, 0);
            CK(cudaEventRecord(e1));
            if (r.status != CUBLAS_STATUS_SUCCESS) { r.stage = "matmul"; break; }
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            if (i >= 3) t.push_back(ms);
        }
        CK(cudaDeviceSynchronize());
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        if (r.status == CUBLAS_STATUS_SUCCESS) {
            std::sort(t.begin(), t.end());
            r.ok = 1;
            r.ms = t[t.size() / 2];
            r.tflops = 2.0 * g.m * g.n * g.k / (r.ms * 1e-3) / 1e12;
        }
    }
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
    cudaFree(A);
    cudaFree(B);
    cudaFree(bias);
    cudaFree(aux);
    cudaFree(scales);
    if (out_d && r.ok) *out_d = D;
    else cudaFree(D);
    return r;
#undef TRY
}

static void print(const Gemm &g, const Result &r, const Result *ref) {
    char shape[64];
    snprintf(shape, sizeof shape, "%d x %d x %d %c%c", g.m, g.n, g.k, g.transa ? 'T' : 'N', g.transb ? 'T' : 'N');
    char types[48];
    snprintf(types, sizeof types, "%s*%s->%s", tname(g.at), tname(g.bt), tname(g.dt));
    printf("  %-8s %-30s %-22s %-15s", g.layer, g.what, shape, types);
    if (!r.ok) {
        printf(" REFUSED at %s: status %d %s\n", r.stage, (int)r.status, cublasLtGetStatusName(r.status));
        return;
    }
    printf(" %8.3f ms %6.0f TFLOP/s", r.ms, r.tflops);
    if (ref && ref->ok) printf("  %.2fx bf16", ref->ms / r.ms);
    printf("\n");
}

int main(int argc, char **argv) {
    int N = argc > 1 ? atoi(argv[1]) : 16384, C = argc > 2 ? atoi(argv[2]) : 768;
    int dev = 0;
    cudaDeviceProp prop;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    printf("fp8_probe: %s (compute capability %d.%d), cuBLASLt %zu, N=%d C=%d\n", prop.name, prop.major, prop.minor,
           cublasLtGetVersion(), N, C);
    if (prop.major * 10 + prop.minor < 89) printf("note: FP8 GEMMs need compute capability 8.9+: expect refusals\n");
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) { printf("cublasLtCreate failed\n"); return 1; }
    CK(cudaMalloc(&workspace, kWorkspace));

    const cudaDataType E4 = CUDA_R_8F_E4M3, E5 = CUDA_R_8F_E5M2, BF = CUDA_R_16BF, F32 = CUDA_R_32F;
    const cublasLtEpilogue_t NONE = CUBLASLT_EPILOGUE_DEFAULT, BIAS = CUBLASLT_EPILOGUE_BIAS,
                             GELU = CUBLASLT_EPILOGUE_GELU_AUX_BIAS, DGELU = CUBLASLT_EPILOGUE_DGELU;
    struct Lin { const char *name; int in, out, gelu_fwd, dgelu_bwd; } lins[4] = {
        {"qkv", C, 3 * C, 0, 0}, {"attproj", C, C, 0, 0}, {"fc", C, 4 * C, 1, 0}, {"fcproj", 4 * C, C, 0, 1}};
    double step_bf16 = 0, step_fp8 = 0;
    double dgelu_fp8_epi = 0, dgelu_bf16 = 0, dgelu_fp8_plain = 0; /* fcproj's input gradient, three ways */
    int refused = 0;
    printf("\n  %-8s %-30s %-22s %-15s %s\n", "layer", "GEMM", "m x n x k op", "types", "result");
    for (const Lin &l : lins) {
        const cublasLtEpilogue_t fe = l.gelu_fwd ? GELU : BIAS, be = l.dgelu_bwd ? DGELU : NONE;
        /* bf16 as the trainer runs it today */
        Gemm bf[3] = {{l.name, "bf16 fwd", l.out, N, l.in, 1, 0, BF, BF, BF, fe, 0, 0, 16},
                      {l.name, "bf16 dinp", l.in, N, l.out, 0, 0, BF, BF, BF, be, 0, 0, 16},
                      {l.name, "bf16 dW", l.in, l.out, N, 0, 1, BF, BF, F32, NONE, 1, 0, 16}};
        Result rb[3];
        for (int i = 0; i < 3; i++) { rb[i] = run(bf[i]); print(bf[i], rb[i], NULL); step_bf16 += rb[i].ms; }
        /* FP8: what the trainer runs, then its fallbacks and variants */
        Gemm f8[3] = {{l.name, "fp8 fwd (fast accum)", l.out, N, l.in, 1, 0, E4, E4, BF, fe, 0, 1, 16},
                      {l.name, "fp8 dinp", l.in, N, l.out, 1, 0, E4, E5, BF, be, 0, 0, 16},
                      {l.name, "fp8 dW (fp32 +=)", l.in, l.out, N, 1, 0, E4, E5, F32, NONE, 1, 0, 16}};
        for (int i = 0; i < 3; i++) {
            Result r = run(f8[i]);
            print(f8[i], r, &rb[i]);
            refused += !r.ok;
            if (i == 1 && l.dgelu_bwd) { /* the trainer runs this one in bf16 (layers/fp8_cuda.cu) */
                dgelu_fp8_epi = r.ok ? r.ms : 0;
                dgelu_bf16 = rb[i].ms;
                step_fp8 += rb[i].ms;
                continue;
            }
            step_fp8 += r.ok ? r.ms : rb[i].ms;
        }
        Gemm var[5] = {{l.name, "fp8 fwd, no fast accum", l.out, N, l.in, 1, 0, E4, E4, BF, fe, 0, 0, 16},
                       {l.name, "fp8 fwd, no epilogue", l.out, N, l.in, 1, 0, E4, E4, BF, NONE, 0, 1, 16},
                       {l.name, "fp8 fwd, bias only", l.out, N, l.in, 1, 0, E4, E4, BF, BIAS, 0, 1, 16},
                       {l.name, "fp8 dinp, no epilogue", l.in, N, l.out, 1, 0, E4, E5, BF, NONE, 0, 0, 16},
                       {l.name, "fp8 fwd, scales 4 B apart", l.out, N, l.in, 1, 0, E4, E4, BF, fe, 0, 1, 4}};
        for (const Gemm &g : var) {
            if ((&g == &var[2] && !l.gelu_fwd) || (&g == &var[3] && !l.dgelu_bwd)) continue; /* same as above */
            Result r = run(g);
            print(g, r, &rb[&g == &var[3] ? 1 : 0]);
            if (&g == &var[3] && r.ok) dgelu_fp8_plain = r.ms;
        }
    }
    /* fast accumulation against promoted sums: the forward GEMMs on identical inputs */
    printf("\n  fast accumulation, forward (max |fast - promoted| / max |promoted|):\n");
    for (const Lin &l : lins) {
        Gemm a = {l.name, "", l.out, N, l.in, 1, 0, E4, E4, BF, NONE, 0, 1, 16}, b = a;
        b.fast = 0;
        void *da = NULL, *db = NULL;
        Result ra = run(a, &da, 7), rb = run(b, &db, 7);
        if (!ra.ok || !rb.ok) { printf("  %-8s refused\n", l.name); continue; }
        size_t n = (size_t)a.m * a.n;
        std::vector<__nv_bfloat16> ha(n), hb(n);
        CK(cudaMemcpy(ha.data(), da, n * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hb.data(), db, n * 2, cudaMemcpyDeviceToHost));
        double diff = 0, mag = 0;
        for (size_t i = 0; i < n; i++) {
            double x = __bfloat162float(ha[i]), y = __bfloat162float(hb[i]);
            diff = fmax(diff, fabs(x - y));
            mag = fmax(mag, fabs(y));
        }
        printf("  %-8s k=%d: %.3g (one bf16 ulp is 2^-8 = %.3g relative)\n", l.name, l.in, diff / mag, ldexp(1.0, -8));
        cudaFree(da);
        cudaFree(db);
    }
    const double pass = time_dgelu((size_t)N * 4 * C); /* fcproj's input: N x 4C */
    printf("\n  fcproj input gradient with dGELU: fp8 + DGELU epilogue %.3f ms; fp8 plain %.3f + dGELU pass %.3f "
           "(%.0f GB/s) = %.3f ms; bf16 + DGELU epilogue %.3f ms (the trainer's choice%s)\n",
           dgelu_fp8_epi, dgelu_fp8_plain, pass, 3.0 * 2 * N * 4.0 * C / (pass * 1e6), dgelu_fp8_plain + pass,
           dgelu_bf16, dgelu_bf16 <= dgelu_fp8_plain + pass && dgelu_bf16 <= dgelu_fp8_epi ? ": fastest" : ": NOT the fastest here");
    printf("\n  12 layers x 12 GEMMs: bf16 %.2f ms, fp8 %.2f ms (GEMMs only, fcproj's input gradient in bf16 as the "
           "trainer runs it; refused fp8 GEMMs counted at bf16's time), %.2fx; %d fp8 GEMMs refused\n",
           12 * step_bf16, 12 * step_fp8, step_bf16 / step_fp8, refused);
    cudaFree(workspace);
    cublasLtDestroy(lt);
    return refused ? 1 : 0;
}
