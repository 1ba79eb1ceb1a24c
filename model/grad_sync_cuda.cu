/* model/grad_sync_cuda.cu: gradient all-reduce, ZeRO-1 shards and weight gathers over NCCL
 * (see grad_sync_cuda.h). */
#include "model/grad_sync_cuda.h"
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

#include <stdlib.h>
#include <string.h>
#include "common/error_text.h"

/* Plain DP overlap: layers per bucket. GPT-2 124M: 3 layers = 21M gradients, 42 MB in bf16
 * (2 x H200: 906.9K tok/s vs 903.7K with 1 layer, 904.8K with 6; dev/dist_notes.md). */
#define DEFAULT_BUCKET_LAYERS 3

static const int LAYER_TENSORS[] = {P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
                                    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB};
static const int OTHER_TENSORS[] = {P_WTE, P_WPE, P_LNFW, P_LNFB};
#define NUM_LAYER_TENSORS ((int)(sizeof LAYER_TENSORS / sizeof LAYER_TENSORS[0]))
#define NUM_OTHER_TENSORS ((int)(sizeof OTHER_TENSORS / sizeof OTHER_TENSORS[0]))

/* world equal shards of at least num_params elements, each a multiple of 64 (256-byte aligned) */
void gsync_plan(GradSync *g, const ModelOptions *opt, size_t num_params, const size_t *off, const size_t *size) {
    memset(g, 0, sizeof *g);
    g->world = opt->world > 1 ? opt->world : 1;
    g->rank = g->world > 1 ? opt->rank : 0;
    g->zero = g->world > 1 && opt->zero_stage == 1;
    g->sync = 1;
    g->overlap = opt->dp_overlap != 0;
    g->bucket_layers = opt->dp_bucket_layers > 0 ? opt->dp_bucket_layers : DEFAULT_BUCKET_LAYERS;
    g->zero_overlap = opt->zero_overlap != 0;
    g->gather_overlap = opt->zero_gather_overlap != 0;
    g->comm_bf16 = opt->grad_comm == PRECISION_BF16;
    g->nccl_max_ctas = opt->nccl_max_ctas > 0 ? opt->nccl_max_ctas : 0;
    g->L = opt->config.num_layers;
    g->num_params = num_params;
    memcpy(g->off, off, sizeof g->off);
    memcpy(g->size, size, sizeof g->size);
    size_t per = (num_params + g->world - 1) / g->world;
    g->shard = (per + 63) & ~(size_t)63;
    g->n_pad = g->world > 1 ? g->shard * g->world : num_params;
}

void gsync_bind(GradSync *g, float *params, bf16 *params_bf16, float *grads, bf16 *gcomm, cudaStream_t stream) {
    g->params = params;
    g->params_bf16 = params_bf16;
    g->grads = grads;
    g->gcomm = gcomm;
    g->stream = stream;
}

int gsync_start(GradSync *g, const ModelOptions *opt, char *err, size_t errlen) {
    if (g->world <= 1) return 0;
    if (!opt->nccl_id) {
        set_err(err, errlen, "a world of %d needs the NCCL id of rank 0", g->world);
        return -1;
    }
    g->comm = distc_create(g->rank, g->world, opt->nccl_id, opt->dist_timeout_s, g->nccl_max_ctas, err, errlen);
    if (!g->comm) return -1;
    /* the gradient sync gets the highest priority: its few blocks start as soon as SMs free up */
    int prio_lo = 0, prio_hi = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&prio_lo, &prio_hi));
    CUDA_CHECK(cudaStreamCreateWithPriority(&g->comm_stream, cudaStreamNonBlocking, prio_hi));
    g->bucket_ready = (cudaEvent_t *)calloc((size_t)g->L + 1, sizeof(cudaEvent_t));
    g->gather_ready = (cudaEvent_t *)calloc((size_t)g->L + 1, sizeof(cudaEvent_t));
    for (int l = 0; l <= g->L; l++) {
        CUDA_CHECK(cudaEventCreateWithFlags(&g->bucket_ready[l], cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&g->gather_ready[l], cudaEventDisableTiming));
    }
    CUDA_CHECK(cudaEventCreateWithFlags(&g->comm_done, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc((void **)&g->d_scalar, sizeof(double)));
    CUDA_CHECK(cudaMallocHost((void **)&g->h_scalar, sizeof(double)));
    return 0;
}

void gsync_destroy(GradSync *g) {
    if (!g->comm) return;
    distc_destroy(g->comm);
    for (int l = 0; l <= g->L; l++) {
        cudaEventDestroy(g->bucket_ready[l]);
        cudaEventDestroy(g->gather_ready[l]);
    }
    free(g->bucket_ready);
    free(g->gather_ready);
    cudaEventDestroy(g->comm_done);
    cudaStreamDestroy(g->comm_stream);
    cudaFree(g->d_scalar);
    cudaFreeHost(g->h_scalar);
    g->comm = NULL;
}

void gsync_stream_sync(GradSync *g, cudaStream_t stream) {
    if (g->comm) distc_sync(g->comm, stream);
    else CUDA_CHECK(cudaStreamSynchronize(stream));
}

void gsync_event_sync(GradSync *g, cudaEvent_t event) {
    if (g->comm) distc_sync_event(g->comm, event);
    else CUDA_CHECK(cudaEventSynchronize(event));
}

void gsync_drain(GradSync *g) {
    if (g->comm) distc_sync(g->comm, g->comm_stream);
}

/* ---- sums of gradient ranges ------------------------------------------------------------ */

__global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}
static void bf16_to_f32(float *dst, const bf16 *src, size_t n, cudaStream_t st) {
    if (!n) return;
    size_t blocks = (n + 255) / 256;
    bf16_to_f32_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(dst, src, n);
    CUDA_CHECK(cudaGetLastError());
}

/* Gradients are sent in buckets during backward (plain DP overlap, or ZeRO-1's per-bucket reduce). */
static int bucket_sync_on(const GradSync *g) {
    return g->comm && g->sync && (g->zero ? g->zero_overlap : g->overlap);
}

/* Sums the gradient ranges [off[i], off[i] + n[i]) over the ranks on stream st, in one NCCL
 * group. bf16 communication: each range is rounded into gcomm (same offsets), summed there in
 * bf16 and widened back into the fp32 gradients. */
static void all_reduce_ranges(GradSync *g, const size_t *off, const size_t *n, int k, cudaStream_t st) {
    if (g->comm_bf16)
        for (int i = 0; i < k; i++) cuda_convert_from_f32(PRECISION_BF16, g->gcomm + off[i], g->grads + off[i], n[i], st);
    distc_group_start(g->comm);
    for (int i = 0; i < k; i++) {
        if (g->comm_bf16) distc_all_reduce_sum(g->comm, g->gcomm + off[i], n[i], DIST_BF16, st);
        else distc_all_reduce_sum(g->comm, g->grads + off[i], n[i], DIST_F32, st);
    }
    distc_group_end(g->comm);
    if (g->comm_bf16)
        for (int i = 0; i < k; i++) bf16_to_f32(g->grads + off[i], g->gcomm + off[i], n[i], st);
}

/* The part [a, b) of the range [off, off + n) that lies in rank r's shard (a >= b: none). */
static void shard_piece(const GradSync *g, int r, size_t off, size_t n, size_t *a, size_t *b) {
    size_t lo = (size_t)r * g->shard, hi = lo + g->shard;
    *a = off > lo ? off : lo;
    *b = off + n < hi ? off + n : hi;
}

/* ZeRO-1: the ranks' sum of each range [off[i], off[i] + n[i]) reaches only the rank whose shard
 * holds it: one in-place ncclReduce per piece of a range inside one shard, all in one NCCL group
 * (over a whole backward, the bytes of one reduce-scatter). bf16 communication: rounded into
 * gcomm, reduced there, and this rank's pieces widened back into the fp32 gradients. */
static void reduce_ranges_to_owners(GradSync *g, const size_t *off, const size_t *n, int k, cudaStream_t st) {
    size_t a, b;
    if (g->comm_bf16)
        for (int i = 0; i < k; i++) cuda_convert_from_f32(PRECISION_BF16, g->gcomm + off[i], g->grads + off[i], n[i], st);
    distc_group_start(g->comm);
    for (int i = 0; i < k; i++)
        for (int r = 0; r < g->world; r++) {
            shard_piece(g, r, off[i], n[i], &a, &b);
            if (a >= b) continue;
            if (g->comm_bf16) distc_reduce_sum(g->comm, g->gcomm + a, b - a, DIST_BF16, r, st);
            else distc_reduce_sum(g->comm, g->grads + a, b - a, DIST_F32, r, st);
        }
    distc_group_end(g->comm);
    if (g->comm_bf16)
        for (int i = 0; i < k; i++) {
            shard_piece(g, g->rank, off[i], n[i], &a, &b);
            if (a < b) bf16_to_f32(g->grads + a, g->gcomm + a, b - a, st);
        }
}

static void sync_ranges(GradSync *g, const size_t *off, const size_t *n, int k, cudaStream_t st) {
    if (g->zero) reduce_ranges_to_owners(g, off, n, k, st);
    else all_reduce_ranges(g, off, n, k, st);
}

/* The ranges of segment seg of the flat parameters: 0 = the embeddings and the final LayerNorm,
 * l+1 = the slices of layers [l, l + layers) of the 12 per-layer tensors. Returns their count. */
static int segment_ranges(const GradSync *g, int seg, int layers, size_t *off, size_t *n) {
    if (seg == 0) {
        for (int i = 0; i < NUM_OTHER_TENSORS; i++) {
            off[i] = g->off[OTHER_TENSORS[i]];
            n[i] = g->size[OTHER_TENSORS[i]];
        }
        return NUM_OTHER_TENSORS;
    }
    for (int i = 0; i < NUM_LAYER_TENSORS; i++) {
        size_t per = g->size[LAYER_TENSORS[i]] / g->L;
        off[i] = g->off[LAYER_TENSORS[i]] + (size_t)(seg - 1) * per;
        n[i] = (size_t)layers * per;
    }
    return NUM_LAYER_TENSORS;
}

/* ---- backward hooks --------------------------------------------------------------------- */

void gsync_backward_begin(GradSync *g, int sync) {
    g->sync = sync != 0;
    g->pending_hi = g->L - 1;
}

/* Layer l's backward is done. When it closes a bucket (bucket_layers consecutive layers, from
 * the top; layer 0 closes the last), the bucket's gradients are summed over the ranks on the
 * second stream: per tensor, the bucket's layer slices are one contiguous range. */
void gsync_layer_done(GradSync *g, int l) {
    if (!bucket_sync_on(g)) return;
    int hi = g->pending_hi;
    if (hi - l + 1 < g->bucket_layers && l > 0) return;
    g->pending_hi = l - 1;
    CUDA_CHECK(cudaEventRecord(g->bucket_ready[l], g->stream));
    CUDA_CHECK(cudaStreamWaitEvent(g->comm_stream, g->bucket_ready[l], 0));
    size_t off[16], n[16];
    int k = segment_ranges(g, l + 1, hi - l + 1, off, n);
    sync_ranges(g, off, n, k, g->comm_stream);
}

/* End of backward: the embeddings and the final LayerNorm, then the main stream waits for all
 * buckets. ZeRO-1 without bucket overlap: one reduce-scatter of the flat gradient instead. */
void gsync_backward_done(GradSync *g) {
    if (!g->comm || !g->sync) return;
    if (g->zero && !g->zero_overlap) {
        if (g->comm_bf16) { /* round, reduce-scatter in bf16, widen this rank's shard */
            size_t lo = (size_t)g->rank * g->shard;
            cuda_convert_from_f32(PRECISION_BF16, g->gcomm, g->grads, g->n_pad, g->stream);
            distc_reduce_scatter_sum(g->comm, g->gcomm, g->shard, DIST_BF16, g->stream);
            bf16_to_f32(g->grads + lo, g->gcomm + lo, g->shard, g->stream);
        } else {
            distc_reduce_scatter_sum(g->comm, g->grads, g->shard, DIST_F32, g->stream);
        }
        return;
    }
    if (!g->zero && !g->overlap) {
        size_t off = 0, n = g->num_params;
        all_reduce_ranges(g, &off, &n, 1, g->stream);
        return;
    }
    CUDA_CHECK(cudaEventRecord(g->bucket_ready[g->L], g->stream));
    CUDA_CHECK(cudaStreamWaitEvent(g->comm_stream, g->bucket_ready[g->L], 0));
    size_t off[8], n[8];
    int k = segment_ranges(g, 0, 0, off, n);
    sync_ranges(g, off, n, k, g->comm_stream);
    CUDA_CHECK(cudaEventRecord(g->comm_done, g->comm_stream));
    CUDA_CHECK(cudaStreamWaitEvent(g->stream, g->comm_done, 0));
}

/* ---- update and parameter access -------------------------------------------------------- */

void gsync_shard(const GradSync *g, size_t *lo, size_t *hi) {
    *lo = g->zero ? (size_t)g->rank * g->shard : 0;
    *hi = g->zero ? *lo + g->shard : g->num_params;
}

size_t gsync_shard_used(const GradSync *g) {
    size_t lo = (size_t)g->rank * g->shard;
    return lo >= g->num_params ? 0 : (g->num_params - lo < g->shard ? g->num_params - lo : g->shard);
}

/* ZeRO-1: everyone's updated shard to everyone, on the second stream, in segments (0: the
 * embeddings and final LayerNorm; l+1: layer l's 12 slices), each piece broadcast by the rank
 * whose shard holds it; the next forward waits for each segment just before it reads it. */
static void gather_params_by_layer(GradSync *g) {
    const int bf = g->params_bf16 != NULL;
    CUDA_CHECK(cudaEventRecord(g->comm_done, g->stream)); /* AdamW done */
    CUDA_CHECK(cudaStreamWaitEvent(g->comm_stream, g->comm_done, 0));
    for (int seg = 0; seg <= g->L; seg++) {
        size_t off[16], n[16];
        int k = segment_ranges(g, seg, 1, off, n);
        distc_group_start(g->comm);
        for (int i = 0; i < k; i++)
            for (int r = 0; r < g->world; r++) {
                size_t a, b;
                shard_piece(g, r, off[i], n[i], &a, &b);
                if (a >= b) continue;
                if (bf) distc_broadcast(g->comm, g->params_bf16 + a, b - a, DIST_BF16, r, g->comm_stream);
                else distc_broadcast(g->comm, g->params + a, b - a, DIST_F32, r, g->comm_stream);
            }
        distc_group_end(g->comm);
        CUDA_CHECK(cudaEventRecord(g->gather_ready[seg], g->comm_stream));
    }
    g->gather_pending = 1;
    if (bf) g->master_partial = 1;
}

void gsync_after_update(GradSync *g) {
    if (!g->zero) return;
    if (g->gather_overlap) {
        gather_params_by_layer(g);
    } else if (g->params_bf16) { /* everyone's updated shard to everyone: the weights the matmuls read */
        distc_all_gather(g->comm, g->params_bf16, g->shard, DIST_BF16, g->stream);
        g->master_partial = 1;
    } else {
        distc_all_gather(g->comm, g->params, g->shard, DIST_F32, g->stream);
    }
}

void gsync_params_set(GradSync *g) { g->master_partial = 0; }

void gsync_gather_master(GradSync *g) {
    if (!g->master_partial) return;
    distc_all_gather(g->comm, g->params, g->shard, DIST_F32, g->stream);
    g->master_partial = 0;
}

void gsync_gather_shards(GradSync *g, float *full, const float *shard) {
    CUDA_CHECK(cudaMemcpyAsync(full + (size_t)g->rank * g->shard, shard, g->shard * 4, cudaMemcpyDeviceToDevice,
                               g->stream));
    distc_all_gather(g->comm, full, g->shard, DIST_F32, g->stream);
}

void gsync_sum_f32(GradSync *g, float *buf, size_t n) {
    distc_all_reduce_sum(g->comm, buf, n, DIST_F32, g->stream);
}

double gsync_mean(GradSync *g, double x) {
    if (!g->comm) return x;
    gsync_join_gather(g);
    *g->h_scalar = x;
    CUDA_CHECK(cudaMemcpyAsync(g->d_scalar, g->h_scalar, sizeof(double), cudaMemcpyHostToDevice, g->stream));
    distc_all_reduce_sum(g->comm, g->d_scalar, 1, DIST_F64, g->stream);
    CUDA_CHECK(cudaMemcpyAsync(g->h_scalar, g->d_scalar, sizeof(double), cudaMemcpyDeviceToHost, g->stream));
    gsync_stream_sync(g, g->stream);
    return *g->h_scalar / g->world;
}

/* ---- forward hooks ---------------------------------------------------------------------- */

void gsync_wait_params(GradSync *g, int seg) {
    if (g->gather_pending) CUDA_CHECK(cudaStreamWaitEvent(g->stream, g->gather_ready[seg], 0));
}

void gsync_forward_done(GradSync *g) { g->gather_pending = 0; }

void gsync_join_gather(GradSync *g) {
    if (!g->gather_pending) return;
    for (int l = 0; l <= g->L; l++) gsync_wait_params(g, l);
    g->gather_pending = 0;
}
