/* model/grad_sync_cuda.h: the CUDA backend's data parallelism over NCCL (world > 1).
 *
 * GradSync owns everything that exists because there are several ranks: the communicator, the
 * second (highest-priority) stream and its events, the buckets, the ZeRO-1 shards and the bf16
 * copy gradients travel in. The model calls it at fixed points (hooks), and with one process
 * every hook does nothing:
 *   backward:  gsync_backward_begin(sync?) / gsync_layer_done(l) after each layer, from the top /
 *              gsync_backward_done() after the encoder.
 *   update:    gsync_shard() says which range of the flat parameters this rank updates;
 *              gsync_after_update() hands the updated weights to everyone.
 *   forward:   gsync_wait_params(seg) before a segment's weights are read (ZeRO-1 per-layer
 *              gather), gsync_forward_done() after the last.
 *
 * Plain data parallel: on a backward that syncs, each bucket of layers' gradients (3 layers by
 * default) is summed over the ranks on the second stream as soon as its backward is done (one
 * NCCL group of 12 tensor ranges), the embeddings and final LayerNorm last; the main stream
 * waits for them at the end (--dp-overlap 0: one all-reduce after backward). bf16 runs send the
 * gradients in bf16 by default (rounded into a scratch copy, summed there, widened back;
 * --grad-comm).
 * ZeRO-1: each rank updates its 1/world shard of the parameters (AdamW m and v exist for the
 * shard only), and the updated weights are gathered (the bf16 copy in bf16 runs, where the fp32
 * master weights outside the shard are gathered only when someone asks for them). Its gradients
 * travel in one reduce-scatter after backward and the weights in one all-gather after AdamW.
 * --zero-overlap 1 sends the gradients in plain DP's buckets during backward instead, each
 * bucket's pieces reduced only to the rank whose shard holds them (grouped ncclReduce: the bytes
 * of a reduce-scatter; measured slower once the attention got faster, off by default);
 * --zero-gather-overlap 1 broadcasts the weights from their owners per layer on the second
 * stream instead of the all-gather, the next forward waiting for each layer's weights just
 * before it uses them (measured slower, off by default). Buffers of params, grads and the bf16
 * copy are padded to world equal shards (rank r owns [r shard, (r+1) shard)).
 *
 * C++ only (used by model/gpt2_cuda.cu).
 */
#ifndef GRAD_SYNC_CUDA_H
#define GRAD_SYNC_CUDA_H

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stddef.h>
#include "model/backend.h"
#include "model/dist_cuda.h"

typedef struct {
    /* settings (gsync_plan) */
    int rank, world, zero;   /* zero: ZeRO-1 over world > 1 ranks */
    int overlap;             /* plain DP: per-bucket all-reduce during backward (else one at the end) */
    int bucket_layers;       /* consecutive layers per bucket */
    int zero_overlap;        /* ZeRO-1: per-bucket reduce to the owners during backward */
    int gather_overlap;      /* ZeRO-1: weights broadcast per layer, waited on by the next forward */
    int comm_bf16;           /* gradients travel in bf16 (--grad-comm bf16) */
    int nccl_max_ctas;       /* 0: NCCL's choice */
    /* the flat parameters (model/gpt2.h order) */
    int L;
    size_t num_params, off[GPT2_NUM_PARAM_TENSORS], size[GPT2_NUM_PARAM_TENSORS];
    size_t shard, n_pad;     /* shard = n_pad / world elements; n_pad >= num_params */
    /* device buffers, the model's (gsync_bind) */
    float *params, *grads;
    __nv_bfloat16 *params_bf16; /* the bf16 weight copy, NULL in fp32 runs */
    __nv_bfloat16 *gcomm;       /* n_pad bf16: the gradients as sent and reduced (comm_bf16) */
    cudaStream_t stream;        /* the model's main stream */
    /* state */
    int sync;                /* this backward sums its gradients over the ranks */
    int pending_hi;          /* backward: the highest layer whose gradients are not yet sent */
    int master_partial;      /* ZeRO-1 bf16: fp32 master weights valid on this rank's shard only */
    int gather_pending;      /* a per-layer gather was issued and the main stream has not joined it */
    /* communication (gsync_start, world > 1) */
    DistComm *comm;
    cudaStream_t comm_stream;
    cudaEvent_t *bucket_ready; /* L + 1: a bucket's (or the rest's) gradients are final */
    cudaEvent_t *gather_ready; /* L + 1: segment 0 = embeddings + final LN, segment l+1 = layer l */
    cudaEvent_t comm_done;
    double *d_scalar, *h_scalar;
} GradSync;

/* The settings and the shard layout from the options (no allocation, nothing collective). */
void gsync_plan(GradSync *g, const ModelOptions *opt, size_t num_params, const size_t *off, const size_t *size);
/* The model's buffers: params and grads of n_pad floats, the bf16 weights (or NULL), gcomm of
 * n_pad bf16 when world > 1 and comm_bf16 (else NULL), and the main stream. */
void gsync_bind(GradSync *g, float *params, __nv_bfloat16 *params_bf16, float *grads, __nv_bfloat16 *gcomm,
                cudaStream_t stream);
/* Joins the communicator and makes the second stream and its events (collective; world > 1).
 * 0, or -1 with a message in err. */
int gsync_start(GradSync *g, const ModelOptions *opt, char *err, size_t errlen);
void gsync_destroy(GradSync *g);
/* Whether there are peers (a communicator). */
static inline int gsync_active(const GradSync *g) { return g->comm != NULL; }

/* Waits for `stream`; with peers, a wait that can end in a clear error instead of a hang. */
void gsync_stream_sync(GradSync *g, cudaStream_t stream);
/* Waits for `event` (what was queued before it), the same way. */
void gsync_event_sync(GradSync *g, cudaEvent_t event);
/* Before teardown: whatever the second stream still has in flight (a weight gather). */
void gsync_drain(GradSync *g);

/* ---- backward hooks ---- */
void gsync_backward_begin(GradSync *g, int sync);
void gsync_layer_done(GradSync *g, int l);
void gsync_backward_done(GradSync *g);

/* ---- update and parameter access ---- */
/* The range [lo, hi) of the flat parameters this rank updates (all of them without ZeRO-1). */
void gsync_shard(const GradSync *g, size_t *lo, size_t *hi);
/* Elements of this rank's shard inside the num_params real ones (the last shard is short). */
size_t gsync_shard_used(const GradSync *g);
/* After AdamW on the shard: everyone's updated shard to everyone (ZeRO-1). */
void gsync_after_update(GradSync *g);
/* The host rewrote all the parameters: the master weights are whole again. */
void gsync_params_set(GradSync *g);
/* ZeRO-1 in bf16 keeps only the shard of the fp32 master weights current: gather the rest. */
void gsync_gather_master(GradSync *g);
/* ZeRO-1: every rank's shard of an optimizer moment into full (n_pad floats) on the main stream. */
void gsync_gather_shards(GradSync *g, float *full, const float *shard);
/* In place on the main stream: the sum over the ranks of n floats. */
void gsync_sum_f32(GradSync *g, float *buf, size_t n);
/* The mean of x over the ranks (collective; x itself in one process). */
double gsync_mean(GradSync *g, double x);

/* ---- forward hooks (ZeRO-1 per-layer gather) ---- */
/* The main stream waits for segment seg of the weights (0: embeddings and final LayerNorm,
 * l+1: layer l). */
void gsync_wait_params(GradSync *g, int seg);
/* A forward has waited for every segment. */
void gsync_forward_done(GradSync *g);
/* The main stream waits for all segments (before anything else reads the weights). */
void gsync_join_gather(GradSync *g);

#endif
