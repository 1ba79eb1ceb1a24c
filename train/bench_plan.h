/* train/bench_plan.h: what a bench run measures -- the grid of cells (kernel x model x context
 * length x precision x mask), how each cell picks its batch, and what each cell recorded.
 *
 * The presets reproduce two documents' experiments (see train/README.md):
 *   xformers-issue  6 layers, dim 1024, 8 heads, vocab 256, T 2048, batch 2 x 4 accumulation
 *                   steps, lr 1e-4; masks none / dense (a T x T additive bias) / causal; fp32
 *                   and bf16.
 *   flash-blog      GPT-2 small / medium / large, vocab 16384, T 256 ... 4096, bf16, causal,
 *                   the largest batch that fits.
 *   masks           the attention issue's training preset: byte-level GPT-2 small (vocab 256) at
 *                   T 4096 and 16384, bf16, B*T = 65536 tokens a step; masks causal, window=1024,
 *                   docs (enwik8's pages) and alibi; every kernel of the registry.
 *   custom          the lists given on the command line (defaults: the trainer's options).
 * A list option given on the command line replaces the preset's list.
 */
#ifndef BENCH_PLAN_H
#define BENCH_PLAN_H

#include <stddef.h>
#include "attention/attention.h"
#include "model/backend.h"
#include "model/gpt2.h"
#include "train/options.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BENCH_MAX_MODELS 16
#define BENCH_MAX_SEQ_LENS 32
#define BENCH_MAX_MASKS 16

/* A bench mask: a kind and the pieces a model adds to it. Written as the kind (causal, none,
 * dense) or pieces joined by '+' (alibi, window=W, docs, and optionally a kind: none+alibi);
 * without a kind the pieces are causal. */
typedef struct {
    AttnMaskKind kind;
    int window;             /* > 0: sliding window of this many keys (ModelOptions.attn_window) */
    int docs;               /* packed documents split at the plan's separator */
    int alibi;              /* ALiBi: the model has no position table (GPT2_POS_ALIBI) */
    char name[40];          /* canonical: "causal", "window=1024", "docs", "alibi+docs", "none+alibi" */
} BenchMask;

typedef struct {
    char name[64];          /* as given: "gpt2", "d6", "l6-c1024-h8" */
    GPT2Config config;      /* vocabulary and max_seq_len (the longest T) filled in */
} BenchModel;

typedef enum { BATCH_FIXED = 0, BATCH_TOKENS, BATCH_MAX } BatchPolicy;

typedef struct {
    char grid[32];
    int quick;
    AttnKernel kernels[ATTN_NUM_IMPLS];
    int num_kernels;
    BenchModel models[BENCH_MAX_MODELS];
    int num_models;
    int seq_lens[BENCH_MAX_SEQ_LENS];
    int num_seq_lens;
    Precision precisions[PRECISION_NUM];
    int num_precisions;
    BenchMask masks[BENCH_MAX_MASKS];
    int num_masks;
    DocSep doc_sep;         /* the docs masks' separator (--doc-sep, else '<page>' for byte data);
                             * len 0 when token data gives none: docs cells are then unsupported */
    int doc_positions;      /* docs masks: positions restart at each document (--doc-positions) */
    BatchPolicy batch_policy;
    int batch, grad_accum;  /* BATCH_FIXED */
    int tokens_per_step;    /* BATCH_TOKENS: batch = tokens / T, accumulated above max_batch */
    int max_batch;          /* the largest micro-batch tried (BATCH_MAX) or used (BATCH_TOKENS) */
    int warmup, steps;
    float lr;
    double max_seconds;     /* 0 = no budget */
    int linear_biases;      /* 0: ModelOptions.no_linear_bias (flash-blog) */
    const char *document;   /* a sentence on what the grid reproduces, for the report */
    int changed;            /* a preset's lists, shapes or batch were changed on the command line */
} BenchPlan;

/* What the plan needs to know about the place it runs and the data it trains on. */
typedef struct {
    int on_gpu;
    Precision default_precision;
    int data_vocab;         /* largest token id in the data + 1 */
    int byte_data;          /* the data is raw bytes (a byte string can separate documents) */
} BenchTarget;

/* The docs masks' separator when --doc-sep is not given: enwik8's page start. */
#define BENCH_DEFAULT_DOC_SEP "<page>"

/* Parses one mask of --bench-masks ("causal", "window=1024", "alibi+docs"). 0, or -1 with err. */
int bench_mask_parse(const char *text, BenchMask *out, char *err, size_t errlen);

/* Builds the plan of --bench GRID from the options. Returns 0, or -1 with one line in err
 * (unknown grid, kernel, preset, precision or mask; a malformed or repeated list entry; a
 * model whose vocabulary is smaller than the data's). */
int bench_plan_build(const Options *o, const BenchTarget *t, BenchPlan *p, char *err, size_t errlen);

/* Cells are ordered model, then T, then precision, then mask, then kernel: the cells of one
 * table row (everything but the kernel) are consecutive. */
int bench_num_rows(const BenchPlan *p);
int bench_num_cells(const BenchPlan *p);

typedef enum {
    CELL_PENDING = 0, CELL_OK, CELL_OOM, CELL_UNSUPPORTED, CELL_SKIPPED, CELL_FAILED
} CellStatus;
const char *bench_status_name(CellStatus s);

typedef struct {
    int model;              /* index into plan->models */
    int seq_len;
    Precision precision;
    BenchMask mask;
    AttnKernel kernel;
    CellStatus status;
    char reason[512];       /* why it did not run (OOM: the bytes needed; unsupported: why) */
    int batch, grad_accum;  /* as run */
    double tok_per_s, ms_per_step;
    double mfu;             /* fraction of the peak; NAN when the peak is not known */
    double peak_bytes;      /* the model's memory (Backend.memory_in_use, or host RSS growth) */
    const char *mem_source; /* "device" or "host-rss" */
    double device_used_bytes; /* cudaMemGetInfo total - free after the timed steps; 0 on CPU */
    double loss_first, loss_last; /* first warm-up step and last timed step */
} BenchCell;

/* Fills each cell's coordinates (status PENDING). cells holds bench_num_cells(p). */
void bench_cells_init(const BenchPlan *p, BenchCell *cells);

#ifdef __cplusplus
}
#endif
#endif
