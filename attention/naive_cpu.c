/* attention/naive_cpu.c: the naive algorithm on the CPU (fp32, OpenMP).
 *
 * Forward, for each (b, h) and query row i, over the keys j the row may see:
 *   S_ij = scale * q_i . k_j + bias_ij
 *   P_ij = exp(S_ij - max_j S_ij) / sum_j exp(S_ij - max_j S_ij)
 *   O_i  = sum_j P_ij v_j
 * The whole P is materialised in `saved`: (B, H, T, T) floats, row i of (b, h) at
 * ((b*H + h)*T + i)*T; keys a row may not see are stored as 0.
 *
 * Backward reads P, row by row of P:
 *   dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dP * P)),
 *   dQ = scale dS K,   dK = scale dS^T Q.
 * A row whose scores are all -inf has P = 0, hence O = 0 and no gradient through it.
 *
 * Masks: each row visits only the keys of its interval [lo, hi) (attn_row_mask); scores get
 * bias and ALiBi from attn_adjust_score; backward adds dS into dbias when there is one.
 * GQA: query head h reads K/V head attn_kv_head(h).
 *
 * Parallel: forward over (b, h, i) (each row writes only its own P and O rows); backward over
 * (b, K/V head), because every query row of the group adds into the same dK and dV rows.
 */
#include <stdlib.h>
#include "attention/attention_impls.h"
#include "attention/cpu_common.h"

static const char *naive_unsupported(const AttnShape *s) {
    const char *why = attn_cpu_unsupported(s);
    if (why) return why;
    size_t heads = (size_t)s->B * s->H, rows, elems, bytes;
    if (__builtin_mul_overflow(heads, (size_t)s->T, &rows) ||
        __builtin_mul_overflow(rows, (size_t)s->T, &elems) ||
        __builtin_mul_overflow(elems, sizeof(float), &bytes))
        return "P (B*H*T*T floats) does not fit in the address space";
    return NULL;
}

static size_t naive_saved_bytes(const AttnShape *s) {
    if (naive_unsupported(s)) return 0;
    return (size_t)s->B * s->H * s->T * s->T * sizeof(float);
}

static size_t naive_workspace_bytes(const AttnShape *s) { return 0; }

/* Offset of row i of (b, h) in P. */
static size_t prob_row(const AttnShape *s, int b, int h, int i) {
    return attn_stat_index(s, b, h, i) * s->T;
}

/* Row i of P for (b, h) (keys it may not see set to 0), then O_i = P_i V. */
static void forward_row(const AttnShape *s, const float *q, const float *k, const float *v,
                        float *o, float *P, int b, int h, int i) {
    const int T = s->T, D = s->D, ld = s->ld_qkv, g = attn_kv_head(s, h);
    const AttnRowMask rm = attn_row_mask(s, b, h, i);
    const int lo = rm.lo, hi = rm.hi;
    const float *qi = q + attn_offset(s, ld, b, i, h);
    float *p = P + prob_row(s, b, h, i);
    float *oi = o + attn_offset(s, s->ld_o, b, i, h);

    float row_max = -INFINITY;
    for (int j = lo; j < hi; j++) {
        float sij = attn_adjust_score(&rm, j, s->scale * attn_dot(qi, k + attn_offset(s, ld, b, j, g), D));
        p[j] = sij;
        if (sij > row_max) row_max = sij;
    }
    for (int j = 0; j < lo; j++) p[j] = 0.0f;
    for (int j = hi; j < T; j++) p[j] = 0.0f;
    attn_zero(oi, D);
    if (row_max == -INFINITY) { /* the row sees no key: P_i = 0, O_i = 0 */
        for (int j = lo; j < hi; j++) p[j] = 0.0f;
        return;
    }
    float sum = 0.0f;
    for (int j = lo; j < hi; j++) {
        p[j] = expf(p[j] - row_max);
        sum += p[j];
    }
    const float inv_sum = 1.0f / sum;
    for (int j = lo; j < hi; j++) {
        p[j] *= inv_sum;
        if (p[j] != 0.0f) attn_axpy(oi, p[j], v + attn_offset(s, ld, b, j, g), D);
    }
}

static int naive_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                         void *saved, void *workspace, void *stream) {
    if (attn_cpu_check_call(naive_unsupported(s), "naive/cpu forward", q && k && v && o && saved))
        return -1;
    const int B = s->B, H = s->H, T = s->T;
#pragma omp parallel for collapse(3) schedule(dynamic, 8)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) forward_row(s, q, k, v, o, saved, b, h, i);
    return 0;
}

/* Backward of K/V head g: its query heads add into its dK and dV; dp is scratch for one row
 * of dP (T floats). */
static void backward_kv_head(const AttnShape *s, const float *q, const float *k, const float *v,
                             const float *dout, const float *P, float *dq, float *dk, float *dv,
                             int b, int g, float *dp) {
    const int T = s->T, D = s->D, ld = s->ld_qkv, group = s->H / attn_kv_heads(s);
    for (int t = 0; t < T; t++) {
        attn_zero(dk + attn_offset(s, ld, b, t, g), D);
        attn_zero(dv + attn_offset(s, ld, b, t, g), D);
    }
    for (int h = g * group; h < (g + 1) * group; h++)
        for (int i = 0; i < T; i++) {
            const AttnRowMask rm = attn_row_mask(s, b, h, i);
            const int lo = rm.lo, hi = rm.hi;
            const float *p = P + prob_row(s, b, h, i);
            const float *qi = q + attn_offset(s, ld, b, i, h);
            const float *doi = dout + attn_offset(s, s->ld_o, b, i, h);
            float *dqi = dq + attn_offset(s, ld, b, i, h);

            /* dV_j += P_ij dO_i;  dP_ij = dO_i . v_j;  rowdot = sum_j P_ij dP_ij */
            float rowdot = 0.0f;
            for (int j = lo; j < hi; j++) {
                if (p[j] == 0.0f) continue;
                size_t oj = attn_offset(s, ld, b, j, g);
                dp[j] = attn_dot(doi, v + oj, D);
                rowdot += p[j] * dp[j];
                attn_axpy(dv + oj, p[j], doi, D);
            }
            /* dS_ij = P_ij (dP_ij - rowdot) (into dbias);  dQ_i = scale sum_j dS_ij k_j;
             * dK_j += scale dS_ij q_i */
            attn_zero(dqi, D);
            for (int j = lo; j < hi; j++) {
                if (p[j] == 0.0f) continue;
                size_t oj = attn_offset(s, ld, b, j, g);
                const float ds = s->scale * p[j] * (dp[j] - rowdot);
                if (rm.dbias) attn_add_dbias(&rm, j, p[j] * (dp[j] - rowdot));
                attn_axpy(dqi, ds, k + oj, D);
                attn_axpy(dk + oj, ds, qi, D);
            }
        }
}

static int naive_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                          const void *o, const void *dout, const void *saved, void *dq, void *dk,
                          void *dv, void *workspace, void *stream) {
    if (attn_cpu_check_call(naive_unsupported(s), "naive/cpu backward",
                            q && k && v && dout && saved && dq && dk && dv))
        return -1;
    const int B = s->B, Hkv = attn_kv_heads(s);
    int out_of_memory = 0;
#pragma omp parallel
    {
        float *dp = malloc((size_t)s->T * sizeof(float));
        if (!dp) {
#pragma omp atomic write
            out_of_memory = 1;
        }
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < Hkv; g++)
                if (dp) backward_kv_head(s, q, k, v, dout, saved, dq, dk, dv, b, g, dp);
        free(dp);
    }
    return out_of_memory ? attn_cpu_error("naive/cpu backward", "out of memory") : 0;
}

const AttnImpl attn_naive_cpu = {
    .kernel = ATTN_NAIVE,
    .place = ATTN_CPU,
    .unsupported = naive_unsupported,
    .saved_bytes = naive_saved_bytes,
    .workspace_bytes = naive_workspace_bytes,
    .forward = naive_forward,
    .backward = naive_backward,
};
