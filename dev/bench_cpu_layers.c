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

/* The other layers of one step (not attention), each timed as the step calls it: name, how many
 * calls per step, and the call. Buffers are shared scratch; their contents do not matter. */
typedef struct {
    float *x, *y, *z, *w, *b, *dw, *db, *mean, *rstd, *logits, *probs, *losses;
    float *p, *g, *m, *v, *wte, *wpe;
    int *tokens;
    size_t nparams;
} Scratch;

enum { OP_ENC, OP_LN, OP_GELU, OP_RES, OP_SCE, OP_ADAMW, N_OPS };
static const char *op_names[N_OPS] = {"encoder fwd+bwd", "layernorm fwd+bwd", "gelu fwd+bwd",
                                      "residual fwd+bwd", "softmax-CE fwd+bwd",
                                      "grad norm + AdamW"};
static const int op_calls[N_OPS] = {1, 2 * L_LAYERS + 1, L_LAYERS, 2 * L_LAYERS, 1, 1};

static void run_op(int op, Scratch *s, int step) {
    const int N = N_ROWS, C = CH;
    switch (op) {
    case OP_ENC:
        encoder_forward(s->y, s->tokens, s->wte, s->wpe, N / MAXT, MAXT, C);
        encoder_backward(s->wte, s->wpe, s->y, s->tokens, N / MAXT, MAXT, C);
        break;
    case OP_LN:
        layernorm_forward(s->y, s->mean, s->rstd, s->x, s->w, s->b, N, C);
        layernorm_backward(s->z, s->dw, s->db, s->y, s->x, s->w, s->mean, s->rstd, N, C);
        break;
    case OP_GELU:
        gelu_forward(s->y, s->x, (size_t)N * 4 * C);
        gelu_backward(s->z, s->x, s->y, (size_t)N * 4 * C);
        break;
    case OP_RES:
        residual_forward(s->y, s->x, s->z, (size_t)N * C);
        residual_backward(s->y, s->z, s->x, (size_t)N * C);
        break;
    case OP_SCE:
        softmax_crossentropy_forward(s->probs, s->losses, s->logits, s->tokens, N, VOCAB, VOCAB);
        softmax_crossentropy_backward(s->logits, s->probs, s->tokens, N, VOCAB, VOCAB, 1.0f / N);
        break;
    case OP_ADAMW:
        (void)sum_of_squares(s->g, s->nparams);
        adamw_update(s->p, s->g, s->m, s->v, s->nparams, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f,
                     step);
        break;
    }
}

/* median seconds per step of each other layer (calls per step included); returns the total */
static double time_other_layers(int reps) {
    unsigned seed = 99;
    const int N = N_ROWS, C = CH, L = L_LAYERS;
    Scratch s;
    s.nparams = (size_t)VOCAB * C + (size_t)MAXT * C + (size_t)L * (12 * C * C + 13 * C) + 2 * C;
    s.x = random_buffer((size_t)N * 4 * C, &seed);
    s.y = random_buffer((size_t)N * 4 * C, &seed);
    s.z = random_buffer((size_t)N * 4 * C, &seed);
    s.w = random_buffer(C, &seed);
    s.b = random_buffer(C, &seed);
    s.dw = calloc(C, sizeof(float));
    s.db = calloc(C, sizeof(float));
    s.mean = malloc(N * sizeof(float));
    s.rstd = malloc(N * sizeof(float));
    s.logits = random_buffer((size_t)N * VOCAB, &seed);
    s.probs = malloc((size_t)N * VOCAB * sizeof(float));
    s.losses = malloc(N * sizeof(float));
    s.p = random_buffer(s.nparams, &seed);
    s.g = random_buffer(s.nparams, &seed);
    s.m = calloc(s.nparams, sizeof(float));
    s.v = calloc(s.nparams, sizeof(float));
    s.wte = random_buffer((size_t)VOCAB * C, &seed);
    s.wpe = random_buffer((size_t)MAXT * C, &seed);
    s.tokens = malloc(N * sizeof(int));
    for (int i = 0; i < N; i++) s.tokens[i] = rand_r(&seed) % VOCAB;
    double *t = malloc(sizeof(double) * reps), total = 0.0;
    for (int op = 0; op < N_OPS; op++) {
        for (int r = -2; r < reps; r++) {
            double t0 = now_s();
            for (int c = 0; c < op_calls[op]; c++) run_op(op, &s, r + 3);
            if (r >= 0) t[r] = now_s() - t0;
        }
        double med = median(t, reps);
        printf("  %-20s x%-2d %8.3f ms\n", op_names[op], op_calls[op], med * 1e3);
        total += med;
    }
    free(s.x); free(s.y); free(s.z); free(s.w); free(s.b); free(s.dw); free(s.db); free(s.mean);
    free(s.rstd); free(s.logits); free(s.probs); free(s.losses); free(s.p); free(s.g); free(s.m);
    free(s.v); free(s.wte); free(s.wpe); free(s.tokens); free(t);
    return total;
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
        printf("one step's matmuls: %.1f ms\nother layers per step (no attention):\n",
               step_matmul * 1e3);
        double other = time_other_layers(reps);
        printf("one step: matmuls %.1f ms + other layers %.1f ms\n", step_matmul * 1e3,
               other * 1e3);
    }
    return 0;
}
