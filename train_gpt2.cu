/* train_gpt2.cu: the trainer's entry point -- read the options, set up data and model, then
 *
 *   for each step: load a batch, forward, backward (x grad-accum), clip, update, log
 *
 * on the CPU reference backend or the CUDA backend (model/backend.h), with the attention kernel
 * chosen at run time (attention/attention.h). With several GPUs (train/dist.h) each process
 * trains on its own shard of every batch, gradients are summed through NCCL inside the backend,
 * and rank 0 alone prints, logs, samples and writes checkpoints; the losses printed are the
 * means over the ranks. This file holds host code only; it is written in
 * the common subset of C and C++ so that gcc builds it as C (CPU-only build) and nvcc as C++.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "attention/attention.h"
#include "data/dataset.h"
#include "model/backend.h"
#include "model/cuda_extras.h"
#include "model/gpt2.h"
#include "model/model_file.h"
#include "train/bench.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/options.h"
#include "train/schedule.h"
#include "train/util.h"
#include "tokenizer/tokenizer.h"


/* Everything the training loop works with. */
typedef struct {
    Options opt;
    const Backend *be;
    Model *model;
    GPT2Config config;
    ModelOptions mopt;
    Dataset train_ds, val_ds;
    int val_is_separate;          /* val_ds is its own file (else a split of train_ds) */
    DataLoader train_loader, val_loader;
    int *inputs, *targets;        /* one micro-batch (B, T) */
    float *dense_bias;            /* (T, T) additive mask for --mask dense */
    double bytes_per_token;       /* 1 for byte data; NAN for token data with no vocabulary */
    Tokenizer tok;                /* --vocab-file: decodes token-file data */
    int have_tok;
    FILE *log;
    int start_step;
    const CudaExtras *gpu;        /* GPU extras (name, peak rate, graphs); NULL on the CPU */
    double peak_flops;            /* for MFU; 0 when unknown */
    double flops_per_token;       /* one training step's FLOPs per token */
    DistInfo dist;                /* rank and world; world 1 without a launcher */
    unsigned char nccl_id[DIST_ID_BYTES];
} Trainer;

static int g_rank = 0, g_world = 1; /* for error messages */

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (g_world > 1) fprintf(stderr, "error: rank %d of %d: ", g_rank, g_world);
    else fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* ---- setup ---------------------------------------------------------------------------- */

static void open_dataset(Dataset *ds, const char *path) {
    char err[512];
    if (dataset_open(ds, path, err, sizeof err) != 0) fail("%s", err);
}

/* Byte data is its own vocabulary. Token data is decoded (for samples and bits per byte) by
 * the BPE vocabulary of --vocab-file, measured as bytes per token over the validation text. */
static void setup_tokenizer(Trainer *tr) {
    char err[512];
    const Dataset *train = &tr->train_ds;
    tr->bytes_per_token = 1.0;
    if (train->kind == DATASET_BYTES) {
        if (tr->opt.vocab_file)
            fail("--vocab-file applies to token-file data; %s is raw bytes", train->name);
        return;
    }
    if (!tr->opt.vocab_file) {
        tr->bytes_per_token = NAN;
        printf("note: token data without --vocab-file: bits per byte are not known and samples "
               "print token ids\n");
        return;
    }
    if (tokenizer_load(&tr->tok, tr->opt.vocab_file, err, sizeof err) != 0) fail("%s", err);
    tr->have_tok = 1;
    if (train->max_token >= tr->tok.vocab_size)
        fail("%s holds token id %d, outside the %d-token vocabulary of %s", train->name,
             train->max_token, tr->tok.vocab_size, tr->opt.vocab_file);
    const Dataset *val = tr->val_is_separate ? &tr->val_ds : train;
    size_t begin = 0, end = val->num_tokens;
    if (!tr->val_is_separate) dataset_split(train, "val", &begin, &end);
    if (val->kind == DATASET_TOKENS16 && end > begin)
        tr->bytes_per_token = tokenizer_bytes_per_token(&tr->tok, val->tokens + begin, end - begin);
}

/* Training data: --data, else enwik8 when `make enwik8` has fetched it, else the embedded
 * corpus. Validation: --val-data, else enwik8's own validation part, else the 90/5/5 split. */
static void setup_data(Trainer *tr) {
    const Options *o = &tr->opt;
    const char *train_path = o->data, *val_path = o->val_data;
    if (!train_path && file_exists(ENWIK8_TRAIN)) {
        train_path = ENWIK8_TRAIN;
        if (!val_path && file_exists(ENWIK8_VAL)) val_path = ENWIK8_VAL;
    }
    if (train_path) {
        open_dataset(&tr->train_ds, train_path);
    } else {
        dataset_embedded(&tr->train_ds);
        printf("note: enwik8 not found in data/enwik8 (fetch it with `make enwik8`); training on "
               "the embedded corpus (%zu bytes of this project's own text)\n",
               tr->train_ds.num_tokens);
    }
    if (val_path) {
        open_dataset(&tr->val_ds, val_path);
        tr->val_is_separate = 1;
    }
    setup_tokenizer(tr);
}

static void setup_loaders(Trainer *tr) {
    const Options *o = &tr->opt;
    char err[512];
    size_t begin, end;
    const Dataset *train = &tr->train_ds;
    if (tr->val_is_separate) {
        begin = 0;
        end = train->num_tokens;
    } else {
        dataset_split(train, "train", &begin, &end);
    }
    int rank = tr->dist.rank, world = tr->dist.world;
    if (loader_init(&tr->train_loader, train, begin, end, o->batch, o->seq_len, rank, world, o->shuffle,
                    o->seed, err, sizeof err) != 0)
        fail("training data: %s", err);
    const Dataset *val = tr->val_is_separate ? &tr->val_ds : train;
    if (tr->val_is_separate) {
        begin = 0;
        end = val->num_tokens;
    } else {
        dataset_split(train, "val", &begin, &end);
    }
    if (loader_init(&tr->val_loader, val, begin, end, o->batch, o->seq_len, rank, world, 0, o->seed,
                    err, sizeof err) != 0)
        fail("validation data: %s", err);
}

static int overrides_given(const Options *o) {
    return o->layers || o->heads || o->channels || o->vocab || o->max_seq_len;
}

/* The model's shape: from the checkpoint being resumed, the --init file, or the preset with
 * the explicit overrides. The vocabulary must hold every token id in the data. */
static GPT2Config choose_config(const Trainer *tr, const char *resume_model) {
    const Options *o = &tr->opt;
    char err[512];
    GPT2Config c;
    const char *from_file = resume_model ? resume_model : o->init;
    if (from_file) {
        if (model_file_read_config(from_file, &c, err, sizeof err) != 0) fail("%s", err);
        if (overrides_given(o) &&
            ((o->layers && o->layers != c.num_layers) || (o->heads && o->heads != c.num_heads) ||
             (o->channels && o->channels != c.channels) || (o->vocab && o->vocab != c.vocab_size) ||
             (o->max_seq_len && o->max_seq_len != c.max_seq_len)))
            fail("--layers/--heads/--channels/--vocab/--max-seq-len differ from the model in %s",
                 from_file);
    } else {
        if (gpt2_config_preset(o->model, &c, err, sizeof err) != 0) fail("%s", err);
        if (o->layers) c.num_layers = o->layers;
        if (o->heads) c.num_heads = o->heads;
        if (o->channels) c.channels = o->channels;
        if (o->max_seq_len) c.max_seq_len = o->max_seq_len;
        else if (c.max_seq_len < o->seq_len) c.max_seq_len = o->seq_len;
        int data_vocab = tr->train_ds.max_token + 1;
        if (tr->have_tok && tr->tok.vocab_size > data_vocab) data_vocab = tr->tok.vocab_size;
        c.vocab_size = o->vocab ? o->vocab : (data_vocab > 256 ? data_vocab : 256);
        c.padded_vocab_size = gpt2_padded_vocab(c.vocab_size);
        if (gpt2_config_validate(&c, err, sizeof err) != 0) fail("%s", err);
    }
    if (o->seq_len > c.max_seq_len)
        fail("--seq-len %d is over the model's maximum sequence length %d", o->seq_len, c.max_seq_len);
    int max_tok = tr->train_ds.max_token;
    if (tr->val_is_separate && tr->val_ds.max_token > max_tok) max_tok = tr->val_ds.max_token;
    if (max_tok >= c.vocab_size)
        fail("the data holds token id %d but the model's vocabulary is %d (set --vocab)", max_tok,
             c.vocab_size);
    return c;
}

static const Backend *choose_backend(const Options *o) {
    char why[256] = "";
    if (strcmp(o->device, "cpu") == 0) return &cpu_backend;
    const Backend *cuda = cuda_backend_if_available(why, sizeof why);
    if (strcmp(o->device, "cuda") == 0) {
        if (!cuda) fail("--device cuda: %s", why);
        return cuda;
    }
    if (strcmp(o->device, "auto") != 0) fail("--device expects auto, cpu or cuda, got '%s'", o->device);
    if (!cuda) printf("note: using the CPU backend: %s\n", why);
    return cuda ? cuda : &cpu_backend;
}

/* --mask dense: the causal mask handed to the kernel as a materialised T x T additive bias. */
static float *make_dense_causal_bias(int T) {
    float *bias = (float *)malloc((size_t)T * T * sizeof(float));
    if (!bias) fail("out of memory for a %d x %d mask", T, T);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) bias[(size_t)i * T + j] = j <= i ? 0.0f : -INFINITY;
    return bias;
}

static void setup_model_options(Trainer *tr) {
    const Options *o = &tr->opt;
    ModelOptions *m = &tr->mopt;
    memset(m, 0, sizeof *m);
    m->config = tr->config;
    m->B = o->batch;
    m->T = o->seq_len;
    m->recompute = o->recompute;
    m->no_linear_bias = o->no_linear_bias;
    m->threads = o->threads;
    m->rank = tr->dist.rank;
    m->world = tr->dist.world;
    m->zero_stage = o->zero;
    m->nccl_id = tr->dist.world > 1 ? tr->nccl_id : NULL;
    m->dist_timeout_s = o->dist_timeout;
    m->dp_overlap = o->dp_overlap;
    m->dp_bucket_layers = o->dp_bucket_layers;
    m->zero_overlap = o->zero_overlap;
    m->zero_gather_overlap = o->zero_gather_overlap;
    m->nccl_max_ctas = o->nccl_max_ctas;
    m->cuda_graphs = o->cuda_graph;
    m->tf32 = !o->no_tf32;
    m->logits_chunk_rows = o->logits_chunk;
    m->matmul_fusion = !o->no_matmul_fusion;
    m->profile = o->profile;
    int is_cpu = tr->be == &cpu_backend;
    if (!o->precision) m->precision = tr->gpu ? tr->gpu->default_precision() : PRECISION_FP32;
    else if (precision_from_name(o->precision, &m->precision) != 0)
        fail("--precision expects fp32 or bf16, got '%s'", o->precision);
    if (is_cpu && m->precision != PRECISION_FP32)
        fail("the CPU backend trains in fp32 only (got --precision %s)", o->precision);
    /* gradients cross the wire in the training precision unless --grad-comm says otherwise */
    m->grad_comm = m->precision;
    if (o->grad_comm && precision_from_name(o->grad_comm, &m->grad_comm) != 0)
        fail("--grad-comm expects fp32 or bf16, got '%s'", o->grad_comm);
    if (attn_mask_from_name(o->mask, &m->mask) != 0)
        fail("--mask expects causal, none or dense, got '%s'", o->mask);
    if (m->mask == ATTN_MASK_DENSE) {
        tr->dense_bias = make_dense_causal_bias(o->seq_len);
        m->dense_bias = tr->dense_bias;
    }
    AttnKernel k;
    if (attn_kernel_from_name(o->attn, &k) != 0)
        fail("--attn expects naive, memeff, flash or auto, got '%s'", o->attn);
    AttnPlace place = is_cpu ? ATTN_CPU : ATTN_CUDA;
    AttnDtype dtype = m->precision == PRECISION_BF16 ? ATTN_BF16 : ATTN_FP32;
    int C = tr->config.channels, H = tr->config.num_heads;
    AttnShape s = attn_shape_packed(o->batch, o->seq_len, H, C / H, m->mask, dtype);
    if (k == ATTN_AUTO) k = attn_resolve_auto(&s, place);
    const AttnImpl *impl = attn_impl(k, place);
    if (!impl) fail("attention kernel '%s' is not available on the %s", attn_kernel_name(k), tr->be->name);
    if (m->mask == ATTN_MASK_DENSE) {
        s.mask.bias = tr->dense_bias;
        s.mask.stride_row = o->seq_len;
    }
    const char *why = impl->unsupported(&s);
    if (why) fail("attention kernel '%s' cannot run this configuration: %s", attn_kernel_name(k), why);
    m->attn = k;
}

/* On a GPU: the peak rate MFU is measured against. */
static void setup_gpu(Trainer *tr) {
    const Options *o = &tr->opt;
    tr->flops_per_token = gpt2_flops_per_token(&tr->config, o->seq_len, tr->mopt.mask != ATTN_MASK_NONE);
    if (!tr->gpu) return;
    tr->peak_flops = tr->gpu->peak_tflops(tr->mopt.precision, tr->mopt.tf32, o->peak_tflops) * 1e12;
    char name[256] = "?";
    tr->gpu->device_name(name, sizeof name);
    printf("gpu: %s, peak %.0f TFLOP/s (%s) for MFU%s\n", name, tr->peak_flops / 1e12,
           precision_name(tr->mopt.precision),
           tr->peak_flops > 0 ? "" : " -- unknown GPU: pass --peak-tflops");
}

/* The checkpoint's place in the data in this run's loader steps: a run with another batch x
 * world (e.g. 2 GPUs resumed on 1 with twice the accumulation) counts windows differently. */
static size_t loader_step_for(const Trainer *tr, const TrainProgress *p) {
    uint64_t now = (uint64_t)tr->opt.batch * tr->dist.world, then = p->windows_per_step;
    if (then == 0 || then == now) return (size_t)p->loader_step;
    if (p->loader_step * then % now != 0)
        fail("the checkpoint stopped after %llu windows of its epoch, which --batch %d on %d GPU(s) "
             "cannot reach (keep the global batch a multiple of %llu windows)",
             (unsigned long long)(p->loader_step * then), tr->opt.batch, tr->dist.world,
             (unsigned long long)then);
    return (size_t)(p->loader_step * then / now);
}

/* Fresh GPT-2 initialisation, an --init model file, or the checkpoint being resumed. */
static void load_initial_state(Trainer *tr, const char *resume_model, const char *resume_state) {
    char err[512];
    size_t n = gpt2_num_params(&tr->config);
    float *params = (float *)malloc(n * sizeof(float));
    if (!params) fail("out of host memory for %zu parameters", n);
    const char *from_file = resume_model ? resume_model : tr->opt.init;
    if (from_file) {
        if (model_file_load(from_file, &tr->config, params, err, sizeof err) != 0) fail("%s", err);
    } else {
        gpt2_init_params(&tr->config, params, tr->opt.seed);
    }
    tr->be->set_params(tr->model, params);
    if (resume_state) {
        float *mom = (float *)malloc(n * sizeof(float)), *var = (float *)malloc(n * sizeof(float));
        TrainProgress p;
        if (!mom || !var) fail("out of host memory for the optimizer state");
        if (checkpoint_load_state(resume_state, n, mom, var, &p, err, sizeof err) != 0) fail("%s", err);
        tr->be->set_adam_state(tr->model, mom, var);
        loader_seek(&tr->train_loader, p.loader_epoch, loader_step_for(tr, &p));
        tr->start_step = (int)p.step;
        free(mom);
        free(var);
    }
    free(params);
}

/* ---- reporting ------------------------------------------------------------------------ */

static double bits_per_byte(const Trainer *tr, double loss) {
    return loss / log(2.0) / tr->bytes_per_token;
}

/* Every rank evaluates its share of the --val-batches batches (the same windows as one
 * process would see when the world divides them); the mean is over the ranks. */
static double evaluate(Trainer *tr) {
    const Options *o = &tr->opt;
    loader_reset(&tr->val_loader);
    int world = tr->dist.world;
    int batches = (o->val_batches + world - 1) / world;
    if ((size_t)batches > tr->val_loader.steps_per_epoch) batches = (int)tr->val_loader.steps_per_epoch;
    double total = 0.0;
    for (int i = 0; i < batches; i++) {
        loader_next(&tr->val_loader, tr->inputs, tr->targets);
        total += tr->be->forward(tr->model, tr->inputs, tr->targets, o->batch, o->seq_len);
    }
    return tr->be->mean_over_ranks(tr->model, total / batches);
}

static void report_validation(Trainer *tr, int step) {
    double loss = evaluate(tr);
    printf("val   %6d | loss %.4f | bpb %.4f\n", step, loss, bits_per_byte(tr, loss));
    if (tr->log)
        fprintf(tr->log, "{\"type\":\"val\",\"step\":%d,\"loss\":%.6f,\"bpb\":%.6f}\n", step, loss,
                bits_per_byte(tr, loss));
}

static void print_byte(unsigned char c) {
    putchar(c == '\n' || c == '\t' || c >= 32 ? c : '?');
}

/* Prints a sampled token: a byte, the bytes of a BPE token, or <id> with no vocabulary. */
static void print_token(int token, void *ctx) {
    const Trainer *tr = (const Trainer *)ctx;
    if (tr->train_ds.kind == DATASET_BYTES) {
        print_byte((unsigned char)token);
    } else if (tr->have_tok) {
        size_t len = 0;
        const uint8_t *bytes = tokenizer_token_bytes(&tr->tok, token, &len);
        for (size_t i = 0; bytes && i < len; i++) print_byte(bytes[i]);
    } else {
        printf("<%d>", token);
    }
}

/* The prompt as tokens: its bytes, or its BPE encoding. Returns the count (at least 1). */
static int encode_prompt(Trainer *tr, int *tokens) {
    const char *p = tr->opt.prompt;
    size_t n = strlen(p);
    int count = 0;
    if (tr->train_ds.kind == DATASET_BYTES) {
        for (size_t i = 0; i < n; i++) tokens[count++] = (unsigned char)p[i];
    } else if (tr->have_tok && n > 0) {
        uint16_t *ids = (uint16_t *)malloc(n * sizeof(uint16_t));
        count = (int)tokenizer_encode(&tr->tok, (const uint8_t *)p, n, ids);
        for (int i = 0; i < count; i++) tokens[i] = ids[i];
        free(ids);
    }
    if (count == 0) tokens[count++] = 0;
    for (int i = 0; i < count; i++)
        if (tokens[i] >= tr->config.vocab_size) tokens[i] = 0;
    return count;
}

static void print_sample(Trainer *tr, int step) {
    const Options *o = &tr->opt;
    if (o->sample_len <= 0 || tr->dist.rank != 0) return;
    int *tokens = (int *)malloc((strlen(o->prompt) + o->sample_len + 1) * sizeof(int));
    int n = encode_prompt(tr, tokens);
    printf("sample %5d | %s", step, o->prompt);
    generate(tr->be, tr->model, tokens, n, o->sample_len, o->seq_len, tr->config.vocab_size,
             o->temperature, o->top_k, o->seed + (uint64_t)step, print_token, tr);
    printf("\n");
    free(tokens);
}

/* Collective with ZeRO-1 (the sharded state is gathered), so every rank calls it; rank 0 writes. */
static void save_checkpoint(Trainer *tr, int step) {
    char err[512];
    if (tr->dist.rank != 0 && !(tr->dist.world > 1 && tr->opt.zero)) return;
    size_t n = gpt2_num_params(&tr->config);
    float *params = (float *)malloc(n * sizeof(float));
    float *mom = (float *)malloc(n * sizeof(float)), *var = (float *)malloc(n * sizeof(float));
    if (!params || !mom || !var) fail("out of host memory writing a checkpoint");
    tr->be->get_params(tr->model, params);
    tr->be->get_adam_state(tr->model, mom, var);
    if (tr->dist.rank != 0) {
        free(params);
        free(mom);
        free(var);
        return;
    }
    TrainProgress p;
    p.step = (uint64_t)step;
    p.loader_epoch = tr->train_loader.epoch;
    p.loader_step = tr->train_loader.step_in_epoch;
    p.seed = tr->opt.seed;
    p.windows_per_step = (uint64_t)tr->opt.batch * tr->dist.world;
    if (checkpoint_save(tr->opt.checkpoint_dir, &tr->config, params, mom, var, &p, err, sizeof err) != 0)
        fail("%s", err);
    printf("checkpoint %d written to %s\n", step, tr->opt.checkpoint_dir);
    free(params);
    free(mom);
    free(var);
}

/* ---- the training loop ----------------------------------------------------------------- */

/* One optimizer step: grad_accum micro-batches on each of the world's ranks, each contributing
 * 1/(grad_accum x world) of the mean loss's gradient (a power of two scales exactly, so N GPUs
 * compute the same per-micro-batch gradients as one GPU accumulating N times as many); the last
 * backward also sums them over the ranks. Then the global norm, clipping, and AdamW. Returns
 * the mean loss over all ranks. */
static float train_step(Trainer *tr, int step, float *norm_out, float *lr_out) {
    const Options *o = &tr->opt;
    const Backend *be = tr->be;
    be->zero_grad(tr->model);
    double loss = 0.0;
    float loss_scale = 1.0f / ((float)o->grad_accum * tr->dist.world);
    for (int micro = 0; micro < o->grad_accum; micro++) {
        loader_next(&tr->train_loader, tr->inputs, tr->targets);
        loss += be->forward(tr->model, tr->inputs, tr->targets, o->batch, o->seq_len);
        be->backward(tr->model, loss_scale, micro == o->grad_accum - 1);
    }
    loss = be->mean_over_ranks(tr->model, loss / o->grad_accum);
    float norm = be->grad_norm(tr->model);
    AdamWStep s;
    s.lr = lr_at_step(step, o->steps, o->warmup, o->lr, o->min_lr_frac);
    s.beta1 = o->beta1;
    s.beta2 = o->beta2;
    s.eps = o->eps;
    s.weight_decay = o->weight_decay;
    s.grad_scale = (o->grad_clip > 0 && norm > o->grad_clip) ? o->grad_clip / norm : 1.0f;
    s.t = step + 1;
    be->update(tr->model, &s);
    *norm_out = norm;
    *lr_out = s.lr;
    return (float)loss;
}

#define GIB (1024.0 * 1024.0 * 1024.0)

/* Model FLOP utilisation: FLOPs done per second over the GPU's peak; 0 when unknown. */
static double mfu_of(const Trainer *tr, double tok_per_s) {
    return tr->peak_flops > 0 ? tr->flops_per_token * tok_per_s / tr->peak_flops : 0.0;
}

/* What cudaMemGetInfo says is in use on the device (0 on the CPU). */
static size_t device_memory_used(const Trainer *tr) {
    size_t free_b = 0, total_b = 0;
    if (!tr->gpu || tr->gpu->mem_info(&free_b, &total_b) != 0) return 0;
    return total_b - free_b;
}

static void log_step(Trainer *tr, int step, float loss, float norm, float lr, double ms) {
    const Options *o = &tr->opt;
    int world = tr->dist.world;
    double tokens = (double)o->batch * o->seq_len * o->grad_accum * world; /* all ranks' */
    double tok_per_s = tokens / (ms / 1000.0);
    size_t mem = tr->be->memory_in_use(tr->model), dev_used = device_memory_used(tr);
    double mfu = mfu_of(tr, tok_per_s / world);
    if (!o->quiet) {
        printf("step %5d/%d | loss %.4f | bpb %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s",
               step + 1, o->steps, loss, bits_per_byte(tr, loss), lr, norm, ms, tok_per_s);
        if (tr->gpu) printf(" | %d GPU%s | MFU %.1f%% | mem %.2f GiB (device %.2f GiB)%s", world, world > 1 ? "s" : "",
                            100.0 * mfu, mem / GIB, dev_used / GIB, world > 1 ? " per GPU" : "");
        printf("\n");
    }
    if (tr->log)
        fprintf(tr->log, "{\"type\":\"step\",\"step\":%d,\"loss\":%.6f,\"bpb\":%.6f,\"lr\":%.6e,"
                "\"norm\":%.6f,\"ms\":%.3f,\"tok_per_s\":%.1f,\"mfu\":%.4f,\"mem_bytes\":%zu,"
                "\"device_used_bytes\":%zu,\"gpus\":%d}\n",
                step + 1, loss, bits_per_byte(tr, loss), lr, norm, ms, tok_per_s, mfu, mem, dev_used, world);
}

/* --gpus N without a launcher around us: become the launcher of N workers of ourselves. */
static void launch_workers_if_asked(const Trainer *tr, char **argv) {
    const Options *o = &tr->opt;
    char why[256] = "", err[512];
    if (o->gpus <= 1 || tr->dist.world > 1) return;
    if (!cuda_backend_if_available(why, sizeof why)) fail("--gpus %d: %s", o->gpus, why);
    const CudaExtras *x = cuda_extras();
    int visible = x ? x->device_count() : 0;
    if (visible < o->gpus) fail("--gpus %d: only %d GPU(s) are visible", o->gpus, visible);
    fflush(stdout);
    int rc = dist_launch_local(o->gpus, argv, 10.0, err, sizeof err);
    if (rc < 0) fail("%s", err);
    exit(rc);
}

/* Rank and world from the launcher; rank 0's NCCL id reaches every rank (before the model). */
static void setup_dist(Trainer *tr, char **argv) {
    char err[512];
    const Options *o = &tr->opt;
    if (dist_from_env(&tr->dist, err, sizeof err) != 0) fail("%s", err);
    g_rank = tr->dist.rank;
    g_world = tr->dist.world;
    launch_workers_if_asked(tr, argv);
    if (tr->dist.world > 1 && o->gpus > 1 && o->gpus != tr->dist.world)
        fail("--gpus %d but the launcher (%s) started a world of %d", o->gpus, tr->dist.launcher, tr->dist.world);
    if (tr->dist.world == 1) {
        if (o->zero) printf("note: --zero %d has no effect in one process\n", o->zero);
        return;
    }
    if (o->bench) fail("--bench runs in one process (got a world of %d)", tr->dist.world);
    if (tr->dist.rank != 0 && !freopen("/dev/null", "w", stdout)) /* rank 0 alone prints */
        fail("cannot silence stdout of rank %d", tr->dist.rank);
}

/* After the backend is chosen: this rank's GPU, and the NCCL id through the rendezvous. */
static void setup_dist_device(Trainer *tr) {
    char err[512];
    if (tr->dist.world <= 1) return;
    if (!tr->gpu) fail("training on %d processes needs the CUDA backend (got %s)", tr->dist.world, tr->be->name);
    if (tr->gpu->select_device(tr->dist.local_rank, err, sizeof err) != 0) fail("%s", err);
    if (tr->dist.rank == 0 && tr->gpu->nccl_unique_id(tr->nccl_id, err, sizeof err) != 0) fail("%s", err);
    if (dist_rendezvous(&tr->dist, tr->nccl_id, tr->opt.dist_timeout, err, sizeof err) != 0) fail("%s", err);
}

static void setup(Trainer *tr, int argc, char **argv) {
    char err[512];
    options_defaults(&tr->opt);
    int rc = options_parse(&tr->opt, argc, argv);
    if (rc == 1) exit(0);
    if (rc != 0) exit(2);
    setup_dist(tr, argv);
    if (tr->opt.bench) exit(bench_main(&tr->opt)); /* --bench GRID: a sweep instead of a run */
    Options *o = &tr->opt;
    int rank0 = tr->dist.rank == 0;

    const char *resume_model = NULL, *resume_state = NULL;
    static char model_path[4096], state_path[4096];
    if (o->resume && !o->checkpoint_dir) fail("--resume needs --checkpoint-dir DIR");
    if (o->checkpoint_dir && rank0 && checkpoint_dir_ready(o->checkpoint_dir, err, sizeof err) != 0)
        fail("%s", err);
    if (o->resume) {
        long step = checkpoint_latest(o->checkpoint_dir);
        if (step < 0) {
            printf("note: no checkpoint in %s; starting from scratch\n", o->checkpoint_dir);
        } else {
            checkpoint_paths(o->checkpoint_dir, step, model_path, state_path, sizeof model_path);
            resume_model = model_path;
            resume_state = state_path;
        }
    }
    if (o->log && rank0 && !(tr->log = fopen(o->log, o->resume ? "a" : "w")))
        fail("cannot write log file %s", o->log);

    setup_data(tr);
    tr->config = choose_config(tr, resume_model);
    tr->be = choose_backend(o);
    tr->gpu = tr->be == &cpu_backend ? NULL : cuda_extras();
    setup_dist_device(tr);
    setup_model_options(tr);
    setup_gpu(tr);
    setup_loaders(tr);
    tr->model = tr->be->create(&tr->mopt, err, sizeof err);
    if (!tr->model) fail("%s", err);
    tr->inputs = (int *)malloc((size_t)o->batch * o->seq_len * sizeof(int));
    tr->targets = (int *)malloc((size_t)o->batch * o->seq_len * sizeof(int));
    load_initial_state(tr, resume_model, resume_state);
    if (tr->start_step > o->steps) fail("the checkpoint is at step %d, past --steps %d", tr->start_step, o->steps);

    const GPT2Config *c = &tr->config;
    printf("model: %d layers, %d heads, %d channels, vocab %d (padded %d), max seq %d: %.2fM parameters\n",
           c->num_layers, c->num_heads, c->channels, c->vocab_size, c->padded_vocab_size,
           c->max_seq_len, gpt2_num_params(c) / 1e6);
    /* the GPU's switches: graphs and TF32 always, the measuring ones when set */
    char gpu_set[192] = "";
    if (tr->gpu) {
        const ModelOptions *mo = &tr->mopt;
        int n = snprintf(gpu_set, sizeof gpu_set, ", cuda graphs %s, tf32 %s", mo->cuda_graphs ? "on" : "off",
                         mo->tf32 ? "on" : "off");
        if (mo->logits_chunk_rows) n += snprintf(gpu_set + n, sizeof gpu_set - n, ", logits chunk %d", mo->logits_chunk_rows);
        if (!mo->matmul_fusion) n += snprintf(gpu_set + n, sizeof gpu_set - n, ", matmul fusion off");
        if (mo->profile) snprintf(gpu_set + n, sizeof gpu_set - n, ", profile on");
    }
    printf("train: %s backend, %s, attention %s, mask %s, B=%d T=%d grad-accum %d, %d steps from %d%s\n",
           tr->be->name, precision_name(tr->mopt.precision), attn_kernel_name(tr->mopt.attn),
           attn_mask_name(tr->mopt.mask), o->batch, o->seq_len, o->grad_accum, o->steps, tr->start_step, gpu_set);
    if (tr->dist.world > 1) {
        /* how the gradients travel, where not the default */
        char dist_set[192] = "";
        int n = 0;
        if (!o->zero && !o->dp_overlap) n += snprintf(dist_set + n, sizeof dist_set - n, ", dp overlap off");
        if (o->dp_bucket_layers != 3) n += snprintf(dist_set + n, sizeof dist_set - n, ", buckets of %d layers", o->dp_bucket_layers);
        if (o->zero && o->zero_overlap) n += snprintf(dist_set + n, sizeof dist_set - n, ", zero overlap on");
        if (o->zero && o->zero_gather_overlap) n += snprintf(dist_set + n, sizeof dist_set - n, ", zero gather overlap on");
        if (o->nccl_max_ctas) snprintf(dist_set + n, sizeof dist_set - n, ", nccl max ctas %d", o->nccl_max_ctas);
        printf("dist: %d GPUs (%s), B=%d per GPU: %d sequences per step, ZeRO stage %d, gradients in %s%s\n",
               tr->dist.world, tr->dist.launcher, o->batch, o->batch * o->grad_accum * tr->dist.world, o->zero,
               precision_name(tr->mopt.grad_comm), dist_set);
    }
    printf("data: %s (%zu tokens), validation: %s\n", tr->train_ds.name, tr->train_ds.num_tokens,
           tr->val_is_separate ? tr->val_ds.name : "5% split of the training data");
    fflush(stdout);
}

static void teardown(Trainer *tr) {
    tr->be->destroy(tr->model);
    loader_free(&tr->train_loader);
    loader_free(&tr->val_loader);
    dataset_close(&tr->train_ds);
    if (tr->val_is_separate) dataset_close(&tr->val_ds);
    free(tr->inputs);
    free(tr->targets);
    free(tr->dense_bias);
    if (tr->have_tok) tokenizer_free(&tr->tok);
    if (tr->log) fclose(tr->log);
}

/* Mean step time over the steps after the first three (they warm caches and allocators). */
typedef struct {
    double ms;
    int steps;
} Timing;

static void record_step_time(Timing *t, int steps_done, double ms) {
    if (steps_done < 3) return;
    t->ms += ms;
    t->steps++;
}

static void print_summary(Trainer *tr, const Timing *t) {
    const Options *o = &tr->opt;
    if (t->steps == 0 || tr->dist.rank != 0) return;
    int world = tr->dist.world;
    double ms = t->ms / t->steps;
    double tok_per_s = (double)o->batch * o->seq_len * o->grad_accum * world / (ms / 1000.0);
    double mfu = mfu_of(tr, tok_per_s / world);
    size_t peak = tr->be->memory_in_use(tr->model);
    printf("summary: %.2f ms/step, %.0f tok/s over %d steps (after 3 warm-up steps)", ms, tok_per_s, t->steps);
    if (tr->gpu)
        printf(", MFU %.1f%%, peak memory %.2f GiB%s", 100.0 * mfu, peak / GIB, world > 1 ? " per GPU" : "");
    if (world > 1) printf(", %d GPUs", world);
    printf("\n");
    if (tr->log)
        fprintf(tr->log, "{\"type\":\"summary\",\"ms_per_step\":%.3f,\"tok_per_s\":%.1f,"
                "\"mfu\":%.4f,\"peak_mem_bytes\":%zu,\"gpus\":%d}\n", ms, tok_per_s, mfu, peak, world);
}

static int every(int n, int step) { return n > 0 && step % n == 0; }

int main(int argc, char **argv) {
    static Trainer tr;
    setup(&tr, argc, argv);
    const Options *o = &tr.opt;
    Timing timing = {0.0, 0};

    for (int step = tr.start_step; step < o->steps; step++) {
        if (every(o->val_every, step)) report_validation(&tr, step);
        if (step > 0 && every(o->sample_every, step)) print_sample(&tr, step);

        double t0 = now_seconds();
        float norm, lr;
        float loss = train_step(&tr, step, &norm, &lr);
        double ms = (now_seconds() - t0) * 1000.0;
        if (!isfinite(loss)) fail("the loss became %f at step %d; lower --lr?", loss, step + 1);
        log_step(&tr, step, loss, norm, lr, ms);
        record_step_time(&timing, step - tr.start_step, ms);

        if (o->checkpoint_dir && every(o->checkpoint_every, step + 1) && step + 1 < o->steps)
            save_checkpoint(&tr, step + 1);
        fflush(stdout);
    }
    report_validation(&tr, o->steps);
    if (o->checkpoint_dir && o->steps > tr.start_step) save_checkpoint(&tr, o->steps);
    print_sample(&tr, o->steps);
    print_summary(&tr, &timing);
    teardown(&tr);
    return 0;
}
