/* layers/softmax_crossentropy.c: softmax over V logits per row and cross-entropy loss.
 *
 * probs = exp(z - max z) / sum exp(z - max z)   (subtracting the max keeps exp() finite)
 * loss  = -log probs[target];  d loss / d z = probs - onehot(target).
 * Padding columns V..ld-1 are left untouched in probs and zeroed in dlogits.
 */
#include "layers/layers.h"
#include <math.h>

void softmax_crossentropy_forward(float *probs, float *losses, const float *logits,
                                  const int *targets, int N, int V, int ld) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * ld;
        float *p = probs + (size_t)i * ld;
        float zmax = -INFINITY;
        for (int j = 0; j < V; j++) zmax = z[j] > zmax ? z[j] : zmax;
        double sum = 0.0;
        for (int j = 0; j < V; j++) {
            p[j] = expf(z[j] - zmax);
            sum += p[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < V; j++) p[j] *= inv;
        int tgt = targets[i];
        /* -log p[tgt] computed from the logits: exact even when p[tgt] underflows to 0 */
        losses[i] = tgt >= 0 ? (float)(log(sum) - (double)(z[tgt] - zmax)) : 0.0f;
    }
}

void softmax_crossentropy_backward(float *dlogits, const float *probs, const int *targets,
                                   int N, int V, int ld, float dloss) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *p = probs + (size_t)i * ld;
        float *dz = dlogits + (size_t)i * ld;
        int tgt = targets[i];
        if (tgt < 0) {
            for (int j = 0; j < ld; j++) dz[j] = 0.0f;
            continue;
        }
        for (int j = 0; j < V; j++) dz[j] = p[j] * dloss;
        for (int j = V; j < ld; j++) dz[j] = 0.0f;
        dz[tgt] -= dloss;
    }
}
