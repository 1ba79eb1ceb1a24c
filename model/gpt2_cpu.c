/* model/gpt2_cpu.c: GPT-2 on the CPU in fp32 -- the reference every GPU result is checked against.
 *
 * One block (pre-LayerNorm):
 *   x1 = x  + attproj(attention(qkv(ln1(x))))
 *   x2 = x1 + fcproj(gelu(fc(ln2(x1))))
 * then logits = lnf(x_L) wte^T (the output head is tied to the token embedding) and the mean
 * cross-entropy over the targets. The qkv projection has Q = C + 2 G D outputs for G K/V heads
 * (grouped-query attention; G = H is GPT-2's 3C); with ALiBi there is no position table and
 * the attention adds each head's linear distance bias. Backward walks the same graph in reverse; the gradient of
 * the residual stream (dres) runs down through every block, each branch adding to it.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"
#include "model/backend.h"

typedef struct {
    size_t size[GPT2_NUM_PARAM_TENSORS], off[GPT2_NUM_PARAM_TENSORS];
} ParamLayout;

/* Activations kept from forward for backward, for the largest (B, T). Per-layer tensors hold
 * L slices. */
typedef struct {
    float *encoded;                 /* (B,T,C) embedding sum: the residual entering block 0 */
    float *ln1, *ln1_mean, *ln1_rstd; /* (L,B,T,C), (L,B,T), (L,B,T) */
    float *qkv;                     /* (L,B,T,Q), Q = C + 2 G D */
    float *atty;                    /* (L,B,T,C) attention output, heads side by side */
    unsigned char *att_saved;       /* L slices of the attention kernel's saved bytes */
    float *residual2;               /* (L,B,T,C) x1 */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fch, *fch_gelu;          /* (L,B,T,4C) */
    float *residual3;               /* (L,B,T,C) x2: the block's output */
    float *lnf, *lnf_mean, *lnf_rstd;
    float *logits, *probs;          /* (B,T,V) each */
    float *losses;                  /* (B,T) */
} Activations;

/* Gradients of one block's activations; reused by every layer in backward. */
typedef struct {
    float *dres;                    /* (B,T,C) gradient of the residual stream */
    float *dln, *datty, *dqkv;      /* (B,T,C), (B,T,C), (B,T,Q) */
    float *dfch, *dfch_gelu;        /* (B,T,4C) */
    float *dlogits;                 /* (B,T,V) */
    unsigned char *att_workspace;
} Scratch;

struct Model {
    ModelOptions opt;
    GPT2Config c;
    ParamLayout layout;
    int Q, kv;                      /* qkv outputs C + 2 kv D; K/V heads */
    float *alibi;                   /* (H) ALiBi slopes, or NULL for learned positions */
    size_t num_params;
    float *params, *grads, *adam_m, *adam_v;
    const AttnImpl *attn;
    size_t att_saved_bytes;         /* per layer, for the largest shape */
    Activations act;
    Scratch scr;
    int *inputs, *targets;          /* copies of the last batch */
    int *doc, *pos;                 /* packed documents: each token's document start and position */
    int B, T;                       /* shape of the last forward */
    float dloss;                    /* d(mean loss)/d(loss of one counted token) */
};

static float *falloc(size_t n) {
    float *p = (float *)calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "error: out of host memory allocating %zu floats\n", n);
        exit(1);
    }
    return p;
}

static void *balloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "error: out of host memory allocating %zu bytes\n", n);
        exit(1);
    }
    return p;
}

static AttnShape attention_shape(const Model *m, int B, int T) {
    AttnShape s = attn_shape_packed_gqa(B, T, m->c.num_heads, m->kv, m->c.channels / m->c.num_heads,
                                        m->opt.mask, ATTN_FP32);
    s.mask.window = m->opt.attn_window;
    s.mask.alibi_slopes = m->alibi;
    s.mask.doc = m->doc;
    if (m->opt.mask == ATTN_MASK_DENSE) {
        s.mask.bias = m->opt.dense_bias; /* one (T, T) matrix for every batch row and head */
        s.mask.stride_b = 0;
        s.mask.stride_h = 0;
        s.mask.stride_row = m->opt.T;
    }
    return s;
}

static void alloc_activations(Model *m) {
    size_t B = m->opt.B, T = m->opt.T, C = m->c.channels, L = m->c.num_layers, V = m->c.vocab_size;
    size_t BT = B * T, Q = (size_t)m->Q;
    Activations *a = &m->act;
    a->encoded = falloc(BT * C);
    a->ln1 = falloc(L * BT * C);
    a->ln1_mean = falloc(L * BT);
    a->ln1_rstd = falloc(L * BT);
    a->qkv = falloc(L * BT * Q);
    a->atty = falloc(L * BT * C);
    a->att_saved = (unsigned char *)balloc(L * m->att_saved_bytes);
    a->residual2 = falloc(L * BT * C);
    a->ln2 = falloc(L * BT * C);
    a->ln2_mean = falloc(L * BT);
    a->ln2_rstd = falloc(L * BT);
    a->fch = falloc(L * BT * 4 * C);
    a->fch_gelu = falloc(L * BT * 4 * C);
    a->residual3 = falloc(L * BT * C);
    a->lnf = falloc(BT * C);
    a->lnf_mean = falloc(BT);
    a->lnf_rstd = falloc(BT);
    a->logits = falloc(BT * V);
    a->probs = falloc(BT * V);
    a->losses = falloc(BT);

    AttnShape s = attention_shape(m, (int)B, (int)T);
    Scratch *g = &m->scr;
    g->dres = falloc(BT * C);
    g->dln = falloc(BT * C);
    g->datty = falloc(BT * C);
    g->dqkv = falloc(BT * Q);
    g->dfch = falloc(BT * 4 * C);
    g->dfch_gelu = falloc(BT * 4 * C);
    g->dlogits = falloc(BT * V);
    g->att_workspace = (unsigned char *)balloc(m->attn->workspace_bytes(&s));
}

static Model *cpu_create(const ModelOptions *opt, char *err, size_t errlen) {
    if (opt->world > 1) {
        snprintf(err, errlen, "the CPU backend trains in one process only (asked for a world of %d)",
                 opt->world);
        return NULL;
    }
    char why_config[256];
    if (gpt2_config_validate(&opt->config, why_config, sizeof why_config) != 0) {
        snprintf(err, errlen, "%s", why_config);
        return NULL;
    }
    if (opt->attn_window < 0) {
        snprintf(err, errlen, "attention window %d must be 0 (none) or positive", opt->attn_window);
        return NULL;
    }
    const AttnImpl *attn = attn_impl(opt->attn, ATTN_CPU);
    if (!attn) {
        snprintf(err, errlen, "attention kernel '%s' has no CPU implementation",
                 attn_kernel_name(opt->attn));
        return NULL;
    }
    Model *m = (Model *)balloc(sizeof(Model));
    m->opt = *opt;
    m->c = opt->config;
    m->attn = attn;
    m->Q = gpt2_qkv_channels(&m->c);
    m->kv = gpt2_kv_heads(&m->c);
    if (m->c.pos == GPT2_POS_ALIBI) {
        m->alibi = falloc((size_t)m->c.num_heads);
        attn_alibi_slopes(m->c.num_heads, m->alibi);
    }
    if (opt->doc_sep.len > 0) {
        m->doc = (int *)balloc((size_t)opt->B * opt->T * sizeof(int));
        m->pos = (int *)balloc((size_t)opt->B * opt->T * sizeof(int));
    }
    AttnShape s = attention_shape(m, opt->B, opt->T);
    const char *why = attn->unsupported(&s);
    if (why) {
        snprintf(err, errlen, "attention kernel '%s' on the CPU: %s", attn_kernel_name(opt->attn), why);
        free(m->alibi);
        free(m->doc);
        free(m->pos);
        free(m);
        return NULL;
    }
    if (opt->threads > 0) omp_set_num_threads(opt->threads);
    m->att_saved_bytes = attn->saved_bytes(&s);
    m->num_params = gpt2_param_sizes(&m->c, m->layout.size);
    gpt2_param_offsets(&m->c, m->layout.off);
    m->params = falloc(m->num_params);
    m->grads = falloc(m->num_params);
    m->adam_m = falloc(m->num_params);
    m->adam_v = falloc(m->num_params);
    m->inputs = (int *)balloc((size_t)opt->B * opt->T * sizeof(int));
    m->targets = (int *)balloc((size_t)opt->B * opt->T * sizeof(int));
    alloc_activations(m);
    return m;
}

static void cpu_destroy(Model *m) {
    if (!m) return;
    Activations *a = &m->act;
    float *fs[] = {a->encoded, a->ln1, a->ln1_mean, a->ln1_rstd, a->qkv, a->atty, a->residual2,
                   a->ln2, a->ln2_mean, a->ln2_rstd, a->fch, a->fch_gelu, a->residual3, a->lnf,
                   a->lnf_mean, a->lnf_rstd, a->logits, a->probs, a->losses, m->scr.dres, m->scr.dln,
                   m->scr.datty, m->scr.dqkv, m->scr.dfch, m->scr.dfch_gelu, m->scr.dlogits,
                   m->params, m->grads, m->adam_m, m->adam_v};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) free(fs[i]);
    free(a->att_saved);
    free(m->scr.att_workspace);
    free(m->alibi);
    free(m->doc);
    free(m->pos);
    free(m->inputs);
    free(m->targets);
    free(m);
}

static float *param(Model *m, int t) { return m->params + m->layout.off[t]; }
static float *grad(Model *m, int t) { return m->grads + m->layout.off[t]; }

/* Pointers to layer l's slice of every per-layer parameter (or gradient) tensor. */
typedef struct {
    float *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb,
          *fcprojw, *fcprojb;
} LayerParams;

static LayerParams layer_slice(float *base, const ParamLayout *lay, int l, int C, int Q) {
    size_t c = (size_t)C, q = (size_t)Q;
    LayerParams p = {
        base + lay->off[P_LN1W] + l * c,          base + lay->off[P_LN1B] + l * c,
        base + lay->off[P_QKVW] + l * q * c,      base + lay->off[P_QKVB] + l * q,
        base + lay->off[P_ATTPROJW] + l * c * c,  base + lay->off[P_ATTPROJB] + l * c,
        base + lay->off[P_LN2W] + l * c,          base + lay->off[P_LN2B] + l * c,
        base + lay->off[P_FCW] + l * 4 * c * c,   base + lay->off[P_FCB] + l * 4 * c,
        base + lay->off[P_FCPROJW] + l * 4 * c * c, base + lay->off[P_FCPROJB] + l * c,
    };
    return p;
}

/* Layer l's slice of an activation tensor with `width` floats per token. */
static float *slice(float *t, int l, int BT, int width) {
    return t + (size_t)l * BT * width;
}

static float cpu_forward(Model *m, const int *inputs, const int *targets, int B, int T) {
    const int C = m->c.channels, V = m->c.vocab_size, L = m->c.num_layers, BT = B * T;
    const int Q = m->Q, KV = m->kv * (C / m->c.num_heads); /* qkv width; K (and V) width */
    Activations *a = &m->act;
    m->B = B;
    m->T = T;
    memcpy(m->inputs, inputs, (size_t)BT * sizeof(int));
    if (m->doc) /* packed documents: where each token's document starts, and its position */
        doc_starts_of_batch(&m->opt.doc_sep, inputs, B, T, m->doc, m->pos);
    AttnShape s = attention_shape(m, B, T); /* after the documents: it points at them */
    const int *pos_of = m->doc && m->opt.doc_positions ? m->pos : NULL;

    encoder_forward_at(a->encoded, inputs, pos_of, param(m, P_WTE), m->alibi ? NULL : param(m, P_WPE), B, T, C);
    float *residual = a->encoded;
    for (int l = 0; l < L; l++) {
        LayerParams p = layer_slice(m->params, &m->layout, l, C, Q);
        float *ln1 = slice(a->ln1, l, BT, C), *qkv = slice(a->qkv, l, BT, Q);
        float *atty = slice(a->atty, l, BT, C), *res2 = slice(a->residual2, l, BT, C);
        float *ln2 = slice(a->ln2, l, BT, C), *fch = slice(a->fch, l, BT, 4 * C);
        float *fch_gelu = slice(a->fch_gelu, l, BT, 4 * C), *res3 = slice(a->residual3, l, BT, C);
        float *scratch = m->scr.dln; /* attproj/fcproj outputs before the residual add */

        layernorm_forward(ln1, slice(a->ln1_mean, l, BT, 1), slice(a->ln1_rstd, l, BT, 1),
                          residual, p.ln1w, p.ln1b, BT, C);
        matmul_forward(qkv, ln1, p.qkvw, p.qkvb, BT, C, Q);
        m->attn->forward(&s, qkv, qkv + C, qkv + C + KV, atty,
                         a->att_saved + (size_t)l * m->att_saved_bytes, m->scr.att_workspace, NULL);
        matmul_forward(scratch, atty, p.attprojw, p.attprojb, BT, C, C);
        residual_forward(res2, residual, scratch, (size_t)BT * C);
        layernorm_forward(ln2, slice(a->ln2_mean, l, BT, 1), slice(a->ln2_rstd, l, BT, 1),
                          res2, p.ln2w, p.ln2b, BT, C);
        matmul_forward(fch, ln2, p.fcw, p.fcb, BT, C, 4 * C);
        gelu_forward(fch_gelu, fch, (size_t)BT * 4 * C);
        matmul_forward(scratch, fch_gelu, p.fcprojw, p.fcprojb, BT, 4 * C, C);
        residual_forward(res3, res2, scratch, (size_t)BT * C);
        residual = res3;
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, residual, param(m, P_LNFW),
                      param(m, P_LNFB), BT, C);
    /* logits over the V real tokens only; the padded rows of wte never score */
    matmul_forward(a->logits, a->lnf, param(m, P_WTE), NULL, BT, C, V);
    if (!targets) {
        m->dloss = 0.0f;
        return 0.0f;
    }
    memcpy(m->targets, targets, (size_t)BT * sizeof(int));
    softmax_crossentropy_forward(a->probs, a->losses, a->logits, targets, BT, V, V);
    double total = 0.0;
    int counted = 0;
    for (int i = 0; i < BT; i++) {
        if (targets[i] >= 0) {
            total += a->losses[i];
            counted++;
        }
    }
    m->dloss = counted ? 1.0f / counted : 0.0f;
    return counted ? (float)(total / counted) : 0.0f;
}

static void cpu_logits_at(Model *m, int b, int t, float *out) {
    const int V = m->c.vocab_size;
    memcpy(out, m->act.logits + ((size_t)b * m->T + t) * V, (size_t)V * sizeof(float));
}

static void cpu_zero_grad(Model *m) {
    memset(m->grads, 0, m->num_params * sizeof(float));
}

/* One process: its gradients are already the world's, so sync_grads changes nothing. */
static void cpu_backward(Model *m, float loss_scale, int sync_grads) {
    const int B = m->B, T = m->T, C = m->c.channels, V = m->c.vocab_size, L = m->c.num_layers;
    const int BT = B * T, Q = m->Q, KV = m->kv * (C / m->c.num_heads);
    Activations *a = &m->act;
    Scratch *g = &m->scr;
    AttnShape s = attention_shape(m, B, T);
    const size_t btc = (size_t)BT * C;

    softmax_crossentropy_backward(g->dlogits, a->probs, m->targets, BT, V, V, m->dloss * loss_scale);
    memset(g->dln, 0, btc * sizeof(float));
    matmul_backward(g->dln, grad(m, P_WTE), NULL, g->dlogits, a->lnf, param(m, P_WTE), BT, C, V);
    memset(g->dres, 0, btc * sizeof(float));
    float *last = L > 0 ? slice(a->residual3, L - 1, BT, C) : a->encoded;
    layernorm_backward(g->dres, grad(m, P_LNFW), grad(m, P_LNFB), g->dln, last, param(m, P_LNFW),
                       a->lnf_mean, a->lnf_rstd, BT, C);

    for (int l = L - 1; l >= 0; l--) {
        LayerParams p = layer_slice(m->params, &m->layout, l, C, Q);
        LayerParams dp = layer_slice(m->grads, &m->layout, l, C, Q);
        float *residual = l == 0 ? a->encoded : slice(a->residual3, l - 1, BT, C);
        float *ln1 = slice(a->ln1, l, BT, C), *qkv = slice(a->qkv, l, BT, Q);
        float *atty = slice(a->atty, l, BT, C), *res2 = slice(a->residual2, l, BT, C);
        float *ln2 = slice(a->ln2, l, BT, C), *fch = slice(a->fch, l, BT, 4 * C);
        float *fch_gelu = slice(a->fch_gelu, l, BT, 4 * C);

        /* MLP branch: dres is d(x2) and flows unchanged into d(x1) through the residual add */
        memset(g->dfch_gelu, 0, btc * 4 * sizeof(float));
        matmul_backward(g->dfch_gelu, dp.fcprojw, dp.fcprojb, g->dres, fch_gelu, p.fcprojw, BT, 4 * C, C);
        memset(g->dfch, 0, btc * 4 * sizeof(float));
        gelu_backward(g->dfch, fch, g->dfch_gelu, btc * 4);
        memset(g->dln, 0, btc * sizeof(float));
        matmul_backward(g->dln, dp.fcw, dp.fcb, g->dfch, ln2, p.fcw, BT, C, 4 * C);
        layernorm_backward(g->dres, dp.ln2w, dp.ln2b, g->dln, res2, p.ln2w,
                           slice(a->ln2_mean, l, BT, 1), slice(a->ln2_rstd, l, BT, 1), BT, C);

        /* attention branch: dres is now d(x1) and flows into d(x) the same way */
        memset(g->datty, 0, btc * sizeof(float));
        matmul_backward(g->datty, dp.attprojw, dp.attprojb, g->dres, atty, p.attprojw, BT, C, C);
        m->attn->backward(&s, qkv, qkv + C, qkv + C + KV, atty, g->datty,
                          a->att_saved + (size_t)l * m->att_saved_bytes,
                          g->dqkv, g->dqkv + C, g->dqkv + C + KV, g->att_workspace, NULL);
        memset(g->dln, 0, btc * sizeof(float));
        matmul_backward(g->dln, dp.qkvw, dp.qkvb, g->dqkv, ln1, p.qkvw, BT, C, Q);
        layernorm_backward(g->dres, dp.ln1w, dp.ln1b, g->dln, residual, p.ln1w,
                           slice(a->ln1_mean, l, BT, 1), slice(a->ln1_rstd, l, BT, 1), BT, C);
    }
    encoder_backward_at(grad(m, P_WTE), m->alibi ? NULL : grad(m, P_WPE), g->dres, m->inputs,
                        m->doc && m->opt.doc_positions ? m->pos : NULL, B, T, C);
}

static float cpu_grad_norm(Model *m) {
    return (float)sqrt(sum_of_squares(m->grads, m->num_params));
}

static void cpu_update(Model *m, const AdamWStep *s) {
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        if (m->opt.no_linear_bias && gpt2_param_is_linear_bias(t)) continue;
        size_t o = m->layout.off[t];
        float wd = gpt2_param_decays(t) ? s->weight_decay : 0.0f;
        adamw_update(m->params + o, m->grads + o, m->adam_m + o, m->adam_v + o, m->layout.size[t],
                     s->lr, s->beta1, s->beta2, s->eps, wd, s->grad_scale, s->t);
    }
}

static float cpu_clip_and_update(Model *m, const AdamWStep *s, float max_norm, float loss_scale, int skip_nonfinite) {
    float scaled_norm = cpu_grad_norm(m);
    AdamWStep u = *s;
    if (adamw_grad_scale(scaled_norm, max_norm, loss_scale, skip_nonfinite, &u.grad_scale)) cpu_update(m, &u);
    return scaled_norm;
}

static void cpu_set_params(Model *m, const float *p) {
    memcpy(m->params, p, m->num_params * sizeof(float));
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++)
        if (m->opt.no_linear_bias && gpt2_param_is_linear_bias(t))
            memset(m->params + m->layout.off[t], 0, m->layout.size[t] * sizeof(float));
}
static void cpu_get_params(Model *m, float *p) { memcpy(p, m->params, m->num_params * sizeof(float)); }
static void cpu_get_grads(Model *m, float *g) { memcpy(g, m->grads, m->num_params * sizeof(float)); }
static void cpu_set_adam(Model *m, const float *mom, const float *var) {
    memcpy(m->adam_m, mom, m->num_params * sizeof(float));
    memcpy(m->adam_v, var, m->num_params * sizeof(float));
}
static void cpu_get_adam(Model *m, float *mom, float *var) {
    memcpy(mom, m->adam_m, m->num_params * sizeof(float));
    memcpy(var, m->adam_v, m->num_params * sizeof(float));
}
static size_t cpu_memory_in_use(Model *m) { return 0; }
/* One process: a mean over one rank is itself. */
static double cpu_mean_over_ranks(Model *m, double x) { return x; }

static float cpu_forward_backward(Model *m, const int *inputs, const int *targets, int B, int T, float loss_scale,
                                  int sync_grads) {
    float loss = cpu_forward(m, inputs, targets, B, T);
    cpu_backward(m, loss_scale, sync_grads);
    return loss;
}

const Backend cpu_backend = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .set_params = cpu_set_params,
    .get_params = cpu_get_params,
    .get_grads = cpu_get_grads,
    .set_adam_state = cpu_set_adam,
    .get_adam_state = cpu_get_adam,
    .forward = cpu_forward,
    .logits_at = cpu_logits_at,
    .zero_grad = cpu_zero_grad,
    .backward = cpu_backward,
    .forward_backward = cpu_forward_backward,
    .grad_norm = cpu_grad_norm,
    .update = cpu_update,
    .clip_and_update = cpu_clip_and_update,
    .memory_in_use = cpu_memory_in_use,
    .mean_over_ranks = cpu_mean_over_ranks,
};
