/* layers/layers_cuda.h: GPT-2's layers on a CUDA GPU, forward and backward.
 *
 * The same math as layers/layers.h (the CPU reference), with the GPU trainer's conventions:
 *   - Activations ("X" below, void *) are fp32 when prec == PRECISION_FP32 and bf16 when
 *     PRECISION_BF16; arithmetic is fp32 inside every kernel. Parameter gradients, the master
 *     weights, AdamW state, LayerNorm mean/rstd and losses are always fp32 (float *).
 *   - Every pointer is device memory unless it says host; every call is asynchronous on
 *     `stream` and never synchronises with the host.
 *   - Parameter gradients ACCUMULATE (+=); activation gradients are OVERWRITTEN unless the
 *     comment says they accumulate (the residual stream in LayerNorm backward).
 *   - Reductions over rows (bias and LayerNorm weight gradients, the gradient norm, the mean
 *     loss) run in a fixed order, so results are bitwise reproducible on one GPU.
 *   - Channel counts C must be multiples of 8 (16-byte vector access); pointers 16-byte aligned.
 * Names carry the cuda_ prefix so they never clash with the CPU layers.
 */
#ifndef LAYERS_CUDA_H
#define LAYERS_CUDA_H

#include <stddef.h>
#include <cuda_runtime.h>
#include "model/precision.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- matmul (layers/matmul_cuda.cu): cuBLASLt, one handle and one workspace per process ------ */
/* Creates the handle and workspace on first use; cuda_matmul_shutdown frees them. */
int cuda_matmul_init(void);
void cuda_matmul_shutdown(void);
/* fp32 runs: allow TF32 tensor cores (default on); off for exact fp32 comparisons. */
void cuda_matmul_set_tf32(int enabled);
int cuda_matmul_get_tf32(void);
/* Fused epilogues (GELU, dGELU, and BGRADB when asked for); off forces the separate kernels
 * (for measuring the fusion and as the fallback where cuBLASLt offers no fused algorithm). */
void cuda_matmul_set_fusion(int enabled);
/* The bias gradient through cuBLASLt's BGRADB epilogue (default off: slower on an H100 than
 * the separate column sum); needs fusion on as well. */
void cuda_matmul_set_bias_grad_epilogue(int enabled);
/* How many matmuls fell back from a fused epilogue to separate kernels so far. */
long cuda_matmul_fallback_count(void);
size_t cuda_matmul_workspace_bytes(void);

/* out (N, OC) = inp (N, C) @ weight^T + bias; weight (OC, C); bias (OC) or NULL.
 * With gelu_pre != NULL: gelu_pre = inp @ weight^T + bias and out = GELU(gelu_pre).
 * ld_out: row stride of out (>= OC; 0 means OC). Returns 0, or -1 on a cuBLASLt error. */
int cuda_matmul_forward(Precision p, void *out, void *gelu_pre, const void *inp,
                        const void *weight, const void *bias, int N, int C, int OC, int ld_out,
                        cudaStream_t stream);
/* Gradients of the same layer from dout (N, OC; row stride ld_dout, 0 = OC):
 *   dinp (N, C)  = alpha * dout @ weight                (overwritten; NULL to skip)
 *                  then * GELU'(gelu_pre) when gelu_pre != NULL: the gradient of the
 *                  pre-activation of a GELU that fed this layer
 *   dweight     += alpha * dout^T @ inp                 (fp32)
 *   dbias       += alpha * column sums of dout          (fp32; NULL to skip)
 * scratch: cuda_colsum_scratch_floats(OC) floats. */
int cuda_matmul_backward(Precision p, void *dinp, float *dweight, float *dbias,
                         const void *dout, const void *inp, const void *weight,
                         const void *gelu_pre, int N, int C, int OC, int ld_dout, float alpha,
                         float *scratch, cudaStream_t stream);

/* ---- column sums (layers/colsum_cuda.cu): the deterministic row reduction ------------------- */
size_t cuda_colsum_scratch_floats(int C);
/* dst[c] += alpha * sum_n X[n, c]  over N rows of stride ld. */
void cuda_colsum_accumulate(Precision p, float *dst, const void *x, int N, int C, int ld,
                            float alpha, float *scratch, cudaStream_t stream);

/* ---- LayerNorm (layers/layernorm_cuda.cu) ---------------------------------------------------- */
/* out = LN(inp) * w + b; mean, rstd (N floats) saved for backward. w, b are X. */
void cuda_layernorm_forward(Precision p, void *out, float *mean, float *rstd, const void *inp,
                            const void *w, const void *b, int N, int C, cudaStream_t stream);
/* The residual add fused in front: res = a + b (rounded to X first), out = LN(res). */
void cuda_residual_layernorm_forward(Precision p, void *res, void *out, float *mean,
                                     float *rstd, const void *a, const void *b,
                                     const void *w, const void *bias, int N, int C,
                                     cudaStream_t stream);
/* dinp += dx (ACCUMULATES: the residual stream's gradient), dw += .., db += .. (fp32).
 * scratch: cuda_layernorm_scratch_floats(C) floats. */
size_t cuda_layernorm_scratch_floats(int C);
void cuda_layernorm_backward(Precision p, void *dinp, float *dw, float *db, const void *dout,
                             const void *inp, const void *w, const float *mean,
                             const float *rstd, int N, int C, float *scratch,
                             cudaStream_t stream);

/* ---- GELU, tanh approximation (layers/gelu_cuda.cu), where the matmul does not fuse it -------- */
void cuda_gelu_forward(Precision p, void *out, const void *inp, size_t n, cudaStream_t stream);
/* dinp = GELU'(inp) * dout (overwrites; dinp may alias dout). */
void cuda_gelu_backward(Precision p, void *dinp, const void *inp, const void *dout, size_t n,
                        cudaStream_t stream);
/* out = a + b */
void cuda_add(Precision p, void *out, const void *a, const void *b, size_t n,
              cudaStream_t stream);

/* ---- token + position embedding (layers/encoder_cuda.cu) ------------------------------------- */
/* out[b,t,:] = wte[inp[b,t],:] + wpe[t',:] with t' = t, or t' = pos[b*T + t] when pos is not NULL
 * (device ints: positions restarting at each packed document); wpe NULL: no position table
 * (ALiBi), out = wte[inp] alone. wte, wpe are X. */
void cuda_encoder_forward(Precision p, void *out, const int *inp, const int *pos, const void *wte,
                          const void *wpe, int B, int T, int C, cudaStream_t stream);
/* The backward scatters rows of dout into dwte by token. To do it without atomics and in a
 * fixed order, the host groups the rows by token first (it has the tokens anyway):
 * cuda_encoder_group_tokens fills, on the host, uniq[0..U) (distinct ids among inp[0..N), each
 * below V), start[0..U] (offsets into rows) and rows[0..N) (row indices sorted by id, ascending
 * within an id); counts is V+1 ints of host scratch. Returns U. The same grouping of per-token
 * positions (ids below T) serves dwpe when positions restart at each document. */
int cuda_encoder_group_tokens(const int *inp, int N, int V, int *uniq, int *start, int *rows,
                              int *counts);
/* One grouping on the device; num_uniq is a device int (so a captured CUDA graph can replay
 * with new data). */
typedef struct {
    const int *uniq, *start, *rows, *num_uniq;
} EncoderGroups;
/* dwte[uniq[u]] += sum of dout rows in its group (by_token); dwpe (NULL: no position table)
 * [t] += sum over b of dout[b,t], or with by_pos (not NULL: per-token positions) the grouped sum
 * over the rows at position t. */
void cuda_encoder_backward(Precision p, float *dwte, float *dwpe, const void *dout,
                           const EncoderGroups *by_token, const EncoderGroups *by_pos,
                           int B, int T, int C, cudaStream_t stream);

/* ---- softmax + cross-entropy over the vocabulary (layers/classifier_cuda.cu) ----------------- */
/* For each of N rows of logits (X, row stride ld, V valid columns):
 *   losses[i] = logsumexp(z_i) - z_i[target_i]   (0 when target_i < 0)
 * and when write_dlogits, the row is overwritten IN PLACE with
 *   dz = (softmax(z) - onehot(target)) * (*dloss)  for columns < V, 0 for V..ld-1,
 * all of the row 0 when target_i < 0. One pass reads the logits, one more writes dz.
 * dloss is a device float (so a captured graph picks up a new value). */
void cuda_classifier(Precision p, void *logits, float *losses, const int *targets,
                     const float *dloss, int N, int V, int ld, int write_dlogits,
                     cudaStream_t stream);
/* *out = scale * sum of losses (a single block: fixed order); scale is a device float. */
void cuda_sum_losses(float *out, const float *losses, int N, const float *scale,
                     cudaStream_t stream);
/* out (V floats, fp32) = x (C, one row of X) @ wte^T: one row of logits on demand. */
void cuda_logits_row(Precision p, float *out, const void *x, const void *wte, int V, int C,
                     cudaStream_t stream);

/* ---- optimizer (layers/adamw_cuda.cu) -------------------------------------------------------- */
/* AdamW over n fp32 master params (see layers.h adamw_update), and when params_x is not NULL
 * the updated value is also written there rounded to X (the bf16 copy the matmuls read). */
void cuda_adamw(Precision p, float *params, void *params_x, const float *grads, float *m,
                float *v, size_t n, float lr, float beta1, float beta2, float eps,
                float weight_decay, float grad_scale, int t, cudaStream_t stream);
/* dst (X) = src (fp32) rounded */
void cuda_convert_from_f32(Precision p, void *dst, const float *src, size_t n,
                           cudaStream_t stream);

/* ---- global gradient norm (layers/global_norm_cuda.cu) --------------------------------------- */
/* Two stages: fixed-size grid of partial sums, then one block; deterministic.
 * scratch: CUDA_NORM_BLOCKS floats; *out = sum of x^2. */
enum { CUDA_NORM_BLOCKS = 1024 };
void cuda_sum_of_squares(float *out, const float *x, size_t n, float *scratch,
                         cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
