/* train/options.c: the command line. One table lists every option: its long and short name,
 * type, range and help; parsing, range checks and --help all read that table. */
#include "train/options.h"

#include "attention/attention.h"
#include "model/backend.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRAIN_GPT2_VERSION "0.1.0"

typedef enum { OPT_STR, OPT_INT, OPT_U64, OPT_FLOAT, OPT_DOUBLE, OPT_FLAG } OptKind;

typedef struct {
    const char *name;
    char short_name;    /* 0 = none */
    OptKind kind;
    size_t offset;      /* into Options */
    double min, max;    /* numeric range, inclusive */
    const char *arg;    /* how the value looks, for --help */
    const char *help;
} OptSpec;

#define F(field) offsetof(Options, field)
static const OptSpec SPECS[] = {
    {"data", 'd', OPT_STR, F(data), 0, 0, "FILES", "training data: a file, a quoted glob ('dir/train_*.bin') or a comma-separated list, all raw bytes or all llm.c token files, as one dataset (default: data/enwik8/enwik8.train if present, else the embedded corpus)"},
    {"val-data", 0, OPT_STR, F(val_data), 0, 0, "FILES", "validation data, as --data (default: data/enwik8/enwik8.val with enwik8, else the 90%-95% slice of the training data, which then trains on its first 90%)"},
    {"vocab-file", 0, OPT_STR, F(vocab_file), 0, 0, "FILE", "BPE vocabulary of token-file data, to print samples and bits per byte (default: none)"},
    {"sequential", 0, OPT_FLAG, F(sequential), 0, 1, NULL, "read the training windows in order, not in the default seeded random order (llm.c's default too) that keeps a first run's loss curve smooth"},
    {"init", 'i', OPT_STR, F(init), 0, 0, "FILE", "start from an llm.c GPT-2 model file (default: GPT-2 initialisation)"},
    {"model", 'm', OPT_STR, F(model), 0, 0, "PRESET", "gpt2, gpt2-medium, gpt2-large, gpt2-xl or dN (N layers)"},
    {"layers", 0, OPT_INT, F(layers), 1, 4096, "N", "number of layers (default: the preset's)"},
    {"heads", 0, OPT_INT, F(heads), 1, 4096, "N", "attention heads, dividing channels (default: the preset's)"},
    {"channels", 0, OPT_INT, F(channels), 1, 65536, "N", "model width (default: the preset's)"},
    {"vocab", 0, OPT_INT, F(vocab), 1, 65536, "N", "vocabulary size (default 256, or larger if the data holds larger token ids)"},
    {"kv-heads", 0, OPT_INT, F(kv_heads), 1, 4096, "N", "key/value heads, dividing --heads: grouped-query attention (1 = multi-query; default: --heads)"},
    {"pos", 0, OPT_STR, F(pos), 0, 0, "KIND", "positions: learned (GPT-2's table) or alibi (biases computed from per-head slopes, no table, so a model trained at one T runs at a longer one)"},
    {"max-seq-len", 0, OPT_INT, F(max_seq_len), 1, 1 << 20, "N", "positions in the model (default: the preset's 1024, at least --seq-len)"},
    {"batch", 'b', OPT_INT, F(batch), 1, 1 << 20, "B", "sequences per micro-batch"},
    {"seq-len", 't', OPT_INT, F(seq_len), 1, 1 << 20, "T", "tokens per sequence"},
    {"grad-accum", 'g', OPT_INT, F(grad_accum), 1, 1 << 20, "N", "micro-batches per optimizer step"},
    {"steps", 'n', OPT_INT, F(steps), 0, INT_MAX, "N", "optimizer steps"},
    {"lr", 'l', OPT_FLOAT, F(lr), 0, 10, "X", "peak learning rate"},
    {"min-lr-frac", 0, OPT_FLOAT, F(min_lr_frac), 0, 1, "X", "cosine decay ends at lr * X"},
    {"warmup", 0, OPT_INT, F(warmup), 0, INT_MAX, "N", "linear warm-up steps"},
    {"weight-decay", 0, OPT_FLOAT, F(weight_decay), 0, 10, "X", "AdamW decoupled weight decay (matrices and embeddings only)"},
    {"grad-clip", 0, OPT_FLOAT, F(grad_clip), 0, 1e9, "X", "clip the global gradient norm to X (0 = off)"},
    {"beta1", 0, OPT_FLOAT, F(beta1), 0, 0.999999, "X", "AdamW beta1"},
    {"beta2", 0, OPT_FLOAT, F(beta2), 0, 0.999999, "X", "AdamW beta2"},
    {"eps", 0, OPT_FLOAT, F(eps), 1e-30, 1, "X", "AdamW epsilon"},
    {"seed", 's', OPT_U64, F(seed), 0, 1.8e19, "N", "seed of initialisation, shuffling and sampling"},
    {"attn", 'a', OPT_STR, F(attn), 0, 0, "KERNEL", "attention kernel: {kernels} or auto (the fastest that runs the configuration)"},
    {"mask", 0, OPT_STR, F(mask), 0, 0, "KIND", "attention mask: causal, none, or dense (a T x T additive bias of -inf above the diagonal)"},
    {"attn-window", 0, OPT_INT, F(attn_window), 0, 1 << 30, "W", "sliding-window attention: query i sees keys (i - W, i] (0 = the whole causal context)"},
    {"doc-sep", 0, OPT_STR, F(doc_sep), 0, 0, "SEP", "packed documents: a document starts at each occurrence of SEP, a token id (a byte value for byte data, e.g. 10; GPT-2's 50256 in token files) or, for byte data, a byte string such as '<page>' (enwik8's pages; escapes \\n \\t \\\\ \\xHH), and attention never crosses into another document (default: none; bench: the docs masks' separator, default '<page>')"},
    {"doc-positions", 0, OPT_FLAG, F(doc_positions), 0, 1, NULL, "with --doc-sep: positions restart at 0 at each document"},
    {"precision", 'p', OPT_STR, F(precision), 0, 0, "P", "fp32, bf16 or fp16 (GPU: 16-bit activations and matmuls, fp32 master weights and AdamW state; fp16 with loss scaling) (default: bf16 on a GPU of sm80 or newer, else fp32)"},
    {"loss-scale", 0, OPT_STR, F(loss_scale), 0, 0, "dynamic|S", "multiply the loss's gradient by S before backward and unscale before clipping and AdamW; a step with inf/NaN gradients is skipped. dynamic: S starts at --loss-scale-init, halves at each such step and doubles after --loss-scale-window clean ones; a number: that fixed S (default: dynamic with fp16, none with fp32 and bf16)"},
    {"loss-scale-init", 0, OPT_DOUBLE, F(loss_scale_init), 5.9604644e-08, 1.7014119e+38, "S", "--loss-scale dynamic: the first scale, 2^-24 to 2^127"},
    {"loss-scale-window", 0, OPT_INT, F(loss_scale_window), 1, INT_MAX, "N", "--loss-scale dynamic: consecutive clean steps before the scale doubles"},
    {"device", 0, OPT_STR, F(device), 0, 0, "D", "auto, cpu or cuda"},
    {"threads", 0, OPT_INT, F(threads), 0, 4096, "N", "CPU threads (0 = OpenMP's default)"},
    {"no-linear-bias", 0, OPT_FLAG, F(no_linear_bias), 0, 1, NULL, "linear layers without bias (biases held at zero, not trained), as in the flash-blog models"},
    {"recompute", 0, OPT_STR, F(recompute), 0, 0, "MODE", "GPU: what backward recomputes instead of keeping from forward: none, gelu (each layer's GELU output, from its kept input, as llm.c's recompute 1) or all (also the two LayerNorm outputs per layer); each trades memory for an elementwise pass per layer, run beside the backward of the layer after"},
    {"keep-layers", 0, OPT_INT, F(keep_layers), 0, 1 << 20, "N", "GPU: the last N layers keep what --recompute would recompute (their GELU output; with all also their LayerNorm outputs): N layers' worth of that memory for their elementwise passes; N >= the layer count is --recompute none (default: 0)"},
    {"no-cuda-graph", 0, OPT_FLAG, F(no_cuda_graph), 0, 1, NULL, "GPU: run every step eagerly; by default one GPU captures the step as a CUDA graph and replays it (graphs are off with several GPUs, whose gradient sync differs between micro-batches, and with --profile)"},
    {"peak-tflops", 0, OPT_DOUBLE, F(peak_tflops), 0, 1e6, "X", "peak TFLOP/s for MFU (default: from the GPU model)"},
    {"no-tf32", 0, OPT_FLAG, F(no_tf32), 0, 1, NULL, "fp32 matmuls in full fp32, not on TF32 tensor cores (for exact comparisons)"},
    {"logits-chunk", 0, OPT_INT, F(logits_chunk), 0, 1 << 30, "N", "GPU, fp32: rows of logits computed at a time (0 = automatic: at most 256 MiB of them; bf16 and fp16 keep all rows)"},
    {"no-matmul-fusion", 0, OPT_FLAG, F(no_matmul_fusion), 0, 1, NULL, "GPU: cuBLASLt's fused epilogues (bias, GELU) off, separate kernels instead (for measuring the fusion)"},
    {"matmul", 0, OPT_STR, F(matmul), 0, 0, "bf16|fp8", "GPU: the GEMMs of the four linear layers of each block (qkv, attention projection, fc, fc projection), forward and backward: bf16, or fp8 through cuBLASLt (E4M3 weights and activations, E5M2 output gradients, per-tensor scales from a 16-step amax history, fp32 accumulation, bf16 outputs; needs --precision bf16 and a GPU of compute capability 8.9 or newer); the lm head, the fc projection's input gradient (its dGELU epilogue is faster in bf16) and everything else stay bf16"},
    {"profile", 0, OPT_FLAG, F(profile), 0, 1, NULL, "GPU: CUDA event marks between the parts of each step, the per-part times printed at the end (steps not replayed as CUDA graphs; the marks cost about 1 ms a step)"},
    {"gpus", 0, OPT_INT, F(gpus), 0, 4096, "N", "data-parallel training on N GPUs of this node: starts N worker processes (default: 0 = one process, or the world of torchrun/srun/mpirun)"},
    {"zero", 0, OPT_INT, F(zero), 0, 1, "STAGE", "with several GPUs: 1 shards the AdamW state over the ranks (ZeRO stage 1), 0 = plain data parallel"},
    {"grad-comm", 0, OPT_STR, F(grad_comm), 0, 0, "T", "with several GPUs: gradients are summed over the GPUs in fp32 or bf16 (default: bf16 when training in bf16, else fp32)"},
    {"dist-timeout", 0, OPT_DOUBLE, F(dist_timeout), 1, 1e6, "S", "with several GPUs: stop when the rendezvous or a collective makes no progress for S seconds"},
    {"dp-overlap", 0, OPT_INT, F(dp_overlap), 0, 1, "0|1", "with several GPUs, plain data parallel: 1 sums the gradients per bucket of layers during backward, 0 in one all-reduce after it"},
    {"dp-bucket-layers", 0, OPT_INT, F(dp_bucket_layers), 1, 1 << 20, "K", "with several GPUs: consecutive layers per gradient bucket of --dp-overlap 1 and --zero-overlap 1"},
    {"zero-overlap", 0, OPT_INT, F(zero_overlap), 0, 1, "0|1", "with --zero 1: 1 reduces the gradients per bucket during backward, 0 in one reduce-scatter after it"},
    {"zero-gather-overlap", 0, OPT_INT, F(zero_gather_overlap), 0, 1, "0|1", "with --zero 1: 1 broadcasts the updated weights per layer, each waited for just before the next forward reads it; 0 gathers them in one all-gather after AdamW"},
    {"nccl-max-ctas", 0, OPT_INT, F(nccl_max_ctas), 0, 1024, "N", "with several GPUs: at most N CTAs for NCCL's kernels, leaving SMs to the matmuls the gradient sync overlaps (0 = NCCL's choice; NCCL_MAX_CTAS or NCCL_MAX_NCHANNELS in the environment win)"},
    {"val-every", 0, OPT_INT, F(val_every), 0, INT_MAX, "N", "validation loss every N steps (0 = only at the end)"},
    {"val-batches", 0, OPT_INT, F(val_batches), 1, INT_MAX, "N", "batches per validation"},
    {"sample-every", 0, OPT_INT, F(sample_every), 0, INT_MAX, "N", "print a sample every N steps (0 = only at the end)"},
    {"sample-len", 0, OPT_INT, F(sample_len), 0, 1 << 20, "N", "tokens per sample (0 = no samples)"},
    {"temperature", 0, OPT_FLOAT, F(temperature), 1e-6, 100, "X", "sampling temperature"},
    {"top-k", 0, OPT_INT, F(top_k), 0, 1 << 20, "K", "sample among the K likeliest tokens (0 = all)"},
    {"prompt", 0, OPT_STR, F(prompt), 0, 0, "TEXT", "text the samples continue"},
    {"checkpoint-dir", 'o', OPT_STR, F(checkpoint_dir), 0, 0, "DIR", "write checkpoints here: model_NNNNNNNN.bin (llm.c format) + state_NNNNNNNN.bin (default: none)"},
    {"checkpoint-every", 0, OPT_INT, F(checkpoint_every), 0, INT_MAX, "N", "checkpoint every N steps (0 = only at the end)"},
    {"resume", 'r', OPT_FLAG, F(resume), 0, 1, NULL, "continue from the latest checkpoint in --checkpoint-dir"},
    {"save-model", 0, OPT_STR, F(save_model), 0, 0, "FILE", "at the end, also write the model to FILE as an llm.c model file (default: none)"},
    {"save-version", 0, OPT_INT, F(save_version), 3, 5, "V", "--save-model's format: 3 (fp32, llm.c's train_gpt2.c) or 5 (bf16, llm.c's CUDA trainer); models llm.c cannot run are written as 103 / 105"},
    {"log", 0, OPT_STR, F(log), 0, 0, "FILE", "also write every step and evaluation as JSON lines (default: none)"},
    {"quiet", 'q', OPT_FLAG, F(quiet), 0, 1, NULL, "print only evaluations, samples and the summary"},
    {"bench", 0, OPT_STR, F(bench), 0, 0, "GRID", "instead of training, sweep short training runs and report tokens/sec, ms/step, peak memory and MFU: xformers-issue, flash-blog, masks or custom (default: off)"},
    {"bench-out", 0, OPT_STR, F(bench_out), 0, 0, "DIR", "bench: write results.md, results.csv, results.json and PNG charts here"},
    {"bench-attn", 0, OPT_STR, F(bench_attn), 0, 0, "LIST", "bench: attention kernels, e.g. naive,memeff,flash (default: the grid's; masks: every kernel of the registry; custom: naive,memeff,flash)"},
    {"bench-models", 0, OPT_STR, F(bench_models), 0, 0, "LIST", "bench: presets (gpt2, gpt2-medium, dN, ...) or shapes lL-cC-hH such as l6-c1024-h8; --layers/--heads/--channels/--vocab override each (default: the grid's; custom: --model)"},
    {"bench-seq-lens", 0, OPT_STR, F(bench_seq_lens), 0, 0, "LIST", "bench: context lengths, e.g. 256,1024 (default: the grid's; custom: --seq-len)"},
    {"bench-precisions", 0, OPT_STR, F(bench_precisions), 0, 0, "LIST", "bench: fp32, bf16 and/or fp16 (fp16 cells train with --loss-scale, dynamic by default) (default: the grid's; custom: --precision or the device's default)"},
    {"bench-masks", 0, OPT_STR, F(bench_masks), 0, 0, "LIST", "bench: masks, each causal, none or dense, or pieces joined by +: alibi (causal + ALiBi, no position table), window=W (causal + a window of W keys), docs (causal + documents split at --doc-sep), e.g. causal,window=1024,docs,alibi+docs (default: the grid's; custom: --mask)"},
    {"bench-batch", 0, OPT_STR, F(bench_batch), 0, 0, "B|max", "bench: micro-batch size, or max for the largest that fits in GPU memory (on the CPU: --bench-max-batch) (default: the grid's; custom: --batch)"},
    {"tokens-per-step", 0, OPT_INT, F(tokens_per_step), 1, 1 << 30, "N", "bench: N tokens per optimizer step at every context length: batch N/T, split into gradient accumulation above --bench-max-batch (default: the grid's; custom: --batch x --grad-accum)"},
    {"bench-max-batch", 0, OPT_INT, F(bench_max_batch), 1, 1 << 20, "B", "bench: largest micro-batch tried or used (default: 1024 on a GPU, 8 on the CPU)"},
    {"bench-steps", 0, OPT_INT, F(bench_steps), 1, 1000000, "N", "bench: timed training steps per cell (default: the grid's, see train/README.md)"},
    {"bench-warmup", 0, OPT_INT, F(bench_warmup), 0, 1000000, "N", "bench: untimed warm-up steps per cell (default: the grid's, see train/README.md)"},
    {"bench-quick", 0, OPT_FLAG, F(bench_quick), 0, 1, NULL, "bench: a trimmed grid with fewer steps (flash-blog: gpt2 and gpt2-medium at T = 512, 1024, 2048; masks: T = 4096)"},
    {"bench-max-seconds", 0, OPT_DOUBLE, F(bench_max_seconds), 0, 1e9, "S", "bench: stop starting cells after S seconds; the rest are recorded as skipped (0 = no limit)"},
};
#undef F
#define NUM_SPECS ((int)(sizeof SPECS / sizeof SPECS[0]))
_Static_assert(sizeof SPECS / sizeof SPECS[0] <= OPTIONS_MAX_SPECS, "raise OPTIONS_MAX_SPECS");

int options_given(const Options *o, const char *name) {
    for (int i = 0; i < NUM_SPECS; i++)
        if (strcmp(SPECS[i].name, name) == 0) return o->given[i];
    return 0;
}

/* The bench's own options (their help starts with "bench:") shape a --bench sweep and nothing
 * else: given without --bench they would be silently ignored, so they are refused. */
static int check_bench_only(const Options *o) {
    if (o->bench) return 0;
    for (int i = 0; i < NUM_SPECS; i++)
        if (o->given[i] && strncmp(SPECS[i].help, "bench:", 6) == 0) {
            fprintf(stderr, "error: --%s applies to --bench sweeps only (add --bench GRID, or drop it)\n",
                    SPECS[i].name);
            return 2;
        }
    return 0;
}

void options_defaults(Options *o) {
    memset(o, 0, sizeof *o);
    o->model = "d4";
    o->batch = 4;
    o->seq_len = 64;
    o->grad_accum = 1;
    o->steps = 200;
    o->lr = 1e-3f;
    o->min_lr_frac = 0.1f;
    o->warmup = 50;
    o->weight_decay = 0.1f;
    o->grad_clip = 1.0f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->seed = 1337;
    o->attn = "auto";
    o->mask = "causal";
    o->pos = "learned";
    o->save_version = 3;
    o->device = "auto";
    o->matmul = "bf16";
    o->recompute = recompute_name(RECOMPUTE_DEFAULT);
    o->val_every = 50;
    o->val_batches = 10;
    o->sample_len = 200;
    o->temperature = 1.0f;
    o->top_k = 40;
    o->prompt = "The ";
    o->bench_out = "bench_out";
    o->bench_warmup = -1;
    o->dist_timeout = 300;
    o->dp_overlap = 1;
    o->dp_bucket_layers = 3;
    o->loss_scale_init = 65536.0;
    o->loss_scale_window = 2000;
}

/* The default of an option as text, read from a defaulted Options. */
static void default_text(const OptSpec *s, const Options *d, char *buf, size_t n) {
    const char *base = (const char *)d + s->offset;
    switch (s->kind) {
    case OPT_STR: {
        const char *v = *(const char *const *)base;
        snprintf(buf, n, "%s", v ? v : "-");
        break;
    }
    case OPT_INT: snprintf(buf, n, "%d", *(const int *)base); break;
    case OPT_U64: snprintf(buf, n, "%llu", *(const unsigned long long *)base); break;
    case OPT_FLOAT: snprintf(buf, n, "%g", *(const float *)base); break;
    case OPT_DOUBLE: snprintf(buf, n, "%g", *(const double *)base); break;
    case OPT_FLAG: snprintf(buf, n, "off"); break;
    }
}

void options_print_help(const char *prog) {
    Options d;
    options_defaults(&d);
    printf("usage: %s [options]\n"
           "Trains GPT-2 on byte-level (or llm.c token-file) data, on the CPU or a GPU, with a\n"
           "swappable attention kernel. Every option, with its default:\n\n", prog);
    for (int i = 0; i < NUM_SPECS; i++) {
        const OptSpec *s = &SPECS[i];
        char left[64], def[64];
        char flag[4] = "   ";
        if (s->short_name) snprintf(flag, sizeof flag, "-%c,", s->short_name);
        snprintf(left, sizeof left, "%s --%s%s%s", flag, s->name, s->arg ? " " : "",
                 s->arg ? s->arg : "");
        /* "{kernels}" in a help text is the attention registry's list of kernel names */
        char help[1024];
        const char *k = strstr(s->help, "{kernels}");
        if (k) snprintf(help, sizeof help, "%.*s%s%s", (int)(k - s->help), s->help, attn_kernel_names_list(), k + 9);
        else snprintf(help, sizeof help, "%s", s->help);
        /* options whose default depends on other settings say so in their help text */
        if (strstr(help, "default")) {
            printf("  %-28s %s\n", left, help);
        } else {
            default_text(s, &d, def, sizeof def);
            printf("  %-28s %s [default: %s]\n", left, help, def);
        }
    }
    printf("  %-28s %s\n  %-28s %s\n", "-h, --help", "print this help and exit", "-V, --version",
           "print the version and exit");
}

static int parse_number(const OptSpec *s, const char *text, Options *o) {
    char *end = NULL;
    errno = 0;
    double v;
    if (s->kind == OPT_U64) {
        if (text[0] == '-') goto bad;
        unsigned long long u = strtoull(text, &end, 10);
        if (errno || end == text || *end) goto bad;
        *(unsigned long long *)((char *)o + s->offset) = u;
        return 0;
    }
    v = s->kind == OPT_INT ? (double)strtol(text, &end, 10) : strtod(text, &end);
    if (errno || end == text || *end || isnan(v)) goto bad;
    if (v < s->min || v > s->max) {
        fprintf(stderr, "error: --%s %s is out of range (expected %s from %g to %g)\n", s->name,
                text, s->kind == OPT_INT ? "an integer" : "a number", s->min, s->max);
        return 2;
    }
    if (s->kind == OPT_INT) *(int *)((char *)o + s->offset) = (int)v;
    else if (s->kind == OPT_FLOAT) *(float *)((char *)o + s->offset) = (float)v;
    else *(double *)((char *)o + s->offset) = v;
    return 0;
bad:
    fprintf(stderr, "error: --%s expects %s, got '%s'\n", s->name,
            s->kind == OPT_INT || s->kind == OPT_U64 ? "an integer" : "a number", text);
    return 2;
}

static int apply(const OptSpec *s, const char *arg, Options *o) {
    switch (s->kind) {
    case OPT_FLAG: *(int *)((char *)o + s->offset) = 1; return 0;
    case OPT_STR:
        if (!arg[0]) {
            fprintf(stderr, "error: --%s expects %s, got an empty string\n", s->name, s->arg);
            return 2;
        }
        *(const char **)((char *)o + s->offset) = arg;
        return 0;
    default: return parse_number(s, arg, o);
    }
}

int options_parse(Options *o, int argc, char **argv) {
    struct option longs[NUM_SPECS + 3];
    char shorts[3 * NUM_SPECS + 8];
    size_t ns = 0;
    shorts[ns++] = ':'; /* report a missing argument as ':' */
    for (int i = 0; i < NUM_SPECS; i++) {
        const OptSpec *s = &SPECS[i];
        longs[i] = (struct option){s->name, s->kind == OPT_FLAG ? no_argument : required_argument,
                                   NULL, 1000 + i};
        if (s->short_name) {
            shorts[ns++] = s->short_name;
            if (s->kind != OPT_FLAG) shorts[ns++] = ':';
        }
    }
    longs[NUM_SPECS] = (struct option){"help", no_argument, NULL, 'h'};
    longs[NUM_SPECS + 1] = (struct option){"version", no_argument, NULL, 'V'};
    longs[NUM_SPECS + 2] = (struct option){NULL, 0, NULL, 0};
    shorts[ns++] = 'h';
    shorts[ns++] = 'V';
    shorts[ns] = '\0';

    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        if (c == 'h') {
            options_print_help(argv[0]);
            return 1;
        }
        if (c == 'V') {
            printf("train_gpt2 %s\n", TRAIN_GPT2_VERSION);
            return 1;
        }
        if (c == '?' || c == ':') {
            const char *what = argv[optind - 1];
            if (c == ':') fprintf(stderr, "error: option %s needs a value (see --help)\n", what);
            else if (optopt) fprintf(stderr, "error: unknown option -%c (see --help)\n", optopt);
            else fprintf(stderr, "error: unknown option %s (see --help)\n", what);
            return 2;
        }
        const OptSpec *s = NULL;
        if (c >= 1000) s = &SPECS[c - 1000];
        else
            for (int i = 0; i < NUM_SPECS; i++)
                if (SPECS[i].short_name == c) s = &SPECS[i];
        if (!s) return 2;
        int rc = apply(s, optarg, o);
        if (rc) return rc;
        o->given[s - SPECS] = 1;
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s' (options start with --; see --help)\n",
                argv[optind]);
        return 2;
    }
    RecomputeMode recompute;
    if (recompute_from_name(o->recompute, &recompute) != 0) {
        fprintf(stderr, "error: --recompute expects none, gelu or all, got '%s'\n", o->recompute);
        return 2;
    }
    if (o->save_version == 4) {
        fprintf(stderr, "error: --save-version expects 3 (fp32) or 5 (bf16), got 4\n");
        return 2;
    }
    if (o->doc_positions && !o->doc_sep && !o->bench) {
        fprintf(stderr, "error: --doc-positions applies with --doc-sep SEP\n");
        return 2;
    }
    if (o->doc_positions && o->pos && strcmp(o->pos, "alibi") == 0) {
        fprintf(stderr, "error: --doc-positions restarts the learned position table; --pos alibi has none "
                "(ALiBi's distances already stay inside each document)\n");
        return 2;
    }
    if (o->bench && (options_given(o, "attn-window") || options_given(o, "pos"))) {
        fprintf(stderr, "error: with --bench, windows and ALiBi are masks of --bench-masks (window=W, alibi), "
                "not --attn-window / --pos\n");
        return 2;
    }
    return check_bench_only(o);
}
