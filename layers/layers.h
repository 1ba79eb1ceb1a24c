/* layers/layers.h: GPT-2's layers on the CPU, fp32, forward and backward (OpenMP).
 *
 * These are the reference the CUDA layers are checked against, and each is checked against
 * finite differences in double (test/test_layers.c). Shapes: N = B*T rows of C channels.
 * Backward functions ACCUMULATE (+=) into every gradient they write, unless the comment says
 * "overwrites", because a tensor's gradient may collect contributions from several places
 * (the residual stream, the tied embedding).
 */
#ifndef LAYERS_H
#define LAYERS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]; wpe NULL: the token embedding alone (a model without
 * a position table, e.g. ALiBi), and then backward takes dwpe NULL too. */
void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe,
                     int B, int T, int C);
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp,
                      int B, int T, int C);
/* The same with token (b, t) at position pos_of[b*T + t] (NULL: t). */
void encoder_forward_at(float *out, const int *inp, const int *pos_of, const float *wte, const float *wpe,
                        int B, int T, int C);
void encoder_backward_at(float *dwte, float *dwpe, const float *dout, const int *inp, const int *pos_of,
                         int B, int T, int C);

/* y = (x - mean) * rstd * w + b per row, rstd = 1/sqrt(var + 1e-5) (biased variance).
 * mean and rstd (N floats each) are saved for backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int N, int C);
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int N, int C);

/* out (N, OC) = inp (N, C) @ weight^T + bias; weight is (OC, C); bias may be NULL. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC);
/* dinp += dout @ weight; dweight += dout^T @ inp; dbias += column sums of dout.
 * dbias may be NULL; dinp may be NULL (e.g. the first layer needs no input gradient). */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC);

/* GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
void gelu_forward(float *out, const float *inp, size_t n);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* out = a + b */
void residual_forward(float *out, const float *a, const float *b, size_t n);
/* da += dout; db += dout */
void residual_backward(float *da, float *db, const float *dout, size_t n);

/* Softmax over the V logits of each of N rows (row stride ld >= V), then the cross-entropy
 * loss against targets: losses[i] = -log probs[i, targets[i]], or 0 when targets[i] < 0.
 * probs (N, V, stride ld) are kept for backward. */
void softmax_crossentropy_forward(float *probs, float *losses, const float *logits,
                                  const int *targets, int N, int V, int ld);
/* Overwrites dlogits (N, V, stride ld) with (probs - onehot(target)) * dloss for rows whose
 * target is >= 0, and 0 for the others; dloss is d(total loss)/d(loss of one row). */
void softmax_crossentropy_backward(float *dlogits, const float *probs, const int *targets,
                                   int N, int V, int ld, float dloss);

/* One AdamW step over n parameters (decoupled weight decay, bias correction), with
 * g = grads * grad_scale:
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  mhat = m/(1-b1^t);  vhat = v/(1-b2^t)
 *   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)                                       */
void adamw_update(float *params, const float *grads, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  float grad_scale, int t);

/* The step's gradient multiplier from the global norm of gradients that carry a loss scale S
 * (scaled_norm = S x the true norm): clip to max_norm when max_norm > 0 and the true norm is
 * above it, and undo S. Returns 0 (skip the step, *grad_scale untouched) when skip_nonfinite and
 * the norm is inf or NaN, else 1. One rule for the host and the device (the CUDA backend decides
 * on the GPU, layers/adamw_cuda.cu), in plain fp32 operations so both give the same bits. */
#ifdef __CUDACC__
__host__ __device__
#endif
static inline int adamw_grad_scale(float scaled_norm, float max_norm, float S, int skip_nonfinite,
                                   float *grad_scale) {
    if (skip_nonfinite && !(scaled_norm - scaled_norm == 0.0f)) return 0; /* inf - inf, NaN: not 0 */
    float norm = scaled_norm / S;
    float clip = (max_norm > 0 && norm > max_norm) ? max_norm / norm : 1.0f;
    *grad_scale = clip * (1.0f / S);
    return 1;
}

/* sum of x[i]^2 in double (for the global gradient norm) */
double sum_of_squares(const float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif
