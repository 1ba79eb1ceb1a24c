/* attention/memeff_cpu.c: the memory-efficient algorithm on the CPU (fp32, OpenMP), after
 * Rabe & Staats, "Self-attention does not need O(n^2) memory" (2021), as xFormers runs it.
 *
 * Forward: queries in chunks of Q_CHUNK rows; for each chunk, keys in chunks of K_CHUNK. Each
 * query row i keeps a running max m, a running sum l and an unnormalised accumulator acc (kept
 * in O's row itself). For a key chunk with scores s_j = scale * q_i . k_j + bias_ij:
 *   m' = max(m, max_j s_j),   alpha = exp(m - m'),
 *   l  <- alpha l + sum_j exp(s_j - m'),   acc <- alpha acc + sum_j exp(s_j - m') v_j,
 * and at the end O_i = acc / l. `saved` keeps only L_i = m + log l (B, H, T floats); a row
 * that sees no key gets O_i = 0 and L_i = +inf (ATTN_LSE_EMPTY_ROW).
 *
 * Backward, query chunk outer, key chunk inner, recomputing P chunk by chunk:
 *   P_ij = exp(S_ij - L_i),   D_i = dO_i . O_i  (= sum_j P_ij dP_ij; once per query chunk),
 *   dV_j += P_ij dO_i,   dP_ij = dO_i . v_j,   dS_ij = P_ij (dP_ij - D_i),
 *   dQ_i += scale dS_ij k_j  (complete when the chunk's key loop ends),
 *   dK_j += scale dS_ij q_i  (accumulated in memory over the query chunks).
 *
 * Masks: a query chunk visits only the key chunks that attn_key_range() leaves it (causal,
 * window, documents and key padding cut whole chunks), each row only the keys of its interval;
 * scores get bias and ALiBi from attn_adjust_score; backward adds dS into dbias if given.
 * GQA: query head h reads K/V head attn_kv_head(h).
 *
 * Parallel: forward over (b, h, query chunk); backward over (b, K/V head) since all query
 * chunks of a group add into the same dK and dV.
 */
#include "attention/attention_impls.h"
#include "attention/cpu_common.h"

enum { Q_CHUNK = 16, K_CHUNK = 64 };

static const char *memeff_unsupported(const AttnShape *s) { return attn_cpu_unsupported(s); }

static size_t memeff_saved_bytes(const AttnShape *s) {
    if (memeff_unsupported(s)) return 0;
    return (size_t)s->B * s->H * s->T * sizeof(float);
}

static size_t memeff_workspace_bytes(const AttnShape *s) { return 0; }

/* Folds keys [j0, j1) into row i's running (m, l, acc); scores is scratch of K_CHUNK floats. */
static void online_softmax_step(const AttnShape *s, const float *k, const float *v, int b, int g,
                                const AttnRowMask *rm, const float *qi, int j0, int j1, float *m,
                                float *l, float *acc, float *scores) {
    const int D = s->D, ld = s->ld_qkv;
    float chunk_max = -INFINITY;
    for (int j = j0; j < j1; j++) {
        float sij = attn_adjust_score(rm, j, s->scale * attn_dot(qi, k + attn_offset(s, ld, b, j, g), D));
        scores[j - j0] = sij;
        if (sij > chunk_max) chunk_max = sij;
    }
    const float m_new = fmaxf(*m, chunk_max);
    if (m_new == -INFINITY) return;       /* no key visible yet: m = -inf, l = 0, acc = 0 stay */
    const float alpha = expf(*m - m_new); /* 0 when m was -inf (acc and l are 0 then anyway) */
    if (alpha != 1.0f) {
        *l *= alpha;
        attn_scale(acc, alpha, D);
    }
    for (int j = j0; j < j1; j++) {
        const float p = expf(scores[j - j0] - m_new);
        if (p == 0.0f) continue;
        *l += p;
        attn_axpy(acc, p, v + attn_offset(s, ld, b, j, g), D);
    }
    *m = m_new;
}

/* The key chunks [c0, c1) of rows [i0, i1): from the chunk holding the first key any row sees
 * to the last such key (chunk boundaries stay multiples of K_CHUNK). c0 >= c1: none. */
static void chunk_range(const AttnShape *s, int b, int i0, int i1, int *c0, int *c1) {
    attn_key_range(s, b, i0, i1, c0, c1);
    *c0 = *c0 / K_CHUNK * K_CHUNK;
}

/* Output rows [i0, i0 + Q_CHUNK) of (b, h) and their L. */
static void forward_chunk(const AttnShape *s, const float *q, const float *k, const float *v,
                          float *o, float *L, int b, int h, int i0) {
    const int i1 = attn_min(i0 + Q_CHUNK, s->T), D = s->D, g = attn_kv_head(s, h);
    float m[Q_CHUNK], l[Q_CHUNK], scores[K_CHUNK];
    AttnRowMask rm[Q_CHUNK];
    for (int i = i0; i < i1; i++) {
        m[i - i0] = -INFINITY;
        l[i - i0] = 0.0f;
        rm[i - i0] = attn_row_mask(s, b, h, i);
        attn_zero(o + attn_offset(s, s->ld_o, b, i, h), D);
    }
    int c0, c1; /* key chunks that no row of the chunk sees are never visited */
    chunk_range(s, b, i0, i1, &c0, &c1);
    for (int j0 = c0; j0 < c1; j0 += K_CHUNK) {
        for (int i = i0; i < i1; i++) {
            const AttnRowMask *r = &rm[i - i0];
            const int a = attn_max(j0, r->lo), e = attn_min(j0 + K_CHUNK, r->hi);
            if (e <= a) continue;
            online_softmax_step(s, k, v, b, g, r, q + attn_offset(s, s->ld_qkv, b, i, h), a, e,
                                &m[i - i0], &l[i - i0], o + attn_offset(s, s->ld_o, b, i, h),
                                scores);
        }
    }
    for (int i = i0; i < i1; i++) {
        float *oi = o + attn_offset(s, s->ld_o, b, i, h);
        const float li = l[i - i0];
        if (li == 0.0f) { /* the row saw no key */
            attn_zero(oi, D);
            L[attn_stat_index(s, b, h, i)] = ATTN_LSE_EMPTY_ROW;
        } else {
            attn_scale(oi, 1.0f / li, D);
            L[attn_stat_index(s, b, h, i)] = m[i - i0] + logf(li);
        }
    }
}

static int memeff_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                          void *saved, void *workspace, void *stream) {
    if (attn_cpu_check_call(memeff_unsupported(s), "memeff/cpu forward", q && k && v && o && saved))
        return -1;
    const int B = s->B, H = s->H, chunks = (s->T + Q_CHUNK - 1) / Q_CHUNK;
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < chunks; c++) forward_chunk(s, q, k, v, o, saved, b, h, c * Q_CHUNK);
    return 0;
}

/* The contributions of query row i and keys [j0, j1) to dQ_i, dK_j, dV_j (and dbias). */
static void backward_step(const AttnShape *s, const float *q, const float *k, const float *v,
                          const float *dout, float Li, float Di, float *dq, float *dk, float *dv,
                          int b, int h, int g, const AttnRowMask *rm, int j0, int j1) {
    const int D = s->D, ld = s->ld_qkv, i = rm->i;
    const float *qi = q + attn_offset(s, ld, b, i, h);
    const float *doi = dout + attn_offset(s, s->ld_o, b, i, h);
    float *dqi = dq + attn_offset(s, ld, b, i, h);
    for (int j = j0; j < j1; j++) {
        const size_t oj = attn_offset(s, ld, b, j, g);
        const float sij = attn_adjust_score(rm, j, s->scale * attn_dot(qi, k + oj, D));
        const float p = expf(sij - Li); /* 0 for a masked key, and for every key if L = +inf */
        if (p == 0.0f) continue;
        attn_axpy(dv + oj, p, doi, D);
        const float dpij = attn_dot(doi, v + oj, D);
        const float ds = s->scale * p * (dpij - Di);
        if (rm->dbias) attn_add_dbias(rm, j, p * (dpij - Di));
        attn_axpy(dqi, ds, k + oj, D);
        attn_axpy(dk + oj, ds, qi, D);
    }
}

/* Backward of K/V head g: every query head of its group adds into its dK and dV. */
static void backward_kv_head(const AttnShape *s, const float *q, const float *k, const float *v,
                             const float *o, const float *dout, const float *L, float *dq,
                             float *dk, float *dv, int b, int g) {
    const int T = s->T, D = s->D, ld = s->ld_qkv, group = s->H / attn_kv_heads(s);
    for (int t = 0; t < T; t++) {
        attn_zero(dk + attn_offset(s, ld, b, t, g), D);
        attn_zero(dv + attn_offset(s, ld, b, t, g), D);
    }
    for (int h = g * group; h < (g + 1) * group; h++)
        for (int i0 = 0; i0 < T; i0 += Q_CHUNK) {
            const int i1 = attn_min(i0 + Q_CHUNK, T);
            float Dvec[Q_CHUNK];
            AttnRowMask rm[Q_CHUNK];
            for (int i = i0; i < i1; i++) {
                Dvec[i - i0] = attn_dot(dout + attn_offset(s, s->ld_o, b, i, h),
                                        o + attn_offset(s, s->ld_o, b, i, h), D);
                rm[i - i0] = attn_row_mask(s, b, h, i);
                attn_zero(dq + attn_offset(s, ld, b, i, h), D);
            }
            int c0, c1;
            chunk_range(s, b, i0, i1, &c0, &c1);
            for (int j0 = c0; j0 < c1; j0 += K_CHUNK) {
                for (int i = i0; i < i1; i++) {
                    const AttnRowMask *r = &rm[i - i0];
                    const int a = attn_max(j0, r->lo), e = attn_min(j0 + K_CHUNK, r->hi);
                    if (e > a)
                        backward_step(s, q, k, v, dout, L[attn_stat_index(s, b, h, i)],
                                      Dvec[i - i0], dq, dk, dv, b, h, g, r, a, e);
                }
            }
        }
}

static int memeff_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                           const void *o, const void *dout, const void *saved, void *dq, void *dk,
                           void *dv, void *workspace, void *stream) {
    if (attn_cpu_check_call(memeff_unsupported(s), "memeff/cpu backward",
                            q && k && v && o && dout && saved && dq && dk && dv))
        return -1;
    const int B = s->B, Hkv = attn_kv_heads(s);
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < Hkv; g++) backward_kv_head(s, q, k, v, o, dout, saved, dq, dk, dv, b, g);
    return 0;
}

const AttnImpl attn_memeff_cpu = {
    .kernel = ATTN_MEMEFF,
    .place = ATTN_CPU,
    .unsupported = memeff_unsupported,
    .saved_bytes = memeff_saved_bytes,
    .workspace_bytes = memeff_workspace_bytes,
    .forward = memeff_forward,
    .backward = memeff_backward,
};
