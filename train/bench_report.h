/* train/bench_report.h: a bench run's results as a markdown table (laid out like the
 * documents' tables), CSV, JSON, and PNG charts drawn by gnuplot. */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include <stdio.h>
#include "train/bench_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char device[192];       /* "NVIDIA H100 80GB HBM3, 79.1 GiB" or the CPU's model name */
    const char *backend;    /* "cpu" or "cuda" */
    char data[320];         /* the training data's name and size */
    char documents[256];    /* docs masks: the separator and the documents in the data ("" none) */
    double seconds;         /* wall time of the sweep */
    int biases_trained;     /* without linear biases: 1 when the backend trained them anyway
                             * (found non-zero after a cell), 0 when they stayed zero, -1 unchecked */
} BenchContext;

/* tokens/sec of cell i over that of the naive kernel in the same row; NAN when either did not
 * run or naive is not in the grid. */
double bench_speedup(const BenchPlan *p, const BenchCell *cells, int i);

void bench_write_markdown(FILE *f, const BenchPlan *p, const BenchContext *ctx, const BenchCell *cells);
/* Return 0, or -1 when the file cannot be written. */
int bench_write_csv(const char *path, const BenchPlan *p, const BenchCell *cells);
int bench_write_json(const char *path, const BenchPlan *p, const BenchContext *ctx, const BenchCell *cells);

/* Writes DIR/plot.gp (self-contained: the data is inline) and runs gnuplot on it, which draws
 * DIR/tokens_per_sec.png and DIR/peak_memory.png: one line per kernel against context length
 * (or against mask / precision when the grid has a single length), one panel per combination
 * of the other dimensions. Returns 0, or -1 after printing one warning line to stderr (gnuplot
 * missing or failing) -- the tables are written either way. */
int bench_draw_charts(const char *dir, const BenchPlan *p, const BenchContext *ctx, const BenchCell *cells);

#ifdef __cplusplus
}
#endif
#endif
