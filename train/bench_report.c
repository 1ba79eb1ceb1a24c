/* train/bench_report.c: results.md, results.csv, results.json and the gnuplot charts. */
#include "train/bench_report.h"

#include "common/atomic_file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define GIB (1024.0 * 1024.0 * 1024.0)

/* ---- shared helpers --------------------------------------------------------------------- */

static int cell_row(const BenchPlan *p, int i) { return i / p->num_kernels; }

static int kernel_column(const BenchPlan *p, AttnKernel k) {
    for (int a = 0; a < p->num_kernels; a++)
        if (p->kernels[a] == k) return a;
    return -1;
}

double bench_speedup(const BenchPlan *p, const BenchCell *cells, int i) {
    int a = kernel_column(p, ATTN_NAIVE);
    if (a < 0) return NAN;
    const BenchCell *base = &cells[cell_row(p, i) * p->num_kernels + a];
    if (cells[i].status != CELL_OK || base->status != CELL_OK || base->tok_per_s <= 0) return NAN;
    return cells[i].tok_per_s / base->tok_per_s;
}

static const char *batch_policy_name(BatchPolicy b) {
    return b == BATCH_MAX ? "max" : b == BATCH_TOKENS ? "tokens" : "fixed";
}

/* "1234567" -> "1,234,567" */
static void format_thousands(double v, char *buf, size_t n) {
    char digits[64];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t len = strlen(digits), out = 0;
    for (size_t i = 0; i < len && out + 2 < n; i++) {
        buf[out++] = digits[i];
        size_t left = len - 1 - i;
        if (left > 0 && left % 3 == 0 && digits[i] != '-' && out + 2 < n) buf[out++] = ',';
    }
    buf[out] = '\0';
}

/* GiB with enough digits for small models: 12.34, 0.123, 0.00123. */
static void format_gib(double bytes, char *buf, size_t n) {
    double g = bytes / GIB;
    if (g >= 1.0) snprintf(buf, n, "%.2f", g);
    else snprintf(buf, n, "%.3g", g);
}

static void format_batch(const BenchCell *c, char *buf, size_t n) {
    if (c->batch <= 0) snprintf(buf, n, "-");
    else if (c->grad_accum > 1) snprintf(buf, n, "%dx%d", c->batch, c->grad_accum);
    else snprintf(buf, n, "%d", c->batch);
}

/* Dimensions that vary get a column (or a panel); those with one value go in the header. */
static int precision_varies(const BenchPlan *p) { return p->num_precisions > 1; }
static int mask_varies(const BenchPlan *p) { return p->num_masks > 1; }

/* ---- markdown ------------------------------------------------------------------------------ */

/* What the masks beyond none / causal / dense mean, once each. */
static void print_mask_meanings(FILE *f, const BenchPlan *p, const BenchContext *ctx) {
    int alibi = 0, window = 0, docs = 0;
    for (int i = 0; i < p->num_masks; i++) {
        alibi |= p->masks[i].alibi;
        window |= p->masks[i].window > 0;
        docs |= p->masks[i].docs;
    }
    if (alibi) fprintf(f, "- alibi: ALiBi biases from the standard slopes 2^(-8(h+1)/H), the model without a position table\n");
    if (window) fprintf(f, "- window=W: query i sees keys (i - W, i]\n");
    if (docs) fprintf(f, "- docs: packed documents, attention never crosses one; %s\n",
                      ctx->documents[0] ? ctx->documents : "no separator (token data without --doc-sep)");
}

static void markdown_header(FILE *f, const BenchPlan *p, const BenchContext *ctx) {
    fprintf(f, "## Bench: %s%s\n\n", p->grid, p->quick ? " (quick)" : "");
    fprintf(f, "%s.%s\n\n", p->document,
            p->changed ? " The grid was changed on the command line: the table says what ran." : "");
    fprintf(f, "- device: %s (%s backend)\n", ctx->device, ctx->backend);
    fprintf(f, "- data: %s\n", ctx->data);
    fprintf(f, "- each cell: %d untimed warm-up step%s, then %d timed step%s of real training "
               "(forward, backward, AdamW at lr %g)\n", p->warmup, p->warmup == 1 ? "" : "s", p->steps,
            p->steps == 1 ? "" : "s", p->lr);
    if (p->batch_policy == BATCH_MAX)
        fprintf(f, "- batch: the largest micro-batch that fits (at most %d%s)\n", p->max_batch,
                strcmp(ctx->backend, "cpu") == 0 ? ", estimated against the host's available memory" : "");
    else if (p->batch_policy == BATCH_TOKENS)
        fprintf(f, "- batch: %d tokens per step (micro-batch at most %d, the rest accumulated)\n",
                p->tokens_per_step, p->max_batch);
    else
        fprintf(f, "- batch: %d sequence%s x %d accumulation step%s\n", p->batch, p->batch == 1 ? "" : "s",
                p->grad_accum, p->grad_accum == 1 ? "" : "s");
    if (!precision_varies(p)) fprintf(f, "- precision: %s\n", precision_name(p->precisions[0]));
    if (!mask_varies(p)) fprintf(f, "- mask: %s\n", p->masks[0].name);
    print_mask_meanings(f, p, ctx);
    if (p->linear_biases)
        fprintf(f, "- linear layers with biases\n");
    else if (ctx->biases_trained == 1)
        fprintf(f, "- WARNING: asked for linear layers without biases, but the %s backend ignored "
                   "ModelOptions.no_linear_bias (the biases were non-zero after training): these "
                   "numbers are for models with biases\n", ctx->backend);
    else
        fprintf(f, "- linear layers without biases (ModelOptions.no_linear_bias; %s)\n",
                ctx->biases_trained == 0 ? "checked: they stayed zero" : "not checked: no cell ran");
    int cpu = strcmp(ctx->backend, "cpu") == 0;
    fprintf(f, "- peak memory: %s\n", cpu ? "growth of the process's resident memory during the cell (the CPU backend reports none)"
                                         : "what the model holds on the GPU (parameters, gradients, AdamW state, activations, scratch)");
    fprintf(f, "- MFU: %s\n", cpu ? "in results.csv/json when --peak-tflops is given (no peak is known for a CPU)"
                                  : "model FLOPs per token (causal attention at half cost, whatever window or documents "
                                    "remove: compare masks by tokens/sec) x tokens/sec over the GPU's peak (results.csv/json)");
    fprintf(f, "- sweep time: %.1f s\n\n", ctx->seconds);
}

static void markdown_column_heads(FILE *f, const BenchPlan *p) {
    int naive = kernel_column(p, ATTN_NAIVE) >= 0;
    fprintf(f, "| model | T |");
    if (precision_varies(p)) fprintf(f, " precision |");
    if (mask_varies(p)) fprintf(f, " mask |");
    for (int a = 0; a < p->num_kernels; a++) {
        const char *k = attn_kernel_name(p->kernels[a]);
        fprintf(f, " %s batch | %s tok/s |", k, k);
        if (naive && p->kernels[a] != ATTN_NAIVE) fprintf(f, " %s speedup |", k);
        fprintf(f, " %s peak GiB |", k);
    }
    fprintf(f, "\n|---|---:|");
    if (precision_varies(p)) fprintf(f, "---|");
    if (mask_varies(p)) fprintf(f, "---|");
    for (int a = 0; a < p->num_kernels; a++)
        fprintf(f, "---:|---:|%s---:|", naive && p->kernels[a] != ATTN_NAIVE ? "---:|" : "");
    fprintf(f, "\n");
}

static const char *status_word(CellStatus s) {
    switch (s) {
    case CELL_OOM: return "OOM";
    case CELL_UNSUPPORTED: return "unsupported";
    case CELL_SKIPPED: return "skipped";
    case CELL_FAILED: return "failed";
    default: return "-";
    }
}

static void markdown_cell(FILE *f, const BenchPlan *p, const BenchCell *cells, int i) {
    const BenchCell *c = &cells[i];
    int speedup_col = kernel_column(p, ATTN_NAIVE) >= 0 && c->kernel != ATTN_NAIVE;
    char batch[32], tok[48];
    format_batch(c, batch, sizeof batch);
    if (c->status != CELL_OK) {
        fprintf(f, " %s | %s |%s |", batch, status_word(c->status), speedup_col ? " |" : "");
        return;
    }
    format_thousands(c->tok_per_s, tok, sizeof tok);
    fprintf(f, " %s | %s |", batch, tok);
    if (speedup_col) {
        double s = bench_speedup(p, cells, i);
        if (isnan(s)) fprintf(f, " |");
        else fprintf(f, " %.2fx |", s);
    }
    char gib[32] = "";
    if (c->peak_bytes > 0) format_gib(c->peak_bytes, gib, sizeof gib);
    fprintf(f, " %s |", gib);
}

static int cell_ran(const BenchCell *c) { return c->status == CELL_OK || c->status == CELL_PENDING; }

/* One line per row and reason: "- gpt2, T=4096, bf16, causal -- naive: OOM: needs ...". */
static void markdown_notes(FILE *f, const BenchPlan *p, const BenchCell *cells) {
    int any = 0, nk = p->num_kernels;
    for (int r = 0; r < bench_num_rows(p); r++) {
        const BenchCell *row = &cells[r * nk];
        for (int a = 0; a < nk; a++) {
            const BenchCell *c = &row[a];
            int seen = 0;
            for (int b = 0; b < a && !seen; b++)
                seen = !cell_ran(&row[b]) && row[b].status == c->status && strcmp(row[b].reason, c->reason) == 0;
            if (cell_ran(c) || seen) continue;
            if (!any) fprintf(f, "\nCells that did not run:\n\n");
            any = 1;
            fprintf(f, "- %s, T=%d, %s, %s -- ", p->models[c->model].name, c->seq_len,
                    precision_name(c->precision), c->mask.name);
            for (int b = a, first = 1; b < nk; b++) {
                if (cell_ran(&row[b]) || row[b].status != c->status || strcmp(row[b].reason, c->reason) != 0) continue;
                fprintf(f, "%s%s", first ? "" : ", ", attn_kernel_name(row[b].kernel));
                first = 0;
            }
            fprintf(f, ": %s: %s\n", status_word(c->status), c->reason);
        }
    }
}

void bench_write_markdown(FILE *f, const BenchPlan *p, const BenchContext *ctx, const BenchCell *cells) {
    markdown_header(f, p, ctx);
    markdown_column_heads(f, p);
    for (int r = 0; r < bench_num_rows(p); r++) {
        const BenchCell *first = &cells[r * p->num_kernels];
        fprintf(f, "| %s | %d |", p->models[first->model].name, first->seq_len);
        if (precision_varies(p)) fprintf(f, " %s |", precision_name(first->precision));
        if (mask_varies(p)) fprintf(f, " %s |", first->mask.name);
        for (int a = 0; a < p->num_kernels; a++) markdown_cell(f, p, cells, r * p->num_kernels + a);
        fprintf(f, "\n");
    }
    markdown_notes(f, p, cells);
}

/* ---- CSV and JSON -------------------------------------------------------------------------- */

static void csv_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
    fputc('"', f);
}

/* A number, or nothing when it is not known (NAN) or, with zero_is_blank, zero. */
static void csv_number(FILE *f, double v, const char *fmt, int zero_is_blank) {
    if (!isnan(v) && isfinite(v) && !(zero_is_blank && v == 0)) fprintf(f, fmt, v);
}

int bench_write_csv(const char *path, const BenchPlan *p, const BenchCell *cells) {
    AtomicFile out;
    FILE *f = atomic_open(&out, path);
    if (!f) return -1;
    fprintf(f, "grid,model,layers,heads,channels,vocab,seq_len,precision,mask,kernel,status,batch,"
               "grad_accum,tokens_per_step,tok_per_s,ms_per_step,speedup_vs_naive,peak_mem_bytes,"
               "mem_source,device_mem_used_bytes,mfu,loss_first,loss_last,reason\n");
    for (int i = 0; i < bench_num_cells(p); i++) {
        const BenchCell *c = &cells[i];
        const GPT2Config *m = &p->models[c->model].config;
        int ran = c->status == CELL_OK;
        fprintf(f, "%s,%s,%d,%d,%d,%d,%d,%s,%s,%s,%s,", p->grid, p->models[c->model].name,
                m->num_layers, m->num_heads, m->channels, m->vocab_size, c->seq_len,
                precision_name(c->precision), c->mask.name, attn_kernel_name(c->kernel),
                bench_status_name(c->status));
        if (c->batch > 0) fprintf(f, "%d,%d,%lld,", c->batch, c->grad_accum,
                                  (long long)c->batch * c->grad_accum * c->seq_len);
        else fprintf(f, ",,,");
        csv_number(f, ran ? c->tok_per_s : NAN, "%.1f", 0);
        fputc(',', f);
        csv_number(f, ran ? c->ms_per_step : NAN, "%.3f", 0);
        fputc(',', f);
        csv_number(f, bench_speedup(p, cells, i), "%.4f", 0);
        fputc(',', f);
        csv_number(f, ran ? c->peak_bytes : NAN, "%.0f", 1);
        fprintf(f, ",%s,", ran && c->mem_source ? c->mem_source : "");
        csv_number(f, ran ? c->device_used_bytes : NAN, "%.0f", 1);
        fputc(',', f);
        csv_number(f, ran ? c->mfu : NAN, "%.4f", 0);
        fputc(',', f);
        csv_number(f, ran ? c->loss_first : NAN, "%.4f", 0);
        fputc(',', f);
        csv_number(f, ran ? c->loss_last : NAN, "%.4f", 0);
        fputc(',', f);
        if (!ran) csv_quoted(f, c->reason);
        fputc('\n', f);
    }
    return atomic_commit(&out);
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void json_number(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, "\"%s\": ", key);
    if (isnan(v) || !isfinite(v)) fprintf(f, "null");
    else fprintf(f, fmt, v);
}

static void json_cell(FILE *f, const BenchPlan *p, const BenchCell *cells, int i) {
    const BenchCell *c = &cells[i];
    const GPT2Config *m = &p->models[c->model].config;
    int ran = c->status == CELL_OK;
    fprintf(f, "    {\"model\": ");
    json_string(f, p->models[c->model].name);
    fprintf(f, ", \"layers\": %d, \"heads\": %d, \"channels\": %d, \"vocab\": %d, \"seq_len\": %d, "
               "\"precision\": \"%s\", \"mask\": \"%s\", \"kernel\": \"%s\", \"status\": \"%s\", ",
            m->num_layers, m->num_heads, m->channels, m->vocab_size, c->seq_len,
            precision_name(c->precision), c->mask.name, attn_kernel_name(c->kernel),
            bench_status_name(c->status));
    fprintf(f, "\"reason\": ");
    if (ran) fprintf(f, "null");
    else json_string(f, c->reason);
    if (c->batch > 0) fprintf(f, ", \"batch\": %d, \"grad_accum\": %d, \"tokens_per_step\": %lld", c->batch,
                              c->grad_accum, (long long)c->batch * c->grad_accum * c->seq_len);
    else fprintf(f, ", \"batch\": null, \"grad_accum\": null, \"tokens_per_step\": null");
    fprintf(f, ", ");
    json_number(f, "tok_per_s", ran ? c->tok_per_s : NAN, "%.1f");
    fprintf(f, ", ");
    json_number(f, "ms_per_step", ran ? c->ms_per_step : NAN, "%.3f");
    fprintf(f, ", ");
    json_number(f, "speedup_vs_naive", bench_speedup(p, cells, i), "%.4f");
    fprintf(f, ", ");
    json_number(f, "peak_mem_bytes", ran && c->peak_bytes > 0 ? c->peak_bytes : NAN, "%.0f");
    fprintf(f, ", \"mem_source\": ");
    if (ran && c->mem_source) json_string(f, c->mem_source);
    else fprintf(f, "null");
    fprintf(f, ", ");
    json_number(f, "device_mem_used_bytes", ran && c->device_used_bytes > 0 ? c->device_used_bytes : NAN, "%.0f");
    fprintf(f, ", ");
    json_number(f, "mfu", ran ? c->mfu : NAN, "%.4f");
    fprintf(f, ", ");
    json_number(f, "loss_first", ran ? c->loss_first : NAN, "%.4f");
    fprintf(f, ", ");
    json_number(f, "loss_last", ran ? c->loss_last : NAN, "%.4f");
    fprintf(f, "}");
}

int bench_write_json(const char *path, const BenchPlan *p, const BenchContext *ctx, const BenchCell *cells) {
    AtomicFile out;
    FILE *f = atomic_open(&out, path);
    if (!f) return -1;
    fprintf(f, "{\n  \"grid\": \"%s\", \"quick\": %s, \"device\": ", p->grid, p->quick ? "true" : "false");
    json_string(f, ctx->device);
    fprintf(f, ", \"backend\": \"%s\", \"data\": ", ctx->backend);
    json_string(f, ctx->data);
    fprintf(f, ", \"documents\": ");
    if (ctx->documents[0]) json_string(f, ctx->documents);
    else fprintf(f, "null");
    fprintf(f, ",\n  \"warmup_steps\": %d, \"timed_steps\": %d, \"lr\": %g, \"batch_policy\": \"%s\", "
               "\"max_batch\": %d, \"linear_biases\": %s, \"biases_trained\": %s, \"seconds\": %.2f,\n"
               "  \"cells\": [\n",
            p->warmup, p->steps, p->lr, batch_policy_name(p->batch_policy), p->max_batch,
            p->linear_biases ? "true" : "false",
            p->linear_biases || ctx->biases_trained == 1 ? "true" : ctx->biases_trained == 0 ? "false" : "null",
            ctx->seconds);
    int n = bench_num_cells(p);
    for (int i = 0; i < n; i++) {
        json_cell(f, p, cells, i);
        fprintf(f, "%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return atomic_commit(&out);
}

/* ---- charts ---------------------------------------------------------------------------- */

/* The four dimensions of a row; the chart's x axis is one of them, panels the others. */
enum { DIM_MODEL = 0, DIM_SEQ, DIM_PREC, DIM_MASK, NUM_DIMS };

static int dim_count(const BenchPlan *p, int d) {
    switch (d) {
    case DIM_MODEL: return p->num_models;
    case DIM_SEQ: return p->num_seq_lens;
    case DIM_PREC: return p->num_precisions;
    default: return p->num_masks;
    }
}

static void dim_label(const BenchPlan *p, int d, int i, char *buf, size_t n) {
    switch (d) {
    case DIM_MODEL: snprintf(buf, n, "%s", p->models[i].name); break;
    case DIM_SEQ: snprintf(buf, n, "T=%d", p->seq_lens[i]); break;
    case DIM_PREC: snprintf(buf, n, "%s", precision_name(p->precisions[i])); break;
    default: snprintf(buf, n, "%s", p->masks[i].name); break;
    }
}

static const char *dim_axis_name(int d) {
    switch (d) {
    case DIM_MODEL: return "model";
    case DIM_SEQ: return "context length (tokens)";
    case DIM_PREC: return "precision";
    default: return "mask";
    }
}

/* Context length when it varies, else the first other dimension that does. */
static int chart_x_dim(const BenchPlan *p) {
    if (p->num_seq_lens > 1) return DIM_SEQ;
    if (p->num_masks > 1) return DIM_MASK;
    if (p->num_precisions > 1) return DIM_PREC;
    if (p->num_models > 1) return DIM_MODEL;
    return DIM_SEQ;
}

static int row_index(const BenchPlan *p, const int coord[NUM_DIMS]) {
    return ((coord[DIM_MODEL] * p->num_seq_lens + coord[DIM_SEQ]) * p->num_precisions +
            coord[DIM_PREC]) * p->num_masks + coord[DIM_MASK];
}

static int num_panels(const BenchPlan *p, int xdim) {
    int n = 1;
    for (int d = 0; d < NUM_DIMS; d++)
        if (d != xdim) n *= dim_count(p, d);
    return n;
}

/* The coordinates of panel `panel` (the x coordinate left 0). */
static void panel_coords(const BenchPlan *p, int xdim, int panel, int coord[NUM_DIMS]) {
    for (int d = NUM_DIMS - 1; d >= 0; d--) {
        if (d == xdim) {
            coord[d] = 0;
            continue;
        }
        coord[d] = panel % dim_count(p, d);
        panel /= dim_count(p, d);
    }
}

static void panel_title(const BenchPlan *p, int xdim, const int coord[NUM_DIMS], char *buf, size_t n) {
    buf[0] = '\0';
    for (int d = 0; d < NUM_DIMS; d++) {
        if (d == xdim) continue;
        char label[80];
        dim_label(p, d, coord[d], label, sizeof label);
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", len ? ", " : "", label);
    }
}

/* Peak memory is charted in GiB, or MiB when every cell is under 1 GiB (small CPU models). */
static double memory_unit(const BenchPlan *p, const BenchCell *cells) {
    for (int i = 0; i < bench_num_cells(p); i++)
        if (cells[i].status == CELL_OK && cells[i].peak_bytes >= GIB) return GIB;
    return 1024.0 * 1024.0;
}

/* Chart value of a cell: column 0 tokens/sec, 1 peak memory in `unit` bytes; NAN when absent. */
static double chart_value(const BenchCell *c, int column, double unit) {
    if (c->status != CELL_OK) return NAN;
    if (column == 0) return c->tok_per_s;
    return c->peak_bytes > 0 ? c->peak_bytes / unit : NAN;
}

static const BenchCell *chart_cell(const BenchPlan *p, const BenchCell *cells, int coord[NUM_DIMS],
                                   int xdim, int x, int a) {
    coord[xdim] = x;
    return &cells[row_index(p, coord) * p->num_kernels + a];
}

static double x_position(const BenchPlan *p, int xdim, int x) {
    return xdim == DIM_SEQ ? (double)p->seq_lens[x] : (double)x;
}

/* $P<panel>K<kernel>: rows "x tok/s memory", '?' where a cell did not run. */
static void write_datablocks(FILE *f, const BenchPlan *p, const BenchCell *cells, int xdim, double unit) {
    int coord[NUM_DIMS];
    for (int panel = 0; panel < num_panels(p, xdim); panel++) {
        for (int a = 0; a < p->num_kernels; a++) {
            panel_coords(p, xdim, panel, coord);
            fprintf(f, "$P%dK%d << EOD\n", panel, a);
            for (int x = 0; x < dim_count(p, xdim); x++) {
                const BenchCell *c = chart_cell(p, cells, coord, xdim, x, a);
                fprintf(f, "%g", x_position(p, xdim, x));
                for (int col = 0; col < 2; col++) {
                    double v = chart_value(c, col, unit);
                    if (isnan(v)) fprintf(f, " ?");
                    else fprintf(f, " %.6g", v);
                }
                fprintf(f, "\n");
            }
            fprintf(f, "EOD\n");
        }
    }
}

static int series_has_data(const BenchPlan *p, const BenchCell *cells, int xdim, int panel, int a, int column) {
    int coord[NUM_DIMS];
    panel_coords(p, xdim, panel, coord);
    for (int x = 0; x < dim_count(p, xdim); x++)
        if (!isnan(chart_value(chart_cell(p, cells, coord, xdim, x, a), column, 1.0))) return 1;
    return 0;
}

static void write_x_axis(FILE *f, const BenchPlan *p, int xdim) {
    int n = dim_count(p, xdim);
    fprintf(f, "set xlabel \"%s\"\nset xtics (", dim_axis_name(xdim));
    for (int x = 0; x < n; x++) {
        char label[80];
        if (xdim == DIM_SEQ) snprintf(label, sizeof label, "%d", p->seq_lens[x]);
        else dim_label(p, xdim, x, label, sizeof label);
        fprintf(f, "%s\"%s\" %g", x ? ", " : "", label, x_position(p, xdim, x));
    }
    fprintf(f, ")\n");
    if (xdim == DIM_SEQ) {
        int lo = p->seq_lens[0], hi = p->seq_lens[0];
        for (int x = 1; x < n; x++) {
            if (p->seq_lens[x] < lo) lo = p->seq_lens[x];
            if (p->seq_lens[x] > hi) hi = p->seq_lens[x];
        }
        fprintf(f, "set logscale x 2\nset xrange [%g:%g]\n", lo / 1.4, hi * 1.4);
    } else {
        fprintf(f, "unset logscale x\nset xrange [-0.5:%g]\n", n - 0.5);
    }
}

static void write_chart(FILE *f, const BenchPlan *p, const BenchCell *cells, int xdim, int column,
                        const char *png, const char *what, const char *title) {
    static const int point_types[] = {7, 5, 9, 11, 13, 15, 4, 6, 8, 10}; /* by kernel, cycling */
    const int num_point_types = (int)(sizeof point_types / sizeof point_types[0]);
    int panels = num_panels(p, xdim);
    int cols = panels <= 3 ? panels : (int)ceil(sqrt((double)panels));
    int rows = (panels + cols - 1) / cols;
    fprintf(f, "\nset terminal pngcairo noenhanced size %d,%d font \"sans,10\"\n", 520 * cols, 400 * rows + 40);
    fprintf(f, "set output \"%s\"\nset multiplot layout %d,%d title \"%s\"\n", png, rows, cols, title);
    fprintf(f, "set ylabel \"%s\"\n", what);
    for (int panel = 0; panel < panels; panel++) {
        int coord[NUM_DIMS];
        char ptitle[256];
        panel_coords(p, xdim, panel, coord);
        panel_title(p, xdim, coord, ptitle, sizeof ptitle);
        fprintf(f, "set title \"%s\"\n", ptitle);
        int series = 0;
        for (int a = 0; a < p->num_kernels; a++) {
            if (!series_has_data(p, cells, xdim, panel, a, column)) continue;
            int k = p->kernels[a];
            fprintf(f, "%s $P%dK%d using 1:%d with linespoints lt %d lw 2 pt %d ps 1.3 title \"%s\"",
                    series ? ", \\\n    " : "set yrange [0:*]\nplot", panel, a, column + 2, k + 1,
                    point_types[k % num_point_types], attn_kernel_name((AttnKernel)k));
            series++;
        }
        if (series) fprintf(f, "\n");
        else fprintf(f, "set yrange [0:1]\nset label 1 \"no cell ran\" at graph 0.5,0.5 center\n"
                        "plot 2 notitle\nunset label 1\n");
    }
    fprintf(f, "unset multiplot\nset output\n");
}

static void sanitize_title(const char *in, char *out, size_t n) {
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 1 < n; i++) out[j++] = (in[i] == '"' || in[i] == '\\') ? '\'' : in[i];
    out[j] = '\0';
}

static int write_plot_script(const char *path, const BenchPlan *p, const BenchContext *ctx, const BenchCell *cells) {
    AtomicFile out;
    FILE *f = atomic_open(&out, path);
    if (!f) return -1;
    int xdim = chart_x_dim(p);
    char device[192], title[320];
    sanitize_title(ctx->device, device, sizeof device);
    fprintf(f, "# %s: the bench's charts; `gnuplot plot.gp` in this directory redraws them.\n", path);
    double unit = memory_unit(p, cells);
    fprintf(f, "set datafile missing \"?\"\nset key outside right top vertical\nset grid\n");
    write_datablocks(f, p, cells, xdim, unit);
    write_x_axis(f, p, xdim);
    snprintf(title, sizeof title, "training tokens/sec -- %s on %s", p->grid, device);
    write_chart(f, p, cells, xdim, 0, "tokens_per_sec.png", "tokens/sec", title);
    snprintf(title, sizeof title, "peak memory -- %s on %s", p->grid, device);
    write_chart(f, p, cells, xdim, 1, "peak_memory.png", unit == GIB ? "peak memory (GiB)" : "peak memory (MiB)", title);
    return atomic_commit(&out);
}

/* 'dir' with every ' escaped, for a shell command. */
static void shell_quote(const char *in, char *out, size_t n) {
    size_t j = 0;
    if (j + 1 < n) out[j++] = '\'';
    for (size_t i = 0; in[i] && j + 6 < n; i++) {
        if (in[i] == '\'') {
            memcpy(out + j, "'\\''", 4);
            j += 4;
        } else {
            out[j++] = in[i];
        }
    }
    if (j + 1 < n) out[j++] = '\'';
    out[j] = '\0';
}

int bench_draw_charts(const char *dir, const BenchPlan *p, const BenchContext *ctx, const BenchCell *cells) {
    char path[4096], quoted[8192], cmd[8400];
    snprintf(path, sizeof path, "%s/plot.gp", dir);
    if (write_plot_script(path, p, ctx, cells) != 0) {
        fprintf(stderr, "warning: cannot write %s; charts skipped (the tables are written)\n", path);
        return -1;
    }
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        fprintf(stderr, "warning: gnuplot not found (apt-get install gnuplot-nox); charts skipped, "
                        "the tables and %s are written\n", path);
        return -1;
    }
    shell_quote(dir, quoted, sizeof quoted);
    snprintf(cmd, sizeof cmd, "cd %s && gnuplot plot.gp >plot.log 2>&1", quoted);
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "warning: gnuplot failed (exit %d, see %s/plot.log); the tables are written\n",
                WIFEXITED(rc) ? WEXITSTATUS(rc) : rc, dir);
        return -1;
    }
    return 0;
}
