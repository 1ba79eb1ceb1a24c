/* test/test_attention_cpu.c: the three CPU attention kernels (naive, memeff, flash) against a
 * float64 reference written here from the definition, against each other, and against finite
 * differences in double; plus the name tables, attn_impl, auto resolution and bad input.
 *
 * Every call gets fresh random inputs, outputs and gradients poisoned with NaN, and padding
 * that must stay untouched (a sentinel) or must never be read (NaN in inputs and bias).
 * Tolerance: fp32 against double, 1e-5 of the tensor's largest magnitude. dQ and dK of a row
 * that sees a single key are 0 in exact arithmetic and pure rounding in fp32 (dS = P(dP - D)
 * cancels), so their magnitude has a floor: the size of one term scale * |k| * |dO . v|.
 */
#include <time.h>
#include "attention/attention.h"
#include "test/test.h"

#define TOL 1e-5
#define SENTINEL 1234.5f

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

/* ---- problems: a shape, its buffers in some layout, and double copies ------------------- */

typedef enum { LAYOUT_PACKED, LAYOUT_SEPARATE, LAYOUT_PADDED, NUM_LAYOUTS } Layout;
static const char *const layout_names[NUM_LAYOUTS] = {"packed", "separate", "padded"};

typedef enum {
    MV_NONE,     /* no mask */
    MV_CAUSAL,   /* causal */
    MV_SHARED,   /* dense T x T bias shared by every batch and head (strides 0, 0, T) */
    MV_PER_HEAD, /* dense bias per head, rows padded to T + 3 (strides 0, T*(T+3), T+3) */
    MV_KEY_PAD,  /* dense key-padding bias per batch row, one row for all queries (T, 0, 0) */
    NUM_MV
} MaskVariant;
static const char *const mv_names[NUM_MV] = {"none", "causal", "dense-shared", "dense-per-head",
                                             "dense-key-pad"};

typedef struct {
    AttnShape s;
    Layout layout;
    size_t n_in, n_out; /* floats in the input/gradient block and in the o/dout buffers */
    float *in, *grad;   /* q, k, v and dq, dk, dv live in these */
    float *q, *k, *v, *dq, *dk, *dv;
    float *o, *dout, *bias;
    size_t n;               /* B*T*H*D: elements of one logical tensor */
    double *Q, *K, *V, *dO; /* logical (B, T, H, D) copies of the inputs */
} Problem;

static size_t lidx(const AttnShape *s, int b, int t, int h, int d) {
    return (((size_t)b * s->T + t) * s->H + h) * s->D + d;
}
static size_t pidx(int ld, const AttnShape *s, int b, int t, int h, int d) {
    return ((size_t)b * s->T + t) * ld + (size_t)h * s->D + d;
}

/* Writes value(x) into every element (b, t, h, d) of a tensor with leading dimension ld. */
static void gather(const float *x, int ld, const AttnShape *s, float *out) {
    for (int b = 0; b < s->B; b++)
        for (int t = 0; t < s->T; t++)
            for (int h = 0; h < s->H; h++)
                for (int d = 0; d < s->D; d++)
                    out[lidx(s, b, t, h, d)] = x[pidx(ld, s, b, t, h, d)];
}

static void fill_heads_random(float *x, int ld, const AttnShape *s, double *copy, float amp) {
    for (int b = 0; b < s->B; b++)
        for (int t = 0; t < s->T; t++)
            for (int h = 0; h < s->H; h++)
                for (int d = 0; d < s->D; d++) {
                    float val = amp * test_randf(&rng);
                    x[pidx(ld, s, b, t, h, d)] = val;
                    copy[lidx(s, b, t, h, d)] = val;
                }
}
static void poison_heads(float *x, int ld, const AttnShape *s) {
    for (int b = 0; b < s->B; b++)
        for (int t = 0; t < s->T; t++)
            for (int h = 0; h < s->H; h++)
                for (int d = 0; d < s->D; d++) x[pidx(ld, s, b, t, h, d)] = NAN;
}
static void fill(float *x, size_t n, float val) {
    for (size_t i = 0; i < n; i++) x[i] = val;
}
/* 1 when every element outside the heads (the padding) still holds SENTINEL. */
static int padding_intact(const float *x, size_t n, int ld, const AttnShape *s, int tensors) {
    const int C = s->H * s->D;
    for (size_t i = 0; i < n; i++) {
        size_t col = i % (size_t)ld;
        int in_tensor = (col < (size_t)C * tensors); /* packed: C, 2C, 3C columns hold tensors */
        if (!in_tensor && x[i] != SENTINEL) return 0;
    }
    return 1;
}

static float *bias_for(MaskVariant mv, AttnShape *s) {
    const int B = s->B, T = s->T, H = s->H;
    float *bias = NULL;
    AttnMask *m = &s->mask;
    m->kind = mv == MV_NONE ? ATTN_MASK_NONE : mv == MV_CAUSAL ? ATTN_MASK_CAUSAL : ATTN_MASK_DENSE;
    if (mv == MV_SHARED) {
        bias = malloc((size_t)T * T * sizeof(float));
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++) {
                float val = test_randf(&rng);
                if (test_randf(&rng) > 0.7f) val = -INFINITY;     /* ~15% masked */
                if (i == 2) val = -INFINITY;                      /* a fully masked row */
                if (i == T - 1 && j < T / 2 + 1) val = -INFINITY; /* a masked first key tile */
                bias[(size_t)i * T + j] = val;
            }
        m->stride_b = 0, m->stride_h = 0, m->stride_row = T;
    } else if (mv == MV_PER_HEAD) {
        const int ldr = T + 3;
        bias = malloc((size_t)H * T * ldr * sizeof(float));
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++)
                for (int j = 0; j < ldr; j++) {
                    float val = 2.0f * test_randf(&rng);
                    if (test_randf(&rng) > 0.8f) val = -INFINITY;
                    if (h == H - 1 && i == 0) val = -INFINITY;
                    if (j >= T) val = NAN; /* row padding: must never be read */
                    bias[((size_t)h * T + i) * ldr + j] = val;
                }
        m->stride_b = 0, m->stride_h = (long long)T * ldr, m->stride_row = ldr;
    } else if (mv == MV_KEY_PAD) {
        bias = malloc((size_t)B * T * sizeof(float));
        for (int b = 0; b < B; b++) {
            int len = 1 + (int)(test_rng_next(&rng) % (uint64_t)T);
            if (b == 0) len = T > 1 ? T - 1 : 1;
            for (int j = 0; j < T; j++) bias[(size_t)b * T + j] = j < len ? 0.0f : -INFINITY;
        }
        m->stride_b = T, m->stride_h = 0, m->stride_row = 0;
    }
    m->bias = bias;
    return bias;
}

static Problem problem_new(int B, int T, int H, int D, MaskVariant mv, Layout layout) {
    Problem p;
    memset(&p, 0, sizeof p);
    p.layout = layout;
    p.s = attn_shape_packed(B, T, H, D, ATTN_MASK_NONE, ATTN_FP32);
    const int C = H * D;
    if (layout == LAYOUT_SEPARATE) p.s.ld_qkv = C, p.s.ld_o = C;
    if (layout == LAYOUT_PADDED) p.s.ld_qkv = C + 5, p.s.ld_o = C + 3;
    const size_t rows = (size_t)B * T;
    p.n = rows * C;
    p.n_in = layout == LAYOUT_PACKED ? rows * 3 * C : 3 * rows * p.s.ld_qkv;
    p.n_out = rows * p.s.ld_o;
    p.in = malloc(p.n_in * sizeof(float));
    p.grad = malloc(p.n_in * sizeof(float));
    p.o = malloc(p.n_out * sizeof(float));
    p.dout = malloc(p.n_out * sizeof(float));
    const size_t step = layout == LAYOUT_PACKED ? (size_t)C : rows * p.s.ld_qkv;
    p.q = p.in, p.k = p.in + step, p.v = p.in + 2 * step;
    p.dq = p.grad, p.dk = p.grad + step, p.dv = p.grad + 2 * step;
    p.Q = malloc(p.n * sizeof(double));
    p.K = malloc(p.n * sizeof(double));
    p.V = malloc(p.n * sizeof(double));
    p.dO = malloc(p.n * sizeof(double));
    fill(p.in, p.n_in, NAN); /* padding of inputs: reading it would show */
    fill(p.dout, p.n_out, NAN);
    /* Q and K of amplitude 2 make the softmax rows far from uniform. */
    fill_heads_random(p.q, p.s.ld_qkv, &p.s, p.Q, 2.0f);
    fill_heads_random(p.k, p.s.ld_qkv, &p.s, p.K, 2.0f);
    fill_heads_random(p.v, p.s.ld_qkv, &p.s, p.V, 1.0f);
    fill_heads_random(p.dout, p.s.ld_o, &p.s, p.dO, 1.0f);
    p.bias = bias_for(mv, &p.s);
    return p;
}

static void problem_free(Problem *p) {
    free(p->in), free(p->grad), free(p->o), free(p->dout), free(p->bias);
    free(p->Q), free(p->K), free(p->V), free(p->dO);
}

/* ---- the float64 reference -------------------------------------------------------------- */

static double bias_at(const AttnShape *s, int b, int h, int i, int j) {
    const AttnMask *m = &s->mask;
    if (m->kind == ATTN_MASK_CAUSAL) return j > i ? -INFINITY : 0.0;
    if (m->kind == ATTN_MASK_DENSE)
        return m->bias[b * m->stride_b + h * m->stride_h + i * m->stride_row + j];
    return 0.0;
}

typedef struct {
    double *O, *dQ, *dK, *dV; /* logical (B, T, H, D) */
    double *L;                /* (B, H, T) log-sum-exp, +inf for a row that sees no key */
    double *P;                /* (B, H, T, T) */
} Ref;

/* O = softmax(scale Q K^T + bias) V per (b, h); with dO also the gradients:
 * dP = dO V^T, dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. */
static void reference(const AttnShape *s, const double *Q, const double *K, const double *V,
                      const double *dO, Ref *r) {
    const int B = s->B, T = s->T, H = s->H, D = s->D;
    const double scale = s->scale;
    if (dO) {
        memset(r->dQ, 0, sizeof(double) * (size_t)B * T * H * D);
        memset(r->dK, 0, sizeof(double) * (size_t)B * T * H * D);
        memset(r->dV, 0, sizeof(double) * (size_t)B * T * H * D);
    }
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            double *S = malloc(sizeof(double) * T), *dP = malloc(sizeof(double) * T);
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < D; d++)
                        dot += Q[lidx(s, b, i, h, d)] * K[lidx(s, b, j, h, d)];
                    S[j] = scale * dot + bias_at(s, b, h, i, j);
                    if (S[j] > mx) mx = S[j];
                }
                double sum = 0.0;
                for (int j = 0; j < T; j++) {
                    S[j] = mx == -INFINITY ? 0.0 : exp(S[j] - mx);
                    sum += S[j];
                }
                for (int j = 0; j < T; j++) S[j] = sum > 0 ? S[j] / sum : 0.0; /* now P */
                size_t row = ((size_t)b * H + h) * T + i;
                if (r->L) r->L[row] = sum > 0 ? mx + log(sum) : INFINITY;
                if (r->P) memcpy(r->P + row * T, S, sizeof(double) * T);
                for (int d = 0; d < D; d++) {
                    double acc = 0.0;
                    for (int j = 0; j < T; j++) acc += S[j] * V[lidx(s, b, j, h, d)];
                    r->O[lidx(s, b, i, h, d)] = acc;
                }
                if (!dO) continue;
                double rowdot = 0.0;
                for (int j = 0; j < T; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < D; d++)
                        dot += dO[lidx(s, b, i, h, d)] * V[lidx(s, b, j, h, d)];
                    dP[j] = dot;
                    rowdot += S[j] * dot;
                }
                for (int j = 0; j < T; j++) {
                    double ds = S[j] * (dP[j] - rowdot);
                    for (int d = 0; d < D; d++) {
                        r->dQ[lidx(s, b, i, h, d)] += scale * ds * K[lidx(s, b, j, h, d)];
                        r->dK[lidx(s, b, j, h, d)] += scale * ds * Q[lidx(s, b, i, h, d)];
                        r->dV[lidx(s, b, j, h, d)] += S[j] * dO[lidx(s, b, i, h, d)];
                    }
                }
            }
            free(S), free(dP);
        }
}

static Ref ref_new(const AttnShape *s) {
    size_t n = (size_t)s->B * s->T * s->H * s->D, rows = (size_t)s->B * s->H * s->T;
    Ref r = {malloc(n * sizeof(double)),    malloc(n * sizeof(double)),
             malloc(n * sizeof(double)),    malloc(n * sizeof(double)),
             malloc(rows * sizeof(double)), malloc(rows * s->T * sizeof(double))};
    return r;
}
static void ref_free(Ref *r) {
    free(r->O), free(r->dQ), free(r->dK), free(r->dV), free(r->L), free(r->P);
}

/* ---- comparing -------------------------------------------------------------------------- */

static double max_abs_d(const double *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* max |got - want| / max(max |want|, floor); INFINITY when got has a NaN or an infinity. */
static double err_scaled(const float *got, const double *want, size_t n, double floor_) {
    double worst = 0.0, mag = floor_ > 1e-30 ? floor_ : 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        double e = fabs(got[i] - want[i]);
        if (e > worst) worst = e;
        if (fabs(want[i]) > mag) mag = fabs(want[i]);
    }
    return worst / mag;
}

/* Floors for dQ and dK: the size of one term scale * |k| * |dO . v|, |dO . v| <~ sqrt(D). */
typedef struct {
    double dq, dk;
} Floors;
static Floors floors_of(const Problem *p) {
    double dov = max_abs_d(p->dO, p->n) * max_abs_d(p->V, p->n) * sqrt((double)p->s.D);
    Floors f = {p->s.scale * max_abs_d(p->K, p->n) * dov, p->s.scale * max_abs_d(p->Q, p->n) * dov};
    return f;
}

static double worst_err[ATTN_NUM_KERNELS][4]; /* O, dQ, dK, dV: the largest error seen */
static double worst_cross[4];

typedef struct {
    float *O, *dQ, *dK, *dV; /* logical copies of a kernel's results */
} Result;

static Result result_new(size_t n) {
    Result r = {malloc(n * sizeof(float)), malloc(n * sizeof(float)), malloc(n * sizeof(float)),
                malloc(n * sizeof(float))};
    return r;
}
static void result_free(Result *r) { free(r->O), free(r->dQ), free(r->dK), free(r->dV); }

/* Runs kernel k forward and backward on p with poisoned outputs and canaries around saved and
 * workspace; checks buffers, L (memeff, flash) or P (naive); fills res. Returns 0 on success. */
static int run_kernel(AttnKernel kern, Problem *p, const Ref *ref, Result *res, const char *ctx) {
    const AttnImpl *impl = attn_impl(kern, ATTN_CPU);
    const AttnShape *s = &p->s;
    const char *kn = attn_kernel_name(kern);
    CHECK(impl && impl->unsupported(s) == NULL, "%s %s: unsupported: %s", kn, ctx,
          impl ? impl->unsupported(s) : "no impl");
    if (!impl || impl->unsupported(s)) return -1;
    const size_t saved_bytes = impl->saved_bytes(s), ws_bytes = impl->workspace_bytes(s);
    const size_t canary = 16; /* floats after each buffer that must stay untouched */
    float *saved = malloc(saved_bytes + canary * sizeof(float));
    float *ws = malloc(ws_bytes + canary * sizeof(float));
    const size_t n_saved = saved_bytes / sizeof(float), n_ws = ws_bytes / sizeof(float);
    fill(saved, n_saved, NAN), fill(saved + n_saved, canary, SENTINEL);
    fill(ws, n_ws, NAN), fill(ws + n_ws, canary, SENTINEL);
    fill(p->o, p->n_out, SENTINEL), poison_heads(p->o, s->ld_o, s);
    fill(p->grad, p->n_in, SENTINEL);
    poison_heads(p->dq, s->ld_qkv, s), poison_heads(p->dk, s->ld_qkv, s),
        poison_heads(p->dv, s->ld_qkv, s);

    int rc = impl->forward(s, p->q, p->k, p->v, p->o, saved, ws_bytes ? ws : NULL, NULL);
    CHECK(rc == 0, "%s %s: forward returned %d", kn, ctx, rc);
    fill(ws, n_ws, NAN); /* workspace is scratch: backward may not rely on forward's */
    rc |= impl->backward(s, p->q, p->k, p->v, p->o, p->dout, saved, p->dq, p->dk, p->dv,
                         ws_bytes ? ws : NULL, NULL);
    CHECK(rc == 0, "%s %s: backward returned %d", kn, ctx, rc);

    int canaries = 1;
    for (size_t i = 0; i < canary; i++)
        canaries &= saved[n_saved + i] == SENTINEL && ws[n_ws + i] == SENTINEL;
    CHECK(canaries, "%s %s: wrote past saved_bytes or workspace_bytes", kn, ctx);
    CHECK(padding_intact(p->o, p->n_out, s->ld_o, s, 1), "%s %s: wrote into O's padding", kn, ctx);
    int packed = p->layout == LAYOUT_PACKED;
    CHECK(padding_intact(p->grad, p->n_in, s->ld_qkv, s, packed ? 3 : 1),
          "%s %s: wrote into the gradients' padding", kn, ctx);

    gather(p->o, s->ld_o, s, res->O);
    gather(p->dq, s->ld_qkv, s, res->dQ);
    gather(p->dk, s->ld_qkv, s, res->dK);
    gather(p->dv, s->ld_qkv, s, res->dV);
    Floors f = floors_of(p);
    double e[4] = {err_scaled(res->O, ref->O, p->n, 0), err_scaled(res->dQ, ref->dQ, p->n, f.dq),
                   err_scaled(res->dK, ref->dK, p->n, f.dk), err_scaled(res->dV, ref->dV, p->n, 0)};
    static const char *const what[4] = {"O", "dQ", "dK", "dV"};
    for (int t = 0; t < 4; t++) {
        CHECK(e[t] <= TOL, "%s %s: %s error %.3g vs double", kn, ctx, what[t], e[t]);
        if (e[t] > worst_err[kern][t]) worst_err[kern][t] = e[t];
    }

    /* The saved statistics follow the contract: P for naive, L for memeff and flash. */
    const size_t rows = (size_t)s->B * s->H * s->T;
    if (kern == ATTN_NAIVE) {
        double pe = 0.0;
        for (size_t i = 0; i < rows * s->T; i++) {
            double d = isfinite(saved[i]) ? fabs(saved[i] - ref->P[i]) : INFINITY;
            if (d > pe) pe = d;
        }
        CHECK(pe <= TOL, "%s %s: saved P error %.3g", kn, ctx, pe);
    } else {
        int ok = 1;
        for (size_t i = 0; i < rows; i++) {
            if (isinf(ref->L[i]))
                ok &= isinf(saved[i]) && saved[i] > 0;
            else
                ok &= fabs(saved[i] - ref->L[i]) <= TOL * fmax(1.0, fabs(ref->L[i]));
        }
        CHECK(ok, "%s %s: saved L differs from the log-sum-exp", kn, ctx);
    }
    free(saved), free(ws);
    return rc;
}

/* fp32 against fp32: the other kernels against naive. */
static void cross_check(const Problem *p, const Result *a, const Result *b, const char *ctx) {
    double *tmp = malloc(p->n * sizeof(double));
    const float *x[4] = {a->O, a->dQ, a->dK, a->dV}, *y[4] = {b->O, b->dQ, b->dK, b->dV};
    Floors f = floors_of(p);
    double fl[4] = {0, f.dq, f.dk, 0};
    for (int t = 0; t < 4; t++) {
        for (size_t i = 0; i < p->n; i++) tmp[i] = x[t][i];
        double e = err_scaled(y[t], tmp, p->n, fl[t]);
        CHECK(e <= TOL, "%s: kernels disagree on tensor %d: %.3g", ctx, t, e);
        if (e > worst_cross[t]) worst_cross[t] = e;
    }
    free(tmp);
}

/* ---- the sweep -------------------------------------------------------------------------- */

static void sweep_one(int B, int T, int H, int D, MaskVariant mv, Layout layout) {
    char ctx[160];
    snprintf(ctx, sizeof ctx, "B=%d T=%d H=%d D=%d mask=%s layout=%s", B, T, H, D, mv_names[mv],
             layout_names[layout]);
    Problem p = problem_new(B, T, H, D, mv, layout);
    Ref ref = ref_new(&p.s);
    reference(&p.s, p.Q, p.K, p.V, p.dO, &ref);
    Result res[ATTN_NUM_KERNELS];
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        res[k] = result_new(p.n);
        run_kernel((AttnKernel)k, &p, &ref, &res[k], ctx);
    }
    for (int k = 1; k < ATTN_NUM_KERNELS; k++) cross_check(&p, &res[0], &res[k], ctx);
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) result_free(&res[k]);
    ref_free(&ref);
    problem_free(&p);
}

static void test_sweep(void) {
    static const int Ds[] = {32, 64, 128}, Ts[] = {1, 7, 64, 130}, BHs[][2] = {{1, 1}, {2, 3}};
    int n = 0;
    for (int di = 0; di < 3; di++)
        for (int ti = 0; ti < 4; ti++)
            for (int bi = 0; bi < 2; bi++)
                for (int mv = 0; mv < NUM_MV; mv++, n++)
                    sweep_one(BHs[bi][0], Ts[ti], BHs[bi][1], Ds[di], (MaskVariant)mv,
                              (Layout)(n % NUM_LAYOUTS));
    /* Awkward head sizes and lengths: D = 1 and 24, T around the tile sizes, longer T. */
    static const int odd[][4] = {
        {3, 33, 1, 1}, {1, 97, 5, 24}, {2, 65, 2, 8}, {1, 129, 1, 16}, {1, 300, 2, 64}};
    for (int c = 0; c < 5; c++)
        for (int mv = 0; mv < NUM_MV; mv++, n++)
            sweep_one(odd[c][0], odd[c][1], odd[c][2], odd[c][3], (MaskVariant)mv,
                      (Layout)(n % NUM_LAYOUTS));
    /* The longest sequence the CPU trainer's tests use. */
    sweep_one(1, 1024, 1, 64, MV_CAUSAL, LAYOUT_PACKED);
    sweep_one(1, 1024, 1, 64, MV_SHARED, LAYOUT_SEPARATE);
}

/* ---- fully masked rows and heads -------------------------------------------------------- */

static void test_fully_masked(void) {
    const int B = 2, T = 37, H = 3, D = 32;
    Problem p = problem_new(B, T, H, D, MV_NONE, LAYOUT_SEPARATE);
    /* per-head bias shared over batches: head 0 entirely -inf, head 1 row 5 -inf */
    float *bias = malloc((size_t)H * T * T * sizeof(float));
    for (int h = 0; h < H; h++)
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++)
                bias[((size_t)h * T + i) * T + j] =
                    (h == 0 || (h == 1 && i == 5)) ? -INFINITY : 0.5f * test_randf(&rng);
    p.bias = bias;
    p.s.mask = (AttnMask){.kind = ATTN_MASK_DENSE, .bias = bias, .stride_h = (long long)T * T, .stride_row = T};
    Ref ref = ref_new(&p.s);
    reference(&p.s, p.Q, p.K, p.V, p.dO, &ref);
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        Result r = result_new(p.n);
        run_kernel((AttnKernel)k, &p, &ref, &r, "fully masked rows");
        int zeros = 1;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++) {
                    size_t h0 = lidx(&p.s, b, t, 0, d), h1 = lidx(&p.s, b, 5, 1, d);
                    zeros &= r.O[h0] == 0.0f && r.dQ[h0] == 0.0f && r.dK[h0] == 0.0f &&
                             r.dV[h0] == 0.0f && r.O[h1] == 0.0f && r.dQ[h1] == 0.0f;
                }
        CHECK(zeros, "%s: a fully -inf row must give O = 0 and zero gradients",
              attn_kernel_name((AttnKernel)k));
        result_free(&r);
    }
    ref_free(&ref);
    problem_free(&p);
}

/* ---- finite differences ----------------------------------------------------------------- */

static double loss_of(const Problem *p, const double *R, Ref *r) {
    reference(&p->s, p->Q, p->K, p->V, NULL, r);
    double loss = 0.0;
    for (size_t i = 0; i < p->n; i++) loss += r->O[i] * R[i];
    return loss;
}

/* d loss / d x[i] for loss = sum(O * R), x one of the double inputs, central differences. */
static double numeric_grad(Problem *p, double *x, size_t i, const double *R, Ref *r) {
    const double h = 1e-5, x0 = x[i];
    x[i] = x0 + h;
    double up = loss_of(p, R, r);
    x[i] = x0 - h;
    double down = loss_of(p, R, r);
    x[i] = x0;
    return (up - down) / (2 * h);
}

static void test_finite_differences(MaskVariant mv) {
    const int B = 2, T = 9, H = 2, D = 5;
    Problem p = problem_new(B, T, H, D, mv, LAYOUT_PACKED);
    Ref ref = ref_new(&p.s);
    reference(&p.s, p.Q, p.K, p.V, p.dO, &ref); /* dout = R: the loss's gradient wrt O */
    Ref scratch = ref_new(&p.s);
    double *inputs[3] = {p.Q, p.K, p.V}, *ref_grads[3] = {ref.dQ, ref.dK, ref.dV};
    static const char *const names[3] = {"Q", "K", "V"};
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        Result r = result_new(p.n);
        run_kernel((AttnKernel)k, &p, &ref, &r, "finite differences");
        float *grads[3] = {r.dQ, r.dK, r.dV};
        for (int t = 0; t < 3; t++) {
            double mag = 0.0;
            for (size_t i = 0; i < p.n; i++) mag = fmax(mag, fabs(grads[t][i]));
            double worst_kernel = 0.0, worst_ref = 0.0;
            for (int e = 0; e < 6; e++) {
                size_t i = test_rng_next(&rng) % p.n;
                double fd = numeric_grad(&p, inputs[t], i, p.dO, &scratch);
                worst_kernel = fmax(worst_kernel, fabs(grads[t][i] - fd) / fmax(mag, 1e-3));
                worst_ref = fmax(worst_ref, fabs(ref_grads[t][i] - fd) / fmax(mag, 1e-3));
            }
            CHECK(worst_kernel <= TOL, "%s %s d%s: analytic vs finite differences %.3g",
                  attn_kernel_name((AttnKernel)k), mv_names[mv], names[t], worst_kernel);
            CHECK(worst_ref <= 1e-8, "reference %s d%s: vs finite differences %.3g", mv_names[mv],
                  names[t], worst_ref);
        }
        result_free(&r);
    }
    ref_free(&scratch);
    ref_free(&ref);
    problem_free(&p);
}

/* ---- the mask family and GQA ------------------------------------------------------------ *
 * Shapes with K/V of Hkv heads in the packed GQA layout (plus 3 floats of row padding), every
 * optional piece of the mask (window, documents, key padding, ALiBi, a bias with any kind and
 * broadcast strides, its gradient), against a float64 reference that spells out attention.h's
 * formula term by term. dbias starts random (backward adds into it) and is compared whole. */

typedef enum { BIAS_NONE, BIAS_SHARED, BIAS_PER_HEAD, BIAS_KEY_ROW, BIAS_FULL, NUM_BIAS } BiasMode;
static const char *const bias_names[NUM_BIAS] = {"-", "shared", "per-head", "key-row", "full"};
typedef enum { PAD_NONE, PAD_LEFT, PAD_RIGHT, PAD_BOTH } PadMode;

typedef struct {
    int B, T, H, Hkv, D;
    AttnMaskKind kind;
    BiasMode bias;
    int dbias, window, docs, alibi;
    PadMode pad;
} MCase;

typedef struct {
    MCase c;
    AttnShape s;
    size_t n_in, n_out, nq, nkv, n_bias;
    float *in, *grad, *o, *dout, *q, *k, *v, *dq, *dk, *dv;
    float *bias, *dbias, *slopes;
    double *dbias0; /* dbias before backward */
    int *doc, *kb, *ke;
    double *Q, *K, *V, *dO; /* logical (B, T, heads, D) */
} MProb;

static size_t hidx(int T, int nh, int D, int b, int t, int h, int d) {
    return (((size_t)b * T + t) * nh + h) * D + d;
}

/* masked(i, j) exactly as attention.h writes it. */
static int ref_masked(const AttnShape *s, int b, int i, int j) {
    const AttnMask *m = &s->mask;
    const int causal = m->kind == ATTN_MASK_CAUSAL, T = s->T;
    return (causal && j > i) ||
           (m->window > 0 && (causal ? j <= i - m->window : abs(i - j) >= m->window)) ||
           (m->doc && m->doc[b * T + i] != m->doc[b * T + j]) ||
           (m->key_end && (j < m->key_begin[b] || j >= m->key_end[b]));
}

static long long bias_index(const AttnMask *m, int b, int h, int i, int j) {
    return b * m->stride_b + h * m->stride_h + i * m->stride_row + j;
}

/* Random document starts for sequence b (some documents of length 1), through
 * attn_doc_from_starts. */
static void make_docs(int B, int T, int *doc) {
    int *starts = malloc(sizeof(int) * (size_t)B * (T + 1)), *offsets = malloc(sizeof(int) * (B + 1));
    int n = 0;
    for (int b = 0; b < B; b++) {
        offsets[b] = n;
        int t = (b % 2) ? 0 : 1 + (int)(test_rng_next(&rng) % 3); /* odd b: explicit 0 */
        if (t >= T) t = 0;
        if (t == 0) starts[n++] = 0, t = 1 + (int)(test_rng_next(&rng) % 3);
        else starts[n++] = t, t += 1; /* a length-1 document right after the implicit first */
        while (t < T) {
            starts[n++] = t;
            t += 1 + (int)(test_rng_next(&rng) % (uint64_t)(T / 3 + 2));
        }
    }
    offsets[B] = n;
    int rc = attn_doc_from_starts(B, T, starts, offsets, doc);
    CHECK(rc == 0, "attn_doc_from_starts on valid starts returned %d", rc);
    free(starts), free(offsets);
}

static MProb mprob_new(MCase c) {
    MProb p;
    memset(&p, 0, sizeof p);
    p.c = c;
    const int B = c.B, T = c.T, H = c.H, Hkv = c.Hkv, D = c.D, C = H * D;
    p.s = attn_shape_packed_gqa(B, T, H, Hkv, D, c.kind, ATTN_FP32);
    p.s.ld_qkv += 3, p.s.ld_o = C + 1;
    const int ld = p.s.ld_qkv;
    const size_t rows = (size_t)B * T;
    p.n_in = rows * ld, p.n_out = rows * p.s.ld_o, p.nq = rows * C, p.nkv = rows * Hkv * D;
    p.in = malloc(p.n_in * sizeof(float)), p.grad = malloc(p.n_in * sizeof(float));
    p.o = malloc(p.n_out * sizeof(float)), p.dout = malloc(p.n_out * sizeof(float));
    p.q = p.in, p.k = p.in + C, p.v = p.in + C + Hkv * D;
    p.dq = p.grad, p.dk = p.grad + C, p.dv = p.grad + C + Hkv * D;
    p.Q = malloc(p.nq * sizeof(double)), p.dO = malloc(p.nq * sizeof(double));
    p.K = malloc(p.nkv * sizeof(double)), p.V = malloc(p.nkv * sizeof(double));
    fill(p.in, p.n_in, NAN), fill(p.dout, p.n_out, NAN);
    float *dst[4] = {p.q, p.k, p.v, p.dout};
    double *copy[4] = {p.Q, p.K, p.V, p.dO};
    const int nh[4] = {H, Hkv, Hkv, H}, lds[4] = {ld, ld, ld, p.s.ld_o};
    const float amp[4] = {2.0f, 2.0f, 1.0f, 1.0f};
    for (int x = 0; x < 4; x++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int h = 0; h < nh[x]; h++)
                    for (int d = 0; d < D; d++) {
                        float val = amp[x] * test_randf(&rng);
                        dst[x][((size_t)b * T + t) * lds[x] + (size_t)h * D + d] = val;
                        copy[x][hidx(T, nh[x], D, b, t, h, d)] = val;
                    }
    AttnMask *m = &p.s.mask;
    m->window = c.window;
    if (c.docs) {
        p.doc = malloc(sizeof(int) * rows);
        make_docs(B, T, p.doc);
        m->doc = p.doc;
    }
    if (c.pad != PAD_NONE) {
        p.kb = malloc(sizeof(int) * B), p.ke = malloc(sizeof(int) * B);
        for (int b = 0; b < B; b++) {
            int lo = 0, hi = T;
            if (c.pad == PAD_LEFT || c.pad == PAD_BOTH) lo = (int)(test_rng_next(&rng) % (uint64_t)(T / 2 + 1));
            if (c.pad == PAD_RIGHT || c.pad == PAD_BOTH) hi = T - (int)(test_rng_next(&rng) % (uint64_t)(T / 2 + 1));
            if (hi <= lo) hi = lo + 1 <= T ? lo + 1 : T;
            if (c.pad == PAD_BOTH && b == B - 1 && B > 2) lo = hi = T / 2; /* no key at all */
            p.kb[b] = lo, p.ke[b] = hi;
        }
        m->key_begin = p.kb, m->key_end = p.ke;
    }
    if (c.alibi) {
        p.slopes = malloc(sizeof(float) * H);
        attn_alibi_slopes(H, p.slopes);
        m->alibi_slopes = p.slopes;
    }
    if (c.bias != BIAS_NONE) {
        switch (c.bias) {
        case BIAS_SHARED: m->stride_b = 0, m->stride_h = 0, m->stride_row = T; break;
        case BIAS_PER_HEAD: m->stride_b = 0, m->stride_h = (long long)T * (T + 2), m->stride_row = T + 2; break;
        case BIAS_KEY_ROW: m->stride_b = T, m->stride_h = 0, m->stride_row = 0; break;
        default: m->stride_b = (long long)H * T * T, m->stride_h = (long long)T * T, m->stride_row = T;
        }
        p.n_bias = (size_t)((B - 1) * m->stride_b + (H - 1) * m->stride_h + (T - 1) * m->stride_row + T);
        p.bias = malloc(p.n_bias * sizeof(float));
        fill(p.bias, p.n_bias, NAN); /* row padding of the per-head layout: never read */
        p.dbias = malloc(p.n_bias * sizeof(float));
        p.dbias0 = malloc(p.n_bias * sizeof(double));
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < T; i++)
                    for (int j = 0; j < T; j++) {
                        long long at = bias_index(m, b, h, i, j);
                        float val = test_randf(&rng);
                        if (test_randf(&rng) > 0.8f) val = -INFINITY; /* ~10% masked by the bias */
                        /* A full bias has one entry per score: where the structural masks hide
                         * the key it must not be read (NaN shows it). */
                        if (c.bias == BIAS_FULL && ref_masked(&p.s, b, i, j)) val = NAN;
                        p.bias[at] = val;
                    }
        for (size_t x = 0; x < p.n_bias; x++) {
            p.dbias[x] = 0.5f * test_randf(&rng); /* never zero: backward adds into it */
            p.dbias0[x] = p.dbias[x];
        }
        m->bias = p.bias;
        if (c.dbias) m->dbias = p.dbias;
    }
    return p;
}

static void mprob_free(MProb *p) {
    free(p->in), free(p->grad), free(p->o), free(p->dout), free(p->bias), free(p->dbias);
    free(p->dbias0), free(p->slopes), free(p->doc), free(p->kb), free(p->ke);
    free(p->Q), free(p->K), free(p->V), free(p->dO);
}

typedef struct {
    double *O, *dQ, *dK, *dV, *dbias; /* dbias: dbias0 plus the gradient (NULL without bias) */
} MRef;

/* attention.h's formula, in double, one score at a time. */
static void mreference(const MProb *p, MRef *r) {
    const AttnShape *s = &p->s;
    const AttnMask *m = &s->mask;
    const int B = s->B, T = s->T, H = s->H, Hkv = p->c.Hkv, D = s->D, group = H / Hkv;
    memset(r->dQ, 0, p->nq * sizeof(double));
    memset(r->dK, 0, p->nkv * sizeof(double));
    memset(r->dV, 0, p->nkv * sizeof(double));
    if (r->dbias) memcpy(r->dbias, p->dbias0, p->n_bias * sizeof(double));
    double *S = malloc(sizeof(double) * T), *dP = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / group;
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    if (ref_masked(s, b, i, j)) {
                        S[j] = -INFINITY;
                        continue;
                    }
                    double dot = 0.0;
                    for (int d = 0; d < D; d++)
                        dot += p->Q[hidx(T, H, D, b, i, h, d)] * p->K[hidx(T, Hkv, D, b, j, g, d)];
                    S[j] = (double)s->scale * dot;
                    if (m->bias) S[j] += m->bias[bias_index(m, b, h, i, j)];
                    if (m->alibi_slopes) S[j] -= (double)m->alibi_slopes[h] * abs(i - j);
                    if (S[j] > mx) mx = S[j];
                }
                double sum = 0.0;
                for (int j = 0; j < T; j++) sum += S[j] = mx == -INFINITY ? 0.0 : exp(S[j] - mx);
                for (int j = 0; j < T; j++) S[j] = sum > 0 ? S[j] / sum : 0.0;
                for (int d = 0; d < D; d++) {
                    double acc = 0.0;
                    for (int j = 0; j < T; j++) acc += S[j] * p->V[hidx(T, Hkv, D, b, j, g, d)];
                    r->O[hidx(T, H, D, b, i, h, d)] = acc;
                }
                double rowdot = 0.0;
                for (int j = 0; j < T; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < D; d++)
                        dot += p->dO[hidx(T, H, D, b, i, h, d)] * p->V[hidx(T, Hkv, D, b, j, g, d)];
                    dP[j] = dot;
                    rowdot += S[j] * dot;
                }
                for (int j = 0; j < T; j++) {
                    const double ds = S[j] * (dP[j] - rowdot);
                    if (r->dbias && S[j] != 0.0) r->dbias[bias_index(m, b, h, i, j)] += ds;
                    for (int d = 0; d < D; d++) {
                        r->dQ[hidx(T, H, D, b, i, h, d)] += s->scale * ds * p->K[hidx(T, Hkv, D, b, j, g, d)];
                        r->dK[hidx(T, Hkv, D, b, j, g, d)] += s->scale * ds * p->Q[hidx(T, H, D, b, i, h, d)];
                        r->dV[hidx(T, Hkv, D, b, j, g, d)] += S[j] * p->dO[hidx(T, H, D, b, i, h, d)];
                    }
                }
            }
        }
    free(S), free(dP);
}

static MRef mref_new(const MProb *p) {
    MRef r = {malloc(p->nq * sizeof(double)), malloc(p->nq * sizeof(double)),
              malloc(p->nkv * sizeof(double)), malloc(p->nkv * sizeof(double)),
              p->s.mask.dbias ? malloc(p->n_bias * sizeof(double)) : NULL};
    return r;
}
static void mref_free(MRef *r) { free(r->O), free(r->dQ), free(r->dK), free(r->dV), free(r->dbias); }

typedef struct {
    float *O, *dQ, *dK, *dV, *dbias; /* logical copies; dbias as laid out */
} MRes;

static MRes mres_new(const MProb *p) {
    MRes r = {malloc(p->nq * sizeof(float)), malloc(p->nq * sizeof(float)),
              malloc(p->nkv * sizeof(float)), malloc(p->nkv * sizeof(float)),
              malloc((p->n_bias ? p->n_bias : 1) * sizeof(float))};
    return r;
}
static void mres_free(MRes *r) { free(r->O), free(r->dQ), free(r->dK), free(r->dV), free(r->dbias); }

static void gather_heads(const float *x, int ld, int B, int T, int nh, int D, float *out) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++)
                for (int d = 0; d < D; d++)
                    out[hidx(T, nh, D, b, t, h, d)] = x[((size_t)b * T + t) * ld + (size_t)h * D + d];
}
static void poison_cols(float *x, size_t rows, int ld, int col0, int ncols) {
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < ncols; c++) x[r * ld + col0 + c] = NAN;
}

static void mcase_name(const MCase *c, char *buf, size_t n) {
    static const char *const pads[] = {"-", "left", "right", "both"};
    snprintf(buf, n, "B=%d T=%d H=%d Hkv=%d D=%d kind=%s bias=%s%s window=%d docs=%d pad=%s alibi=%d",
             c->B, c->T, c->H, c->Hkv, c->D, attn_mask_name(c->kind), bias_names[c->bias],
             c->dbias ? "+grad" : "", c->window, c->docs, pads[c->pad], c->alibi);
}

/* Kernel k forward and backward on p with every output poisoned; copies results into res. */
static int mrun(AttnKernel kern, MProb *p, MRes *res, const char *ctx) {
    const AttnImpl *impl = attn_impl(kern, ATTN_CPU);
    const AttnShape *s = &p->s;
    const char *kn = attn_kernel_name(kern), *why = impl->unsupported(s);
    CHECK(why == NULL, "%s %s: unsupported: %s", kn, ctx, why ? why : "");
    if (why) return -1;
    const int B = s->B, T = s->T, H = s->H, Hkv = p->c.Hkv, D = s->D, C = H * D;
    const size_t rows = (size_t)B * T;
    const size_t n_saved = impl->saved_bytes(s) / sizeof(float), n_ws = impl->workspace_bytes(s) / sizeof(float);
    float *saved = malloc((n_saved + 1) * sizeof(float)), *ws = malloc((n_ws + 1) * sizeof(float));
    fill(saved, n_saved, NAN), fill(ws, n_ws, NAN);
    fill(p->o, p->n_out, SENTINEL), poison_cols(p->o, rows, s->ld_o, 0, C);
    fill(p->grad, p->n_in, SENTINEL), poison_cols(p->grad, rows, s->ld_qkv, 0, C + 2 * Hkv * D);
    if (p->dbias)
        for (size_t x = 0; x < p->n_bias; x++) p->dbias[x] = (float)p->dbias0[x];
    float *bias_copy = NULL;
    if (p->bias) {
        bias_copy = malloc(p->n_bias * sizeof(float));
        memcpy(bias_copy, p->bias, p->n_bias * sizeof(float));
    }
    int rc = impl->forward(s, p->q, p->k, p->v, p->o, saved, n_ws ? ws : NULL, NULL);
    CHECK(rc == 0, "%s %s: forward returned %d", kn, ctx, rc);
    fill(ws, n_ws, NAN);
    rc |= impl->backward(s, p->q, p->k, p->v, p->o, p->dout, saved, p->dq, p->dk, p->dv,
                         n_ws ? ws : NULL, NULL);
    CHECK(rc == 0, "%s %s: backward returned %d", kn, ctx, rc);
    CHECK(padding_intact(p->o, p->n_out, s->ld_o, s, 1), "%s %s: wrote into O's padding", kn, ctx);
    int pad_ok = 1;
    for (size_t r = 0; r < rows; r++)
        for (int c = C + 2 * Hkv * D; c < s->ld_qkv; c++) pad_ok &= p->grad[r * s->ld_qkv + c] == SENTINEL;
    CHECK(pad_ok, "%s %s: wrote into the gradients' padding", kn, ctx);
    if (bias_copy) {
        CHECK(memcmp(bias_copy, p->bias, p->n_bias * sizeof(float)) == 0, "%s %s: bias modified", kn, ctx);
        if (!s->mask.dbias) { /* a constant bias: the buffer that could hold dbias is untouched */
            int same = 1;
            for (size_t x = 0; x < p->n_bias; x++) same &= p->dbias[x] == (float)p->dbias0[x];
            CHECK(same, "%s %s: wrote a gradient for a constant bias", kn, ctx);
        }
    }
    free(bias_copy);
    gather_heads(p->o, s->ld_o, B, T, H, D, res->O);
    gather_heads(p->dq, s->ld_qkv, B, T, H, D, res->dQ);
    gather_heads(p->dk, s->ld_qkv, B, T, Hkv, D, res->dK);
    gather_heads(p->dv, s->ld_qkv, B, T, Hkv, D, res->dV);
    if (p->dbias) memcpy(res->dbias, p->dbias, p->n_bias * sizeof(float));
    free(saved), free(ws);
    return rc;
}

static double worst_mask_err[ATTN_NUM_KERNELS][5];
static int mask_cases_run = 0;

/* Errors of res against ref: O, dQ, dK, dV, dbias, each scaled as run_kernel's are. */
static void mcompare(const MProb *p, const MRes *res, const MRef *ref, AttnKernel kern, const char *ctx) {
    const double dov = max_abs_d(p->dO, p->nq) * max_abs_d(p->V, p->nkv) * sqrt((double)p->s.D);
    const double fq = p->s.scale * max_abs_d(p->K, p->nkv) * dov, fk = p->s.scale * max_abs_d(p->Q, p->nq) * dov;
    double e[5] = {err_scaled(res->O, ref->O, p->nq, 0), err_scaled(res->dQ, ref->dQ, p->nq, fq),
                   err_scaled(res->dK, ref->dK, p->nkv, fk), err_scaled(res->dV, ref->dV, p->nkv, 0), 0};
    if (ref->dbias) {
        /* dbias holds dbias0 + dS: the error of dS (one term of size <= dov) against the
         * magnitude of the gradient itself */
        double worst = 0.0, mag = dov;
        for (size_t x = 0; x < p->n_bias; x++) {
            if (isnan(p->bias[x]) && res->dbias[x] == (float)p->dbias0[x]) continue; /* never read */
            double got = res->dbias[x] - p->dbias0[x], want = ref->dbias[x] - p->dbias0[x];
            double err = isfinite(res->dbias[x]) ? fabs(got - want) : INFINITY;
            worst = fmax(worst, err);
            mag = fmax(mag, fabs(want));
        }
        e[4] = worst / mag;
    }
    static const char *const what[5] = {"O", "dQ", "dK", "dV", "dbias"};
    for (int t = 0; t < 5; t++) {
        CHECK(e[t] <= TOL, "%s %s: %s error %.3g vs double", attn_kernel_name(kern), ctx, what[t], e[t]);
        if (e[t] > worst_mask_err[kern][t]) worst_mask_err[kern][t] = e[t];
    }
}

static void mask_case(MCase c) {
    char ctx[256];
    mcase_name(&c, ctx, sizeof ctx);
    MProb p = mprob_new(c);
    MRef ref = mref_new(&p);
    mreference(&p, &ref);
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        MRes res = mres_new(&p);
        if (mrun((AttnKernel)k, &p, &res, ctx) == 0) mcompare(&p, &res, &ref, (AttnKernel)k, ctx);
        mres_free(&res);
    }
    mask_cases_run++;
    mref_free(&ref);
    mprob_free(&p);
}

static void test_mask_family(void) {
    /* {B, T, H, Hkv, D}: T = 1, odd, around and not multiples of the tiles (16/64, 32/64) */
    static const int shapes[][5] = {{1, 1, 1, 1, 32},  {2, 7, 2, 2, 64},  {1, 33, 4, 2, 32},
                                    {3, 97, 2, 1, 16}, {2, 130, 4, 2, 8}, {1, 70, 4, 1, 128},
                                    {2, 65, 1, 1, 64}};
    const int ns = sizeof shapes / sizeof shapes[0];
    const AttnMaskKind N = ATTN_MASK_NONE, CA = ATTN_MASK_CAUSAL, DE = ATTN_MASK_DENSE;
    for (int si = 0; si < ns; si++) {
        const int *sh = shapes[si], T = sh[1];
        MCase base = {sh[0], T, sh[2], sh[3], sh[4], N, BIAS_NONE, 0, 0, 0, 0, PAD_NONE};
#define CASE(...)                                                                                  \
    do {                                                                                           \
        MCase c = base;                                                                            \
        __VA_ARGS__;                                                                               \
        mask_case(c);                                                                              \
    } while (0)
        const int windows[] = {1, 3, T + 5};
        for (int w = 0; w < 3; w++) {
            CASE(c.window = windows[w]);                          /* window alone */
            CASE(c.kind = CA; c.window = windows[w]);             /* causal + window */
        }
        CASE(c.kind = CA);                                        /* GQA, causal only */
        CASE(c.docs = 1);                                         /* documents alone */
        CASE(c.kind = CA; c.docs = 1);                            /* causal + documents */
        CASE(c.alibi = 1);                                        /* ALiBi alone */
        CASE(c.kind = CA; c.alibi = 1);                           /* ALiBi + causal */
        CASE(c.kind = CA; c.alibi = 1; c.docs = 1);               /* ALiBi + causal + documents */
        CASE(c.kind = CA; c.bias = BIAS_SHARED);                  /* dense + causal */
        CASE(c.kind = CA; c.bias = BIAS_FULL; c.dbias = 1);       /* dense + causal, gradient */
        CASE(c.kind = N; c.bias = BIAS_PER_HEAD; c.dbias = 1);    /* a bias with NONE */
        CASE(c.kind = DE; c.bias = BIAS_SHARED; c.dbias = 1);     /* dbias summed over b and h */
        CASE(c.kind = DE; c.bias = BIAS_KEY_ROW; c.dbias = 1);    /* ... over h and rows */
        CASE(c.kind = DE; c.bias = BIAS_FULL; c.window = 2);      /* dense + window */
        CASE(c.pad = PAD_LEFT);                                   /* key padding left */
        CASE(c.pad = PAD_RIGHT);                                  /* key padding right */
        CASE(c.kind = CA; c.pad = PAD_LEFT);
        CASE(c.kind = CA; c.pad = PAD_BOTH; c.docs = 1);
        CASE(c.kind = CA; c.window = 4; c.docs = 1; c.pad = PAD_BOTH; c.alibi = 1;  /* everything */
             c.bias = BIAS_PER_HEAD; c.dbias = 1);
        CASE(c.kind = N; c.window = T / 3 + 1; c.docs = 1; c.pad = PAD_RIGHT; c.alibi = 1;
             c.bias = BIAS_SHARED; c.dbias = 1);
#undef CASE
    }
}

/* A structural mask and the same mask given as a dense -inf bias compute the same thing. */
static void test_structural_equals_bias(void) {
    static const MCase cases[] = {
        {2, 97, 2, 2, 32, ATTN_MASK_NONE, BIAS_NONE, 0, 5, 0, 0, PAD_NONE},   /* window */
        {2, 97, 2, 2, 32, ATTN_MASK_CAUSAL, BIAS_NONE, 0, 7, 0, 0, PAD_NONE}, /* causal window */
        {3, 70, 2, 1, 16, ATTN_MASK_NONE, BIAS_NONE, 0, 0, 1, 0, PAD_NONE},   /* documents */
        {3, 70, 2, 1, 16, ATTN_MASK_CAUSAL, BIAS_NONE, 0, 0, 1, 0, PAD_BOTH}, /* causal docs pad */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        char ctx[256];
        mcase_name(&cases[ci], ctx, sizeof ctx);
        MProb p = mprob_new(cases[ci]);
        const AttnShape structural = p.s;
        const int B = p.s.B, T = p.s.T;
        float *bias = malloc(sizeof(float) * B * T * T);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++)
                    bias[((size_t)b * T + i) * T + j] = ref_masked(&structural, b, i, j) ? -INFINITY : 0.0f;
        AttnShape dense = p.s;
        dense.mask = (AttnMask){.kind = ATTN_MASK_DENSE, .bias = bias, .stride_b = (long long)T * T,
                                .stride_row = T};
        for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
            MRes a = mres_new(&p), d = mres_new(&p);
            p.s = structural;
            mrun((AttnKernel)k, &p, &a, ctx);
            p.s = dense;
            mrun((AttnKernel)k, &p, &d, ctx);
            double e = 0.0;
            const float *x[4] = {a.O, a.dQ, a.dK, a.dV}, *y[4] = {d.O, d.dQ, d.dK, d.dV};
            const size_t n[4] = {p.nq, p.nq, p.nkv, p.nkv};
            for (int t = 0; t < 4; t++) e = fmax(e, test_max_err_scaled(x[t], y[t], n[t]));
            CHECK(e <= TOL, "%s %s: structural mask vs the same as a -inf bias: %.3g",
                  attn_kernel_name((AttnKernel)k), ctx, e);
            mres_free(&a), mres_free(&d);
        }
        p.s = structural;
        free(bias);
        mprob_free(&p);
    }
}

/* GQA equals plain multi-head attention on K/V repeated over each group: the same O and dQ,
 * and dK, dV of a K/V head equal to the sums over its group of the repeated run's. */
static void test_gqa_equals_repeat(void) {
    static const MCase cases[] = {
        {2, 45, 4, 2, 32, ATTN_MASK_CAUSAL, BIAS_NONE, 0, 0, 0, 0, PAD_NONE},
        {1, 70, 4, 1, 64, ATTN_MASK_NONE, BIAS_NONE, 0, 9, 1, 1, PAD_RIGHT},
        {2, 33, 6, 3, 16, ATTN_MASK_CAUSAL, BIAS_SHARED, 1, 0, 1, 0, PAD_LEFT},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        MCase c = cases[ci], cr = c;
        cr.Hkv = c.H;
        char ctx[256];
        mcase_name(&c, ctx, sizeof ctx);
        MProb g = mprob_new(c);
        MProb r = mprob_new(cr); /* the same pieces; g's data and masks are copied into it */
        const int B = c.B, T = c.T, H = c.H, Hkv = c.Hkv, D = c.D, group = H / Hkv, C = H * D;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const float *gr = g.in + ((size_t)b * T + t) * g.s.ld_qkv;
                float *rr = r.in + ((size_t)b * T + t) * r.s.ld_qkv;
                memcpy(rr, gr, sizeof(float) * C); /* q */
                for (int h = 0; h < H; h++) {
                    memcpy(rr + C + h * D, gr + C + (h / group) * D, sizeof(float) * D);
                    memcpy(rr + 2 * C + h * D, gr + C + Hkv * D + (h / group) * D, sizeof(float) * D);
                }
                memcpy(r.dout + ((size_t)b * T + t) * r.s.ld_o, g.dout + ((size_t)b * T + t) * g.s.ld_o,
                       sizeof(float) * C);
            }
        if (c.docs) memcpy(r.doc, g.doc, sizeof(int) * B * T);
        if (c.pad) memcpy(r.kb, g.kb, sizeof(int) * B), memcpy(r.ke, g.ke, sizeof(int) * B);
        if (c.bias) {
            memcpy(r.bias, g.bias, sizeof(float) * g.n_bias);
            memcpy(r.dbias0, g.dbias0, sizeof(double) * g.n_bias);
        }
        for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
            MRes a = mres_new(&g), b2 = mres_new(&r);
            mrun((AttnKernel)k, &g, &a, ctx);
            mrun((AttnKernel)k, &r, &b2, ctx);
            float *sumk = calloc(g.nkv, sizeof(float)), *sumv = calloc(g.nkv, sizeof(float));
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    for (int h = 0; h < H; h++)
                        for (int d = 0; d < D; d++) {
                            size_t to = hidx(T, Hkv, D, b, t, h / group, d), from = hidx(T, H, D, b, t, h, d);
                            sumk[to] += b2.dK[from];
                            sumv[to] += b2.dV[from];
                        }
            double e[5] = {test_max_err_scaled(a.O, b2.O, g.nq), test_max_err_scaled(a.dQ, b2.dQ, g.nq),
                           test_max_err_scaled(a.dK, sumk, g.nkv), test_max_err_scaled(a.dV, sumv, g.nkv),
                           c.dbias ? test_max_err_scaled(a.dbias, b2.dbias, g.n_bias) : 0.0};
            for (int t = 0; t < 5; t++)
                CHECK(e[t] <= TOL, "%s %s: GQA vs repeated K/V, tensor %d: %.3g",
                      attn_kernel_name((AttnKernel)k), ctx, t, e[t]);
            free(sumk), free(sumv);
            mres_free(&a), mres_free(&b2);
        }
        mprob_free(&g), mprob_free(&r);
    }
}

/* dbias against finite differences of the double reference (itself checked against them). */
static void test_dbias_finite_differences(void) {
    MCase c = {2, 9, 2, 1, 5, ATTN_MASK_CAUSAL, BIAS_SHARED, 1, 6, 1, 1, PAD_RIGHT};
    MProb p = mprob_new(c);
    /* No -inf in this bias: every entry of a visible score has a gradient to check. */
    for (size_t x = 0; x < p.n_bias; x++) p.bias[x] = 0.7f * test_randf(&rng);
    MRef ref = mref_new(&p), scratch = mref_new(&p);
    mreference(&p, &ref);
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        MRes res = mres_new(&p);
        mrun((AttnKernel)k, &p, &res, "dbias finite differences");
        double mag = 0.0, worst_k = 0.0, worst_r = 0.0;
        for (size_t x = 0; x < p.n_bias; x++) mag = fmax(mag, fabs(ref.dbias[x] - p.dbias0[x]));
        for (size_t x = 0; x < p.n_bias; x++) {
            const float b0 = p.bias[x];
            const double h = 1e-3; /* loss = sum(O * dO); the bias is fp32, so a step it holds */
            double loss[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                p.bias[x] = (float)(b0 + (sgn ? -h : h));
                mreference(&p, &scratch);
                loss[sgn] = 0.0;
                for (size_t i = 0; i < p.nq; i++) loss[sgn] += scratch.O[i] * p.dO[i];
            }
            const double step = (double)(float)(b0 + h) - (double)(float)(b0 - h);
            p.bias[x] = b0;
            const double fd = (loss[0] - loss[1]) / step;
            worst_k = fmax(worst_k, fabs((res.dbias[x] - p.dbias0[x]) - fd) / fmax(mag, 1e-3));
            worst_r = fmax(worst_r, fabs((ref.dbias[x] - p.dbias0[x]) - fd) / fmax(mag, 1e-3));
        }
        CHECK(worst_k <= 1e-4, "%s: dbias vs finite differences %.3g", attn_kernel_name((AttnKernel)k), worst_k);
        CHECK(worst_r <= 1e-5, "reference dbias vs finite differences %.3g", worst_r);
        mres_free(&res);
    }
    mref_free(&ref), mref_free(&scratch);
    mprob_free(&p);
}

/* The helpers of attention.h and the checks of the new pieces. */
static void test_mask_helpers(void) {
    AttnShape s = attn_shape_packed_gqa(2, 16, 8, 2, 32, ATTN_MASK_CAUSAL, ATTN_FP32);
    CHECK(s.Hkv == 2 && s.ld_qkv == (8 + 4) * 32 && s.ld_o == 256 && attn_kv_heads(&s) == 2,
          "attn_shape_packed_gqa");
    AttnShape plain = attn_shape_packed(2, 16, 8, 32, ATTN_MASK_CAUSAL, ATTN_FP32);
    CHECK(attn_kv_heads(&plain) == 8, "Hkv = 0 means H");

    float one = 0.0f, slopes[8];
    int ints[2] = {0, 1};
    AttnMask m = {.kind = ATTN_MASK_DENSE, .bias = &one};
    CHECK(!attn_mask_has_extras(&m), "dense with a constant bias has no extras");
    m.kind = ATTN_MASK_CAUSAL, m.bias = NULL;
    CHECK(!attn_mask_has_extras(&m), "causal has no extras");
    AttnMask extras[7];
    for (int i = 0; i < 7; i++) extras[i] = m;
    extras[0].window = 3, extras[1].doc = ints, extras[2].key_end = ints, extras[3].key_begin = ints;
    extras[4].alibi_slopes = slopes, extras[5].bias = &one;
    extras[6].kind = ATTN_MASK_DENSE, extras[6].bias = &one, extras[6].dbias = &one;
    for (int i = 0; i < 7; i++) CHECK(attn_mask_has_extras(&extras[i]), "extra %d seen", i);

    attn_alibi_slopes(8, slopes);
    int ok = 1;
    for (int h = 0; h < 8; h++) ok &= slopes[h] == ldexpf(1.0f, -(h + 1));
    CHECK(ok, "ALiBi slopes of 8 heads are 1/2 .. 1/256");
    attn_alibi_slopes(4, slopes);
    CHECK(slopes[0] == 0.25f && slopes[3] == 1.0f / 256, "ALiBi slopes of 4 heads");

    /* starts 0, 3, 4 for sequence 0; none for 1 (one document); 2 (position 0 implied) for 2 */
    const int starts[] = {0, 3, 4, 2}, offsets[] = {0, 3, 3, 4};
    int doc[3 * 6];
    CHECK(attn_doc_from_starts(3, 6, starts, offsets, doc) == 0, "attn_doc_from_starts");
    const int want[] = {0, 0, 0, 3, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2};
    CHECK(memcmp(doc, want, sizeof want) == 0, "attn_doc_from_starts values");
    const int bad1[] = {0, 6}, bad2[] = {0, 3, 3}, bad3[] = {-1}, o2[] = {0, 2}, o3[] = {0, 3}, o1[] = {0, 1};
    CHECK(attn_doc_from_starts(1, 6, bad1, o2, doc) == -1, "a start >= T rejected");
    CHECK(attn_doc_from_starts(1, 6, bad2, o3, doc) == -1, "repeated start rejected");
    CHECK(attn_doc_from_starts(1, 6, bad3, o1, doc) == -1, "negative start rejected");

    fprintf(stderr, "(the error lines below are expected)\n");
    float buf[4096] = {1.0f};
    int decreasing[8] = {0, 0, 2, 2, 1, 1, 1, 1};
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        const AttnImpl *impl = attn_impl((AttnKernel)k, ATTN_CPU);
        const char *kn = attn_kernel_name((AttnKernel)k);
        AttnShape good = attn_shape_packed_gqa(1, 8, 4, 2, 8, ATTN_MASK_CAUSAL, ATTN_FP32);
        CHECK(impl->unsupported(&good) == NULL, "%s: GQA supported", kn);
        AttnShape bad[5];
        for (int i = 0; i < 5; i++) bad[i] = good;
        bad[0].Hkv = 3;               /* does not divide H */
        bad[1].mask.window = -1;
        bad[2].mask.doc = decreasing; /* decreasing */
        bad[3].mask.dbias = buf;      /* a gradient without a bias */
        bad[4].mask.bias = buf, bad[4].mask.stride_h = -1;
        for (int i = 0; i < 5; i++) {
            CHECK(impl->unsupported(&bad[i]) != NULL, "%s: bad mask shape %d accepted", kn, i);
            CHECK(impl->forward(&bad[i], buf, buf, buf, buf + 2048, buf + 1024, buf + 3072, NULL) != 0,
                  "%s: forward ran bad mask shape %d", kn, i);
        }
    }
    /* The CUDA impls refuse every new piece until they implement it (nothing ignored). */
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        const AttnImpl *cuda = attn_impl((AttnKernel)k, ATTN_CUDA);
        if (!cuda) continue;
        AttnShape g = attn_shape_packed_gqa(1, 64, 4, 2, 64, ATTN_MASK_CAUSAL, ATTN_BF16);
        CHECK(cuda->unsupported(&g) != NULL, "cuda %s refuses GQA", attn_kernel_name((AttnKernel)k));
        for (int i = 0; i < 7; i++) {
            AttnShape e = attn_shape_packed(1, 64, 4, 64, ATTN_MASK_CAUSAL, ATTN_BF16);
            e.mask = extras[i];
            CHECK(cuda->unsupported(&e) != NULL, "cuda %s refuses extra %d", attn_kernel_name((AttnKernel)k), i);
        }
    }
}

/* ---- names, tables, bad input ----------------------------------------------------------- */

static void test_names_and_tables(void) {
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        AttnKernel back = ATTN_AUTO;
        CHECK(attn_kernel_from_name(attn_kernel_name((AttnKernel)k), &back) == 0 && back == k,
              "kernel name round trip %d", k);
        const AttnImpl *impl = attn_impl((AttnKernel)k, ATTN_CPU);
        CHECK(impl && impl->kernel == k && impl->place == ATTN_CPU, "cpu impl of kernel %d", k);
        const AttnImpl *cuda = attn_impl((AttnKernel)k, ATTN_CUDA);
        CHECK(!cuda || (cuda->kernel == k && cuda->place == ATTN_CUDA), "cuda impl %d", k);
    }
    CHECK(strcmp(attn_kernel_names_list(), "naive, memeff, flash, flash-sm90, flash-mma, cudnn, flash-tma") == 0,
          "kernel names list: %s", attn_kernel_names_list());
    {
        char list[256] = "";
        for (int i = 0; i < ATTN_NUM_IMPLS; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     attn_kernel_name((AttnKernel)i));
        CHECK(strcmp(list, attn_kernel_names_list()) == 0, "names list follows the registry");
    }
    AttnKernel k = ATTN_NAIVE;
    CHECK(attn_kernel_from_name("auto", &k) == 0 && k == ATTN_AUTO, "\"auto\" parses");
    CHECK(strcmp(attn_kernel_name(ATTN_AUTO), "auto") == 0, "ATTN_AUTO is named auto");
    CHECK(attn_kernel_from_name("flash2", &k) == -1, "unknown kernel name rejected");
    CHECK(attn_kernel_from_name(NULL, &k) == -1, "NULL kernel name rejected");
    for (int m = 0; m < ATTN_NUM_MASKS; m++) {
        AttnMaskKind back = ATTN_NUM_MASKS;
        CHECK(attn_mask_from_name(attn_mask_name((AttnMaskKind)m), &back) == 0 &&
                  back == (AttnMaskKind)m,
              "mask name round trip %d", m);
    }
    AttnMaskKind mk;
    CHECK(attn_mask_from_name("causall", &mk) == -1, "unknown mask name rejected");
    CHECK(strcmp(attn_dtype_name(ATTN_FP32), "fp32") == 0 &&
              strcmp(attn_dtype_name(ATTN_BF16), "bf16") == 0 &&
              strcmp(attn_dtype_name(ATTN_FP16), "fp16") == 0 &&
              strcmp(attn_dtype_name(ATTN_NUM_DTYPES), "unknown") == 0,
          "dtype names");
    CHECK(attn_impl(ATTN_AUTO, ATTN_CPU) == NULL && attn_impl(ATTN_NUM_IMPLS, ATTN_CPU) == NULL,
          "attn_impl rejects kernels outside the table");
    /* the flash variants are CUDA's: none on the CPU, where flash resolves to itself */
    CHECK(attn_impl(ATTN_FLASH_SM90, ATTN_CPU) == NULL && attn_impl(ATTN_FLASH_MMA, ATTN_CPU) == NULL &&
              attn_impl(ATTN_FLASH_TMA, ATTN_CPU) == NULL,
          "no flash-sm90 / flash-mma / flash-tma on the CPU");
    CHECK(attn_kernel_from_name("flash-mma", &k) == 0 && k == ATTN_FLASH_MMA &&
              attn_kernel_from_name("flash-sm90", &k) == 0 && k == ATTN_FLASH_SM90 &&
              attn_kernel_from_name("flash-tma", &k) == 0 && k == ATTN_FLASH_TMA,
          "the flash variants parse by name");
    CHECK(attn_kernel_from_name("cudnn", &k) == 0 && k == ATTN_CUDNN && attn_impl(ATTN_CUDNN, ATTN_CPU) == NULL,
          "cudnn parses by name and has no CPU implementation");
    CHECK(attn_kernel_is_variant(ATTN_FLASH_SM90) && attn_kernel_is_variant(ATTN_FLASH_MMA) &&
              attn_kernel_is_variant(ATTN_FLASH_TMA) && !attn_kernel_is_variant(ATTN_FLASH) && !attn_kernel_is_variant(ATTN_CUDNN) &&
              !attn_kernel_is_variant(ATTN_AUTO),
          "flash-sm90, flash-mma and flash-tma are variants (of flash); cudnn is not");

    AttnShape s = attn_shape_packed(4, 64, 4, 64, ATTN_MASK_CAUSAL, ATTN_FP32);
    CHECK(s.ld_qkv == 3 * 256 && s.ld_o == 256 && fabsf(s.scale - 0.125f) < 1e-7f &&
              s.mask.kind == ATTN_MASK_CAUSAL && s.mask.bias == NULL && s.dtype == ATTN_FP32,
          "attn_shape_packed fills GPT-2's layout");
    CHECK(attn_resolve_auto(&s, ATTN_CPU) == ATTN_FLASH, "auto on the CPU is flash");
    CHECK(attn_resolve(ATTN_FLASH, &s, ATTN_CPU) == ATTN_FLASH && attn_resolve(ATTN_AUTO, &s, ATTN_CPU) == ATTN_FLASH &&
              attn_resolve(ATTN_NAIVE, &s, ATTN_CPU) == ATTN_NAIVE,
          "on the CPU, flash and auto resolve to flash, naive to itself");
    AttnShape bf = s;
    bf.dtype = ATTN_BF16;
    CHECK(attn_resolve_auto(&bf, ATTN_CPU) == ATTN_FLASH,
          "auto on the CPU is flash even where no CPU kernel runs (its unsupported() says why)");
    int any_cuda = 0;
    for (int i = 0; i < ATTN_NUM_KERNELS; i++)
        any_cuda |= attn_impl((AttnKernel)i, ATTN_CUDA) != NULL;
    AttnKernel cuda_auto = attn_resolve_auto(&s, ATTN_CUDA);
    CHECK(any_cuda ? cuda_auto >= 0 : cuda_auto == ATTN_AUTO,
          "auto on CUDA picks an existing kernel (or none in a CPU-only build)");

    /* saved and workspace sizes of the contract */
    const size_t bht = 4 * 4 * 64 * sizeof(float);
    CHECK(attn_impl(ATTN_NAIVE, ATTN_CPU)->saved_bytes(&s) == bht * 64, "naive saves P");
    CHECK(attn_impl(ATTN_MEMEFF, ATTN_CPU)->saved_bytes(&s) == bht, "memeff saves L");
    CHECK(attn_impl(ATTN_FLASH, ATTN_CPU)->saved_bytes(&s) == bht, "flash saves L");
}

static void test_bad_input(void) {
    float buf[3 * 2 * 4 * 8] = {0}, out[2 * 4 * 8], saved[4096], ws[4096];
    fprintf(stderr, "(the error lines below are expected)\n");
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        const AttnImpl *impl = attn_impl((AttnKernel)k, ATTN_CPU);
        const char *kn = attn_kernel_name((AttnKernel)k);
        AttnShape good = attn_shape_packed(1, 4, 2, 8, ATTN_MASK_CAUSAL, ATTN_FP32);
        CHECK(impl->unsupported(&good) == NULL, "%s: a good shape is supported", kn);
        CHECK(impl->unsupported(NULL) != NULL, "%s: NULL shape", kn);
        AttnShape bad[9];
        for (int i = 0; i < 9; i++) bad[i] = good;
        bad[0].dtype = ATTN_BF16;
        bad[7].dtype = ATTN_FP16; /* the CPU kernels are fp32 only */
        bad[8].dtype = ATTN_NUM_DTYPES;
        bad[1].T = 0;
        bad[2].ld_qkv = 15;
        bad[3].mask.kind = ATTN_MASK_DENSE; /* no bias */
        bad[4].mask.kind = (AttnMaskKind)7;
        bad[5].mask = (AttnMask){.kind = ATTN_MASK_DENSE, .bias = buf, .stride_row = -1};
        bad[6].D = -3;
        for (int i = 0; i < 9; i++) {
            CHECK(impl->unsupported(&bad[i]) != NULL, "%s: bad shape %d accepted", kn, i);
            CHECK(impl->forward(&bad[i], buf, buf + 16, buf + 32, out, saved, ws, NULL) != 0,
                  "%s: forward ran bad shape %d", kn, i);
        }
        CHECK(impl->forward(&good, NULL, buf + 16, buf + 32, out, saved, ws, NULL) != 0,
              "%s: forward with NULL q", kn);
        CHECK(impl->backward(&good, buf, buf + 16, buf + 32, out, out, saved, NULL, buf, buf, ws,
                             NULL) != 0,
              "%s: backward with NULL dq", kn);
        CHECK(impl->forward(NULL, buf, buf + 16, buf + 32, out, saved, ws, NULL) != 0,
              "%s: forward with NULL shape", kn);
    }
    const AttnImpl *flash = attn_impl(ATTN_FLASH, ATTN_CPU);
    AttnShape good = attn_shape_packed(1, 4, 2, 8, ATTN_MASK_NONE, ATTN_FP32);
    CHECK(flash->backward(&good, buf, buf + 16, buf + 32, out, out, saved, buf, buf, buf, NULL,
                          NULL) != 0,
          "flash backward needs its workspace");
}

int main(void) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    test_names_and_tables();
    test_bad_input();
    test_sweep();
    test_fully_masked();
    for (int mv = 0; mv < NUM_MV; mv++) test_finite_differences((MaskVariant)mv);
    test_mask_helpers();
    test_mask_family();
    test_structural_equals_bias();
    test_gqa_equals_repeat();
    test_dbias_finite_differences();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    static const char *const what[4] = {"O", "dQ", "dK", "dV"};
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        printf("%-7s worst error vs double:", attn_kernel_name((AttnKernel)k));
        for (int t = 0; t < 4; t++) printf("  %s %.2e", what[t], worst_err[k][t]);
        printf("\n");
    }
    static const char *const mwhat[5] = {"O", "dQ", "dK", "dV", "dbias"};
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        printf("%-7s mask family (%d cases), worst vs double:", attn_kernel_name((AttnKernel)k),
               mask_cases_run);
        for (int t = 0; t < 5; t++) printf("  %s %.2e", mwhat[t], worst_mask_err[k][t]);
        printf("\n");
    }
    printf("kernels vs naive, worst:");
    for (int t = 0; t < 4; t++) printf("  %s %.2e", what[t], worst_cross[t]);
    printf("\n%.1f s\n", (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec));
    return test_summary("test_attention_cpu");
}
