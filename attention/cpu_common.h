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
 * a known mask with a bias when dense, sizes that fit in memory), else a short reason. */
const char *attn_cpu_unsupported(const AttnShape *s);

/* Entry-point guard: `why_unsupported` is the impl's unsupported(s). Returns 0 when that is
 * NULL and every pointer the call needs is there (`pointers_present` != 0); otherwise prints
 * one line "attention: <who>: <reason>" to stderr and returns -1. */
int attn_cpu_check_call(const char *why_unsupported, const char *who, int pointers_present);

/* Prints "attention: <who>: <why>" to stderr and returns -1. */
int attn_cpu_error(const char *who, const char *why);

static inline int attn_min(int a, int b) { return a < b ? a : b; }

/* Offset of row (b, t) of head h in a token-major tensor with leading dimension ld. */
static inline size_t attn_offset(const AttnShape *s, int ld, int b, int t, int h) {
    return ((size_t)b * s->T + t) * (size_t)ld + (size_t)h * s->D;
}

/* Index of row t of head h in batch b in a (B, H, T) array of per-row statistics. */
static inline size_t attn_stat_index(const AttnShape *s, int b, int h, int t) {
    return ((size_t)b * s->H + h) * s->T + t;
}

/* How many keys query row i may see: causal rows stop at the diagonal (j <= i). Keys beyond
 * this are never touched; a dense bias may still mask keys inside it with -inf. */
static inline int attn_keys_visible(const AttnShape *s, int i) {
    return s->mask.kind == ATTN_MASK_CAUSAL ? i + 1 : s->T;
}

/* Row i of the additive bias of (b, h), indexed by key j; NULL when the mask adds none. */
static inline const float *attn_bias_row(const AttnShape *s, int b, int h, int i) {
    if (s->mask.kind != ATTN_MASK_DENSE) return NULL;
    const AttnMask *m = &s->mask;
    return m->bias + (long long)b * m->stride_b + (long long)h * m->stride_h +
           (long long)i * m->stride_row;
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
