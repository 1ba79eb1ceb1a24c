/* layers/adamw.c: the AdamW optimizer step and the sum of squares for gradient-norm clipping.
 *
 *   g = grad * grad_scale
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd * p )
 * Memory-bound (28 bytes per parameter): one vectorised pass. sqrtf vectorises only under
 * -fno-math-errno (mk/layers_cpu.mk); without it the result is the same, just slower.
 */
#include "layers/layers.h"
#include <math.h>

void adamw_update(float *params, const float *grads, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  float grad_scale, int t) {
    float bc1 = 1.0f - powf(beta1, (float)t);
    float bc2 = 1.0f - powf(beta2, (float)t);
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / bc1, vhat = vi / bc2;
        params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * params[i]);
    }
}

/* Summed in double in per-thread, per-lane partial sums (the order depends on the thread count;
 * in double the difference is ~1e-16 relative, far below what a gradient norm needs). */
double sum_of_squares(const float *x, size_t n) {
    double total = 0.0;
#pragma omp parallel for simd reduction(+ : total) schedule(static)
    for (size_t i = 0; i < n; i++) total += (double)x[i] * x[i];
    return total;
}
