/* train/trainer.h: the trainer as a library. A training run (train_gpt2.cu) and the bench
 * (train/bench.c) make the same decisions from the same options in the same place:
 *
 *   trainer_choose_backend    --device: the CPU reference or the CUDA backend
 *   trainer_data_open         --data / --val-data / enwik8 / the embedded corpus, and the split
 *   trainer_model_options     every ModelOptions field that comes from the command line
 *   trainer_check_attention   whether the chosen kernel runs this shape, mask and precision
 *   trainer_loss_scaler       --loss-scale for this precision (train/loss_scale.h)
 *   trainer_step              one optimizer step: micro-batches, backward (the last one sums the
 *                             gradients over the ranks), global norm, loss-scale check, clipping,
 *                             AdamW
 *   trainer_cpu_bytes_needed  what the CPU backend will allocate, checked against host memory
 *
 * and, for a training run, the run itself: trainer_setup (every input checked before any
 * output is opened), validation, samples, checkpoints, the JSON log, signals, teardown.
 */
#ifndef TRAINER_H
#define TRAINER_H

#include <stddef.h>
#include <stdio.h>

#include "attention/attention.h"
#include "data/dataset.h"
#include "model/backend.h"
#include "model/cuda_extras.h"
#include "model/gpt2.h"
#include "train/dist.h"
#include "train/loss_scale.h"
#include "train/options.h"
#include "tokenizer/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- shared with the bench --------------------------------------------------------------- */

/* --device auto|cpu|cuda. With auto and no GPU, prints a one-line note. 0, or -1 with err. */
int trainer_choose_backend(const Options *o, const Backend **be, char *err, size_t errlen);

/* The training data and where validation comes from. */
typedef struct {
    Dataset train, val;
    int val_is_separate;          /* val is its own file (else the 90-95% slice of train) */
    size_t train_begin, train_end;/* the part of train that trains */
    size_t val_begin, val_end;    /* the part of val (or train) that validates */
} TrainData;

/* --data FILE, else enwik8's training file once `make enwik8` fetched it, else the embedded
 * corpus (with a note); --val-data FILE, else enwik8's validation file with enwik8, else the
 * split. 0, or -1 with err. */
int trainer_data_open(const Options *o, TrainData *d, char *err, size_t errlen);
void trainer_data_close(TrainData *d);

/* The (T, T) additive bias of --mask dense: 0 on and below the diagonal, -inf above. NULL when
 * out of memory. */
float *trainer_dense_causal_bias(int T);

/* The ModelOptions fields that come from the command line and not from the run's shape
 * (recompute, linear biases, threads, window, ...); the caller sets config, B, T, attn, mask,
 * dense_bias, doc_sep (trainer_doc_sep), precision and the data-parallel fields. */
void trainer_model_options(const Options *o, ModelOptions *m);

/* --doc-sep of the options for this training data (byte strings need byte data): out->len 0 when
 * not given. 0, or -1 with err. */
int trainer_doc_sep(const Options *o, const Dataset *train, DocSep *out, char *err, size_t errlen);

/* The attention shape a model of these options runs (every layer the same): heads, K/V heads,
 * mask, dense bias, window, ALiBi (a presence marker for the slopes the backend computes),
 * packed documents (doc: NULL, or B x T ints standing in for the per-batch starts the backend
 * computes; without documents the shape has none). */
AttnShape trainer_attention_shape(const ModelOptions *mo, int *doc);
/* NULL when kernel k runs the model's attention (trainer_attention_shape) at `place`, else why
 * not (into buf). */
const char *trainer_check_attention(AttnKernel k, AttnPlace place, const ModelOptions *mo, char *buf, size_t n);
/* attn_resolve for the model's attention: auto -> the fastest kernel that runs it, flash on CUDA
 * -> flash-sm90 or flash-mma; ATTN_AUTO when no kernel runs it. */
AttnKernel trainer_resolve_attention(AttnKernel k, AttnPlace place, const ModelOptions *mo);

/* Where a step's micro-batches come from: fills inputs and targets (B, T). */
typedef void (*BatchSource)(void *ctx, int *inputs, int *targets);

typedef struct {
    int B, T, grad_accum;
    int world;                    /* ranks whose gradients are summed (1 = one process) */
    float grad_clip;              /* clip the global norm to this (0 = off) */
} StepShape;

/* --loss-scale, --loss-scale-init and --loss-scale-window for training in precision p: dynamic
 * by default in fp16, off in fp32 and bf16 unless --loss-scale is given. With refuse_unused,
 * --loss-scale-init / --loss-scale-window without dynamic scaling are refused (a training run; the
 * bench, whose cells differ in precision, passes 0). 0, or -1 with one line in err. */
int trainer_loss_scaler(const Options *o, Precision p, int refuse_unused, LossScaler *ls, char *err,
                        size_t errlen);

/* One optimizer step: grad_accum micro-batches, each contributing 1/(grad_accum x world) of
 * the mean loss's gradient (a power of two scales exactly, so N GPUs compute the same
 * gradients as one GPU accumulating N times as many) times the loss scale S of ls (NULL: none);
 * the last backward sums them over the ranks. Then the global norm of the scaled gradients,
 * which decides through ls whether the step is skipped (loss_scale_after_backward: no AdamW, the
 * weights and moments untouched), the norm unscaled (/S), clipping, and AdamW with s (lr, betas,
 * eps, decay, t; its grad_scale is not used: the backend's clip_and_update computes the clip
 * factor x 1/S, on the GPU without a host round trip). Returns the mean loss
 * over the ranks; *norm_out the unscaled norm (inf or NaN on a skipped step). */
float trainer_step(const Backend *be, Model *m, const StepShape *shape, BatchSource next, void *ctx,
                   int *inputs, int *targets, AdamWStep *s, LossScaler *ls, float *norm_out);

/* MemAvailable of /proc/meminfo in bytes; 0 when unknown. */
double trainer_host_memory_available(void);
/* What the CPU backend's create() allocates for these options, in bytes (an estimate within a
 * few percent: parameters, gradients, AdamW moments, activations, logits, attention). */
double trainer_cpu_bytes_needed(const ModelOptions *mo);

/* ---- a training run ----------------------------------------------------------------------- */

typedef struct {
    Options opt;
    const Backend *be;
    Model *model;
    GPT2Config config;
    ModelOptions mopt;
    TrainData data;
    DataLoader train_loader, val_loader;
    int *inputs, *targets;        /* one micro-batch (B, T) */
    float *dense_bias;            /* (T, T) additive mask for --mask dense */
    double bytes_per_token;       /* 1 for byte data; NAN for token data with no vocabulary */
    Tokenizer tok;                /* --vocab-file: decodes token-file data */
    int have_tok;
    FILE *log;
    int start_step;
    LossScaler scaler;            /* --loss-scale (mode off: none) */
    const CudaExtras *gpu;        /* GPU extras (name, peak rate); NULL on the CPU */
    double peak_flops;            /* for MFU; 0 when unknown */
    double flops_per_token;       /* one training step's FLOPs per token */
    DistInfo dist;                /* rank and world; world 1 without a launcher */
    unsigned char nccl_id[DIST_ID_BYTES];
    char resume_model[4096], resume_state[4096]; /* the checkpoint resumed ("" = none) */
} Trainer;

/* Reads and checks every input (data, model shape, kernel, checkpoint, memory), then opens the
 * outputs (the checkpoint folder, the log) and prints the run header. Exits 2 with one line on
 * any problem, before anything is written. */
void trainer_setup(Trainer *tr, char **argv);
/* --gpus N with no launcher around this process: starts N workers of argv and exits with their
 * status; returns when this process is a worker (or one process trains alone). */
void trainer_launch_workers_if_asked(Trainer *tr, char **argv);

/* One optimizer step of the run at `step` (0-based) from its loader; the loss, *norm, *lr. */
float trainer_train_step(Trainer *tr, int step, float *norm_out, float *lr_out);
void trainer_report_validation(Trainer *tr, int step);
void trainer_print_sample(Trainer *tr, int step);
void trainer_save_checkpoint(Trainer *tr, int step);
/* --save-model FILE: the model as an llm.c model file of --save-version (collective with ZeRO-1). */
void trainer_save_model(Trainer *tr);
void trainer_log_step(Trainer *tr, int step, float loss, float norm, float lr, double ms);

/* SIGINT / SIGTERM: the first asks the loop to stop after the step in flight (the loop saves a
 * checkpoint where a folder is given, closes the log on a record boundary and exits 130 / 143);
 * a second one ends the process at once. trainer_stop_requested() returns the signal number,
 * agreed over the ranks (collective with several GPUs), or 0. */
void trainer_catch_signals(void);
int trainer_stop_requested(Trainer *tr);

/* Mean step time over the steps after the first three (they warm caches and allocators). */
typedef struct {
    double ms;
    int steps;
} Timing;
void trainer_record_step_time(Timing *t, int steps_done, double ms);
void trainer_print_summary(Trainer *tr, const Timing *t);
void trainer_teardown(Trainer *tr);

/* Exits 2 after printing "error: " + the message (with the rank when there are several). */
void trainer_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif
