/* layers/matmul.c: the fully connected layer, out (N,OC) = inp (N,C) @ weight^T (OC,C) + bias.
 * Backward: dinp += dout @ weight; dweight += dout^T @ inp; dbias += column sums of dout.
 * (First version: plain loops; the register-blocked kernels come next.)
 */
#include "layers/layers.h"

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int i = 0; i < N; i++) {
        for (int o = 0; o < OC; o++) {
            const float *x = inp + (size_t)i * C, *w = weight + (size_t)o * C;
            float acc = bias ? bias[o] : 0.0f;
            for (int c = 0; c < C; c++) acc += x[c] * w[c];
            out[(size_t)i * OC + o] = acc;
        }
    }
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < N; i++) {
            float *dx = dinp + (size_t)i * C;
            const float *dy = dout + (size_t)i * OC;
            for (int o = 0; o < OC; o++) {
                const float *w = weight + (size_t)o * C;
                float d = dy[o];
                for (int c = 0; c < C; c++) dx[c] += d * w[c];
            }
        }
    }
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        float *dw = dweight + (size_t)o * C;
        float db = 0.0f;
        for (int i = 0; i < N; i++) {
            float d = dout[(size_t)i * OC + o];
            const float *x = inp + (size_t)i * C;
            db += d;
            for (int c = 0; c < C; c++) dw[c] += d * x[c];
        }
        if (dbias) dbias[o] += db;
    }
}
