/* layers/layernorm.c: LayerNorm over the C channels of each row.
 *
 * Forward: xhat = (x - mean) * rstd, y = xhat * w + b, rstd = 1/sqrt(var + 1e-5).
 * Backward (per row, g = dout * w):
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw += dout * xhat,  db += dout.
 * dweight/dbias sum over rows, so they are reduced by channel blocks to avoid races.
 */
#include "layers/layers.h"
#include <math.h>

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float sum = 0.0f;
        for (int c = 0; c < C; c++) sum += x[c];
        float m = sum / C;
        float sq = 0.0f;
        for (int c = 0; c < C; c++) { float d = x[c] - m; sq += d * d; }
        float s = 1.0f / sqrtf(sq / C + 1e-5f);
        float *y = out + (size_t)i * C;
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[i] = m;
        rstd[i] = s;
    }
}

static void layernorm_backward_input(float *dinp, const float *dout, const float *inp,
                                     const float *weight, const float *mean,
                                     const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        float g_mean = 0.0f, gx_mean = 0.0f;
        for (int c = 0; c < C; c++) {
            float g = dy[c] * weight[c];
            g_mean += g;
            gx_mean += g * (x[c] - m) * s;
        }
        g_mean /= C;
        gx_mean /= C;
        float *dx = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * s;
            float g = dy[c] * weight[c];
            dx[c] += s * (g - g_mean - xhat * gx_mean);
        }
    }
}

static void layernorm_backward_params(float *dweight, float *dbias, const float *dout,
                                      const float *inp, const float *mean, const float *rstd,
                                      int N, int C) {
    enum { CB = 64 }; /* channels per parallel block: each block owns its slice of dw, db */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += CB) {
        int c1 = c0 + CB < C ? c0 + CB : C;
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
            float m = mean[i], s = rstd[i];
            for (int c = c0; c < c1; c++) {
                dweight[c] += dy[c] * (x[c] - m) * s;
                dbias[c] += dy[c];
            }
        }
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C) {
    layernorm_backward_input(dinp, dout, inp, weight, mean, rstd, N, C);
    layernorm_backward_params(dweight, dbias, dout, inp, mean, rstd, N, C);
}
