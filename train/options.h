/* train/options.h: everything a user can set on the command line, with its default. */
#ifndef OPTIONS_H
#define OPTIONS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    /* data */
    const char *data;            /* training data file; NULL: enwik8 if fetched, else embedded */
    const char *val_data;        /* NULL: the validation split of the training data */
    const char *vocab_file;      /* BPE vocabulary for decoding samples and bits per byte */
    int shuffle;                 /* random windows instead of sequential */
    /* model */
    const char *init;            /* model file to start from */
    const char *model;           /* preset name */
    int layers, heads, channels, vocab, max_seq_len; /* overrides; 0 = from preset/file/data */
    /* batch and schedule */
    int batch, seq_len, grad_accum, steps;
    float lr, min_lr_frac, weight_decay, grad_clip, beta1, beta2, eps;
    int warmup;
    unsigned long long seed;
    /* kernels and device */
    const char *attn;            /* naive | memeff | flash | auto */
    const char *mask;            /* causal | none | dense */
    const char *precision;       /* NULL = the device's default */
    const char *device;          /* auto | cpu | cuda */
    int threads;
    int recompute;
    int cuda_graph;
    double peak_tflops;          /* 0 = from the GPU table */
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
} Options;

void options_defaults(Options *o);
/* Parses argv. Returns 0 to go on, 1 when --help or --version was printed (exit 0), or 2
 * after printing one line naming the problem to stderr (exit 2). */
int options_parse(Options *o, int argc, char **argv);
void options_print_help(const char *prog);

#ifdef __cplusplus
}
#endif
#endif
