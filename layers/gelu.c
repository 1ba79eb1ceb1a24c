/* layers/gelu.c: GELU, tanh approximation, written so that it vectorises.
 *
 *   gelu(x) = 0.5 x (1 + tanh(u)),  u = k (x + a x^3),  k = sqrt(2/pi), a = 0.044715.
 * With s = sigmoid(2u) = 1 / (1 + exp(-2u)) we have 0.5 (1 + tanh u) = s and
 * 1 - tanh(u)^2 = 4 s (1 - s), hence (no cancellation anywhere):
 *   gelu(x)  = x s
 *   gelu'(x) = s + 2 x s (1 - s) k (1 + 3 a x^2),   1 - s = s exp(-2u).
 * libm's tanhf/expf are scalar calls (no vector versions without -ffast-math), so exp is computed
 * here: exp(z) = 2^n e^r with n = round(z / ln 2), r = z - n ln 2 in [-ln2/2, ln2/2], and e^r by
 * its degree-7 Taylor polynomial (truncation r^8/8! < 1.2e-8 relative: below fp32's 6e-8).
 */
#include "layers/layers.h"

#include <stdint.h>
#include <string.h>

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* exp(z) for fp32, ~1 ulp, branch-free so that loops calling it vectorise; NaN stays NaN. */
static inline float exp_fp32(float z) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187e-06f; /* Cody-Waite */
    const float round_magic = 12582912.0f;                                     /* 1.5 * 2^23 */
    z = z < -87.0f ? -87.0f : z; /* keeps 2^n a normal number; exp(-87) ~ 1.6e-38 */
    z = z > 88.0f ? 88.0f : z;   /* exp(88) ~ 1.65e38 < FLT_MAX */
    float t = z * log2e + round_magic; /* the low bits of t hold round(z / ln 2) */
    float n = t - round_magic;
    int32_t t_bits, n_int, scale_bits;
    memcpy(&t_bits, &t, sizeof t_bits);
    n_int = t_bits - 0x4B400000; /* bits of round_magic */
    float r = z - n * ln2_hi;
    r = r - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    scale_bits = (n_int + 127) << 23;
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

static inline float gelu_u(float x) { return GELU_K * (x + GELU_A * x * x * x); }

void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float s = 1.0f / (1.0f + exp_fp32(-2.0f * gelu_u(x)));
        out[i] = x * s;
    }
}

/* dinp += gelu'(inp) * dout */
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float e = exp_fp32(-2.0f * gelu_u(x));
        float s = 1.0f / (1.0f + e);
        float one_minus_s = s * e;
        float du = GELU_K * (1.0f + 3.0f * GELU_A * x * x);
        dinp[i] += (s + 2.0f * x * s * one_minus_s * du) * dout[i];
    }
}
