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
        return plan_error(err, errlen, "unknown precision '%s' (expected fp32, bf16 or fp16)", item);
    for (int j = 0; j < i; j++)
        if (((Precision *)out)[j] == p) return plan_error(err, errlen, "'%s' is listed twice", item);
    ((Precision *)out)[i] = p;
    return 0;
}

int bench_mask_parse(const char *text, BenchMask *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    char buf[64];
    if (strlen(text) >= sizeof buf) return plan_error(err, errlen, "mask '%s' is too long", text);
    strcpy(buf, text);
    int have_kind = 0;
    out->kind = ATTN_MASK_CAUSAL;
    for (char *piece = strtok(buf, "+"); piece; piece = strtok(NULL, "+")) {
        AttnMaskKind k;
        int w = 0, used = 0;
        if (attn_mask_from_name(piece, &k) == 0) {
            if (have_kind++) return plan_error(err, errlen, "mask '%s' names two kinds", text);
            out->kind = k;
        } else if (strcmp(piece, "alibi") == 0 && !out->alibi) {
            out->alibi = 1;
        } else if (strcmp(piece, "docs") == 0 && !out->docs) {
            out->docs = 1;
        } else if (sscanf(piece, "window=%d%n", &w, &used) == 1 && piece[used] == '\0' && w >= 1 && !out->window) {
            out->window = w;
        } else {
            return plan_error(err, errlen, "unknown mask '%s' (expected causal, none or dense, or pieces joined by +: "
                              "alibi, window=W (W >= 1), docs, each once)", text);
        }
    }
    if (!buf[0] || text[0] == '+' || text[strlen(text) - 1] == '+' || strstr(text, "++"))
        return plan_error(err, errlen, "mask '%s': an empty piece", text);
    /* the canonical name: the kind unless causal with pieces, then alibi, window, docs */
    int extras = out->alibi || out->window || out->docs;
    size_t n = 0;
    if (!extras || out->kind != ATTN_MASK_CAUSAL)
        n += (size_t)snprintf(out->name + n, sizeof out->name - n, "%s", attn_mask_name(out->kind));
    if (out->alibi) n += (size_t)snprintf(out->name + n, sizeof out->name - n, "%salibi", n ? "+" : "");
    if (out->window) n += (size_t)snprintf(out->name + n, sizeof out->name - n, "%swindow=%d", n ? "+" : "", out->window);
    if (out->docs) snprintf(out->name + n, sizeof out->name - n, "%sdocs", n ? "+" : "");
    return 0;
}

static int parse_mask(const char *item, void *out, int i, char *err, size_t errlen) {
    BenchMask *masks = (BenchMask *)out;
    if (bench_mask_parse(item, &masks[i], err, errlen) != 0) return -1;
    for (int j = 0; j < i; j++)
        if (strcmp(masks[j].name, masks[i].name) == 0) return plan_error(err, errlen, "'%s' is listed twice", item);
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
    const char *kernels, *models, *seq_lens, *precisions, *masks; /* NULL: from the options
                                                                   * (kernels: the registry's) */
    const char *quick_models, *quick_seq_lens;
    BatchPolicy batch_policy;
    int batch, grad_accum;
    int tokens_per_step;    /* BATCH_TOKENS */
    int vocab;              /* 0: from the data (at least 256) */
    float lr;               /* 0: --lr */
    int warmup, steps, quick_warmup, quick_steps;
    int no_linear_bias;     /* ModelOptions.no_linear_bias for every cell */
    const char *document;
} GridPreset;

static const GridPreset GRIDS[] = {
    {"xformers-issue", "naive,memeff,flash", "l6-c1024-h8", "2048", "fp32,bf16", "none,dense,causal,alibi",
     NULL, NULL, BATCH_FIXED, 2, 4, 0, 256, 1e-4f, 3, 10, 2, 4, 0,
     "Reproduces the xFormers issue's experiment: a byte-level model on enwik8 (6 layers, dim 1024, 8 heads, "
     "vocab 256, T 2048, batch 2 x 4 accumulation steps, lr 1e-4) with no mask, a dense float "
     "mask and a causal mask, in fp32 and mixed precision, and the row its users asked for: ALiBi with the "
     "causal mask (alibi: the model without a position table)"},
    {"flash-blog", "naive,memeff,flash", "gpt2,gpt2-medium,gpt2-large", "256,512,1024,2048,4096",
     "bf16", "causal", "gpt2,gpt2-medium", "512,1024,2048", BATCH_MAX, 0, 1, 0, FLASH_BLOG_VOCAB, 1e-4f,
     2, 6, 2, 3, 1,
     "Reproduces the FlashAttention blog's experiment: GPT-2 small, medium and large (vocab 16384, no "
     "bias in linear layers, no dropout, mixed precision) at context 256 to 4096, the batch raised until memory is full"},
    {"masks", NULL, "gpt2", "4096,16384", "bf16", "causal,window=1024,docs,alibi", NULL, "4096", BATCH_TOKENS,
     0, 1, 65536, 256, 1e-4f, 2, 6, 1, 3, 0,
     "The attention issue's masks in training: byte-level GPT-2 small (12 layers, 768 channels, 12 heads, "
     "vocab 256) at T 4096 and 16384, mixed precision, 65536 tokens a step at both lengths (the B*T of the "
     "attention benchmark's FlexAttention comparison), with the causal mask, a sliding window of 1024 keys, "
     "packed documents split at enwik8's pages and ALiBi with the causal mask; every kernel of the registry"},
    {"custom", "naive,memeff,flash", NULL, NULL, NULL, NULL, NULL, NULL, BATCH_FIXED, 0, 0, 0, 0, 0.0f,
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
    char registry[ATTN_NUM_IMPLS * 32]; /* the registry's kernel names, comma separated */
    size_t r = 0;
    for (const char *c = attn_kernel_names_list(); *c && r + 1 < sizeof registry; c++)
        if (*c != ' ') registry[r++] = *c;
    registry[r] = '\0';
    p->num_kernels = parse_list("bench-attn", pick_list(o->bench_attn, g->kernels, NULL, q, registry),
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
                              BENCH_MAX_MASKS, parse_mask, p->masks, err, errlen);
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
    p->tokens_per_step = g->tokens_per_step;
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
        c->kv_heads = o->kv_heads; /* alibi masks set the position kind per cell */
        c->max_seq_len = o->max_seq_len ? o->max_seq_len : longest;
        char why[256];
        if (gpt2_config_validate(c, why, sizeof why) != 0)
            return plan_error(err, errlen, "bench model '%s': %s", p->models[i].name, why);
    }
    return 0;
}

/* The docs masks' separator: --doc-sep, else enwik8's page start for byte data; token data needs
 * --doc-sep (else its docs cells are unsupported, with the reason). --doc-sep and --doc-positions
 * apply to docs masks only, so they are refused without one. */
static int choose_doc_sep(const Options *o, const BenchTarget *t, BenchPlan *p, char *err, size_t errlen) {
    int any_docs = 0;
    for (int i = 0; i < p->num_masks; i++) any_docs |= p->masks[i].docs;
    if ((o->doc_sep || o->doc_positions) && !any_docs)
        return plan_error(err, errlen, "--doc-sep and --doc-positions set the bench's docs masks; no mask of the "
                          "grid is docs (add one to --bench-masks, e.g. docs)");
    p->doc_positions = o->doc_positions;
    if (!any_docs) return 0;
    const char *text = o->doc_sep ? o->doc_sep : t->byte_data ? BENCH_DEFAULT_DOC_SEP : NULL;
    if (!text) return 0;
    if (doc_sep_parse(text, t->byte_data, &p->doc_sep, err, errlen) != 0) return -1;
    int vocab = p->num_models ? p->models[0].config.vocab_size : 256;
    if (doc_sep_max_token(&p->doc_sep) >= vocab || (t->byte_data && doc_sep_max_token(&p->doc_sep) > 255))
        return plan_error(err, errlen, "--doc-sep %s: token %d is outside the %s of %d", text,
                          doc_sep_max_token(&p->doc_sep), t->byte_data ? "bytes 0 to 255, or the vocabulary" : "vocabulary",
                          t->byte_data && vocab > 256 ? 256 : vocab);
    return 0;
}

int bench_plan_build(const Options *o, const BenchTarget *t, BenchPlan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    const GridPreset *g = find_grid(o->bench);
    if (!g)
        return plan_error(err, errlen, "--bench expects xformers-issue, flash-blog, masks or custom, got '%s'", o->bench);
    snprintf(p->grid, sizeof p->grid, "%s", g->name);
    p->quick = o->bench_quick;
    p->document = g->document;
    if (parse_lists(o, g, t, p, err, errlen) != 0) return -1;
    if (choose_batch_policy(o, g, t, p, err, errlen) != 0) return -1;
    if (finish_models(o, g, t, p, err, errlen) != 0) return -1;
    if (choose_doc_sep(o, t, p, err, errlen) != 0) return -1;
    p->warmup = o->bench_warmup >= 0 ? o->bench_warmup : (p->quick ? g->quick_warmup : g->warmup);
    p->steps = o->bench_steps > 0 ? o->bench_steps : (p->quick ? g->quick_steps : g->steps);
    p->lr = g->lr > 0 ? g->lr : o->lr;
    p->max_seconds = o->bench_max_seconds;
    p->linear_biases = !g->no_linear_bias;
    p->changed = strcmp(g->name, "custom") != 0 &&
                 (o->bench_attn || o->bench_models || o->bench_seq_lens || o->bench_precisions ||
                  o->bench_masks || o->bench_batch || o->tokens_per_step || o->layers || o->heads ||
                  o->channels || o->vocab || o->max_seq_len || o->kv_heads || o->doc_sep || o->doc_positions);
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
