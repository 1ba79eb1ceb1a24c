/* dev/bench_matmul_cuda.cu: each matmul of a GPT-2 124M step (N = 16384 tokens, bf16), fused
 * epilogues against the plain GEMM + separate kernels, timed with CUDA events (median of 20).
 *   build/dev/bench_matmul_cuda [N]
 */
#include "layers/layers_cuda.h"
#include <algorithm>
#include <vector>
#include <stdio.h>
#include <stdlib.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("%s\n", cudaGetErrorString(e_)); exit(1); } } while (0)

template <typename F> static double time_ms(F f) {
    cudaEvent_t a, b;
    cudaEventCreate(&a); cudaEventCreate(&b);
    for (int i = 0; i < 3; i++) f();
    std::vector<float> t;
    for (int i = 0; i < 20; i++) {
        cudaEventRecord(a); f(); cudaEventRecord(b); cudaEventSynchronize(b);
        float ms; cudaEventElapsedTime(&ms, a, b); t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

static void *dalloc(size_t bytes) {
    void *p; CK(cudaMalloc(&p, bytes));
    /* random-ish bf16 bits: small values, never zeros */
    std::vector<unsigned short> h(bytes / 2);
    unsigned s = 12345;
    for (auto &v : h) { s = s * 1664525u + 1013904223u; v = (unsigned short)(0x3c00 + (s >> 22)) ^ ((s >> 8) & 0x8000); }
    CK(cudaMemcpy(p, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    return p;
}

int main(int argc, char **argv) {
    int N = argc > 1 ? atoi(argv[1]) : 16384, C = 768;
    const Precision P = PRECISION_BF16;
    cuda_matmul_init();
    size_t big = (size_t)N * 50304;
    void *x = dalloc((size_t)N * 4 * C * 2), *y = dalloc(big * 2), *pre = dalloc((size_t)N * 4 * C * 2);
    void *w = dalloc((size_t)50304 * C * 2), *bias = dalloc(4 * C * 2), *dout = dalloc((size_t)N * 4 * C * 2);
    void *dinp = dalloc((size_t)N * 4 * C * 2);
    float *dw, *db, *scratch;
    CK(cudaMalloc(&dw, (size_t)50304 * C * 4)); CK(cudaMemset(dw, 0, (size_t)50304 * C * 4));
    CK(cudaMalloc(&db, 4 * C * 4)); CK(cudaMemset(db, 0, 4 * C * 4));
    CK(cudaMalloc(&scratch, cuda_colsum_scratch_floats(4 * C) * 4));
    struct { const char *name; int in, out; } L[] = {{"qkv", C, 3 * C}, {"attproj", C, C}, {"fc", C, 4 * C}, {"fcproj", 4 * C, C}};
    printf("N=%d C=%d bf16; TFLOP/s in brackets\n", N, C);
    for (auto &l : L) {
        double fl = 2.0 * N * l.in * l.out;
        int gelu_fwd = l.out == 4 * C, gelu_bwd = l.in == 4 * C;
        for (int fuse = 1; fuse >= 0; fuse--) {
            cuda_matmul_set_fusion(fuse);
            double f = time_ms([&] { cuda_matmul_forward(P, y, gelu_fwd ? pre : NULL, x, w, bias, N, l.in, l.out, 0, 0); });
            double b = time_ms([&] { cuda_matmul_backward(P, dinp, dw, db, dout, x, w, gelu_bwd ? pre : NULL, N, l.in, l.out, 0, 1.0f, scratch, 0); });
            double bi = time_ms([&] { cuda_matmul_backward(P, dinp, dw, NULL, dout, x, w, gelu_bwd ? pre : NULL, N, l.in, l.out, 0, 1.0f, scratch, 0); });
            double bw = time_ms([&] { cuda_matmul_backward(P, NULL, dw, NULL, dout, x, w, NULL, N, l.in, l.out, 0, 1.0f, scratch, 0); });
            double bwb = time_ms([&] { cuda_matmul_backward(P, NULL, dw, db, dout, x, w, NULL, N, l.in, l.out, 0, 1.0f, scratch, 0); });
            printf("%-8s %s fwd%s %.3f ms [%3.0f] | bwd all %.3f [%3.0f]  no-bias %.3f  dW only %.3f [%3.0f]  dW+db %.3f  => dinp%s ~%.3f\n",
                   l.name, fuse ? "fused  " : "unfused", gelu_fwd ? "+gelu" : "", f, fl / f / 1e9, b, 2 * fl / b / 1e9, bi, bw,
                   fl / bw / 1e9, bwb, gelu_bwd ? "+dgelu" : "", bi - bw);
        }
    }
    cuda_matmul_set_fusion(1);
    double f = time_ms([&] { cuda_matmul_forward(P, y, NULL, x, w, NULL, N, C, 50304, 0, 0); });
    double b = time_ms([&] { cuda_matmul_backward(P, dinp, dw, NULL, y, x, w, NULL, N, C, 50304, 0, 1.0f, scratch, 0); });
    double fl = 2.0 * N * C * 50304;
    printf("lm head  fwd %.3f ms [%3.0f] bwd %.3f ms [%3.0f]\n", f, fl / f / 1e9, b, 2 * fl / b / 1e9);
    float *l32; int *tg; float *dl;
    CK(cudaMalloc(&l32, N * 4)); CK(cudaMalloc(&tg, N * 4)); CK(cudaMemset(tg, 0, N * 4)); CK(cudaMalloc(&dl, 4)); CK(cudaMemset(dl, 0, 4));
    double c = time_ms([&] { cuda_classifier(P, y, l32, tg, dl, N, 50257, 50304, 1, 0); });
    printf("classifier %.3f ms (%.0f GB/s counting 2 reads + 1 write)\n", c, 3.0 * N * 50304 * 2 / c / 1e6);
    void *res = dalloc((size_t)N * C * 2), *o = dalloc((size_t)N * C * 2);
    float *mean, *rstd; CK(cudaMalloc(&mean, N * 4)); CK(cudaMalloc(&rstd, N * 4));
    double ln = time_ms([&] { cuda_residual_layernorm_forward(P, res, o, mean, rstd, x, dout, bias, bias, N, C, 0); });
    double lnb = time_ms([&] { cuda_layernorm_backward(P, dinp, dw, db, NULL, dout, x, bias, mean, rstd, N, C, scratch, 0); });
    printf("residual+layernorm fwd %.3f ms (%.0f GB/s)  layernorm bwd %.3f ms (%.0f GB/s at 4 NC)\n", ln, 4.0 * N * C * 2 / ln / 1e6,
           lnb, 4.0 * N * C * 2 / lnb / 1e6);
    float *p32, *g32, *m32, *v32; size_t np = 124475904;
    CK(cudaMalloc(&p32, np * 4)); CK(cudaMalloc(&g32, np * 4)); CK(cudaMalloc(&m32, np * 4)); CK(cudaMalloc(&v32, np * 4));
    cudaMemset(p32, 0, np * 4); cudaMemset(g32, 0, np * 4); cudaMemset(m32, 0, np * 4); cudaMemset(v32, 0, np * 4);
    float *gsc = NULL;
    CK(cudaMalloc(&gsc, 2 * sizeof(float)));
    cuda_adamw_scale_set(gsc, 1.0f, 0);
    double ad = time_ms([&] { cuda_adamw(P, p32, y, g32, m32, v32, np, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, gsc, 1, 0); });
    printf("adamw 124M %.3f ms (%.0f GB/s at 30 B/param)\n", ad, 30.0 * np / ad / 1e6);
    return 0;
}
