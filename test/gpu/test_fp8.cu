/* test/gpu/test_fp8.cu: --matmul fp8 (layers/fp8_cuda.cu, cuBLASLt FP8 GEMMs) on the GPU.
 *
 *  The FP8 linear layer, forward (plain, bias, GELU), input gradient (plain, dGELU) and weight
 *  gradient, on shapes with partial 64-wide cast tiles and the smallest legal one (16), against
 *  two references in double built from the same bf16 inputs:
 *   - the exact product: the error must lie within a bound from the FP8 rounding of both
 *     inputs. A value x rounds with an error of at most max(u |x|, h) (u = 2^-4 for E4M3's 3
 *     mantissa bits, 2^-3 for E5M2's 2; h = half the smallest subnormal step, in x's units:
 *     2^-10 / scale for E4M3, 2^-17 / scale for E5M2), about uniformly, so variance <= that^2/3;
 *     independent over the k terms of a sum, the error of sum_k a_k b_k is a random walk of
 *     standard deviation sigma = sqrt(sum_k a_k^2 var(db_k) + b_k^2 var(da_k)). Bound: 6 sigma +
 *     the output's rounding (2^-8 relative in bf16, 2^-23 in fp32) + accumulation (forward runs
 *     cuBLASLt's fast accumulation, which keeps about 14 bits of the partial sums: k/32 losses
 *     of 2^-14 sum |a b|, doubled; backward, without fast accumulation, the same: see accum_slack).
 *   - an emulation that casts the inputs to FP8 on the host with the device's scales (the
 *     rounding the GPU does) and sums in double: the GPU must equal it up to the output's rounding
 *     and accumulation. This catches a wrong transpose, scale or layout that the first bound
 *     might be too loose to see.
 *   The dGELU input gradient runs in bf16 (cuda_fp8_dgelu_input_grad_is_bf16): its emulation is
 *   the exact product of the bf16 inputs with fp32 sums. Each line also prints the worst
 *   |got - emulation| in units of sum |a b| (the accumulator's precision: ~2^-14 for FP8 on
 *   Hopper) and got / emulation at the largest output (1 unless a scale is wrong).
 *   Outputs are poisoned (NaN) first; the weight gradient accumulates onto random values.
 *  Delayed scaling: after the history rolls the scale is fp8_max / amax; a 100x larger input
 *  saturates for one step (every output finite, no inf), its amax is recorded, the next roll
 *  adapts the scale and the layer is within the bound again; the large amax leaves the history
 *  after exactly 16 more rolls.
 *  Training through the backend (naive attention, exact and bitwise reproducible): a model in
 *  fp8 against the same model in bf16: one step's loss within 2% and every parameter gradient
 *  within 25% of its tensor's largest magnitude; a 40-step run with finite, falling losses
 *  within 5% of bf16's; CUDA graphs replay the eager fp8 run bit for bit; fp32 is refused in one line.
 *  On a GPU below compute capability 8.9 everything is skipped (create's refusal is checked).
 */
#include "test/test.h"
#include "model/backend.h"
#include "model/gpt2.h"
#include "layers/layers_cuda.h"
#include "train/loss_scale.h"
#include "train/trainer.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <vector>
#include <string>

typedef std::vector<float> Vec;

#define CK(call)                                                                                 \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

static float fp8_round(float x, int e5m2) { /* the device cast: saturate(x) in E4M3 / E5M2 */
    __nv_fp8_storage_t q = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, e5m2 ? __NV_E5M2 : __NV_E4M3);
    __half_raw h = __nv_cvt_fp8_to_halfraw(q, e5m2 ? __NV_E5M2 : __NV_E4M3);
    return __half2float(__half(h));
}
static double gelu(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad(double x) {
    double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), t = tanh(u);
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3 * 0.044715 * x * x);
}

/* A bf16 device array holding host values (rounded). */
struct Dev {
    void *p = nullptr;
    size_t bytes = 0;
    explicit Dev(size_t b) : bytes(b) { CK(cudaMalloc(&p, b)); }
    ~Dev() { cudaFree(p); }
    template <class T> T *as() const { return (T *)p; }
};
static void put_bf16(Dev &d, Vec &x) { /* rounds x in place to what the device holds */
    std::vector<__nv_bfloat16> h(x.size());
    for (size_t i = 0; i < x.size(); i++) { h[i] = __float2bfloat16_rn(x[i]); x[i] = __bfloat162float(h[i]); }
    CK(cudaMemcpy(d.p, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
}
static Vec get_bf16(const Dev &d, size_t n) {
    std::vector<__nv_bfloat16> h(n);
    CK(cudaMemcpy(h.data(), d.p, n * 2, cudaMemcpyDeviceToHost));
    Vec x(n);
    for (size_t i = 0; i < n; i++) x[i] = __bfloat162float(h[i]);
    return x;
}
static void poison_bf16(Dev &d) { CK(cudaMemset(d.p, 0xff, d.bytes)); } /* 0xffff: a NaN */
static float slot_get(const float *slot, int field) {
    float v;
    CK(cudaMemcpy(&v, slot + field, 4, cudaMemcpyDeviceToHost));
    return v;
}
static Vec random_vec(size_t n, uint64_t *rng, float amp) {
    Vec x(n);
    test_fill_random(x.data(), n, rng, amp);
    return x;
}

/* The state of one FP8 linear layer and its work buffers. */
struct Layer {
    int N, C, OC;
    Dev slots, w8, wt8, work;
    Fp8Linear f;
    Fp8Work w;
    Layer(int N_, int C_, int OC_)
        : N(N_), C(C_), OC(OC_), slots(3 * FP8_SLOT_FLOATS * 4), w8((size_t)OC_ * C_), wt8((size_t)OC_ * C_),
          work(cuda_fp8_work_bytes(N_, C_ > OC_ ? C_ : OC_)) {
        cuda_fp8_init_slots(slots.as<float>(), 1, 0);
        float *s = slots.as<float>();
        size_t one = work.bytes / 3;
        f = {s, s + FP8_SLOT_FLOATS, s + 2 * FP8_SLOT_FLOATS, w8.as<unsigned char>(), wt8.as<unsigned char>()};
        w = {work.as<unsigned char>(), work.as<unsigned char>() + one, work.as<unsigned char>() + 2 * one, 1};
    }
};

/* Per-element bounds of sum_k a[i,k] b[j,k] (a: (I, K), b: (J, K), row-major) from the rounding
 * of a (E4M3 or E5M2 at scale sa) and b; ref and emu (from host-cast inputs) alongside. */
struct Sum {
    double ref, emu, sigma, abs_sum;
};
static double round_var(float x, int e5m2, float scale) {
    double u = e5m2 ? 0.125 : 0.0625, h = (e5m2 ? ldexp(1.0, -17) : ldexp(1.0, -10)) / scale;
    double e = fabs(x) * u > h ? fabs(x) * u : h;
    return e * e / 3.0;
}
static Sum dot(const float *a, const float *b, int K, int sa_e5m2, float sa, int sb_e5m2, float sb, int stride_a = 1,
               int stride_b = 1) {
    Sum s = {0, 0, 0, 0};
    double var = 0;
    for (int k = 0; k < K; k++) {
        float x = a[(size_t)k * stride_a], y = b[(size_t)k * stride_b];
        s.ref += (double)x * y;
        s.abs_sum += fabs((double)x * y);
        s.emu += (double)fp8_round(x * sa, sa_e5m2) / sa * ((double)fp8_round(y * sb, sb_e5m2) / sb);
        var += (double)x * x * round_var(y, sb_e5m2, sb) + (double)y * y * round_var(x, sa_e5m2, sa);
    }
    s.sigma = sqrt(var);
    return s;
}
/* Accumulation slack of a k-term FP8 sum. Hopper's FP8 tensor-core MMA (32 terms of k per
 * instruction) adds into an accumulator that keeps about 14 bits (the addends aligned to the
 * largest exponent and truncated): each instruction loses at most ~2^-14 of the sum of |a b| so
 * far, so k terms lose (k/32 + 1) 2^-14 sum |a b|, doubled for the truncation's bias and the
 * exponent of the partial sum exceeding it. That is fast accumulation (forward). Without it
 * (backward) cuBLASLt adds those tensor-core partial sums into fp32 every P terms of k, P its
 * own undocumented choice; inside each P-chunk the same ~14-bit accumulator runs, so a chunk
 * loses (min(P, k)/32 + 1) 2^-14 of its own sum |a b|, at most the fast bound over all chunks
 * (min(P, k) <= k), plus fp32's k 2^-24 sum |a b| for adding the chunks. The first version
 * charged backward only the fp32 term: on the H200 the backward errors against the emulation
 * were 1.4x to 55x that (about 2^-15..2^-13 of sum |a b| for k = 16..272, independent of k: the
 * tensor-core accumulator's precision, not a layout or scale error, which would be O(1)). */
static double accum_slack(const Sum &s, int K, int fast) {
    (void)fast; /* same bound: see above */
    return (2.0 * (K / 32 + 1) * ldexp(1.0, -14) + K * ldexp(1.0, -24)) * s.abs_sum;
}

struct Tally {
    double worst_ref = 0, worst_emu = 0; /* error / bound, worst */
    double worst_acc = 0;                /* |got - emu| / sum |a b|, worst (where given): the accumulator */
    double big_emu = -1, big_ratio = 0;  /* got / emu at the largest |emu|: 1 unless a scale is wrong */
    long nan = 0;
    void add(double got, double ref, double bound_ref, double emu, double bound_emu, double abs_sum = 0) {
        if (!std::isfinite(got)) { nan++; return; }
        double r = fabs(got - ref) / bound_ref, e = fabs(got - emu) / bound_emu;
        if (r > worst_ref) worst_ref = r;
        if (e > worst_emu) worst_emu = e;
        if (abs_sum > 0 && fabs(got - emu) / abs_sum > worst_acc) worst_acc = fabs(got - emu) / abs_sum;
        if (fabs(emu) > big_emu) { big_emu = fabs(emu); big_ratio = got / emu; }
    }
    void check(const char *what) {
        printf("  %-44s error/bound: %.3f (exact product), %.3f (FP8 emulation)", what, worst_ref, worst_emu);
        if (worst_acc > 0) printf("; |got-emu| <= 2^%.1f sum|ab|", log2(worst_acc));
        printf("; got/emu %.6f at the largest\n", big_ratio);
        CHECK(nan == 0, "%s: %ld outputs not finite", what, nan);
        CHECK(worst_ref <= 1.0, "%s: error %.3f x the FP8 rounding bound", what, worst_ref);
        CHECK(worst_emu <= 1.0, "%s: error %.3f x the bound against the FP8 emulation", what, worst_emu);
    }
};

/* Forward (bias; GELU when gelu) of one layer against the references; returns the layer. */
static void check_forward(Layer &L, const Vec &x, const Vec &wt, const Vec &b, Dev &dx, Dev &dw, Dev &db, int gelu_on,
                          const char *label) {
    const int N = L.N, C = L.C, OC = L.OC;
    Dev out((size_t)N * OC * 2), pre((size_t)N * OC * 2);
    poison_bf16(out);
    poison_bf16(pre);
    int rc = cuda_fp8_matmul_forward(&L.f, &L.w, out.p, gelu_on ? pre.p : NULL, dx.p, dw.p, db.p, N, C, OC, 0);
    CK(cudaDeviceSynchronize());
    CHECK(rc == 0, "%s: forward returned %d", label, rc);
    float sx = slot_get(L.f.x, FP8_SLOT_SCALE), sw = slot_get(L.f.w, FP8_SLOT_SCALE);
    Vec o = get_bf16(out, (size_t)N * OC), pr = gelu_on ? get_bf16(pre, (size_t)N * OC) : Vec();
    Tally t, tp;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OC; j++) {
            Sum s = dot(&x[(size_t)n * C], &wt[(size_t)j * C], C, 0, sx, 0, sw);
            double ref = s.ref + b[j], emu = s.emu + b[j];
            double acc = accum_slack(s, C, 1), br = 6 * s.sigma + acc, be = acc;
            if (!gelu_on) {
                t.add(o[(size_t)n * OC + j], ref, br + ldexp(fabs(ref), -8) + 1e-30, emu,
                      be + ldexp(fabs(emu), -8) + 1e-30, s.abs_sum);
                continue;
            }
            tp.add(pr[(size_t)n * OC + j], ref, br + ldexp(fabs(ref), -8) + 1e-30, emu, be + ldexp(fabs(emu), -8) + 1e-30);
            /* GELU' <= 1.13; GELU of a bf16-rounded pre-activation when unfused: 2^-8 |pre| more */
            double g = gelu(ref), ge = gelu(emu);
            t.add(o[(size_t)n * OC + j], g, 1.13 * (br + ldexp(fabs(ref), -8)) + ldexp(fabs(g), -8) + 1e-30, ge,
                  1.13 * (be + ldexp(fabs(emu), -8)) + ldexp(fabs(ge), -8) + 1e-30);
        }
    std::string what = std::string(label) + (gelu_on ? " forward GELU" : " forward");
    t.check(what.c_str());
    if (gelu_on) tp.check((std::string(label) + " forward pre-activation").c_str());
}

static void check_layer(int N, int C, int OC, uint64_t seed, int gelu_case) {
    char label[96];
    snprintf(label, sizeof label, "N=%d C=%d OC=%d", N, C, OC);
    uint64_t rng = seed;
    Vec x = random_vec((size_t)N * C, &rng, 2.0f), wt = random_vec((size_t)OC * C, &rng, 0.08f),
        b = random_vec(OC, &rng, 0.1f), g = random_vec((size_t)N * OC, &rng, 1e-3f),
        pre = random_vec((size_t)N * C, &rng, 3.0f);
    Dev dx((size_t)N * C * 2), dw((size_t)OC * C * 2), db((size_t)OC * 2), dg((size_t)N * OC * 2), dpre((size_t)N * C * 2);
    put_bf16(dx, x);
    put_bf16(dw, wt);
    put_bf16(db, b);
    put_bf16(dg, g);
    put_bf16(dpre, pre);
    Layer L(N, C, OC);
    check_forward(L, x, wt, b, dx, dw, db, 0, label); /* calibrates: first call */
    L.w.calibrate = 0;
    if (gelu_case) check_forward(L, x, wt, b, dx, dw, db, 1, label);

    /* backward, calibrating the gradient's slot (its first call) */
    L.w.calibrate = 1;
    /* the dGELU input gradient runs in bf16 (layers/fp8_cuda.cu's choice): its emulation is the
     * exact product of the bf16 inputs */
    const int dgelu_bf16 = cuda_fp8_dgelu_input_grad_is_bf16();
    for (int with_gelu = 0; with_gelu <= gelu_case; with_gelu++) {
        Dev dinp((size_t)N * C * 2), dW((size_t)OC * C * 4), dB((size_t)OC * 4);
        Dev scratch(cuda_colsum_scratch_floats(OC) * 4);
        poison_bf16(dinp);
        Vec w0 = random_vec((size_t)OC * C, &rng, 0.01f), b0 = random_vec(OC, &rng, 0.01f);
        CK(cudaMemcpy(dW.p, w0.data(), w0.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dB.p, b0.data(), b0.size() * 4, cudaMemcpyHostToDevice));
        int rc = cuda_fp8_matmul_backward(&L.f, &L.w, dinp.p, dW.as<float>(), dB.as<float>(), dg.p, dx.p, dw.p,
                                          with_gelu ? dpre.p : NULL, N, C, OC, 1.0f, scratch.as<float>(), 0);
        CK(cudaDeviceSynchronize());
        L.w.calibrate = 0;
        CHECK(rc == 0, "%s: backward returned %d", label, rc);
        float sx = slot_get(L.f.x, FP8_SLOT_SCALE), sw = slot_get(L.f.w, FP8_SLOT_SCALE),
              sg = slot_get(L.f.g, FP8_SLOT_SCALE);
        Vec di = get_bf16(dinp, (size_t)N * C), gw(w0.size()), gb(OC);
        CK(cudaMemcpy(gw.data(), dW.p, gw.size() * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(gb.data(), dB.p, gb.size() * 4, cudaMemcpyDeviceToHost));
        Tally ti, tw;
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) { /* dinp[n,c] = sum_o g[n,o] w[o,c] (* GELU'(pre)) */
                Sum s = dot(&wt[c], &g[(size_t)n * OC], OC, 0, sw, 1, sg, C, 1);
                double d = with_gelu ? gelu_grad(pre[(size_t)n * C + c]) : 1.0, ad = fabs(d) + 1e-3;
                double ref = s.ref * d, emu = s.emu * d, acc = accum_slack(s, OC, 0) * ad;
                if (with_gelu && dgelu_bf16) { /* bf16 GEMM: the bf16 inputs exactly, fp32 sums (an ulp per add) */
                    emu = ref;
                    acc = OC * ldexp(1.0, -23) * s.abs_sum * ad;
                }
                /* unfused dGELU: the product is rounded to bf16 before the multiply: 2^-8 more */
                double extra = with_gelu ? ldexp(fabs(s.ref) * ad, -8) : 0.0;
                ti.add(di[(size_t)n * C + c], ref, 6 * s.sigma * ad + acc + ldexp(fabs(ref), -8) + extra + 1e-30, emu,
                       acc + ldexp(fabs(emu), -8) + extra + 1e-30, s.abs_sum * ad);
            }
        for (int o = 0; o < OC; o++)
            for (int c = 0; c < C; c++) { /* dW[o,c] += sum_n g[n,o] x[n,c] */
                Sum s = dot(&x[c], &g[o], N, 0, sx, 1, sg, C, OC);
                double w_0 = w0[(size_t)o * C + c], ref = w_0 + s.ref, emu = w_0 + s.emu;
                double acc = accum_slack(s, N, 0) + ldexp(fabs(ref), -23);
                tw.add(gw[(size_t)o * C + c], ref, 6 * s.sigma + acc + 1e-30, emu, acc + 1e-30, s.abs_sum);
            }
        double bias_err = 0;
        for (int o = 0; o < OC; o++) {
            double ref = b0[o], mag = fabs(b0[o]);
            for (int n = 0; n < N; n++) ref += g[(size_t)n * OC + o], mag += fabs(g[(size_t)n * OC + o]);
            double e = fabs(gb[o] - ref) / (mag * 1e-5 + 1e-30);
            if (!(e <= bias_err)) bias_err = e;
        }
        ti.check((std::string(label) + (with_gelu ? (dgelu_bf16 ? " input gradient dGELU (bf16)" : " input gradient dGELU")
                                                  : " input gradient")).c_str());
        if (!with_gelu) tw.check((std::string(label) + " weight gradient").c_str());
        CHECK(bias_err <= 1.0, "%s: bias gradient error %.3g x 1e-5 of sum |g|", label, bias_err);
    }
}

/* Delayed scaling over rolls; a 100x jump. */
static void check_scaling(void) {
    const int N = 64, C = 64, OC = 48;
    uint64_t rng = 99;
    Vec x = random_vec((size_t)N * C, &rng, 1.0f), wt = random_vec((size_t)OC * C, &rng, 0.05f), b(OC, 0.0f);
    Vec big(x);
    for (auto &v : big) v *= 100.0f;
    Dev dx((size_t)N * C * 2), dbig((size_t)N * C * 2), dw((size_t)OC * C * 2), db((size_t)OC * 2);
    put_bf16(dx, x);
    put_bf16(dbig, big);
    put_bf16(dw, wt);
    put_bf16(db, b);
    double amax = 0, amax_big = 0;
    for (float v : x) amax = fmax(amax, fabs(v));
    for (float v : big) amax_big = fmax(amax_big, fabs(v));
    Layer L(N, C, OC);
    Dev out((size_t)N * OC * 2);
    float *sx = L.f.x;
    auto fwd = [&](Dev &in) {
        poison_bf16(out);
        int rc = cuda_fp8_matmul_forward(&L.f, &L.w, out.p, NULL, in.p, dw.p, db.p, N, C, OC, 0);
        CK(cudaDeviceSynchronize());
        L.w.calibrate = 0;
        return rc;
    };
    auto roll = [&]() { cuda_fp8_roll(L.slots.as<float>(), 3, 0); CK(cudaDeviceSynchronize()); };
    L.w.calibrate = 0; /* no calibration: the empty history keeps scale 1 */
    fwd(dx);
    CHECK(slot_get(sx, FP8_SLOT_SCALE) == 1.0f, "scaling: the scale moved before a roll");
    CHECK(fabs(slot_get(sx, FP8_SLOT_AMAX) - amax) <= 1e-6 * amax, "scaling: amax %g, expected %g",
          slot_get(sx, FP8_SLOT_AMAX), amax);
    roll();
    for (int i = 0; i < 3; i++) { fwd(dx); roll(); }
    double s1 = slot_get(sx, FP8_SLOT_SCALE);
    CHECK(fabs(s1 - 448.0 / amax) <= 1e-6 * s1, "scaling: scale %g after rolls, expected 448/amax = %g", s1, 448.0 / amax);
    CHECK(fabs(slot_get(sx, FP8_SLOT_DESCALE) * s1 - 1.0) <= 1e-6, "scaling: descale is not 1/scale");
    CHECK(slot_get(sx, FP8_SLOT_AMAX) == 0.0f, "scaling: amax not reset by the roll");
    /* the jump: saturates (finite), is measured, and the next roll adapts */
    CHECK(fwd(dbig) == 0, "scaling: forward of the large input failed");
    Vec o = get_bf16(out, (size_t)N * OC);
    long bad = 0;
    for (float v : o) bad += !std::isfinite(v);
    CHECK(bad == 0, "scaling: %ld outputs not finite after a 100x larger input", bad);
    CHECK(fabs(slot_get(sx, FP8_SLOT_AMAX) - amax_big) <= 1e-6 * amax_big, "scaling: the large amax was not recorded");
    roll();
    double s2 = slot_get(sx, FP8_SLOT_SCALE);
    CHECK(fabs(s2 - 448.0 / amax_big) <= 1e-6 * s2, "scaling: scale %g after the jump, expected %g", s2, 448.0 / amax_big);
    /* the large input is now within the rounding bound */
    fwd(dbig);
    o = get_bf16(out, (size_t)N * OC);
    float sw = slot_get(L.f.w, FP8_SLOT_SCALE);
    Tally t;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OC; j++) {
            Sum s = dot(&big[(size_t)n * C], &wt[(size_t)j * C], C, 0, (float)s2, 0, sw);
            double acc = accum_slack(s, C, 1);
            t.add(o[(size_t)n * OC + j], s.ref, 6 * s.sigma + acc + ldexp(fabs(s.ref), -8) + 1e-30, s.emu,
                  acc + ldexp(fabs(s.emu), -8) + 1e-30);
        }
    t.check("scaling: 100x input after the roll");
    roll();
    /* the last large amax is h[0] now: 15 more rolls of the small input keep it, the 16th drops it */
    for (int i = 0; i < 15; i++) { fwd(dx); roll(); }
    double s3 = slot_get(sx, FP8_SLOT_SCALE);
    fwd(dx);
    roll();
    double s4 = slot_get(sx, FP8_SLOT_SCALE);
    CHECK(fabs(s3 - 448.0 / amax_big) <= 1e-6 * s3, "scaling: the large amax left the history early (scale %g)", s3);
    CHECK(fabs(s4 - 448.0 / amax) <= 1e-6 * s4, "scaling: scale %g 16 rolls after the jump, expected %g", s4, 448.0 / amax);
    /* the gradient slot (E5M2): a 100x gradient saturates, finite */
    Vec g = random_vec((size_t)N * OC, &rng, 1e-2f), gbig(g);
    for (auto &v : gbig) v *= 100.0f;
    Dev dg((size_t)N * OC * 2), dgbig((size_t)N * OC * 2), dinp((size_t)N * C * 2), dW((size_t)OC * C * 4),
        scratch(cuda_colsum_scratch_floats(OC) * 4);
    put_bf16(dg, g);
    put_bf16(dgbig, gbig);
    CK(cudaMemset(dW.p, 0, dW.bytes));
    L.w.calibrate = 1;
    CHECK(cuda_fp8_matmul_backward(&L.f, &L.w, dinp.p, dW.as<float>(), NULL, dg.p, dx.p, dw.p, NULL, N, C, OC, 1.0f,
                                   scratch.as<float>(), 0) == 0, "scaling: backward failed");
    L.w.calibrate = 0;
    roll();
    poison_bf16(dinp);
    CHECK(cuda_fp8_matmul_backward(&L.f, &L.w, dinp.p, dW.as<float>(), NULL, dgbig.p, dx.p, dw.p, NULL, N, C, OC, 1.0f,
                                   scratch.as<float>(), 0) == 0, "scaling: backward failed");
    CK(cudaDeviceSynchronize());
    Vec di = get_bf16(dinp, (size_t)N * C), gw((size_t)OC * C);
    CK(cudaMemcpy(gw.data(), dW.p, gw.size() * 4, cudaMemcpyDeviceToHost));
    bad = 0;
    for (float v : di) bad += !std::isfinite(v);
    for (float v : gw) bad += !std::isfinite(v);
    CHECK(bad == 0, "scaling: %ld gradients not finite after a 100x larger output gradient", bad);
    printf("  scaling: scale 1 -> %.4g -> %.4g (100x input) -> %.4g after 16 rolls\n", s1, s2, s4);
}

/* ---- training through the backend ------------------------------------------------------- */

static const Backend *gpu;

static GPT2Config small_config(void) {
    GPT2Config c;
    memset(&c, 0, sizeof c);
    c.max_seq_len = 64;
    c.vocab_size = 256;
    c.padded_vocab_size = gpt2_padded_vocab(256);
    c.num_layers = 2;
    c.channels = 64;
    c.num_heads = 4;
    return c;
}
static Model *make(const GPT2Config &c, int B, int T, Precision p, int fp8, int graphs, char *err, size_t errlen) {
    ModelOptions o;
    model_options_defaults(&o);
    o.config = c;
    o.B = B;
    o.T = T;
    o.attn = ATTN_NAIVE;
    o.mask = ATTN_MASK_CAUSAL;
    o.precision = p;
    o.cuda_graphs = graphs;
    o.matmul_fp8 = fp8;
    return gpu->create(&o, err, errlen);
}
struct Feed {
    uint64_t rng;
    int V, n;
};
static void feed_learnable(void *ctx, int *inp, int *tgt) {
    Feed *f = (Feed *)ctx;
    for (int i = 0; i < f->n; i++) {
        inp[i] = (int)(test_rng_next(&f->rng) % (uint64_t)f->V);
        tgt[i] = (inp[i] * 7 + 3) % f->V;
    }
}

static void check_training(void) {
    GPT2Config c = small_config();
    const int B = 4, T = 32, steps = 40;
    char err[512] = "";
    Model *bad = make(c, B, T, PRECISION_FP32, 1, 0, err, sizeof err);
    CHECK(!bad && strstr(err, "--matmul fp8") && !strchr(err, '\n'), "fp8 with fp32 not refused in one line: '%s'", err);
    if (bad) gpu->destroy(bad);

    size_t sz[GPT2_NUM_PARAM_TENSORS], off[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sz);
    gpt2_param_offsets(&c, off);
    Vec params(n);
    gpt2_init_params(&c, params.data(), 5);

    /* one step's loss and gradients, fp8 against bf16 */
    {
        Model *mb = make(c, B, T, PRECISION_BF16, 0, 0, err, sizeof err), *mf = make(c, B, T, PRECISION_BF16, 1, 0, err, sizeof err);
        CHECK(mb && mf, "create: %s", err);
        if (!mb || !mf) return;
        std::vector<int> inp(B * T), tgt(B * T);
        Feed f = {11, c.vocab_size, B * T};
        feed_learnable(&f, inp.data(), tgt.data());
        Vec g[2];
        float loss[2];
        Model *ms[2] = {mb, mf};
        for (int k = 0; k < 2; k++) {
            gpu->set_params(ms[k], params.data());
            gpu->zero_grad(ms[k]);
            loss[k] = gpu->forward(ms[k], inp.data(), tgt.data(), B, T);
            gpu->backward(ms[k], 1.0f, 1);
            g[k].resize(n);
            gpu->get_grads(ms[k], g[k].data());
        }
        double worst = 0;
        std::string which;
        for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
            double e = test_max_err_scaled(&g[1][off[t]], &g[0][off[t]], sz[t]);
            if (!(e <= worst)) { worst = e; which = gpt2_param_name(t); }
        }
        printf("  one step: loss bf16 %.5f fp8 %.5f; worst gradient error %.3f of its tensor's max (%s)\n", loss[0],
               loss[1], worst, which.c_str());
        CHECK(std::isfinite(loss[1]) && fabs(loss[1] - loss[0]) <= 0.02 * loss[0], "one step: fp8 loss %g vs bf16 %g",
              loss[1], loss[0]);
        CHECK(worst <= 0.25, "one step: gradient %s off by %.3f of its largest magnitude", which.c_str(), worst);
        gpu->destroy(mb);
        gpu->destroy(mf);
    }

    /* 40 steps: bf16, fp8 eager, fp8 graphs */
    std::vector<float> losses[3];
    for (int run = 0; run < 3; run++) {
        Model *m = make(c, B, T, PRECISION_BF16, run > 0, run == 2, err, sizeof err);
        CHECK(m != NULL, "create: %s", err);
        if (!m) return;
        gpu->set_params(m, params.data());
        LossScaler ls;
        loss_scale_init(&ls, LOSS_SCALE_OFF, 1.0, 1);
        StepShape shape = {B, T, 1, 1, 1.0f};
        Feed f = {5, c.vocab_size, B * T};
        std::vector<int> inp(B * T), tgt(B * T);
        for (int step = 0; step < steps; step++) {
            AdamWStep s = {3e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f, step + 1};
            float norm;
            losses[run].push_back(trainer_step(gpu, m, &shape, feed_learnable, &f, inp.data(), tgt.data(), &s, &ls, &norm));
        }
        gpu->destroy(m);
    }
    auto mean5 = [&](int run, int from) {
        float a = 0;
        for (int i = 0; i < 5; i++) a += losses[run][from + i] / 5;
        return a;
    };
    int finite = 1;
    for (float l : losses[1]) finite &= std::isfinite(l);
    float b_last = mean5(0, steps - 5), f_first = mean5(1, 0), f_last = mean5(1, steps - 5);
    printf("  40 steps: bf16 %.4f -> %.4f, fp8 %.4f -> %.4f\n", mean5(0, 0), b_last, f_first, f_last);
    CHECK(finite, "training: an fp8 loss is not finite");
    CHECK(f_last < f_first - 0.3f, "training: the fp8 loss did not fall (%g -> %g)", f_first, f_last);
    CHECK(fabs(f_last - b_last) <= 0.05 * b_last, "training: fp8's last losses %g vs bf16's %g", f_last, b_last);
    CHECK(losses[1] == losses[2], "training: fp8 with CUDA graphs differs from eager");
}

int main(void) {
    char why[256];
    gpu = cuda_backend_if_available(why, sizeof why);
    if (!gpu) {
        printf("no GPU (%s): skipped\n", why);
        return test_summary("test_fp8_gpu");
    }
    int dev = 0, major = 0, minor = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (major * 10 + minor < 89) {
        char err[512] = "";
        Model *m = make(small_config(), 2, 32, PRECISION_BF16, 1, 0, err, sizeof err);
        CHECK(!m && strstr(err, "compute capability"), "fp8 on compute capability %d.%d not refused: '%s'", major, minor, err);
        if (m) gpu->destroy(m);
        test_skip(1, "need a GPU of compute capability 8.9+ for FP8");
        return test_summary("test_fp8_gpu");
    }
    CHECK(cuda_matmul_init() == 0, "cuBLASLt init");
    printf("FP8 linear layer against double references:\n");
    check_layer(256, 64, 192, 1, 0);   /* qkv-like */
    check_layer(128, 256, 64, 2, 1);   /* fcproj-like, with GELU and dGELU */
    check_layer(16, 16, 16, 3, 1);     /* the smallest legal shape */
    check_layer(272, 80, 48, 4, 1);    /* partial 64-wide cast tiles in every dimension */
    check_layer(1024, 128, 512, 5, 0); /* longer sums (k = N = 1024 in the weight gradient) */
    printf("delayed scaling:\n");
    check_scaling();
    printf("training through the backend (fp8 vs bf16):\n");
    check_training();
    printf("matmul epilogue fallbacks: %ld\n", cuda_matmul_fallback_count());
    return test_summary("test_fp8_gpu");
}
