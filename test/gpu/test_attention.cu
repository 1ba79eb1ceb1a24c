/* test/gpu/test_attention.cu: every CUDA attention kernel x dtype x mask x head dimension x
 * awkward T against a float64 CPU reference: the forward output and the three gradients.
 *
 *   fp32 kernels: max|x - ref| / (max|ref| + 1e-2) < 1e-4 (AttnShape::tf32 = 0, exact fp32).
 *   fp32 with tf32 = 1 (memeff's TF32 tensor-core kernels): the same criterion as bf16 below, with
 *   a plain TF32 computation as the reference: inputs, P and dS rounded to TF32 (10 stored mantissa
 *   bits, unit roundoff u = 2^-11, round to nearest as cvt.rna) before their products, fp32 sums,
 *   fp32 outputs; bound 2x its error + u/2 = 2^-12 (bf16's 1e-3 is its u/2 = 2^-10, about 1e-3).
 *   Extra fp32-only problems draw inputs with all 24 bits (not TF32-exact), so that the inputs'
 *   rounding is exercised too; a transposed or misplaced fragment gives O(1) errors on this
 *   non-symmetric data (D = 64 and 128, T not a multiple of any tile).
 *   bf16 and fp16 kernels: FlashAttention's criterion. A plain computation in that type (inputs in
 *   it, fp32 arithmetic, P and dS rounded to it before their products, outputs rounded to it) has
 *   some error against float64; the kernel's error must be <= 2x that + 1e-3. Each 16-bit dtype has
 *   its own plain reference (bf16 rounds to 8 significant bits, fp16 to 11). Every kernel is held to
 *   it, naive too: it keeps S and dP in fp32 and rounds only P and dS (a standard attention that
 *   also rounds S and dP, as llm.c's does, has 2-5x this error).
 * Inputs are fresh random numbers that bf16 and fp16 both represent exactly (bf16 values, those
 * below fp16's normal range 2^-14 flushed to 0), so every dtype sees the same function. Outputs
 * are poisoned with NaN before every call (all bytes 0xff: NaN in fp32, bf16 and fp16), so an
 * unwritten element fails. Forward is run twice and must be bitwise identical; so
 * must backward for kernels that claim determinism (naive, memeff).
 * Layout: GPT-2's packed qkv (B, T, C + 2 Hkv D), K/V with Hkv heads (GQA where Hkv < H); o (B, T, C).
 * Cases: every mask piece (window, documents, key padding, ALiBi, a dense bias with any kind and
 * its gradient, summed over broadcast dimensions) and GQA, alone and combined; a kernel whose
 * unsupported() refuses a case is counted as skipped. The workspace is poisoned before forward
 * and again before backward (nothing may pass between them through it); T up to 2100 runs
 * naive in several query-row chunks, the last one ragged.
 */
#include <cuda_runtime.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "attention/attention.h"
#include "attention/attention_cuda.h"
#include "attention/flash_sm90.h"
#include "test/test.h"


#define CUDA_OK(call)                                                                        \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                    \
                    cudaGetErrorString(e_));                                                 \
            exit(2);                                                                         \
        }                                                                                    \
    } while (0)

/* ---- bf16 on the host (round to nearest even) ------------------------------------------- */
static uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float bf16_value(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}
static float round_bf16(float x) { return bf16_value(bf16_bits(x)); }

/* ---- fp16 on the host (round to nearest even; subnormals; >= 65520 -> inf) ---------------- */
static uint16_t fp16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return 0x7e00;                    /* NaN */
    if (u >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* |x| >= 65520: inf */
    if (u < 0x38800000u) {                                 /* below 2^-14: a multiple of 2^-24 */
        float a;
        memcpy(&a, &u, 4);
        return (uint16_t)(sign | (uint16_t)nearbyint((double)a * 16777216.0)); /* 1024: the least normal */
    }
    u += 0xfffu + ((u >> 13) & 1u);                        /* round the 13 dropped bits, ties to even */
    return (uint16_t)(sign | ((u - 0x38000000u) >> 13));   /* rebias the exponent 127 -> 15 */
}
static float fp16_value(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float a = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(1024 + m), e - 25);
    return h & 0x8000 ? -a : a;
}
static float round_fp16(float x) { return fp16_value(fp16_bits(x)); }

/* ---- TF32 on the host: 10 stored mantissa bits, round to nearest, ties away (cvt.rna) ------- */
static float round_tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return x; /* inf, NaN */
    u = (u + 0x1000u) & 0xffffe000u;
    memcpy(&x, &u, 4);
    return x;
}

/* The rounding a reference applies to P, dS and its outputs: none (the float64 one), bf16 or fp16;
 * TF32 rounds the inputs, P and dS (the products' operands) and not the outputs (fp32). */
enum Rounding { ROUND_NONE, ROUND_BF16, ROUND_FP16, ROUND_TF32 };
static float round_to(Rounding r, float x) {
    return r == ROUND_BF16 ? round_bf16(x) : r == ROUND_FP16 ? round_fp16(x) : r == ROUND_TF32 ? round_tf32(x) : x;
}
/* An input value both bf16 and fp16 hold exactly: bf16's 8 significant bits, and 0 below 2^-14,
 * where fp16 (subnormal there) could not hold all 8. */
static float round_both(float x) {
    float b = round_bf16(x);
    return fabsf(b) < 6.103515625e-05f ? 0.0f : b;
}

/* ---- one problem: shape, inputs, references ---------------------------------------------- */
/* bias: none, one T x T matrix for everything, one per (b, h), one per head shared by the batch */
enum { BIAS_NONE, BIAS_BROADCAST, BIAS_PER_HEAD, BIAS_HEAD_SHARED };

struct Problem {
    int B, T, H, Hkv, D, C, ld;              /* ld = C + 2 Hkv D: the packed qkv row */
    AttnMaskKind mask;
    int bias_kind;
    bool dbias;                              /* the bias is learnable: check its gradient */
    float scale;
    std::vector<float> qkv, dout, bias;      /* host, bf16- and fp16-representable (bias: any float) */
    std::vector<double> o64, dqkv64, db64;   /* float64 reference */
    std::vector<float> o16, dqkv16, db16;    /* plain bf16 reference */
    std::vector<float> oh, dqkvh, dbh;       /* plain fp16 reference */
    std::vector<float> otf, dqkvtf, dbtf;    /* plain TF32 reference */
    /* GQA: the plain bf16 / fp16 references again with each query head's dK, dV rounded to the
     * type before the group's sum (as a kernel computes that writes per-head dK, dV in 16 bits and
     * sums them: cuDNN's, below); empty unless needed */
    std::vector<float> dqkv16g, dqkvhg;
    bool fp32_inputs = false;                /* inputs with 24 bits: only the fp32 kernels run */
    long long sb, sh, srow;                  /* bias strides */
    /* the mask pieces beyond kind (attention.h), when `extras` asks for them */
    int extras = 0, window = 0;
    std::vector<int> doc, kb, ke;            /* (B, T) document starts; (B) valid keys [kb, ke) */
    std::vector<float> slopes;               /* (H) ALiBi */
};
enum { X_WINDOW = 1, X_DOCS = 2, X_KEYPAD = 4, X_ALIBI = 8 };

/* The additive term of score (b, h, i, j) beyond scale q.k: -inf where masked, else
 * bias - slope |i - j| (attention.h). */
static float bias_at(const Problem &p, int b, int h, int i, int j) {
    bool causal = p.mask == ATTN_MASK_CAUSAL;
    if (causal && j > i) return -INFINITY;
    if (p.window > 0 && (causal ? j <= i - p.window : abs(i - j) >= p.window)) return -INFINITY;
    if (!p.doc.empty() && p.doc[(size_t)b * p.T + i] != p.doc[(size_t)b * p.T + j]) return -INFINITY;
    if (!p.kb.empty() && (j < p.kb[b] || j >= p.ke[b])) return -INFINITY;
    float x = p.slopes.empty() ? 0.0f : -p.slopes[h] * fabsf((float)(i - j));
    if (p.bias_kind != BIAS_NONE) x += p.bias[b * p.sb + h * p.sh + i * p.srow + j];
    return x;
}

/* The reference for one (b, K/V head g) and its group of query heads, in the float type R; `rd`
 * rounds P, dS and outputs (to bf16 or fp16, or not). dK, dV are summed over the group before rounding
 * (with `round_parts`: each query head's part is rounded as an output first, then summed).
 * dS_out (T x T per query head of the group, or NULL): the score gradient, for dbias. */
template <typename R>
static void reference_group(const Problem &p, int b, int g, Rounding rd, R *o, R *dqkv,
                            R *dS_out, bool round_parts) {
    int T = p.T, D = p.D, ld = p.ld, group = p.H / p.Hkv;
    auto rnd = [&](R x) { return rd != ROUND_NONE ? (R)round_to(rd, (float)x) : x; };
    /* outputs: rounded to bf16 / fp16, fp32 as they are under TF32 */
    auto rnd_out = [&](R x) { return rd != ROUND_TF32 ? rnd(x) : x; };
    /* inputs: the 16-bit types hold them exactly; TF32 rounds them (a no-op on 16-bit-exact data) */
    auto in = [&](float x) { return rd == ROUND_TF32 ? (R)round_tf32(x) : (R)x; };
    auto k = [&](int t, int d) { return in(p.qkv[(size_t)(b * T + t) * ld + p.C + g * D + d]); };
    auto v = [&](int t, int d) { return in(p.qkv[(size_t)(b * T + t) * ld + p.C + p.Hkv * D + g * D + d]); };
    std::vector<R> P((size_t)T * T), Pr((size_t)T * T), dS((size_t)T * T);
    std::vector<R> dk_acc((size_t)T * D, 0), dv_acc((size_t)T * D, 0);
    for (int hi = 0; hi < group; hi++) {
        int h = g * group + hi;
        auto q = [&](int t, int d) { return in(p.qkv[(size_t)(b * T + t) * ld + h * D + d]); };
        auto dout = [&](int t, int d) { return in(p.dout[(size_t)(b * T + t) * p.C + h * D + d]); };
        /* rows are independent in the forward, in D and dS, and in the gradients' loop over t
         * (each t owns its dQ row and dK/dV rows): parallel over rows, the summation order per
         * element fixed (u ascending), so the result does not depend on the thread count */
#pragma omp parallel for schedule(dynamic, 16)
        for (int i = 0; i < T; i++) {
            R mx = -INFINITY;
            for (int j = 0; j < T; j++) {
                R s = 0;
                for (int d = 0; d < D; d++) s += q(i, d) * k(j, d);
                s = s * (R)p.scale + (R)bias_at(p, b, h, i, j);
                P[(size_t)i * T + j] = s;
                if (s > mx) mx = s;
            }
            R sum = 0;
            for (int j = 0; j < T; j++) {
                R e = mx == -INFINITY ? 0 : exp(P[(size_t)i * T + j] - mx);
                P[(size_t)i * T + j] = e;
                sum += e;
            }
            for (int j = 0; j < T; j++) {
                R pij = sum > 0 ? P[(size_t)i * T + j] / sum : 0;
                P[(size_t)i * T + j] = pij;
                Pr[(size_t)i * T + j] = rnd(pij);
            }
            for (int d = 0; d < D; d++) {
                R acc = 0;
                for (int j = 0; j < T; j++) acc += Pr[(size_t)i * T + j] * v(j, d);
                o[(size_t)(b * T + i) * p.C + h * D + d] = rnd_out(acc);
            }
        }
#pragma omp parallel for schedule(dynamic, 16)
        for (int i = 0; i < T; i++) {
            R Di = 0; /* rowsum(dO * O), O as the forward stored it */
            for (int d = 0; d < D; d++) Di += dout(i, d) * o[(size_t)(b * T + i) * p.C + h * D + d];
            for (int j = 0; j < T; j++) {
                R dp = 0;
                for (int d = 0; d < D; d++) dp += dout(i, d) * v(j, d);
                dS[(size_t)i * T + j] = dp;
            }
            for (int j = 0; j < T; j++)
                dS[(size_t)i * T + j] = rnd(P[(size_t)i * T + j] * (dS[(size_t)i * T + j] - Di));
        }
        if (dS_out) memcpy(dS_out + (size_t)hi * T * T, dS.data(), (size_t)T * T * sizeof(R));
#pragma omp parallel for schedule(dynamic, 16)
        for (int t = 0; t < T; t++) {
            R dq[256], dk[256], dv[256]; /* D <= 256 */
            for (int d = 0; d < D; d++) dq[d] = dk[d] = dv[d] = 0;
            for (int u = 0; u < T; u++) {
                R a = dS[(size_t)t * T + u], c = dS[(size_t)u * T + t], e = Pr[(size_t)u * T + t];
                for (int d = 0; d < D; d++) {
                    dq[d] += a * k(u, d);
                    dk[d] += c * q(u, d);
                    dv[d] += e * dout(u, d);
                }
            }
            for (int d = 0; d < D; d++) {
                dqkv[(size_t)(b * T + t) * ld + h * D + d] = rnd_out(dq[d] * (R)p.scale);
                dk_acc[(size_t)t * D + d] += round_parts ? rnd_out(dk[d] * (R)p.scale) : dk[d] * (R)p.scale;
                dv_acc[(size_t)t * D + d] += round_parts ? rnd_out(dv[d]) : dv[d];
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) {
            R *row = dqkv + (size_t)(b * T + t) * ld;
            row[p.C + g * D + d] = rnd_out(dk_acc[(size_t)t * D + d]);
            row[p.C + p.Hkv * D + g * D + d] = rnd_out(dv_acc[(size_t)t * D + d]);
        }
}

/* All (b, g) of a problem, and dbias as the sum of dS over the bias's broadcast dimensions. */
template <typename R>
static void reference_all(const Problem &p, Rounding rd, R *o, R *dqkv, std::vector<R> &db,
                          bool round_parts = false) {
    int T = p.T, group = p.H / p.Hkv;
    std::vector<R> dS;
    if (p.dbias) dS.assign((size_t)p.B * p.H * T * T, 0);
    /* (b, K/V head) pairs in parallel where there are enough of them; otherwise each pair's rows
     * in parallel (reference_group's loops; inside this loop's threads they run serially) */
    int units = p.B * p.Hkv, threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    (void)units; /* read by the pragma only, which nvcc's front end does not see */
#pragma omp parallel for collapse(2) schedule(dynamic) if (units >= threads)
    for (int b = 0; b < p.B; b++)
        for (int g = 0; g < p.Hkv; g++)
            reference_group<R>(p, b, g, rd, o, dqkv,
                               p.dbias ? dS.data() + ((size_t)b * p.H + g * group) * T * T : nullptr,
                               round_parts);
    if (!p.dbias) return;
    db.assign(p.bias.size(), 0);
    for (int b = 0; b < p.B; b++)
        for (int h = 0; h < p.H; h++)
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++)
                    db[b * p.sb + h * p.sh + i * p.srow + j] += dS[(((size_t)b * p.H + h) * T + i) * T + j];
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

/* Which plain references the run needs (the filters in main may leave some out). */
static bool g_need_16 = true, g_need_tf32 = true, g_need_parts = true;

static void make_problem(Problem &p, int B, int T, int H, int Hkv, int D, AttnMaskKind mask, int bias_kind,
                         int extras, bool dbias, bool fp32_inputs = false) {
    p.fp32_inputs = fp32_inputs;
    p.B = B; p.T = T; p.H = H; p.Hkv = Hkv; p.D = D; p.C = H * D; p.ld = p.C + 2 * Hkv * D;
    p.mask = mask; p.bias_kind = mask == ATTN_MASK_DENSE && bias_kind == BIAS_NONE ? BIAS_BROADCAST : bias_kind;
    p.dbias = dbias && p.bias_kind != BIAS_NONE;
    p.extras = extras;
    if (extras & X_WINDOW) p.window = T > 8 ? T / 5 + 1 : 2;
    if (extras & X_DOCS) { /* random documents, one of length 1 where T allows */
        p.doc.resize((size_t)B * T);
        for (int b = 0; b < B; b++) {
            int start = 0;
            for (int t = 0; t < T; t++) {
                if (t > 0 && (test_randf(&rng) > 0.85f || t == 5 || t == 6)) start = t;
                p.doc[(size_t)b * T + t] = start;
            }
        }
    }
    if (extras & X_KEYPAD) { /* row 0: right padding; the others: left padding */
        p.kb.resize(B);
        p.ke.resize(B);
        for (int b = 0; b < B; b++) {
            p.kb[b] = b == 0 ? 0 : T / 4;
            p.ke[b] = b == 0 ? T - T / 5 : T;
        }
    }
    if (extras & X_ALIBI) {
        p.slopes.resize(H);
        for (int h = 0; h < H; h++) p.slopes[h] = powf(2.0f, -8.0f * (h + 1) / H);
    }
    p.scale = 1.0f / sqrtf((float)D);
    size_t nqkv = (size_t)B * T * p.ld, no = (size_t)B * T * p.C;
    p.qkv.resize(nqkv);
    p.dout.resize(no);
    for (size_t x = 0; x < nqkv; x++) {
        int col = (int)(x % p.ld);
        float amp = col < p.C + Hkv * D ? 2.0f : 1.0f; /* q, k larger: a peaked softmax */
        p.qkv[x] = fp32_inputs ? amp * test_randf(&rng) : round_both(amp * test_randf(&rng));
    }
    for (size_t x = 0; x < no; x++) p.dout[x] = fp32_inputs ? test_randf(&rng) : round_both(test_randf(&rng));
    p.sb = p.sh = p.srow = 0;
    if (p.bias_kind != BIAS_NONE) {
        int mats = p.bias_kind == BIAS_PER_HEAD ? B * H : p.bias_kind == BIAS_HEAD_SHARED ? H : 1;
        p.bias.resize((size_t)mats * T * T);
        for (size_t x = 0; x < p.bias.size(); x++) {
            float r = test_randf(&rng);
            p.bias[x] = r > 0.8f ? -INFINITY : 2.0f * test_randf(&rng);
        }
        /* One fully masked row: O = 0 and zero gradients there. */
        if (T > 3)
            for (int j = 0; j < T; j++) p.bias[(size_t)3 * T + j] = -INFINITY;
        p.srow = T;
        if (p.bias_kind == BIAS_PER_HEAD) { p.sh = (long long)T * T; p.sb = (long long)H * T * T; }
        if (p.bias_kind == BIAS_HEAD_SHARED) p.sh = (long long)T * T;
    }
    p.o64.assign(no, 0.0);
    p.dqkv64.assign(nqkv, 0.0);
    p.o16.assign(no, 0.0f);
    p.dqkv16.assign(nqkv, 0.0f);
    p.oh.assign(no, 0.0f);
    p.dqkvh.assign(nqkv, 0.0f);
    p.otf.assign(no, 0.0f);
    p.dqkvtf.assign(nqkv, 0.0f);
    reference_all<double>(p, ROUND_NONE, p.o64.data(), p.dqkv64.data(), p.db64);
    if (g_need_16 && !fp32_inputs) {
        reference_all<float>(p, ROUND_BF16, p.o16.data(), p.dqkv16.data(), p.db16);
        reference_all<float>(p, ROUND_FP16, p.oh.data(), p.dqkvh.data(), p.dbh);
        if (Hkv < H && g_need_parts) {
            std::vector<float> o(no), db;
            p.dqkv16g.assign(nqkv, 0.0f);
            p.dqkvhg.assign(nqkv, 0.0f);
            reference_all<float>(p, ROUND_BF16, o.data(), p.dqkv16g.data(), db, true);
            reference_all<float>(p, ROUND_FP16, o.data(), p.dqkvhg.data(), db, true);
        }
    }
    if (g_need_tf32) reference_all<float>(p, ROUND_TF32, p.otf.data(), p.dqkvtf.data(), p.dbtf);
}

/* max|x - ref| / (max|ref| + 1e-2) over the elements of one tensor: `cols` columns from col0 of
 * rows of `ld` elements (qkv's parts, or o), or n contiguous elements (dbias: ld = cols = n, one row). */
struct Err { double o, dq, dk, dv, db; };
template <typename X, typename Y>
static double tensor_err(const X *x, const Y *ref, long long rows, int ld, int col0, int cols) {
    double worst = 0, mag = 0;
    for (long long r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t at = (size_t)r * ld + col0 + c;
            double a = (double)x[at], e = (double)ref[at];
            if (isnan(a)) return INFINITY;
            if (isinf(e) || isinf(a)) { if (a != e) return INFINITY; continue; }
            worst = fmax(worst, fabs(a - e));
            mag = fmax(mag, fabs(e));
        }
    return worst / (mag + 1e-2);
}
template <typename X, typename Y>
static Err errors(const Problem &p, const X *o, const X *dqkv, const X *db, const Y *ref_o, const Y *ref_dqkv,
                  const Y *ref_db) {
    Err e;
    long long rows = (long long)p.B * p.T;
    int kv = p.Hkv * p.D;
    e.o = tensor_err(o, ref_o, rows, p.C, 0, p.C);
    e.dq = tensor_err(dqkv, ref_dqkv, rows, p.ld, 0, p.C);
    e.dk = tensor_err(dqkv, ref_dqkv, rows, p.ld, p.C, kv);
    e.dv = tensor_err(dqkv, ref_dqkv, rows, p.ld, p.C + kv, kv);
    e.db = p.dbias ? tensor_err(db, ref_db, 1, (int)p.bias.size(), 0, (int)p.bias.size()) : 0.0;
    return e;
}

/* ---- running one kernel on one problem ------------------------------------------------------ */
struct DevBufs {
    void *qkv = nullptr, *dout = nullptr, *o = nullptr, *dqkv = nullptr, *saved = nullptr,
         *ws = nullptr;
    float *bias = nullptr;
};

static int n_skipped = 0;

static size_t elem_bytes(AttnDtype dt) { return dt == ATTN_FP32 ? 4 : 2; }
static void upload(const std::vector<float> &h, AttnDtype dt, void *d) {
    if (dt == ATTN_FP32) {
        CUDA_OK(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    } else {
        std::vector<uint16_t> t(h.size());
        for (size_t i = 0; i < h.size(); i++) t[i] = dt == ATTN_FP16 ? fp16_bits(h[i]) : bf16_bits(h[i]);
        CUDA_OK(cudaMemcpy(d, t.data(), t.size() * 2, cudaMemcpyHostToDevice));
    }
}
static std::vector<double> download(const void *d, size_t n, AttnDtype dt) {
    std::vector<double> out(n);
    if (dt == ATTN_FP32) {
        std::vector<float> t(n);
        CUDA_OK(cudaMemcpy(t.data(), d, n * 4, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) out[i] = t[i];
    } else {
        std::vector<uint16_t> t(n);
        CUDA_OK(cudaMemcpy(t.data(), d, n * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) out[i] = dt == ATTN_FP16 ? fp16_value(t[i]) : bf16_value(t[i]);
    }
    return out;
}
static std::vector<uint8_t> bytes_of(const void *d, size_t n) {
    std::vector<uint8_t> out(n);
    CUDA_OK(cudaMemcpy(out.data(), d, n, cudaMemcpyDeviceToHost));
    return out;
}

/* main's filters: only this kernel (its registry name) / this dtype ("fp32", "bf16", "fp16" or "tf32") */
static const char *g_kernel = NULL, *g_dtype = NULL;

static void run_case(const Problem &p, const AttnImpl *impl, AttnDtype dt, Err ref16, const char *variant = "",
                     int tf32 = 0, bool unaligned = false) {
    /* (ref16: the plain reference's error in dt (bf16 or fp16), or TF32's with tf32, that this
     * kernel is held to) */
    if (g_kernel && strcmp(g_kernel, attn_kernel_name(impl->kernel))) return;
    if (g_dtype && strcmp(g_dtype, tf32 ? "tf32" : attn_dtype_name(dt))) return;
    AttnShape s;
    memset(&s, 0, sizeof s);
    s.tf32 = tf32;
    s.B = p.B; s.T = p.T; s.H = p.H; s.D = p.D;
    s.Hkv = p.Hkv;
    s.scale = p.scale;
    s.ld_qkv = p.ld; s.ld_o = p.C;
    s.mask.kind = p.mask;
    s.dtype = dt;
    const char *kname = attn_kernel_name(impl->kernel);
    const char *mname = p.mask == ATTN_MASK_NONE ? "none" : p.mask == ATTN_MASK_CAUSAL ? "causal" : "dense";
    const char *bname = p.bias_kind == BIAS_NONE ? "" : p.bias_kind == BIAS_PER_HEAD ? "+bias/head"
                        : p.bias_kind == BIAS_HEAD_SHARED ? "+bias/shared" : "+bias/bcast";
    char tag[240];
    snprintf(tag, sizeof tag, "%s%s %s %s%s%s%s%s%s%s%s B=%d H=%d Hkv=%d T=%d D=%d", kname, variant,
             attn_dtype_name(dt), mname, bname, p.dbias ? "+dbias" : "",
             p.extras & X_WINDOW ? "+window" : "", p.extras & X_DOCS ? "+docs" : "",
             p.extras & X_KEYPAD ? "+keypad" : "", p.extras & X_ALIBI ? "+alibi" : "",
             p.Hkv != p.H ? " gqa" : "", p.B, p.H, p.Hkv, p.T, p.D);

    DevBufs d;
    /* the extras on the device (the kernels read them there) */
    int *d_doc = nullptr, *d_kb = nullptr, *d_ke = nullptr;
    float *d_slopes = nullptr, *d_dbias = nullptr;
    s.mask.window = p.window;
    if (!p.doc.empty()) {
        CUDA_OK(cudaMalloc(&d_doc, p.doc.size() * 4));
        CUDA_OK(cudaMemcpy(d_doc, p.doc.data(), p.doc.size() * 4, cudaMemcpyHostToDevice));
        s.mask.doc = d_doc;
    }
    if (!p.kb.empty()) {
        CUDA_OK(cudaMalloc(&d_kb, p.kb.size() * 4));
        CUDA_OK(cudaMalloc(&d_ke, p.ke.size() * 4));
        CUDA_OK(cudaMemcpy(d_kb, p.kb.data(), p.kb.size() * 4, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(d_ke, p.ke.data(), p.ke.size() * 4, cudaMemcpyHostToDevice));
        s.mask.key_begin = d_kb;
        s.mask.key_end = d_ke;
    }
    if (!p.slopes.empty()) {
        CUDA_OK(cudaMalloc(&d_slopes, p.slopes.size() * 4));
        CUDA_OK(cudaMemcpy(d_slopes, p.slopes.data(), p.slopes.size() * 4, cudaMemcpyHostToDevice));
        s.mask.alibi_slopes = d_slopes;
    }
    if (p.bias_kind != BIAS_NONE) {
        CUDA_OK(cudaMalloc(&d.bias, p.bias.size() * 4));
        CUDA_OK(cudaMemcpy(d.bias, p.bias.data(), p.bias.size() * 4, cudaMemcpyHostToDevice));
        s.mask.bias = d.bias;
        s.mask.stride_b = p.sb; s.mask.stride_h = p.sh; s.mask.stride_row = p.srow;
    }
    if (p.dbias) {
        CUDA_OK(cudaMalloc(&d_dbias, p.bias.size() * 4));
        s.mask.dbias = d_dbias;
    }
    struct FreeExtras {
        void *a, *b, *c, *e, *f;
        ~FreeExtras() { cudaFree(a); cudaFree(b); cudaFree(c); cudaFree(e); cudaFree(f); }
    } free_extras = {d_doc, d_kb, d_ke, d_slopes, d_dbias};
    size_t es = elem_bytes(dt);
    size_t nqkv = p.qkv.size(), no = p.dout.size(), nb = p.bias.size();
    const char *why = impl->unsupported(&s);
    if (why) {
        n_skipped++;
        if (d.bias) cudaFree(d.bias);
        return;
    }
    /* unaligned: every tensor one element past a 256-byte boundary (the kernels' fallback for rows
     * that 16-byte loads cannot read) */
    const size_t shift = unaligned ? es : 0;
    void *base[4];
    CUDA_OK(cudaMalloc(&base[0], nqkv * es + shift));
    CUDA_OK(cudaMalloc(&base[1], nqkv * es + shift));
    CUDA_OK(cudaMalloc(&base[2], no * es + shift));
    CUDA_OK(cudaMalloc(&base[3], no * es + shift));
    d.qkv = (char *)base[0] + shift;
    d.dqkv = (char *)base[1] + shift;
    d.dout = (char *)base[2] + shift;
    d.o = (char *)base[3] + shift;
    size_t nsaved = impl->saved_bytes(&s), nws = impl->workspace_bytes(&s);
    if (nsaved) CUDA_OK(cudaMalloc(&d.saved, nsaved));
    if (nws) CUDA_OK(cudaMalloc(&d.ws, nws));
    upload(p.qkv, dt, d.qkv);
    upload(p.dout, dt, d.dout);
    size_t kv = (size_t)p.Hkv * p.D;
    const char *q = (const char *)d.qkv, *k = q + p.C * es, *v = k + kv * es;
    char *dq = (char *)d.dqkv, *dk = dq + p.C * es, *dv = dk + kv * es;

    std::vector<uint8_t> o_first, dqkv_first;
    int ok = 1;
    for (int rep = 0; rep < 2 && ok; rep++) {
        CUDA_OK(cudaMemset(d.o, 0xff, no * es));
        CUDA_OK(cudaMemset(d.dqkv, 0xff, nqkv * es));
        if (d_dbias) CUDA_OK(cudaMemset(d_dbias, 0, nb * 4)); /* backward adds into it */
        if (nsaved) CUDA_OK(cudaMemset(d.saved, 0xff, nsaved));
        if (nws) CUDA_OK(cudaMemset(d.ws, 0xff, nws));
        int rc = impl->forward(&s, q, k, v, d.o, d.saved, d.ws, NULL);
        CHECK(rc == 0, "%s: forward returned %d", tag, rc);
        if (nws) CUDA_OK(cudaMemset(d.ws, 0xff, nws));
        rc = rc ? rc : impl->backward(&s, q, k, v, d.o, d.dout, d.saved, dq, dk, dv, d.ws, NULL);
        CHECK(rc == 0, "%s: backward returned %d", tag, rc);
        cudaError_t e = cudaDeviceSynchronize();
        CHECK(e == cudaSuccess, "%s: %s", tag, cudaGetErrorString(e));
        if (rc || e != cudaSuccess) { ok = 0; break; }
        if (rep == 0) {
            o_first = bytes_of(d.o, no * es);
            dqkv_first = bytes_of(d.dqkv, nqkv * es);
            std::vector<double> o = download(d.o, no, dt), dqkv = download(d.dqkv, nqkv, dt);
            std::vector<double> db = d_dbias ? download(d_dbias, nb, ATTN_FP32) : std::vector<double>();
            Err e = errors(p, o.data(), dqkv.data(), db.data(), p.o64.data(), p.dqkv64.data(), p.db64.data());
            double got[5] = {e.o, e.dq, e.dk, e.dv, e.db}, r16[5] = {ref16.o, ref16.dq, ref16.dk, ref16.dv, ref16.db};
            const char *names[5] = {"O", "dQ", "dK", "dV", "dBias"};
            for (int x = 0; x < (p.dbias ? 5 : 4); x++) {
                double bound = tf32 ? 2.0 * r16[x] + 0x1p-12 : dt == ATTN_FP32 ? 1e-4 : 2.0 * r16[x] + 1e-3;
                CHECK(got[x] <= bound, "%s: %s error %.3g > bound %.3g (plain %s reference %.3g)", tag,
                      names[x], got[x], bound, tf32 ? "tf32" : attn_dtype_name(dt), r16[x]);
            }
        } else {
            CHECK(bytes_of(d.o, no * es) == o_first, "%s: forward not deterministic", tag);
            if (impl->kernel == ATTN_NAIVE || impl->kernel == ATTN_MEMEFF) /* flash's dQ uses atomics */
                CHECK(bytes_of(d.dqkv, nqkv * es) == dqkv_first, "%s: backward not deterministic", tag);
        }
    }
    for (void *x : base) cudaFree(x);
    cudaFree(d.saved); cudaFree(d.ws); cudaFree(d.bias);
}

static int n_problems = 0;
static void run_problem(int B, int T, int H, int Hkv, int D, AttnMaskKind mask, int bias_kind, int extras = 0,
                        bool dbias = false, bool fp32_inputs = false) {
    Problem p;
    make_problem(p, B, T, H, Hkv, D, mask, bias_kind, extras, dbias, fp32_inputs);
    n_problems++;
    /* The plain bf16, fp16 and TF32 computations' own errors against float64. */
    /* (a reference the filters left out is all zeros, its dbias empty: its cases do not run) */
    auto plain = [&](const std::vector<float> &o, const std::vector<float> &dqkv, const std::vector<float> &db) {
        if (p.dbias && db.empty()) return Err{0, 0, 0, 0, 0};
        return errors(p, o.data(), dqkv.data(), db.data(), p.o64.data(), p.dqkv64.data(), p.db64.data());
    };
    Err r16 = plain(p.o16, p.dqkv16, p.db16), rh = plain(p.oh, p.dqkvh, p.dbh), rtf = plain(p.otf, p.dqkvtf, p.dbtf);
    if (fp32_inputs) { /* 24-bit inputs: the fp32 kernels only, exact and (memeff) TF32 */
        for (int kk = 0; kk < ATTN_NUM_IMPLS; kk++) {
            const AttnImpl *impl = attn_impl((AttnKernel)kk, ATTN_CUDA);
            if (attn_kernel_is_variant((AttnKernel)kk) || !impl) continue;
            run_case(p, impl, ATTN_FP32, rtf);
            if (impl->kernel == ATTN_MEMEFF) run_case(p, impl, ATTN_FP32, rtf, "(tf32)", 1);
        }
        return;
    }
    /* every kernel of the registry that is not a variant of another (flash runs its Hopper kernels
     * where they apply), and flash-mma and flash-tma (what the trainer's flash resolves to there) beside it on a Hopper GPU */
    for (int kk = 0; kk < ATTN_NUM_IMPLS; kk++) {
        if (attn_kernel_is_variant((AttnKernel)kk)) continue;
        const AttnImpl *impl = attn_impl((AttnKernel)kk, ATTN_CUDA);
        if (!impl) { n_skipped += 3; continue; }
        run_case(p, impl, ATTN_FP32, r16);
        if (impl->kernel == ATTN_MEMEFF) {
            run_case(p, impl, ATTN_FP32, rtf, "(tf32)", 1); /* TF32 tensor cores */
            /* rows 16-byte loads cannot read: the CUDA-core kernels and the element-wise row dot */
            run_case(p, impl, ATTN_BF16, r16, "(unaligned)", 0, true);
            run_case(p, impl, ATTN_FP32, rtf, "(tf32, unaligned)", 1, true);
        }
        if (impl->kernel == ATTN_CUDNN && !p.dqkv16g.empty()) {
            /* cuDNN's GQA dK, dV carry a rounding to 16 bits per query head before the group's
             * sum (2026-12-02, H200: B=2 H=4 Hkv=1 T=127 D=32 dV 0.00658, 2.4x the plain bf16
             * reference's 0.00274): held to that plain computation's error instead */
            Err g16 = r16, gh = rh, pg16 = plain(p.o16, p.dqkv16g, p.db16), pgh = plain(p.oh, p.dqkvhg, p.dbh);
            g16.dk = pg16.dk; g16.dv = pg16.dv;
            gh.dk = pgh.dk; gh.dv = pgh.dv;
            run_case(p, impl, ATTN_BF16, g16, "(dK, dV per head)");
            run_case(p, impl, ATTN_FP16, gh, "(dK, dV per head)");
            continue;
        }
        run_case(p, impl, ATTN_BF16, r16);
        run_case(p, impl, ATTN_FP16, rh);
        if (impl->kernel == ATTN_FLASH && flash_sm90_enabled()) { /* the above ran on wgmma: the mma.sync kernels too */
            run_case(p, attn_impl(ATTN_FLASH_MMA, ATTN_CUDA), ATTN_BF16, r16, "(mma.sync)");
            run_case(p, attn_impl(ATTN_FLASH_MMA, ATTN_CUDA), ATTN_FP16, rh, "(mma.sync)");
            /* and flash-tma: the TMA, warp-specialised forward and backward (the mask family's
             * extras included) */
            const AttnImpl *tma = attn_impl(ATTN_FLASH_TMA, ATTN_CUDA);
            if (!tma) { n_skipped += 2; continue; }
            run_case(p, tma, ATTN_BF16, r16, "(tma)");
            run_case(p, tma, ATTN_FP16, rh, "(tma)");
        }
    }
}
/* Plain multi-head attention. */
static void run_mha(int B, int T, int H, int D, AttnMaskKind mask, int bias_kind, int extras = 0) {
    run_problem(B, T, H, H, D, mask, bias_kind, extras);
}

/* test_attention [KERNEL [DTYPE]]: only that kernel of the registry (e.g. memeff), and only that
 * dtype (fp32, bf16, fp16, or tf32: fp32 with AttnShape::tf32 = 1); no argument runs everything. */
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "all")) {
        AttnKernel k;
        if (attn_kernel_from_name(argv[1], &k) != 0) {
            fprintf(stderr, "test_attention: unknown kernel '%s' (%s, or all)\n", argv[1], attn_kernel_names_list());
            return 2;
        }
        g_kernel = argv[1];
        g_need_parts = k == ATTN_CUDNN;
    }
    if (argc > 2) {
        g_dtype = argv[2];
        if (strcmp(g_dtype, "fp32") && strcmp(g_dtype, "bf16") && strcmp(g_dtype, "fp16") && strcmp(g_dtype, "tf32")) {
            fprintf(stderr, "test_attention: unknown dtype '%s' (fp32, bf16, fp16 or tf32)\n", g_dtype);
            return 2;
        }
        g_need_16 = !strcmp(g_dtype, "bf16") || !strcmp(g_dtype, "fp16");
        g_need_tf32 = !strcmp(g_dtype, "tf32");
    }
    if (argc > 3) {
        fprintf(stderr, "usage: test_attention [KERNEL|all [fp32|bf16|fp16|tf32]]\n");
        return 2;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("test_attention_gpu: no GPU visible\n");
        return test_summary("test_attention_gpu");
    }
    const int Ts[] = {1, 17, 64, 127, 200};
    const int Ds[] = {32, 64, 128};
    for (int di = 0; di < 3; di++)
        for (int ti = 0; ti < 5; ti++) {
            int D = Ds[di], T = Ts[ti];
            run_mha(2, T, 3, D, ATTN_MASK_NONE, BIAS_NONE);
            run_mha(2, T, 3, D, ATTN_MASK_CAUSAL, BIAS_NONE);
            run_mha(2, T, 3, D, ATTN_MASK_DENSE, BIAS_BROADCAST);
            run_mha(2, T, 3, D, ATTN_MASK_DENSE, BIAS_PER_HEAD);
        }
    /* Several query and key blocks, causal block skipping, a ragged last block; large B x H. */
    run_mha(1, 385, 2, 64, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_mha(1, 385, 2, 128, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_mha(1, 300, 2, 32, ATTN_MASK_NONE, BIAS_NONE);
    run_mha(4, 127, 12, 64, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_mha(4, 256, 12, 64, ATTN_MASK_NONE, BIAS_NONE);
    /* several 192-row query tiles and 128-key tiles of the Hopper forward, ragged ends */
    run_mha(1, 1000, 2, 64, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_mha(1, 700, 2, 64, ATTN_MASK_NONE, BIAS_NONE);
    run_mha(1, 513, 2, 128, ATTN_MASK_NONE, BIAS_NONE);
    /* more key tiles than the TMA forward's rings have buffers (4 at D = 64, 2 at 128), so every
     * buffer is refilled several times (its barriers' parity flips), with a ragged last tile */
    run_mha(1, 1500, 2, 64, ATTN_MASK_NONE, BIAS_NONE);
    run_mha(2, 1300, 2, 128, ATTN_MASK_CAUSAL, BIAS_NONE);
    /* flash-tma's backward (128-key blocks; 128-query tiles at D = 64, 64 at D = 128; a ring of 2
     * Q / dO buffers): last query tiles and key blocks of one row, T a multiple of both tiles,
     * and GQA groups whose query heads run many tiles through the ring (parities flipping, the
     * dQ staging tile and dS^T buffers reused), causal and rotated (no mask) */
    run_mha(1, 129, 2, 64, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_mha(1, 129, 2, 64, ATTN_MASK_NONE, BIAS_NONE);
    run_mha(2, 65, 3, 128, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_mha(2, 65, 3, 128, ATTN_MASK_NONE, BIAS_NONE);
    run_mha(1, 256, 2, 64, ATTN_MASK_NONE, BIAS_NONE);
    run_mha(1, 256, 2, 128, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_problem(1, 777, 8, 2, 128, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_problem(2, 600, 4, 1, 64, ATTN_MASK_NONE, BIAS_NONE);
    run_problem(1, 450, 6, 3, 64, ATTN_MASK_CAUSAL, BIAS_NONE);
    /* ... and its L / D_i boxes, which start at entry (b * H + h) * T + q0 rounded down to a multiple
     * of 4 (a TMA box's address is 16-byte aligned): T = 131 over 6 heads puts the tile's first entry
     * at every offset 0..3 of its box, for both tile heights (D = 64: 128 rows, D = 128: 64) */
    run_mha(2, 131, 3, 64, ATTN_MASK_NONE, BIAS_NONE);
    run_mha(2, 131, 3, 128, ATTN_MASK_CAUSAL, BIAS_NONE);
    /* the TMA forward's 176-key tiles (D = 128, no mask): 7 tiles over 2 buffers each, ragged last
     * tile of 44 keys; and a last tile of one key */
    run_mha(1, 1100, 2, 128, ATTN_MASK_NONE, BIAS_NONE);
    run_mha(2, 177, 2, 128, ATTN_MASK_NONE, BIAS_NONE);
    /* naive's query-row chunks (256 rows up to T = 4096, beyond T/16 rounded up to 64): T = 300,
     * 385, 513, 700, 1000 above and below run 2-4 chunks with a ragged last one (513: a last chunk
     * of one row), the windows give chunks whose keys start after key 0 (T = 385, 1000); T = 2100
     * runs 9 chunks, the last of 52 rows. */
    run_mha(1, 2100, 2, 64, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_mha(1, 2100, 2, 64, ATTN_MASK_NONE, BIAS_NONE, X_WINDOW | X_KEYPAD);
    /* The mask family: windows, packed documents (one of length 1), key padding left and right,
     * ALiBi, and what people combine. */
    const int xs[] = {X_WINDOW, X_DOCS, X_KEYPAD, X_ALIBI, X_DOCS | X_ALIBI, X_WINDOW | X_DOCS | X_KEYPAD | X_ALIBI};
    const int xTs[] = {1, 17, 127, 200, 385};
    for (int di = 0; di < 3; di++)
        for (int ti = 0; ti < 5; ti++)
            for (int xi = 0; xi < 6; xi++) {
                run_mha(2, xTs[ti], 3, Ds[di], ATTN_MASK_CAUSAL, BIAS_NONE, xs[xi]);
                if (xi % 2 == 0) run_mha(2, xTs[ti], 3, Ds[di], ATTN_MASK_NONE, BIAS_NONE, xs[xi]);
            }
    /* ... over several tiles of every kernel's query and key blocks (the Hopper tiles too) */
    for (int D = 64; D <= 128; D *= 2)
        for (int xi = 0; xi < 6; xi++) run_mha(1, 1000, 2, D, ATTN_MASK_CAUSAL, BIAS_NONE, xs[xi]);
    /* non-causal documents over many key tiles: the TMA forward's producer stages the key tiles'
     * document starts beside K, and warpgroups skip tiles at both ends of their hulls */
    for (int D = 64; D <= 128; D *= 2) {
        run_mha(1, 1100, 2, D, ATTN_MASK_NONE, BIAS_NONE, X_DOCS);
        run_mha(1, 1100, 2, D, ATTN_MASK_NONE, BIAS_NONE, X_WINDOW | X_DOCS | X_KEYPAD | X_ALIBI);
    }
    /* flash-tma's backward with the mask family: key blocks whose hull spans several query tiles
     * (a window of 421 keys), GQA groups running those hulls per query head, ALiBi per head */
    run_problem(1, 2100, 4, 2, 64, ATTN_MASK_CAUSAL, BIAS_NONE, X_WINDOW | X_DOCS | X_ALIBI);
    run_problem(2, 1500, 4, 1, 128, ATTN_MASK_NONE, BIAS_NONE, X_WINDOW | X_KEYPAD | X_ALIBI);
    /* Grouped-query attention: Hkv = 1 (multi-query) and H/2, with and without masks. */
    const int gTs[] = {1, 17, 127, 200};
    for (int di = 0; di < 3; di++)
        for (int ti = 0; ti < 4; ti++)
            for (int hkv = 1; hkv <= 2; hkv++) {
                run_problem(2, gTs[ti], 4, hkv, Ds[di], ATTN_MASK_CAUSAL, BIAS_NONE);
                run_problem(2, gTs[ti], 4, hkv, Ds[di], ATTN_MASK_NONE, BIAS_NONE);
                run_problem(2, gTs[ti], 4, hkv, Ds[di], ATTN_MASK_CAUSAL, BIAS_NONE, X_WINDOW | X_DOCS | X_ALIBI);
                run_problem(2, gTs[ti], 4, hkv, Ds[di], ATTN_MASK_DENSE, BIAS_PER_HEAD);
            }
    run_problem(1, 1000, 4, 2, 64, ATTN_MASK_CAUSAL, BIAS_NONE);
    run_problem(1, 700, 6, 1, 128, ATTN_MASK_NONE, BIAS_NONE);
    run_problem(2, 385, 8, 2, 64, ATTN_MASK_CAUSAL, BIAS_NONE, X_WINDOW | X_KEYPAD);
    /* A dense bias with causal / no mask (dense + causal), alone and with the extras. */
    const int bTs[] = {17, 127, 200};
    for (int di = 0; di < 3; di++)
        for (int ti = 0; ti < 3; ti++) {
            run_mha(2, bTs[ti], 3, Ds[di], ATTN_MASK_CAUSAL, BIAS_BROADCAST);
            run_mha(2, bTs[ti], 3, Ds[di], ATTN_MASK_NONE, BIAS_PER_HEAD);
            run_mha(2, bTs[ti], 3, Ds[di], ATTN_MASK_CAUSAL, BIAS_HEAD_SHARED, X_WINDOW | X_ALIBI);
        }
    /* The bias gradient, for every broadcast pattern, summed over what broadcasts. */
    const int dTs[] = {1, 17, 127, 200};
    for (int di = 0; di < 2; di++)
        for (int ti = 0; ti < 4; ti++) {
            int D = Ds[di + 1], T = dTs[ti];
            run_problem(2, T, 3, 3, D, ATTN_MASK_DENSE, BIAS_PER_HEAD, 0, true);
            run_problem(2, T, 3, 3, D, ATTN_MASK_DENSE, BIAS_BROADCAST, 0, true);
            run_problem(2, T, 3, 3, D, ATTN_MASK_CAUSAL, BIAS_HEAD_SHARED, 0, true);
            run_problem(2, T, 4, 2, D, ATTN_MASK_CAUSAL, BIAS_HEAD_SHARED, X_ALIBI | X_DOCS, true);
        }
    run_problem(1, 385, 2, 2, 64, ATTN_MASK_CAUSAL, BIAS_HEAD_SHARED, 0, true);
    run_problem(2, 300, 4, 2, 64, ATTN_MASK_CAUSAL, BIAS_HEAD_SHARED, X_ALIBI | X_DOCS, true); /* naive: 2 chunks */
    /* fp32 with 24-bit inputs (TF32 rounds them): exact fp32 and memeff's TF32 kernels, D = 64 and
     * 128 (and 32), T off every tile size (TF32 tiles: 64 / 128 rows, 64 / 32 columns), each mask */
    for (int di = 0; di < 3; di++) {
        const int fTs[] = {17, 127, 200, 385};
        for (int ti = 0; ti < 4; ti++) {
            run_problem(2, fTs[ti], 3, 3, Ds[di], ATTN_MASK_CAUSAL, BIAS_NONE, 0, false, true);
            run_problem(2, fTs[ti], 3, 3, Ds[di], ATTN_MASK_NONE, BIAS_NONE, 0, false, true);
            run_problem(2, fTs[ti], 3, 3, Ds[di], ATTN_MASK_DENSE, BIAS_PER_HEAD, 0, true, true);
        }
        run_problem(2, 200, 4, 2, Ds[di], ATTN_MASK_CAUSAL, BIAS_HEAD_SHARED, X_WINDOW | X_DOCS | X_ALIBI, true, true);
        run_problem(2, 200, 4, 1, Ds[di], ATTN_MASK_NONE, BIAS_NONE, X_KEYPAD, false, true);
    }
    run_problem(1, 1000, 4, 2, 128, ATTN_MASK_CAUSAL, BIAS_NONE, 0, false, true);
    run_problem(1, 700, 2, 2, 64, ATTN_MASK_NONE, BIAS_NONE, 0, false, true);
    printf("test_attention_gpu: %d problems, %d kernel/dtype cases skipped (unsupported or not built)\n", n_problems,
           n_skipped);
    return test_summary("test_attention_gpu");
}
