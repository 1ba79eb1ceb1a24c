/* train/trainer.c: the trainer as a library (train/trainer.h): the decisions a training run and
 * the bench share, then a training run's setup, reporting, checkpoints, log and signals. The
 * loop itself is in train_gpt2.cu. */
#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/atomic_file.h"
#include "common/error_text.h"
#include "model/model_file.h"
#include "train/checkpoint.h"
#include "train/schedule.h"
#include "train/util.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

static int g_rank = 0, g_world = 1; /* for error messages */

void trainer_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    if (g_world > 1) fprintf(stderr, "error: rank %d of %d: ", g_rank, g_world);
    else fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}
#define fail trainer_fail

/* ==== shared with the bench ================================================================ */

int trainer_choose_backend(const Options *o, const Backend **be, char *err, size_t errlen) {
    char why[256] = "";
    if (strcmp(o->device, "auto") != 0 && strcmp(o->device, "cpu") != 0 && strcmp(o->device, "cuda") != 0) {
        set_err(err, errlen, "--device expects auto, cpu or cuda, got '%s'", o->device);
        return -1;
    }
    if (strcmp(o->device, "cpu") == 0) {
        *be = &cpu_backend;
        return 0;
    }
    const Backend *cuda = cuda_backend_if_available(why, sizeof why);
    if (!cuda && strcmp(o->device, "cuda") == 0) {
        set_err(err, errlen, "--device cuda: %s", why);
        return -1;
    }
    if (!cuda) printf("note: using the CPU backend: %s\n", why);
    *be = cuda ? cuda : &cpu_backend;
    return 0;
}

int trainer_data_open(const Options *o, TrainData *d, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    const char *train_path = o->data, *val_path = o->val_data;
    if (!train_path && file_exists(ENWIK8_TRAIN)) {
        train_path = ENWIK8_TRAIN;
        if (!val_path && file_exists(ENWIK8_VAL)) val_path = ENWIK8_VAL;
    }
    if (train_path) {
        if (dataset_open_spec(&d->train, train_path, err, errlen) != 0) {
            memset(d, 0, sizeof *d);
            return -1;
        }
    } else {
        dataset_embedded(&d->train);
        printf("note: enwik8 not found in data/enwik8 (fetch it with `make enwik8`); training on "
               "the embedded corpus (%zu bytes of this project's own text)\n", d->train.num_tokens);
    }
    if (val_path) {
        if (dataset_open_spec(&d->val, val_path, err, errlen) != 0) {
            dataset_close(&d->train);
            memset(d, 0, sizeof *d);
            return -1;
        }
        d->val_is_separate = 1;
        d->train_begin = 0;
        d->train_end = d->train.num_tokens;
        d->val_begin = 0;
        d->val_end = d->val.num_tokens;
    } else {
        dataset_split(&d->train, "train", &d->train_begin, &d->train_end);
        dataset_split(&d->train, "val", &d->val_begin, &d->val_end);
    }
    return 0;
}

void trainer_data_close(TrainData *d) {
    dataset_close(&d->train);
    if (d->val_is_separate) dataset_close(&d->val);
}

float *trainer_dense_causal_bias(int T) {
    float *bias = (float *)malloc((size_t)T * T * sizeof(float));
    if (!bias) return NULL;
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) bias[(size_t)i * T + j] = j <= i ? 0.0f : -INFINITY;
    return bias;
}

void trainer_model_options(const Options *o, ModelOptions *m) {
    if (recompute_from_name(o->recompute, &m->recompute) != 0) m->recompute = RECOMPUTE_GELU; /* options_parse refused others */
    m->keep_layers = o->keep_layers;
    m->no_linear_bias = o->no_linear_bias;
    m->threads = o->threads;
    m->cuda_graphs = !o->no_cuda_graph && !o->profile; /* --profile times the parts of eager steps */
    m->tf32 = !o->no_tf32;
    m->logits_chunk_rows = o->logits_chunk;
    m->matmul_fusion = !o->no_matmul_fusion;
    m->profile = o->profile;
    m->dp_overlap = o->dp_overlap;
    m->dp_bucket_layers = o->dp_bucket_layers;
    m->zero_overlap = o->zero_overlap;
    m->zero_gather_overlap = o->zero_gather_overlap;
    m->nccl_max_ctas = o->nccl_max_ctas;
    m->attn_window = o->attn_window;
    m->doc_positions = o->doc_positions;
}

int trainer_doc_sep(const Options *o, const Dataset *train, DocSep *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!o->doc_sep) return 0;
    return doc_sep_parse(o->doc_sep, train->kind == DATASET_BYTES, out, err, errlen);
}

AttnShape trainer_attention_shape(const ModelOptions *mo, int *doc) {
    static const float marker_slopes[1] = {0.0f}; /* presence only: the backend fills the real ones */
    const GPT2Config *c = &mo->config;
    int H = c->num_heads;
    AttnShape s = attn_shape_packed_gqa(mo->B, mo->T, H, gpt2_kv_heads(c), c->channels / H, mo->mask,
                                        precision_attn_dtype(mo->precision));
    if (mo->mask == ATTN_MASK_DENSE) {
        s.mask.bias = mo->dense_bias;
        s.mask.stride_row = mo->T;
    }
    s.mask.window = mo->attn_window;
    s.tf32 = mo->tf32; /* fp32 products on TF32 tensor cores where the kernel has them (memeff) */
    if (c->pos == GPT2_POS_ALIBI) s.mask.alibi_slopes = marker_slopes;
    if (mo->doc_sep.len > 0) s.mask.doc = doc;
    return s;
}

/* A (B, T) doc array of one document per sequence, for the shape's checks (the CPU kernels'
 * unsupported() reads doc: it must be non-decreasing); NULL without documents or memory. */
static int *one_document_each(const ModelOptions *mo) {
    return mo->doc_sep.len > 0 ? (int *)calloc((size_t)mo->B * mo->T, sizeof(int)) : NULL;
}

const char *trainer_check_attention(AttnKernel k, AttnPlace place, const ModelOptions *mo, char *buf, size_t n) {
    const AttnImpl *impl = attn_impl(k, place);
    if (!impl) {
        snprintf(buf, n, "no %s kernel on the %s in this build", attn_kernel_name(k), place == ATTN_CPU ? "CPU" : "GPU");
        return buf;
    }
    int *doc = one_document_each(mo);
    if (mo->doc_sep.len > 0 && !doc) {
        snprintf(buf, n, "out of host memory for a %d x %d document array", mo->B, mo->T);
        return buf;
    }
    AttnShape s = trainer_attention_shape(mo, doc);
    const char *why = impl->unsupported(&s);
    if (why) snprintf(buf, n, "%s", why);
    free(doc);
    return why ? buf : NULL;
}

AttnKernel trainer_resolve_attention(AttnKernel k, AttnPlace place, const ModelOptions *mo) {
    int *doc = one_document_each(mo);
    AttnShape s = trainer_attention_shape(mo, doc);
    k = attn_resolve(k, &s, place);
    free(doc);
    return k;
}

int trainer_loss_scaler(const Options *o, Precision p, int refuse_unused, LossScaler *ls, char *err,
                        size_t errlen) {
    LossScaleMode mode = p == PRECISION_FP16 ? LOSS_SCALE_DYNAMIC : LOSS_SCALE_OFF;
    float scale = 1.0f;
    if (o->loss_scale && loss_scale_parse(o->loss_scale, &mode, &scale, err, errlen) != 0) return -1;
    if (mode == LOSS_SCALE_DYNAMIC) scale = (float)o->loss_scale_init;
    if (refuse_unused && mode != LOSS_SCALE_DYNAMIC &&
        (options_given(o, "loss-scale-init") || options_given(o, "loss-scale-window"))) {
        set_err(err, errlen, "--%s applies with --loss-scale dynamic (fp16's default; %s)",
                options_given(o, "loss-scale-init") ? "loss-scale-init" : "loss-scale-window",
                mode == LOSS_SCALE_FIXED ? "this run's scale is fixed" : "this run has no loss scaling");
        return -1;
    }
    loss_scale_init(ls, mode, scale, o->loss_scale_window);
    return 0;
}

float trainer_step(const Backend *be, Model *m, const StepShape *shape, BatchSource next, void *ctx,
                   int *inputs, int *targets, AdamWStep *s, LossScaler *ls, float *norm_out) {
    be->zero_grad(m);
    double loss = 0.0;
    const float S = ls ? ls->scale : 1.0f; /* this step's loss scale (ls may change it below) */
    float loss_scale = 1.0f / ((float)shape->grad_accum * shape->world) * S;
    for (int micro = 0; micro < shape->grad_accum; micro++) {
        next(ctx, inputs, targets);
        /* forward and backward; the last micro-batch's backward also sums over the ranks */
        loss += be->forward_backward(m, inputs, targets, shape->B, shape->T, loss_scale, micro == shape->grad_accum - 1);
    }
    loss = be->mean_over_ranks(m, loss / shape->grad_accum);
    /* the norm (inf or NaN when any gradient is; every rank sees the same), clipping, and with loss
     * scaling the skip of a non-finite step: decided by the backend (the GPU's on the device) by
     * the same rule that loss_scale_after_backward applies to the scaler here */
    const int skip_nonfinite = ls && ls->mode != LOSS_SCALE_OFF;
    float scaled_norm = be->clip_and_update(m, s, shape->grad_clip, S, skip_nonfinite);
    if (ls) loss_scale_after_backward(ls, scaled_norm);
    *norm_out = scaled_norm / S; /* exact for a power of two S */
    return (float)loss;
}

double trainer_host_memory_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024.0;
}

/* model/gpt2_cpu.c: parameters, gradients and AdamW moments; per-layer activations; logits,
 * probabilities and their gradient; scratch; the attention's saved buffer and workspace. */
double trainer_cpu_bytes_needed(const ModelOptions *mo) {
    const GPT2Config *c = &mo->config;
    double BT = (double)mo->B * mo->T, C = c->channels, L = c->num_layers, V = c->vocab_size;
    double floats = 4.0 * gpt2_num_params(c)                     /* params, grads, m, v */
                    + BT * (L * (16.0 * C + 4.0) + 2.0 * C + 3.0) /* activations, lnf, losses */
                    + BT * (3.0 * V + 14.0 * C);                  /* logits, probs, dlogits, scratch */
    double bytes = 4.0 * floats + 8.0 * BT;                       /* + inputs and targets */
    const AttnImpl *impl = attn_impl(mo->attn, ATTN_CPU);
    if (impl) {
        AttnShape s = trainer_attention_shape(mo, NULL); /* the sizes do not read the arrays */
        s.dtype = ATTN_FP32;
        bytes += L * (double)impl->saved_bytes(&s) + (double)impl->workspace_bytes(&s);
    }
    return bytes;
}

/* ==== a training run: setup ================================================================ */

/* 1 when a and b name the same existing file (through links too). */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (!a || !b || stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* An output (--log, --save-model) must not name an input: writing it would destroy the input,
 * the log even before it is read. */
static void check_output_is_no_input(const char *option, const char *out, const Options *o, const char *resume_model,
                                     const char *resume_state) {
    if (!out) return;
    const char *inputs[][2] = {{"--data", o->data}, {"--val-data", o->val_data}, {"--vocab-file", o->vocab_file},
                               {"--init", o->init}, {"the checkpoint", resume_model},
                               {"the checkpoint", resume_state}, {"the training data", ENWIK8_TRAIN},
                               {"the validation data", ENWIK8_VAL}};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
        if (same_file(out, inputs[i][1]))
            fail("%s %s is %s (%s): it would be overwritten; choose another file", option, out, inputs[i][0],
                 inputs[i][1]);
}

/* Byte data is its own vocabulary. Token data is decoded (for samples and bits per byte) by
 * the BPE vocabulary of --vocab-file, measured as bytes per token over the validation text. */
static void setup_tokenizer(Trainer *tr) {
    char err[512];
    const Dataset *train = &tr->data.train;
    tr->bytes_per_token = 1.0;
    if (train->kind == DATASET_BYTES) {
        if (tr->opt.vocab_file) fail("--vocab-file applies to token-file data; %s is raw bytes", train->name);
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
        fail("%s holds token id %d, outside the %d-token vocabulary of %s", train->name, train->max_token,
             tr->tok.vocab_size, tr->opt.vocab_file);
    /* measured over the validation range's first file (all of it with one file) */
    const Dataset *val = tr->data.val_is_separate ? &tr->data.val : train;
    size_t run = 0, want = tr->data.val_end - tr->data.val_begin;
    const void *first = val->kind == DATASET_TOKENS16 ? dataset_run(val, tr->data.val_begin, &run) : NULL;
    if (first && want > 0)
        tr->bytes_per_token = tokenizer_bytes_per_token(&tr->tok, (const uint16_t *)first, run < want ? run : want);
}

static void setup_loaders(Trainer *tr) {
    const Options *o = &tr->opt;
    char err[512];
    TrainData *d = &tr->data;
    int rank = tr->dist.rank, world = tr->dist.world;
    if (loader_init(&tr->train_loader, &d->train, d->train_begin, d->train_end, o->batch, o->seq_len, rank,
                    world, !o->sequential, o->seed, err, sizeof err) != 0)
        fail("training data: %s", err);
    const Dataset *val = d->val_is_separate ? &d->val : &d->train;
    if (loader_init(&tr->val_loader, val, d->val_begin, d->val_end, o->batch, o->seq_len, rank, world, 0,
                    o->seed, err, sizeof err) != 0)
        fail("validation data: %s", err);
}

static int shape_overrides_given(const Options *o) {
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
        if (shape_overrides_given(o) &&
            ((o->layers && o->layers != c.num_layers) || (o->heads && o->heads != c.num_heads) ||
             (o->channels && o->channels != c.channels) || (o->vocab && o->vocab != c.vocab_size) ||
             (o->max_seq_len && o->max_seq_len != c.max_seq_len)))
            fail("--layers/--heads/--channels/--vocab/--max-seq-len differ from the model in %s", from_file);
        if ((o->kv_heads && o->kv_heads != gpt2_kv_heads(&c)) ||
            (options_given(o, "pos") && strcmp(o->pos, gpt2_pos_name(c.pos)) != 0))
            fail("--kv-heads/--pos differ from the model in %s (%d K/V heads, %s positions)", from_file,
                 gpt2_kv_heads(&c), gpt2_pos_name(c.pos));
        if (options_given(o, "model")) {
            GPT2Config preset;
            if (gpt2_config_preset(o->model, &preset, err, sizeof err) != 0) fail("%s", err);
            if (preset.num_layers != c.num_layers || preset.num_heads != c.num_heads ||
                preset.channels != c.channels)
                fail("--model %s (%d layers, %d heads, %d channels) differs from the model in %s (%d, %d, %d)",
                     o->model, preset.num_layers, preset.num_heads, preset.channels, from_file, c.num_layers,
                     c.num_heads, c.channels);
        }
    } else {
        if (gpt2_config_preset(o->model, &c, err, sizeof err) != 0) fail("%s", err);
        if (o->layers) c.num_layers = o->layers;
        if (o->heads) c.num_heads = o->heads;
        if (o->channels) c.channels = o->channels;
        if (o->max_seq_len) c.max_seq_len = o->max_seq_len;
        else if (c.max_seq_len < o->seq_len) c.max_seq_len = o->seq_len;
        c.kv_heads = o->kv_heads;
        int pos;
        if (gpt2_pos_from_name(o->pos, &pos) != 0) fail("--pos expects learned or alibi, got '%s'", o->pos);
        c.pos = pos;
        int data_vocab = tr->data.train.max_token + 1;
        if (tr->have_tok && tr->tok.vocab_size > data_vocab) data_vocab = tr->tok.vocab_size;
        c.vocab_size = o->vocab ? o->vocab : (data_vocab > 256 ? data_vocab : 256);
        c.padded_vocab_size = gpt2_padded_vocab(c.vocab_size);
        if (gpt2_config_validate(&c, err, sizeof err) != 0) fail("%s", err);
    }
    if (o->seq_len > c.max_seq_len && c.pos != GPT2_POS_ALIBI) /* ALiBi has no table to run past */
        fail("--seq-len %d is over the model's maximum sequence length %d", o->seq_len, c.max_seq_len);
    int max_tok = tr->data.train.max_token;
    if (tr->data.val_is_separate && tr->data.val.max_token > max_tok) max_tok = tr->data.val.max_token;
    if (max_tok >= c.vocab_size)
        fail("the data holds token id %d but the model's vocabulary is %d (set --vocab)", max_tok, c.vocab_size);
    return c;
}

static void setup_model_options(Trainer *tr) {
    const Options *o = &tr->opt;
    ModelOptions *m = &tr->mopt;
    char err[512];
    model_options_defaults(m);
    trainer_model_options(o, m);
    m->config = tr->config;
    m->B = o->batch;
    m->T = o->seq_len;
    m->rank = tr->dist.rank;
    m->world = tr->dist.world;
    if (m->world > 1) m->cuda_graphs = 0; /* the gradient sync differs between micro-batches */
    m->zero_stage = o->zero;
    m->nccl_id = tr->dist.world > 1 ? tr->nccl_id : NULL;
    m->dist_timeout_s = o->dist_timeout;
    int is_cpu = tr->be == &cpu_backend;
    if (!o->precision) m->precision = tr->gpu ? tr->gpu->default_precision() : PRECISION_FP32;
    else if (precision_from_name(o->precision, &m->precision) != 0)
        fail("--precision expects fp32, bf16 or fp16, got '%s'", o->precision);
    /* --matmul fp8 (the blocks' linear layers): bf16 runs on the GPU; the backend checks the GPU */
    if (strcmp(o->matmul, "fp8") == 0) m->matmul_fp8 = 1;
    else if (strcmp(o->matmul, "bf16") != 0) fail("--matmul expects bf16 or fp8, got '%s'", o->matmul);
    if (m->matmul_fp8 && m->precision != PRECISION_BF16)
        fail("--matmul fp8 needs --precision bf16 (this run is %s)", precision_name(m->precision));
    if (m->matmul_fp8 && is_cpu)
        fail("--matmul fp8 needs a CUDA GPU of compute capability 8.9 or newer (this run is on the CPU)");
    if (is_cpu && m->precision != PRECISION_FP32)
        fail("the CPU backend trains in fp32 only (got --precision %s)", o->precision);
    if (trainer_loss_scaler(o, m->precision, 1, &tr->scaler, err, sizeof err) != 0) fail("%s", err);
    /* gradients cross the wire in the training precision unless --grad-comm says otherwise; fp16
     * runs send fp32 (their gradients carry the loss scale: fp16 sums could overflow) */
    m->grad_comm = m->precision == PRECISION_FP16 ? PRECISION_FP32 : m->precision;
    if (o->grad_comm && (precision_from_name(o->grad_comm, &m->grad_comm) != 0 || m->grad_comm == PRECISION_FP16))
        fail("--grad-comm expects fp32 or bf16, got '%s'", o->grad_comm);
    if (attn_mask_from_name(o->mask, &m->mask) != 0) fail("--mask expects causal, none or dense, got '%s'", o->mask);
    if (m->mask == ATTN_MASK_DENSE) {
        if (!(tr->dense_bias = trainer_dense_causal_bias(o->seq_len)))
            fail("out of host memory for a %d x %d mask", o->seq_len, o->seq_len);
        m->dense_bias = tr->dense_bias;
    }
    AttnKernel k;
    if (attn_kernel_from_name(o->attn, &k) != 0)
        fail("--attn expects %s or auto, got '%s'", attn_kernel_names_list(), o->attn);
    AttnPlace place = is_cpu ? ATTN_CPU : ATTN_CUDA;
    if (trainer_doc_sep(o, &tr->data.train, &m->doc_sep, err, sizeof err) != 0) fail("%s", err);
    if (doc_sep_max_token(&m->doc_sep) >= tr->config.vocab_size)
        fail("--doc-sep %s: token %d is outside the model's vocabulary of %d", o->doc_sep,
             doc_sep_max_token(&m->doc_sep), tr->config.vocab_size);
    if (m->doc_sep.len > 0 && tr->data.train.kind == DATASET_BYTES && doc_sep_max_token(&m->doc_sep) > 255)
        fail("--doc-sep %s: byte data holds bytes 0 to 255", o->doc_sep);
    { /* auto: the fastest kernel that runs the shape; flash on CUDA: flash-sm90 or flash-mma */
        k = trainer_resolve_attention(k, place, m);
        if (k == ATTN_AUTO) { /* none does: say why the first choice does not */
            char why_not[256];
            trainer_check_attention(ATTN_FLASH, place, m, why_not, sizeof why_not);
            fail("no attention kernel on the %s runs this configuration (flash: %s)", tr->be->name, why_not);
        }
    }
    char why[256];
    if (!attn_impl(k, place)) fail("attention kernel '%s' is not available on the %s", attn_kernel_name(k), tr->be->name);
    if (trainer_check_attention(k, place, m, why, sizeof why))
        fail("attention kernel '%s' cannot run this configuration: %s", attn_kernel_name(k), why);
    m->attn = k;
}

/* On a GPU: the peak rate MFU is measured against. */
static void setup_gpu(Trainer *tr) {
    const Options *o = &tr->opt;
    tr->flops_per_token = gpt2_flops_per_token(&tr->config, o->seq_len, tr->mopt.mask != ATTN_MASK_NONE);
    if (!tr->gpu) return;
    tr->peak_flops = tr->gpu->peak_tflops(tr->mopt.precision, tr->mopt.tf32, o->peak_tflops) * 1e12;
}

/* On the CPU the backend's allocations are checked against the host's memory first, as the
 * CUDA backend checks the device's: an out-of-memory kill says nothing. */
static void check_host_memory(const Trainer *tr) {
    if (tr->be != &cpu_backend) return;
    double avail = trainer_host_memory_available(), need = trainer_cpu_bytes_needed(&tr->mopt);
    if (avail > 0 && need > 0.9 * avail)
        fail("the model needs about %.2f GiB of host memory for B=%d T=%d, %.2f GiB are available "
             "(lower --batch or --seq-len, or a smaller model)", need / GIB, tr->opt.batch, tr->opt.seq_len,
             avail / GIB);
}

/* The checkpoint's place in the data in this run's loader steps: a run with another batch x
 * world (e.g. 2 GPUs resumed on 1 with twice the accumulation) counts windows differently. */
static size_t loader_step_for(const Trainer *tr, const TrainProgress *p) {
    uint64_t now = (uint64_t)tr->opt.batch * tr->dist.world, then = p->windows_per_step;
    if (then == 0 || then == now) return (size_t)p->loader_step;
    if (p->loader_step * then % now != 0)
        fail("the checkpoint stopped after %llu windows of its epoch, which --batch %d on %d GPU(s) "
             "cannot reach (keep the global batch a multiple of %llu windows)",
             (unsigned long long)(p->loader_step * then), tr->opt.batch, tr->dist.world, (unsigned long long)then);
    return (size_t)(p->loader_step * then / now);
}

/* --resume: the checkpoint decides the seed, the sequence length and the window order (an
 * option that names another one is refused: the run would read other windows than the one it
 * continues); the data must be the same size; another --steps reshapes the learning-rate
 * schedule, which is said. */
static void apply_resume_progress(Trainer *tr, const TrainProgress *p) {
    Options *o = &tr->opt;
    if (options_given(o, "seed") && o->seed != p->seed)
        fail("--seed %llu differs from the checkpoint's seed %llu (it fixes the shuffle order); drop --seed "
             "to continue the run", o->seed, (unsigned long long)p->seed);
    o->seed = p->seed;
    if (p->seq_len && (uint64_t)o->seq_len != p->seq_len) {
        if (options_given(o, "seq-len"))
            fail("--seq-len %d differs from the checkpoint's %llu (the windows would start elsewhere in the "
                 "data); drop --seq-len to continue the run", o->seq_len, (unsigned long long)p->seq_len);
        o->seq_len = (int)p->seq_len;
        printf("note: resuming with the checkpoint's --seq-len %d\n", o->seq_len);
    }
    if (p->shuffled && (o->sequential ? 2u : 1u) != p->shuffled) {
        if (o->sequential) fail("--sequential: the checkpoint's run read its windows in a random order; drop --sequential");
        o->sequential = 1;
        printf("note: resuming with the checkpoint's window order (--sequential)\n");
    }
    uint64_t tokens = tr->data.train_end - tr->data.train_begin;
    if (p->data_tokens && p->data_tokens != tokens)
        fail("the training data holds %llu tokens, the checkpoint's run trained on %llu: resume with the same "
             "--data", (unsigned long long)tokens, (unsigned long long)p->data_tokens);
    if (p->total_steps && p->total_steps != (uint64_t)o->steps && p->step < (uint64_t)o->steps) {
        int step = (int)p->step;
        printf("note: the checkpoint's run planned %llu steps, this one %d: the learning-rate schedule is "
               "stretched, so the rate at step %d is %.3e instead of %.3e\n",
               (unsigned long long)p->total_steps, o->steps, step + 1,
               lr_at_step(step, o->steps, o->warmup, o->lr, o->min_lr_frac),
               lr_at_step(step, (int)p->total_steps, o->warmup, o->lr, o->min_lr_frac));
    }
}

/* The loss scaler where the checkpoint left it: the skip count always (AdamW's t continues from
 * it), and a dynamic scaler's scale and clean-step count when this run scales dynamically too
 * (--loss-scale-init is then not used); a checkpoint of an older version recorded none. */
static void resume_loss_scaler(Trainer *tr, const TrainProgress *p) {
    LossScaler *ls = &tr->scaler;
    if (p->loss_scale_mode == 0) {
        if (ls->mode == LOSS_SCALE_DYNAMIC)
            printf("note: the checkpoint records no loss scaler (an older version): the scale starts at %g\n", ls->scale);
        return;
    }
    ls->skipped = p->loss_scale_skipped;
    LossScaleMode then = (LossScaleMode)(p->loss_scale_mode - 1);
    if (then == LOSS_SCALE_DYNAMIC && ls->mode == LOSS_SCALE_DYNAMIC) {
        ls->scale = p->loss_scale;
        ls->clean = (int)p->loss_scale_clean;
        ls->last_scale = ls->scale;
    } else if (then != ls->mode) {
        printf("note: the checkpoint's run had loss scaling %s, this one %s\n", loss_scale_mode_name(then),
               loss_scale_mode_name(ls->mode));
    }
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
    free(params);
    if (!resume_state) return;
    float *mom = (float *)malloc(n * sizeof(float)), *var = (float *)malloc(n * sizeof(float));
    TrainProgress p;
    if (!mom || !var) fail("out of host memory for the optimizer state");
    if (checkpoint_load_state(resume_state, n, mom, var, &p, err, sizeof err) != 0) fail("%s", err);
    tr->be->set_adam_state(tr->model, mom, var);
    loader_seek(&tr->train_loader, p.loader_epoch, loader_step_for(tr, &p));
    tr->start_step = (int)p.step;
    resume_loss_scaler(tr, &p);
    free(mom);
    free(var);
}

/* Rank and world from the launcher; rank 0 alone prints. */
static void setup_dist(Trainer *tr) {
    char err[512];
    const Options *o = &tr->opt;
    if (tr->dist.world > 1 && o->gpus > 1 && o->gpus != tr->dist.world)
        fail("--gpus %d but the launcher (%s) started a world of %d", o->gpus, tr->dist.launcher, tr->dist.world);
    if (tr->dist.world == 1) {
        if (o->zero) printf("note: --zero %d has no effect in one process\n", o->zero);
        return;
    }
    (void)err;
    if (tr->dist.rank != 0 && !freopen("/dev/null", "w", stdout)) /* rank 0 alone prints */
        fail("cannot silence stdout of rank %d", tr->dist.rank);
}

void trainer_launch_workers_if_asked(Trainer *tr, char **argv) {
    const Options *o = &tr->opt;
    char why[256] = "", err[512];
    if (dist_from_env(&tr->dist, err, sizeof err) != 0) fail("%s", err);
    g_rank = tr->dist.rank;
    g_world = tr->dist.world;
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

/* After the backend is chosen: this rank's GPU, and the NCCL id through the rendezvous. */
static void setup_dist_device(Trainer *tr) {
    char err[512];
    if (tr->dist.world <= 1) return;
    if (!tr->gpu) fail("training on %d processes needs the CUDA backend (got %s)", tr->dist.world, tr->be->name);
    if (tr->gpu->select_device(tr->dist.local_rank, err, sizeof err) != 0) fail("%s", err);
    if (tr->dist.rank == 0 && tr->gpu->nccl_unique_id(tr->nccl_id, err, sizeof err) != 0) fail("%s", err);
    if (dist_rendezvous(&tr->dist, tr->nccl_id, tr->opt.dist_timeout, err, sizeof err) != 0) fail("%s", err);
}

/* The checkpoint to resume, if any (read only: nothing is written yet). */
static void find_resume_checkpoint(Trainer *tr) {
    const Options *o = &tr->opt;
    tr->resume_model[0] = tr->resume_state[0] = '\0';
    if (o->resume && !o->checkpoint_dir) fail("--resume needs --checkpoint-dir DIR");
    if (!o->checkpoint_dir) return;
    if (!o->resume) {
        long highest = checkpoint_highest(o->checkpoint_dir);
        if (highest >= 0)
            fail("--checkpoint-dir %s already holds checkpoints up to step %ld: pass --resume to continue "
                 "them, or choose another folder", o->checkpoint_dir, highest);
        return;
    }
    long step;
    char warn[2048], err[1024];
    int r = checkpoint_find_resume(o->checkpoint_dir, &step, tr->resume_model, tr->resume_state,
                                   sizeof tr->resume_model, warn, sizeof warn, err, sizeof err);
    if (r < 0) fail("%s", err);
    if (r == 1) {
        printf("note: no checkpoint in %s; starting from scratch\n", o->checkpoint_dir);
        tr->resume_model[0] = tr->resume_state[0] = '\0';
        return;
    }
    if (warn[0]) fprintf(stderr, "warning: %s\n", warn);
    if (o->init)
        fail("--init %s and --resume: the checkpoint at step %ld in %s holds the weights; drop --init",
             o->init, step, o->checkpoint_dir);
}

/* --log with --resume keeps the records up to the resumed step and drops the rest (a run that
 * was stopped after its last checkpoint logged steps that the resumed run takes again), and a
 * record cut short by a crash. Written to a temporary file and renamed. */
static void trim_log_for_resume(const char *path, int step) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return;
    FILE *in = fopen(path, "rb");
    if (!in) fail("cannot read log file %s: %s", path, strerror(errno));
    AtomicFile rewrite;
    FILE *out = atomic_open(&rewrite, path);
    if (!out) fail("cannot rewrite log file %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int dropped = 0;
    while ((len = getline(&line, &cap, in)) > 0) {
        int complete = line[len - 1] == '\n' && line[0] == '{' && len >= 2 && line[len - 2] == '}';
        const char *s = strstr(line, "\"step\":");
        int past = s && atoi(s + 7) > step;
        if (!complete || past) {
            dropped++;
            continue;
        }
        fwrite(line, 1, (size_t)len, out);
    }
    free(line);
    fclose(in);
    if (!dropped) { /* nothing past the resumed step: the log stays as it is */
        atomic_abandon(&rewrite);
        return;
    }
    if (atomic_commit(&rewrite) != 0) fail("cannot rewrite log file %s: %s", path, strerror(errno));
    printf("note: dropped %d record(s) of %s past the resumed step %d\n", dropped, path, step);
}

static void open_log(Trainer *tr) {
    const Options *o = &tr->opt;
    if (!o->log || tr->dist.rank != 0) return;
    if (o->resume && tr->resume_model[0]) trim_log_for_resume(o->log, tr->start_step);
    if (!(tr->log = fopen(o->log, o->resume ? "a" : "w")))
        fail("cannot write log file %s: %s", o->log, strerror(errno));
    /* one write() a record: a record is either whole in the file or absent */
    setvbuf(tr->log, NULL, _IOFBF, 1 << 16);
}


/* A record written and flushed, or the run stops: a log that silently loses records is worse
 * than no log. */
static void log_record(Trainer *tr, const char *fmt, ...) {
    if (!tr->log) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(tr->log, fmt, ap);
    va_end(ap);
    if (fflush(tr->log) != 0 || ferror(tr->log))
        fail("cannot write log file %s: %s", tr->opt.log, strerror(errno));
}

/* The run's configuration as the log's record of type "run" (one per start, also on resume). */
static void log_run(Trainer *tr) {
    const Options *o = &tr->opt;
    const GPT2Config *c = &tr->config;
    const ModelOptions *m = &tr->mopt;
    char sep[6 * DOC_SEP_MAX + 16] = "null";
    if (m->doc_sep.len > 0) {
        sep[0] = '"';
        doc_sep_json(&m->doc_sep, sep + 1, sizeof sep - 2);
        strcat(sep, "\"");
    }
    log_record(tr, "{\"type\":\"run\",\"start_step\":%d,\"steps\":%d,\"backend\":\"%s\",\"precision\":\"%s\","
               "\"attn\":\"%s\",\"mask\":\"%s\",\"window\":%d,\"doc_sep\":%s,\"doc_positions\":%s,\"layers\":%d,"
               "\"heads\":%d,\"kv_heads\":%d,\"channels\":%d,\"vocab\":%d,\"pos\":\"%s\",\"batch\":%d,\"seq_len\":%d,"
               "\"grad_accum\":%d,\"gpus\":%d,\"cuda_graphs\":%s,\"recompute\":\"%s\",\"keep_layers\":%d,\"loss_scaling\":\"%s\",\"loss_scale_window\":%d,"
               "\"matmul\":\"%s\"}\n",
               tr->start_step, o->steps, tr->be->name, precision_name(m->precision), attn_kernel_name(m->attn),
               attn_mask_name(m->mask), m->attn_window, sep,
               m->doc_sep.len > 0 && m->doc_positions ? "true" : "false", c->num_layers, c->num_heads,
               gpt2_kv_heads(c), c->channels, c->vocab_size, gpt2_pos_name(c->pos), o->batch, o->seq_len,
               o->grad_accum, tr->dist.world, tr->gpu && m->cuda_graphs ? "true" : "false",
               tr->gpu ? recompute_name(m->recompute) : "none", tr->gpu ? m->keep_layers : 0, loss_scale_mode_name(tr->scaler.mode), tr->scaler.window,
               m->matmul_fp8 ? "fp8" : "bf16");
}

static void print_header(const Trainer *tr) {
    const Options *o = &tr->opt;
    const GPT2Config *c = &tr->config;
    if (tr->gpu) {
        char name[256] = "?";
        tr->gpu->device_name(name, sizeof name);
        printf("gpu: %s, peak %.0f TFLOP/s (%s) for MFU%s\n", name, tr->peak_flops / 1e12,
               precision_name(tr->mopt.precision), tr->peak_flops > 0 ? "" : " -- unknown GPU: pass --peak-tflops");
    }
    printf("model: %d layers, %d heads", c->num_layers, c->num_heads);
    if (gpt2_kv_heads(c) != c->num_heads) printf(" (%d K/V heads)", gpt2_kv_heads(c));
    printf(", %d channels, vocab %d (padded %d), max seq %d, %s positions: %.2fM parameters\n", c->channels,
           c->vocab_size, c->padded_vocab_size, c->max_seq_len, gpt2_pos_name(c->pos), gpt2_num_params(c) / 1e6);
    int docs = tr->mopt.doc_sep.len > 0;
    if (tr->mopt.attn_window > 0 || docs) {
        char sep[4 * DOC_SEP_MAX + 16];
        doc_sep_describe(&tr->mopt.doc_sep, sep, sizeof sep);
        printf("attention:");
        if (tr->mopt.attn_window > 0) printf(" sliding window of %d keys%s", tr->mopt.attn_window, docs ? "," : "");
        if (docs)
            printf(" packed documents, each starting at %s%s", sep,
                   tr->mopt.doc_positions ? " (positions restart at each)" : "");
        printf("\n");
    }
    /* the GPU's switches: graphs and TF32 always, the measuring ones when set */
    char gpu_set[256] = "";
    if (tr->gpu) {
        const ModelOptions *mo = &tr->mopt;
        int n = snprintf(gpu_set, sizeof gpu_set, ", cuda graphs %s, tf32 %s, recompute %s", mo->cuda_graphs ? "on" : "off",
                         mo->tf32 ? "on" : "off", recompute_name(mo->recompute));
        if (mo->keep_layers && mo->recompute != RECOMPUTE_NONE)
            n += snprintf(gpu_set + n, sizeof gpu_set - n, " (the last %d layers keep theirs)", mo->keep_layers);
        if (mo->logits_chunk_rows) n += snprintf(gpu_set + n, sizeof gpu_set - n, ", logits chunk %d", mo->logits_chunk_rows);
        if (!mo->matmul_fusion) n += snprintf(gpu_set + n, sizeof gpu_set - n, ", matmul fusion off");
        if (mo->matmul_fp8) n += snprintf(gpu_set + n, sizeof gpu_set - n, ", matmul fp8 (block linears; lm head bf16)");
        if (mo->profile) snprintf(gpu_set + n, sizeof gpu_set - n, ", profile on");
    }
    /* memeff's fp32 runs on TF32 tensor cores when TF32 is on (attention/memeff.cu) */
    const int attn_tf32 = tr->gpu && tr->mopt.attn == ATTN_MEMEFF && tr->mopt.precision == PRECISION_FP32 && tr->mopt.tf32;
    printf("train: %s backend, %s, attention %s%s, mask %s, B=%d T=%d grad-accum %d, %d steps from %d%s\n",
           tr->be->name, precision_name(tr->mopt.precision), attn_kernel_name(tr->mopt.attn), attn_tf32 ? " (tf32)" : "",
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
    const LossScaler *ls = &tr->scaler;
    if (ls->mode == LOSS_SCALE_FIXED)
        printf("loss scale: fixed %g (a step with inf/NaN gradients is skipped)\n", ls->scale);
    else if (ls->mode == LOSS_SCALE_DYNAMIC)
        printf("loss scale: dynamic, %g%s, halved at each step with inf/NaN gradients (skipped), doubled after %d "
               "clean steps\n", ls->scale, tr->start_step > 0 ? " now" : " at first", ls->window);
    printf("data: %s (%zu tokens), validation: %s\n", tr->data.train.name, tr->data.train.num_tokens,
           tr->data.val_is_separate ? tr->data.val.name : "5% split of the training data");
    if (tr->resume_model[0]) printf("resume: %s (step %d)\n", tr->resume_model, tr->start_step);
    fflush(stdout);
}

void trainer_setup(Trainer *tr, char **argv) {
    char err[512];
    Options *o = &tr->opt;
    setup_dist(tr);
    find_resume_checkpoint(tr);
    const char *resume_model = tr->resume_model[0] ? tr->resume_model : NULL;
    const char *resume_state = tr->resume_state[0] ? tr->resume_state : NULL;
    check_output_is_no_input("--log", o->log, o, resume_model, resume_state);
    check_output_is_no_input("--save-model", o->save_model, o, resume_model, resume_state);
    if (o->save_model && o->log && strcmp(o->save_model, o->log) == 0)
        fail("--save-model and --log name the same file %s", o->log);

    if (trainer_data_open(o, &tr->data, err, sizeof err) != 0) fail("%s", err);
    setup_tokenizer(tr);
    tr->config = choose_config(tr, resume_model);
    if (resume_state) {
        TrainProgress p;
        if (checkpoint_load_state(resume_state, gpt2_num_params(&tr->config), NULL, NULL, &p, err, sizeof err) != 0)
            fail("%s", err);
        apply_resume_progress(tr, &p);
        if (o->seq_len > tr->config.max_seq_len && tr->config.pos != GPT2_POS_ALIBI)
            fail("--seq-len %d is over the model's maximum sequence length %d", o->seq_len, tr->config.max_seq_len);
    }
    if (trainer_choose_backend(o, &tr->be, err, sizeof err) != 0) fail("%s", err);
    tr->gpu = tr->be == &cpu_backend ? NULL : cuda_extras();
    setup_dist_device(tr);
    setup_model_options(tr);
    setup_gpu(tr);
    setup_loaders(tr);
    check_host_memory(tr);
    tr->model = tr->be->create(&tr->mopt, err, sizeof err);
    if (!tr->model) fail("%s", err);
    tr->inputs = (int *)malloc((size_t)o->batch * o->seq_len * sizeof(int));
    tr->targets = (int *)malloc((size_t)o->batch * o->seq_len * sizeof(int));
    if (!tr->inputs || !tr->targets) fail("out of host memory for a %d x %d batch", o->batch, o->seq_len);
    load_initial_state(tr, resume_model, resume_state);
    if (tr->start_step > o->steps) fail("the checkpoint is at step %d, past --steps %d", tr->start_step, o->steps);

    /* every input is checked: now the outputs */
    if (o->checkpoint_dir && tr->dist.rank == 0) {
        if (checkpoint_dir_ready(o->checkpoint_dir, err, sizeof err) != 0) fail("%s", err);
        int removed = checkpoint_clean_temporaries(o->checkpoint_dir, err, sizeof err);
        if (removed < 0) fail("%s", err);
        if (removed > 0)
            printf("note: removed %d temporary file(s) an interrupted checkpoint write left in %s\n", removed,
                   o->checkpoint_dir);
    }
    if (o->save_model && tr->dist.rank == 0) { /* can it be written? (nothing is left behind) */
        AtomicFile probe;
        if (!atomic_open(&probe, o->save_model)) fail("--save-model: cannot write %s: %s", o->save_model, strerror(errno));
        atomic_abandon(&probe);
    }
    open_log(tr);
    log_run(tr);
    print_header(tr);
    (void)argv;
}

/* ==== a training run: steps, reports, checkpoints ========================================= */

static void next_train_batch(void *ctx, int *inputs, int *targets) {
    loader_next((DataLoader *)ctx, inputs, targets);
}

float trainer_train_step(Trainer *tr, int step, float *norm_out, float *lr_out) {
    const Options *o = &tr->opt;
    StepShape shape = {o->batch, o->seq_len, o->grad_accum, tr->dist.world, o->grad_clip};
    AdamWStep s;
    s.lr = lr_at_step(step, o->steps, o->warmup, o->lr, o->min_lr_frac);
    s.beta1 = o->beta1;
    s.beta2 = o->beta2;
    s.eps = o->eps;
    s.weight_decay = o->weight_decay;
    s.t = step + 1 - (int)tr->scaler.skipped; /* AdamW counts the updates applied (loss_scale.h) */
    *lr_out = s.lr;
    return trainer_step(tr->be, tr->model, &shape, next_train_batch, &tr->train_loader, tr->inputs, tr->targets,
                        &s, &tr->scaler, norm_out);
}

static double bits_per_byte(const Trainer *tr, double loss) {
    return loss / log(2.0) / tr->bytes_per_token;
}

/* A number for JSON: NaN and infinities are not JSON, so they are written as null. */
static const char *json_number(char *buf, size_t n, const char *fmt, double v) {
    if (!isfinite(v)) return "null";
    snprintf(buf, n, fmt, v);
    return buf;
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

void trainer_report_validation(Trainer *tr, int step) {
    double loss = evaluate(tr);
    char bpb[32];
    printf("val   %6d | loss %.4f | bpb %.4f\n", step, loss, bits_per_byte(tr, loss));
    log_record(tr, "{\"type\":\"val\",\"step\":%d,\"loss\":%.6f,\"bpb\":%s}\n", step, loss,
               json_number(bpb, sizeof bpb, "%.6f", bits_per_byte(tr, loss)));
}

static void print_byte(unsigned char c) {
    putchar(c == '\n' || c == '\t' || c >= 32 ? c : '?');
}

/* Prints a sampled token: a byte, the bytes of a BPE token, or <id> with no vocabulary. */
static void print_token(int token, void *ctx) {
    const Trainer *tr = (const Trainer *)ctx;
    if (tr->data.train.kind == DATASET_BYTES) {
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
    if (tr->data.train.kind == DATASET_BYTES) {
        for (size_t i = 0; i < n; i++) tokens[count++] = (unsigned char)p[i];
    } else if (tr->have_tok && n > 0) {
        uint16_t *ids = (uint16_t *)malloc(n * sizeof(uint16_t));
        if (ids) count = (int)tokenizer_encode(&tr->tok, (const uint8_t *)p, n, ids);
        for (int i = 0; i < count; i++) tokens[i] = ids[i];
        free(ids);
    }
    if (count == 0) tokens[count++] = 0;
    for (int i = 0; i < count; i++)
        if (tokens[i] >= tr->config.vocab_size) tokens[i] = 0;
    return count;
}

void trainer_print_sample(Trainer *tr, int step) {
    const Options *o = &tr->opt;
    if (o->sample_len <= 0 || tr->dist.rank != 0) return;
    int *tokens = (int *)malloc((strlen(o->prompt) + o->sample_len + 1) * sizeof(int));
    if (!tokens) return;
    int n = encode_prompt(tr, tokens);
    printf("sample %5d | %s", step, o->prompt);
    generate(tr->be, tr->model, tokens, n, o->sample_len, o->seq_len, tr->config.vocab_size, o->temperature,
             o->top_k, o->seed + (uint64_t)step, print_token, tr);
    printf("\n");
    free(tokens);
}

/* Collective with ZeRO-1 (the sharded state is gathered), so every rank calls it; rank 0 writes. */
void trainer_save_checkpoint(Trainer *tr, int step) {
    char err[512];
    if (tr->dist.rank != 0 && !(tr->dist.world > 1 && tr->opt.zero)) return;
    size_t n = gpt2_num_params(&tr->config);
    float *params = (float *)malloc(n * sizeof(float));
    float *mom = (float *)malloc(n * sizeof(float)), *var = (float *)malloc(n * sizeof(float));
    if (!params || !mom || !var) fail("out of host memory writing a checkpoint");
    tr->be->get_params(tr->model, params);
    tr->be->get_adam_state(tr->model, mom, var);
    if (tr->dist.rank == 0) {
        TrainProgress p;
        memset(&p, 0, sizeof p);
        p.step = (uint64_t)step;
        p.loader_epoch = tr->train_loader.epoch;
        p.loader_step = tr->train_loader.step_in_epoch;
        p.seed = tr->opt.seed;
        p.windows_per_step = (uint64_t)tr->opt.batch * tr->dist.world;
        p.seq_len = (uint64_t)tr->opt.seq_len;
        p.shuffled = tr->opt.sequential ? 2 : 1;
        p.total_steps = (uint64_t)tr->opt.steps;
        p.data_tokens = tr->data.train_end - tr->data.train_begin;
        p.loss_scale_mode = (uint64_t)tr->scaler.mode + 1;
        p.loss_scale = tr->scaler.scale;
        p.loss_scale_clean = (uint64_t)tr->scaler.clean;
        p.loss_scale_skipped = tr->scaler.skipped;
        if (checkpoint_save(tr->opt.checkpoint_dir, &tr->config, params, mom, var, &p, err, sizeof err) != 0)
            fail("%s", err);
        printf("checkpoint %d written to %s\n", step, tr->opt.checkpoint_dir);
    }
    free(params);
    free(mom);
    free(var);
}

void trainer_save_model(Trainer *tr) {
    char err[512];
    const Options *o = &tr->opt;
    if (!o->save_model || (tr->dist.rank != 0 && !(tr->dist.world > 1 && o->zero))) return;
    size_t n = gpt2_num_params(&tr->config);
    float *params = (float *)malloc(n * sizeof(float));
    if (!params) fail("out of host memory writing %s", o->save_model);
    tr->be->get_params(tr->model, params); /* collective with ZeRO-1 */
    if (tr->dist.rank == 0) {
        if (model_file_save_as(o->save_model, &tr->config, params, o->save_version, err, sizeof err) != 0)
            fail("%s", err);
        printf("model written to %s (llm.c model file version %d)\n", o->save_model,
               model_file_version_for(&tr->config, o->save_version));
    }
    free(params);
}

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

void trainer_log_step(Trainer *tr, int step, float loss, float norm, float lr, double ms) {
    const Options *o = &tr->opt;
    const LossScaler *ls = &tr->scaler;
    int world = tr->dist.world;
    double tokens = (double)o->batch * o->seq_len * o->grad_accum * world; /* all ranks' */
    double tok_per_s = tokens / (ms / 1000.0);
    size_t mem = tr->be->memory_in_use(tr->model), dev_used = device_memory_used(tr);
    double mfu = mfu_of(tr, tok_per_s / world);
    if (!o->quiet) {
        printf("step %5d/%d | loss %.4f | bpb %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s", step + 1,
               o->steps, loss, bits_per_byte(tr, loss), lr, norm, ms, tok_per_s);
        if (ls->mode != LOSS_SCALE_OFF) /* the scale this step ran with; a skipped step updated nothing */
            printf(" | scale %g%s", ls->last_scale, ls->last_skipped ? " | skipped (inf/NaN gradients)" : "");
        if (tr->gpu)
            printf(" | %d GPU%s | MFU %.1f%% | mem %.2f GiB (device %.2f GiB)%s", world, world > 1 ? "s" : "",
                   100.0 * mfu, mem / GIB, dev_used / GIB, world > 1 ? " per GPU" : "");
        printf("\n");
    }
    char bpb[32], nrm[32];
    log_record(tr, "{\"type\":\"step\",\"step\":%d,\"loss\":%.6f,\"bpb\":%s,\"lr\":%.6e,\"norm\":%s,\"ms\":%.3f,"
               "\"tok_per_s\":%.1f,\"mfu\":%.4f,\"mem_bytes\":%zu,\"device_used_bytes\":%zu,\"gpus\":%d,"
               "\"loss_scale\":%.9g,\"skipped\":%s}\n",
               step + 1, loss, json_number(bpb, sizeof bpb, "%.6f", bits_per_byte(tr, loss)), lr,
               json_number(nrm, sizeof nrm, "%.6f", norm), ms, tok_per_s, mfu, mem, dev_used, world,
               ls->last_scale, ls->last_skipped ? "true" : "false");
}

/* ==== signals ============================================================================== */

static volatile sig_atomic_t g_stop_signal = 0;

static void on_stop_signal(int sig) {
    if (g_stop_signal) _exit(128 + sig); /* the second one: stop now */
    g_stop_signal = sig;
    static const char msg[] = "\nnote: stopping after this step (signal again to stop at once)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
}

void trainer_catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int trainer_stop_requested(Trainer *tr) {
    int sig = (int)g_stop_signal;
    if (tr->dist.world > 1) { /* every rank stops after the same step */
        double any = tr->be->mean_over_ranks(tr->model, sig ? 1.0 : 0.0);
        if (any > 0 && !sig) sig = SIGTERM;
    }
    return sig;
}

/* ==== the end ============================================================================== */

void trainer_record_step_time(Timing *t, int steps_done, double ms) {
    if (steps_done < 3) return;
    t->ms += ms;
    t->steps++;
}

void trainer_print_summary(Trainer *tr, const Timing *t) {
    const Options *o = &tr->opt;
    if (t->steps == 0 || tr->dist.rank != 0) return;
    int world = tr->dist.world;
    double ms = t->ms / t->steps;
    double tok_per_s = (double)o->batch * o->seq_len * o->grad_accum * world / (ms / 1000.0);
    double mfu = mfu_of(tr, tok_per_s / world);
    size_t peak = tr->be->memory_in_use(tr->model);
    printf("summary: %.2f ms/step, %.0f tok/s over %d steps (after 3 warm-up steps)", ms, tok_per_s, t->steps);
    if (tr->gpu) printf(", MFU %.1f%%, peak memory %.2f GiB%s", 100.0 * mfu, peak / GIB, world > 1 ? " per GPU" : "");
    if (world > 1) printf(", %d GPUs", world);
    printf("\n");
    log_record(tr, "{\"type\":\"summary\",\"ms_per_step\":%.3f,\"tok_per_s\":%.1f,\"mfu\":%.4f,\"peak_mem_bytes\":%zu,"
               "\"gpus\":%d}\n", ms, tok_per_s, mfu, peak, world);
}

void trainer_teardown(Trainer *tr) {
    tr->be->destroy(tr->model);
    loader_free(&tr->train_loader);
    loader_free(&tr->val_loader);
    trainer_data_close(&tr->data);
    free(tr->inputs);
    free(tr->targets);
    free(tr->dense_bias);
    if (tr->have_tok) tokenizer_free(&tr->tok);
    if (tr->log && fclose(tr->log) != 0) fail("cannot write log file %s: %s", tr->opt.log, strerror(errno));
    tr->log = NULL;
}
