/* model/backend.h: what a place that runs GPT-2 (the CPU, a GPU) offers the training loop.
 *
 * The training loop in train_gpt2.cu only talks to a Backend, so the same loop, data loader,
 * checkpoints and logging serve the CPU reference and the CUDA trainer. All host-visible
 * arrays are fp32 in the flat llm.c order of model/gpt2.h, whatever the backend keeps inside.
 */
#ifndef BACKEND_H
#define BACKEND_H

#include <stddef.h>
#include <string.h>
#include "model/gpt2.h"
#include "model/documents.h"
#include "attention/attention.h"
#include "model/precision.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The attention's element type for a training precision. */
static inline AttnDtype precision_attn_dtype(Precision p) {
    return p == PRECISION_BF16 ? ATTN_BF16 : p == PRECISION_FP16 ? ATTN_FP16 : ATTN_FP32;
}

/* What backward recomputes instead of keeping from forward (the CUDA backend; the CPU keeps
 * everything). The levels are llm.c's recompute 0 / 1 / 2.
 *   none  every activation kept per layer
 *   gelu  the GELU output is not kept: backward recomputes it from the kept pre-activation, one
 *         layer at a time, into one shared buffer (an elementwise pass over N x 4C per layer)
 *   all   also the two LayerNorm outputs per layer, from the kept residual stream and statistics */
typedef enum { RECOMPUTE_NONE = 0, RECOMPUTE_GELU = 1, RECOMPUTE_ALL = 2 } RecomputeMode;
/* The default (--recompute's and model_options_defaults'): the choice and its figures are in
 * dev/cuda_trainer_notes.md ("Memory: issue #13"). */
#define RECOMPUTE_DEFAULT RECOMPUTE_GELU

static inline const char *recompute_name(RecomputeMode r) {
    return r == RECOMPUTE_NONE ? "none" : r == RECOMPUTE_GELU ? "gelu" : "all";
}
/* 0 and *out set for "none", "gelu" or "all"; -1 otherwise. */
static inline int recompute_from_name(const char *s, RecomputeMode *out) {
    static const RecomputeMode modes[3] = {RECOMPUTE_NONE, RECOMPUTE_GELU, RECOMPUTE_ALL};
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, recompute_name(modes[i])) == 0) {
            *out = modes[i];
            return 0;
        }
    return -1;
}

typedef struct {
    GPT2Config config;
    int B, T;               /* largest batch and sequence length a step will use */
    AttnKernel attn;        /* resolved: never ATTN_AUTO here */
    AttnMaskKind mask;      /* CAUSAL for a language model; others for experiments */
    const float *dense_bias;/* (T, T) host array when mask == DENSE, else NULL */
    int attn_window;        /* > 0: sliding-window attention, each query sees this many keys
                             * (itself and the window-1 before it when causal); 0 = none */
    DocSep doc_sep;         /* len > 0: sequences hold packed documents, each starting at an
                             * occurrence of the separator (model/documents.h): attention never
                             * crosses a document boundary */
    int doc_positions;      /* with doc_sep: positions restart at 0 at each document */
    Precision precision;
    RecomputeMode recompute;/* what backward recomputes (GPU; RECOMPUTE_DEFAULT) */
    int keep_layers;        /* the last keep_layers layers keep what recompute would recompute
                             * (0: every layer recomputes; >= layers: as RECOMPUTE_NONE) */
    int no_linear_bias;     /* linear layers without bias: their bias tensors are held at zero
                             * and never updated (the file format keeps them, as zeros) */
    int threads;            /* CPU: OpenMP threads, 0 = default */
    /* Data parallel over processes (CUDA with NCCL only; world 0 or 1 = one process).
     * create() joins the NCCL communicator of nccl_id (DIST_ID_BYTES, the same on every rank)
     * and is then collective, as are backward with sync_grads, grad_norm, update and, with
     * zero_stage 1, get_params and get_adam_state. */
    int rank, world;
    int zero_stage;         /* 1: AdamW state sharded over the ranks (ZeRO stage 1) */
    const void *nccl_id;
    double dist_timeout_s;  /* a collective silent this long stops the process (0 = 300) */
    Precision grad_comm;    /* element type gradients cross the wire in (bf16: half the bytes) */
    /* How gradients and weights travel (world > 1; model/grad_sync_cuda.h). */
    int dp_overlap;         /* plain DP: sum each bucket of layers during backward (0: one
                             * all-reduce after backward) */
    int dp_bucket_layers;   /* layers per bucket (<= 0: 3) */
    int zero_overlap;       /* ZeRO-1: reduce each bucket during backward (0: one reduce-scatter
                             * after backward) */
    int zero_gather_overlap;/* ZeRO-1: weights broadcast per layer before the next forward uses
                             * them (0: one all-gather after AdamW) */
    int nccl_max_ctas;      /* cap on NCCL's CTAs (0: NCCL's choice; NCCL_MAX_CTAS and
                             * NCCL_MAX_NCHANNELS in the environment win) */
    /* CUDA only; the CPU ignores them. */
    int cuda_graphs;        /* replay forward and backward as CUDA graphs (captured on the second
                             * call with the same shapes; one process only) */
    int tf32;               /* fp32 matmuls on TF32 tensor cores (0 for exact fp32 comparisons) */
    int logits_chunk_rows;  /* fp32: rows of logits computed at a time (0 = automatic: at most
                             * 256 MiB of fp32 logits); bf16 and fp16 keep all N rows */
    int matmul_fusion;      /* cuBLASLt fused epilogues (0 for measuring them) */
    int matmul_fp8;         /* the four linear layers of each block in FP8 (E4M3 / E5M2, delayed
                             * per-tensor scaling; bf16 precision, compute capability 8.9+);
                             * the lm head and the rest stay bf16 */
    int profile;            /* CUDA event marks between the parts of each step, the per-part
                             * table printed to stderr by destroy */
} ModelOptions;

/* All zero but the settings that default on: tf32, matmul_fusion, dp_overlap, buckets of 3
 * layers, and RECOMPUTE_DEFAULT. Callers fill in the rest (config, B, T, attn, ...). */
static inline void model_options_defaults(ModelOptions *o) {
    memset(o, 0, sizeof *o);
    o->recompute = RECOMPUTE_DEFAULT;
    o->tf32 = 1;
    o->matmul_fusion = 1;
    o->dp_overlap = 1;
    o->dp_bucket_layers = 3;
}

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_scale;       /* multiply gradients by this first (clipping, and 1/S of a loss scale S):
                             * 1 = none */
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
    /* Backward of the last forward (once: the CUDA backend's logits buffer is backward's scratch,
     * so a second backward needs a new forward); gradients accumulate, each scaled by loss_scale
     * (1/grad_accum), so the accumulated gradient is that of the mean loss; the training loop also
     * multiplies in its loss scale S (train/loss_scale.h: every activation gradient carries it,
     * which keeps fp16's small gradients from underflowing). With sync_grads (data
     * parallel: the last micro-batch of an accumulation) this backward also sums the gradients
     * over the ranks, and the loop's loss_scale holds 1/world so that the sum is the mean; with
     * one process it changes nothing. */
    void (*backward)(Model *m, float loss_scale, int sync_grads);
    /* A training micro-step: forward over (inputs, targets) then backward(loss_scale, sync_grads);
     * returns the forward's mean loss. The CUDA backend queues both before it waits for the
     * loss, so the GPU does not sit idle while the host reads it and launches the backward. */
    float (*forward_backward)(Model *m, const int *inputs, const int *targets, int B, int T, float loss_scale,
                              int sync_grads);
    float (*grad_norm)(Model *m);                          /* global L2 norm of all grads */
    void (*update)(Model *m, const AdamWStep *s);
    /* The optimizer step after the last backward: the global norm of the gradients, which carry
     * the loss scale S (returned, as grad_norm), then AdamW with its gradient multiplier from
     * layers.h adamw_grad_scale (clip to max_norm when max_norm > 0, undo S; no update at all
     * when skip_nonfinite and the norm is inf or NaN); s->grad_scale is not read. The CUDA
     * backend decides on the device and waits for the norm only after AdamW is queued. */
    float (*clip_and_update)(Model *m, const AdamWStep *s, float max_norm, float loss_scale, int skip_nonfinite);
    /* Device memory: what the program holds now, and the peak it reached. 0 on the CPU. */
    size_t (*memory_in_use)(Model *m);
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
