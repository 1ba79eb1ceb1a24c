/* attention/flash_cpu.c: the FlashAttention-2 organisation on the CPU (fp32, OpenMP), after
 * Dao, "FlashAttention-2: faster attention with better parallelism and work partitioning".
 *
 * Q is cut into tiles of FLASH.br rows, K and V into tiles of FLASH.bc rows; each tile is
 * copied into contiguous scratch (the CPU's stand-in for shared memory) before use.
 *
 * Forward, query tile outer, key tile inner; per query row a running max m, sum l and
 * unnormalised output acc:
 *   S = scale Q_t K_t^T + bias - slope |i - j|   (-inf for keys a row may not see)
 *   m' = max(m, rowmax S),  P~ = exp(S - m'),  l <- exp(m - m') l + rowsum P~,
 *   acc <- exp(m - m') acc + P~ V_t;   finally O = acc / l, and `saved` keeps
 *   L = m + log l (B, H, T floats; +inf for a row that sees no key, whose O is 0).
 *   Key tiles outside the query tile's attn_key_range(), or that no row of it sees, are
 *   skipped (causal, window, documents, key padding): cost follows the unmasked area.
 *
 * Backward: first D = rowsum(dO * O) for every row (into the workspace, B, H, T floats); then
 * key tile outer, with dK_t and dV_t accumulated in the tile, query tile inner:
 *   P = exp(S - L),  dV_t += P^T dO_t,  dP = dO_t V_t^T,  dS = P * (dP - D),
 *   dQ += scale dS K_t  (in memory),   dK_t += scale dS^T Q_t.
 *   Query tiles whose key range misses the key tile are skipped; dS also goes into dbias.
 * GQA: query head h reads K/V head attn_kv_head(h); the key tile loop of a K/V head runs over
 * every query head of its group, so dK_t and dV_t sum over the group.
 *
 * Parallel: forward over (b, h, query tile); backward over (b, K/V head), because every key
 * tile of a group adds into the same dQ rows and dK, dV rows.
 */
#include <stdlib.h>
#include <string.h>
#include "attention/attention_impls.h"
#include "attention/cpu_common.h"

/* Tile sizes: br query rows by bc key rows. */
static const struct FlashTraits { int br, bc; } FLASH = {32, 64};

static const char *flash_unsupported(const AttnShape *s) { return attn_cpu_unsupported(s); }

static size_t flash_saved_bytes(const AttnShape *s) {
    if (flash_unsupported(s)) return 0;
    return (size_t)s->B * s->H * s->T * sizeof(float); /* L */
}

/* Backward's D = rowsum(dO * O); forward needs none. */
static size_t flash_workspace_bytes(const AttnShape *s) { return flash_saved_bytes(s); }

/* Next n floats of a scratch block. */
static float *carve(float **cursor, size_t n) {
    float *p = *cursor;
    *cursor += n;
    return p;
}

/* Copies rows [t0, t0 + rows) of head h in batch b into dst, packed (rows x D). */
static void load_tile(float *dst, const float *src, const AttnShape *s, int ld, int b, int h,
                      int t0, int rows) {
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * s->D, src + attn_offset(s, ld, b, t0 + r, h),
               (size_t)s->D * sizeof(float));
}

/* Row masks of query rows [i0, i0 + br) of (b, h) into rm. */
static void row_masks(const AttnShape *s, int b, int h, int i0, int br, AttnRowMask *rm) {
    for (int r = 0; r < br; r++) rm[r] = attn_row_mask(s, b, h, i0 + r);
}

/* 1 when some row of rm[0..br) sees a key of [j0, j0 + bc). */
static int tile_seen(const AttnRowMask *rm, int br, int j0, int bc) {
    for (int r = 0; r < br; r++)
        if (rm[r].lo < j0 + bc && rm[r].hi > j0 && rm[r].lo < rm[r].hi) return 1;
    return 0;
}

/* S[r][c] (row stride FLASH.bc) = scale * q_r . k_c adjusted by row r's mask (bias, ALiBi) for
 * query i0 + r and key j0 + c, or -inf where the key lies outside what the row may see. */
static void score_tile(const AttnShape *s, const float *qt, const float *kt,
                       const AttnRowMask *rm, int br, int j0, int bc, float *S) {
    const int D = s->D;
    for (int r = 0; r < br; r++) {
        const AttnRowMask *m = &rm[r];
        float *srow = S + (size_t)r * FLASH.bc;
        for (int c = 0; c < bc; c++) {
            const int j = j0 + c;
            if (j < m->lo || j >= m->hi) {
                srow[c] = -INFINITY;
                continue;
            }
            srow[c] = attn_adjust_score(m, j, s->scale * attn_dot(qt + (size_t)r * D, kt + (size_t)c * D, D));
        }
    }
}

/* ---- forward --------------------------------------------------------------------------- */

typedef struct {
    float *q, *k, *v; /* tiles: br x D, bc x D, bc x D */
    float *s;         /* scores, then P~: br x bc */
    float *acc;       /* unnormalised output rows: br x D */
    float *m, *l;     /* running max and sum per row: br */
    AttnRowMask *rm;  /* the rows' masks: br */
} FwdTiles;

static void *fwd_tiles_alloc(FwdTiles *w, int D) {
    const size_t br = FLASH.br, bc = FLASH.bc;
    void *block = malloc(br * sizeof(AttnRowMask) +
                         (2 * br * D + 2 * bc * D + br * bc + 2 * br) * sizeof(float));
    if (!block) return NULL;
    w->rm = block;
    float *cur = (float *)(w->rm + br);
    w->q = carve(&cur, br * D);
    w->acc = carve(&cur, br * D);
    w->k = carve(&cur, bc * D);
    w->v = carve(&cur, bc * D);
    w->s = carve(&cur, br * bc);
    w->m = carve(&cur, br);
    w->l = carve(&cur, br);
    return block;
}

/* Folds one row of scores (bc of them) into the row's (m, l, acc); leaves P~ in srow. */
static void online_softmax_row(float *srow, int bc, float *m, float *l, float *acc, int D) {
    float row_max = -INFINITY;
    for (int c = 0; c < bc; c++)
        if (srow[c] > row_max) row_max = srow[c];
    const float m_new = fmaxf(*m, row_max);
    if (m_new == -INFINITY) { /* no key visible yet: m = -inf, l = 0, acc = 0 stay */
        attn_zero(srow, bc);
        return;
    }
    const float alpha = expf(*m - m_new); /* 0 when m was -inf */
    float sum = 0.0f;
    for (int c = 0; c < bc; c++) {
        srow[c] = expf(srow[c] - m_new);
        sum += srow[c];
    }
    *l = alpha * *l + sum;
    if (alpha != 1.0f) attn_scale(acc, alpha, D);
    *m = m_new;
}

/* Output rows [i0, i0 + br) of (b, h) and their L. */
static void forward_tile(const AttnShape *s, const float *q, const float *k, const float *v,
                         float *o, float *L, int b, int h, int i0, FwdTiles *w) {
    const int D = s->D, br = attn_min(FLASH.br, s->T - i0), g = attn_kv_head(s, h);
    load_tile(w->q, q, s, s->ld_qkv, b, h, i0, br);
    row_masks(s, b, h, i0, br, w->rm);
    for (int r = 0; r < br; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0.0f;
        attn_zero(w->acc + (size_t)r * D, D);
    }
    /* Only the key tiles inside the rows' key range, and of those only the ones some row sees
     * (causal, window, documents and key padding cut whole tiles), are visited. */
    int key_begin, key_end;
    attn_key_range(s, b, i0, i0 + br, &key_begin, &key_end);
    for (int j0 = key_begin / FLASH.bc * FLASH.bc; j0 < key_end; j0 += FLASH.bc) {
        const int bc = attn_min(FLASH.bc, key_end - j0);
        if (!tile_seen(w->rm, br, j0, bc)) continue;
        load_tile(w->k, k, s, s->ld_qkv, b, g, j0, bc);
        load_tile(w->v, v, s, s->ld_qkv, b, g, j0, bc);
        score_tile(s, w->q, w->k, w->rm, br, j0, bc, w->s);
        for (int r = 0; r < br; r++) {
            float *p = w->s + (size_t)r * FLASH.bc, *acc = w->acc + (size_t)r * D;
            online_softmax_row(p, bc, &w->m[r], &w->l[r], acc, D);
            for (int c = 0; c < bc; c++) /* acc += P~ V_t */
                if (p[c] != 0.0f) attn_axpy(acc, p[c], w->v + (size_t)c * D, D);
        }
    }
    for (int r = 0; r < br; r++) {
        float *oi = o + attn_offset(s, s->ld_o, b, i0 + r, h);
        float *Li = L + attn_stat_index(s, b, h, i0 + r);
        if (w->l[r] == 0.0f) { /* the row saw no key */
            attn_zero(oi, D);
            *Li = ATTN_LSE_EMPTY_ROW;
            continue;
        }
        const float inv_l = 1.0f / w->l[r];
        const float *acc = w->acc + (size_t)r * D;
        for (int d = 0; d < D; d++) oi[d] = acc[d] * inv_l;
        *Li = w->m[r] + logf(w->l[r]);
    }
}

static int flash_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                         void *saved, void *workspace, void *stream) {
    if (attn_cpu_check_call(flash_unsupported(s), "flash/cpu forward", q && k && v && o && saved))
        return -1;
    const int B = s->B, H = s->H, tiles = (s->T + FLASH.br - 1) / FLASH.br;
    int out_of_memory = 0;
#pragma omp parallel
    {
        FwdTiles w = {0};
        void *block = fwd_tiles_alloc(&w, s->D);
        if (!block) {
#pragma omp atomic write
            out_of_memory = 1;
        }
#pragma omp for collapse(3) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int t = 0; t < tiles; t++)
                    if (block) forward_tile(s, q, k, v, o, saved, b, h, t * FLASH.br, &w);
        free(block);
    }
    return out_of_memory ? attn_cpu_error("flash/cpu forward", "out of memory") : 0;
}

/* ---- backward -------------------------------------------------------------------------- */

typedef struct {
    float *q, *dout;        /* query tiles: br x D */
    float *k, *v, *dk, *dv; /* key tiles: bc x D */
    float *p, *ds;          /* br x bc */
    float *L, *D;           /* per query row of the tile: br */
    AttnRowMask *rm;        /* the query rows' masks: br */
    int *tile_lo, *tile_hi; /* per query tile of the sequence: attn_key_range() */
} BwdTiles;

static void *bwd_tiles_alloc(BwdTiles *w, int D, int T) {
    const size_t br = FLASH.br, bc = FLASH.bc, tiles = ((size_t)T + br - 1) / br;
    void *block = malloc(br * sizeof(AttnRowMask) + 2 * tiles * sizeof(int) +
                         (2 * br * D + 4 * bc * D + 2 * br * bc + 2 * br) * sizeof(float));
    if (!block) return NULL;
    w->rm = block;
    w->tile_lo = (int *)(w->rm + br);
    w->tile_hi = w->tile_lo + tiles;
    float *cur = (float *)(w->tile_hi + tiles);
    w->q = carve(&cur, br * D);
    w->dout = carve(&cur, br * D);
    w->k = carve(&cur, bc * D);
    w->v = carve(&cur, bc * D);
    w->dk = carve(&cur, bc * D);
    w->dv = carve(&cur, bc * D);
    w->p = carve(&cur, br * bc);
    w->ds = carve(&cur, br * bc);
    w->L = carve(&cur, br);
    w->D = carve(&cur, br);
    return block;
}

/* The contributions of query rows [i0, i0 + br) of head h to the key tile's dK_t, dV_t (loaded
 * keys [j0, j0 + bc)), to dQ in memory and to dbias. */
static void backward_tile_pair(const AttnShape *s, const float *q, const float *dout,
                               const float *L, const float *Drow, float *dq, int b, int h, int i0,
                               int j0, int bc, BwdTiles *w) {
    const int D = s->D, br = attn_min(FLASH.br, s->T - i0), BC = FLASH.bc;
    load_tile(w->q, q, s, s->ld_qkv, b, h, i0, br);
    load_tile(w->dout, dout, s, s->ld_o, b, h, i0, br);
    row_masks(s, b, h, i0, br, w->rm);
    for (int r = 0; r < br; r++) {
        w->L[r] = L[attn_stat_index(s, b, h, i0 + r)];
        w->D[r] = Drow[attn_stat_index(s, b, h, i0 + r)];
    }
    score_tile(s, w->q, w->k, w->rm, br, j0, bc, w->p);
    for (int r = 0; r < br; r++) {
        float *p = w->p + (size_t)r * BC, *ds = w->ds + (size_t)r * BC;
        const float *dor = w->dout + (size_t)r * D;
        for (int c = 0; c < bc; c++) {
            p[c] = expf(p[c] - w->L[r]); /* 0 for masked keys, and all keys when L = +inf */
            if (p[c] == 0.0f) {
                ds[c] = 0.0f;
                continue;
            }
            attn_axpy(w->dv + (size_t)c * D, p[c], dor, D); /* dV_t += P^T dO_t */
            const float dp = attn_dot(dor, w->v + (size_t)c * D, D);
            ds[c] = s->scale * p[c] * (dp - w->D[r]); /* scale folded into dS */
            if (w->rm[r].dbias) attn_add_dbias(&w->rm[r], j0 + c, p[c] * (dp - w->D[r]));
        }
    }
    for (int r = 0; r < br; r++) { /* dQ += dS K_t */
        float *dqi = dq + attn_offset(s, s->ld_qkv, b, i0 + r, h);
        const float *ds = w->ds + (size_t)r * BC;
        for (int c = 0; c < bc; c++)
            if (ds[c] != 0.0f) attn_axpy(dqi, ds[c], w->k + (size_t)c * D, D);
    }
    for (int r = 0; r < br; r++) { /* dK_t += dS^T Q_t */
        const float *ds = w->ds + (size_t)r * BC, *qr = w->q + (size_t)r * D;
        for (int c = 0; c < bc; c++)
            if (ds[c] != 0.0f) attn_axpy(w->dk + (size_t)c * D, ds[c], qr, D);
    }
}

/* Backward of K/V head g: key tile outer; every query head of its group, and of each only the
 * query tiles whose key range meets the key tile, add into the tile's dK_t and dV_t. */
static void backward_kv_head(const AttnShape *s, const float *q, const float *k, const float *v,
                             const float *dout, const float *L, const float *Drow, float *dq,
                             float *dk, float *dv, int b, int g, BwdTiles *w) {
    const int T = s->T, D = s->D, ld = s->ld_qkv, group = s->H / attn_kv_heads(s);
    const int h0 = g * group, h1 = h0 + group, tiles = (T + FLASH.br - 1) / FLASH.br;
    for (int h = h0; h < h1; h++)
        for (int t = 0; t < T; t++) attn_zero(dq + attn_offset(s, ld, b, t, h), D);
    for (int t = 0; t < tiles; t++) {
        const int i0 = t * FLASH.br;
        attn_key_range(s, b, i0, attn_min(i0 + FLASH.br, T), &w->tile_lo[t], &w->tile_hi[t]);
    }
    for (int j0 = 0; j0 < T; j0 += FLASH.bc) {
        const int bc = attn_min(FLASH.bc, T - j0);
        load_tile(w->k, k, s, ld, b, g, j0, bc);
        load_tile(w->v, v, s, ld, b, g, j0, bc);
        attn_zero(w->dk, bc * D);
        attn_zero(w->dv, bc * D);
        for (int h = h0; h < h1; h++)
            for (int t = 0; t < tiles; t++)
                if (w->tile_lo[t] < j0 + bc && w->tile_hi[t] > j0)
                    backward_tile_pair(s, q, dout, L, Drow, dq, b, h, t * FLASH.br, j0, bc, w);
        for (int c = 0; c < bc; c++) {
            memcpy(dk + attn_offset(s, ld, b, j0 + c, g), w->dk + (size_t)c * D,
                   (size_t)D * sizeof(float));
            memcpy(dv + attn_offset(s, ld, b, j0 + c, g), w->dv + (size_t)c * D,
                   (size_t)D * sizeof(float));
        }
    }
}

static int flash_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                          const void *o, const void *dout, const void *saved, void *dq, void *dk,
                          void *dv, void *workspace, void *stream) {
    if (attn_cpu_check_call(flash_unsupported(s), "flash/cpu backward",
                            q && k && v && o && dout && saved && dq && dk && dv && workspace))
        return -1;
    const int B = s->B, H = s->H, T = s->T, Hkv = attn_kv_heads(s);
    const float *O = o, *dO = dout;
    float *Drow = workspace;
    int out_of_memory = 0;
#pragma omp parallel
    {
#pragma omp for collapse(3) schedule(static)
        for (int b = 0; b < B; b++) /* D = rowsum(dO * O) */
            for (int h = 0; h < H; h++)
                for (int t = 0; t < T; t++)
                    Drow[attn_stat_index(s, b, h, t)] =
                        attn_dot(dO + attn_offset(s, s->ld_o, b, t, h),
                                 O + attn_offset(s, s->ld_o, b, t, h), s->D);
        BwdTiles w = {0};
        void *block = bwd_tiles_alloc(&w, s->D, T);
        if (!block) {
#pragma omp atomic write
            out_of_memory = 1;
        }
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < Hkv; g++)
                if (block) backward_kv_head(s, q, k, v, dout, saved, Drow, dq, dk, dv, b, g, &w);
        free(block);
    }
    return out_of_memory ? attn_cpu_error("flash/cpu backward", "out of memory") : 0;
}

const AttnImpl attn_flash_cpu = {
    .kernel = ATTN_FLASH,
    .place = ATTN_CPU,
    .unsupported = flash_unsupported,
    .saved_bytes = flash_saved_bytes,
    .workspace_bytes = flash_workspace_bytes,
    .forward = flash_forward,
    .backward = flash_backward,
};
