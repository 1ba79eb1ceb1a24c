/* train/options.h: everything a user can set on the command line, with its default. */
#ifndef OPTIONS_H
#define OPTIONS_H

#include <stddef.h>

#define OPTIONS_MAX_SPECS 128

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    /* data */
    const char *data;            /* training data file; NULL: enwik8 if fetched, else embedded */
    const char *val_data;        /* NULL: the validation split of the training data */
    const char *vocab_file;      /* BPE vocabulary for decoding samples and bits per byte */
    int sequential;              /* training windows in order (default: seeded random order) */
    /* model */
    const char *init;            /* model file to start from */
    const char *model;           /* preset name */
    int layers, heads, channels, vocab, max_seq_len; /* overrides; 0 = from preset/file/data */
    int kv_heads;                /* K/V heads (grouped-query attention); 0 = --heads */
    const char *pos;             /* learned | alibi */
    const char *save_model;      /* also write the final model here (llm.c model file) */
    int save_version;            /* its version: 3 (fp32) or 5 (bf16) */
    /* batch and schedule */
    int batch, seq_len, grad_accum, steps;
    float lr, min_lr_frac, weight_decay, grad_clip, beta1, beta2, eps;
    int warmup;
    unsigned long long seed;
    /* kernels and device */
    const char *attn;            /* naive | memeff | flash | auto */
    const char *mask;            /* causal | none | dense */
    int attn_window;             /* sliding window of keys per query; 0 = none */
    const char *doc_sep;         /* what starts each packed document (model/documents.h); NULL = none */
    int doc_positions;           /* positions restart at each document */
    const char *precision;       /* NULL = the device's default */
    const char *loss_scale;      /* "dynamic" | a fixed scale; NULL = dynamic in fp16, none else */
    double loss_scale_init;      /* dynamic: the first scale */
    int loss_scale_window;       /* dynamic: clean steps before the scale doubles */
    const char *device;          /* auto | cpu | cuda */
    int threads;
    const char *recompute;       /* none | gelu | all (model/backend.h RecomputeMode) */
    int keep_layers;             /* the last N layers keep what recompute would recompute */
    int no_linear_bias;
    int no_cuda_graph;           /* eager steps; default: CUDA graphs on one GPU */
    double peak_tflops;          /* 0 = from the GPU table */
    int no_tf32;                 /* fp32 matmuls without TF32 tensor cores (exact comparisons) */
    int logits_chunk;            /* fp32 on a GPU: logits rows at a time; 0 = automatic */
    int no_matmul_fusion;        /* cuBLASLt fused epilogues off (measuring) */
    const char *matmul;          /* bf16 | fp8: the blocks' linear layers' GEMMs */
    int profile;                 /* per-part step times from CUDA events, printed at the end */
    /* several GPUs (train/dist.h) */
    int gpus;                    /* --gpus N: start N workers on this node; 0 = from the launcher */
    int zero;                    /* ZeRO stage: 0 = plain data parallel, 1 = sharded AdamW state */
    const char *grad_comm;       /* gradients on the wire: fp32 | bf16; NULL = the precision's */
    double dist_timeout;         /* seconds before a silent peer stops the run */
    int dp_overlap;              /* plain DP: 1 = per-bucket all-reduce during backward */
    int dp_bucket_layers;        /* layers per gradient bucket */
    int zero_overlap;            /* ZeRO-1: 1 = per-bucket reduce during backward */
    int zero_gather_overlap;     /* ZeRO-1: 1 = per-layer weight broadcast before forward */
    int nccl_max_ctas;           /* 0 = NCCL's choice */
    /* evaluation, sampling, checkpoints, logs */
    int val_every, val_batches;
    int sample_every, sample_len, top_k;
    float temperature;
    const char *prompt;
    const char *checkpoint_dir;
    int checkpoint_every;
    int resume;
    const char *log;
    int quiet;
    /* bench mode (train/bench.h): a sweep of short training runs instead of one training run */
    const char *bench;           /* grid: xformers-issue | flash-blog | masks | custom; NULL = train */
    const char *bench_out;       /* directory of results.md/.csv/.json and the charts */
    const char *bench_attn;      /* comma-separated lists; NULL = the grid's */
    const char *bench_models;
    const char *bench_seq_lens;
    const char *bench_precisions;
    const char *bench_masks;
    const char *bench_batch;     /* "max" or a micro-batch size; NULL = the grid's */
    int tokens_per_step;         /* 0 = the grid's (or --batch x --grad-accum) */
    int bench_max_batch;         /* largest micro-batch tried; 0 = 1024 on a GPU, 8 on the CPU */
    int bench_steps, bench_warmup; /* timed / untimed steps per cell; 0 / -1 = the grid's */
    int bench_quick;             /* trimmed grid and fewer steps */
    double bench_max_seconds;    /* time budget: later cells are skipped; 0 = none */
    /* which options were on the command line (by table row; see options_given) */
    unsigned char given[OPTIONS_MAX_SPECS];
} Options;

void options_defaults(Options *o);
/* 1 when --NAME (long name, without dashes) was on the command line, else 0. */
int options_given(const Options *o, const char *name);
/* Parses argv. Returns 0 to go on, 1 when --help or --version was printed (exit 0), or 2
 * after printing one line naming the problem to stderr (exit 2). */
int options_parse(Options *o, int argc, char **argv);
void options_print_help(const char *prog);

#ifdef __cplusplus
}
#endif
#endif
