/* dev/bench_fp8_layers.cu: the four linear layers of a GPT-2 block, bf16 (cuda_matmul_*) against
 * --matmul fp8 (cuda_fp8_matmul_*, casts included), forward and backward, and the cast kernel
 * alone in GB/s; CUDA events, median of 20 after 3 warm-ups.
 *   make build/dev/bench_fp8_layers && build/dev/bench_fp8_layers [N] [C]     (default 16384 768)
 * Where the FP8 layer is not faster than bf16, the cast columns say how much of it the casts are
 * (dev/cuda_trainer_notes.md counts their bytes). Needs compute capability 8.9+.
 */
#include "layers/layers_cuda.h"
#include <cuda_bf16.h>
#include <algorithm>
#include <vector>
#include <stdio.h>
#include <stdlib.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("%s (line %d)\n", cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)

template <typename F> static double time_ms(F f) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) f();
    std::vector<float> t;
    for (int i = 0; i < 20; i++) {
        CK(cudaEventRecord(a));
        f();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return t[t.size() / 2];
}

static void *bf16_random(size_t n, float amp, unsigned seed) {
    std::vector<__nv_bfloat16> h(n);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        h[i] = __float2bfloat16_rn(amp * (((seed >> 8) & 0xffff) / 32768.0f - 1.0f));
    }
    void *d;
    CK(cudaMalloc(&d, n * 2));
    CK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
    return d;
}

int main(int argc, char **argv) {
    int N = argc > 1 ? atoi(argv[1]) : 16384, C = argc > 2 ? atoi(argv[2]) : 768;
    if (cuda_matmul_init() != 0) { printf("cuBLASLt init failed\n"); return 1; }
    struct Lin { const char *name; int in, out, gelu; } lins[4] = {
        {"qkv", C, 3 * C, 0}, {"attproj", C, C, 0}, {"fc", C, 4 * C, 1}, {"fcproj", 4 * C, C, 0}};
    const int W = 4 * C;
    void *x = bf16_random((size_t)N * W, 2.0f, 1), *w = bf16_random((size_t)W * W, 0.05f, 2),
         *b = bf16_random(W, 0.1f, 3), *g = bf16_random((size_t)N * W, 1e-3f, 4), *pre = bf16_random((size_t)N * W, 2.0f, 5);
    void *out, *out2;
    float *dw, *db, *scratch, *slots;
    unsigned char *w8, *wt8, *work;
    CK(cudaMalloc(&out, (size_t)N * W * 2));
    CK(cudaMalloc(&out2, (size_t)N * W * 2));
    CK(cudaMalloc((void **)&dw, (size_t)W * W * 4));
    CK(cudaMalloc((void **)&db, W * 4));
    CK(cudaMalloc((void **)&scratch, cuda_colsum_scratch_floats(W) * 4));
    CK(cudaMalloc((void **)&slots, 3 * FP8_SLOT_FLOATS * 4));
    CK(cudaMalloc((void **)&w8, (size_t)W * W));
    CK(cudaMalloc((void **)&wt8, (size_t)W * W));
    size_t wb = cuda_fp8_work_bytes(N, W);
    CK(cudaMalloc((void **)&work, wb));
    CK(cudaMemset(dw, 0, (size_t)W * W * 4));
    CK(cudaMemset(db, 0, W * 4));
    cuda_fp8_init_slots(slots, 1, 0);
    Fp8Linear f = {slots, slots + FP8_SLOT_FLOATS, slots + 2 * FP8_SLOT_FLOATS, w8, wt8};
    Fp8Work k = {work, work + wb / 3, work + 2 * wb / 3, 1};

    printf("N=%d C=%d: ms per call (median of 20); fp8 includes its casts\n", N, C);
    printf("  %-8s %9s %9s %7s | %9s %9s %7s | %s\n", "layer", "bf16 fwd", "fp8 fwd", "ratio", "bf16 bwd", "fp8 bwd",
           "ratio", "casts fwd / bwd (ms, GB/s)");
    double tot_b = 0, tot_f = 0;
    for (const Lin &l : lins) {
        void *gp = l.gelu ? pre : NULL;
        int rc = 0;
        double bf = time_ms([&] { rc |= cuda_matmul_forward(PRECISION_BF16, out, gp, x, w, b, N, l.in, l.out, 0, 0); });
        double ff = time_ms([&] { rc |= cuda_fp8_matmul_forward(&f, &k, out, gp, x, w, b, N, l.in, l.out, 0); k.calibrate = 0; });
        void *bwd_gelu = l.in == W ? pre : NULL; /* fcproj: dGELU on its input gradient */
        double bb = time_ms([&] {
            rc |= cuda_matmul_backward(PRECISION_BF16, out2, dw, db, g, x, w, bwd_gelu, N, l.in, l.out, 0, 1.0f, scratch, 0);
        });
        k.calibrate = 1;
        double fb = time_ms([&] {
            rc |= cuda_fp8_matmul_backward(&f, &k, out2, dw, db, g, x, w, bwd_gelu, N, l.in, l.out, 1.0f, scratch, 0);
            k.calibrate = 0;
        });
        /* the casts alone: forward (weight copy + transpose, input copy), backward (gradient copy +
         * transpose, input transpose) */
        double cf = time_ms([&] {
            cuda_fp8_cast(w8, wt8, w, l.out, l.in, f.w, 0, 1, 0);
            cuda_fp8_cast(work, NULL, x, N, l.in, f.x, 0, 1, 0);
        });
        double cb = time_ms([&] {
            cuda_fp8_cast(work + wb / 3, work + 2 * wb / 3, g, N, l.out, f.g, 1, 1, 0);
            cuda_fp8_cast(NULL, work, x, N, l.in, f.x, 0, 0, 0);
        });
        double bytes_f = (double)l.out * l.in * 4 + (double)N * l.in * 3, bytes_b = (double)N * l.out * 4 + (double)N * l.in * 3;
        printf("  %-8s %9.3f %9.3f %6.2fx | %9.3f %9.3f %6.2fx | %.3f (%.0f) / %.3f (%.0f)%s\n", l.name, bf, ff, bf / ff, bb,
               fb, bb / fb, cf, bytes_f / (cf * 1e6), cb, bytes_b / (cb * 1e6), rc ? "  ERROR: a call failed" : "");
        tot_b += bf + bb;
        tot_f += ff + fb;
        cuda_fp8_roll(slots, 3, 0);
    }
    CK(cudaDeviceSynchronize());
    printf("  block: bf16 %.3f ms, fp8 %.3f ms (%.2fx); 12 layers: %.2f vs %.2f ms a step\n", tot_b, tot_f, tot_b / tot_f,
           12 * tot_b, 12 * tot_f);
    printf("matmul epilogue fallbacks: %ld\n", cuda_matmul_fallback_count());
    return 0;
}
