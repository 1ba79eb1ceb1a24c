/* data/dataset.h: token streams and the loader that cuts (B, T+1) windows out of them.
 *
 * A dataset is a read-only sequence of token ids:
 *   - any file of raw bytes (token = byte, vocabulary 256), or
 *   - an llm.c token file: a header of 256 int32 (magic 20240520, version 1, token count),
 *     then that many uint16 tokens; detected by its magic.
 *   - the embedded default corpus linked into the binary (the project's own text).
 * Files are memory-mapped, so a 100 MB corpus costs no copy.
 */
#ifndef DATASET_H
#define DATASET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TOKEN_FILE_MAGIC 20240520
#define TOKEN_FILE_VERSION 1

typedef enum { DATASET_BYTES = 0, DATASET_TOKENS16 } DatasetKind;

typedef struct {
    DatasetKind kind;
    const uint8_t *bytes;     /* DATASET_BYTES: the tokens */
    const uint16_t *tokens;   /* DATASET_TOKENS16: the tokens */
    size_t num_tokens;
    int max_token;            /* largest token id present (scanned once at open) */
    void *map; size_t map_len;/* the mapping to release, NULL for memory datasets */
    char name[256];           /* path, or "embedded corpus" */
} Dataset;

/* Opens a file. Returns 0, or -1 with a one-line message in err naming the problem
 * (missing, unreadable, empty, token file truncated or with a bad header/version). */
int dataset_open(Dataset *ds, const char *path, char *err, size_t errlen);
/* A dataset over bytes already in memory (not copied, not freed). */
void dataset_from_bytes(Dataset *ds, const uint8_t *bytes, size_t n, const char *name);
/* The embedded default corpus. */
void dataset_embedded(Dataset *ds);
void dataset_close(Dataset *ds);
static inline int dataset_token(const Dataset *ds, size_t i) {
    return ds->kind == DATASET_BYTES ? (int)ds->bytes[i] : (int)ds->tokens[i];
}

/* Writes tokens as an llm.c token file, through a temporary file renamed into place.
 * Returns 0, or -1 with a message in err. */
int token_file_write(const char *path, const uint16_t *tokens, size_t n, char *err, size_t errlen);

/* The loader serves windows of T+1 consecutive tokens from [begin, end) of a dataset:
 * inputs are the first T, targets the last T. Windows start at multiples of T (so
 * consecutive windows overlap by one token, as llm.c does), there are
 * nwin = (end - begin - 1) / T of them, and each step takes B of them.
 *   sequential: windows in order, rank r of W takes windows r*B .. r*B+B-1 of each group of
 *               W*B, so ranks never overlap; wraps to the start at the end of an epoch.
 *   shuffled:   the same, over a permutation of the windows drawn from the seed and redrawn
 *               each epoch (deterministic given seed and epoch).
 * The state (epoch, position) is two integers, saved in checkpoints, so a resumed run sees the
 * same batches. */
typedef struct {
    const Dataset *ds;
    size_t begin, end;
    int B, T;
    int rank, world;
    int shuffle;
    uint64_t seed;
    size_t num_windows;       /* windows in [begin, end) */
    size_t steps_per_epoch;   /* num_windows / (B * world) */
    uint64_t epoch;           /* epochs completed */
    size_t step_in_epoch;     /* next step within the epoch */
    uint32_t *perm;           /* shuffled order of windows, NULL when sequential */
} DataLoader;

/* Returns 0, or -1 with a message in err (e.g. the range holds fewer than B*world windows of
 * T+1 tokens: "data file X has N tokens; B=.. T=.. needs at least ..."). */
int loader_init(DataLoader *ld, const Dataset *ds, size_t begin, size_t end, int B, int T,
                int rank, int world, int shuffle, uint64_t seed, char *err, size_t errlen);
void loader_free(DataLoader *ld);
/* Fills inputs[B*T] and targets[B*T] with the next batch of this rank and advances. */
void loader_next(DataLoader *ld, int *inputs, int *targets);
/* Back to the first batch of epoch 0. */
void loader_reset(DataLoader *ld);
/* Jumps to (epoch, step_in_epoch), as saved in a checkpoint. */
void loader_seek(DataLoader *ld, uint64_t epoch, size_t step_in_epoch);

/* The literature's split of a corpus: first 90% train, next 5% validation, last 5% test.
 * Writes [begin, end) of the named part ("train", "val", "test"). */
void dataset_split(const Dataset *ds, const char *part, size_t *begin, size_t *end);

#ifdef __cplusplus
}
#endif
#endif
