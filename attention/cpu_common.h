/* attention/cpu_common.h: what the three CPU kernels share (internal, C only).
 *
 * Indexing follows attention.h: element (b, t, h, d) of a token-major tensor with leading
 * dimension ld is at ((b*T + t)*ld + h*D + d); per-row statistics saved by memeff and flash
 * (L, the log-sum-exp of a score row) are (B, H, T) floats at ((b*H + h)*T + t).
 */
#ifndef ATTENTION_CPU_COMMON_H
#define ATTENTION_CPU_COMMON_H

#include <math.h>
#include <stddef.h>
#include "attention/attention.h"

/* The saved L of a row that sees no key (every score -inf). Mathematically log(0) = -inf, but
 * +inf makes backward's P = exp(S - L) come out 0 for every key without a branch, and the
 * forward output of such a row is 0. */
#define ATTN_LSE_EMPTY_ROW INFINITY

/* NULL when the CPU kernels can run shape s (fp32, sizes >= 1, leading dimensions wide enough,
 * Hkv dividing H, a known mask with a bias when dense, non-negative strides and window, dbias
 * only with a bias, doc non-decreasing in every sequence, sizes that fit in memory), else a
 * short reason. */
const char *attn_cpu_unsupported(const AttnShape *s);

/* Entry-point guard: `why_unsupported` is the impl's unsupported(s). Returns 0 when that is
 * NULL and every pointer the call needs is there (`pointers_present` != 0); otherwise prints
 * one line "attention: <who>: <reason>" to stderr and returns -1. */
int attn_cpu_check_call(const char *why_unsupported, const char *who, int pointers_present);

/* Prints "attention: <who>: <why>" to stderr and returns -1. */
int attn_cpu_error(const char *who, const char *why);

static inline int attn_min(int a, int b) { return a < b ? a : b; }
static inline int attn_max(int a, int b) { return a > b ? a : b; }

/* Offset of row (b, t) of head h in a token-major tensor with leading dimension ld. */
static inline size_t attn_offset(const AttnShape *s, int ld, int b, int t, int h) {
    return ((size_t)b * s->T + t) * (size_t)ld + (size_t)h * s->D;
}

/* Index of row t of head h in batch b in a (B, H, T) array of per-row statistics. */
static inline size_t attn_stat_index(const AttnShape *s, int b, int h, int t) {
    return ((size_t)b * s->H + h) * s->T + t;
}

/* K/V head read by query head h (grouped-query attention: H / Hkv query heads per K/V head). */
static inline int attn_kv_head(const AttnShape *s, int h) { return h / (s->H / attn_kv_heads(s)); }

/* The structural masks (causal, window, documents, key padding) leave query row i of sequence b
 * one interval of keys, [*lo, *hi) (empty when *lo >= *hi): each piece is an interval (documents
 * too, doc being non-decreasing) and so is their intersection. */
void attn_row_keys(const AttnShape *s, int b, int i, int *lo, int *hi);

/* The keys that any query row in [i0, i1) of sequence b may see: the hull [*j0, *j1) of the rows'
 * intervals (*j0 >= *j1: none). Tiled kernels visit only the key tiles inside it. */
void attn_key_range(const AttnShape *s, int b, int i0, int i1, int *j0, int *j1);

/* Everything a kernel needs to score row i of head h in sequence b: its key interval, its bias
 * and bias-gradient rows (NULL when absent) and its ALiBi slope (0 when absent). */
typedef struct {
    int i, lo, hi;
    const float *bias;
    float *dbias;
    float slope;
} AttnRowMask;

static inline AttnRowMask attn_row_mask(const AttnShape *s, int b, int h, int i) {
    const AttnMask *m = &s->mask;
    AttnRowMask r = {i, 0, 0, NULL, NULL, 0.0f};
    attn_row_keys(s, b, i, &r.lo, &r.hi);
    const long long at = (long long)b * m->stride_b + (long long)h * m->stride_h +
                         (long long)i * m->stride_row;
    if (m->bias) r.bias = m->bias + at;
    if (m->bias && m->dbias) r.dbias = m->dbias + at;
    if (m->alibi_slopes) r.slope = m->alibi_slopes[h];
    return r;
}

/* The one place where the mask meets a score: x = scale * q_i . k_j becomes
 * x + bias_ij - slope * |i - j|, or -inf when the structural masks hide key j from the row. */
static inline float attn_adjust_score(const AttnRowMask *r, int j, float x) {
    if (j < r->lo || j >= r->hi) return -INFINITY;
    if (r->bias) x += r->bias[j];
    if (r->slope != 0.0f) x -= r->slope * (float)(r->i > j ? r->i - j : j - r->i);
    return x;
}

/* dbias_ij += dS_ij (dS unscaled: dL/dS); atomic, since broadcast strides let several threads'
 * heads and sequences share one entry. */
static inline void attn_add_dbias(const AttnRowMask *r, int j, float ds) {
    if (!r->dbias) return;
#pragma omp atomic
    r->dbias[j] += ds;
}

/* a . b over n floats. `omp simd` lets the compiler vectorise the reduction (it reorders the
 * sum, which changes the result only by rounding). */
static inline float attn_dot(const float *restrict a, const float *restrict b, int n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

/* y += a * x over n floats. */
static inline void attn_axpy(float *restrict y, float a, const float *restrict x, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static inline void attn_scale(float *y, float a, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] *= a;
}

static inline void attn_zero(float *y, int n) {
    for (int i = 0; i < n; i++) y[i] = 0.0f;
}

#endif
