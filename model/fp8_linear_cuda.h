/* model/fp8_linear_cuda.h: the CUDA backend's linear layers in FP8 (--matmul fp8).
 *
 * Per transformer block, the four linear layers (model/fp8_recipe.h: qkv, attproj, fc, fcproj) run
 * their three GEMMs with FP8 operands through layers/matmul_cuda.cu: E4M3 weights and inputs in the
 * forward, E5M2 output gradients in the backward, bf16 results, fp32 accumulation. Each FP8 tensor
 * has its own scale from its amax history (delayed scaling, model/fp8_recipe.h); the casts
 * (layers/fp8_cuda.cu) record the amaxes. Where each copy lives is the memory plan's Fp8Buffers.
 *   forward:   fp8_begin_forward (the scales from the histories), then per layer
 *              fp8_cast_weights (after that layer's weights are final: ZeRO's per-layer gathers)
 *              and per linear layer fp8_forward (casts the bf16 input into a row-major copy for this
 *              GEMM and a transposed one kept for the weight gradient)
 *   backward:  fp8_begin_backward, then per linear layer fp8_backward (casts the bf16 output
 *              gradient, both layouts, then the input- and weight-gradient GEMMs)
 * Everything is on the stream, so a captured CUDA graph replays it; the host only remembers
 * whether a first forward / backward has run (those measure each amax before casting with it).
 * C++ only (used by model/gpt2_cuda.cu).
 */
#ifndef FP8_LINEAR_CUDA_H
#define FP8_LINEAR_CUDA_H

#include <cuda_runtime.h>
#include "model/fp8_recipe.h"
#include "model/memory_plan_cuda.h"

typedef struct {
    Fp8Buffers b;
    int L, C, Q;
    int primed_fwd, primed_bwd; /* a forward / backward has run: the histories hold amaxes */
    int jit;                    /* the body being issued measures each amax before casting */
} Fp8Linear;

/* The buffers of the memory plan; scales start at 1, histories at 0. */
void fp8_bind(Fp8Linear *f, const Fp8Buffers *b, int L, int C, int Q, cudaStream_t st);
/* N rows run in FP8 only when N is a multiple of FP8_ALIGN (other forwards, such as sampling's
 * one row, run the bf16 GEMMs; they have no backward). */
static inline int fp8_rows_ok(int N) { return N % FP8_ALIGN == 0; }
void fp8_begin_forward(Fp8Linear *f, cudaStream_t st);
/* w[k]: layer l's weight k (OC_k, IC_k) in bf16. */
void fp8_cast_weights(Fp8Linear *f, int l, const void *const w[FP8_LINEARS], cudaStream_t st);
/* cuda_matmul_forward for linear k of layer l on inp (N, IC_k) bf16. 0, or -1 on a cuBLASLt error. */
int fp8_forward(Fp8Linear *f, int l, int k, void *out, void *gelu_pre, const void *inp, const void *bias, int N,
                cudaStream_t st);
void fp8_begin_backward(Fp8Linear *f);
/* cuda_matmul_backward for linear k of layer l from dout (N, OC_k) bf16 and the saved FP8 input. */
int fp8_backward(Fp8Linear *f, int l, int k, void *dinp, float *dweight, float *dbias, const void *dout,
                 const void *gelu_pre, int N, float alpha, float *scratch, cudaStream_t st);

#endif
