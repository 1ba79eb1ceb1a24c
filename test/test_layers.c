/* test/test_layers.c: every CPU layer in layers/layers.h against a double-precision reference.
 *
 * Forward: the fp32 result against the same math in double (tolerance ~1e-5 of the tensor's
 * magnitude: fp32 rounding, accumulated over at most ~1e3 terms).
 * Backward: the fp32 gradient against central finite differences, in double, of the scalar
 * loss L = sum(out * R) with R random. The difference quotient (L(x+h) - L(x-h)) / 2h with
 * h = 1e-4 has truncation error ~h^2 |L'''| ~ 1e-8 and rounding error ~1e-16 |L| / h ~ 1e-11,
 * so the reference is good to ~1e-7 and the comparison measures the fp32 code's own error.
 * Every gradient buffer starts with random contents to check that backward accumulates (+=).
 */
#include "layers/layers.h"
#include "test/test.h"

#include <omp.h>

static uint64_t rng = 0x5eed1234abcdULL;

/* ---- small helpers ------------------------------------------------------------------------ */

static float *alloc_f(size_t n) { return (float *)malloc((n ? n : 1) * sizeof(float)); }
static double *alloc_d(size_t n) { return (double *)calloc(n ? n : 1, sizeof(double)); }

static float *random_f(size_t n, float amplitude) {
    float *x = alloc_f(n);
    test_fill_random(x, n, &rng, amplitude);
    return x;
}
static float *copy_f(const float *x, size_t n) {
    float *y = alloc_f(n);
    memcpy(y, x, n * sizeof(float));
    return y;
}
static double *to_double(const float *x, size_t n) {
    double *y = alloc_d(n);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}
/* Largest |a - ref| over the largest |ref| (ref in double); NaN gives INFINITY. */
static double err_scaled_d(const float *a, const double *ref, size_t n) {
    double worst = 0.0, mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(ref[i])) return INFINITY;
        double e = fabs(a[i] - ref[i]);
        if (e > worst) worst = e;
        if (fabs(ref[i]) > mag) mag = fabs(ref[i]);
    }
    return worst / mag;
}
/* The gradient check with accumulation: got = before + expected. */
static double err_accumulated(const float *got, const float *before, const double *expected,
                              size_t n) {
    double *want = alloc_d(n);
    for (size_t i = 0; i < n; i++) want[i] = (double)before[i] + expected[i];
    double worst = 0.0, mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i])) { free(want); return INFINITY; }
        double e = fabs(got[i] - want[i]);
        if (e > worst) worst = e;
        if (fabs(expected[i]) > mag) mag = fabs(expected[i]);
        if (fabs(before[i]) > mag) mag = fabs(before[i]);
    }
    free(want);
    return worst / mag;
}

/* Central finite differences of loss(ctx) w.r.t. each x[k] (x is perturbed in place and
 * restored exactly, because x +/- h is undone by storing the saved value). */
typedef double (*loss_fn)(void *ctx);
static void finite_diff(loss_fn loss, void *ctx, double *x, size_t n, double *grad) {
    const double h = 1e-4;
    for (size_t k = 0; k < n; k++) {
        double saved = x[k];
        x[k] = saved + h;
        double lp = loss(ctx);
        x[k] = saved - h;
        double lm = loss(ctx);
        x[k] = saved;
        grad[k] = (lp - lm) / (2.0 * h);
    }
}
static double dot_d(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- encoder -------------------------------------------------------------------------------- */

typedef struct { int B, T, C; const int *inp; double *wte, *wpe, *R, *out; } EncCtx;

static void encoder_ref(double *out, const int *inp, const double *wte, const double *wpe,
                        int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                out[((size_t)b * T + t) * C + c] =
                    wte[(size_t)inp[b * T + t] * C + c] + wpe[(size_t)t * C + c];
}
static double encoder_loss(void *p) {
    EncCtx *e = p;
    encoder_ref(e->out, e->inp, e->wte, e->wpe, e->B, e->T, e->C);
    return dot_d(e->out, e->R, (size_t)e->B * e->T * e->C);
}

static void test_encoder(int B, int T, int C, int V, int finite_differences) {
    size_t n = (size_t)B * T * C;
    int *inp = malloc(sizeof(int) * B * T);
    for (int i = 0; i < B * T; i++) inp[i] = (int)(test_rng_next(&rng) % (uint64_t)V);
    inp[0] = inp[B * T - 1]; /* at least one repeated token: the dwte scatter must add */
    float *wte = random_f((size_t)V * C, 1.0f), *wpe = random_f((size_t)T * C, 1.0f);
    float *out = alloc_f(n);
    test_poison(out, n);
    encoder_forward(out, inp, wte, wpe, B, T, C);

    EncCtx e = {B, T, C, inp, to_double(wte, (size_t)V * C), to_double(wpe, (size_t)T * C),
                NULL, alloc_d(n)};
    float *R = random_f(n, 1.0f);
    e.R = to_double(R, n);
    double *ref = alloc_d(n);
    encoder_ref(ref, inp, e.wte, e.wpe, B, T, C);
    double ef = err_scaled_d(out, ref, n);
    CHECK(ef < 1e-6, "encoder_forward B=%d T=%d C=%d: err %g", B, T, C, ef);

    float *dwte = random_f((size_t)V * C, 1.0f), *dwpe = random_f((size_t)T * C, 1.0f);
    float *dwte0 = copy_f(dwte, (size_t)V * C), *dwpe0 = copy_f(dwpe, (size_t)T * C);
    encoder_backward(dwte, dwpe, R, inp, B, T, C);
    double *g_wte = alloc_d((size_t)V * C), *g_wpe = alloc_d((size_t)T * C);
    if (finite_differences) {
        finite_diff(encoder_loss, &e, e.wte, (size_t)V * C, g_wte);
        finite_diff(encoder_loss, &e, e.wpe, (size_t)T * C, g_wpe);
    } else { /* large shape: the scatter-add in double (checked by FD at the small shape) */
        for (int bt = 0; bt < B * T; bt++)
            for (int c = 0; c < C; c++) {
                g_wte[(size_t)inp[bt] * C + c] += e.R[(size_t)bt * C + c];
                g_wpe[(size_t)(bt % T) * C + c] += e.R[(size_t)bt * C + c];
            }
    }
    double e1 = err_accumulated(dwte, dwte0, g_wte, (size_t)V * C);
    double e2 = err_accumulated(dwpe, dwpe0, g_wpe, (size_t)T * C);
    CHECK(e1 < 1e-6, "encoder_backward dwte B=%d T=%d C=%d: err %g", B, T, C, e1);
    CHECK(e2 < 1e-6, "encoder_backward dwpe B=%d T=%d C=%d: err %g", B, T, C, e2);

    free(inp); free(wte); free(wpe); free(out); free(e.wte); free(e.wpe); free(e.out);
    free(R); free(e.R); free(ref); free(dwte); free(dwpe); free(dwte0); free(dwpe0);
    free(g_wte); free(g_wpe);
}

/* No position table (wpe NULL, ALiBi): the output is the token rows exactly; backward adds dout
 * into dwte alone. */
static void test_encoder_no_positions(int B, int T, int C, int V) {
    size_t n = (size_t)B * T * C;
    int *inp = malloc(sizeof(int) * B * T);
    for (int i = 0; i < B * T; i++) inp[i] = (int)(test_rng_next(&rng) % (uint64_t)V);
    inp[0] = inp[B * T - 1];
    float *wte = random_f((size_t)V * C, 1.0f), *out = alloc_f(n);
    test_poison(out, n);
    encoder_forward(out, inp, wte, NULL, B, T, C);
    int same = 1;
    for (int bt = 0; bt < B * T; bt++)
        same &= memcmp(out + (size_t)bt * C, wte + (size_t)inp[bt] * C, C * sizeof(float)) == 0;
    CHECK(same, "encoder_forward without wpe B=%d T=%d C=%d is not the token rows", B, T, C);
    float *R = random_f(n, 1.0f), *dwte = random_f((size_t)V * C, 1.0f);
    float *dwte0 = copy_f(dwte, (size_t)V * C);
    encoder_backward(dwte, NULL, R, inp, B, T, C);
    double *g = alloc_d((size_t)V * C);
    for (int bt = 0; bt < B * T; bt++)
        for (int c = 0; c < C; c++) g[(size_t)inp[bt] * C + c] += R[(size_t)bt * C + c];
    double e = err_accumulated(dwte, dwte0, g, (size_t)V * C);
    CHECK(e < 1e-6, "encoder_backward without dwpe B=%d T=%d C=%d: err %g", B, T, C, e);
    free(inp); free(wte); free(out); free(R); free(dwte); free(dwte0); free(g);
}

/* ---- layernorm ------------------------------------------------------------------------------ */

typedef struct { int N, C; double *inp, *w, *b, *R, *out, *mean, *rstd; } LnCtx;

static void layernorm_ref(double *out, double *mean, double *rstd, const double *x,
                          const double *w, const double *b, int N, int C) {
    for (int i = 0; i < N; i++) {
        const double *xi = x + (size_t)i * C;
        double m = 0.0, v = 0.0;
        for (int c = 0; c < C; c++) m += xi[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (xi[c] - m) * (xi[c] - m);
        v /= C;
        double s = 1.0 / sqrt(v + 1e-5);
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = (xi[c] - m) * s * w[c] + b[c];
        mean[i] = m;
        rstd[i] = s;
    }
}
static double layernorm_loss(void *p) {
    LnCtx *l = p;
    layernorm_ref(l->out, l->mean, l->rstd, l->inp, l->w, l->b, l->N, l->C);
    return dot_d(l->out, l->R, (size_t)l->N * l->C);
}

static void test_layernorm(int N, int C, int finite_differences) {
    size_t n = (size_t)N * C;
    float *x = random_f(n, 2.0f), *w = random_f(C, 1.0f), *b = random_f(C, 1.0f);
    for (size_t i = 0; i < n; i++) x[i] += 0.75f; /* a non-zero mean */
    float *out = alloc_f(n), *mean = alloc_f(N), *rstd = alloc_f(N);
    test_poison(out, n); test_poison(mean, N); test_poison(rstd, N);
    layernorm_forward(out, mean, rstd, x, w, b, N, C);

    LnCtx l = {N, C, to_double(x, n), to_double(w, C), to_double(b, C), NULL, alloc_d(n),
               alloc_d(N), alloc_d(N)};
    float *R = random_f(n, 1.0f);
    l.R = to_double(R, n);
    double *ref = alloc_d(n), *rm = alloc_d(N), *rs = alloc_d(N);
    layernorm_ref(ref, rm, rs, l.inp, l.w, l.b, N, C);
    double e_out = err_scaled_d(out, ref, n), e_m = err_scaled_d(mean, rm, N);
    double e_s = err_scaled_d(rstd, rs, N);
    CHECK(e_out < 1e-5 && e_m < 1e-5 && e_s < 1e-5,
          "layernorm_forward N=%d C=%d: err out %g mean %g rstd %g", N, C, e_out, e_m, e_s);

    float *dx = random_f(n, 1.0f), *dw = random_f(C, 1.0f), *db = random_f(C, 1.0f);
    float *dx0 = copy_f(dx, n), *dw0 = copy_f(dw, C), *db0 = copy_f(db, C);
    layernorm_backward(dx, dw, db, R, x, w, mean, rstd, N, C);
    double *gx = alloc_d(n), *gw = alloc_d(C), *gb = alloc_d(C);
    if (finite_differences) {
        finite_diff(layernorm_loss, &l, l.inp, n, gx);
        finite_diff(layernorm_loss, &l, l.w, C, gw);
        finite_diff(layernorm_loss, &l, l.b, C, gb);
    } else { /* large shape: the analytic gradient in double (checked by FD at small shapes) */
        for (int i = 0; i < N; i++) {
            const double *xi = l.inp + (size_t)i * C, *dy = l.R + (size_t)i * C;
            double gm = 0.0, gxm = 0.0;
            for (int c = 0; c < C; c++) {
                double xhat = (xi[c] - rm[i]) * rs[i];
                gm += dy[c] * l.w[c];
                gxm += dy[c] * l.w[c] * xhat;
                gw[c] += dy[c] * xhat;
                gb[c] += dy[c];
            }
            gm /= C; gxm /= C;
            for (int c = 0; c < C; c++) {
                double xhat = (xi[c] - rm[i]) * rs[i];
                gx[(size_t)i * C + c] = rs[i] * (dy[c] * l.w[c] - gm - xhat * gxm);
            }
        }
    }
    double ex = err_accumulated(dx, dx0, gx, n), ew = err_accumulated(dw, dw0, gw, C);
    double eb = err_accumulated(db, db0, gb, C);
    CHECK(ex < 2e-5, "layernorm_backward dinp N=%d C=%d: err %g", N, C, ex);
    CHECK(ew < 2e-5, "layernorm_backward dweight N=%d C=%d: err %g", N, C, ew);
    CHECK(eb < 2e-5, "layernorm_backward dbias N=%d C=%d: err %g", N, C, eb);

    free(x); free(w); free(b); free(out); free(mean); free(rstd); free(l.inp); free(l.w);
    free(l.b); free(l.out); free(l.mean); free(l.rstd); free(R); free(l.R); free(ref); free(rm);
    free(rs); free(dx); free(dw); free(db); free(dx0); free(dw0); free(db0); free(gx); free(gw);
    free(gb);
}

/* ---- matmul --------------------------------------------------------------------------------- */

typedef struct { int N, C, OC; double *inp, *w, *b, *R, *out; } MmCtx;

static void matmul_ref(double *out, const double *x, const double *w, const double *b,
                       int N, int C, int OC) {
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double acc = b ? b[o] : 0.0;
            for (int c = 0; c < C; c++) acc += x[(size_t)i * C + c] * w[(size_t)o * C + c];
            out[(size_t)i * OC + o] = acc;
        }
}
static double matmul_loss(void *p) {
    MmCtx *m = p;
    matmul_ref(m->out, m->inp, m->w, m->b, m->N, m->C, m->OC);
    return dot_d(m->out, m->R, (size_t)m->N * m->OC);
}
/* The analytic gradients in double, for shapes too large for finite differences. */
static void matmul_backward_ref(double *gx, double *gw, double *gb, const double *dy,
                                const double *x, const double *w, int N, int C, int OC) {
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double d = dy[(size_t)i * OC + o];
            gb[o] += d;
            for (int c = 0; c < C; c++) {
                gx[(size_t)i * C + c] += d * w[(size_t)o * C + c];
                gw[(size_t)o * C + c] += d * x[(size_t)i * C + c];
            }
        }
}

/* use_bias / want_dinp / want_dbias exercise the NULL arguments. Tolerance: an fp32 sum of C
 * products of O(1) terms is off by ~sqrt(C) * 6e-8 relative to the output's magnitude
 * (measured: <= 1.5e-6 at C = 1024); the tolerance is 1e-5 at 256 terms, growing as sqrt. */
static void test_matmul(int N, int C, int OC, int use_bias, int want_dinp, int want_dbias,
                        int finite_differences) {
    size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
    float *x = random_f(nx, 1.0f), *w = random_f(nw, 1.0f), *b = random_f(OC, 1.0f);
    float *out = alloc_f(ny);
    test_poison(out, ny);
    matmul_forward(out, x, w, use_bias ? b : NULL, N, C, OC);

    MmCtx m = {N, C, OC, to_double(x, nx), to_double(w, nw), use_bias ? to_double(b, OC) : NULL,
               NULL, alloc_d(ny)};
    float *R = random_f(ny, 1.0f);
    m.R = to_double(R, ny);
    double *ref = alloc_d(ny);
    matmul_ref(ref, m.inp, m.w, m.b, N, C, OC);
    double tol_f = 5e-6 * (1.0 + sqrt(C / 256.0));
    double ef = err_scaled_d(out, ref, ny);
    CHECK(ef < tol_f, "matmul_forward N=%d C=%d OC=%d bias=%d: err %g (tol %g)", N, C, OC,
          use_bias, ef, tol_f);

    float *dx = random_f(nx, 1.0f), *dw = random_f(nw, 1.0f), *db = random_f(OC, 1.0f);
    float *dx0 = copy_f(dx, nx), *dw0 = copy_f(dw, nw), *db0 = copy_f(db, OC);
    matmul_backward(want_dinp ? dx : NULL, dw, want_dbias ? db : NULL, R, x, w, N, C, OC);
    double *gx = alloc_d(nx), *gw = alloc_d(nw), *gb = alloc_d(OC);
    if (finite_differences) {
        double *bias_d = m.b ? m.b : alloc_d(OC);
        m.b = bias_d; /* FD w.r.t. the bias needs one, zeros when the forward had none */
        finite_diff(matmul_loss, &m, m.inp, nx, gx);
        finite_diff(matmul_loss, &m, m.w, nw, gw);
        finite_diff(matmul_loss, &m, m.b, OC, gb);
    } else {
        matmul_backward_ref(gx, gw, gb, m.R, m.inp, m.w, N, C, OC);
    }
    /* dinp sums OC products, dweight and dbias sum N */
    double tol_x = 5e-6 * (1.0 + sqrt(OC / 256.0)), tol_w = 5e-6 * (1.0 + sqrt(N / 256.0));
    if (want_dinp) {
        double ex = err_accumulated(dx, dx0, gx, nx);
        CHECK(ex < tol_x, "matmul_backward dinp N=%d C=%d OC=%d: err %g", N, C, OC, ex);
    } else {
        CHECK(memcmp(dx, dx0, nx * sizeof(float)) == 0, "dinp touched although NULL");
    }
    double ew = err_accumulated(dw, dw0, gw, nw);
    CHECK(ew < tol_w, "matmul_backward dweight N=%d C=%d OC=%d: err %g", N, C, OC, ew);
    if (want_dbias) {
        double eb = err_accumulated(db, db0, gb, OC);
        CHECK(eb < tol_w, "matmul_backward dbias N=%d C=%d OC=%d: err %g", N, C, OC, eb);
    }

    free(x); free(w); free(b); free(out); free(m.inp); free(m.w); free(m.b); free(m.out);
    free(R); free(m.R); free(ref); free(dx); free(dw); free(db); free(dx0); free(dw0);
    free(db0); free(gx); free(gw); free(gb);
}

/* Each output element has one owner and a fixed summation order, so the matmul must give the
 * same bits with 1 thread as with several (3: more threads than column blocks at small shapes,
 * which exercises the row split). A race or a split-dependent order would show here. */
static void test_matmul_thread_independence(int N, int C, int OC) {
    size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
    float *x = random_f(nx, 1.0f), *w = random_f(nw, 1.0f), *b = random_f(OC, 1.0f);
    float *dy = random_f(ny, 1.0f), *g0 = random_f(nx + nw + OC, 1.0f);
    float *out[2], *grads[2];
    int threads[2] = {1, 3}, saved = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(threads[t]);
        out[t] = alloc_f(ny);
        test_poison(out[t], ny);
        grads[t] = copy_f(g0, nx + nw + OC);
        matmul_forward(out[t], x, w, b, N, C, OC);
        matmul_backward(grads[t], grads[t] + nx, grads[t] + nx + nw, dy, x, w, N, C, OC);
    }
    omp_set_num_threads(saved);
    CHECK(memcmp(out[0], out[1], ny * sizeof(float)) == 0,
          "matmul_forward N=%d C=%d OC=%d differs between 1 and 3 threads", N, C, OC);
    CHECK(memcmp(grads[0], grads[1], (nx + nw + OC) * sizeof(float)) == 0,
          "matmul_backward N=%d C=%d OC=%d differs between 1 and 3 threads", N, C, OC);
    free(x); free(w); free(b); free(dy); free(g0);
    for (int t = 0; t < 2; t++) { free(out[t]); free(grads[t]); }
}

/* ---- gelu ----------------------------------------------------------------------------------- */

typedef struct { size_t n; double *inp, *R; } GeluCtx;

static double gelu_ref(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
static double gelu_loss(void *p) {
    GeluCtx *g = p;
    double s = 0.0;
    for (size_t i = 0; i < g->n; i++) s += gelu_ref(g->inp[i]) * g->R[i];
    return s;
}

/* amplitude 4 covers the curved part; a larger one drives exp(-2u) to its clamps both ways */
static void test_gelu(size_t n, float amplitude) {
    float *x = random_f(n, amplitude), *out = alloc_f(n);
    test_poison(out, n);
    gelu_forward(out, x, n);
    double *ref = alloc_d(n);
    for (size_t i = 0; i < n; i++) ref[i] = gelu_ref(x[i]);
    double ef = err_scaled_d(out, ref, n);
    CHECK(ef < 1e-6, "gelu_forward n=%zu: err %g", n, ef);

    float *R = random_f(n, 1.0f), *dx = random_f(n, 1.0f), *dx0 = copy_f(dx, n);
    gelu_backward(dx, x, R, n);
    GeluCtx g = {n, to_double(x, n), to_double(R, n)};
    double *gx = alloc_d(n);
    finite_diff(gelu_loss, &g, g.inp, n, gx);
    double eb = err_accumulated(dx, dx0, gx, n);
    CHECK(eb < 1e-6, "gelu_backward n=%zu: err %g", n, eb);
    free(x); free(out); free(ref); free(R); free(dx); free(dx0); free(g.inp); free(g.R);
    free(gx);
}

/* ---- residual ------------------------------------------------------------------------------- */

static void test_residual(size_t n) {
    float *a = random_f(n, 1.0f), *b = random_f(n, 1.0f), *out = alloc_f(n);
    test_poison(out, n);
    residual_forward(out, a, b, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= out[i] == a[i] + b[i];
    CHECK(ok, "residual_forward n=%zu", n);

    float *dout = random_f(n, 1.0f), *da = random_f(n, 1.0f), *db = random_f(n, 1.0f);
    float *da0 = copy_f(da, n), *db0 = copy_f(db, n);
    residual_backward(da, db, dout, n);
    ok = 1;
    for (size_t i = 0; i < n; i++) ok &= da[i] == da0[i] + dout[i] && db[i] == db0[i] + dout[i];
    CHECK(ok, "residual_backward n=%zu accumulates dout into both", n);
    free(a); free(b); free(out); free(dout); free(da); free(db); free(da0); free(db0);
}

/* ---- softmax cross-entropy ------------------------------------------------------------------ */

typedef struct { int N, V, ld; const int *targets; double *logits; double dloss; } SceCtx;

/* losses in double, by log-sum-exp around the row maximum */
static void softmax_ce_ref(double *probs, double *losses, const double *z, const int *targets,
                           int N, int V, int ld) {
    for (int i = 0; i < N; i++) {
        const double *zi = z + (size_t)i * ld;
        double zmax = zi[0], s = 0.0;
        for (int j = 1; j < V; j++) zmax = fmax(zmax, zi[j]);
        for (int j = 0; j < V; j++) s += exp(zi[j] - zmax);
        for (int j = 0; j < V; j++) probs[(size_t)i * V + j] = exp(zi[j] - zmax) / s;
        losses[i] = targets[i] >= 0 ? log(s) - (zi[targets[i]] - zmax) : 0.0;
    }
}
static double softmax_ce_loss(void *p) {
    SceCtx *s = p;
    double *probs = alloc_d((size_t)s->N * s->V), *losses = alloc_d(s->N);
    softmax_ce_ref(probs, losses, s->logits, s->targets, s->N, s->V, s->ld);
    double total = 0.0;
    for (int i = 0; i < s->N; i++) total += losses[i] * s->dloss;
    free(probs); free(losses);
    return total;
}

static void test_softmax_crossentropy(int N, int V, int ld) {
    size_t n = (size_t)N * ld;
    float *z = random_f(n, 3.0f);
    int *targets = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) targets[i] = (int)(test_rng_next(&rng) % (uint64_t)V);
    targets[1] = -1; /* an ignored row */
    for (int j = 0; j < V; j++) z[2 * ld + j] += 1000.0f; /* large logits: exp would overflow */
    z[2 * ld + targets[2]] = 1010.0f;
    z[3 * ld + targets[3]] = -1000.0f; /* a target whose probability underflows to 0 */
    for (int i = 0; i < N; i++)
        for (int j = V; j < ld; j++) z[(size_t)i * ld + j] = NAN; /* padding must not be read */

    float *probs = alloc_f(n), *losses = alloc_f(N);
    test_poison(probs, n); test_poison(losses, N);
    softmax_crossentropy_forward(probs, losses, z, targets, N, V, ld);
    double *zd = to_double(z, n), *rp = alloc_d((size_t)N * V), *rl = alloc_d(N);
    softmax_ce_ref(rp, rl, zd, targets, N, V, ld);
    double ep = 0.0, el = 0.0;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < V; j++) {
            double p = probs[(size_t)i * ld + j], e = fabs(p - rp[(size_t)i * V + j]);
            if (isnan(p)) e = INFINITY;
            ep = fmax(ep, e); /* probabilities lie in [0,1]: an absolute error */
        }
        double e = fabs(losses[i] - rl[i]) / (fabs(rl[i]) + 1.0);
        if (isnan(losses[i])) e = INFINITY;
        el = fmax(el, e);
    }
    CHECK(ep < 1e-6, "softmax_crossentropy_forward probs N=%d V=%d ld=%d: err %g", N, V, ld, ep);
    CHECK(el < 1e-6, "softmax_crossentropy_forward losses N=%d V=%d ld=%d: err %g", N, V, ld, el);
    CHECK(losses[1] == 0.0f, "ignored row's loss is %g, not 0", losses[1]);
    CHECK(fabs(losses[3] - rl[3]) < 1e-3 * rl[3] && rl[3] > 900.0,
          "an underflowing target's loss %g vs %g", losses[3], rl[3]);

    const float dloss = 1.0f / 3.0f;
    float *dz = alloc_f(n);
    test_poison(dz, n);
    softmax_crossentropy_backward(dz, probs, targets, N, V, ld, dloss);
    SceCtx s = {N, V, ld, targets, zd, dloss};
    double *g = alloc_d(n);
    for (int i = 0; i < N; i++) /* FD over the real logits only; padding's gradient is 0 */
        for (int j = 0; j < V; j++) {
            size_t k = (size_t)i * ld + j;
            finite_diff(softmax_ce_loss, &s, zd + k, 1, g + k);
        }
    double eg = 0.0;
    int pad_zero = 1;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < V; j++) {
            size_t k = (size_t)i * ld + j;
            double e = isnan(dz[k]) ? INFINITY : fabs(dz[k] - g[k]) / dloss;
            eg = fmax(eg, e);
        }
        for (int j = V; j < ld; j++) pad_zero &= dz[(size_t)i * ld + j] == 0.0f;
    }
    int ignored_zero = 1;
    for (int j = 0; j < ld; j++) ignored_zero &= dz[1 * ld + j] == 0.0f;
    CHECK(eg < 1e-6, "softmax_crossentropy_backward N=%d V=%d ld=%d: err %g", N, V, ld, eg);
    CHECK(pad_zero, "softmax_crossentropy_backward: padding columns not zeroed");
    CHECK(ignored_zero, "softmax_crossentropy_backward: ignored row not zeroed");
    free(z); free(targets); free(probs); free(losses); free(zd); free(rp); free(rl); free(dz);
    free(g);
}

/* ---- AdamW ---------------------------------------------------------------------------------- */

static void adamw_ref(double *p, double g_raw, double *m, double *v, double lr, double b1,
                      double b2, double eps, double wd, double scale, int t) {
    double g = g_raw * scale;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double mhat = *m / (1 - pow(b1, t)), vhat = *v / (1 - pow(b2, t));
    *p -= lr * (mhat / (sqrt(vhat) + eps) + wd * *p);
}

static void test_adamw(void) {
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, scale = 2.0f;
    /* By hand, step 1 of one parameter p=1 with grad 0.1 (g = 0.2 after scaling):
     * m = 0.1*0.2 = 0.02, v = 0.05*0.04 = 0.002, mhat = 0.2, vhat = 0.04,
     * p = 1 - 0.01 * (0.2/(0.2 + 1e-8) + 0.1 * 1) = 0.989 (+5e-10). */
    float p = 1.0f, g = 0.1f, m = 0.0f, v = 0.0f;
    adamw_update(&p, &g, &m, &v, 1, lr, b1, b2, eps, wd, scale, 1);
    CHECK(fabsf(m - 0.02f) < 1e-8f && fabsf(v - 0.002f) < 1e-9f, "adamw step 1: m %g v %g", m, v);
    CHECK(fabsf(p - 0.989f) < 1e-7f, "adamw step 1: p %.9g, by hand 0.989", p);
    /* Step 2 with grad -0.05 (g = -0.1): m = 0.9*0.02 - 0.1*0.1 = 0.008,
     * v = 0.95*0.002 + 0.05*0.01 = 0.0024, mhat = 0.008/0.19, vhat = 0.0024/0.0975,
     * p = 0.989 - 0.01*(mhat/(sqrt(vhat)+eps) + 0.1*0.989) */
    g = -0.05f;
    adamw_update(&p, &g, &m, &v, 1, lr, b1, b2, eps, wd, scale, 2);
    double mhat = 0.008 / 0.19, vhat = 0.0024 / 0.0975;
    double p2 = 0.989 - 0.01 * (mhat / (sqrt(vhat) + 1e-8) + 0.1 * 0.989);
    CHECK(fabs(m - 0.008) < 1e-8 && fabs(v - 0.0024) < 1e-9, "adamw step 2: m %g v %g", m, v);
    CHECK(fabs(p - p2) < 2e-7, "adamw step 2: p %.9g, by hand %.9g", p, p2);

    /* Many parameters, two steps, against the double formula. */
    size_t n = 10007;
    float *P = random_f(n, 1.0f), *G = random_f(n, 0.01f), *M = alloc_f(n), *Vv = alloc_f(n);
    memset(M, 0, n * sizeof(float)); memset(Vv, 0, n * sizeof(float));
    double *Pd = to_double(P, n), *Md = alloc_d(n), *Vd = alloc_d(n);
    for (int t = 1; t <= 2; t++) {
        for (size_t i = 0; i < n; i++)
            adamw_ref(&Pd[i], G[i], &Md[i], &Vd[i], lr, b1, b2, eps, wd, scale, t);
        adamw_update(P, G, M, Vv, n, lr, b1, b2, eps, wd, scale, t);
        test_fill_random(G, n, &rng, 0.01f);
    }
    double ep = 0.0;
    for (size_t i = 0; i < n; i++) ep = fmax(ep, isnan(P[i]) ? INFINITY : fabs(P[i] - Pd[i]));
    double em = err_scaled_d(M, Md, n), ev = err_scaled_d(Vv, Vd, n);
    CHECK(ep < 1e-6 && em < 1e-6 && ev < 1e-6, "adamw n=%zu two steps: err p %g m %g v %g", n,
          ep, em, ev);
    free(P); free(G); free(M); free(Vv); free(Pd); free(Md); free(Vd);
}

static void test_sum_of_squares(size_t n) {
    float *x = random_f(n, 3.0f);
    double want = 0.0;
    for (size_t i = 0; i < n; i++) want += (double)x[i] * x[i];
    double got = sum_of_squares(x, n);
    CHECK(fabs(got - want) <= 1e-12 * want, "sum_of_squares n=%zu: %.17g vs %.17g", n, got, want);
    free(x);
}

int main(void) {
    test_encoder(3, 7, 13, 5, 1);
    test_encoder(4, 64, 256, 256, 0);
    test_encoder_no_positions(3, 7, 13, 5);

    test_layernorm(7, 13, 1);
    test_layernorm(5, 64, 1);
    test_layernorm(256, 256, 0);

    /* awkward shapes (not multiples of any tile), tiny shapes, and the model's own shapes */
    const int small[][3] = {{7, 13, 19}, {1, 1, 1}, {1, 5, 3}, {37, 70, 45}, {9, 40, 33},
                            {16, 32, 64}, {33, 17, 65}};
    for (size_t s = 0; s < sizeof small / sizeof small[0]; s++)
        test_matmul(small[s][0], small[s][1], small[s][2], 1, 1, 1, 1);
    test_matmul(7, 13, 19, 0, 1, 0, 1); /* no bias, no dbias */
    test_matmul(7, 13, 19, 1, 0, 1, 1); /* no dinp */
    const int model[][3] = {{256, 256, 768}, {256, 256, 256}, {256, 256, 1024},
                            {256, 1024, 256}, {100, 1000, 300}};
    for (size_t s = 0; s < sizeof model / sizeof model[0]; s++)
        test_matmul(model[s][0], model[s][1], model[s][2], 1, 1, 1, 0);
    test_matmul(256, 256, 256, 0, 1, 0, 0);
    test_matmul_thread_independence(37, 70, 45);
    test_matmul_thread_independence(256, 1024, 256);
    test_matmul_thread_independence(250, 256, 768);

    test_gelu(1, 4.0f);
    test_gelu(1001, 4.0f);
    test_gelu(1001, 30.0f);

    test_residual(1);
    test_residual(100003);

    test_softmax_crossentropy(6, 11, 11);
    test_softmax_crossentropy(9, 37, 40);

    test_adamw();
    test_sum_of_squares(1000003);
    return test_summary("test_layers");
}
