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
 *   dweight     += alpha * dout^T @ inp                 (fp32; NULL to skip, with dbias: inp unused)
 *   dbias       += alpha * column sums of dout          (fp32; NULL to skip)
 * scratch: cuda_colsum_scratch_floats(OC) floats. */
int cuda_matmul_backward(Precision p, void *dinp, float *dweight, float *dbias,
                         const void *dout, const void *inp, const void *weight,
                         const void *gelu_pre, int N, int C, int OC, int ld_dout, float alpha,
                         float *scratch, cudaStream_t stream);

/* ---- FP8 GEMM (layers/matmul_cuda.cu) and FP8 linear layers (layers/fp8_cuda.cu) ----------
 * --matmul fp8: the four linear layers of each block run their three GEMMs in FP8 through
 * cuBLASLt (compute capability 8.9+, bf16 activations): E4M3 weights and inputs, E5M2 output
 * gradients, fp32 accumulation, bf16 outputs (fp32 weight gradients). Each tensor has a
 * per-tensor scale from delayed scaling (Transformer Engine's recipe): the cast multiplies by
 * scale = fp8_max / max(amax history) and records the tensor's amax of this step; after each
 * backward cuda_fp8_roll pushes that amax into a 16-step history and recomputes the scale, all
 * on the device (a CUDA graph replays it). */
typedef enum { FP8_EPI_NONE, FP8_EPI_BIAS, FP8_EPI_GELU_AUX, FP8_EPI_DGELU } Fp8Epilogue;
/* D (m x n column-major, ld m: row-major (n, m)) = alpha a_descale b_descale A^T B + beta D with
 * A row-major (m, k) and B row-major (n, k) in FP8 (E4M3, or E5M2 where *_e5m2; never both E5M2),
 * cuBLASLt's "TN" layout; m, n, k multiples of 16; pointers 16-byte aligned, the two descale
 * device floats too. D is bf16, or fp32 with d_fp32. Epilogues: BIAS (bias bf16 (m), NULL = none),
 * GELU_AUX (D = GELU(AB + bias), aux = AB + bias, bf16, ld m), DGELU (D *= GELU'(aux)).
 * Returns 0, 1 when cuBLASLt offers no algorithm (cuda_matmul_last_refusal() says what was
 * asked and the status), -1 on error. */
int cuda_matmul_fp8(int m, int n, int k, const void *A, int a_e5m2, const float *a_descale,
                    const void *B, int b_e5m2, const float *b_descale, void *D, int d_fp32,
                    float alpha, float beta, Fp8Epilogue epi, const void *bias, void *aux,
                    int fast_accum, cudaStream_t stream);
/* One line: the last GEMM cuBLASLt refused or failed: status, shape, layout, types, alignment. */
const char *cuda_matmul_last_refusal(void);

/* A tensor's scale state: FP8_SLOT_FLOATS device floats, each field 16-byte aligned at its own
 * offset (cuBLASLt reads the descale through a pointer, which must be 16-byte aligned). */
enum {
    FP8_SLOT_SCALE = 0,    /* multiply by this when casting to FP8 */
    FP8_SLOT_DESCALE = 4,  /* 1 / scale: the GEMM's A / B scale pointer */
    FP8_SLOT_AMAX = 8,     /* max |x| of the casts since the last roll */
    FP8_SLOT_MAX = 12,     /* the format's largest finite value: 448 (E4M3) or 57344 (E5M2) */
    FP8_SLOT_HISTORY = 16, /* the last FP8_HISTORY amaxes, newest first */
    FP8_HISTORY = 16,
    FP8_SLOT_FLOATS = 32
};
/* Per linear layer three slots, in this order: input (E4M3), weight (E4M3), output gradient
 * (E5M2). Sets n_linear groups: scale 1, empty history. */
void cuda_fp8_init_slots(float *slots, int n_linear, cudaStream_t stream);
/* After a step: each slot's amax joins its history (a non-finite amax is left out), the scale
 * becomes fp8_max / max(history) (kept while the history is all zero), amax restarts at 0. */
void cuda_fp8_roll(float *slots, int n_slots, cudaStream_t stream);
/* x (rows, cols) bf16, cols and rows multiples of 8: out (rows, cols) and/or out_t (cols, rows)
 * (NULL: not written) = saturate(x * scale) in E4M3 or E5M2; with record_amax the slot's amax
 * takes max |x|. With adopt (calibration: the slot has no history yet) the kernel only measures
 * amax and sets the scale from it, writing nothing else. */
void cuda_fp8_cast(unsigned char *out, unsigned char *out_t, const void *x, int rows, int cols, float *slot,
                   int e5m2, int record_amax, cudaStream_t stream);
void cuda_fp8_calibrate(float *slot, const void *x, int rows, int cols, cudaStream_t stream);

typedef struct {
    float *x, *w, *g;          /* its three slots (input, weight, output gradient) */
    unsigned char *w8, *wt8;   /* the weight (OC, C) and its transpose (C, OC) in E4M3, cast by
                                * forward, read by backward */
} Fp8Linear;
typedef struct {
    unsigned char *a;          /* the input's E4M3 copy (N, C) in forward, its transpose (C, N) in
                                * backward */
    unsigned char *g, *gt;     /* the output gradient (N, OC) and its transpose (OC, N), E5M2 */
    int calibrate;             /* host: measure each tensor before its first cast (empty history) */
} Fp8Work;
/* Bytes of Fp8Work's three buffers for N rows of width up to max_width. */
size_t cuda_fp8_work_bytes(size_t N, int max_width);
/* As cuda_matmul_forward / cuda_matmul_backward (bf16, contiguous rows, alpha on the
 * gradients), in FP8. N, C, OC multiples of 16. Returns 0, or -1 with one line on stderr. */
int cuda_fp8_matmul_forward(const Fp8Linear *f, const Fp8Work *w, void *out, void *gelu_pre, const void *inp,
                            const void *weight, const void *bias, int N, int C, int OC, cudaStream_t stream);
/* Backward takes the bf16 weight (OC, C) too: an input gradient with gelu_pre (dGELU) runs in
 * bf16 from it when cuda_fp8_dgelu_input_grad_is_bf16() (layers/fp8_cuda.cu says why). */
int cuda_fp8_matmul_backward(const Fp8Linear *f, const Fp8Work *w, void *dinp, float *dweight, float *dbias,
                             const void *dout, const void *inp, const void *weight, const void *gelu_pre, int N,
                             int C, int OC, float alpha, float *scratch, cudaStream_t stream);
int cuda_fp8_dgelu_input_grad_is_bf16(void);

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
/* dinp += dx (ACCUMULATES: the residual stream's gradient), dw += .., db += .. (fp32), and
 * when dres_sum is not NULL dres_sum[c] += sum_n dinp[n, c] after the update (the bias gradient
 * of the linear layer that writes this residual stream, without a pass of its own).
 * scratch: cuda_layernorm_scratch_floats(C) floats. */
size_t cuda_layernorm_scratch_floats(int C);
void cuda_layernorm_backward(Precision p, void *dinp, float *dw, float *db, float *dres_sum, const void *dout,
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
 * the updated value is also written there rounded to X (the bf16 copy the matmuls read).
 * grad_scale is a device pair {multiplier, run}: with run == 0 nothing is touched (a skipped
 * step), so the decision can be made on the device by one of the two kernels below. */
void cuda_adamw(Precision p, float *params, void *params_x, const float *grads, float *m,
                float *v, size_t n, float lr, float beta1, float beta2, float eps,
                float weight_decay, const float *grad_scale, int t, cudaStream_t stream);
/* grad_scale = {scale, 1}, a host choice */
void cuda_adamw_scale_set(float *grad_scale, float scale, cudaStream_t stream);
/* grad_scale from the gradients' sum of squares on the device (one float, the loss-scaled
 * gradients'): layers.h adamw_grad_scale of sqrtf(*sumsq), {0, 0} when it says skip. */
void cuda_adamw_scale_from_sumsq(float *grad_scale, const float *sumsq, float max_norm, float loss_scale,
                                 int skip_nonfinite, cudaStream_t stream);
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
