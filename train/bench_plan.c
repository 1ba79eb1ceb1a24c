/* train/bench_plan.c: the bench grids and the parsing of their list options. */
#include "train/bench_plan.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLASH_BLOG_VOCAB 16384
#define BENCH_MAX_LIST_TEXT 1024

static int plan_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- comma-separated lists ---------------------------------------------------------------- */

typedef int (*ItemParser)(const char *item, void *out, int index, char *err, size_t errlen);

/* Splits `text` at commas and hands each item to parse(item, out, index). Empty items, more
 * than max_items, and text over BENCH_MAX_LIST_TEXT are errors. Returns the count, or -1. */
static int parse_list(const char *option, const char *text, int max_items, ItemParser parse,
                      void *out, char *err, size_t errlen) {
    char buf[BENCH_MAX_LIST_TEXT];
    if (strlen(text) >= sizeof buf) return plan_error(err, errlen, "--%s: the list is too long", option);
    strcpy(buf, text);
    int n = 0;
    char *item = buf;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma) *comma = '\0';
        if (!item[0]) return plan_error(err, errlen, "--%s '%s': an empty entry", option, text);
        if (n >= max_items)
            return plan_error(err, errlen, "--%s: more than %d entries", option, max_items);
        char why[256];
        if (parse(item, out, n, why, sizeof why) != 0)
            return plan_error(err, errlen, "--%s: %s", option, why);
        n++;
        if (!comma) break;
        item = comma + 1;
    }
    return n;
}

static int parse_kernel(const char *item, void *out, int i, char *err, size_t errlen) {
    AttnKernel k;
    if (attn_kernel_from_name(item, &k) != 0 || k == ATTN_AUTO)
        return plan_error(err, errlen, "unknown kernel '%s' (expected one of %s)", item, attn_kernel_names_list());
    for (int j = 0; j < i; j++)
        if (((AttnKernel *)out)[j] == k) return plan_error(err, errlen, "'%s' is listed twice", item);
    ((AttnKernel *)out)[i] = k;
    return 0;
}

static int parse_precision(const char *item, void *out, int i, char *err, size_t errlen) {
    Precision p;
    if (precision_from_name(item, &p) != 0)
        return plan_error(err, errlen, "unknown precision '%s' (expected fp32 or bf16)", item);
    for (int j = 0; j < i; j++)
        if (((Precision *)out)[j] == p) return plan_error(err, errlen, "'%s' is listed twice", item);
    ((Precision *)out)[i] = p;
    return 0;
}

static int parse_mask(const char *item, void *out, int i, char *err, size_t errlen) {
    AttnMaskKind m;
    if (attn_mask_from_name(item, &m) != 0)
        return plan_error(err, errlen, "unknown mask '%s' (expected causal, none or dense)", item);
    for (int j = 0; j < i; j++)
        if (((AttnMaskKind *)out)[j] == m) return plan_error(err, errlen, "'%s' is listed twice", item);
    ((AttnMaskKind *)out)[i] = m;
    return 0;
}

static int parse_seq_len(const char *item, void *out, int i, char *err, size_t errlen) {
    char *end = NULL;
    errno = 0;
    long v = strtol(item, &end, 10);
    if (errno || end == item || *end || v < 1 || v > (1 << 20))
        return plan_error(err, errlen, "'%s' is not a context length from 1 to %d", item, 1 << 20);
    for (int j = 0; j < i; j++)
        if (((int *)out)[j] == v) return plan_error(err, errlen, "%ld is listed twice", v);
    ((int *)out)[i] = (int)v;
    return 0;
}

/* A model: a preset of model/gpt2.h, or a shape "lL-cC-hH" (layers, channels, heads). */
static int parse_model(const char *item, void *out, int i, char *err, size_t errlen) {
    BenchModel *models = (BenchModel *)out;
    BenchModel *m = &models[i];
    memset(m, 0, sizeof *m);
    if (strlen(item) >= sizeof m->name) return plan_error(err, errlen, "model name '%s' is too long", item);
    int L, C, H, used = 0;
    if (sscanf(item, "l%d-c%d-h%d%n", &L, &C, &H, &used) == 3 && item[used] == '\0') {
        if (L < 1 || L > 4096 || C < 1 || C > 65536 || H < 1 || H > 4096)
            return plan_error(err, errlen, "model '%s': layers 1-4096, channels 1-65536, heads 1-4096", item);
        m->config.num_layers = L;
        m->config.channels = C;
        m->config.num_heads = H;
    } else {
        char why[256];
        if (gpt2_config_preset(item, &m->config, why, sizeof why) != 0)
            return plan_error(err, errlen, "%s, or a shape such as l6-c1024-h8", why);
    }
    for (int j = 0; j < i; j++)
        if (strcmp(models[j].name, item) == 0) return plan_error(err, errlen, "'%s' is listed twice", item);
    strcpy(m->name, item);
    return 0;
}

/* ---- the grids ---------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *kernels, *models, *seq_lens, *precisions, *masks; /* NULL: from the options */
    const char *quick_models, *quick_seq_lens;
    BatchPolicy batch_policy;
    int batch, grad_accum;
    int vocab;              /* 0: from the data (at least 256) */
    float lr;               /* 0: --lr */
    int warmup, steps, quick_warmup, quick_steps;
    int no_linear_bias;     /* ModelOptions.no_linear_bias for every cell */
    const char *document;
} GridPreset;

static const GridPreset GRIDS[] = {
    {"xformers-issue", "naive,memeff,flash", "l6-c1024-h8", "2048", "fp32,bf16", "none,dense,causal",
     NULL, NULL, BATCH_FIXED, 2, 4, 256, 1e-4f, 3, 10, 2, 4, 0,
     "Reproduces the xFormers issue's experiment: a byte-level model on enwik8 (6 layers, dim 1024, 8 heads, "
     "vocab 256, T 2048, batch 2 x 4 accumulation steps, lr 1e-4) with no mask, a dense float "
     "mask and a causal mask, in fp32 and mixed precision"},
    {"flash-blog", "naive,memeff,flash", "gpt2,gpt2-medium,gpt2-large", "256,512,1024,2048,4096",
     "bf16", "causal", "gpt2,gpt2-medium", "512,1024,2048", BATCH_MAX, 0, 1, FLASH_BLOG_VOCAB, 1e-4f,
     2, 6, 2, 3, 1,
     "Reproduces the FlashAttention blog's experiment: GPT-2 small, medium and large (vocab 16384, no "
     "bias in linear layers, no dropout, mixed precision) at context 256 to 4096, the batch raised until memory is full"},
    {"custom", "naive,memeff,flash", NULL, NULL, NULL, NULL, NULL, NULL, BATCH_FIXED, 0, 0, 0, 0.0f,
     3, 10, 1, 3, 0, "A custom sweep"},
};
#define NUM_GRIDS ((int)(sizeof GRIDS / sizeof GRIDS[0]))

static const GridPreset *find_grid(const char *name) {
    for (int i = 0; i < NUM_GRIDS; i++)
        if (strcmp(GRIDS[i].name, name) == 0) return &GRIDS[i];
    return NULL;
}

/* The command line's list if given, else the preset's (quick variant first), else fallback. */
static const char *pick_list(const char *given, const char *preset, const char *quick_preset,
                             int quick, const char *fallback) {
    if (given) return given;
    if (quick && quick_preset) return quick_preset;
    return preset ? preset : fallback;
}

static int parse_lists(const Options *o, const GridPreset *g, const BenchTarget *t, BenchPlan *p,
                       char *err, size_t errlen) {
    char seq_text[32], prec_text[16];
    snprintf(seq_text, sizeof seq_text, "%d", o->seq_len);
    snprintf(prec_text, sizeof prec_text, "%s",
             o->precision ? o->precision : precision_name(t->default_precision));
    int q = o->bench_quick;
    p->num_kernels = parse_list("bench-attn", pick_list(o->bench_attn, g->kernels, NULL, q, NULL),
                                ATTN_NUM_IMPLS, parse_kernel, p->kernels, err, errlen);
    if (p->num_kernels < 0) return -1;
    p->num_models = parse_list("bench-models", pick_list(o->bench_models, g->models, g->quick_models, q, o->model),
                               BENCH_MAX_MODELS, parse_model, p->models, err, errlen);
    if (p->num_models < 0) return -1;
    p->num_seq_lens = parse_list("bench-seq-lens", pick_list(o->bench_seq_lens, g->seq_lens, g->quick_seq_lens, q, seq_text),
                                 BENCH_MAX_SEQ_LENS, parse_seq_len, p->seq_lens, err, errlen);
    if (p->num_seq_lens < 0) return -1;
    p->num_precisions = parse_list("bench-precisions", pick_list(o->bench_precisions, g->precisions, NULL, q, prec_text),
                                   PRECISION_NUM, parse_precision, p->precisions, err, errlen);
    if (p->num_precisions < 0) return -1;
    p->num_masks = parse_list("bench-masks", pick_list(o->bench_masks, g->masks, NULL, q, o->mask),
                              ATTN_NUM_MASKS, parse_mask, p->masks, err, errlen);
    return p->num_masks < 0 ? -1 : 0;
}

/* --bench-batch B|max and --tokens-per-step N override the grid's batch policy. */
static int choose_batch_policy(const Options *o, const GridPreset *g, const BenchTarget *t,
                               BenchPlan *p, char *err, size_t errlen) {
    if (o->bench_batch && o->tokens_per_step)
        return plan_error(err, errlen, "give --bench-batch or --tokens-per-step, not both");
    p->max_batch = o->bench_max_batch ? o->bench_max_batch : (t->on_gpu ? 1024 : 8);
    p->batch_policy = g->batch_policy;
    p->batch = g->batch ? g->batch : o->batch;
    p->grad_accum = g->grad_accum ? g->grad_accum : o->grad_accum;
    if (o->tokens_per_step) {
        p->batch_policy = BATCH_TOKENS;
        p->tokens_per_step = o->tokens_per_step;
    } else if (o->bench_batch && strcmp(o->bench_batch, "max") == 0) {
        p->batch_policy = BATCH_MAX;
        p->grad_accum = 1;
    } else if (o->bench_batch) {
        char *end = NULL;
        errno = 0;
        long b = strtol(o->bench_batch, &end, 10);
        if (errno || end == o->bench_batch || *end || b < 1 || b > (1 << 20))
            return plan_error(err, errlen, "--bench-batch expects max or a batch size from 1 to %d, got '%s'",
                              1 << 20, o->bench_batch);
        p->batch_policy = BATCH_FIXED;
        p->batch = (int)b;
        p->grad_accum = o->grad_accum;
    }
    if (p->batch_policy == BATCH_MAX) p->grad_accum = 1;
    return 0;
}

/* Vocabulary, positions and the --layers/--heads/--channels overrides of every model. */
static int finish_models(const Options *o, const GridPreset *g, const BenchTarget *t, BenchPlan *p,
                         char *err, size_t errlen) {
    int longest = 0;
    for (int i = 0; i < p->num_seq_lens; i++)
        if (p->seq_lens[i] > longest) longest = p->seq_lens[i];
    int vocab = o->vocab ? o->vocab : g->vocab ? g->vocab : (t->data_vocab > 256 ? t->data_vocab : 256);
    if (t->data_vocab > vocab)
        return plan_error(err, errlen, "the data holds token id %d but the bench models' vocabulary is %d (set --vocab)",
                          t->data_vocab - 1, vocab);
    if (o->max_seq_len && o->max_seq_len < longest)
        return plan_error(err, errlen, "--max-seq-len %d is below the longest bench context length %d",
                          o->max_seq_len, longest);
    for (int i = 0; i < p->num_models; i++) {
        GPT2Config *c = &p->models[i].config;
        if (o->layers) c->num_layers = o->layers;
        if (o->heads) c->num_heads = o->heads;
        if (o->channels) c->channels = o->channels;
        c->vocab_size = vocab;
        c->padded_vocab_size = gpt2_padded_vocab(vocab);
        c->max_seq_len = o->max_seq_len ? o->max_seq_len : longest;
        char why[256];
        if (gpt2_config_validate(c, why, sizeof why) != 0)
            return plan_error(err, errlen, "bench model '%s': %s", p->models[i].name, why);
    }
    return 0;
}

int bench_plan_build(const Options *o, const BenchTarget *t, BenchPlan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    const GridPreset *g = find_grid(o->bench);
    if (!g)
        return plan_error(err, errlen, "--bench expects xformers-issue, flash-blog or custom, got '%s'", o->bench);
    snprintf(p->grid, sizeof p->grid, "%s", g->name);
    p->quick = o->bench_quick;
    p->document = g->document;
    if (parse_lists(o, g, t, p, err, errlen) != 0) return -1;
    if (choose_batch_policy(o, g, t, p, err, errlen) != 0) return -1;
    if (finish_models(o, g, t, p, err, errlen) != 0) return -1;
    p->warmup = o->bench_warmup >= 0 ? o->bench_warmup : (p->quick ? g->quick_warmup : g->warmup);
    p->steps = o->bench_steps > 0 ? o->bench_steps : (p->quick ? g->quick_steps : g->steps);
    p->lr = g->lr > 0 ? g->lr : o->lr;
    p->max_seconds = o->bench_max_seconds;
    p->linear_biases = !g->no_linear_bias;
    p->changed = strcmp(g->name, "custom") != 0 &&
                 (o->bench_attn || o->bench_models || o->bench_seq_lens || o->bench_precisions ||
                  o->bench_masks || o->bench_batch || o->tokens_per_step || o->layers || o->heads ||
                  o->channels || o->vocab || o->max_seq_len);
    return 0;
}

int bench_num_rows(const BenchPlan *p) {
    return p->num_models * p->num_seq_lens * p->num_precisions * p->num_masks;
}

int bench_num_cells(const BenchPlan *p) { return bench_num_rows(p) * p->num_kernels; }

const char *bench_status_name(CellStatus s) {
    switch (s) {
    case CELL_PENDING: return "pending";
    case CELL_OK: return "ok";
    case CELL_OOM: return "oom";
    case CELL_UNSUPPORTED: return "unsupported";
    case CELL_SKIPPED: return "skipped";
    case CELL_FAILED: return "failed";
    }
    return "?";
}

void bench_cells_init(const BenchPlan *p, BenchCell *cells) {
    int n = 0;
    for (int m = 0; m < p->num_models; m++)
        for (int s = 0; s < p->num_seq_lens; s++)
            for (int q = 0; q < p->num_precisions; q++)
                for (int k = 0; k < p->num_masks; k++)
                    for (int a = 0; a < p->num_kernels; a++) {
                        BenchCell *c = &cells[n++];
                        memset(c, 0, sizeof *c);
                        c->model = m;
                        c->seq_len = p->seq_lens[s];
                        c->precision = p->precisions[q];
                        c->mask = p->masks[k];
                        c->kernel = p->kernels[a];
                        c->status = CELL_PENDING;
                    }
}
