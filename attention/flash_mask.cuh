/* attention/flash_mask.cuh: the mask family (attention.h) as the tiled tensor-core kernels see it.
 *
 * FlashMask carries the pieces beyond causal (sliding window, packed documents, key padding,
 * ALiBi) as device pointers; the tile predicates decide which tiles a block can skip (dead) or
 * run without a per-element mask (full); mask_tile_x and alibi_tile apply the mask to score
 * fragments in the mma.sync m16n8 accumulator layout (lane = 4 g + c/2: rows g and g + 8,
 * columns c, c + 1 of each 8-column slice; coordinates from score_pos, tc_attention.cuh), which is
 * also the layout of a wgmma accumulator within each warp of a warpgroup.
 *
 * FlashBias carries a dense additive bias and its gradient (attention.h's bias / dbias); bias_tile
 * adds it to score fragments and dbias_tile_add sends a dS block to dbias. A bias never lets a
 * tile be skipped: only the structural pieces above decide that.
 */
#ifndef ATTENTION_FLASH_MASK_CUH
#define ATTENTION_FLASH_MASK_CUH

#include "attention/cuda_common.cuh"
#include "attention/tc_attention.cuh"

/* The mask pieces beyond causal (attention.h), for the kernels instantiated with EXTRA: a
 * sliding window, packed documents, key padding and ALiBi, all read in the kernel (device
 * pointers). Every score of a visited tile is masked element by element; key tiles (forward) and
 * query tiles (backward) that no pair of the block can see are not visited. */
struct FlashMask {
    int window;                     /* > 0: query i sees keys (i - window, i] (|i - j| < window) */
    const int *doc;                 /* (B, T) document starts, or NULL */
    const int *key_begin, *key_end; /* (B) each, or NULL */
    const float *slopes;            /* (H) ALiBi slopes, or NULL */
    float inv_scale;                /* 1 / scale: the kernels add ALiBi to the unscaled scores */
};

/* 1 when no query of [q0, q1) may see a key of [k0, k1) (both non-empty) by the causal mask,
 * the window, the documents (their starts never decrease) or the key padding. */
template <bool CAUSAL>
__device__ __forceinline__ bool flash_tile_dead(const FlashMask &x, int b, int T, int q0, int q1, int k0, int k1) {
    if (CAUSAL && k0 > q1 - 1) return true;
    if (x.window > 0 && (k1 - 1 <= q0 - x.window || (!CAUSAL && k0 >= q1 - 1 + x.window))) return true;
    if (x.doc) {
        const int *d = x.doc + (long long)b * T;
        if (d[q1 - 1] < d[k0] || d[q0] > d[k1 - 1]) return true;
    }
    if (x.key_begin && k1 <= x.key_begin[b]) return true;
    if (x.key_end && k0 >= x.key_end[b]) return true;
    return false;
}

/* 1 when every query of [q0, q1) sees every key of [k0, k1) (all inside [0, T)): such a tile
 * needs no mask, only ALiBi's bias. */
template <bool CAUSAL>
__device__ __forceinline__ bool flash_tile_full(const FlashMask &x, int b, int T, int q0, int q1, int k0, int k1) {
    if (q1 > T || k1 > T) return false;
    if (CAUSAL && k1 - 1 > q0) return false;
    if (x.window > 0 && (k0 <= q1 - 1 - x.window || (!CAUSAL && k1 - 1 >= q0 + x.window))) return false;
    if (x.doc) {
        const int *d = x.doc + (long long)b * T;
        int dk = d[k0];
        if (d[k1 - 1] != dk || d[q0] != dk || d[q1 - 1] != dk) return false;
    }
    if (x.key_begin && k0 < x.key_begin[b]) return false;
    if (x.key_end && k1 > x.key_end[b]) return false;
    return true;
}

/* ALiBi alone on a tile every pair of which is visible: s -= slope |query - key| (unscaled). */
template <int NT>
__device__ __forceinline__ void alibi_tile(float s[][4], float slope, int row0, int col0, bool keys_are_rows) {
    /* row - column at nt = 0, e = 0, then acc_pos's constant offsets: no int -> float per entry */
    const float base = (float)(row0 + acc_lane_row() - col0 - acc_lane_col());
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float diff = base + (float)acc_row_off(e) - (float)acc_col_off(nt, e);
            s[nt][e] -= slope * fabsf(diff); /* |row - col| = |query - key| either way */
        }
}

/* The tiles [lo, hi) of `n` tiles of `tile` rows that hold a live pair with the fixed range
 * [f0, f1) (fixed_is_queries: the fixed rows are queries and the tiles keys; else the reverse). */
template <bool CAUSAL>
__device__ __forceinline__ void flash_live_tiles(const FlashMask &x, int b, int T, int f0, int f1, int tile, int n,
                                                 bool fixed_is_queries, int &lo, int &hi) {
    lo = n;
    hi = 0;
    for (int t = 0; t < n; t++) {
        int a0 = t * tile, a1 = min(a0 + tile, T);
        bool dead = fixed_is_queries ? flash_tile_dead<CAUSAL>(x, b, T, f0, f1, a0, a1)
                                     : flash_tile_dead<CAUSAL>(x, b, T, a0, a1, f0, f1);
        if (!dead) {
            lo = min(lo, t);
            hi = t + 1;
        }
    }
    if (hi <= lo) lo = hi = 0;
}

/* mask_tile's counterpart for EXTRA: -inf outside [0, T), above the causal diagonal, outside the
 * window, across documents and on padded keys; ALiBi's -slope |i - j| (in unscaled units) added. */
template <int NT, bool CAUSAL>
__device__ __forceinline__ void mask_tile_x(float s[][4], const FlashMask &x, int b, int h, int row0, int col0, int T,
                                            bool keys_are_rows) {
    const int *d = x.doc ? x.doc + (long long)b * T : nullptr;
    const int kb = x.key_begin ? x.key_begin[b] : 0, ke = x.key_end ? x.key_end[b] : T;
    const float slope = x.slopes ? x.slopes[h] * x.inv_scale : 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const auto [query, key] = score_pos(row0, col0, nt, e, keys_are_rows);
            bool dead = key >= T || query >= T || key < kb || key >= ke || (CAUSAL && key > query);
            if (!dead && x.window > 0) dead = CAUSAL ? key <= query - x.window : abs(query - key) >= x.window;
            if (!dead && d) dead = d[query] != d[key];
            s[nt][e] = dead ? -INFINITY : s[nt][e] - slope * fabsf((float)(query - key));
        }
}


/* A dense additive bias (attention.h): fp32 bias[b*stride_b + h*stride_h + i*stride_row + j] for
 * query i, key j of sequence b, query head h; a stride of 0 broadcasts. dbias (NULL: the bias is a
 * constant) has the same strides and receives dL/dS summed over what the strides broadcast. */
struct FlashBias {
    const float *bias;
    float *dbias;
    long long stride_b, stride_h, stride_row;
};

/* Adds inv_scale * bias[query, key] to a 16 x (8*NT) block of unscaled scores (the units ALiBi
 * is added in), in the accumulator layout of mask_tile_x (keys_are_rows: rows are keys). CHECKED:
 * only entries inside [0, T) whose score is not -inf, i.e. a block that mask_tile_x has masked
 * (masked entries stay -inf and their bias is never read); unchecked: every entry, for a block
 * that flash_tile_full says is all visible (hence all inside [0, T)). A -inf bias gives -inf. */
template <int NT, bool CHECKED>
__device__ __forceinline__ void bias_tile(float s[][4], const FlashBias &bs, float inv_scale, int b, int h, int row0,
                                          int col0, int T, bool keys_are_rows) {
    const float *base = bs.bias + (long long)b * bs.stride_b + (long long)h * bs.stride_h;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const auto [query, key] = score_pos(row0, col0, nt, e, keys_are_rows);
            if (!CHECKED || (query < T && key < T && s[nt][e] != -INFINITY))
                s[nt][e] = fmaf(__ldg(base + (long long)query * bs.stride_row + key), inv_scale, s[nt][e]);
        }
}

/* dbias[query, key] += ds for a 16 x (8*NT) block of dS = dL/dS (the gradient of the scaled and
 * biased score, before any scale factor), layout as bias_tile. fp32 atomics: broadcast strides
 * (and GQA's query heads, and the blocks of other key tiles) may share an entry, so dbias is
 * reproducible only up to the order of those additions; an entry no broadcast shares receives one
 * addition and is exact. Entries outside [0, T) and zeros (every masked entry) are not sent. */
template <int NT>
__device__ __forceinline__ void dbias_tile_add(const float ds[][4], const FlashBias &bs, int b, int h, int row0,
                                               int col0, int T, bool keys_are_rows) {
    float *base = bs.dbias + (long long)b * bs.stride_b + (long long)h * bs.stride_h;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const auto [query, key] = score_pos(row0, col0, nt, e, keys_are_rows);
            if (query < T && key < T && ds[nt][e] != 0.0f)
                atomicAdd(base + (long long)query * bs.stride_row + key, ds[nt][e]);
        }
}

/* The pieces of s's mask that FlashMask carries (device pointers, as the caller gave them). */
static inline FlashMask flash_mask(const AttnShape *s) {
    FlashMask x;
    x.window = s->mask.window;
    x.doc = s->mask.doc;
    x.key_begin = s->mask.key_begin;
    x.key_end = s->mask.key_end;
    x.slopes = s->mask.alibi_slopes;
    x.inv_scale = 1.0f / s->scale;
    return x;
}
/* 1 when s's mask holds a piece FlashMask carries (the EXTRA instantiations read them). */
static inline bool flash_mask_has_extras(const AttnShape *s) {
    const AttnMask *m = &s->mask;
    return m->window > 0 || m->doc || m->key_begin || m->key_end || m->alibi_slopes;
}
/* s's bias and bias gradient as FlashBias carries them (device pointers). */
static inline FlashBias flash_bias(const AttnShape *s) {
    FlashBias f = {s->mask.bias, s->mask.dbias, s->mask.stride_b, s->mask.stride_h, s->mask.stride_row};
    return f;
}
/* 1 when s has a dense bias (any kind: DENSE, or CAUSAL / NONE with a bias) or a bias gradient. */
static inline bool flash_mask_has_bias(const AttnShape *s) { return s->mask.bias || s->mask.dbias; }

#endif
