/* test/gpu/test_trainer.cu: the CUDA backend against the CPU reference on small models.
 *
 *  fp32 (TF32 off): loss, logits, grad norm and every parameter gradient within 1e-4 of the
 *     CPU (error scaled by each tensor's largest magnitude); shapes: V=300 (padded to 384),
 *     V=250 unpadded with odd T=31 and B=1, a chunked classifier; each --recompute mode (none, gelu,
 *     all) in fp32 (one classifier chunk and several), bf16, fp16 and CUDA graphs (the default,
 *     gelu, everywhere else; bf16 / fp16's emulation recomputes GELU as the GPU does), and with
 *     --keep-layers (the last layer of three keeps its buffers) in fp32, bf16, fp16 and graphs.
 *  The memory plan, on the host (runs without a GPU): every buffer inside its arena, buffers that
 *     share memory never live in one phase, the recompute modes drop exactly their buffers.
 *  20 AdamW steps (2 micro-batches each, clipping, weight decay): the losses track the CPU;
 *  clip_and_update (decided on the device) equals grad_norm + the host's rule + update bitwise.
 *  bf16 and fp16: the GPU's error against the fp32 CPU result must be within 2x (+ a tiny floor)
 *     of the error of a CPU emulation that rounds to bf16 / fp16 at the points the GPU does
 *     (weights, every activation and activation gradient, attention's P and dS; fp16's dlogits
 *     with the backend's power-of-two gain); the emulation itself is checked to equal the CPU
 *     backend when it does not round. fp16 runs with a fixed loss scale of 1024.
 *  fp16 loss scaling through trainer_step: a dynamic scale of 2^32 overflows, the step is
 *     skipped (weights and moments untouched), the scale halves, the run recovers; graphs agree.
 *  CUDA graphs replay bitwise what eager execution computes; results are reproducible;
 *  a batch that cannot fit is refused with the one-line message.
 *  The attention's model options (the CPU model exactly): ALiBi (no position table), a sliding
 *  window, packed documents (with and without restarting positions; new documents each batch
 *  through a replayed graph), grouped-query attention, each in fp32, bf16 and fp16 with every CUDA
 *  kernel of the registry; a case the kernel refuses (its unsupported()) is counted as skipped
 *  with the reason, so it starts checking as soon as the kernel implements it.
 */
#include "test/test.h"
#include "model/backend.h"
#include "model/gpt2.h"
#include "layers/layers.h"
#include "layers/layers_cuda.h"
#include "attention/attention.h"
#include "train/loss_scale.h"
#include "train/trainer.h"
#include "model/grad_sync_cuda.h"
#include "model/memory_plan_cuda.h"

#include <cuda_fp16.h>

#include <vector>
#include <string>

typedef std::vector<float> Vec;

#define CUDA_OK(call)                                                                          \
    do {                                                                                       \
        cudaError_t err_ = (call);                                                             \
        if (err_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(err_));     \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static const Backend *gpu;

/* The attention's model options of a case (model/backend.h, model/gpt2.h). */
struct Extras {
    const char *name = "plain";
    AttnKernel kernel = ATTN_NAIVE;
    int kv_heads = 0;       /* 0: H */
    int alibi = 0;
    int window = 0;
    int doc_sep = -1;       /* a one-token separator; -1 none */
    int doc_positions = 0;
    int keep_layers = 0;    /* --keep-layers: the last ones keep what recompute would recompute */
};
static const Extras kPlain;

/* The config with the case's K/V heads and position kind (they change the parameter layout). */
static GPT2Config with_extras(GPT2Config c, const Extras &x) {
    c.kv_heads = x.kv_heads;
    c.pos = x.alibi ? GPT2_POS_ALIBI : GPT2_POS_LEARNED;
    return c;
}

static GPT2Config small_config(int V, int L, int C, int H, int maxT) {
    GPT2Config c;
    memset(&c, 0, sizeof c);
    c.max_seq_len = maxT;
    c.vocab_size = V;
    c.padded_vocab_size = gpt2_padded_vocab(V);
    c.num_layers = L;
    c.channels = C;
    c.num_heads = H;
    return c;
}

/* Every model here runs fp32 matmuls without TF32 (exact comparisons with the CPU). */
static Model *make(const Backend *be, const GPT2Config &c, int B, int T, Precision p, RecomputeMode recompute,
                   int no_linear_bias = 0, int chunk_rows = 0, int graphs = 0, const Extras &x = kPlain) {
    ModelOptions o;
    model_options_defaults(&o);
    o.tf32 = 0;
    o.logits_chunk_rows = chunk_rows;
    o.cuda_graphs = graphs;
    o.config = c;
    o.B = B;
    o.T = T;
    o.attn = be == &cpu_backend && x.kernel >= ATTN_NUM_KERNELS ? ATTN_FLASH : x.kernel; /* CUDA variants: the CPU's flash */
    o.mask = ATTN_MASK_CAUSAL;
    o.precision = p;
    o.recompute = recompute;
    o.no_linear_bias = no_linear_bias;
    o.config = with_extras(c, x);
    o.attn_window = x.window;
    if (x.doc_sep >= 0) {
        o.doc_sep.len = 1;
        o.doc_sep.tokens[0] = x.doc_sep;
    }
    o.doc_positions = x.doc_positions;
    o.keep_layers = x.keep_layers;
    char err[512] = "";
    Model *m = be->create(&o, err, sizeof err);
    if (!m) fprintf(stderr, "%s create failed: %s\n", be->name, err);
    return m;
}

static void random_tokens(std::vector<int> &x, int V, uint64_t *rng, int allow_ignore) {
    for (size_t i = 0; i < x.size(); i++) {
        x[i] = (int)(test_rng_next(rng) % (uint64_t)V);
        if (allow_ignore && i % 13 == 5) x[i] = -1;
    }
}

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) + 1e-12); }

/* ---- a CPU emulation of the GPU's bf16 / fp16 rounding (fp32 when round == ROUND_NONE) ------- */

enum { ROUND_NONE = 0, ROUND_BF16 = 1, ROUND_FP16 = 2 };
static int round_mode(Precision p) { return p == PRECISION_BF16 ? ROUND_BF16 : p == PRECISION_FP16 ? ROUND_FP16 : ROUND_NONE; }

static float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}
/* fp16: round to nearest even with subnormals, +-inf past 65504 (cuda_fp16.h's host conversions) */
static float fp16_round(float x) { return __half2float(__float2half_rn(x)); }
static float round_to(float x, int mode) {
    return mode == ROUND_BF16 ? bf16_round(x) : mode == ROUND_FP16 ? fp16_round(x) : x;
}
static void rnd(Vec &x, int mode) {
    if (mode) for (auto &v : x) v = round_to(v, mode);
}
/* The power of two the CUDA backend multiplies fp16 dlogits by (model/gpt2_cuda.cu): the largest
 * <= B T of the model; 1 otherwise. */
static float dlogits_gain(int mode, int N) {
    float g = 1.0f;
    if (mode == ROUND_FP16)
        while (g * 2.0f <= (float)N) g *= 2.0f;
    return g;
}

/* The emulation's attention: causal, optionally a window, documents (doc per token), ALiBi slopes,
 * and Hkv K/V heads in the packed layout q | k (Hkv heads) | v (Hkv heads), width Q. */
struct EmuAttn {
    int B, T, H, Hkv, C, Q;
    int window;
    const int *doc;         /* (B, T) or NULL */
    const float *slopes;    /* (H) or NULL */
    int D() const { return C / H; }
    int kv_of(int h) const { return h / (H / Hkv); }
    bool visible(int b, int i, int j) const {
        if (j > i) return false;
        if (window > 0 && j <= i - window) return false;
        if (doc && doc[(size_t)b * T + i] != doc[(size_t)b * T + j]) return false;
        return true;
    }
    const float *q(const Vec &x, int b, int t, int h) const { return &x[((size_t)b * T + t) * Q + h * D()]; }
    const float *k(const Vec &x, int b, int t, int h) const { return &x[((size_t)b * T + t) * Q + C + kv_of(h) * D()]; }
    const float *v(const Vec &x, int b, int t, int h) const {
        return &x[((size_t)b * T + t) * Q + C + Hkv * D() + kv_of(h) * D()];
    }
};

/* P (B,H,T,T) kept; P rounded when `round`. */
static void emu_attn_forward(Vec &out, Vec &P, const Vec &qkv, const EmuAttn &a, int round) {
    const int B = a.B, T = a.T, H = a.H, C = a.C, D = a.D();
    float scale = 1.0f / sqrtf((float)D);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *q = a.q(qkv, b, i, h);
                float *p = &P[(((size_t)b * H + h) * T + i) * T];
                float mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    if (!a.visible(b, i, j)) continue;
                    const float *k = a.k(qkv, b, j, h);
                    float s = 0.0f;
                    for (int d = 0; d < D; d++) s += q[d] * k[d];
                    p[j] = s * scale;
                    if (a.slopes) p[j] -= a.slopes[h] * (float)(i - j);
                    mx = fmaxf(mx, p[j]);
                }
                double sum = 0.0;
                for (int j = 0; j < T; j++)
                    if (a.visible(b, i, j)) { p[j] = expf(p[j] - mx); sum += p[j]; }
                for (int j = 0; j < T; j++) {
                    p[j] = a.visible(b, i, j) ? (float)(p[j] / sum) : 0.0f;
                    p[j] = round_to(p[j], round);
                }
                float *o = &out[((size_t)b * T + i) * C + h * D];
                for (int d = 0; d < D; d++) {
                    float acc = 0.0f;
                    for (int j = 0; j <= i; j++) acc += p[j] * a.v(qkv, b, j, h)[d];
                    o[d] = acc;
                }
            }
}
static void emu_attn_backward(Vec &dqkv, const Vec &dout, const Vec &P, const Vec &qkv, const EmuAttn &a, int round) {
    const int B = a.B, T = a.T, H = a.H, C = a.C, D = a.D(), Q = a.Q;
    float scale = 1.0f / sqrtf((float)D);
    std::fill(dqkv.begin(), dqkv.end(), 0.0f);
    Vec dS(T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *p = &P[(((size_t)b * H + h) * T + i) * T];
                const float *dO = &dout[((size_t)b * T + i) * C + h * D];
                float acc = 0.0f;
                for (int j = 0; j <= i; j++) {
                    const float *v = a.v(qkv, b, j, h);
                    float dp = 0.0f;
                    for (int d = 0; d < D; d++) dp += dO[d] * v[d];
                    dS[j] = dp;
                    acc += p[j] * dp;
                }
                for (int j = 0; j <= i; j++) {
                    dS[j] = p[j] * (dS[j] - acc);
                    dS[j] = round_to(dS[j], round);
                }
                const float *q = a.q(qkv, b, i, h);
                float *dq = &dqkv[((size_t)b * T + i) * Q + h * D];
                for (int j = 0; j <= i; j++) {
                    const float *k = a.k(qkv, b, j, h);
                    float *dk = &dqkv[((size_t)b * T + j) * Q + C + a.kv_of(h) * D];
                    float *dv = &dqkv[((size_t)b * T + j) * Q + C + a.Hkv * D + a.kv_of(h) * D];
                    for (int d = 0; d < D; d++) {
                        dq[d] += scale * dS[j] * k[d];
                        dk[d] += scale * dS[j] * q[d];
                        dv[d] += p[j] * dO[d];
                    }
                }
            }
    rnd(dqkv, round);
}

/* One forward + backward of GPT-2 with CPU layers, the loss's gradient times loss_scale (as the
 * backend's backward); grads overwritten (still carrying loss_scale). round: ROUND_*. */
static float emu_step(const GPT2Config &c, const Vec &params_in, const std::vector<int> &inp,
                      const std::vector<int> &tgt, int B, int T, int round, Vec &grads, const Extras &x = kPlain,
                      float loss_scale = 1.0f, RecomputeMode recompute = RECOMPUTE_NONE) {
    const int C = c.channels, L = c.num_layers, V = c.vocab_size, H = c.num_heads, N = B * T;
    const int Q = gpt2_qkv_channels(&c);
    /* the attention's options, as the backends apply them (model/documents.h, attn_alibi_slopes) */
    std::vector<int> doc(N), pos(N);
    Vec slopes(H);
    attn_alibi_slopes(H, slopes.data());
    DocSep sep = {};
    if (x.doc_sep >= 0) { sep.len = 1; sep.tokens[0] = x.doc_sep; }
    doc_starts_of_batch(&sep, inp.data(), B, T, doc.data(), pos.data());
    EmuAttn ea = {B, T, H, gpt2_kv_heads(&c), C, Q, x.window, x.doc_sep >= 0 ? doc.data() : NULL,
                  x.alibi ? slopes.data() : NULL};
    const int *pos_of = x.doc_sep >= 0 && x.doc_positions ? pos.data() : NULL;
    float *wpe = NULL; /* the position table, once the parameters are rounded (none with ALiBi) */
    size_t off[GPT2_NUM_PARAM_TENSORS], sz[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_sizes(&c, sz);
    gpt2_param_offsets(&c, off);
    Vec p = params_in;
    rnd(p, round);
    grads.assign(p.size(), 0.0f);
    auto P_ = [&](int t, int l) { return &p[off[t] + (size_t)l * (sz[t] / L)]; };
    auto G_ = [&](int t, int l) { return &grads[off[t] + (size_t)l * (sz[t] / L)]; };
    const size_t NC = (size_t)N * C;
    Vec encoded(NC);
    std::vector<Vec> ln1(L, Vec(NC)), qkv(L, Vec((size_t)N * Q)), atty(L, Vec(NC)), att(L, Vec((size_t)B * H * T * T)),
        res2(L, Vec(NC)), ln2(L, Vec(NC)), fch(L, Vec(4 * NC)), fchg(L, Vec(4 * NC)), res3(L, Vec(NC));
    std::vector<Vec> m1(L, Vec(N)), r1(L, Vec(N)), m2(L, Vec(N)), r2(L, Vec(N));
    Vec proj(NC), tmp4(4 * NC), lnf(NC), mf(N), rf(N);
    if (!x.alibi) wpe = &p[off[P_WPE]];
    encoder_forward_at(encoded.data(), inp.data(), pos_of, &p[off[P_WTE]], wpe, B, T, C);
    rnd(encoded, round);
    for (int l = 0; l < L; l++) {
        const Vec &res = l == 0 ? encoded : res3[l - 1];
        layernorm_forward(ln1[l].data(), m1[l].data(), r1[l].data(), res.data(), P_(P_LN1W, l), P_(P_LN1B, l), N, C);
        rnd(ln1[l], round);
        matmul_forward(qkv[l].data(), ln1[l].data(), P_(P_QKVW, l), P_(P_QKVB, l), N, C, Q);
        rnd(qkv[l], round);
        emu_attn_forward(atty[l], att[l], qkv[l], ea, round);
        rnd(atty[l], round);
        matmul_forward(proj.data(), atty[l].data(), P_(P_ATTPROJW, l), P_(P_ATTPROJB, l), N, C, C);
        rnd(proj, round);
        residual_forward(res2[l].data(), res.data(), proj.data(), NC);
        rnd(res2[l], round);
        layernorm_forward(ln2[l].data(), m2[l].data(), r2[l].data(), res2[l].data(), P_(P_LN2W, l), P_(P_LN2B, l), N, C);
        rnd(ln2[l], round);
        matmul_forward(tmp4.data(), ln2[l].data(), P_(P_FCW, l), P_(P_FCB, l), N, C, 4 * C);
        gelu_forward(fchg[l].data(), tmp4.data(), 4 * NC); /* the epilogue applies GELU before rounding */
        fch[l] = tmp4;
        rnd(fch[l], round);
        rnd(fchg[l], round);
        matmul_forward(proj.data(), fchg[l].data(), P_(P_FCPROJW, l), P_(P_FCPROJB, l), N, 4 * C, C);
        rnd(proj, round);
        residual_forward(res3[l].data(), res2[l].data(), proj.data(), NC);
        rnd(res3[l], round);
    }
    const Vec &last = L ? res3[L - 1] : encoded;
    layernorm_forward(lnf.data(), mf.data(), rf.data(), last.data(), &p[off[P_LNFW]], &p[off[P_LNFB]], N, C);
    rnd(lnf, round);
    Vec logits((size_t)N * V), probs((size_t)N * V), losses(N);
    matmul_forward(logits.data(), lnf.data(), &p[off[P_WTE]], NULL, N, C, V);
    rnd(logits, round);
    softmax_crossentropy_forward(probs.data(), losses.data(), logits.data(), tgt.data(), N, V, V);
    double total = 0.0;
    int counted = 0;
    for (int i = 0; i < N; i++)
        if (tgt[i] >= 0) { total += losses[i]; counted++; }
    float dloss = counted ? 1.0f / counted : 0.0f;
    /* backward */
    Vec dlogits((size_t)N * V), dln(NC), dres(NC), dfch(4 * NC), dqkv((size_t)N * Q);
    /* as the GPU: dlogits = (p - y) G/n rounded (G = 1 but in fp16), then the lm head's matmuls
     * multiply by loss_scale/G */
    const float gain = dlogits_gain(round, N);
    softmax_crossentropy_backward(dlogits.data(), probs.data(), tgt.data(), N, V, V, dloss * gain);
    rnd(dlogits, round);
    if (loss_scale / gain != 1.0f)
        for (auto &v : dlogits) v *= loss_scale / gain;
    std::fill(dln.begin(), dln.end(), 0.0f);
    matmul_backward(dln.data(), &grads[off[P_WTE]], NULL, dlogits.data(), lnf.data(), &p[off[P_WTE]], N, C, V);
    rnd(dln, round);
    std::fill(dres.begin(), dres.end(), 0.0f);
    layernorm_backward(dres.data(), &grads[off[P_LNFW]], &grads[off[P_LNFB]], dln.data(), last.data(),
                       &p[off[P_LNFW]], mf.data(), rf.data(), N, C);
    rnd(dres, round);
    Vec fchg_again;
    for (int l = L - 1; l >= 0; l--) {
        const Vec &res = l == 0 ? encoded : res3[l - 1];
        /* recompute gelu and all: fcproj's weight gradient reads GELU of the rounded pre-activation,
         * recomputed and rounded again (forward's came from the unrounded one); the LayerNorm
         * recompute of all gives forward's values exactly (it reads the rounded residual) */
        const Vec *gelu_out = &fchg[l];
        if (recompute >= RECOMPUTE_GELU && l < L - x.keep_layers) { /* the last keep_layers keep theirs */
            fchg_again.assign(4 * NC, 0.0f);
            gelu_forward(fchg_again.data(), fch[l].data(), 4 * NC);
            rnd(fchg_again, round);
            gelu_out = &fchg_again;
        }
        std::fill(tmp4.begin(), tmp4.end(), 0.0f);
        matmul_backward(tmp4.data(), G_(P_FCPROJW, l), G_(P_FCPROJB, l), dres.data(), gelu_out->data(),
                        P_(P_FCPROJW, l), N, 4 * C, C);
        std::fill(dfch.begin(), dfch.end(), 0.0f);
        gelu_backward(dfch.data(), fch[l].data(), tmp4.data(), 4 * NC);
        rnd(dfch, round);
        std::fill(dln.begin(), dln.end(), 0.0f);
        matmul_backward(dln.data(), G_(P_FCW, l), G_(P_FCB, l), dfch.data(), ln2[l].data(), P_(P_FCW, l), N, C, 4 * C);
        rnd(dln, round);
        layernorm_backward(dres.data(), G_(P_LN2W, l), G_(P_LN2B, l), dln.data(), res2[l].data(), P_(P_LN2W, l),
                           m2[l].data(), r2[l].data(), N, C);
        rnd(dres, round);
        std::fill(dln.begin(), dln.end(), 0.0f);
        matmul_backward(dln.data(), G_(P_ATTPROJW, l), G_(P_ATTPROJB, l), dres.data(), atty[l].data(),
                        P_(P_ATTPROJW, l), N, C, C);
        rnd(dln, round);
        emu_attn_backward(dqkv, dln, att[l], qkv[l], ea, round);
        std::fill(dln.begin(), dln.end(), 0.0f);
        matmul_backward(dln.data(), G_(P_QKVW, l), G_(P_QKVB, l), dqkv.data(), ln1[l].data(), P_(P_QKVW, l), N, C, Q);
        rnd(dln, round);
        layernorm_backward(dres.data(), G_(P_LN1W, l), G_(P_LN1B, l), dln.data(), res.data(), P_(P_LN1W, l),
                           m1[l].data(), r1[l].data(), N, C);
        rnd(dres, round);
    }
    encoder_backward_at(&grads[off[P_WTE]], x.alibi ? NULL : &grads[off[P_WPE]], dres.data(), inp.data(), pos_of,
                        B, T, C);
    return counted ? (float)(total / counted) : 0.0f;
}

/* ---- helpers over a backend ---------------------------------------------------------- */

/* One forward and backward with the loss's gradient times loss_scale; grads are returned
 * unscaled (divided by loss_scale: exact for a power of two). */
static float one_step(const Backend *be, Model *m, const std::vector<int> &inp, const std::vector<int> &tgt,
                      int B, int T, Vec &grads, float loss_scale = 1.0f) {
    be->zero_grad(m);
    float loss = be->forward(m, inp.data(), tgt.data(), B, T);
    be->backward(m, loss_scale, 1);
    be->get_grads(m, grads.data());
    if (loss_scale != 1.0f)
        for (auto &g : grads) g /= loss_scale;
    return loss;
}

/* Worst per-tensor scaled error of a against b; names the tensor. */
static double worst_tensor_err(const GPT2Config &c, const Vec &a, const Vec &b, std::string *which) {
    size_t off[GPT2_NUM_PARAM_TENSORS], sz[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_sizes(&c, sz);
    gpt2_param_offsets(&c, off);
    double worst = 0.0;
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        double e = test_max_err_scaled(&a[off[t]], &b[off[t]], sz[t]);
        if (e > worst || std::isnan(e)) { worst = e; if (which) *which = gpt2_param_name(t); }
    }
    return worst;
}

/* ---- the checks ------------------------------------------------------------------------ */

/* Why the case's CUDA kernel refuses its attention (NULL: it runs it). The mask's arrays are
 * presence markers here: unsupported() does not read them. */
static const char *gpu_refuses(const GPT2Config &c, const Extras &x, int B, int T, Precision p) {
    static const int marker_doc = 0;
    static const float marker_slope = 0.0f;
    const AttnImpl *impl = attn_impl(x.kernel, ATTN_CUDA);
    if (!impl) return "no such CUDA kernel in this build";
    AttnShape s = attn_shape_packed_gqa(B, T, c.num_heads, gpt2_kv_heads(&c), c.channels / c.num_heads,
                                        ATTN_MASK_CAUSAL, precision_attn_dtype(p));
    s.mask.window = x.window;
    if (x.alibi) s.mask.alibi_slopes = &marker_slope;
    if (x.doc_sep >= 0) s.mask.doc = &marker_doc;
    return impl->unsupported(&s);
}

/* Tokens with the case's separator planted (documents of 1 to 13 tokens, one at position 0 of
 * some rows and not of others). */
static void plant_separators(std::vector<int> &inp, const Extras &x, int T) {
    if (x.doc_sep < 0) return;
    for (size_t i = 0; i < inp.size(); i++) {
        int t = (int)(i % T), b = (int)(i / T);
        if ((t * 5 + b * 3) % 13 == 0 || (t == T - 1 && b == 0) || (t == 1 && b == 1)) inp[i] = x.doc_sep;
        else if (inp[i] == x.doc_sep) inp[i] = (x.doc_sep + 1) % 256;
    }
}

/* Counts the case as skipped when the kernel refuses it; returns 1 when it runs. */
static int case_runs(const char *label, const GPT2Config &c, const Extras &x, int B, int T, Precision p, int checks) {
    const char *why = gpu_refuses(with_extras(c, x), x, B, T, p);
    if (!why) return 1;
    char line[512];
    snprintf(line, sizeof line, "(%s: %s refuses it: %s)", label, attn_kernel_name(x.kernel), why);
    test_skip(checks, line);
    return 0;
}

/* ---- the memory plan (model/memory_plan_cuda.h; host only, so it also runs without a GPU) ----- */

static const MemPlanBuffer *plan_buffer(const MemoryLayout &lay, const char *name) {
    for (int i = 0; i < lay.num_buffers; i++)
        if (strcmp(lay.buffers[i].name, name) == 0) return &lay.buffers[i];
    return NULL;
}

/* Lays out o's plan measuring (NULL bases) and over made-up bases (never dereferenced), and checks
 * it: each buffer inside its arena; two buffers of one arena overlap only when no phase has both
 * live; the phase-shared region holds exactly the buffers not live in every phase; the laid-out
 * pointers are the bases plus the measured offsets. Returns the held bytes (0 when not run). */
static size_t check_plan(const char *label, const ModelOptions &o, MemoryLayout *out = NULL) {
    const AttnImpl *attn = attn_impl(o.attn, ATTN_CUDA);
    if (!attn) {
        char why[256];
        snprintf(why, sizeof why, "(plan %s: no CUDA %s in this build)", label, attn_kernel_name(o.attn));
        test_skip(5, why);
        return 0;
    }
    size_t off[GPT2_NUM_PARAM_TENSORS], size[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&o.config, size);
    gpt2_param_offsets(&o.config, off);
    GradSync gs;
    gsync_plan(&gs, &o, n, off, size);
    MemPlanInput in;
    memplan_input(&o, attn, &gs, &in);
    static MemoryLayout lay, at; /* large: not on the stack */
    size_t held = memory_plan(&in, o.B, NULL, NULL, NULL, &lay);
    CHECK(lay.num_buffers > 0 && lay.num_buffers < MEMPLAN_MAX_BUFFERS, "plan %s: %d buffers listed", label,
          lay.num_buffers);
    CHECK(held == lay.param_bytes + lay.act_bytes + lay.scratch_bytes + cuda_matmul_workspace_bytes(),
          "plan %s: the total is not the arenas' sum", label);
    const size_t arena_bytes[3] = {lay.param_bytes, lay.act_bytes, lay.scratch_bytes};
    const size_t r0 = lay.region_offset, r1 = lay.region_offset + lay.region_bytes;
    int outside = 0, clash = 0, misplaced = 0;
    for (int i = 0; i < lay.num_buffers; i++) {
        const MemPlanBuffer &b = lay.buffers[i];
        outside += b.offset + b.bytes > arena_bytes[b.arena];
        int in_region = b.arena == MEMARENA_SCRATCH && b.offset < r1 && b.offset + b.bytes > r0;
        int inside_region = b.arena == MEMARENA_SCRATCH && b.offset >= r0 && b.offset + b.bytes <= r1;
        misplaced += b.phases == MEMPHASE_ALL ? in_region : !inside_region;
        for (int j = i + 1; j < lay.num_buffers; j++) {
            const MemPlanBuffer &c = lay.buffers[j];
            int overlap = b.arena == c.arena && b.offset < c.offset + c.bytes && c.offset < b.offset + b.bytes;
            if (overlap && (b.phases & c.phases)) {
                clash++;
                printf("plan %s: %s and %s overlap and are both live in phases %d\n", label, b.name, c.name,
                       b.phases & c.phases);
            }
        }
    }
    CHECK(outside == 0, "plan %s: %d buffers reach past their arena", label, outside);
    CHECK(clash == 0, "plan %s: %d pairs of buffers share memory while both live", label, clash);
    CHECK(misplaced == 0, "plan %s: %d buffers on the wrong side of the phase-shared region", label, misplaced);
    char *bases[3] = {(char *)(uintptr_t)0x100000000ull, (char *)(uintptr_t)0x200000000ull,
                      (char *)(uintptr_t)0x300000000ull};
    memory_plan(&in, o.B, bases[0], bases[1], bases[2], &at);
    int same = at.num_buffers == lay.num_buffers;
    for (int i = 0; same && i < lay.num_buffers; i++)
        same &= at.buffers[i].offset == lay.buffers[i].offset && at.buffers[i].bytes == lay.buffers[i].bytes;
    same &= at.grads == (float *)(bases[0] + plan_buffer(lay, "grads (fp32)")->offset);
    same &= at.s.logits == bases[2] + plan_buffer(lay, "logits / dlogits")->offset;
    same &= at.s.dres == bases[2] + plan_buffer(lay, "dres")->offset;
    same &= at.a.fch == bases[1] + plan_buffer(lay, "fch (GELU input)")->offset;
    const MemPlanBuffer *g = plan_buffer(lay, lay.share_gelu ? "fch_gelu (shared)" : "fch_gelu (per layer)");
    same &= g && (char *)at.a.fch_gelu == bases[g->arena] + g->offset;
    const MemPlanBuffer *gk = plan_buffer(lay, "fch_gelu (kept layers)");
    same &= gk ? (char *)at.a.fch_gelu_kept == bases[gk->arena] + gk->offset : at.a.fch_gelu_kept == NULL;
    CHECK(same, "plan %s: laid-out pointers are not the bases plus the measured offsets", label);
    if (out) *out = lay;
    return held;
}

static ModelOptions plan_options(const GPT2Config &c, int B, int T, Precision p, RecomputeMode r, AttnKernel k) {
    ModelOptions o;
    model_options_defaults(&o);
    o.config = c;
    o.B = B;
    o.T = T;
    o.attn = k;
    o.mask = ATTN_MASK_CAUSAL;
    o.precision = p;
    o.recompute = r;
    o.grad_comm = p == PRECISION_BF16 ? PRECISION_BF16 : PRECISION_FP32;
    return o;
}

static void check_memory_plans(void) {
    static const RecomputeMode modes[3] = {RECOMPUTE_NONE, RECOMPUTE_GELU, RECOMPUTE_ALL};
    char label[160];
    /* the recompute modes: the per-layer buffers they drop, and where their shared copy went */
    GPT2Config small = small_config(300, 3, 64, 2, 64); /* D = 32: every kernel's head size */
    const size_t N = 4 * 32, C = 64, L = 3;
    static MemoryLayout lay[3];
    for (int k = 0; k < 2; k++) {
        Precision p = k ? PRECISION_FP32 : PRECISION_BF16;
        for (int i = 0; i < 3; i++) {
            snprintf(label, sizeof label, "%s recompute %s", precision_name(p), recompute_name(modes[i]));
            ModelOptions o = plan_options(small, 4, 32, p, modes[i], k ? ATTN_NAIVE : ATTN_FLASH);
            check_plan(label, o, &lay[i]);
        }
        const size_t e = k ? 4 : 2;
        CHECK(lay[0].act_bytes - lay[1].act_bytes == L * N * 4 * C * e, "plan %s: gelu keeps %zu fewer act bytes, "
              "not L N 4C e = %zu", precision_name(p), lay[0].act_bytes - lay[1].act_bytes, L * N * 4 * C * e);
        CHECK(lay[1].act_bytes - lay[2].act_bytes == 2 * L * N * C * e, "plan %s: all keeps %zu fewer act bytes "
              "than gelu, not 2 L N C e = %zu", precision_name(p), lay[1].act_bytes - lay[2].act_bytes, 2 * L * N * C * e);
        CHECK(!lay[0].share_gelu && !lay[0].share_ln && lay[1].share_gelu && !lay[1].share_ln && lay[2].share_gelu &&
                  lay[2].share_ln && plan_buffer(lay[2], "ln1 (shared)") && !plan_buffer(lay[1], "ln1 (shared)"),
              "plan %s: the shared buffers do not follow the mode", precision_name(p));
    }
    /* --keep-layers K: the last K layers keep their copies in the acts arena (K slots of each
     * shared buffer); K >= L is recompute none's layout */
    for (int i = 1; i < 3; i++) {
        static MemoryLayout kept[3];
        const int Ks[3] = {1, 3, 5};
        for (int k = 0; k < 3; k++) {
            snprintf(label, sizeof label, "bf16 recompute %s, keep %d of 3 layers", recompute_name(modes[i]), Ks[k]);
            ModelOptions o = plan_options(small, 4, 32, PRECISION_BF16, modes[i], ATTN_FLASH);
            o.keep_layers = Ks[k];
            check_plan(label, o, &kept[k]);
        }
        snprintf(label, sizeof label, "bf16 recompute %s", recompute_name(modes[i]));
        ModelOptions o = plan_options(small, 4, 32, PRECISION_BF16, modes[i], ATTN_FLASH);
        static MemoryLayout base, none;
        check_plan(label, o, &base);
        o.recompute = RECOMPUTE_NONE;
        check_plan("bf16 recompute none", o, &none);
        const size_t per_layer = N * 4 * C * 2 + (i == 2 ? 2 * N * C * 2 : 0);
        const MemPlanBuffer *gk = plan_buffer(kept[0], "fch_gelu (kept layers)");
        const MemPlanBuffer *lk = plan_buffer(kept[0], "ln1 (kept layers)");
        CHECK(kept[0].rc_layers == 2 && kept[0].share_gelu && kept[0].share_ln == (i == 2) && gk &&
                  gk->bytes == N * 4 * C * 2 && (lk != NULL) == (i == 2) &&
                  kept[0].act_bytes - base.act_bytes == per_layer,
              "plan recompute %s keep 1: rc_layers %d, %zu more act bytes (expected %zu)", recompute_name(modes[i]),
              kept[0].rc_layers, kept[0].act_bytes - base.act_bytes, per_layer);
        for (int k = 1; k < 3; k++)
            CHECK(kept[k].rc_layers == 0 && !kept[k].share_gelu && !kept[k].share_ln &&
                      kept[k].act_bytes == none.act_bytes && kept[k].scratch_bytes == none.scratch_bytes,
                  "plan recompute %s keep %d of 3: not recompute none's layout", recompute_name(modes[i]), Ks[k]);
    }
    /* fp32's chunked classifier, the mask's and documents' arrays, data parallel's bf16 copy, ZeRO */
    for (int i = 0; i < 3; i++) {
        ModelOptions o = plan_options(small, 3, 17, PRECISION_FP32, modes[i], ATTN_NAIVE);
        o.logits_chunk_rows = 7;
        snprintf(label, sizeof label, "fp32 chunked classifier, recompute %s", recompute_name(modes[i]));
        check_plan(label, o);
        o = plan_options(small, 3, 29, PRECISION_FP16, modes[i], ATTN_MEMEFF);
        o.mask = ATTN_MASK_DENSE;
        o.doc_sep.len = 1;
        o.doc_sep.tokens[0] = 7;
        o.doc_positions = 1;
        snprintf(label, sizeof label, "fp16 dense mask + documents, recompute %s", recompute_name(modes[i]));
        check_plan(label, o);
        GPT2Config alibi = small;
        alibi.pos = GPT2_POS_ALIBI;
        o = plan_options(alibi, 4, 32, PRECISION_BF16, modes[i], ATTN_FLASH);
        o.world = 2;
        o.rank = 1;
        o.zero_stage = i == 2;
        snprintf(label, sizeof label, "bf16 alibi, 2 ranks%s, recompute %s", i == 2 ? " ZeRO-1" : "",
                 recompute_name(modes[i]));
        check_plan(label, o);
    }
    /* GPT-2 124M at T = 1024 (issue #13's runs): what each mode holds, for the log */
    GPT2Config g;
    char err[256];
    if (gpt2_config_preset("gpt2", &g, err, sizeof err) == 0) {
        g.vocab_size = 50257;
        g.padded_vocab_size = gpt2_padded_vocab(g.vocab_size);
        for (int b = 16; b <= 64; b *= 4)
            for (int i = 0; i < 3; i++) {
                snprintf(label, sizeof label, "gpt2 B=%d bf16 flash-sm90 recompute %s", b, recompute_name(modes[i]));
                size_t held = check_plan(label, plan_options(g, b, 1024, PRECISION_BF16, modes[i], ATTN_FLASH_SM90));
                printf("%s: %.3f GiB held\n", label, held / 1073741824.0);
            }
    }
}

static void check_fp32(const char *label, const GPT2Config &c0, int B, int T, RecomputeMode recompute, int chunk_rows,
                       const Extras &x = kPlain) {
    const GPT2Config c = with_extras(c0, x);
    if (!case_runs(label, c, x, B, T, PRECISION_FP32, 6)) return;
    uint64_t rng = 1234 + B * 7 + T;
    size_t sz[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sz);
    Vec params(n), gc(n), gg(n);
    gpt2_init_params(&c, params.data(), 42);
    std::vector<int> inp(B * T), tgt(B * T);
    random_tokens(inp, c.vocab_size, &rng, 0);
    random_tokens(tgt, c.vocab_size, &rng, 1);
    plant_separators(inp, x, T);
    Model *mc = make(&cpu_backend, c, B, T, PRECISION_FP32, RECOMPUTE_NONE, 0, 0, 0, x);
    Model *mg = make(gpu, c, B, T, PRECISION_FP32, recompute, 0, chunk_rows, 0, x);
    CHECK(mc && mg, "%s: create", label);
    if (!mc || !mg) return;
    cpu_backend.set_params(mc, params.data());
    gpu->set_params(mg, params.data());
    float lc = one_step(&cpu_backend, mc, inp, tgt, B, T, gc);
    float lg = one_step(gpu, mg, inp, tgt, B, T, gg);
    std::string which;
    double ge = worst_tensor_err(c, gg, gc, &which);
    double ne = rel(gpu->grad_norm(mg), cpu_backend.grad_norm(mc));
    printf("%s: loss cpu %.6f gpu %.6f (rel %.2e), worst grad err %.2e (%s), norm rel %.2e\n", label, lc, lg,
           rel(lg, lc), ge, which.c_str(), ne);
    CHECK(rel(lg, lc) < 1e-4, "%s: loss %g vs %g", label, lg, lc);
    CHECK(ge < 1e-4, "%s: gradient of %s off by %.3g", label, which.c_str(), ge);
    CHECK(ne < 1e-4, "%s: grad norm off by %.3g", label, ne);
    Vec lgc(c.vocab_size), lgg(c.vocab_size);
    int bb = B - 1, tt = T / 2;
    cpu_backend.logits_at(mc, bb, tt, lgc.data());
    gpu->logits_at(mg, bb, tt, lgg.data());
    CHECK(test_max_err_scaled(lgg.data(), lgc.data(), lgc.size()) < 1e-4, "%s: logits_at", label);
    /* reproducible: the same step again gives the same bits */
    Vec gg2(n);
    float lg2 = one_step(gpu, mg, inp, tgt, B, T, gg2);
    CHECK(lg2 == lg && memcmp(gg2.data(), gg.data(), n * 4) == 0, "%s: not bitwise reproducible", label);
    cpu_backend.destroy(mc);
    gpu->destroy(mg);
}

static void check_adamw_steps(const GPT2Config &c, int B, int T, int no_linear_bias) {
    uint64_t rng = 99;
    size_t sz[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sz);
    Vec params(n);
    gpt2_init_params(&c, params.data(), 7);
    Model *mc = make(&cpu_backend, c, B, T, PRECISION_FP32, RECOMPUTE_NONE, no_linear_bias);
    /* recompute none: this check's floor assumes the GPU does the CPU's arithmetic in another
     * order, and recompute gelu does not (the recomputed GELU is our kernel's, the forward's is
     * cuBLASLt's GELU_AUX epilogue: ulps apart, which 20 Adam steps amplified in fcprojw to 4.1x
     * and 7.1x the floors on the H200, 2026-12-02); the recompute modes have their own checks */
    Model *mg = make(gpu, c, B, T, PRECISION_FP32, RECOMPUTE_NONE, no_linear_bias);
    CHECK(mc && mg, "adamw: create");
    if (!mc || !mg) return;
    cpu_backend.set_params(mc, params.data());
    gpu->set_params(mg, params.data());
    std::vector<int> inp(B * T), tgt(B * T);
    double worst = 0.0;
    for (int step = 1; step <= 20; step++) {
        float lc = 0, lg = 0, nc, ng;
        cpu_backend.zero_grad(mc);
        gpu->zero_grad(mg);
        for (int micro = 0; micro < 2; micro++) {
            random_tokens(inp, c.vocab_size, &rng, 0);
            for (int i = 0; i < B * T; i++) tgt[i] = (inp[i] * 7 + 3) % c.vocab_size; /* learnable */
            lc += 0.5f * cpu_backend.forward(mc, inp.data(), tgt.data(), B, T);
            lg += 0.5f * gpu->forward(mg, inp.data(), tgt.data(), B, T);
            cpu_backend.backward(mc, 0.5f, micro == 1);
            gpu->backward(mg, 0.5f, micro == 1);
        }
        nc = cpu_backend.grad_norm(mc);
        ng = gpu->grad_norm(mg);
        AdamWStep s = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, nc > 1.0f ? 1.0f / nc : 1.0f, step};
        cpu_backend.update(mc, &s);
        gpu->update(mg, &s);
        double e = rel(lg, lc);
        if (e > worst) worst = e;
        if (step == 1 || step == 20) printf("adamw%s step %2d: loss cpu %.6f gpu %.6f norm cpu %.5f gpu %.5f\n",
                                            no_linear_bias ? " (no linear bias)" : "", step, lc, lg, nc, ng);
    }
    Vec pc(n), pg(n);
    cpu_backend.get_params(mc, pc.data());
    gpu->get_params(mg, pg.data());
    std::string which, which_floor;
    double pe = worst_tensor_err(c, pg, pc, &which);
    /* The noise floor of this comparison: Adam divides by sqrt(v), so a parameter whose gradient
     * sits at the rounding level moves by ~lr whatever the rounding; 20 steps amplify any fp32
     * difference. The same CPU run started from parameters 1 ulp away measures that floor; the
     * GPU, which only sums in another order, must stay within a few times of it. */
    Vec params_ulp(params), pc_ulp(n);
    for (size_t i = 0; i < n; i++) params_ulp[i] = nextafterf(params[i], (i & 1) ? INFINITY : -INFINITY);
    Model *mu = make(&cpu_backend, c, B, T, PRECISION_FP32, RECOMPUTE_NONE, no_linear_bias);
    cpu_backend.set_params(mu, params_ulp.data());
    uint64_t rng_ulp = 99;
    for (int step = 1; step <= 20; step++) {
        cpu_backend.zero_grad(mu);
        for (int micro = 0; micro < 2; micro++) {
            random_tokens(inp, c.vocab_size, &rng_ulp, 0);
            for (int i = 0; i < B * T; i++) tgt[i] = (inp[i] * 7 + 3) % c.vocab_size;
            cpu_backend.forward(mu, inp.data(), tgt.data(), B, T);
            cpu_backend.backward(mu, 0.5f, micro == 1);
        }
        float nu = cpu_backend.grad_norm(mu);
        AdamWStep s = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, nu > 1.0f ? 1.0f / nu : 1.0f, step};
        cpu_backend.update(mu, &s);
    }
    cpu_backend.get_params(mu, pc_ulp.data());
    cpu_backend.destroy(mu);
    double floor_err = worst_tensor_err(c, pc_ulp, pc, &which_floor);
    printf("adamw: worst loss rel err over 20 steps %.2e, params after %.2e (%s); CPU from 1-ulp-off "
           "params: %.2e (%s)\n", worst, pe, which.c_str(), floor_err, which_floor.c_str());
    CHECK(worst < 1e-4, "adamw: losses drift %.3g", worst);
    CHECK(pe < 4.0 * floor_err + 1e-5, "adamw: params drift %.3g (%s), over 4x the 1-ulp floor %.3g", pe,
          which.c_str(), floor_err);
    /* Adam state round-trips */
    Vec mm(n), vv(n), mm2(n), vv2(n);
    gpu->get_adam_state(mg, mm.data(), vv.data());
    gpu->set_adam_state(mg, mm.data(), vv.data());
    gpu->get_adam_state(mg, mm2.data(), vv2.data());
    CHECK(memcmp(mm.data(), mm2.data(), n * 4) == 0 && memcmp(vv.data(), vv2.data(), n * 4) == 0, "adam state round trip");
    cpu_backend.destroy(mc);
    gpu->destroy(mg);
}

/* bf16 or fp16 (prec) against the fp32 CPU, within 2x of the emulated rounding's error. fp16 runs
 * with a loss scale of 1024 (its gradients would lose their small values without one), bf16 with
 * none; the gradients compared are unscaled. */
static void check_half(const char *label, const GPT2Config &c0, int B, int T, Precision prec, const Extras &x = kPlain,
                       RecomputeMode recompute = RECOMPUTE_GELU) {
    const GPT2Config c = with_extras(c0, x);
    if (!case_runs(label, c, x, B, T, prec, 4)) return;
    const float S = prec == PRECISION_FP16 ? 1024.0f : 1.0f;
    const int mode = round_mode(prec);
    uint64_t rng = 555 + T;
    size_t sz[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sz);
    Vec params(n), gref(n), gemu(n), gemu0(n), ggpu(n);
    gpt2_init_params(&c, params.data(), 11);
    std::vector<int> inp(B * T), tgt(B * T);
    random_tokens(inp, c.vocab_size, &rng, 0);
    random_tokens(tgt, c.vocab_size, &rng, 1);
    plant_separators(inp, x, T);
    Model *mc = make(&cpu_backend, c, B, T, PRECISION_FP32, RECOMPUTE_NONE, 0, 0, 0, x);
    Model *mg = make(gpu, c, B, T, prec, recompute, 0, 0, 0, x);
    CHECK(mc && mg, "%s: create", label);
    if (!mc || !mg) return;
    cpu_backend.set_params(mc, params.data());
    gpu->set_params(mg, params.data());
    float lref = one_step(&cpu_backend, mc, inp, tgt, B, T, gref);
    float lgpu = one_step(gpu, mg, inp, tgt, B, T, ggpu, S);
    float lemu0 = emu_step(c, params, inp, tgt, B, T, ROUND_NONE, gemu0, x, 1.0f, recompute);
    float lemu = emu_step(c, params, inp, tgt, B, T, mode, gemu, x, S, recompute);
    for (auto &g : gemu) g /= S;
    std::string w0;
    double e0 = worst_tensor_err(c, gemu0, gref, &w0);
    CHECK(rel(lemu0, lref) < 1e-5 && e0 < 1e-4, "%s: the emulation without rounding is not the CPU backend (%g, %s)",
          label, e0, w0.c_str());
    double loss_emu = fabs(lemu - lref), loss_gpu = fabs(lgpu - lref);
    printf("%s: loss ref %.6f emu %.6f gpu %.6f | err emu %.2e gpu %.2e\n", label, lref, lemu, lgpu, loss_emu, loss_gpu);
    CHECK(loss_gpu <= 2 * loss_emu + 1e-4 * fabs(lref), "%s: %s loss error %.3g vs emulation %.3g", label,
          precision_name(prec), loss_gpu, loss_emu);
    size_t off[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_offsets(&c, off);
    int bad = 0;
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        double ee = test_max_err_scaled(&gemu[off[t]], &gref[off[t]], sz[t]);
        double eg = test_max_err_scaled(&ggpu[off[t]], &gref[off[t]], sz[t]);
        int ok = eg <= 2 * ee + 1e-4;
        if (sz[t] == 0) continue; /* wpe with ALiBi */
        printf("  %-10s err emu %.2e gpu %.2e%s\n", gpt2_param_name(t), ee, eg, ok ? "" : "  <-- over 2x");
        bad += !ok;
    }
    CHECK(bad == 0, "%s: %d gradient tensors beyond 2x the emulated %s error", label, bad, precision_name(prec));
    cpu_backend.destroy(mc);
    gpu->destroy(mg);
}

static void check_bf16(const char *label, const GPT2Config &c, int B, int T, const Extras &x = kPlain,
                       RecomputeMode recompute = RECOMPUTE_GELU) {
    check_half(label, c, B, T, PRECISION_BF16, x, recompute);
}
static void check_fp16(const char *label, const GPT2Config &c, int B, int T, const Extras &x = kPlain,
                       RecomputeMode recompute = RECOMPUTE_GELU) {
    check_half(label, c, B, T, PRECISION_FP16, x, recompute);
}

/* ---- fp16 loss scaling through the trainer's step (train/trainer.h, train/loss_scale.h) ------ */

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

/* A dynamic scale of 2^32 overflows fp16's activation gradients: the first step is skipped (the
 * weights and AdamW moments untouched), the scale halves until steps run, and the run recovers
 * to a finite, falling loss. The same run replayed as CUDA graphs (a new capture whenever the
 * scale changes: it is the backward's key) gives the same losses and scales bit for bit. */
static void check_fp16_overflow(const GPT2Config &c, int B, int T) {
    if (!case_runs("fp16 overflow", c, kPlain, B, T, PRECISION_FP16, 8)) return;
    size_t sz[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sz);
    Vec params(n);
    gpt2_init_params(&c, params.data(), 21);
    const float init = 4294967296.0f; /* 2^32 */
    const int steps = 60;
    std::vector<float> losses[2], scales[2];
    for (int graphs = 0; graphs < 2; graphs++) {
        Model *mg = make(gpu, c, B, T, PRECISION_FP16, RECOMPUTE_GELU, 0, 0, graphs);
        CHECK(mg != NULL, "fp16 overflow: create");
        if (!mg) return;
        gpu->set_params(mg, params.data());
        LossScaler ls;
        loss_scale_init(&ls, LOSS_SCALE_DYNAMIC, init, 4);
        StepShape shape = {B, T, 1, 1, 1.0f};
        Feed f = {5, c.vocab_size, B * T};
        std::vector<int> inp(B * T), tgt(B * T);
        Vec p0(n), p1(n), m1(n), v1(n);
        int first_skipped = 0, finite = 1;
        for (int step = 0; step < steps; step++) {
            AdamWStep s = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f, step + 1 - (int)ls.skipped};
            if (step == 0) gpu->get_params(mg, p0.data());
            float norm;
            float loss = trainer_step(gpu, mg, &shape, feed_learnable, &f, inp.data(), tgt.data(), &s, &ls, &norm);
            if (step == 0) {
                first_skipped = ls.last_skipped;
                gpu->get_params(mg, p1.data());
                gpu->get_adam_state(mg, m1.data(), v1.data());
            }
            finite &= std::isfinite(loss) && (ls.last_skipped || std::isfinite(norm));
            losses[graphs].push_back(loss);
            scales[graphs].push_back(ls.last_scale);
        }
        float first = 0, last = 0;
        for (int i = 0; i < 5; i++) first += losses[graphs][i] / 5, last += losses[graphs][steps - 1 - i] / 5;
        int untouched = memcmp(p0.data(), p1.data(), n * 4) == 0;
        for (size_t i = 0; i < n; i++) untouched &= m1[i] == 0.0f && v1[i] == 0.0f;
        printf("fp16 overflow%s: %llu of %d steps skipped, scale %g -> %g, loss %.4f -> %.4f\n",
               graphs ? " (graphs)" : "", (unsigned long long)ls.skipped, steps, init, ls.scale, first, last);
        if (!graphs) {
            CHECK(first_skipped, "fp16 overflow: a loss scale of 2^32 did not overflow the first step");
            CHECK(untouched, "fp16 overflow: the skipped step changed the weights or the AdamW state");
            CHECK(ls.skipped >= 1 && ls.skipped <= 45, "fp16 overflow: %llu of %d steps skipped (at most 45)",
                  (unsigned long long)ls.skipped, steps);
            CHECK(ls.scale < init, "fp16 overflow: the scale did not come down (%g)", ls.scale);
            CHECK(finite, "fp16 overflow: a loss or a clean step's norm is not finite");
            CHECK(last < first, "fp16 overflow: the loss did not fall after recovering (%g -> %g)", first, last);
        }
        gpu->destroy(mg);
    }
    CHECK(losses[0] == losses[1] && scales[0] == scales[1], "fp16 overflow: graph replay differs from eager");
}

static void check_graphs(const GPT2Config &c0, int B, int T, Precision prec, const Extras &x = kPlain,
                         RecomputeMode recompute = RECOMPUTE_GELU) {
    const GPT2Config c = with_extras(c0, x);
    if (!case_runs("graphs", c, x, B, T, prec, 1)) return;
    uint64_t rng = 77;
    size_t sz[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sz);
    Vec params(n), g0(n), g1(n);
    gpt2_init_params(&c, params.data(), 3);
    std::vector<int> inp(B * T), tgt(B * T);
    random_tokens(inp, c.vocab_size, &rng, 0);
    random_tokens(tgt, c.vocab_size, &rng, 1);
    plant_separators(inp, x, T);
    /* the same parameters in an eager model and in one that replays CUDA graphs */
    Model *me = make(gpu, c, B, T, prec, recompute, 0, 0, 0, x);
    Model *mg = make(gpu, c, B, T, prec, recompute, 0, 0, 1, x);
    CHECK(me && mg, "graphs: create");
    if (!me || !mg) return;
    gpu->set_params(me, params.data());
    gpu->set_params(mg, params.data());
    /* flash's backward adds dQ with fp32 atomics (attention/README.md): its gradients agree to
     * rounding, not bitwise; the loss (forward) is bitwise in every kernel */
    const int exact = x.kernel == ATTN_NAIVE || x.kernel == ATTN_MEMEFF;
    auto same_grads = [&](const Vec &a, const Vec &b) {
        return exact ? memcmp(a.data(), b.data(), n * 4) == 0 : worst_tensor_err(c, a, b, NULL) < 1e-2;
    };
    float l0 = one_step(gpu, me, inp, tgt, B, T, g0);
    int same = 1;
    for (int k = 0; k < 4; k++) { /* eager, capture, replay, replay */
        float l1 = one_step(gpu, mg, inp, tgt, B, T, g1);
        same &= l1 == l0 && same_grads(g0, g1);
    }
    /* new data through the same graph (with documents: other documents, planted elsewhere) */
    std::vector<int> inp2(B * T);
    random_tokens(inp2, c.vocab_size, &rng, 0);
    if (x.doc_sep >= 0)
        for (int i = 0; i < B * T; i++) inp2[i] = i % 7 == 3 ? x.doc_sep : inp2[i] == x.doc_sep ? 0 : inp2[i];
    Vec g2(n), g3(n);
    float la = one_step(gpu, mg, inp2, tgt, B, T, g2);
    float lb = one_step(gpu, me, inp2, tgt, B, T, g3);
    same &= la == lb && la != l0 && same_grads(g2, g3);
    CHECK(same, "graphs (%s, %s, recompute %s): replay differs from eager", precision_name(prec), x.name,
          recompute_name(recompute));
    gpu->destroy(me);
    gpu->destroy(mg);
}

static void check_too_big(void) {
    GPT2Config c = small_config(256, 2, 64, 4, 1024);
    ModelOptions o;
    model_options_defaults(&o);
    o.tf32 = 0;
    o.config = c;
    o.B = 1 << 14;
    o.T = 1024;
    o.attn = ATTN_NAIVE;
    o.mask = ATTN_MASK_CAUSAL;
    o.precision = PRECISION_BF16;
    char err[512] = "";
    Model *m = gpu->create(&o, err, sizeof err);
    printf("too big: %s\n", err);
    CHECK(m == NULL && strstr(err, "needs") && strstr(err, "largest batch that fits is B="), "no refusal: %s", err);
    if (m) gpu->destroy(m);
}

/* The attention's model options against the CPU model, with every CUDA kernel of the registry in
 * fp32, bf16 and fp16 (a kernel that refuses a case skips it). The flash kernels need a head dimension
 * of 32, 64 or 128: 2 heads of 32 (C = 64), and 4 heads of 32 (C = 128) for GQA's 2 K/V heads. */
static void check_attention_options(const GPT2Config &base) {
    GPT2Config c = base;
    c.num_heads = 2;
    GPT2Config c4 = base;
    c4.channels = 128;
    c4.num_heads = 4;
    Extras cases[6];
    cases[0].name = "alibi"; cases[0].alibi = 1;
    cases[1].name = "window 5"; cases[1].window = 5;
    cases[2].name = "documents"; cases[2].doc_sep = 7;
    cases[3].name = "documents + positions"; cases[3].doc_sep = 7; cases[3].doc_positions = 1;
    cases[4].name = "alibi + window + documents"; cases[4].alibi = 1; cases[4].window = 9; cases[4].doc_sep = 7;
    cases[5].name = "kv-heads 2"; cases[5].kv_heads = 2;
    const int nk = ATTN_NUM_IMPLS;
    for (int i = 0; i < 6; i++) {
        const GPT2Config &cc = cases[i].kv_heads ? c4 : c;
        for (int k = 0; k < nk; k++) {
            Extras x = cases[i];
            x.kernel = (AttnKernel)k;
            char label[160];
            snprintf(label, sizeof label, "fp32 %s, %s", x.name, attn_kernel_name(x.kernel));
            check_fp32(label, cc, 3, 29, RECOMPUTE_GELU, 0, x);
            snprintf(label, sizeof label, "bf16 %s, %s", x.name, attn_kernel_name(x.kernel));
            check_bf16(label, cc, 3, 29, x);
            snprintf(label, sizeof label, "fp16 %s, %s", x.name, attn_kernel_name(x.kernel));
            check_fp16(label, cc, 3, 29, x);
        }
    }
    /* new documents each batch reach a replayed graph (uploaded before the launch) */
    Extras docs = cases[3];
    docs.kernel = ATTN_FLASH;
    check_graphs(c, 4, 32, PRECISION_BF16, docs);
    Extras gqa = cases[5];
    gqa.kernel = ATTN_FLASH;
    check_graphs(c4, 4, 32, PRECISION_BF16, gqa);
}

/* forward_backward (backward queued before the loss is read) against forward then backward:
 * the same losses and, bit for bit, the same gradients (naive attention: no atomics), eager and
 * through CUDA graphs, two micro-batches a step, three steps of new data. */
static void check_forward_backward(const GPT2Config &c, int B, int T, Precision prec, int graphs) {
    uint64_t rng = 31;
    size_t sz[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sz);
    Vec params(n), g0(n), g1(n);
    gpt2_init_params(&c, params.data(), 5);
    Model *ma = make(gpu, c, B, T, prec, RECOMPUTE_GELU, 0, 0, graphs);
    Model *mb = make(gpu, c, B, T, prec, RECOMPUTE_GELU, 0, 0, graphs);
    CHECK(ma && mb, "forward_backward: create");
    if (!ma || !mb) return;
    gpu->set_params(ma, params.data());
    gpu->set_params(mb, params.data());
    std::vector<int> inp(B * T), tgt(B * T);
    int same = 1;
    float first = 0.0f, last = 0.0f;
    for (int step = 0; step < 3; step++) {
        gpu->zero_grad(ma);
        gpu->zero_grad(mb);
        for (int micro = 0; micro < 2; micro++) {
            random_tokens(inp, c.vocab_size, &rng, 0);
            random_tokens(tgt, c.vocab_size, &rng, 1);
            /* one model's work at a time: the two models' streams share the process's one cuBLASLt
             * workspace (layers/matmul_cuda.cu), and neither call waits for its backward */
            float la = gpu->forward(ma, inp.data(), tgt.data(), B, T);
            gpu->backward(ma, 0.5f, micro == 1);
            CUDA_OK(cudaDeviceSynchronize());
            float lb = gpu->forward_backward(mb, inp.data(), tgt.data(), B, T, 0.5f, micro == 1);
            CUDA_OK(cudaDeviceSynchronize());
            same &= la == lb;
            if (step == 0 && micro == 0) first = lb;
            last = lb;
        }
        gpu->get_grads(ma, g0.data());
        gpu->get_grads(mb, g1.data());
        same &= memcmp(g0.data(), g1.data(), n * 4) == 0;
    }
    CHECK(same && first != last, "forward_backward (%s, graphs %d): differs from forward + backward",
          precision_name(prec), graphs);
    gpu->destroy(ma);
    gpu->destroy(mb);
}

/* ---- the LayerNorm backward's residual column sum (layers/layernorm_cuda.cu) ----------------- */

/* A host array as precision p on the device (rounded there by the library's own conversion). */
static void *upload_as(Precision p, const Vec &x) {
    float *f = NULL;
    void *d = NULL;
    CUDA_OK(cudaMalloc(&f, x.size() * 4));
    CUDA_OK(cudaMalloc(&d, x.size() * precision_esize(p)));
    CUDA_OK(cudaMemcpy(f, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    if (p == PRECISION_FP32) CUDA_OK(cudaMemcpy(d, f, x.size() * 4, cudaMemcpyDeviceToDevice));
    else cuda_convert_from_f32(p, d, f, x.size(), 0);
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(f);
    return d;
}
static float elem_to_f32(Precision p, const unsigned char *b) {
    if (p == PRECISION_FP32) { float v; memcpy(&v, b, 4); return v; }
    uint16_t h;
    memcpy(&h, b, 2);
    if (p == PRECISION_FP16) { __half_raw r; r.x = h; return __half2float(__half(r)); }
    uint32_t u = (uint32_t)h << 16;
    float v;
    memcpy(&v, &u, 4);
    return v;
}

/* With dres_sum the kernel must leave dinp, dw and db bitwise as without it, and add to dres_sum
 * (poisoned with random values first) the column sums of the dinp it stored: checked against a
 * double sum of those stored values, within fp32 summation's bound (N eps sum |x|). Shapes: the
 * fused path's 1, 2 and 3 packs a lane (C = 64, 200, 768; 16-bit), the other path (C = 1024
 * 16-bit; fp32), N from 1 to more rows than the fused kernel has slices. */
static void check_layernorm_residual_sum(void) {
    const Precision precs[3] = {PRECISION_BF16, PRECISION_FP16, PRECISION_FP32};
    const int Cs[4] = {64, 200, 768, 1024}, Ns[3] = {1, 37, 5000};
    uint64_t rng = 77;
    for (Precision p : precs)
        for (int C : Cs)
            for (int N : Ns) {
                const size_t e = precision_esize(p), nc = (size_t)N * C;
                Vec dout(nc), inp(nc), dinp0(nc), w(C), mean(N), rstd(N), poison(C);
                for (auto &v : dout) v = test_randf(&rng);
                for (auto &v : inp) v = 2.0f * test_randf(&rng);
                for (auto &v : dinp0) v = test_randf(&rng);
                for (auto &v : w) v = 1.0f + 0.5f * test_randf(&rng);
                for (int n = 0; n < N; n++) { mean[n] = 0.5f * test_randf(&rng); rstd[n] = 1.0f + 0.5f * test_randf(&rng); }
                for (auto &v : poison) v = 4.0f * test_randf(&rng);
                void *d_dout = upload_as(p, dout), *d_inp = upload_as(p, inp), *d_w = upload_as(p, w);
                void *d_x[2] = {upload_as(p, dinp0), upload_as(p, dinp0)};
                float *d_mean, *d_rstd, *d_g, *d_scratch;
                const size_t scratch = cuda_layernorm_scratch_floats(C);
                CUDA_OK(cudaMalloc(&d_mean, N * 4));
                CUDA_OK(cudaMalloc(&d_rstd, N * 4));
                CUDA_OK(cudaMalloc(&d_g, 5 * C * 4)); /* dw, db twice; dres_sum */
                CUDA_OK(cudaMalloc(&d_scratch, scratch * 4));
                CUDA_OK(cudaMemcpy(d_mean, mean.data(), N * 4, cudaMemcpyHostToDevice));
                CUDA_OK(cudaMemcpy(d_rstd, rstd.data(), N * 4, cudaMemcpyHostToDevice));
                CUDA_OK(cudaMemset(d_g, 0, 4 * C * 4));
                CUDA_OK(cudaMemcpy(d_g + 4 * C, poison.data(), C * 4, cudaMemcpyHostToDevice));
                CUDA_OK(cudaMemset(d_scratch, 0xff, scratch * 4)); /* NaN: a slice left unwritten shows */
                cuda_layernorm_backward(p, d_x[0], d_g, d_g + C, NULL, d_dout, d_inp, d_w, d_mean, d_rstd, N, C,
                                        d_scratch, 0);
                CUDA_OK(cudaMemset(d_scratch, 0xff, scratch * 4));
                cuda_layernorm_backward(p, d_x[1], d_g + 2 * C, d_g + 3 * C, d_g + 4 * C, d_dout, d_inp, d_w, d_mean,
                                        d_rstd, N, C, d_scratch, 0);
                CUDA_OK(cudaDeviceSynchronize());
                std::vector<unsigned char> x0(nc * e), x1(nc * e);
                Vec g(5 * C);
                CUDA_OK(cudaMemcpy(x0.data(), d_x[0], nc * e, cudaMemcpyDeviceToHost));
                CUDA_OK(cudaMemcpy(x1.data(), d_x[1], nc * e, cudaMemcpyDeviceToHost));
                CUDA_OK(cudaMemcpy(g.data(), d_g, 5 * C * 4, cudaMemcpyDeviceToHost));
                int same = memcmp(x0.data(), x1.data(), nc * e) == 0 && memcmp(&g[0], &g[2 * C], 2 * C * 4) == 0;
                double worst = 0.0;
                for (int c = 0; c < C; c++) {
                    double sum = poison[c], mag = fabs(poison[c]);
                    for (int n = 0; n < N; n++) {
                        double v = elem_to_f32(p, &x1[((size_t)n * C + c) * e]);
                        sum += v;
                        mag += fabs(v);
                    }
                    double bound = (N + 2) * 6e-8 * mag + 1e-30;
                    double r = fabs(g[4 * C + c] - sum) / bound;
                    if (!(r <= worst)) worst = r; /* NaN shows as failure */
                }
                CHECK(same && worst <= 1.0,
                      "layernorm backward with its residual sum (%s C=%d N=%d): dinp/dw/db %s, sum error %.2f of the bound",
                      precision_name(p), C, N, same ? "unchanged" : "CHANGED", worst);
                cudaFree(d_dout); cudaFree(d_inp); cudaFree(d_w); cudaFree(d_x[0]); cudaFree(d_x[1]);
                cudaFree(d_mean); cudaFree(d_rstd); cudaFree(d_g); cudaFree(d_scratch);
            }
}

/* clip_and_update (the clip / skip decided on the device, the norm read after AdamW is queued)
 * against grad_norm, layers.h adamw_grad_scale on the host and update: the same norms, weights
 * and moments bit for bit over three steps with clipping active and a loss scale of 4. The two
 * models run one after the other (their streams share the process's cuBLASLt workspace). */
static void check_clip_and_update(const GPT2Config &c, int B, int T, Precision prec) {
    size_t sz[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sz);
    Vec params(n), out[2][3];
    gpt2_init_params(&c, params.data(), 13);
    float norms[2][3];
    for (int k = 0; k < 2; k++) {
        uint64_t rng = 41;
        Model *m = make(gpu, c, B, T, prec, RECOMPUTE_GELU, 0, 0, 1);
        CHECK(m != NULL, "clip_and_update: create");
        if (!m) return;
        gpu->set_params(m, params.data());
        std::vector<int> inp(B * T), tgt(B * T);
        for (int step = 0; step < 3; step++) {
            random_tokens(inp, c.vocab_size, &rng, 0);
            random_tokens(tgt, c.vocab_size, &rng, 1);
            gpu->zero_grad(m);
            gpu->forward(m, inp.data(), tgt.data(), B, T);
            gpu->backward(m, 4.0f, 1);
            AdamWStep a = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7.0f, step + 1};
            const float max_norm = 0.05f; /* below the norm: every step clips */
            if (k == 0) {
                norms[k][step] = gpu->grad_norm(m);
                if (adamw_grad_scale(norms[k][step], max_norm, 4.0f, 1, &a.grad_scale)) gpu->update(m, &a);
            } else {
                norms[k][step] = gpu->clip_and_update(m, &a, max_norm, 4.0f, 1);
            }
        }
        for (int j = 0; j < 3; j++) out[k][j].resize(n);
        gpu->get_params(m, out[k][0].data());
        gpu->get_adam_state(m, out[k][1].data(), out[k][2].data());
        gpu->destroy(m);
        CUDA_OK(cudaDeviceSynchronize());
    }
    int same = memcmp(norms[0], norms[1], sizeof norms[0]) == 0 && norms[0][2] / 4.0f > 0.05f;
    for (int j = 0; j < 3; j++) same &= memcmp(out[0][j].data(), out[1][j].data(), n * 4) == 0;
    CHECK(same, "clip_and_update (%s): differs from grad_norm + update (norms %g %g %g)", precision_name(prec),
          norms[1][0], norms[1][1], norms[1][2]);
}

int main(void) {
    check_memory_plans();
    char why[256];
    gpu = cuda_backend_if_available(why, sizeof why);
    if (!gpu) {
        printf("no GPU (%s): skipped\n", why);
        return test_summary("test_trainer_gpu");
    }
    check_layernorm_residual_sum();
    GPT2Config padded = small_config(300, 2, 64, 4, 64);   /* Vp = 384 */
    GPT2Config awkward = small_config(250, 2, 64, 4, 64);  /* Vp = V = 250 */
    /* every recompute mode, with one classifier chunk and with several */
    const RecomputeMode modes[3] = {RECOMPUTE_NONE, RECOMPUTE_GELU, RECOMPUTE_ALL};
    for (int i = 0; i < 3; i++) {
        char label[128];
        snprintf(label, sizeof label, "fp32 V=300 B=4 T=32 recompute %s", recompute_name(modes[i]));
        check_fp32(label, padded, 4, 32, modes[i], 0);
        snprintf(label, sizeof label, "fp32 chunked classifier (7 rows) recompute %s", recompute_name(modes[i]));
        check_fp32(label, padded, 3, 17, modes[i], 7);
        snprintf(label, sizeof label, "bf16 V=300 B=4 T=32 recompute %s", recompute_name(modes[i]));
        check_bf16(label, padded, 4, 32, kPlain, modes[i]);
        snprintf(label, sizeof label, "fp16 V=300 B=4 T=32 recompute %s", recompute_name(modes[i]));
        check_fp16(label, padded, 4, 32, kPlain, modes[i]);
        check_graphs(padded, 4, 32, PRECISION_BF16, kPlain, modes[i]);
    }
    check_fp32("fp32 V=250 B=1 T=31", awkward, 1, 31, RECOMPUTE_GELU, 0);
    check_fp32("fp32 recompute all, B=2 T=24", padded, 2, 24, RECOMPUTE_ALL, 0);
    check_adamw_steps(padded, 4, 16, 0);
    check_adamw_steps(padded, 4, 16, 1);
    check_bf16("bf16 V=250 B=1 T=31", awkward, 1, 31);
    check_fp16("fp16 V=250 B=1 T=31", awkward, 1, 31);
    check_graphs(padded, 4, 32, PRECISION_FP32);
    check_graphs(padded, 4, 32, PRECISION_FP16);
    check_graphs(padded, 4, 32, PRECISION_FP32, kPlain, RECOMPUTE_ALL);
    /* --keep-layers: 3 layers, the last keeps its buffers, layers 0 and 1 recompute theirs (their
     * parity copies, the side stream's first recompute beside the kept layer's backward) */
    GPT2Config three = small_config(300, 3, 64, 4, 64);
    Extras keep1;
    keep1.name = "last layer keeps";
    keep1.keep_layers = 1;
    check_fp32("fp32 3 layers, recompute gelu, the last keeps", three, 4, 32, RECOMPUTE_GELU, 0, keep1);
    check_fp32("fp32 3 layers, recompute all, the last keeps", three, 4, 32, RECOMPUTE_ALL, 0, keep1);
    check_bf16("bf16 3 layers, recompute gelu, the last keeps", three, 4, 32, keep1, RECOMPUTE_GELU);
    check_fp16("fp16 3 layers, recompute all, the last keeps", three, 4, 32, keep1, RECOMPUTE_ALL);
    check_graphs(three, 4, 32, PRECISION_BF16, keep1, RECOMPUTE_GELU);
    check_graphs(three, 4, 32, PRECISION_FP32, keep1, RECOMPUTE_ALL);
    /* rows long enough for the streaming classifier (more than 1024 packs: bf16 / fp16 past 8192
     * logits, fp32 past 4096) and more rows than SMs; GPT-2's vocabulary, and an fp32 one whose
     * last pack straddles V */
    GPT2Config gpt2_vocab = small_config(50257, 1, 64, 4, 64);
    GPT2Config fp32_long = small_config(6001, 1, 64, 4, 64);
    check_bf16("bf16 V=50257 B=5 T=61 (streaming classifier)", gpt2_vocab, 5, 61);
    check_fp16("fp16 V=50257 B=5 T=61 (streaming classifier)", gpt2_vocab, 5, 61);
    check_fp32("fp32 V=6001 B=5 T=61 (streaming classifier)", fp32_long, 5, 61, RECOMPUTE_GELU, 0);
    check_fp16_overflow(padded, 4, 32);
    check_forward_backward(padded, 4, 32, PRECISION_BF16, 0);
    check_forward_backward(padded, 4, 32, PRECISION_BF16, 1);
    check_forward_backward(padded, 4, 32, PRECISION_FP32, 1);
    check_clip_and_update(padded, 4, 32, PRECISION_BF16);
    check_clip_and_update(padded, 4, 32, PRECISION_FP32);
    check_too_big();
    check_attention_options(padded);
    printf("matmul epilogue fallbacks: %ld\n", cuda_matmul_fallback_count());
    return test_summary("test_trainer_gpu");
}
