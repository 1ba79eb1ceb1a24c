/* dev/bench_cpu_layers.c: speed of the CPU layers at the model's shapes (4 layers, 256 channels,
 * vocab 256, B*T = 256 rows): GFLOP/s of matmul forward and backward for each shape with 1 and 2
 * OpenMP threads (median of repeats), and an estimate of one training step's layer time.
 *
 *   make build/dev/bench_cpu_layers && ./build/dev/bench_cpu_layers [repeats]
 *
 * Forward costs 2*N*C*OC flops; backward 4*N*C*OC (dinp and dweight; dbias is negligible).
 */
#include "layers/layers.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { N_ROWS = 256, L_LAYERS = 4, CH = 256, VOCAB = 256, MAXT = 64 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *x, int n) {
    qsort(x, n, sizeof(double), cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}
static float *random_buffer(size_t n, unsigned *seed) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)rand_r(seed) / RAND_MAX * 2.0f - 1.0f;
    return x;
}

typedef struct { const char *name; int C, OC, bias, count; } Shape;
/* the matmuls of one step: per layer qkv, attproj, fc, fcproj; then the tied classifier */
static const Shape shapes[] = {
    {"qkv      ", CH, 3 * CH, 1, L_LAYERS},
    {"attproj  ", CH, CH, 1, L_LAYERS},
    {"fc       ", CH, 4 * CH, 1, L_LAYERS},
    {"fcproj   ", 4 * CH, CH, 1, L_LAYERS},
    {"classifier", CH, VOCAB, 0, 1},
};
enum { N_SHAPES = sizeof shapes / sizeof shapes[0] };

/* median seconds of matmul_forward / matmul_backward at one shape */
static void time_matmul(const Shape *s, int reps, double *fwd_s, double *bwd_s) {
    unsigned seed = 1234;
    int N = N_ROWS, C = s->C, OC = s->OC;
    float *x = random_buffer((size_t)N * C, &seed), *w = random_buffer((size_t)OC * C, &seed);
    float *b = random_buffer(OC, &seed), *y = random_buffer((size_t)N * OC, &seed);
    float *dx = calloc((size_t)N * C, sizeof(float)), *dw = calloc((size_t)OC * C, sizeof(float));
    float *db = calloc(OC, sizeof(float));
    double *t = malloc(sizeof(double) * reps);
    for (int r = -3; r < reps; r++) { /* 3 warm-up runs */
        double t0 = now_s();
        matmul_forward(y, x, w, s->bias ? b : NULL, N, C, OC);
        if (r >= 0) t[r] = now_s() - t0;
    }
    *fwd_s = median(t, reps);
    for (int r = -3; r < reps; r++) {
        double t0 = now_s();
        matmul_backward(dx, dw, s->bias ? db : NULL, y, x, w, N, C, OC);
        if (r >= 0) t[r] = now_s() - t0;
    }
    *bwd_s = median(t, reps);
    free(x); free(w); free(b); free(y); free(dx); free(dw); free(db); free(t);
}

/* median seconds of everything else a step does in layers/ (not attention) */
static double time_other_layers(int reps) {
    unsigned seed = 99;
    const int N = N_ROWS, C = CH, L = L_LAYERS;
    size_t nparams = (size_t)VOCAB * C + (size_t)MAXT * C + (size_t)L * (12 * C * C + 13 * C) + 2 * C;
    float *x = random_buffer((size_t)N * 4 * C, &seed), *y = random_buffer((size_t)N * 4 * C, &seed);
    float *z = random_buffer((size_t)N * 4 * C, &seed), *w = random_buffer(C, &seed);
    float *b = random_buffer(C, &seed), *dw = calloc(C, sizeof(float)), *db = calloc(C, sizeof(float));
    float *mean = malloc(N * sizeof(float)), *rstd = malloc(N * sizeof(float));
    float *logits = random_buffer((size_t)N * VOCAB, &seed), *probs = malloc((size_t)N * VOCAB * 4);
    float *losses = malloc(N * sizeof(float));
    float *p = random_buffer(nparams, &seed), *g = random_buffer(nparams, &seed);
    float *m = calloc(nparams, sizeof(float)), *v = calloc(nparams, sizeof(float));
    float *wte = random_buffer((size_t)VOCAB * C, &seed), *wpe = random_buffer((size_t)MAXT * C, &seed);
    int *tokens = malloc(N * sizeof(int));
    for (int i = 0; i < N; i++) tokens[i] = rand_r(&seed) % VOCAB;
    double *t = malloc(sizeof(double) * reps);
    for (int r = -2; r < reps; r++) {
        double t0 = now_s();
        encoder_forward(y, tokens, wte, wpe, 4, MAXT, C);
        for (int i = 0; i < 2 * L + 1; i++) {
            layernorm_forward(y, mean, rstd, x, w, b, N, C);
            layernorm_backward(z, dw, db, y, x, w, mean, rstd, N, C);
        }
        for (int i = 0; i < L; i++) {
            gelu_forward(y, x, (size_t)N * 4 * C);
            gelu_backward(z, x, y, (size_t)N * 4 * C);
        }
        for (int i = 0; i < 2 * L; i++) {
            residual_forward(y, x, z, (size_t)N * C);
            residual_backward(y, z, x, (size_t)N * C);
        }
        softmax_crossentropy_forward(probs, losses, logits, tokens, N, VOCAB, VOCAB);
        softmax_crossentropy_backward(logits, probs, tokens, N, VOCAB, VOCAB, 1.0f / N);
        encoder_backward(wte, wpe, y, tokens, 4, MAXT, C);
        (void)sum_of_squares(g, nparams);
        adamw_update(p, g, m, v, nparams, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f, r + 3);
        if (r >= 0) t[r] = now_s() - t0;
    }
    double med = median(t, reps);
    free(x); free(y); free(z); free(w); free(b); free(dw); free(db); free(mean); free(rstd);
    free(logits); free(probs); free(losses); free(p); free(g); free(m); free(v); free(wte);
    free(wpe); free(tokens); free(t);
    return med;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 21;
    if (reps < 1) reps = 1;
    printf("N = %d rows; median of %d repeats\n", N_ROWS, reps);
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        printf("\n%d thread%s     C    OC   fwd ms  GFLOP/s   bwd ms  GFLOP/s\n", threads,
               threads > 1 ? "s" : " ");
        double step_matmul = 0.0;
        for (int i = 0; i < N_SHAPES; i++) {
            const Shape *s = &shapes[i];
            double f, b;
            time_matmul(s, reps, &f, &b);
            double flop = 2.0 * N_ROWS * s->C * s->OC;
            printf("%s %5d %5d %8.3f %8.1f %8.3f %8.1f\n", s->name, s->C, s->OC, f * 1e3,
                   flop / f * 1e-9, b * 1e3, 2 * flop / b * 1e-9);
            step_matmul += s->count * (f + b);
        }
        double other = time_other_layers(reps);
        printf("one step: matmuls %.1f ms, other layers (no attention) %.1f ms\n",
               step_matmul * 1e3, other * 1e3);
    }
    return 0;
}
