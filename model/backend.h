/* model/backend.h: what a place that runs GPT-2 (the CPU, a GPU) offers the training loop.
 *
 * The training loop in train_gpt2.cu only talks to a Backend, so the same loop, data loader,
 * checkpoints and logging serve the CPU reference and the CUDA trainer. All host-visible
 * arrays are fp32 in the flat llm.c order of model/gpt2.h, whatever the backend keeps inside.
 */
#ifndef BACKEND_H
#define BACKEND_H

#include <stddef.h>
#include "model/gpt2.h"
#include "attention/attention.h"
#include "model/precision.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    GPT2Config config;
    int B, T;               /* largest batch and sequence length a step will use */
    AttnKernel attn;        /* resolved: never ATTN_AUTO here */
    AttnMaskKind mask;      /* CAUSAL for a language model; others for experiments */
    const float *dense_bias;/* (T, T) host array when mask == DENSE, else NULL */
    Precision precision;
    int recompute;          /* recompute GELU/LayerNorm outputs in backward (GPU) */
    int no_linear_bias;     /* linear layers without bias: their bias tensors are held at zero
                             * and never updated (the file format keeps them, as zeros) */
    int threads;            /* CPU: OpenMP threads, 0 = default */
    /* Data parallel over processes (CUDA with NCCL only; world 0 or 1 = one process).
     * create() joins the NCCL communicator of nccl_id (DIST_ID_BYTES, the same on every rank)
     * and is then collective, as are backward with grad sync on, grad_norm, update and, with
     * zero_stage 1, get_params and get_adam_state. */
    int rank, world;
    int zero_stage;         /* 1: AdamW state sharded over the ranks (ZeRO stage 1) */
    const void *nccl_id;
    double dist_timeout_s;  /* a collective silent this long stops the process (0 = 300) */
    Precision grad_comm;    /* element type gradients cross the wire in (bf16: half the bytes) */
} ModelOptions;

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_scale;       /* multiply gradients by this first (clipping): 1 = none */
    int t;                  /* 1-based step count for bias correction */
} AdamWStep;

typedef struct Model Model; /* backend-private */

typedef struct {
    const char *name;       /* "cpu", "cuda" */
    /* Allocates everything a step needs (params, grads, Adam m and v, activations) once.
     * Returns NULL with a one-line message in err when it cannot (e.g. out of memory). */
    Model *(*create)(const ModelOptions *opt, char *err, size_t errlen);
    void (*destroy)(Model *m);

    void (*set_params)(Model *m, const float *params);   /* host fp32, flat */
    void (*get_params)(Model *m, float *params);
    void (*get_grads)(Model *m, float *grads);
    void (*set_adam_state)(Model *m, const float *mom, const float *var);
    void (*get_adam_state)(Model *m, float *mom, float *var);

    /* Forward over inputs (B, T) token ids. With targets, returns the mean cross-entropy
     * (over tokens whose target is >= 0); without, returns 0. B, T <= the sizes of create. */
    float (*forward)(Model *m, const int *inputs, const int *targets, int B, int T);
    /* Host copy of the logits (V floats, unpadded) at position t of batch row b after the
     * last forward. */
    void (*logits_at)(Model *m, int b, int t, float *out);
    void (*zero_grad)(Model *m);
    /* Backward of the last forward; gradients accumulate, each scaled by loss_scale
     * (1/grad_accum), so the accumulated gradient is that of the mean loss. */
    void (*backward)(Model *m, float loss_scale);
    float (*grad_norm)(Model *m);                          /* global L2 norm of all grads */
    void (*update)(Model *m, const AdamWStep *s);
    /* Device memory: what the program holds now, and the peak it reached. 0 on the CPU. */
    size_t (*memory_in_use)(Model *m);
    /* Data parallel: whether the next backwards sum their gradients over the ranks (the
     * loop turns it on for the last micro-batch of an accumulation; it starts on, and the
     * loop's loss_scale holds 1/world so that the sum is the mean). */
    void (*set_grad_sync)(Model *m, int on);
    /* The mean of x over the ranks (collective); x itself in one process. */
    double (*mean_over_ranks)(Model *m, double x);
} Backend;

extern const Backend cpu_backend;
/* The CUDA backend, or NULL when the build has none or no GPU is visible; `why` says why. */
const Backend *cuda_backend_if_available(char *why, size_t whylen);

#ifdef __cplusplus
}
#endif
#endif
