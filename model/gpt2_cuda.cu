/* model/gpt2_cuda.cu: the CUDA backend: GPT-2 forward, backward and AdamW on one GPU.
 *
 * Precision: master weights, gradients and AdamW state are fp32; with PRECISION_BF16 the
 * matmuls and every activation use a bf16 copy of the weights (rewritten by each AdamW step)
 * and bf16 activations, accumulating in fp32. PRECISION_FP32 keeps everything fp32.
 *
 * Memory: three arenas, sized before anything is allocated and allocated once in create():
 *   params  master, grads, m, v (fp32) + the bf16 weight copy
 *   acts    what backward needs from forward, per layer (the attention's saved buffer too)
 *   scratch gradients of activations (shared by all layers), logits, reduction scratch
 * With --recompute the LayerNorm outputs and the GELU output are not kept per layer: backward
 * recomputes them into one shared buffer each.
 *
 * A step (one stream, no host synchronisation except to return the loss and the norm):
 *   forward: encoder, L x [LN1 -> qkv -> attention -> proj -> residual+LN2 -> fc+GELU ->
 *            fcproj -> residual+next LN], logits = lnf wte^T, fused softmax/CE which already
 *            writes dlogits = (p - y)/n_valid over the logits (bf16; fp32 in row chunks).
 *   backward: lm head (alpha = loss_scale), LNf, L x [...], encoder; bias gradients and
 *            GELU' ride on the matmuls' epilogues.
 * The loss returned by forward is the mean over tokens with target >= 0 (as the CPU).
 *
 * Data parallel (world > 1, NCCL): on a backward with grad sync on, each bucket of layers'
 * gradients (3 layers by default) is summed over the ranks on a second, high-priority stream as
 * soon as its backward is done (one NCCL group of 12 tensor ranges), the embeddings and final
 * LayerNorm last; the main stream waits for them at the end. bf16 runs send the gradients in
 * bf16 by default (rounded into a scratch copy, summed there, widened back; --grad-comm).
 * ZeRO-1: each rank updates its 1/world shard of the parameters (AdamW m and v exist for the
 * shard only), and the updated weights are gathered (the bf16 copy in bf16 runs, where the fp32
 * master weights outside the shard are gathered only when someone asks for them). Its gradients
 * travel in one reduce-scatter after backward and the weights in one all-gather after AdamW.
 * TRAIN_GPT2_ZERO_OVERLAP=1 sends the gradients in plain DP's buckets during backward instead,
 * each bucket's pieces reduced only to the rank whose shard holds them (grouped ncclReduce: the
 * bytes of a reduce-scatter; measured slower once the attention got faster, off by default);
 * TRAIN_GPT2_ZERO_GATHER_OVERLAP=1 broadcasts the weights from their owners per
 * layer on the second stream instead of the all-gather, the next forward waiting for each
 * layer's weights just before it uses them (measured slower, off by default). Buffers of params,
 * grads and the bf16 copy are padded to world equal shards (rank r owns [r shard, (r+1) shard)).
 */
#include "model/backend.h"
#include "model/cuda_extras.h"
#include "model/dist_cuda.h"
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include "common/error_text.h"

/* ---- settings shared by all models of the process (cuda_extras) ------------------------- */
static int g_use_graphs = 0;
static int g_logits_chunk_rows = 0;

typedef struct {
    /* per layer (L copies) unless recompute shares them */
    void *ln1, *qkv, *atty, *res2, *ln2, *fch, *fch_gelu, *res3;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;
    char *att_saved;
    void *encoded, *lnf;
    float *lnf_mean, *lnf_rstd, *losses;
} Acts;

typedef struct {
    void *proj;     /* (N, C): attproj / fcproj output before the residual add */
    void *dres;     /* (N, C): gradient of the residual stream */
    void *dln;      /* (N, C): gradient into a LayerNorm output / attention output */
    void *dbig;     /* (N, 4C): gradient of the MLP pre-activation */
    void *dqkv;     /* (N, 3C) */
    void *logits;   /* (chunk_rows, ld_logits): logits, then dlogits in place */
    void *att_ws;
    float *reduce;  /* column-sum partials / bias-gradient scratch */
    float *norm_partials;
    float *logits_row; /* Vp floats for logits_at */
    int *inputs, *targets, *uniq, *start, *pos, *num_uniq;
    float *dloss, *loss, *sumsq;
} Scratch;

typedef struct {
    cudaGraphExec_t exec;
    int B, T, flag; /* flag: has_targets (forward) or loss_scale bits (backward) */
    int seen;       /* times run eagerly with this key; captured on the second */
} GraphSlot;

/* Where the time goes, by part of the step (CUDA_TRAINER_PROFILE=1; eager runs only): events
 * recorded between the parts on the stream, read back at the next host synchronisation. */
enum {
    PF_START = 0, PF_ENCODER, PF_LN_FWD, PF_QKV_FWD, PF_ATTN_FWD, PF_ATTPROJ_FWD, PF_FC_FWD, PF_FCPROJ_FWD,
    PF_LMHEAD_FWD, PF_CLASSIFIER, PF_LMHEAD_BWD, PF_LN_BWD, PF_FCPROJ_BWD, PF_FC_BWD, PF_ATTPROJ_BWD,
    PF_ATTN_BWD, PF_QKV_BWD, PF_RECOMPUTE, PF_ENCODER_BWD, PF_ADAMW, PF_NORM, PF_NUM
};
static const char *const PF_NAMES[PF_NUM] = {
    "start", "encoder", "layernorm fwd", "qkv fwd", "attention fwd", "attproj fwd", "fc+gelu fwd",
    "fcproj fwd", "lm head fwd", "classifier+loss", "lm head bwd", "layernorm bwd", "fcproj bwd",
    "fc bwd", "attproj bwd", "attention bwd", "qkv bwd", "recompute", "encoder bwd", "adamw", "grad norm"};
enum { PF_MAX_MARKS = 2048, PROF_WARMUP_STEPS = 3 };
typedef struct {
    int on, n, steps;
    cudaEvent_t ev[PF_MAX_MARKS];
    int cat[PF_MAX_MARKS];
    double ms[PF_NUM];
} Profile;

struct Model {
    Profile prof;
    ModelOptions opt;
    GPT2Config c;
    Precision prec;
    size_t esize;
    const AttnImpl *attn;
    size_t num_params, off[GPT2_NUM_PARAM_TENSORS], size[GPT2_NUM_PARAM_TENSORS];
    int L, C, H, V, Vp, maxB, maxT, ld_logits, chunk_rows;
    size_t att_saved_per_layer, att_ws_bytes;
    cudaStream_t stream;
    /* arenas */
    char *param_arena, *act_arena, *scratch_arena;
    size_t param_bytes, act_bytes, scratch_bytes, held_bytes;
    float *params, *grads, *adam_m, *adam_v;
    void *params_x; /* the weights the matmuls read: bf16 copy, or == params in fp32 */
    float *dense_bias;
    Acts a;
    Scratch s;
    /* host staging (pinned) of what forward uploads */
    int *h_inputs, *h_targets, *h_uniq, *h_start, *h_pos, *h_counts, *h_num_uniq;
    float *h_dloss, *h_out;
    cudaEvent_t staged; /* the last upload finished: staging may be rewritten */
    /* state of the last forward */
    int B, T, has_targets, dlogits_ready;
    GraphSlot fwd_graph, bwd_graph;
    /* data parallel (world > 1) */
    int rank, world, zero, sync_grads;
    int overlap;             /* plain DP: per-layer buckets during backward (else one at the end) */
    int bucket_layers;       /* plain DP overlap: consecutive layers per bucket */
    int pending_hi;          /* backward: the highest layer whose gradients are not yet sent */
    int comm_bf16;           /* gradients travel in bf16 (--grad-comm bf16) */
    bf16 *gcomm;             /* n_pad bf16: the gradients as sent and reduced (comm_bf16) */
    size_t shard, n_pad;     /* shard = n_pad / world elements; n_pad >= num_params */
    int master_partial;      /* ZeRO-1 bf16: fp32 master weights valid on this rank's shard only */
    int zero_overlap;        /* ZeRO-1: per-bucket reduce to the owners during backward */
    int gather_overlap;      /* ZeRO-1: weights broadcast per layer, waited on by the next forward */
    int gather_pending;      /* a per-layer gather was issued and the main stream has not joined it */
    cudaEvent_t *gather_ready; /* L + 1: segment 0 = embeddings + final LN, segment l+1 = layer l */
    DistComm *comm;
    cudaStream_t comm_stream;
    cudaEvent_t *bucket_ready; /* L + 1: a layer's (or the rest's) gradients are final */
    cudaEvent_t comm_done;
    double *d_scalar, *h_scalar;
};

/* ---- memory plan ---------------------------------------------------------------------- */

typedef struct {
    char *base; /* NULL while only measuring */
    size_t used;
} Arena;

static void *arena_take(Arena *a, size_t bytes) {
    size_t at = (a->used + 255) & ~(size_t)255;
    a->used = at + bytes;
    return a->base ? a->base + at : NULL;
}

static AttnShape attn_shape_for(const Model *m, int B, int T) {
    AttnShape s = attn_shape_packed(B, T, m->H, m->C / m->H, m->opt.mask,
                                    m->prec == PRECISION_BF16 ? ATTN_BF16 : ATTN_FP32);
    if (m->opt.mask == ATTN_MASK_DENSE) {
        s.mask.bias = m->dense_bias;
        s.mask.stride_b = 0;
        s.mask.stride_h = 0;
        s.mask.stride_row = m->maxT;
    }
    return s;
}

static size_t plan_params(Model *m, Arena *a) {
    size_t n = m->n_pad, nm = m->zero ? m->shard : m->num_params;
    m->params = (float *)arena_take(a, n * 4);
    m->grads = (float *)arena_take(a, n * 4);
    m->adam_m = (float *)arena_take(a, nm * 4);
    m->adam_v = (float *)arena_take(a, nm * 4);
    m->params_x = m->prec == PRECISION_BF16 ? arena_take(a, n * 2) : (void *)m->params;
    m->gcomm = m->world > 1 && m->comm_bf16 ? (bf16 *)arena_take(a, n * 2) : NULL;
    if (m->opt.mask == ATTN_MASK_DENSE)
        m->dense_bias = (float *)arena_take(a, (size_t)m->maxT * m->maxT * 4);
    return a->used;
}

static size_t plan_acts(Model *m, Arena *a, int B, int T) {
    size_t N = (size_t)B * T, C = m->C, L = m->L, e = m->esize;
    size_t Lr = m->opt.recompute ? 1 : L; /* copies of what recompute shares */
    Acts *x = &m->a;
    x->encoded = arena_take(a, N * C * e);
    x->ln1 = arena_take(a, Lr * N * C * e);
    x->ln1_mean = (float *)arena_take(a, L * N * 4);
    x->ln1_rstd = (float *)arena_take(a, L * N * 4);
    x->qkv = arena_take(a, L * N * 3 * C * e);
    x->atty = arena_take(a, L * N * C * e);
    x->att_saved = (char *)arena_take(a, L * m->att_saved_per_layer);
    x->res2 = arena_take(a, L * N * C * e);
    x->ln2 = arena_take(a, Lr * N * C * e);
    x->ln2_mean = (float *)arena_take(a, L * N * 4);
    x->ln2_rstd = (float *)arena_take(a, L * N * 4);
    x->fch = arena_take(a, L * N * 4 * C * e);
    x->fch_gelu = arena_take(a, Lr * N * 4 * C * e);
    x->res3 = arena_take(a, L * N * C * e);
    x->lnf = arena_take(a, N * C * e);
    x->lnf_mean = (float *)arena_take(a, N * 4);
    x->lnf_rstd = (float *)arena_take(a, N * 4);
    x->losses = (float *)arena_take(a, N * 4);
    return a->used;
}

static size_t plan_scratch(Model *m, Arena *a, int B, int T) {
    size_t N = (size_t)B * T, C = m->C, e = m->esize;
    Scratch *s = &m->s;
    s->proj = arena_take(a, N * C * e);
    s->dres = arena_take(a, N * C * e);
    s->dln = arena_take(a, N * C * e);
    s->dbig = arena_take(a, N * 4 * C * e);
    s->dqkv = arena_take(a, N * 3 * C * e);
    s->logits = arena_take(a, (size_t)m->chunk_rows * m->ld_logits * e);
    s->att_ws = m->att_ws_bytes ? arena_take(a, m->att_ws_bytes) : NULL;
    size_t red = cuda_colsum_scratch_floats(4 * m->C);
    if (cuda_layernorm_scratch_floats(m->C) > red) red = cuda_layernorm_scratch_floats(m->C);
    s->reduce = (float *)arena_take(a, red * 4);
    s->norm_partials = (float *)arena_take(a, CUDA_NORM_BLOCKS * 4);
    s->logits_row = (float *)arena_take(a, (size_t)m->Vp * 4);
    s->inputs = (int *)arena_take(a, N * 4);
    s->targets = (int *)arena_take(a, N * 4);
    s->uniq = (int *)arena_take(a, N * 4);
    s->start = (int *)arena_take(a, (N + 1) * 4);
    s->pos = (int *)arena_take(a, N * 4);
    s->num_uniq = (int *)arena_take(a, 4);
    s->dloss = (float *)arena_take(a, 4);
    s->loss = (float *)arena_take(a, 4);
    s->sumsq = (float *)arena_take(a, 4);
    return a->used;
}

/* Rows of logits per chunk: all N in bf16; fp32 keeps at most 256 MiB unless told. */
static int logits_chunk_rows(const Model *m, int N) {
    if (m->prec == PRECISION_BF16) return N;
    int rows = g_logits_chunk_rows;
    if (rows <= 0) rows = (int)((256u << 20) / ((size_t)m->ld_logits * 4));
    if (rows < 1) rows = 1;
    return rows < N ? rows : N;
}

/* Sizes the attention buffers and all three arenas for batch B (without allocating). */
static size_t bytes_needed(Model *m, int B, size_t *pb, size_t *ab, size_t *sb) {
    int T = m->maxT;
    AttnShape shape = attn_shape_for(m, B, T);
    m->att_saved_per_layer = (m->attn->saved_bytes(&shape) + 255) & ~(size_t)255;
    m->att_ws_bytes = m->attn->workspace_bytes(&shape);
    m->chunk_rows = logits_chunk_rows(m, B * T);
    Arena p = {NULL, 0}, x = {NULL, 0}, s = {NULL, 0};
    *pb = plan_params(m, &p);
    *ab = plan_acts(m, &x, B, T);
    *sb = plan_scratch(m, &s, B, T);
    return *pb + *ab + *sb + cuda_matmul_workspace_bytes();
}

static void cuda_destroy(Model *m);
static void prof_collect(Model *m);

/* Plain DP overlap: layers per bucket. GPT-2 124M: 3 layers = 21M gradients, 42 MB in bf16
 * (2 x H200: 906.9K tok/s vs 903.7K with 1 layer, 904.8K with 6; dev/dist_notes.md). */
#define DEFAULT_BUCKET_LAYERS 3
/* ZeRO-1: per-bucket reduce during backward / per-layer weight gather before forward (1 = on).
 * H200s, GPT-2 124M (dev/dist_notes.md): with the Hopper attention kernels the single
 * reduce-scatter after backward beat the bucket reduce in all four pairs measured (2 and 4 GPUs,
 * B = 16 and 64 per GPU: +0.6 to +1.4%; the overlapped reduce slows the backward more than it
 * hides); the per-layer gather measured 1 ms/step slower. */
#define DEFAULT_ZERO_OVERLAP 0
#define DEFAULT_ZERO_GATHER_OVERLAP 0

static int env_flag(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? strcmp(v, "0") != 0 : dflt;
}

/* world equal shards of at least num_params elements, each a multiple of 64 (256-byte aligned) */
static void plan_shards(Model *m, const ModelOptions *opt) {
    m->world = opt->world > 1 ? opt->world : 1;
    m->rank = m->world > 1 ? opt->rank : 0;
    m->zero = m->world > 1 && opt->zero_stage == 1;
    m->sync_grads = 1;
    /* TRAIN_GPT2_DP_OVERLAP=0: one all-reduce of the flat gradient after backward (measuring) */
    const char *ov = getenv("TRAIN_GPT2_DP_OVERLAP");
    m->overlap = !(ov && !strcmp(ov, "0"));
    /* TRAIN_GPT2_DP_BUCKET_LAYERS=K: K consecutive layers per overlapped all-reduce */
    const char *bl = getenv("TRAIN_GPT2_DP_BUCKET_LAYERS");
    m->bucket_layers = bl && atoi(bl) > 0 ? atoi(bl) : DEFAULT_BUCKET_LAYERS;
    /* TRAIN_GPT2_ZERO_OVERLAP=1 / TRAIN_GPT2_ZERO_GATHER_OVERLAP=1: ZeRO-1's bucket reduce
     * during backward / per-layer weight broadcast before forward (measuring) */
    m->zero_overlap = env_flag("TRAIN_GPT2_ZERO_OVERLAP", DEFAULT_ZERO_OVERLAP);
    m->gather_overlap = env_flag("TRAIN_GPT2_ZERO_GATHER_OVERLAP", DEFAULT_ZERO_GATHER_OVERLAP);
    /* --grad-comm: gradients summed in bf16 (half the bytes on the wire) or fp32 (exact sums) */
    m->comm_bf16 = opt->grad_comm == PRECISION_BF16;
    size_t per = (m->num_params + m->world - 1) / m->world;
    m->shard = (per + 63) & ~(size_t)63;
    m->n_pad = m->world > 1 ? m->shard * m->world : m->num_params;
}

/* Joins the communicator and makes the second stream and its events (world > 1). */
static int setup_dist(Model *m, const ModelOptions *opt, char *err, size_t errlen) {
    if (m->world <= 1) return 0;
    if (!opt->nccl_id) {
        set_err(err, errlen, "a world of %d needs the NCCL id of rank 0", m->world);
        return -1;
    }
    m->comm = distc_create(m->rank, m->world, opt->nccl_id, opt->dist_timeout_s, err, errlen);
    if (!m->comm) return -1;
    /* the gradient sync gets the highest priority: its few blocks start as soon as SMs free up */
    int prio_lo = 0, prio_hi = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&prio_lo, &prio_hi));
    CUDA_CHECK(cudaStreamCreateWithPriority(&m->comm_stream, cudaStreamNonBlocking, prio_hi));
    m->bucket_ready = (cudaEvent_t *)calloc((size_t)m->L + 1, sizeof(cudaEvent_t));
    m->gather_ready = (cudaEvent_t *)calloc((size_t)m->L + 1, sizeof(cudaEvent_t));
    for (int l = 0; l <= m->L; l++) {
        CUDA_CHECK(cudaEventCreateWithFlags(&m->bucket_ready[l], cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&m->gather_ready[l], cudaEventDisableTiming));
    }
    CUDA_CHECK(cudaEventCreateWithFlags(&m->comm_done, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc((void **)&m->d_scalar, sizeof(double)));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_scalar, sizeof(double)));
    return 0;
}
static void prof_report(Model *m);

static Model *cuda_create(const ModelOptions *opt, char *err, size_t errlen) {
    char why[256];
    if (gpt2_config_validate(&opt->config, why, sizeof why) != 0) {
        set_err(err, errlen, "%s", why);
        return NULL;
    }
    const GPT2Config *c = &opt->config;
    if (c->channels % 8 != 0 || (c->channels / c->num_heads) % 8 != 0) {
        set_err(err, errlen, "the CUDA backend needs channels and head size divisible by 8 (C=%d, H=%d)",
                c->channels, c->num_heads);
        return NULL;
    }
    if (opt->T > c->max_seq_len || opt->B < 1 || opt->T < 1) {
        set_err(err, errlen, "bad B=%d T=%d (max_seq_len %d)", opt->B, opt->T, c->max_seq_len);
        return NULL;
    }
    const AttnImpl *attn = attn_impl(opt->attn, ATTN_CUDA);
    if (!attn) {
        set_err(err, errlen, "no CUDA implementation of attention '%s' in this build",
                attn_kernel_name(opt->attn));
        return NULL;
    }
    Model *m = (Model *)calloc(1, sizeof(Model));
    m->opt = *opt;
    m->c = *c;
    m->prof.on = getenv("CUDA_TRAINER_PROFILE") && atoi(getenv("CUDA_TRAINER_PROFILE")) > 0;
    m->prec = opt->precision;
    m->esize = m->prec == PRECISION_BF16 ? 2 : 4;
    m->attn = attn;
    m->L = c->num_layers; m->C = c->channels; m->H = c->num_heads;
    m->V = c->vocab_size; m->Vp = c->padded_vocab_size;
    m->maxB = opt->B; m->maxT = opt->T;
    m->ld_logits = (m->Vp + 7) & ~7;
    m->num_params = gpt2_param_sizes(c, m->size);
    gpt2_param_offsets(c, m->off);
    plan_shards(m, opt);

    AttnShape shape = attn_shape_for(m, m->maxB, m->maxT);
    /* the device copy of a dense bias does not exist yet: check the caller's host bias */
    if (opt->mask == ATTN_MASK_DENSE) shape.mask.bias = opt->dense_bias;
    const char *unsup = attn->unsupported(&shape);
    if (unsup) {
        set_err(err, errlen, "attention '%s' on CUDA: %s", attn_kernel_name(opt->attn), unsup);
        free(m);
        return NULL;
    }
    if (cuda_matmul_init() != 0) {
        set_err(err, errlen, "cuBLASLt could not be initialised");
        free(m);
        return NULL;
    }

    /* Does it fit? Everything is sized before the first allocation. */
    size_t pb, ab, sb, free_b = 0, total_b = 0;
    size_t need = bytes_needed(m, m->maxB, &pb, &ab, &sb);
    cudaMemGetInfo(&free_b, &total_b);
    const size_t reserve = 256u << 20; /* cuBLAS, attention handles, graphs, fragmentation */
    if (need + reserve > free_b) {
        int best = 0;
        for (int b = m->maxB - 1; b >= 1; b--) {
            size_t p2, a2, s2;
            if (bytes_needed(m, b, &p2, &a2, &s2) + reserve <= free_b) { best = b; break; }
        }
        set_err(err, errlen, "needs %.2f GiB, %.2f GiB free; the largest batch that fits is B=%d",
                (double)(need + reserve) / (1 << 30), (double)free_b / (1 << 30), best);
        free(m);
        return NULL;
    }
    bytes_needed(m, m->maxB, &pb, &ab, &sb); /* restore the full-size plan */
    m->param_bytes = pb; m->act_bytes = ab; m->scratch_bytes = sb;
    if (cudaMalloc((void **)&m->param_arena, pb) != cudaSuccess ||
        cudaMalloc((void **)&m->act_arena, ab) != cudaSuccess ||
        cudaMalloc((void **)&m->scratch_arena, sb) != cudaSuccess) {
        cudaGetLastError();
        set_err(err, errlen, "cudaMalloc failed for %.2f GiB (%.2f GiB were free)",
                (double)need / (1 << 30), (double)free_b / (1 << 30));
        cuda_destroy(m);
        return NULL;
    }
    m->held_bytes = pb + ab + sb + cuda_matmul_workspace_bytes();
    Arena p = {m->param_arena, 0}, x = {m->act_arena, 0}, s = {m->scratch_arena, 0};
    plan_params(m, &p);
    plan_acts(m, &x, m->maxB, m->maxT);
    plan_scratch(m, &s, m->maxB, m->maxT);

    size_t N = (size_t)m->maxB * m->maxT;
    CUDA_CHECK(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&m->staged, cudaEventDisableTiming));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_inputs, N * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_targets, N * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_uniq, N * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_start, (N + 1) * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_pos, N * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_num_uniq, 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_dloss, 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_out, 4));
    m->h_counts = (int *)malloc(sizeof(int) * ((size_t)m->V + 1));

    CUDA_CHECK(cudaMemsetAsync(m->param_arena, 0, pb, m->stream));
    CUDA_CHECK(cudaMemsetAsync(m->act_arena, 0, ab, m->stream));
    CUDA_CHECK(cudaMemsetAsync(m->scratch_arena, 0, sb, m->stream));
    if (opt->mask == ATTN_MASK_DENSE && opt->dense_bias)
        CUDA_CHECK(cudaMemcpyAsync(m->dense_bias, opt->dense_bias,
                                   (size_t)m->maxT * m->maxT * 4, cudaMemcpyHostToDevice, m->stream));
    CUDA_CHECK(cudaStreamSynchronize(m->stream));
    if (setup_dist(m, opt, err, errlen) != 0) {
        cuda_destroy(m);
        return NULL;
    }
    return m;
}

static void drop_graph(GraphSlot *g) {
    if (g->exec) cudaGraphExecDestroy(g->exec);
    memset(g, 0, sizeof *g);
}

static void cuda_destroy(Model *m) {
    if (!m) return;
    if (m->comm) distc_sync(m->comm, m->comm_stream); /* a weight gather may still be in flight */
    if (m->stream) cudaStreamSynchronize(m->stream);
    prof_collect(m);
    prof_report(m);
    for (int k = 0; k < PF_MAX_MARKS; k++)
        if (m->prof.ev[k]) cudaEventDestroy(m->prof.ev[k]);
    drop_graph(&m->fwd_graph);
    drop_graph(&m->bwd_graph);
    cudaFree(m->param_arena);
    cudaFree(m->act_arena);
    cudaFree(m->scratch_arena);
    cudaFreeHost(m->h_inputs); cudaFreeHost(m->h_targets); cudaFreeHost(m->h_uniq);
    cudaFreeHost(m->h_start); cudaFreeHost(m->h_pos); cudaFreeHost(m->h_num_uniq);
    cudaFreeHost(m->h_dloss); cudaFreeHost(m->h_out);
    free(m->h_counts);
    if (m->staged) cudaEventDestroy(m->staged);
    if (m->stream) cudaStreamDestroy(m->stream);
    if (m->comm) {
        distc_destroy(m->comm);
        for (int l = 0; l <= m->L; l++) {
            cudaEventDestroy(m->bucket_ready[l]);
            cudaEventDestroy(m->gather_ready[l]);
        }
        free(m->bucket_ready);
        free(m->gather_ready);
        cudaEventDestroy(m->comm_done);
        cudaStreamDestroy(m->comm_stream);
        cudaFree(m->d_scalar);
        cudaFreeHost(m->h_scalar);
    }
    free(m);
}


static void prof_mark(Model *m, int cat) {
    Profile *p = &m->prof;
    if (!p->on || g_use_graphs || p->n >= PF_MAX_MARKS) return;
    if (!p->ev[p->n]) cudaEventCreate(&p->ev[p->n]);
    cudaEventRecord(p->ev[p->n], m->stream);
    p->cat[p->n++] = cat;
}
/* After a host synchronisation: every recorded event has completed. */
static void prof_collect(Model *m) {
    Profile *p = &m->prof;
    for (int k = 1; k < p->n; k++) {
        float ms = 0.0f;
        if (p->cat[k] != PF_START && cudaEventElapsedTime(&ms, p->ev[k - 1], p->ev[k]) == cudaSuccess)
            p->ms[p->cat[k]] += ms;
    }
    /* keep the last event as the start of the next interval */
    if (p->n > 1) {
        cudaEvent_t last = p->ev[p->n - 1];
        p->ev[p->n - 1] = p->ev[0];
        p->ev[0] = last;
        p->cat[0] = PF_START;
        p->n = 1;
    }
}
static void prof_report(Model *m) {
    Profile *p = &m->prof;
    int steps = p->steps - PROF_WARMUP_STEPS - 1;
    if (!p->on || steps <= 0) return;
    double total = 0.0;
    for (int c = 1; c < PF_NUM; c++) total += p->ms[c];
    fprintf(stderr, "cuda profile: %d steps after %d of warm-up, %.2f ms/step in the parts below\n", steps,
            PROF_WARMUP_STEPS + 1, total / steps);
    for (int c = 1; c < PF_NUM; c++)
        if (p->ms[c] > 0)
            fprintf(stderr, "  %-16s %8.3f ms/step  %5.1f%%\n", PF_NAMES[c], p->ms[c] / steps, 100 * p->ms[c] / total);
}

/* ---- parameter access ------------------------------------------------------------------ */

static void *wx(Model *m, int t, int l) { /* weights as the matmuls read them, layer l's slice */
    size_t per = m->size[t] / (t == P_WTE || t == P_WPE || t == P_LNFW || t == P_LNFB ? 1 : m->L);
    return (char *)m->params_x + (m->off[t] + (size_t)l * per) * m->esize;
}
static float *gr(Model *m, int t, int l) {
    size_t per = m->size[t] / (t == P_WTE || t == P_WPE || t == P_LNFW || t == P_LNFB ? 1 : m->L);
    return m->grads + m->off[t] + (size_t)l * per;
}
/* Layer l's slice of a per-layer activation with `width` elements per token (or the one
 * shared copy when recompute shares it). */
static void *act(const Model *m, void *base, int l, int width, int shared) {
    size_t N = (size_t)m->maxB * m->maxT;
    int idx = shared && m->opt.recompute ? 0 : l;
    return (char *)base + (size_t)idx * N * width * m->esize;
}
static float *stat(const Model *m, float *base, int l) { return base + (size_t)l * m->maxB * m->maxT; }

/* Waits for the main stream; with peers, a wait that can end in a clear error, not a hang. */
static void stream_sync(Model *m) {
    if (m->comm) distc_sync(m->comm, m->stream);
    else CUDA_CHECK(cudaStreamSynchronize(m->stream));
}

/* ZeRO-1 per-layer gather: the main stream waits for segment seg of the weights (0: embeddings
 * and final LayerNorm, l+1: layer l) / for all of them. */
static void wait_params(Model *m, int seg) {
    if (m->gather_pending) CUDA_CHECK(cudaStreamWaitEvent(m->stream, m->gather_ready[seg], 0));
}
static void join_gather(Model *m) {
    if (!m->gather_pending) return;
    for (int l = 0; l <= m->L; l++) wait_params(m, l);
    m->gather_pending = 0;
}

static void sync_params_x(Model *m) {
    if (m->prec == PRECISION_BF16)
        cuda_convert_from_f32(m->prec, m->params_x, m->params, m->num_params, m->stream);
}

/* --no-linear-bias: those tensors are held at zero (their gradients are still computed, as on
 * the CPU, so the gradient norm and clipping agree) and AdamW skips them. */
static int frozen_zero(const Model *m, int t) { return m->opt.no_linear_bias && gpt2_param_is_linear_bias(t); }

static void cuda_set_params(Model *m, const float *p) {
    join_gather(m);
    CUDA_CHECK(cudaMemcpyAsync(m->params, p, m->num_params * 4, cudaMemcpyHostToDevice, m->stream));
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++)
        if (frozen_zero(m, t)) CUDA_CHECK(cudaMemsetAsync(m->params + m->off[t], 0, m->size[t] * 4, m->stream));
    sync_params_x(m);
    m->master_partial = 0;
    stream_sync(m);
}
static void copy_out(Model *m, float *dst, const float *src, size_t n) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyDeviceToHost, m->stream));
    stream_sync(m);
}
/* ZeRO-1 in bf16 keeps only the shard of the fp32 master weights current: gather the rest. */
static void gather_master(Model *m) {
    if (!m->master_partial) return;
    distc_all_gather(m->comm, m->params, m->shard, DIST_F32, m->stream);
    m->master_partial = 0;
}
static void cuda_get_params(Model *m, float *p) {
    join_gather(m);
    gather_master(m);
    copy_out(m, p, m->params, m->num_params);
}
static void cuda_get_grads(Model *m, float *g) { copy_out(m, g, m->grads, m->num_params); }
/* Elements of this rank's shard inside the num_params real ones (the last shard is short). */
static size_t shard_used(const Model *m) {
    size_t lo = (size_t)m->rank * m->shard;
    return lo >= m->num_params ? 0 : (m->num_params - lo < m->shard ? m->num_params - lo : m->shard);
}
/* Host arrays are always the full num_params; with ZeRO-1 each rank takes its own slice. */
static void cuda_set_adam_state(Model *m, const float *mom, const float *var) {
    size_t lo = m->zero ? (size_t)m->rank * m->shard : 0, n = m->zero ? shard_used(m) : m->num_params;
    if (m->zero) {
        CUDA_CHECK(cudaMemsetAsync(m->adam_m, 0, m->shard * 4, m->stream));
        CUDA_CHECK(cudaMemsetAsync(m->adam_v, 0, m->shard * 4, m->stream));
    }
    CUDA_CHECK(cudaMemcpyAsync(m->adam_m, mom + lo, n * 4, cudaMemcpyHostToDevice, m->stream));
    CUDA_CHECK(cudaMemcpyAsync(m->adam_v, var + lo, n * 4, cudaMemcpyHostToDevice, m->stream));
    stream_sync(m);
}
/* ZeRO-1: every rank's shard is gathered through the gradient buffer (free between steps). */
static void gather_moment(Model *m, float *dst, const float *shard) {
    CUDA_CHECK(cudaMemcpyAsync(m->grads + (size_t)m->rank * m->shard, shard, m->shard * 4,
                               cudaMemcpyDeviceToDevice, m->stream));
    distc_all_gather(m->comm, m->grads, m->shard, DIST_F32, m->stream);
    copy_out(m, dst, m->grads, m->num_params);
}
static void cuda_get_adam_state(Model *m, float *mom, float *var) {
    join_gather(m); /* NCCL calls on the main stream come after those on the second */
    if (m->zero) {
        gather_moment(m, mom, m->adam_m);
        gather_moment(m, var, m->adam_v);
        CUDA_CHECK(cudaMemsetAsync(m->grads, 0, m->n_pad * 4, m->stream));
        return;
    }
    copy_out(m, mom, m->adam_m, m->num_params);
    copy_out(m, var, m->adam_v, m->num_params);
}

/* ---- forward ----------------------------------------------------------------------------- */

static void check_mm(int rc, const char *what) {
    if (rc != 0) {
        fprintf(stderr, "cuda backend: matmul failed in %s\n", what);
        exit(1);
    }
}

/* Logits of rows [r0, r0+rows) into the logits buffer, then the fused classifier. */
static void classifier_chunk(Model *m, int r0, int rows, int write_dlogits) {
    const int C = m->C;
    check_mm(cuda_matmul_forward(m->prec, m->s.logits, NULL, (char *)m->a.lnf + (size_t)r0 * C * m->esize,
                                 wx(m, P_WTE, 0), NULL, rows, C, m->Vp, m->ld_logits, m->stream),
             "lm head");
    prof_mark(m, m->prof.on && m->prof.n ? PF_LMHEAD_FWD : PF_START);
    cuda_classifier(m->prec, m->s.logits, m->a.losses + r0, m->s.targets + r0, m->s.dloss, rows,
                    m->V, m->ld_logits, write_dlogits, m->stream);
    prof_mark(m, PF_CLASSIFIER);
}

static void forward_body(Model *m, int B, int T, int has_targets) {
    const int C = m->C, L = m->L, N = B * T;
    const Precision p = m->prec;
    cudaStream_t st = m->stream;
    Acts *a = &m->a;
    AttnShape shape = attn_shape_for(m, B, T);

    prof_mark(m, PF_START);
    wait_params(m, 0);
    if (L > 0) wait_params(m, 1);
    cuda_encoder_forward(p, a->encoded, m->s.inputs, wx(m, P_WTE, 0), wx(m, P_WPE, 0), B, T, C, st);
    prof_mark(m, PF_ENCODER);
    cuda_layernorm_forward(p, act(m, a->ln1, 0, C, 1), stat(m, a->ln1_mean, 0), stat(m, a->ln1_rstd, 0),
                           a->encoded, wx(m, P_LN1W, 0), wx(m, P_LN1B, 0), N, C, st);
    prof_mark(m, PF_LN_FWD);
    for (int l = 0; l < L; l++) {
        void *residual = l == 0 ? a->encoded : act(m, a->res3, l - 1, C, 0);
        void *ln1 = act(m, a->ln1, l, C, 1), *qkv = act(m, a->qkv, l, 3 * C, 0);
        void *atty = act(m, a->atty, l, C, 0), *res2 = act(m, a->res2, l, C, 0);
        void *ln2 = act(m, a->ln2, l, C, 1), *fch = act(m, a->fch, l, 4 * C, 0);
        void *fch_gelu = act(m, a->fch_gelu, l, 4 * C, 1), *res3 = act(m, a->res3, l, C, 0);
        char *qkvc = (char *)qkv;
        size_t Ce = (size_t)C * m->esize;

        check_mm(cuda_matmul_forward(p, qkv, NULL, ln1, wx(m, P_QKVW, l), wx(m, P_QKVB, l), N, C, 3 * C, 0, st), "qkv");
        prof_mark(m, PF_QKV_FWD);
        if (m->attn->forward(&shape, qkvc, qkvc + Ce, qkvc + 2 * Ce, atty,
                             m->a.att_saved + (size_t)l * m->att_saved_per_layer, m->s.att_ws, st) != 0) {
            fprintf(stderr, "cuda backend: attention forward failed\n");
            exit(1);
        }
        prof_mark(m, PF_ATTN_FWD);
        check_mm(cuda_matmul_forward(p, m->s.proj, NULL, atty, wx(m, P_ATTPROJW, l), wx(m, P_ATTPROJB, l), N, C, C, 0, st), "attproj");
        prof_mark(m, PF_ATTPROJ_FWD);
        cuda_residual_layernorm_forward(p, res2, ln2, stat(m, a->ln2_mean, l), stat(m, a->ln2_rstd, l),
                                        residual, m->s.proj, wx(m, P_LN2W, l), wx(m, P_LN2B, l), N, C, st);
        prof_mark(m, PF_LN_FWD);
        check_mm(cuda_matmul_forward(p, fch_gelu, fch, ln2, wx(m, P_FCW, l), wx(m, P_FCB, l), N, C, 4 * C, 0, st), "fc");
        prof_mark(m, PF_FC_FWD);
        check_mm(cuda_matmul_forward(p, m->s.proj, NULL, fch_gelu, wx(m, P_FCPROJW, l), wx(m, P_FCPROJB, l), N, 4 * C, C, 0, st), "fcproj");
        prof_mark(m, PF_FCPROJ_FWD);
        /* res3 = res2 + proj, and the next LayerNorm (LN1 of layer l+1, or the final one) */
        if (l + 1 < L) wait_params(m, l + 2);
        if (l + 1 < L)
            cuda_residual_layernorm_forward(p, res3, act(m, a->ln1, l + 1, C, 1), stat(m, a->ln1_mean, l + 1),
                                            stat(m, a->ln1_rstd, l + 1), res2, m->s.proj,
                                            wx(m, P_LN1W, l + 1), wx(m, P_LN1B, l + 1), N, C, st);
        else
            cuda_residual_layernorm_forward(p, res3, a->lnf, a->lnf_mean, a->lnf_rstd, res2, m->s.proj,
                                            wx(m, P_LNFW, 0), wx(m, P_LNFB, 0), N, C, st);
        prof_mark(m, PF_LN_FWD);
    }
    m->gather_pending = 0; /* every segment was waited for */
    if (L == 0)
        cuda_layernorm_forward(p, a->lnf, a->lnf_mean, a->lnf_rstd, a->encoded, wx(m, P_LNFW, 0),
                               wx(m, P_LNFB, 0), N, C, st);
    if (!has_targets) return;
    /* One chunk: dlogits stay for backward. Several: only the losses now; backward recomputes. */
    int single = m->chunk_rows >= N;
    for (int r0 = 0; r0 < N; r0 += m->chunk_rows) {
        int rows = N - r0 < m->chunk_rows ? N - r0 : m->chunk_rows;
        classifier_chunk(m, r0, rows, single);
    }
    cuda_sum_losses(m->s.loss, a->losses, N, m->s.dloss, st);
    prof_mark(m, PF_CLASSIFIER);
}

/* ---- gradient sync over the ranks ------------------------------------------------------- */

static const int LAYER_TENSORS[] = {P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
                                    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB};
static const int OTHER_TENSORS[] = {P_WTE, P_WPE, P_LNFW, P_LNFB};

/* Gradients are sent in buckets during backward (plain DP overlap, or ZeRO-1's per-bucket reduce). */
static int bucket_sync_on(const Model *m) {
    return m->comm && m->sync_grads && (m->zero ? m->zero_overlap : m->overlap);
}

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

/* Sums the gradient ranges [off[i], off[i] + n[i]) over the ranks on stream st, in one NCCL
 * group. bf16 communication: each range is rounded into gcomm (same offsets), summed there in
 * bf16 and widened back into the fp32 gradients. */
static void all_reduce_ranges(Model *m, const size_t *off, const size_t *n, int k, cudaStream_t st) {
    if (m->comm_bf16)
        for (int i = 0; i < k; i++) cuda_convert_from_f32(PRECISION_BF16, m->gcomm + off[i], m->grads + off[i], n[i], st);
    distc_group_start(m->comm);
    for (int i = 0; i < k; i++) {
        if (m->comm_bf16) distc_all_reduce_sum(m->comm, m->gcomm + off[i], n[i], DIST_BF16, st);
        else distc_all_reduce_sum(m->comm, m->grads + off[i], n[i], DIST_F32, st);
    }
    distc_group_end(m->comm);
    if (m->comm_bf16)
        for (int i = 0; i < k; i++) bf16_to_f32(m->grads + off[i], m->gcomm + off[i], n[i], st);
}

/* The part [a, b) of the range [off, off + n) that lies in rank r's shard (a >= b: none). */
static void shard_piece(const Model *m, int r, size_t off, size_t n, size_t *a, size_t *b) {
    size_t lo = (size_t)r * m->shard, hi = lo + m->shard;
    *a = off > lo ? off : lo;
    *b = off + n < hi ? off + n : hi;
}

/* ZeRO-1: the ranks' sum of each range [off[i], off[i] + n[i]) reaches only the rank whose shard
 * holds it: one in-place ncclReduce per piece of a range inside one shard, all in one NCCL group
 * (over a whole backward, the bytes of one reduce-scatter). bf16 communication: rounded into
 * gcomm, reduced there, and this rank's pieces widened back into the fp32 gradients. */
static void reduce_ranges_to_owners(Model *m, const size_t *off, const size_t *n, int k, cudaStream_t st) {
    size_t a, b;
    if (m->comm_bf16)
        for (int i = 0; i < k; i++) cuda_convert_from_f32(PRECISION_BF16, m->gcomm + off[i], m->grads + off[i], n[i], st);
    distc_group_start(m->comm);
    for (int i = 0; i < k; i++)
        for (int r = 0; r < m->world; r++) {
            shard_piece(m, r, off[i], n[i], &a, &b);
            if (a >= b) continue;
            if (m->comm_bf16) distc_reduce_sum(m->comm, m->gcomm + a, b - a, DIST_BF16, r, st);
            else distc_reduce_sum(m->comm, m->grads + a, b - a, DIST_F32, r, st);
        }
    distc_group_end(m->comm);
    if (m->comm_bf16)
        for (int i = 0; i < k; i++) {
            shard_piece(m, m->rank, off[i], n[i], &a, &b);
            if (a < b) bf16_to_f32(m->grads + a, m->gcomm + a, b - a, st);
        }
}

static void sync_ranges(Model *m, const size_t *off, const size_t *n, int k, cudaStream_t st) {
    if (m->zero) reduce_ranges_to_owners(m, off, n, k, st);
    else all_reduce_ranges(m, off, n, k, st);
}

/* Layer l's backward is done. When it closes a bucket (bucket_layers consecutive layers, from
 * the top; layer 0 closes the last), the bucket's gradients are summed over the ranks on the
 * second stream: per tensor, the bucket's layer slices are one contiguous range. */
static void sync_layer_grads(Model *m, int l) {
    if (!bucket_sync_on(m)) return;
    int hi = m->pending_hi;
    if (hi - l + 1 < m->bucket_layers && l > 0) return;
    m->pending_hi = l - 1;
    CUDA_CHECK(cudaEventRecord(m->bucket_ready[l], m->stream));
    CUDA_CHECK(cudaStreamWaitEvent(m->comm_stream, m->bucket_ready[l], 0));
    const int k = (int)(sizeof LAYER_TENSORS / sizeof LAYER_TENSORS[0]);
    size_t off[16], n[16];
    for (int i = 0; i < k; i++) {
        int t = LAYER_TENSORS[i];
        size_t per = m->size[t] / m->L;
        off[i] = m->off[t] + (size_t)l * per;
        n[i] = (size_t)(hi - l + 1) * per;
    }
    sync_ranges(m, off, n, k, m->comm_stream);
}

/* End of backward: the embeddings and the final LayerNorm, then the main stream waits for all
 * buckets. ZeRO-1 without bucket overlap: one reduce-scatter of the flat gradient instead. */
static void sync_remaining_grads(Model *m) {
    if (!m->comm || !m->sync_grads) return;
    if (m->zero && !m->zero_overlap) {
        if (m->comm_bf16) { /* round, reduce-scatter in bf16, widen this rank's shard */
            size_t lo = (size_t)m->rank * m->shard;
            cuda_convert_from_f32(PRECISION_BF16, m->gcomm, m->grads, m->n_pad, m->stream);
            distc_reduce_scatter_sum(m->comm, m->gcomm, m->shard, DIST_BF16, m->stream);
            bf16_to_f32(m->grads + lo, m->gcomm + lo, m->shard, m->stream);
        } else {
            distc_reduce_scatter_sum(m->comm, m->grads, m->shard, DIST_F32, m->stream);
        }
        return;
    }
    if (!m->zero && !m->overlap) {
        size_t off = 0, n = m->num_params;
        all_reduce_ranges(m, &off, &n, 1, m->stream);
        return;
    }
    CUDA_CHECK(cudaEventRecord(m->bucket_ready[m->L], m->stream));
    CUDA_CHECK(cudaStreamWaitEvent(m->comm_stream, m->bucket_ready[m->L], 0));
    const int k = (int)(sizeof OTHER_TENSORS / sizeof OTHER_TENSORS[0]);
    size_t off[8], n[8];
    for (int i = 0; i < k; i++) {
        off[i] = m->off[OTHER_TENSORS[i]];
        n[i] = m->size[OTHER_TENSORS[i]];
    }
    sync_ranges(m, off, n, k, m->comm_stream);
    CUDA_CHECK(cudaEventRecord(m->comm_done, m->comm_stream));
    CUDA_CHECK(cudaStreamWaitEvent(m->stream, m->comm_done, 0));
}

/* ---- backward ---------------------------------------------------------------------------- */

static void backward_body(Model *m, int B, int T, float loss_scale) {
    const int C = m->C, L = m->L, N = B * T;
    const Precision p = m->prec;
    cudaStream_t st = m->stream;
    Acts *a = &m->a;
    Scratch *s = &m->s;
    AttnShape shape = attn_shape_for(m, B, T);
    const size_t Ce = (size_t)C * m->esize;

    prof_mark(m, PF_START);
    /* lm head: dlnf = dlogits wte, dwte += dlogits^T lnf, both scaled by loss_scale */
    int single = m->chunk_rows >= N;
    for (int r0 = 0; r0 < N; r0 += m->chunk_rows) {
        int rows = N - r0 < m->chunk_rows ? N - r0 : m->chunk_rows;
        if (!single) classifier_chunk(m, r0, rows, 1);
        check_mm(cuda_matmul_backward(p, (char *)s->dln + (size_t)r0 * Ce, gr(m, P_WTE, 0), NULL, s->logits,
                                      (char *)a->lnf + (size_t)r0 * Ce, wx(m, P_WTE, 0), NULL, rows, C,
                                      m->Vp, m->ld_logits, loss_scale, s->reduce, st),
                 "lm head backward");
        prof_mark(m, PF_LMHEAD_BWD);
    }
    CUDA_CHECK(cudaMemsetAsync(s->dres, 0, (size_t)N * Ce, st));
    void *last = L > 0 ? act(m, a->res3, L - 1, C, 0) : a->encoded;
    cuda_layernorm_backward(p, s->dres, gr(m, P_LNFW, 0), gr(m, P_LNFB, 0), s->dln, last, wx(m, P_LNFW, 0),
                            a->lnf_mean, a->lnf_rstd, N, C, s->reduce, st);
    prof_mark(m, PF_LN_BWD);

    m->pending_hi = L - 1;
    for (int l = L - 1; l >= 0; l--) {
        void *residual = l == 0 ? a->encoded : act(m, a->res3, l - 1, C, 0);
        void *ln1 = act(m, a->ln1, l, C, 1), *qkv = act(m, a->qkv, l, 3 * C, 0);
        void *atty = act(m, a->atty, l, C, 0), *res2 = act(m, a->res2, l, C, 0);
        void *ln2 = act(m, a->ln2, l, C, 1), *fch = act(m, a->fch, l, 4 * C, 0);
        void *fch_gelu = act(m, a->fch_gelu, l, 4 * C, 1);
        float *ln1_mean = stat(m, a->ln1_mean, l), *ln1_rstd = stat(m, a->ln1_rstd, l);
        float *ln2_mean = stat(m, a->ln2_mean, l), *ln2_rstd = stat(m, a->ln2_rstd, l);
        char *qkvc = (char *)qkv, *dqkvc = (char *)s->dqkv;

        /* MLP: dres is d(res3) = d(res2) through the add, and the fcproj input gradient */
        if (m->opt.recompute) {
            cuda_gelu_forward(p, fch_gelu, fch, (size_t)N * 4 * C, st);
            prof_mark(m, PF_RECOMPUTE);
        }
        check_mm(cuda_matmul_backward(p, s->dbig, gr(m, P_FCPROJW, l), gr(m, P_FCPROJB, l), s->dres, fch_gelu,
                                      wx(m, P_FCPROJW, l), fch, N, 4 * C, C, 0, 1.0f, s->reduce, st),
                 "fcproj backward");
        prof_mark(m, PF_FCPROJ_BWD);
        if (m->opt.recompute) {
            cuda_layernorm_forward(p, ln2, ln2_mean, ln2_rstd, res2, wx(m, P_LN2W, l), wx(m, P_LN2B, l), N, C, st);
            prof_mark(m, PF_RECOMPUTE);
        }
        check_mm(cuda_matmul_backward(p, s->dln, gr(m, P_FCW, l), gr(m, P_FCB, l), s->dbig, ln2, wx(m, P_FCW, l),
                                      NULL, N, C, 4 * C, 0, 1.0f, s->reduce, st),
                 "fc backward");
        prof_mark(m, PF_FC_BWD);
        cuda_layernorm_backward(p, s->dres, gr(m, P_LN2W, l), gr(m, P_LN2B, l), s->dln, res2, wx(m, P_LN2W, l),
                                ln2_mean, ln2_rstd, N, C, s->reduce, st);
        prof_mark(m, PF_LN_BWD);
        /* attention: dres is now d(res2) */
        check_mm(cuda_matmul_backward(p, s->dln, gr(m, P_ATTPROJW, l), gr(m, P_ATTPROJB, l), s->dres, atty,
                                      wx(m, P_ATTPROJW, l), NULL, N, C, C, 0, 1.0f, s->reduce, st),
                 "attproj backward");
        prof_mark(m, PF_ATTPROJ_BWD);
        if (m->attn->backward(&shape, qkvc, qkvc + Ce, qkvc + 2 * Ce, atty, s->dln,
                              a->att_saved + (size_t)l * m->att_saved_per_layer, dqkvc, dqkvc + Ce,
                              dqkvc + 2 * Ce, s->att_ws, st) != 0) {
            fprintf(stderr, "cuda backend: attention backward failed\n");
            exit(1);
        }
        prof_mark(m, PF_ATTN_BWD);
        if (m->opt.recompute) {
            cuda_layernorm_forward(p, ln1, ln1_mean, ln1_rstd, residual, wx(m, P_LN1W, l), wx(m, P_LN1B, l), N, C, st);
            prof_mark(m, PF_RECOMPUTE);
        }
        check_mm(cuda_matmul_backward(p, s->dln, gr(m, P_QKVW, l), gr(m, P_QKVB, l), s->dqkv, ln1, wx(m, P_QKVW, l),
                                      NULL, N, C, 3 * C, 0, 1.0f, s->reduce, st),
                 "qkv backward");
        prof_mark(m, PF_QKV_BWD);
        cuda_layernorm_backward(p, s->dres, gr(m, P_LN1W, l), gr(m, P_LN1B, l), s->dln, residual, wx(m, P_LN1W, l),
                                ln1_mean, ln1_rstd, N, C, s->reduce, st);
        prof_mark(m, PF_LN_BWD);
        sync_layer_grads(m, l);
    }
    cuda_encoder_backward(p, gr(m, P_WTE, 0), gr(m, P_WPE, 0), s->dres, s->uniq, s->start, s->pos,
                          s->num_uniq, B, T, C, st);
    prof_mark(m, PF_ENCODER_BWD);
    sync_remaining_grads(m);
}

/* ---- graphs: capture a body once per shape, replay it after ----------------------------- */

typedef void (*BodyFn)(Model *m, int B, int T, int flag);

static void run_body(Model *m, GraphSlot *g, int B, int T, int flag, BodyFn body) {
    if (!g_use_graphs || m->comm) { /* graphs: one process only (the sync varies per micro-batch) */
        body(m, B, T, flag);
        return;
    }
    if (g->exec && (g->B != B || g->T != T || g->flag != flag)) drop_graph(g);
    if (!g->exec) {
        if (g->B != B || g->T != T || g->flag != flag) { g->B = B; g->T = T; g->flag = flag; g->seen = 0; }
        if (g->seen++ == 0) { /* first time: eager, so lazy initialisation happens outside capture */
            body(m, B, T, flag);
            return;
        }
        cudaGraph_t graph;
        CUDA_CHECK(cudaStreamBeginCapture(m->stream, cudaStreamCaptureModeThreadLocal));
        body(m, B, T, flag);
        CUDA_CHECK(cudaStreamEndCapture(m->stream, &graph));
        CUDA_CHECK(cudaGraphInstantiate(&g->exec, graph, 0));
        CUDA_CHECK(cudaGraphDestroy(graph));
    }
    CUDA_CHECK(cudaGraphLaunch(g->exec, m->stream));
}

static void forward_fn(Model *m, int B, int T, int flag) { forward_body(m, B, T, flag); }
static void backward_fn(Model *m, int B, int T, int flag) {
    float scale;
    memcpy(&scale, &flag, sizeof scale);
    backward_body(m, B, T, scale);
}

static float cuda_forward(Model *m, const int *inputs, const int *targets, int B, int T) {
    if (B > m->maxB || T > m->maxT || B < 1 || T < 1) {
        fprintf(stderr, "cuda backend: forward with B=%d T=%d beyond the created %d x %d\n", B, T, m->maxB, m->maxT);
        exit(1);
    }
    const int N = B * T;
    /* the previous upload must have left the pinned staging before it is rewritten */
    CUDA_CHECK(cudaEventSynchronize(m->staged));
    memcpy(m->h_inputs, inputs, (size_t)N * 4);
    int counted = 0;
    if (targets) {
        memcpy(m->h_targets, targets, (size_t)N * 4);
        for (int i = 0; i < N; i++) counted += targets[i] >= 0;
    }
    *m->h_dloss = counted ? 1.0f / counted : 0.0f;
    *m->h_num_uniq = cuda_encoder_group_tokens(inputs, N, m->V, m->h_uniq, m->h_start, m->h_pos, m->h_counts);
    cudaStream_t st = m->stream;
    Scratch *s = &m->s;
    CUDA_CHECK(cudaMemcpyAsync(s->inputs, m->h_inputs, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    if (targets) CUDA_CHECK(cudaMemcpyAsync(s->targets, m->h_targets, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->uniq, m->h_uniq, (size_t)*m->h_num_uniq * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->start, m->h_start, (size_t)(*m->h_num_uniq + 1) * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->pos, m->h_pos, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->num_uniq, m->h_num_uniq, 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->dloss, m->h_dloss, 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaEventRecord(m->staged, st));

    m->B = B; m->T = T; m->has_targets = targets != NULL;
    run_body(m, &m->fwd_graph, B, T, targets != NULL, forward_fn);
    m->dlogits_ready = targets != NULL;
    if (!targets) return 0.0f;
    CUDA_CHECK(cudaMemcpyAsync(m->h_out, s->loss, 4, cudaMemcpyDeviceToHost, st));
    stream_sync(m);
    prof_collect(m);
    return *m->h_out;
}

static void cuda_backward(Model *m, float loss_scale) {
    if (!m->dlogits_ready) {
        fprintf(stderr, "cuda backend: backward needs a forward with targets first\n");
        exit(1);
    }
    int flag;
    memcpy(&flag, &loss_scale, sizeof flag);
    run_body(m, &m->bwd_graph, m->B, m->T, flag, backward_fn);
}

static void cuda_logits_at(Model *m, int b, int t, float *out) {
    join_gather(m);
    size_t row = (size_t)b * m->T + t;
    cuda_logits_row(m->prec, m->s.logits_row, (char *)m->a.lnf + row * m->C * m->esize, wx(m, P_WTE, 0),
                    m->V, m->C, m->stream);
    copy_out(m, out, m->s.logits_row, (size_t)m->V);
}

static void cuda_zero_grad(Model *m) {
    CUDA_CHECK(cudaMemsetAsync(m->grads, 0, m->n_pad * 4, m->stream));
}

static float cuda_grad_norm(Model *m) {
    join_gather(m);
    prof_mark(m, PF_START);
    if (m->zero) { /* the reduced gradient exists as shards: their sums of squares, summed */
        cuda_sum_of_squares(m->s.sumsq, m->grads + (size_t)m->rank * m->shard, m->shard, m->s.norm_partials,
                            m->stream);
        distc_all_reduce_sum(m->comm, m->s.sumsq, 1, DIST_F32, m->stream);
    } else {
        cuda_sum_of_squares(m->s.sumsq, m->grads, m->num_params, m->s.norm_partials, m->stream);
    }
    prof_mark(m, PF_NORM);
    CUDA_CHECK(cudaMemcpyAsync(m->h_out, m->s.sumsq, 4, cudaMemcpyDeviceToHost, m->stream));
    stream_sync(m);
    prof_collect(m);
    return sqrtf(*m->h_out);
}

/* ZeRO-1: everyone's updated shard to everyone, on the second stream, in segments (0: the
 * embeddings and final LayerNorm; l+1: layer l's 12 slices), each piece broadcast by the rank
 * whose shard holds it; the next forward waits for each segment just before it reads it. */
static void gather_params_by_layer(Model *m) {
    const int bf = m->prec == PRECISION_BF16;
    CUDA_CHECK(cudaEventRecord(m->comm_done, m->stream)); /* AdamW done */
    CUDA_CHECK(cudaStreamWaitEvent(m->comm_stream, m->comm_done, 0));
    for (int seg = 0; seg <= m->L; seg++) {
        size_t off[16], n[16];
        int k = 0;
        if (seg == 0) {
            for (int i = 0; i < (int)(sizeof OTHER_TENSORS / sizeof OTHER_TENSORS[0]); i++, k++) {
                off[k] = m->off[OTHER_TENSORS[i]];
                n[k] = m->size[OTHER_TENSORS[i]];
            }
        } else {
            for (int i = 0; i < (int)(sizeof LAYER_TENSORS / sizeof LAYER_TENSORS[0]); i++, k++) {
                size_t per = m->size[LAYER_TENSORS[i]] / m->L;
                off[k] = m->off[LAYER_TENSORS[i]] + (size_t)(seg - 1) * per;
                n[k] = per;
            }
        }
        distc_group_start(m->comm);
        for (int i = 0; i < k; i++)
            for (int r = 0; r < m->world; r++) {
                size_t a, b;
                shard_piece(m, r, off[i], n[i], &a, &b);
                if (a >= b) continue;
                if (bf) distc_broadcast(m->comm, (bf16 *)m->params_x + a, b - a, DIST_BF16, r, m->comm_stream);
                else distc_broadcast(m->comm, m->params + a, b - a, DIST_F32, r, m->comm_stream);
            }
        distc_group_end(m->comm);
        CUDA_CHECK(cudaEventRecord(m->gather_ready[seg], m->comm_stream));
    }
    m->gather_pending = 1;
    if (bf) m->master_partial = 1;
}

static void cuda_update(Model *m, const AdamWStep *s) {
    if (m->prof.steps == PROF_WARMUP_STEPS) memset(m->prof.ms, 0, sizeof m->prof.ms); /* drop warm-up */
    prof_mark(m, PF_START);
    m->prof.steps++;
    /* ZeRO-1: this rank updates [lo, hi) of the flat parameters; m and v hold that range only */
    size_t lo = m->zero ? (size_t)m->rank * m->shard : 0, hi = m->zero ? lo + m->shard : m->num_params;
    join_gather(m);
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        if (frozen_zero(m, t)) continue;
        size_t a = m->off[t] > lo ? m->off[t] : lo, b = m->off[t] + m->size[t] < hi ? m->off[t] + m->size[t] : hi;
        if (a >= b) continue;
        void *px = m->prec == PRECISION_BF16 ? (char *)m->params_x + a * 2 : NULL;
        float wd = gpt2_param_decays(t) ? s->weight_decay : 0.0f;
        cuda_adamw(m->prec, m->params + a, px, m->grads + a, m->adam_m + (a - lo), m->adam_v + (a - lo), b - a,
                   s->lr, s->beta1, s->beta2, s->eps, wd, s->grad_scale, s->t, m->stream);
    }
    if (m->zero && m->gather_overlap) {
        gather_params_by_layer(m);
    } else if (m->zero) { /* everyone's updated shard to everyone: the weights the matmuls read */
        if (m->prec == PRECISION_BF16) {
            distc_all_gather(m->comm, m->params_x, m->shard, DIST_BF16, m->stream);
            m->master_partial = 1;
        } else {
            distc_all_gather(m->comm, m->params, m->shard, DIST_F32, m->stream);
        }
    }
    prof_mark(m, PF_ADAMW);
}

static void cuda_set_grad_sync(Model *m, int on) { m->sync_grads = on != 0; }

static double cuda_mean_over_ranks(Model *m, double x) {
    if (!m->comm) return x;
    join_gather(m);
    *m->h_scalar = x;
    CUDA_CHECK(cudaMemcpyAsync(m->d_scalar, m->h_scalar, sizeof(double), cudaMemcpyHostToDevice, m->stream));
    distc_all_reduce_sum(m->comm, m->d_scalar, 1, DIST_F64, m->stream);
    CUDA_CHECK(cudaMemcpyAsync(m->h_scalar, m->d_scalar, sizeof(double), cudaMemcpyDeviceToHost, m->stream));
    stream_sync(m);
    return *m->h_scalar / m->world;
}

static size_t cuda_memory_in_use(Model *m) { return m->held_bytes; }

static const Backend cuda_backend = {
    "cuda",           cuda_create,      cuda_destroy,        cuda_set_params,
    cuda_get_params,  cuda_get_grads,   cuda_set_adam_state, cuda_get_adam_state,
    cuda_forward,     cuda_logits_at,   cuda_zero_grad,      cuda_backward,
    cuda_grad_norm,   cuda_update,      cuda_memory_in_use,  cuda_set_grad_sync,
    cuda_mean_over_ranks,
};

extern "C" const Backend *cuda_backend_if_available(char *why, size_t whylen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        set_err(why, whylen, "no CUDA device: %s", cudaGetErrorString(e));
        return NULL;
    }
    if (n == 0) {
        set_err(why, whylen, "no CUDA device is visible");
        return NULL;
    }
    return &cuda_backend;
}

/* ---- extras ---------------------------------------------------------------------------- */

static int extras_device_name(char *buf, size_t len) {
    int dev = 0;
    cudaDeviceProp prop;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
        cudaGetLastError();
        set_err(buf, len, "none");
        return -1;
    }
    set_err(buf, len, "%s", prop.name);
    return 0;
}

/* Dense peak TFLOP/s (no sparsity) from the vendors' datasheets. */
typedef struct { const char *name_part; double bf16, tf32, fp32; } PeakRow;
static const PeakRow PEAKS[] = {
    {"H200", 989.4, 494.7, 66.9},     {"H100 PCIe", 756.0, 378.0, 51.2},
    {"H100 NVL", 835.0, 417.5, 60.0}, {"H100", 989.4, 494.7, 66.9},
    {"H800", 989.4, 494.7, 66.9},     {"GH200", 989.4, 494.7, 66.9},
    {"B200", 2250.0, 1100.0, 80.0},   {"A100", 312.0, 156.0, 19.5},
    {"A800", 312.0, 156.0, 19.5},     {"A10G", 70.0, 35.0, 31.2},
    {"A10", 125.0, 62.5, 31.2},       {"L40S", 362.0, 183.0, 91.6},
    {"L4", 121.0, 60.0, 30.3},        {"RTX 4090", 165.2, 82.6, 82.6},
    {"RTX 3090", 71.0, 35.6, 35.6},   {"V100", 0.0, 0.0, 15.7},
};

static double extras_peak_tflops(Precision p, double override_tflops) {
    if (override_tflops > 0) return override_tflops;
    char name[256];
    if (extras_device_name(name, sizeof name) != 0) return 0.0;
    for (size_t i = 0; i < sizeof PEAKS / sizeof PEAKS[0]; i++) {
        if (!strstr(name, PEAKS[i].name_part)) continue;
        if (p == PRECISION_BF16) return PEAKS[i].bf16;
        return cuda_matmul_get_tf32() ? PEAKS[i].tf32 : PEAKS[i].fp32;
    }
    return 0.0;
}

static Precision extras_default_precision(void) {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        cudaGetLastError();
        return PRECISION_FP32;
    }
    return major >= 8 ? PRECISION_BF16 : PRECISION_FP32;
}

static int extras_mem_info(size_t *free_bytes, size_t *total_bytes) {
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return 0;
}
static void extras_set_graphs(int enabled) { g_use_graphs = enabled != 0; }
static void extras_set_chunk(int rows) { g_logits_chunk_rows = rows; }
static int extras_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}
static int extras_select_device(int index, char *err, size_t errlen) {
    int n = extras_device_count();
    if (index < 0 || index >= n) {
        set_err(err, errlen, "local rank %d needs GPU %d, but %d GPU(s) are visible", index, index, n);
        return -1;
    }
    cudaError_t e = cudaSetDevice(index);
    if (e != cudaSuccess) {
        cudaGetLastError();
        set_err(err, errlen, "cudaSetDevice(%d): %s", index, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

static const CudaExtras extras = {
    extras_device_name, extras_peak_tflops, extras_default_precision, extras_mem_info,
    extras_set_graphs,  cuda_matmul_set_tf32, extras_set_chunk,      cuda_matmul_set_fusion,
    extras_device_count, extras_select_device, distc_unique_id,
};

extern "C" const CudaExtras *cuda_extras(void) { return &extras; }
