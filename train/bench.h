/* train/bench.h: the bench mode, `./train_gpt2 --bench GRID ...`: instead of one training run, a
 * sweep of short real training runs (attention kernel x model x context length x precision x
 * mask), each reporting tokens/sec, ms per step, peak memory and MFU, written to --bench-out as
 * results.md (laid out like the documents' tables), results.csv, results.json and PNG charts.
 * See train/README.md for the grids and what they reproduce. */
#ifndef BENCH_H
#define BENCH_H

#include "train/options.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Runs the sweep of o->bench. Returns the process's exit code: 0 when the tables were written
 * (cells that ran out of memory or are unsupported are results, not failures), 2 after one line
 * on stderr for bad input (unknown grid / kernel / preset / precision / mask, an unwritable
 * output directory, unreadable data), 1 when the results could not be written. */
int bench_main(const Options *o);

#ifdef __cplusplus
}
#endif
#endif
