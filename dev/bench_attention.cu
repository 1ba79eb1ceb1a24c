/* dev/bench_attention.cu: forward and forward+backward time of the CUDA attention kernels.
 *
 * causal, bf16 (or fp16), H = 12; D = 64 with B x T = 65536 for T in {1024 ... 16384}; D = 32 and 128 at
 * T = 4096. FLOPs (causal): forward 4 B H T^2 D / 2, backward 2.5x that, so fwd+bwd = 3.5x.
 * Times: CUDA events around each call, 2 warm-up calls, median of repeats (at least 3, about
 * 0.3 s worth). "Extra memory" is the kernel's saved + workspace bytes. A configuration whose
 * buffers do not fit in free device memory (cudaMemGetInfo) is reported as OOM, never run.
 * Usage: bench_attention [kernel ...] [bf16|fp16|fp32|tf32] [T=N] [D=N] [B=N] [none] [window=W] [docs=L] [alibi] [kv=N] [bias|dbias] [dense]
 *   B=N: N sequences instead of 65536 / T (a small B keeps compute-sanitizer runs short)
 *   none: no mask (every key; FLOPs count all T^2 pairs), instead of causal
 *   kernel: any name of the registry (attention.c) that this build has on CUDA, e.g. flash,
 *   flash-mma, flash-tma, cudnn; default: every kernel that is not a variant of another (naive, memeff,
 *   flash, and cudnn where built), every configuration.
 *   mask pieces: window=W docs=L alibi; kv=N (N K/V heads, GQA); bias (a constant T x T fp32
 *   bias broadcast over batch and heads, with causal), dbias (the same with its gradient); dense:
 *   that bias as the mask kind DENSE (no causal cut, FLOPs of all T^2 pairs: the trainer's
 *   --mask dense, a constant bias)
 *   bf16 | fp16 | fp32: the element type (default bf16); tf32: fp32 with AttnShape::tf32 = 1 (TF32
 *   tensor cores allowed, the trainer's default for fp32; memeff only)
 */
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <algorithm>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "attention/attention.h"
#include "attention/attention_cuda.h"

#define CUDA_OK(call)                                                                        \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                    \
                    cudaGetErrorString(e_));                                                 \
            exit(2);                                                                         \
        }                                                                                    \
    } while (0)

/* Random 16-bit values in [-amp, amp) (fp16 if `as_fp16`, else bf16; zeros only where they round so). */
__global__ void fill_random_16bit(uint16_t *x, size_t n, uint64_t seed, float amp, bool as_fp16) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ULL ^ seed;
        z ^= z >> 31; z *= 0xbf58476d1ce4e5b9ULL; z ^= z >> 29;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f), f = amp * (2.0f * u - 1.0f);
        x[i] = as_fp16 ? __half_as_ushort(__float2half_rn(f)) : __bfloat16_as_ushort(__float2bfloat16(f));
    }
}

struct Row {
    const char *kernel;
    int D, T, B;
    bool oom, unsupported;
    const char *why; /* unsupported(): the kernel's reason */
    double fwd_ms, fb_ms, extra_mb;
    double fwd_tflops, fb_tflops;
};

static double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/* Times fn() with events: warm-up, then median of repeats. */
template <typename F> static double time_ms(F fn) {
    cudaEvent_t a, b;
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
    for (int i = 0; i < 2; i++) fn();
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> t;
    float total = 0.0f;
    while (t.size() < 3 || (total < 300.0f && t.size() < 50)) {
        CUDA_OK(cudaEventRecord(a));
        fn();
        CUDA_OK(cudaEventRecord(b));
        CUDA_OK(cudaEventSynchronize(b));
        float ms;
        CUDA_OK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
        total += ms;
    }
    CUDA_OK(cudaEventDestroy(a));
    CUDA_OK(cudaEventDestroy(b));
    return median(t);
}

/* The mask family (window=W, docs=L for documents of L tokens, alibi): causal plus these; the
 * TFLOP/s count the unmasked (query, key) pairs only. */
struct BenchMask { int window = 0, doc_len = 0; bool alibi = false, none = false, dense = false; int kv = 0, bias = 0; /* 1 bias, 2 + dbias */ };
static BenchMask g_mask;
static AttnDtype g_dtype = ATTN_BF16;
static int g_tf32 = 0;
static bool mask_extras() { return g_mask.window > 0 || g_mask.doc_len > 0 || g_mask.alibi; }

/* Unmasked pairs of one (b, h): row i sees keys [lo, i]. */
static double unmasked_pairs(int T) {
    double n = 0;
    for (int i = 0; i < T; i++) {
        int lo = 0;
        if (g_mask.window > 0) lo = i - g_mask.window + 1 > 0 ? i - g_mask.window + 1 : 0;
        if (g_mask.doc_len > 0) lo = lo > (i / g_mask.doc_len) * g_mask.doc_len ? lo : (i / g_mask.doc_len) * g_mask.doc_len;
        n += i - lo + 1;
    }
    return n;
}

/* Random fp32 in [-amp, amp) (the bias) */
__global__ void fill_random_f32(float *x, size_t n, uint64_t seed, float amp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ULL ^ seed;
        z ^= z >> 31; z *= 0xbf58476d1ce4e5b9ULL; z ^= z >> 29;
        x[i] = amp * (2.0f * (float)(z >> 40) * (1.0f / 16777216.0f) - 1.0f);
    }
}

static Row bench_one(const AttnImpl *impl, const char *name, int B, int T, int H, int D) {
    Row r;
    memset(&r, 0, sizeof r);
    r.kernel = name; r.D = D; r.T = T; r.B = B;
    AttnShape s;
    memset(&s, 0, sizeof s);
    s.B = B; s.T = T; s.H = H; s.D = D;
    s.scale = 1.0f / sqrtf((float)D);
    const int Hkv = g_mask.kv > 0 ? g_mask.kv : H;
    s.Hkv = Hkv;
    s.ld_qkv = (H + 2 * Hkv) * D; s.ld_o = H * D;
    s.mask.kind = g_mask.none ? ATTN_MASK_NONE : g_mask.dense ? ATTN_MASK_DENSE : ATTN_MASK_CAUSAL;
    s.dtype = g_dtype;
    s.tf32 = g_tf32;
    float *d_bias = NULL, *d_dbias = NULL;
    if (g_mask.bias) { /* T x T, broadcast over batch and heads; freed below */
        CUDA_OK(cudaMalloc(&d_bias, (size_t)T * T * 4));
        fill_random_f32<<<1024, 256>>>(d_bias, (size_t)T * T, 99, 1.0f);
        CUDA_OK(cudaGetLastError());
        s.mask.bias = d_bias;
        s.mask.stride_row = T;
        if (g_mask.bias > 1) {
            CUDA_OK(cudaMalloc(&d_dbias, (size_t)T * T * 4));
            CUDA_OK(cudaMemset(d_dbias, 0, (size_t)T * T * 4));
            s.mask.dbias = d_dbias;
        }
    }
    struct FreeBias { float *a, *b; ~FreeBias() { cudaFree(a); cudaFree(b); } } free_bias = {d_bias, d_dbias};
    int *d_doc = NULL;
    float *d_slopes = NULL;
    s.mask.window = g_mask.window;
    if (g_mask.doc_len > 0) {
        std::vector<int> doc((size_t)B * T);
        for (size_t i = 0; i < doc.size(); i++) doc[i] = (int)((i % T) / g_mask.doc_len * g_mask.doc_len);
        CUDA_OK(cudaMalloc(&d_doc, doc.size() * 4));
        CUDA_OK(cudaMemcpy(d_doc, doc.data(), doc.size() * 4, cudaMemcpyHostToDevice));
        s.mask.doc = d_doc;
    }
    if (g_mask.alibi) {
        std::vector<float> sl(H);
        for (int h = 0; h < H; h++) sl[h] = powf(2.0f, -8.0f * (h + 1) / H);
        CUDA_OK(cudaMalloc(&d_slopes, H * 4));
        CUDA_OK(cudaMemcpy(d_slopes, sl.data(), H * 4, cudaMemcpyHostToDevice));
        s.mask.alibi_slopes = d_slopes;
    }
    if ((r.why = impl->unsupported(&s))) { r.unsupported = true; cudaFree(d_doc); cudaFree(d_slopes); return r; }
    size_t nqkv = (size_t)B * T * s.ld_qkv, no = (size_t)B * T * H * D;
    size_t saved = impl->saved_bytes(&s), ws = impl->workspace_bytes(&s);
    r.extra_mb = (saved + ws) / 1048576.0;
    const size_t es = g_dtype == ATTN_FP32 ? 4 : 2;
    size_t need = saved + ws + (2 * nqkv + 2 * no) * es;
    size_t free_b = 0, total_b = 0;
    CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
    if (need + ((size_t)512 << 20) > free_b) { r.oom = true; return r; }

    void *qkv, *dqkv, *o, *dout, *sv = NULL, *w = NULL;
    CUDA_OK(cudaMalloc(&qkv, nqkv * es));
    CUDA_OK(cudaMalloc(&dqkv, nqkv * es));
    CUDA_OK(cudaMalloc(&o, no * es));
    CUDA_OK(cudaMalloc(&dout, no * es));
    if (saved) CUDA_OK(cudaMalloc(&sv, saved));
    if (ws) CUDA_OK(cudaMalloc(&w, ws));
    if (es == 4) {
        fill_random_f32<<<1024, 256>>>((float *)qkv, nqkv, 1234, 2.0f);
        fill_random_f32<<<1024, 256>>>((float *)dout, no, 5678, 1.0f);
    } else {
        fill_random_16bit<<<1024, 256>>>((uint16_t *)qkv, nqkv, 1234, 2.0f, g_dtype == ATTN_FP16);
        fill_random_16bit<<<1024, 256>>>((uint16_t *)dout, no, 5678, 1.0f, g_dtype == ATTN_FP16);
    }
    CUDA_OK(cudaGetLastError());
    const char *q = (const char *)qkv, *k = q + H * D * es, *v = k + Hkv * D * es;
    char *dq = (char *)dqkv, *dk = dq + H * D * es, *dv = dk + Hkv * D * es;
    int failed = 0;
    auto fwd = [&]() { failed |= impl->forward(&s, q, k, v, o, sv, w, NULL); };
    auto fb = [&]() {
        failed |= impl->forward(&s, q, k, v, o, sv, w, NULL);
        failed |= impl->backward(&s, q, k, v, o, dout, sv, dq, dk, dv, w, NULL);
    };
    r.fwd_ms = time_ms(fwd);
    r.fb_ms = time_ms(fb);
    CUDA_OK(cudaDeviceSynchronize());
    if (failed) { fprintf(stderr, "%s T=%d: a call failed: %s\n", name, T, attn_cuda_last_error()); exit(3); }
    double flops_fwd = mask_extras() ? 4.0 * B * H * D * unmasked_pairs(T)
                                     : 4.0 * B * H * (double)T * T * D / (g_mask.none || g_mask.dense ? 1.0 : 2.0);
    cudaFree(d_doc);
    cudaFree(d_slopes);
    r.fwd_tflops = flops_fwd / (r.fwd_ms * 1e-3) / 1e12;
    r.fb_tflops = 3.5 * flops_fwd / (r.fb_ms * 1e-3) / 1e12;
    cudaFree(qkv); cudaFree(dqkv); cudaFree(o); cudaFree(dout); cudaFree(sv); cudaFree(w);
    return r;
}

int main(int argc, char **argv) {
    bool want[ATTN_NUM_IMPLS] = {false}, any = false;
    int only_T = 0, only_D = 0, only_B = 0;
    for (int i = 1; i < argc; i++) {
        AttnKernel k;
        if (!strncmp(argv[i], "T=", 2)) only_T = atoi(argv[i] + 2);
        else if (!strncmp(argv[i], "D=", 2)) only_D = atoi(argv[i] + 2);
        else if (!strncmp(argv[i], "B=", 2)) only_B = atoi(argv[i] + 2);
        else if (!strncmp(argv[i], "window=", 7)) g_mask.window = atoi(argv[i] + 7);
        else if (!strncmp(argv[i], "docs=", 5)) g_mask.doc_len = atoi(argv[i] + 5);
        else if (!strcmp(argv[i], "alibi")) g_mask.alibi = true;
        else if (!strcmp(argv[i], "none")) g_mask.none = true;
        else if (!strncmp(argv[i], "kv=", 3)) g_mask.kv = atoi(argv[i] + 3);
        else if (!strcmp(argv[i], "bias")) g_mask.bias = 1;
        else if (!strcmp(argv[i], "dbias")) g_mask.bias = 2;
        else if (!strcmp(argv[i], "dense")) g_mask.dense = true;
        else if (!strcmp(argv[i], "bf16")) g_dtype = ATTN_BF16;
        else if (!strcmp(argv[i], "fp16")) g_dtype = ATTN_FP16;
        else if (!strcmp(argv[i], "fp32")) g_dtype = ATTN_FP32, g_tf32 = 0;
        else if (!strcmp(argv[i], "tf32")) g_dtype = ATTN_FP32, g_tf32 = 1;
        else if (attn_kernel_from_name(argv[i], &k) == 0 && k != ATTN_AUTO) {
            if (!attn_impl(k, ATTN_CUDA)) {
                fprintf(stderr, "bench_attention: kernel '%s' is not in this build\n", argv[i]);
                return 1;
            }
            want[k] = any = true;
        } else {
            fprintf(stderr, "bench_attention: unknown argument '%s' (kernels: %s; bf16 fp16 fp32 tf32 T=N D=N B=N none window=W docs=L alibi kv=N bias dbias dense)\n",
                    argv[i], attn_kernel_names_list());
            return 1;
        }
    }
    if (!any)
        for (int k = 0; k < ATTN_NUM_IMPLS; k++) want[k] = !attn_kernel_is_variant((AttnKernel)k);
    cudaDeviceProp prop;
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    if (g_mask.dense && (g_mask.none || mask_extras() || g_mask.bias > 1)) {
        fprintf(stderr, "bench_attention: dense (a constant bias as the mask) does not combine with none, window, docs, alibi or dbias\n");
        return 1;
    }
    if (g_mask.dense) g_mask.bias = 1;
    if (g_mask.none && (mask_extras() || g_mask.bias)) {
        fprintf(stderr, "bench_attention: none (no mask) does not combine with window, docs, alibi or bias\n");
        return 1;
    }
    printf("device: %s, %d SMs; %s, %s%s", prop.name, prop.multiProcessorCount, g_tf32 ? "fp32 on TF32" : attn_dtype_name(g_dtype),
           g_mask.none ? "no mask (FLOPs of all T^2 pairs)" : g_mask.dense ? "dense bias as the mask (FLOPs of all T^2 pairs)" : "causal",
           mask_extras() ? " +" : "\n");
    if (mask_extras())
        printf("%s%s%s (TFLOP/s over the unmasked pairs)\n", g_mask.window ? " window" : "", g_mask.doc_len ? " documents" : "",
               g_mask.alibi ? " ALiBi" : "");
    if (g_mask.kv > 0) printf("GQA: %d K/V heads\n", g_mask.kv);
    if (g_mask.bias) printf("bias: T x T fp32, broadcast over batch and heads%s\n", g_mask.bias > 1 ? ", with dbias" : "");

    struct Cfg { int D, T; };
    std::vector<Cfg> cfgs = {{64, 1024}, {64, 2048}, {64, 4096}, {64, 8192}, {64, 16384}, {32, 4096}, {128, 4096}};
    /* T=N and D=N together name one configuration, a listed one or not (e.g. the trainer's D = 128
     * at T = 2048) */
    if (only_T > 0 && only_D > 0) cfgs = {{only_D, only_T}};
    const int H = 12;
    std::vector<Row> rows;
    for (int kk = 0; kk < ATTN_NUM_IMPLS; kk++) {
        const AttnImpl *impl = attn_impl((AttnKernel)kk, ATTN_CUDA);
        if (!want[kk] || !impl) continue;
        const char *name = attn_kernel_name((AttnKernel)kk);
        for (const Cfg &c : cfgs) {
            if ((only_T && c.T != only_T) || (only_D && c.D != only_D)) continue;
            int B = only_B > 0 ? only_B : std::max(1, 65536 / c.T);
            Row r = bench_one(impl, name, B, c.T, H, c.D);
            if (r.oom) printf("%-10s D=%3d T=%5d B=%2d: OOM (needs %.0f MB extra)\n", r.kernel, r.D, r.T, r.B, r.extra_mb);
            else if (r.unsupported) printf("%-10s D=%3d T=%5d: unsupported (%s)\n", r.kernel, r.D, r.T, r.why);
            else printf("%-10s D=%3d T=%5d B=%2d: fwd %8.3f ms %6.1f TFLOP/s | fwd+bwd %8.3f ms %6.1f TFLOP/s | extra %8.1f MB\n",
                        r.kernel, r.D, r.T, r.B, r.fwd_ms, r.fwd_tflops, r.fb_ms, r.fb_tflops, r.extra_mb);
            fflush(stdout);
            rows.push_back(r);
        }
    }
    printf("\n| kernel | D | T | B | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | extra MB |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const Row &r : rows) {
        if (r.unsupported) continue;
        if (r.oom) { printf("| %s | %d | %d | %d | OOM | | OOM | | %.0f |\n", r.kernel, r.D, r.T, r.B, r.extra_mb); continue; }
        printf("| %s | %d | %d | %d | %.3f | %.1f | %.3f | %.1f | %.1f |\n", r.kernel, r.D, r.T, r.B,
               r.fwd_ms, r.fwd_tflops, r.fb_ms, r.fb_tflops, r.extra_mb);
    }
    return 0;
}
