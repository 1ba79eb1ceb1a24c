/* data/dataset.h: token streams and the loader that cuts (B, T+1) windows out of them.
 *
 * A dataset is a read-only sequence of token ids:
 *   - any file of raw bytes (token = byte, vocabulary 256), or
 *   - an llm.c token file: a header of 256 int32 (magic 20240520, version 1, token count),
 *     then that many uint16 tokens; detected by its magic.
 *   - several files of one kind, opened as one dataset by dataset_open_spec (a glob pattern,
 *     as llm.c's `-i 'dir/train_*.bin'`, or a comma-separated list): their tokens follow each
 *     other in order, but no window of the loader spans two files.
 *   - the embedded default corpus linked into the binary (the project's own text).
 * Files are memory-mapped, so a 100 MB corpus costs no copy. A mapped file that shrinks while it
 * is read would kill the process with SIGBUS; a handler (installed by the first open) turns that
 * into one line, "error: training data FILE shrank while training (was N bytes, now M)", and
 * exit status 2.
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

/* One file of a dataset: its tokens are tokens first .. first+num_tokens-1 of the dataset. */
typedef struct {
    const uint8_t *bytes;     /* DATASET_BYTES: this file's tokens */
    const uint16_t *tokens;   /* DATASET_TOKENS16: this file's tokens */
    size_t first, num_tokens;
    void *map; size_t map_len;/* its mapping */
    char *path;
} DatasetFile;

typedef struct {
    DatasetKind kind;
    /* The tokens as one array, for a dataset of one file or bytes in memory; NULL when the
     * dataset has several files (use dataset_token, dataset_run or the loader). */
    const uint8_t *bytes;     /* DATASET_BYTES: the tokens */
    const uint16_t *tokens;   /* DATASET_TOKENS16: the tokens */
    size_t num_tokens;        /* all files together */
    int max_token;            /* largest token id present (scanned once at open) */
    void *map; size_t map_len;/* a one-file dataset's mapping (also files[0]), else NULL */
    size_t num_files;         /* 0 for memory datasets */
    DatasetFile *files;       /* in order; NULL for memory datasets */
    char name[256];           /* path, "PATTERN (N files)", or "embedded corpus" */
} Dataset;

/* Opens one file. Returns 0, or -1 with a one-line message in err naming the problem
 * (missing, unreadable, not a regular file, empty, token file truncated or with a bad
 * header/version). A FIFO, device or directory is refused without blocking. */
int dataset_open(Dataset *ds, const char *path, char *err, size_t errlen);
/* Opens what --data names, as one dataset:
 *   - a path that exists: that one file, exactly as dataset_open;
 *   - otherwise a comma-separated list of items, each a file or a glob(3) pattern (an item
 *     with * ? or [ that is not an existing file); a pattern's matches are sorted in byte
 *     order (strcmp), as llm.c's glob() does in the C locale, and take its place in the list.
 * The files are concatenated in that order; they must all be raw bytes or all token files.
 * The name is "SPEC (N files)". Errors (one line): a pattern that matches nothing, an empty
 * item, mixed kinds, more than DATASET_MAX_FILES files, or any file that dataset_open would
 * refuse. */
#define DATASET_MAX_FILES 4096
int dataset_open_spec(Dataset *ds, const char *spec, char *err, size_t errlen);
/* Installs the SIGBUS handler for mapped data files (idempotent; dataset_open calls it).
 * A bus error inside a mapped file prints one line to stderr and exits with status 2:
 *   error: training data FILE shrank while training (was N bytes, now M)
 *   error: training data FILE could not be read while training (bus error at byte K of N)
 * A bus error anywhere else goes to the previous handler, or kills as before. */
void dataset_guard_install(void);
/* A dataset over bytes already in memory (not copied, not freed). */
void dataset_from_bytes(Dataset *ds, const uint8_t *bytes, size_t n, const char *name);
/* The embedded default corpus. */
void dataset_embedded(Dataset *ds);
void dataset_close(Dataset *ds);
/* The file holding token i (index into ds->files), for a dataset with files; 0 otherwise. */
size_t dataset_file_of(const Dataset *ds, size_t i);
/* Token i of the dataset, i < num_tokens. */
static inline int dataset_token(const Dataset *ds, size_t i) {
    if (ds->num_files > 1) {
        const DatasetFile *f = &ds->files[dataset_file_of(ds, i)];
        return ds->kind == DATASET_BYTES ? (int)f->bytes[i - f->first]
                                         : (int)f->tokens[i - f->first];
    }
    return ds->kind == DATASET_BYTES ? (int)ds->bytes[i] : (int)ds->tokens[i];
}
/* The longest run of contiguous tokens from token i: a pointer to token i (const uint8_t * for
 * bytes, const uint16_t * for token files) and, in *n, how many tokens follow in the same file
 * (token i included). NULL with *n = 0 when i >= num_tokens. */
const void *dataset_run(const Dataset *ds, size_t i, size_t *n);

/* Writes tokens as an llm.c token file, through a temporary file renamed into place.
 * Returns 0, or -1 with a message in err. */
int token_file_write(const char *path, const uint16_t *tokens, size_t n, char *err, size_t errlen);

/* A stretch of the loader's range inside one file: windows first_window, first_window+1, ...
 * start at begin, begin+T, ... (token indices into the dataset). */
typedef struct DataPiece {
    size_t begin, end;
    size_t first_window, num_windows;
    const uint8_t *bytes;     /* token `begin` (DATASET_BYTES) */
    const uint16_t *tokens;   /* token `begin` (DATASET_TOKENS16) */
} DataPiece;

/* The loader serves windows of T+1 consecutive tokens from [begin, end) of a dataset:
 * inputs are the first T, targets the last T. Windows start at multiples of T (so
 * consecutive windows overlap by one token, as llm.c does), there are
 * nwin = (end - begin - 1) / T of them, and each step takes B of them.
 * A window never spans two files of a dataset (that would train on a transition the data
 * never holds): the range is cut at file boundaries into pieces, each piece has its own windows
 * at multiples of T from its start, numbered on from the previous piece's. With one file this
 * is the rule above. A file wholly inside the range with fewer than T+1 tokens is an error.
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
    size_t num_pieces;        /* the range cut at file boundaries (1 for a one-file dataset) */
    DataPiece *pieces;
} DataLoader;

/* Returns 0, or -1 with a message in err (e.g. the range holds fewer than B*world windows of
 * T+1 tokens: "data file X has N tokens; B=.. T=.. needs at least ..."). */
int loader_init(DataLoader *ld, const Dataset *ds, size_t begin, size_t end, int B, int T,
                int rank, int world, int shuffle, uint64_t seed, char *err, size_t errlen);
void loader_free(DataLoader *ld);
/* Where window w (< num_windows) starts: a token index into the dataset. */
size_t loader_window_start(const DataLoader *ld, size_t w);
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
