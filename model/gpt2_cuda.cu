/* model/gpt2_cuda.cu: the CUDA backend: GPT-2 forward, backward and AdamW on one GPU.
 *
 * Precision: master weights, gradients and AdamW state are fp32; with PRECISION_BF16 (or
 * PRECISION_FP16) the matmuls and every activation use a bf16 (fp16) copy of the weights
 * (rewritten by each AdamW step) and bf16 (fp16) activations, accumulating in fp32; the two run
 * the same kernels, instantiated per element type. PRECISION_FP32 keeps everything fp32.
 * --matmul fp8 (bf16 only): the four linear layers of each block run their GEMMs in FP8
 * (layers/fp8_cuda.cu: delayed per-tensor scales, rolled after each backward); the rest as bf16.
 * fp16 and the loss's gradient: the classifier writes dlogits = (p - y) G/n_valid with G the
 * largest power of two <= B T (so about p - y: (p - y)/n_valid alone would underflow fp16), and
 * the lm head's backward multiplies by loss_scale/G, so every activation gradient after it
 * carries the backward's loss_scale (the loss scale of train/loss_scale.h among it).
 *
 * A step (one stream, no host synchronisation except to return the loss and the norm):
 *   forward: encoder (token embedding + the learned position's, or none with ALiBi; positions
 *            restart at each packed document with doc_positions),
 *            L x [LN1 -> qkv (C + 2 Hkv D outputs: queries, then Hkv K heads, then Hkv V heads)
 *            -> attention (its mask: kind, window, ALiBi slopes, the batch's documents) -> proj -> residual+LN2 -> fc+GELU ->
 *            fcproj -> residual+next LN], logits = lnf wte^T, fused softmax/CE which already
 *            writes dlogits = (p - y)/n_valid over the logits (bf16; fp32 in row chunks).
 *   backward: lm head (alpha = loss_scale), LNf, L x [...], encoder; GELU' rides on fcproj's
 *            input-gradient epilogue; the bias gradients of qkv and fc are column-sum passes,
 *            those of attproj and fcproj (whose output gradient is the residual stream's) come
 *            out of the LayerNorm backward that writes that gradient. ModelOptions.recompute:
 *            with gelu (the default) each layer's GELU output is recomputed from its kept
 *            pre-activation just before fcproj's backward, with all also its two LayerNorm
 *            outputs (from the kept residual stream) before the fc and qkv backward GEMMs read
 *            them; ModelOptions.keep_layers: the last layers keep those instead.
 * Memory: the plan (model/memory_plan_cuda.h) overlays the buffers of disjoint phases of a step:
 * the logits live from the lm head's forward to its backward, the blocks' scratch (proj, dres,
 * dbig, dqkv, the attention workspace, recompute's shared buffers) only inside the blocks, so
 * both share one region; the code below keeps to those lifetimes.
 * The loss returned by forward is the mean over tokens with target >= 0 (as the CPU).
 * Per-batch data (tokens, targets, the encoder's groupings, the documents) is computed on the host
 * and uploaded into fixed device buffers before the body runs, so a captured graph replays it.
 * The model is the CPU backend's exactly: same parameter layout (model/gpt2.h), same documents
 * (model/documents.h), same ALiBi slopes (attn_alibi_slopes).
 *
 * The rest lives beside it, each part with its own state:
 *   model/memory_plan_cuda.*  the three arenas and every buffer's place in them
 *   model/grad_sync_cuda.*    data parallel and ZeRO-1 over NCCL: buckets, shards, gathers
 *   model/profile_cuda.*      --profile: CUDA event marks between the parts of a step
 *   model/cuda_extras.cu      the device's name, peak rate and memory (model/cuda_extras.h)
 * Every setting comes from ModelOptions at create(); nothing is read from the environment.
 */
#include "model/backend.h"
#include "model/grad_sync_cuda.h"
#include "model/memory_plan_cuda.h"
#include "model/profile_cuda.h"
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <vector>
#include "common/error_text.h"

/* --matmul fp8: the state of the four linear layers of each block (layers/fp8_cuda.cu). Their
 * scale slots (3 per layer: input, weight, output gradient) and E4M3 weight copies lie in
 * mem.fp8_params, the shared work buffers in mem.fp8_scratch. */
enum { LIN_QKV, LIN_ATTPROJ, LIN_FC, LIN_FCPROJ, LIN_COUNT };
typedef struct {
    int on;
    float *slots;                     /* L * LIN_COUNT groups of 3 slots */
    unsigned char *w8[LIN_COUNT];     /* layer 0's (OC, C) copy of each; wt8 the (C, OC) one */
    unsigned char *wt8[LIN_COUNT];
    size_t wbytes[LIN_COUNT];         /* OC C: one layer's stride in w8 and wt8 */
    Fp8Work work;
    long fwd_calls, bwd_calls;        /* the first of each calibrates the scales (eager) */
} Fp8State;

typedef struct {
    cudaGraphExec_t exec;
    int B, T, flag; /* flag: has_targets (forward) or loss_scale bits (backward) */
    int seen;       /* times run eagerly with this key; captured on the second */
} GraphSlot;

struct Model {
    Profile prof;
    ModelOptions opt;
    GPT2Config c;
    Precision prec;
    size_t esize;
    float dlogits_gain;      /* G above: 1 in fp32 and bf16 */
    const AttnImpl *attn;
    size_t num_params, off[GPT2_NUM_PARAM_TENSORS], size[GPT2_NUM_PARAM_TENSORS];
    int L, C, H, V, Vp, maxB, maxT;
    int Q, KV;               /* QKV projection outputs C + 2 KV; K (and V) width Hkv D */
    int graphs;              /* replay forward and backward as CUDA graphs (one process only) */
    int tf32, matmul_fusion; /* the matmuls' settings while this model runs them */
    cudaStream_t stream;
    /* recompute (gelu, all): backward recomputes layer l-1's shared buffers on `side` while the
     * main stream runs layer l (each shared buffer has two copies, by layer parity); rc_done[p]:
     * copy p is rewritten; rc_free[p]: the main stream has finished reading copy p */
    cudaStream_t side;
    cudaEvent_t rc_start, rc_done[2], rc_free[2];
    /* arenas, and where everything lies in them */
    char *param_arena, *act_arena, *scratch_arena;
    size_t held_bytes;
    MemPlanInput plan;
    MemoryLayout mem;
    /* host staging (pinned) of what forward uploads */
    int *h_inputs, *h_targets, *h_uniq, *h_start, *h_pos, *h_counts, *h_num_uniq;
    int *h_doc, *h_doc_pos, *h_pos_uniq, *h_pos_start, *h_pos_rows, *h_pos_num_uniq; /* documents */
    float *h_dloss, *h_dlogits_scale, *h_out, *h_loss;
    cudaEvent_t staged;     /* the last upload finished: staging may be rewritten */
    cudaEvent_t loss_ready; /* the last forward's loss is in h_loss */
    cudaEvent_t norm_ready; /* clip_and_update's sum of squares is in h_out */
    /* state of the last forward */
    int B, T, has_targets, dlogits_ready;
    GraphSlot fwd_graph, bwd_graph;
    /* data parallel (world > 1): communicator, buckets, shards */
    GradSync gs;
    Fp8State fp8;
};

/* The attention shape of a call: the memory plan's, with the model's TF32 choice (fp32 only). */
static AttnShape attn_shape_for(const Model *m, int B, int T) {
    AttnShape s = memplan_attn_shape(&m->plan, &m->mem, B, T);
    s.tf32 = m->tf32;
    return s;
}

static void cuda_destroy(Model *m);

/* --matmul fp8: a linear layer's input (io 0) or output (io 1) width */
static int fp8_width(const Model *m, int lin, int io) {
    static const int in_mult[LIN_COUNT] = {1, 1, 1, 4}, out_mult[LIN_COUNT] = {0, 1, 4, 1};
    if (io == 0) return in_mult[lin] * m->C;
    return lin == LIN_QKV ? m->Q : out_mult[lin] * m->C;
}
/* Its buffers in the two arenas: slots, then each linear's w8 and wt8 for all layers. */
static void fp8_carve(Model *m) {
    Fp8State *f = &m->fp8;
    size_t N = (size_t)m->maxB * m->maxT, wmax = (size_t)(m->Q > 4 * m->C ? m->Q : 4 * m->C);
    char *p = m->mem.fp8_params;
    f->on = 1;
    f->slots = (float *)p;
    p += (size_t)m->L * LIN_COUNT * 3 * FP8_SLOT_FLOATS * 4;
    for (int i = 0; i < LIN_COUNT; i++) {
        f->wbytes[i] = (size_t)fp8_width(m, i, 0) * fp8_width(m, i, 1);
        size_t all = ((size_t)m->L * f->wbytes[i] + 255) & ~(size_t)255;
        f->w8[i] = (unsigned char *)p;
        f->wt8[i] = (unsigned char *)p + all;
        p += 2 * all;
    }
    size_t one = N * wmax; /* a multiple of 16 bytes (wmax is): the three fit in 3 wmax per token */
    f->work.a = (unsigned char *)m->mem.fp8_scratch;
    f->work.g = f->work.a + one;
    f->work.gt = f->work.g + one;
}

static Model *cuda_create(const ModelOptions *opt, char *err, size_t errlen) {
    char why[256];
    if (gpt2_config_validate(&opt->config, why, sizeof why) != 0) {
        set_err(err, errlen, "%s", why);
        return NULL;
    }
    const GPT2Config *c = &opt->config;
    if (opt->attn_window < 0) {
        set_err(err, errlen, "attention window %d must be 0 (none) or positive", opt->attn_window);
        return NULL;
    }
    if (c->channels % 8 != 0 || (c->channels / c->num_heads) % 8 != 0) {
        set_err(err, errlen, "the CUDA backend needs channels and head size divisible by 8 (C=%d, H=%d)",
                c->channels, c->num_heads);
        return NULL;
    }
    /* ALiBi has no position table, so a model runs past the T it was made for */
    if ((opt->T > c->max_seq_len && c->pos != GPT2_POS_ALIBI) || opt->B < 1 || opt->T < 1) {
        set_err(err, errlen, "bad B=%d T=%d (max_seq_len %d)", opt->B, opt->T, c->max_seq_len);
        return NULL;
    }
    if (opt->recompute != RECOMPUTE_NONE && opt->recompute != RECOMPUTE_GELU && opt->recompute != RECOMPUTE_ALL) {
        set_err(err, errlen, "recompute mode %d is none (0), gelu (1) or all (2)", (int)opt->recompute);
        return NULL;
    }
    if (opt->keep_layers < 0) {
        set_err(err, errlen, "keep_layers %d is negative", opt->keep_layers);
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
    m->prec = opt->precision;
    m->esize = (size_t)precision_esize(m->prec);
    m->dlogits_gain = 1.0f;
    if (m->prec == PRECISION_FP16)
        while (m->dlogits_gain * 2.0f <= (float)opt->B * opt->T) m->dlogits_gain *= 2.0f;
    m->attn = attn;
    m->L = c->num_layers; m->C = c->channels; m->H = c->num_heads;
    m->V = c->vocab_size; m->Vp = c->padded_vocab_size;
    m->maxB = opt->B; m->maxT = opt->T;
    m->Q = gpt2_qkv_channels(c);
    m->KV = gpt2_kv_heads(c) * (c->channels / c->num_heads);
    m->graphs = opt->cuda_graphs != 0;
    m->tf32 = opt->tf32 != 0;
    m->matmul_fusion = opt->matmul_fusion != 0;
    m->num_params = gpt2_param_sizes(c, m->size);
    gpt2_param_offsets(c, m->off);
    gsync_plan(&m->gs, opt, m->num_params, m->off, m->size);
    MemPlanInput *in = &m->plan;
    memplan_input(opt, attn, &m->gs, in);
    if (opt->matmul_fp8) {
        int dev = 0, major = 0, minor = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
        const char *why = m->prec != PRECISION_BF16 ? "needs --precision bf16"
                          : major * 10 + minor < 89 ? "needs a GPU of compute capability 8.9 or newer"
                          : m->C % 16 != 0          ? "needs channels divisible by 16"
                                                    : NULL;
        if (why) {
            set_err(err, errlen, "--matmul fp8 %s (C=%d, compute capability %d.%d)", why, m->C, major, minor);
            free(m);
            return NULL;
        }
        size_t bytes = (size_t)m->L * LIN_COUNT * 3 * FP8_SLOT_FLOATS * 4;
        for (int i = 0; i < LIN_COUNT; i++) bytes += 2 * (((size_t)m->L * fp8_width(m, i, 0) * fp8_width(m, i, 1) + 255) & ~(size_t)255);
        in->fp8_param_bytes = bytes;
        in->fp8_bytes_per_token = 3 * (size_t)(m->Q > 4 * m->C ? m->Q : 4 * m->C);
    }

    /* nothing is allocated yet: the mask's arrays are presence markers here */
    AttnShape shape = memplan_attn_shape(in, NULL, m->maxB, m->maxT);
    shape.tf32 = m->tf32;
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
    size_t free_b = 0, total_b = 0;
    MemoryLayout lay;
    size_t need = memory_plan(in, m->maxB, NULL, NULL, NULL, &lay);
    cudaMemGetInfo(&free_b, &total_b);
    const size_t reserve = 256u << 20; /* cuBLAS, attention handles, graphs, fragmentation */
    if (need + reserve > free_b) {
        int best = 0;
        for (int b = m->maxB - 1; b >= 1; b--) {
            MemoryLayout smaller;
            if (memory_plan(in, b, NULL, NULL, NULL, &smaller) + reserve <= free_b) { best = b; break; }
        }
        set_err(err, errlen, "needs %.2f GiB, %.2f GiB free; the largest batch that fits is B=%d",
                (double)(need + reserve) / (1 << 30), (double)free_b / (1 << 30), best);
        free(m);
        return NULL;
    }
    size_t pb = lay.param_bytes, ab = lay.act_bytes, sb = lay.scratch_bytes;
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
    memory_plan(in, m->maxB, m->param_arena, m->act_arena, m->scratch_arena, &m->mem);
    if (opt->matmul_fp8) fp8_carve(m);

    size_t N = (size_t)m->maxB * m->maxT;
    CUDA_CHECK(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking));
    if (m->mem.share_gelu || m->mem.share_ln) {
        CUDA_CHECK(cudaStreamCreateWithFlags(&m->side, cudaStreamNonBlocking));
        CUDA_CHECK(cudaEventCreateWithFlags(&m->rc_start, cudaEventDisableTiming));
        for (int i = 0; i < 2; i++) {
            CUDA_CHECK(cudaEventCreateWithFlags(&m->rc_done[i], cudaEventDisableTiming));
            CUDA_CHECK(cudaEventCreateWithFlags(&m->rc_free[i], cudaEventDisableTiming));
        }
    }
    prof_init(&m->prof, opt->profile, m->graphs, m->stream);
    /* the 2-byte weight copy (bf16 or fp16) only moves between ranks as bits: typed bf16 there */
    gsync_bind(&m->gs, m->mem.params, m->prec != PRECISION_FP32 ? (bf16 *)m->mem.params_x : NULL, m->mem.grads,
               m->mem.gcomm, m->stream);

    CUDA_CHECK(cudaEventCreateWithFlags(&m->staged, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&m->loss_ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&m->norm_ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_inputs, N * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_targets, N * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_uniq, N * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_start, (N + 1) * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_pos, N * 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_num_uniq, 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_dloss, 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_dlogits_scale, 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_out, 4));
    CUDA_CHECK(cudaMallocHost((void **)&m->h_loss, 4));
    if (in->packed_docs) {
        CUDA_CHECK(cudaMallocHost((void **)&m->h_doc, N * 4));
        CUDA_CHECK(cudaMallocHost((void **)&m->h_doc_pos, N * 4));
    }
    if (in->doc_positions) {
        CUDA_CHECK(cudaMallocHost((void **)&m->h_pos_uniq, N * 4));
        CUDA_CHECK(cudaMallocHost((void **)&m->h_pos_start, (N + 1) * 4));
        CUDA_CHECK(cudaMallocHost((void **)&m->h_pos_rows, N * 4));
        CUDA_CHECK(cudaMallocHost((void **)&m->h_pos_num_uniq, 4));
    }
    /* counting-sort scratch: token ids below V, positions within a document below maxT */
    m->h_counts = (int *)malloc(sizeof(int) * ((size_t)(m->V > m->maxT ? m->V : m->maxT) + 1));

    CUDA_CHECK(cudaMemsetAsync(m->param_arena, 0, pb, m->stream));
    CUDA_CHECK(cudaMemsetAsync(m->act_arena, 0, ab, m->stream));
    CUDA_CHECK(cudaMemsetAsync(m->scratch_arena, 0, sb, m->stream));
    if (m->fp8.on) cuda_fp8_init_slots(m->fp8.slots, m->L * LIN_COUNT, m->stream);
    if (opt->mask == ATTN_MASK_DENSE && opt->dense_bias)
        CUDA_CHECK(cudaMemcpyAsync(m->mem.dense_bias, opt->dense_bias,
                                   (size_t)m->maxT * m->maxT * 4, cudaMemcpyHostToDevice, m->stream));
    std::vector<float> slopes(in->alibi ? (size_t)m->H : 0); /* the standard slopes, as the CPU backend's */
    if (in->alibi) {
        attn_alibi_slopes(m->H, slopes.data());
        CUDA_CHECK(cudaMemcpyAsync(m->mem.alibi_slopes, slopes.data(), (size_t)m->H * 4, cudaMemcpyHostToDevice,
                                   m->stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(m->stream)); /* the uploads are done before `slopes` goes */
    if (gsync_start(&m->gs, opt, err, errlen) != 0) {
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
    gsync_drain(&m->gs); /* a weight gather may still be in flight */
    if (m->stream) cudaStreamSynchronize(m->stream);
    prof_finish(&m->prof);
    drop_graph(&m->fwd_graph);
    drop_graph(&m->bwd_graph);
    cudaFree(m->param_arena);
    cudaFree(m->act_arena);
    cudaFree(m->scratch_arena);
    cudaFreeHost(m->h_inputs); cudaFreeHost(m->h_targets); cudaFreeHost(m->h_uniq);
    cudaFreeHost(m->h_start); cudaFreeHost(m->h_pos); cudaFreeHost(m->h_num_uniq);
    cudaFreeHost(m->h_dloss); cudaFreeHost(m->h_dlogits_scale); cudaFreeHost(m->h_out); cudaFreeHost(m->h_loss);
    cudaFreeHost(m->h_doc); cudaFreeHost(m->h_doc_pos); cudaFreeHost(m->h_pos_uniq);
    cudaFreeHost(m->h_pos_start); cudaFreeHost(m->h_pos_rows); cudaFreeHost(m->h_pos_num_uniq);
    free(m->h_counts);
    if (m->staged) cudaEventDestroy(m->staged);
    if (m->loss_ready) cudaEventDestroy(m->loss_ready);
    if (m->norm_ready) cudaEventDestroy(m->norm_ready);
    if (m->side) {
        cudaStreamSynchronize(m->side);
        cudaEventDestroy(m->rc_start);
        for (int i = 0; i < 2; i++) {
            cudaEventDestroy(m->rc_done[i]);
            cudaEventDestroy(m->rc_free[i]);
        }
        cudaStreamDestroy(m->side);
    }
    if (m->stream) cudaStreamDestroy(m->stream);
    gsync_destroy(&m->gs);
    free(m);
}

/* ---- parameter access ------------------------------------------------------------------ */

static void *wx(Model *m, int t, int l) { /* weights as the matmuls read them, layer l's slice */
    size_t per = m->size[t] / (t == P_WTE || t == P_WPE || t == P_LNFW || t == P_LNFB ? 1 : m->L);
    return (char *)m->mem.params_x + (m->off[t] + (size_t)l * per) * m->esize;
}
static float *gr(Model *m, int t, int l) {
    size_t per = m->size[t] / (t == P_WTE || t == P_WPE || t == P_LNFW || t == P_LNFB ? 1 : m->L);
    return m->mem.grads + m->off[t] + (size_t)l * per;
}
/* Layer l's slice of a per-layer activation with `width` elements per token, or, for a buffer
 * that recompute shares (shared: the plan's share_ln / share_gelu), its copy of l's parity. */
static void *act(const Model *m, void *base, int l, int width, int shared) {
    size_t N = (size_t)m->maxB * m->maxT;
    int idx = shared ? (l & 1) : l;
    return (char *)base + (size_t)idx * N * width * m->esize;
}
/* A buffer recompute may share (ln1, ln2, fch_gelu): per layer when it is not shared; when it is,
 * layer l's parity copy if l recomputes it (l < rc_layers), else its slot among the last layers,
 * which keep theirs (--keep-layers). */
static void *act_rc(const Model *m, void *base, void *kept, int l, int width, int shared) {
    if (shared && l >= m->mem.rc_layers) return act(m, kept, l - m->mem.rc_layers, width, 0);
    return act(m, base, l, width, shared);
}
static int recomputes(const Model *m, int l) { return l < m->mem.rc_layers; }
/* The position table as the encoder reads it; NULL with ALiBi (there is none). */
static void *wpe_x(Model *m) { return m->plan.alibi ? NULL : wx(m, P_WPE, 0); }
static float *stat(const Model *m, float *base, int l) { return base + (size_t)l * m->maxB * m->maxT; }

static void sync_params_x(Model *m) {
    if (m->prec != PRECISION_FP32)
        cuda_convert_from_f32(m->prec, m->mem.params_x, m->mem.params, m->num_params, m->stream);
}

/* --no-linear-bias: those tensors are held at zero (their gradients are still computed, as on
 * the CPU, so the gradient norm and clipping agree) and AdamW skips them. */
static int frozen_zero(const Model *m, int t) { return m->opt.no_linear_bias && gpt2_param_is_linear_bias(t); }

static void cuda_set_params(Model *m, const float *p) {
    gsync_join_gather(&m->gs);
    CUDA_CHECK(cudaMemcpyAsync(m->mem.params, p, m->num_params * 4, cudaMemcpyHostToDevice, m->stream));
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++)
        if (frozen_zero(m, t)) CUDA_CHECK(cudaMemsetAsync(m->mem.params + m->off[t], 0, m->size[t] * 4, m->stream));
    sync_params_x(m);
    gsync_params_set(&m->gs);
    gsync_stream_sync(&m->gs, m->stream);
}
static void copy_out(Model *m, float *dst, const float *src, size_t n) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyDeviceToHost, m->stream));
    gsync_stream_sync(&m->gs, m->stream);
}
static void cuda_get_params(Model *m, float *p) {
    gsync_join_gather(&m->gs);
    gsync_gather_master(&m->gs);
    copy_out(m, p, m->mem.params, m->num_params);
}
static void cuda_get_grads(Model *m, float *g) { copy_out(m, g, m->mem.grads, m->num_params); }
/* Host arrays are always the full num_params; with ZeRO-1 each rank takes its own slice. */
static void cuda_set_adam_state(Model *m, const float *mom, const float *var) {
    int zero = m->gs.zero;
    size_t lo, hi;
    gsync_shard(&m->gs, &lo, &hi);
    size_t n = zero ? gsync_shard_used(&m->gs) : m->num_params;
    if (zero) {
        CUDA_CHECK(cudaMemsetAsync(m->mem.adam_m, 0, m->gs.shard * 4, m->stream));
        CUDA_CHECK(cudaMemsetAsync(m->mem.adam_v, 0, m->gs.shard * 4, m->stream));
    }
    CUDA_CHECK(cudaMemcpyAsync(m->mem.adam_m, mom + lo, n * 4, cudaMemcpyHostToDevice, m->stream));
    CUDA_CHECK(cudaMemcpyAsync(m->mem.adam_v, var + lo, n * 4, cudaMemcpyHostToDevice, m->stream));
    gsync_stream_sync(&m->gs, m->stream);
}
/* ZeRO-1: every rank's shard is gathered through the gradient buffer (free between steps). */
static void gather_moment(Model *m, float *dst, const float *shard) {
    gsync_gather_shards(&m->gs, m->mem.grads, shard);
    copy_out(m, dst, m->mem.grads, m->num_params);
}
static void cuda_get_adam_state(Model *m, float *mom, float *var) {
    gsync_join_gather(&m->gs); /* NCCL calls on the main stream come after those on the second */
    if (m->gs.zero) {
        gather_moment(m, mom, m->mem.adam_m);
        gather_moment(m, var, m->mem.adam_v);
        CUDA_CHECK(cudaMemsetAsync(m->mem.grads, 0, m->gs.n_pad * 4, m->stream));
        return;
    }
    copy_out(m, mom, m->mem.adam_m, m->num_params);
    copy_out(m, var, m->mem.adam_v, m->num_params);
}

/* ---- forward ----------------------------------------------------------------------------- */

static void check_mm(int rc, const char *what) {
    if (rc != 0) {
        fprintf(stderr, "cuda backend: matmul failed in %s (%s)\n", what, cuda_matmul_last_refusal());
        exit(1);
    }
}

/* The four linear layers of a block (lin: LIN_*; wt, bt: its weight and bias tensors): bf16
 * GEMMs, or with --matmul fp8 FP8 ones (rows N a multiple of 16; other N run in bf16). */
static Fp8Linear fp8_linear(Model *m, int l, int lin) {
    Fp8State *f = &m->fp8;
    float *s = f->slots + (size_t)(l * LIN_COUNT + lin) * 3 * FP8_SLOT_FLOATS;
    Fp8Linear r = {s, s + FP8_SLOT_FLOATS, s + 2 * FP8_SLOT_FLOATS, f->w8[lin] + (size_t)l * f->wbytes[lin],
                   f->wt8[lin] + (size_t)l * f->wbytes[lin]};
    return r;
}
static int linear_forward(Model *m, int l, int lin, int wt, int bt, void *out, void *gelu_pre, const void *inp, int N) {
    const int C = fp8_width(m, lin, 0), OC = fp8_width(m, lin, 1);
    if (!m->fp8.on || N % 16 != 0)
        return cuda_matmul_forward(m->prec, out, gelu_pre, inp, wx(m, wt, l), wx(m, bt, l), N, C, OC, 0, m->stream);
    Fp8Linear f = fp8_linear(m, l, lin);
    m->fp8.work.calibrate = m->fp8.fwd_calls == 0;
    return cuda_fp8_matmul_forward(&f, &m->fp8.work, out, gelu_pre, inp, wx(m, wt, l), wx(m, bt, l), N, C, OC, m->stream);
}
/* bt < 0: the bias gradient is summed elsewhere (the LayerNorm backward that wrote dout). */
static int linear_backward(Model *m, int l, int lin, int wt, int bt, void *dinp, const void *dout, const void *inp,
                           const void *gelu_pre, int N) {
    const int C = fp8_width(m, lin, 0), OC = fp8_width(m, lin, 1);
    float *dbias = bt >= 0 ? gr(m, bt, l) : NULL;
    if (!m->fp8.on || N % 16 != 0)
        return cuda_matmul_backward(m->prec, dinp, gr(m, wt, l), dbias, dout, inp, wx(m, wt, l), gelu_pre, N,
                                    C, OC, 0, 1.0f, m->mem.s.reduce, m->stream);
    Fp8Linear f = fp8_linear(m, l, lin);
    m->fp8.work.calibrate = m->fp8.bwd_calls == 0;
    return cuda_fp8_matmul_backward(&f, &m->fp8.work, dinp, gr(m, wt, l), dbias, dout, inp, wx(m, wt, l),
                                    gelu_pre, N, C, OC, 1.0f, m->mem.s.reduce, m->stream);
}

/* Logits of rows [r0, r0+rows) into the logits buffer, then the fused classifier. */
static void classifier_chunk(Model *m, int r0, int rows, int write_dlogits) {
    const int C = m->C;
    check_mm(cuda_matmul_forward(m->prec, m->mem.s.logits, NULL, (char *)m->mem.a.lnf + (size_t)r0 * C * m->esize,
                                 wx(m, P_WTE, 0), NULL, rows, C, m->Vp, m->mem.ld_logits, m->stream),
             "lm head");
    prof_mark(&m->prof, prof_open(&m->prof) ? PF_LMHEAD_FWD : PF_START);
    cuda_classifier(m->prec, m->mem.s.logits, m->mem.a.losses + r0, m->mem.s.targets + r0, m->mem.s.dlogits_scale, rows,
                    m->V, m->mem.ld_logits, write_dlogits, m->stream);
    prof_mark(&m->prof, PF_CLASSIFIER);
}

static void forward_body(Model *m, int B, int T, int has_targets) {
    const int C = m->C, L = m->L, N = B * T;
    const Precision p = m->prec;
    cudaStream_t st = m->stream;
    Acts *a = &m->mem.a;
    AttnShape shape = attn_shape_for(m, B, T);

    prof_mark(&m->prof, PF_START);
    gsync_wait_params(&m->gs, 0);
    if (L > 0) gsync_wait_params(&m->gs, 1);
    cuda_encoder_forward(p, a->encoded, m->mem.s.inputs, m->mem.s.doc_pos, wx(m, P_WTE, 0), wpe_x(m), B, T, C, st);
    prof_mark(&m->prof, PF_ENCODER);
    const int sln = m->mem.share_ln, sgelu = m->mem.share_gelu;
    cuda_layernorm_forward(p, act_rc(m, a->ln1, a->ln1_kept, 0, C, sln), stat(m, a->ln1_mean, 0), stat(m, a->ln1_rstd, 0),
                           a->encoded, wx(m, P_LN1W, 0), wx(m, P_LN1B, 0), N, C, st);
    prof_mark(&m->prof, PF_LN_FWD);
    for (int l = 0; l < L; l++) {
        void *residual = l == 0 ? a->encoded : act(m, a->res3, l - 1, C, 0);
        void *ln1 = act_rc(m, a->ln1, a->ln1_kept, l, C, sln), *qkv = act(m, a->qkv, l, m->Q, 0);
        void *atty = act(m, a->atty, l, C, 0), *res2 = act(m, a->res2, l, C, 0);
        void *ln2 = act_rc(m, a->ln2, a->ln2_kept, l, C, sln), *fch = act(m, a->fch, l, 4 * C, 0);
        void *fch_gelu = act_rc(m, a->fch_gelu, a->fch_gelu_kept, l, 4 * C, sgelu), *res3 = act(m, a->res3, l, C, 0);
        char *qkvc = (char *)qkv;
        size_t Ce = (size_t)C * m->esize, KVe = (size_t)m->KV * m->esize; /* q, k, v at 0, Ce, Ce + KVe */

        check_mm(linear_forward(m, l, LIN_QKV, P_QKVW, P_QKVB, qkv, NULL, ln1, N), "qkv");
        prof_mark(&m->prof, PF_QKV_FWD);
        if (m->attn->forward(&shape, qkvc, qkvc + Ce, qkvc + Ce + KVe, atty,
                             m->mem.a.att_saved + (size_t)l * m->mem.att_saved_per_layer, m->mem.s.att_ws, st) != 0) {
            fprintf(stderr, "cuda backend: attention forward failed\n");
            exit(1);
        }
        prof_mark(&m->prof, PF_ATTN_FWD);
        check_mm(linear_forward(m, l, LIN_ATTPROJ, P_ATTPROJW, P_ATTPROJB, m->mem.s.proj, NULL, atty, N), "attproj");
        prof_mark(&m->prof, PF_ATTPROJ_FWD);
        cuda_residual_layernorm_forward(p, res2, ln2, stat(m, a->ln2_mean, l), stat(m, a->ln2_rstd, l),
                                        residual, m->mem.s.proj, wx(m, P_LN2W, l), wx(m, P_LN2B, l), N, C, st);
        prof_mark(&m->prof, PF_LN_FWD);
        check_mm(linear_forward(m, l, LIN_FC, P_FCW, P_FCB, fch_gelu, fch, ln2, N), "fc");
        prof_mark(&m->prof, PF_FC_FWD);
        check_mm(linear_forward(m, l, LIN_FCPROJ, P_FCPROJW, P_FCPROJB, m->mem.s.proj, NULL, fch_gelu, N), "fcproj");
        prof_mark(&m->prof, PF_FCPROJ_FWD);
        /* res3 = res2 + proj, and the next LayerNorm (LN1 of layer l+1, or the final one) */
        if (l + 1 < L) gsync_wait_params(&m->gs, l + 2);
        if (l + 1 < L)
            cuda_residual_layernorm_forward(p, res3, act_rc(m, a->ln1, a->ln1_kept, l + 1, C, sln), stat(m, a->ln1_mean, l + 1),
                                            stat(m, a->ln1_rstd, l + 1), res2, m->mem.s.proj,
                                            wx(m, P_LN1W, l + 1), wx(m, P_LN1B, l + 1), N, C, st);
        else
            cuda_residual_layernorm_forward(p, res3, a->lnf, a->lnf_mean, a->lnf_rstd, res2, m->mem.s.proj,
                                            wx(m, P_LNFW, 0), wx(m, P_LNFB, 0), N, C, st);
        prof_mark(&m->prof, PF_LN_FWD);
    }
    gsync_forward_done(&m->gs); /* every segment was waited for */
    m->fp8.fwd_calls++;
    if (L == 0)
        cuda_layernorm_forward(p, a->lnf, a->lnf_mean, a->lnf_rstd, a->encoded, wx(m, P_LNFW, 0),
                               wx(m, P_LNFB, 0), N, C, st);
    if (!has_targets) return;
    /* One chunk: dlogits stay for backward. Several: only the losses now; backward recomputes. */
    int single = m->mem.chunk_rows >= N;
    for (int r0 = 0; r0 < N; r0 += m->mem.chunk_rows) {
        int rows = N - r0 < m->mem.chunk_rows ? N - r0 : m->mem.chunk_rows;
        classifier_chunk(m, r0, rows, single);
    }
    cuda_sum_losses(m->mem.s.loss, a->losses, N, m->mem.s.dloss, st);
    prof_mark(&m->prof, PF_CLASSIFIER);
}

/* ---- backward ---------------------------------------------------------------------------- */

/* Recompute: layer l's shared buffers (copy l & 1) from what forward kept, on stream st: the GELU
 * output from the pre-activation (gelu, all), the two LayerNorm outputs from the residual stream
 * (all; the statistics are rewritten with the same values). */
static void recompute_layer(Model *m, int l, int N, cudaStream_t st) {
    const int C = m->C;
    const Precision p = m->prec;
    Acts *a = &m->mem.a;
    if (m->mem.share_gelu)
        cuda_gelu_forward(p, act(m, a->fch_gelu, l, 4 * C, 1), act(m, a->fch, l, 4 * C, 0), (size_t)N * 4 * C, st);
    if (m->mem.share_ln) {
        void *residual = l == 0 ? a->encoded : act(m, a->res3, l - 1, C, 0);
        cuda_layernorm_forward(p, act(m, a->ln2, l, C, 1), stat(m, a->ln2_mean, l), stat(m, a->ln2_rstd, l),
                               act(m, a->res2, l, C, 0), wx(m, P_LN2W, l), wx(m, P_LN2B, l), N, C, st);
        cuda_layernorm_forward(p, act(m, a->ln1, l, C, 1), stat(m, a->ln1_mean, l), stat(m, a->ln1_rstd, l),
                               residual, wx(m, P_LN1W, l), wx(m, P_LN1B, l), N, C, st);
    }
}

static void backward_body(Model *m, int B, int T, float loss_scale) {
    const int C = m->C, L = m->L, N = B * T;
    const Precision p = m->prec;
    cudaStream_t st = m->stream;
    Acts *a = &m->mem.a;
    Scratch *s = &m->mem.s;
    AttnShape shape = attn_shape_for(m, B, T);
    const size_t Ce = (size_t)C * m->esize, KVe = (size_t)m->KV * m->esize; /* q, k, v at 0, Ce, Ce + KVe */

    prof_mark(&m->prof, PF_START);
    /* lm head: dlnf = dlogits wte, dwte += dlogits^T lnf, both scaled by loss_scale (and 1/G,
     * which undoes the gain the fp16 dlogits carry; G = 1 otherwise, so alpha == loss_scale) */
    const float alpha = loss_scale / m->dlogits_gain;
    int single = m->mem.chunk_rows >= N;
    for (int r0 = 0; r0 < N; r0 += m->mem.chunk_rows) {
        int rows = N - r0 < m->mem.chunk_rows ? N - r0 : m->mem.chunk_rows;
        if (!single) classifier_chunk(m, r0, rows, 1);
        check_mm(cuda_matmul_backward(p, (char *)s->dln + (size_t)r0 * Ce, gr(m, P_WTE, 0), NULL, s->logits,
                                      (char *)a->lnf + (size_t)r0 * Ce, wx(m, P_WTE, 0), NULL, rows, C,
                                      m->Vp, m->mem.ld_logits, alpha, s->reduce, st),
                 "lm head backward");
        prof_mark(&m->prof, PF_LMHEAD_BWD);
    }
    /* Recompute (the plan's shared buffers, two copies by layer parity) in layers 0 .. R-1, R =
     * rc_layers (the last L - R keep theirs): the side stream rewrites layer l-1's copy while this
     * stream runs layer l, once layer l+1 (same parity) is done with it; layer l waits for its
     * own. Layer R-1's starts here, beside the backward of the layers above it: the logits, which
     * the copies overlay in the scratch region, are dead. Every side-stream operation ends before
     * rc_done[0], which this stream waits for at layer 0 (a captured graph's fork joins). */
    const int sln = m->mem.share_ln, sgelu = m->mem.share_gelu, R = m->mem.rc_layers;
    const int side = (sln || sgelu) && R > 0;
    if (side) {
        CUDA_CHECK(cudaEventRecord(m->rc_start, st));
        CUDA_CHECK(cudaStreamWaitEvent(m->side, m->rc_start, 0));
        recompute_layer(m, R - 1, N, m->side);
        CUDA_CHECK(cudaEventRecord(m->rc_done[(R - 1) & 1], m->side));
    }
    CUDA_CHECK(cudaMemsetAsync(s->dres, 0, (size_t)N * Ce, st));
    void *last = L > 0 ? act(m, a->res3, L - 1, C, 0) : a->encoded;
    /* each LayerNorm backward also sums the residual gradient it leaves in dres: the bias gradient
     * of the projection whose output that is (fcproj's of the layer below, attproj's of its own) */
    cuda_layernorm_backward(p, s->dres, gr(m, P_LNFW, 0), gr(m, P_LNFB, 0), L > 0 ? gr(m, P_FCPROJB, L - 1) : NULL,
                            s->dln, last, wx(m, P_LNFW, 0), a->lnf_mean, a->lnf_rstd, N, C, s->reduce, st);
    prof_mark(&m->prof, PF_LN_BWD);

    for (int l = L - 1; l >= 0; l--) {
        void *residual = l == 0 ? a->encoded : act(m, a->res3, l - 1, C, 0);
        void *ln1 = act_rc(m, a->ln1, a->ln1_kept, l, C, sln), *qkv = act(m, a->qkv, l, m->Q, 0);
        void *atty = act(m, a->atty, l, C, 0), *res2 = act(m, a->res2, l, C, 0);
        void *ln2 = act_rc(m, a->ln2, a->ln2_kept, l, C, sln), *fch = act(m, a->fch, l, 4 * C, 0);
        void *fch_gelu = act_rc(m, a->fch_gelu, a->fch_gelu_kept, l, 4 * C, sgelu);
        float *ln1_mean = stat(m, a->ln1_mean, l), *ln1_rstd = stat(m, a->ln1_rstd, l);
        float *ln2_mean = stat(m, a->ln2_mean, l), *ln2_rstd = stat(m, a->ln2_rstd, l);
        char *qkvc = (char *)qkv, *dqkvc = (char *)s->dqkv;

        if (side && recomputes(m, l)) {
            if (l >= 1) { /* copy (l-1) & 1 was last read by layer l+1 (none before it in this pass) */
                if (l + 1 < R) CUDA_CHECK(cudaStreamWaitEvent(m->side, m->rc_free[(l + 1) & 1], 0));
                recompute_layer(m, l - 1, N, m->side);
                CUDA_CHECK(cudaEventRecord(m->rc_done[(l - 1) & 1], m->side));
            }
            CUDA_CHECK(cudaStreamWaitEvent(st, m->rc_done[l & 1], 0));
            prof_mark(&m->prof, PF_RECOMPUTE); /* the wait for the side stream, if any */
        }
        /* MLP: dres is d(res3) = d(res2) through the add, and the fcproj input gradient */
        check_mm(linear_backward(m, l, LIN_FCPROJ, P_FCPROJW, -1, s->dbig, s->dres, fch_gelu, fch, N),
                 "fcproj backward");
        prof_mark(&m->prof, PF_FCPROJ_BWD);
        check_mm(linear_backward(m, l, LIN_FC, P_FCW, P_FCB, s->dln, s->dbig, ln2, NULL, N), "fc backward");
        prof_mark(&m->prof, PF_FC_BWD);
        cuda_layernorm_backward(p, s->dres, gr(m, P_LN2W, l), gr(m, P_LN2B, l), gr(m, P_ATTPROJB, l), s->dln, res2,
                                wx(m, P_LN2W, l), ln2_mean, ln2_rstd, N, C, s->reduce, st);
        prof_mark(&m->prof, PF_LN_BWD);
        /* attention: dres is now d(res2) */
        check_mm(linear_backward(m, l, LIN_ATTPROJ, P_ATTPROJW, -1, s->dln, s->dres, atty, NULL, N),
                 "attproj backward");
        prof_mark(&m->prof, PF_ATTPROJ_BWD);
        if (m->attn->backward(&shape, qkvc, qkvc + Ce, qkvc + Ce + KVe, atty, s->dln,
                              a->att_saved + (size_t)l * m->mem.att_saved_per_layer, dqkvc, dqkvc + Ce,
                              dqkvc + Ce + KVe, s->att_ws, st) != 0) {
            fprintf(stderr, "cuda backend: attention backward failed\n");
            exit(1);
        }
        prof_mark(&m->prof, PF_ATTN_BWD);
        check_mm(linear_backward(m, l, LIN_QKV, P_QKVW, P_QKVB, s->dln, s->dqkv, ln1, NULL, N), "qkv backward");
        prof_mark(&m->prof, PF_QKV_BWD);
        cuda_layernorm_backward(p, s->dres, gr(m, P_LN1W, l), gr(m, P_LN1B, l), l > 0 ? gr(m, P_FCPROJB, l - 1) : NULL,
                                s->dln, residual, wx(m, P_LN1W, l), ln1_mean, ln1_rstd, N, C, s->reduce, st);
        prof_mark(&m->prof, PF_LN_BWD);
        if (side && recomputes(m, l)) CUDA_CHECK(cudaEventRecord(m->rc_free[l & 1], st)); /* its copies are read */
        gsync_layer_done(&m->gs, l);
    }
    EncoderGroups by_token = {s->uniq, s->start, s->pos, s->num_uniq};
    EncoderGroups by_pos = {s->pos_uniq, s->pos_start, s->pos_rows, s->pos_num_uniq};
    cuda_encoder_backward(p, gr(m, P_WTE, 0), m->plan.alibi ? NULL : gr(m, P_WPE, 0), s->dres, &by_token,
                          s->doc_pos ? &by_pos : NULL, B, T, C, st);
    prof_mark(&m->prof, PF_ENCODER_BWD);
    if (m->fp8.on) cuda_fp8_roll(m->fp8.slots, m->L * LIN_COUNT * 3, st); /* this step's amaxes into the histories */
    m->fp8.bwd_calls++;
    gsync_backward_done(&m->gs);
}

/* ---- graphs: capture a body once per shape, replay it after ----------------------------- */

typedef void (*BodyFn)(Model *m, int B, int T, int flag);

/* The matmul library's TF32 and epilogue-fusion switches are per process: each model sets its
 * own before it issues matmuls (its choices are part of the matmul cache's key). */
static void apply_matmul_settings(const Model *m) {
    cuda_matmul_set_tf32(m->tf32);
    cuda_matmul_set_fusion(m->matmul_fusion);
}

static void run_body(Model *m, GraphSlot *g, int B, int T, int flag, BodyFn body) {
    apply_matmul_settings(m);
    if (!m->graphs || gsync_active(&m->gs)) { /* graphs: one process only (the sync varies per micro-batch) */
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

/* Packed documents: each token's document start (the attention's mask.doc) and, with restarting
 * positions, its position and the rows grouped by position (the encoder's dwpe), computed on the
 * host as the CPU backend does and queued for upload into the fixed device buffers (before the
 * body, so a replayed graph reads them). The staging is free: cuda_forward waited for `staged`. */
static void upload_documents(Model *m, const int *inputs, int B, int T) {
    const size_t N = (size_t)B * T;
    cudaStream_t st = m->stream;
    Scratch *s = &m->mem.s;
    doc_starts_of_batch(&m->opt.doc_sep, inputs, B, T, m->h_doc, m->h_doc_pos);
    CUDA_CHECK(cudaMemcpyAsync(s->doc, m->h_doc, N * 4, cudaMemcpyHostToDevice, st));
    if (!s->doc_pos) return;
    *m->h_pos_num_uniq = cuda_encoder_group_tokens(m->h_doc_pos, (int)N, T, m->h_pos_uniq, m->h_pos_start,
                                                   m->h_pos_rows, m->h_counts);
    CUDA_CHECK(cudaMemcpyAsync(s->doc_pos, m->h_doc_pos, N * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->pos_uniq, m->h_pos_uniq, (size_t)*m->h_pos_num_uniq * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->pos_start, m->h_pos_start, (size_t)(*m->h_pos_num_uniq + 1) * 4,
                               cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->pos_rows, m->h_pos_rows, N * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->pos_num_uniq, m->h_pos_num_uniq, 4, cudaMemcpyHostToDevice, st));
}

/* Everything forward does without waiting: the uploads, the body, and with targets the loss's
 * copy into h_loss, after which loss_ready is recorded. Returns whether there is a loss. */
static int forward_queue(Model *m, const int *inputs, const int *targets, int B, int T) {
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
    *m->h_dlogits_scale = counted ? m->dlogits_gain / counted : 0.0f;
    *m->h_num_uniq = cuda_encoder_group_tokens(inputs, N, m->V, m->h_uniq, m->h_start, m->h_pos, m->h_counts);
    cudaStream_t st = m->stream;
    Scratch *s = &m->mem.s;
    CUDA_CHECK(cudaMemcpyAsync(s->inputs, m->h_inputs, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    if (targets) CUDA_CHECK(cudaMemcpyAsync(s->targets, m->h_targets, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->uniq, m->h_uniq, (size_t)*m->h_num_uniq * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->start, m->h_start, (size_t)(*m->h_num_uniq + 1) * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->pos, m->h_pos, (size_t)N * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->num_uniq, m->h_num_uniq, 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s->dloss, m->h_dloss, 4, cudaMemcpyHostToDevice, st));
    if (s->dlogits_scale != s->dloss)
        CUDA_CHECK(cudaMemcpyAsync(s->dlogits_scale, m->h_dlogits_scale, 4, cudaMemcpyHostToDevice, st));
    if (m->h_doc) upload_documents(m, inputs, B, T);
    CUDA_CHECK(cudaEventRecord(m->staged, st));

    m->B = B; m->T = T; m->has_targets = targets != NULL;
    prof_forward_begin(&m->prof);
    run_body(m, &m->fwd_graph, B, T, targets != NULL, forward_fn);
    m->dlogits_ready = targets != NULL;
    if (!targets) return 0;
    CUDA_CHECK(cudaMemcpyAsync(m->h_loss, s->loss, 4, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaEventRecord(m->loss_ready, st));
    return 1;
}

static float cuda_forward(Model *m, const int *inputs, const int *targets, int B, int T) {
    if (!forward_queue(m, inputs, targets, B, T)) return 0.0f;
    gsync_stream_sync(&m->gs, m->stream);
    prof_collect(&m->prof);
    return *m->h_loss;
}

static void cuda_backward(Model *m, float loss_scale, int sync_grads) {
    if (!m->dlogits_ready) {
        fprintf(stderr, "cuda backend: backward needs a forward with targets first (one backward per forward)\n");
        exit(1);
    }
    prof_forward_trained(&m->prof);
    gsync_backward_begin(&m->gs, sync_grads);
    int flag;
    memcpy(&flag, &loss_scale, sizeof flag);
    run_body(m, &m->bwd_graph, m->B, m->T, flag, backward_fn);
    m->dlogits_ready = 0; /* the logits buffer was backward's scratch (model/memory_plan_cuda.h) */
}

/* Backward is queued behind forward before the host waits for the loss (an event after its
 * copy, which the backward cannot overwrite: the copy precedes it on the stream; with peers the
 * wait watches NCCL). The old order, forward's wait then backward, stays for --profile without
 * graphs: its forward times are read at forward's end. */
static float cuda_forward_backward(Model *m, const int *inputs, const int *targets, int B, int T, float loss_scale,
                                   int sync_grads) {
    if (m->prof.record) {
        float loss = cuda_forward(m, inputs, targets, B, T);
        cuda_backward(m, loss_scale, sync_grads);
        return loss;
    }
    forward_queue(m, inputs, targets, B, T);
    cuda_backward(m, loss_scale, sync_grads);
    gsync_event_sync(&m->gs, m->loss_ready);
    return *m->h_loss;
}

static void cuda_logits_at(Model *m, int b, int t, float *out) {
    gsync_join_gather(&m->gs);
    size_t row = (size_t)b * m->T + t;
    cuda_logits_row(m->prec, m->mem.s.logits_row, (char *)m->mem.a.lnf + row * m->C * m->esize, wx(m, P_WTE, 0),
                    m->V, m->C, m->stream);
    copy_out(m, out, m->mem.s.logits_row, (size_t)m->V);
}

static void cuda_zero_grad(Model *m) {
    CUDA_CHECK(cudaMemsetAsync(m->mem.grads, 0, m->gs.n_pad * 4, m->stream));
}

/* The loss-scaled gradients' sum of squares into s.sumsq (queued; collective with ZeRO-1). */
static void queue_sum_of_squares(Model *m) {
    gsync_join_gather(&m->gs);
    prof_mark(&m->prof, PF_START);
    if (m->gs.zero) { /* the reduced gradient exists as shards: their sums of squares, summed */
        size_t lo, hi;
        gsync_shard(&m->gs, &lo, &hi);
        cuda_sum_of_squares(m->mem.s.sumsq, m->mem.grads + lo, hi - lo, m->mem.s.norm_partials, m->stream);
        gsync_sum_f32(&m->gs, m->mem.s.sumsq, 1);
    } else {
        cuda_sum_of_squares(m->mem.s.sumsq, m->mem.grads, m->num_params, m->mem.s.norm_partials, m->stream);
    }
    prof_mark(&m->prof, PF_NORM);
}
static float cuda_grad_norm(Model *m) {
    queue_sum_of_squares(m);
    CUDA_CHECK(cudaMemcpyAsync(m->h_out, m->mem.s.sumsq, 4, cudaMemcpyDeviceToHost, m->stream));
    gsync_stream_sync(&m->gs, m->stream);
    prof_collect(&m->prof);
    return sqrtf(*m->h_out);
}

/* AdamW with the device pair s.adamw_scale as its gradient multiplier (and go-ahead). */
static void queue_update(Model *m, const AdamWStep *s) {
    prof_step(&m->prof);
    /* ZeRO-1: this rank updates [lo, hi) of the flat parameters; m and v hold that range only */
    size_t lo, hi;
    gsync_shard(&m->gs, &lo, &hi);
    gsync_join_gather(&m->gs);
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        if (frozen_zero(m, t)) continue;
        size_t a = m->off[t] > lo ? m->off[t] : lo, b = m->off[t] + m->size[t] < hi ? m->off[t] + m->size[t] : hi;
        if (a >= b) continue;
        void *px = m->prec != PRECISION_FP32 ? (char *)m->mem.params_x + a * 2 : NULL;
        float wd = gpt2_param_decays(t) ? s->weight_decay : 0.0f;
        cuda_adamw(m->prec, m->mem.params + a, px, m->mem.grads + a, m->mem.adam_m + (a - lo), m->mem.adam_v + (a - lo), b - a,
                   s->lr, s->beta1, s->beta2, s->eps, wd, m->mem.s.adamw_scale, s->t, m->stream);
    }
    gsync_after_update(&m->gs); /* ZeRO-1: everyone's updated shard to everyone */
    prof_mark(&m->prof, PF_ADAMW);
}

static void cuda_update(Model *m, const AdamWStep *s) {
    cuda_adamw_scale_set(m->mem.s.adamw_scale, s->grad_scale, m->stream);
    queue_update(m, s);
}

/* The norm, the clip / skip decision and AdamW all queued before the host waits, once, for the
 * norm it returns: the GPU runs from the gradient norm into AdamW without the host's round trip,
 * and the host waits for the norm's copy only (an event before AdamW), so it prepares the next
 * step while AdamW runs. --profile waits for the stream: its AdamW time is read here. */
static float cuda_clip_and_update(Model *m, const AdamWStep *s, float max_norm, float loss_scale, int skip_nonfinite) {
    queue_sum_of_squares(m);
    CUDA_CHECK(cudaMemcpyAsync(m->h_out, m->mem.s.sumsq, 4, cudaMemcpyDeviceToHost, m->stream));
    CUDA_CHECK(cudaEventRecord(m->norm_ready, m->stream));
    cuda_adamw_scale_from_sumsq(m->mem.s.adamw_scale, m->mem.s.sumsq, max_norm, loss_scale, skip_nonfinite, m->stream);
    queue_update(m, s);
    if (m->prof.record) gsync_stream_sync(&m->gs, m->stream);
    else gsync_event_sync(&m->gs, m->norm_ready);
    prof_collect(&m->prof);
    return sqrtf(*m->h_out);
}

static double cuda_mean_over_ranks(Model *m, double x) { return gsync_mean(&m->gs, x); }

static size_t cuda_memory_in_use(Model *m) { return m->held_bytes; }

static const Backend cuda_backend = {
    "cuda",           cuda_create,      cuda_destroy,        cuda_set_params,
    cuda_get_params,  cuda_get_grads,   cuda_set_adam_state, cuda_get_adam_state,
    cuda_forward,     cuda_logits_at,   cuda_zero_grad,      cuda_backward,
    cuda_forward_backward, cuda_grad_norm, cuda_update,      cuda_clip_and_update, cuda_memory_in_use,
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
