/* data/loader.c: the DataLoader of data/dataset.h.
 *
 * Window w of the range [begin, end) is the T+1 tokens starting at begin + w*T; there are
 * nwin = (end - begin - 1) / T of them. One step serves a group of B*world windows; rank r takes
 * slots r*B .. r*B+B-1 of the group, so ranks are disjoint. Slot s of the epoch is window s
 * (sequential) or window perm[s] (shuffled), where perm is a Fisher-Yates shuffle driven by
 * splitmix64 seeded from (seed, epoch): every rank draws the same permutation, and resuming at
 * (epoch, step) redraws it exactly. The nwin mod (B*world) windows left over are skipped that
 * epoch (in shuffled mode a different few each epoch).
 *
 * A dataset of several files: the range is cut at file boundaries into pieces, and the windows
 * above are those of each piece in turn (piece p's windows follow piece p-1's in numbering), so
 * no window holds the last tokens of one file and the first of the next.
 */
#include "data/dataset.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/error_text.h"

/* splitmix64: a tiny, well-mixed 64-bit generator (Steele, Lea, Flood 2014). */
static uint64_t splitmix64_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, bound), bound > 0: rejection sampling removes the modulo bias. */
static uint64_t random_below(uint64_t *state, uint64_t bound) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound; /* largest multiple of bound, exclusive */
    uint64_t x;
    do x = splitmix64_next(state);
    while (x >= limit);
    return x % bound;
}

/* The epoch's permutation of windows: identity shuffled by Fisher-Yates. */
static void draw_permutation(uint32_t *perm, size_t n, uint64_t seed, uint64_t epoch) {
    uint64_t state = seed;
    splitmix64_next(&state);
    state ^= epoch * 0xD1B54A32D192ED03ULL; /* a different stream for every epoch */
    splitmix64_next(&state);
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)random_below(&state, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

int loader_init(DataLoader *ld, const Dataset *ds, size_t begin, size_t end, int B, int T,
                int rank, int world, int shuffle, uint64_t seed, char *err, size_t errlen) {
    memset(ld, 0, sizeof *ld);
    if (!ds) {
        set_err(err, errlen, "loader: no dataset");
        return -1;
    }
    if (B <= 0 || T <= 0 || world <= 0 || rank < 0 || rank >= world) {
        set_err(err, errlen, "loader: bad shape B=%d T=%d rank=%d world=%d", B, T, rank, world);
        return -1;
    }
    if (begin > end || end > ds->num_tokens) {
        set_err(err, errlen, "loader: range [%zu, %zu) is not inside %s (%zu tokens)", begin, end,
                ds->name, ds->num_tokens);
        return -1;
    }
    size_t n = end - begin;
    size_t per_step = (size_t)B * (size_t)world;
    /* The range's pieces, one per file it touches (one for memory and one-file datasets). */
    size_t f0 = 0, f1 = 0;
    if (ds->num_files > 1) {
        f0 = dataset_file_of(ds, begin);
        f1 = n > 0 ? dataset_file_of(ds, end - 1) : f0;
    }
    size_t npieces = f1 - f0 + 1;
    DataPiece *pieces = calloc(npieces, sizeof *pieces);
    if (!pieces) {
        set_err(err, errlen, "loader: out of memory for %zu pieces of %s", npieces, ds->name);
        return -1;
    }
    size_t nwin = 0;
    for (size_t i = 0; i < npieces; i++) {
        DataPiece *p = &pieces[i];
        p->begin = begin;
        p->end = end;
        size_t local = begin; /* index of p->begin inside its file */
        if (ds->num_files > 1) {
            const DatasetFile *f = &ds->files[f0 + i];
            if (f->first > p->begin) p->begin = f->first;
            if (f->first + f->num_tokens < p->end) p->end = f->first + f->num_tokens;
            local = p->begin - f->first;
            /* A whole file too short for one window would silently never be trained on. */
            if (f->first >= begin && f->first + f->num_tokens <= end &&
                f->num_tokens < (size_t)T + 1) {
                set_err(err, errlen,
                        "data file %s (file %zu of %s) has %zu tokens, fewer than T+1 = %zu; "
                        "no window fits in it",
                        f->path, f0 + i + 1, ds->name, f->num_tokens, (size_t)T + 1);
                free(pieces);
                return -1;
            }
            p->bytes = f->bytes ? f->bytes + local : NULL;
            p->tokens = f->tokens ? f->tokens + local : NULL;
        } else {
            p->bytes = ds->bytes ? ds->bytes + local : NULL;
            p->tokens = ds->tokens ? ds->tokens + local : NULL;
        }
        size_t len = p->end - p->begin;
        p->first_window = nwin;
        p->num_windows = len > 0 ? (len - 1) / (size_t)T : 0;
        nwin += p->num_windows;
    }
    if (nwin < per_step) {
        if (npieces > 1)
            set_err(err, errlen,
                    "data %s has %zu tokens in [%zu, %zu) across %zu files, %zu windows of T+1 "
                    "inside one file; B=%d T=%d world=%d needs at least %zu windows",
                    ds->name, n, begin, end, npieces, nwin, B, T, world, per_step);
        else
            set_err(err, errlen,
                    "data file %s has %zu tokens in [%zu, %zu); B=%d T=%d world=%d needs at least "
                    "%zu", ds->name, n, begin, end, B, T, world, per_step * (size_t)T + 1);
        free(pieces);
        return -1;
    }
    if (shuffle && nwin > UINT32_MAX) {
        set_err(err, errlen, "loader: %zu windows in %s are too many to shuffle (max %u)", nwin,
                ds->name, UINT32_MAX);
        free(pieces);
        return -1;
    }
    ld->ds = ds;
    ld->begin = begin;
    ld->end = end;
    ld->B = B;
    ld->T = T;
    ld->rank = rank;
    ld->world = world;
    ld->shuffle = shuffle ? 1 : 0;
    ld->seed = seed;
    ld->num_windows = nwin;
    ld->steps_per_epoch = nwin / per_step;
    ld->num_pieces = npieces;
    ld->pieces = pieces;
    if (ld->shuffle) {
        ld->perm = malloc(nwin * sizeof *ld->perm);
        if (!ld->perm) {
            set_err(err, errlen, "loader: out of memory for %zu window indices", nwin);
            free(pieces);
            memset(ld, 0, sizeof *ld);
            return -1;
        }
    }
    loader_seek(ld, 0, 0);
    return 0;
}

void loader_free(DataLoader *ld) {
    if (!ld) return;
    free(ld->perm);
    free(ld->pieces);
    memset(ld, 0, sizeof *ld);
}

/* The piece holding window w: the last with first_window <= w. */
static const DataPiece *piece_of(const DataLoader *ld, size_t w) {
    size_t lo = 0, hi = ld->num_pieces;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (ld->pieces[mid].first_window <= w) lo = mid;
        else hi = mid;
    }
    return &ld->pieces[lo];
}

size_t loader_window_start(const DataLoader *ld, size_t w) {
    const DataPiece *p = piece_of(ld, w);
    return p->begin + (w - p->first_window) * (size_t)ld->T;
}

/* A token above the largest the file held when opened: the file was rewritten in place under
 * its mapping. Serving it would index past the model's embedding table, so the run stops. */
static void token_changed(const DataLoader *ld, size_t start) {
    const Dataset *ds = ld->ds;
    for (size_t i = start; i <= start + (size_t)ld->T; i++) {
        int tok = dataset_token(ds, i);
        if (tok <= ds->max_token) continue;
        const DatasetFile *f = ds->num_files > 0 ? &ds->files[dataset_file_of(ds, i)] : NULL;
        fflush(stdout);
        fprintf(stderr,
                "error: training data %s changed while training: token %zu is %d, above the "
                "largest id (%d) it held when opened\n", f ? f->path : ds->name,
                f ? i - f->first : i, tok, ds->max_token);
        exit(2);
    }
}

/* Copies window w: inputs are its first T tokens, targets its last T. */
static void copy_window(const DataLoader *ld, size_t w, int *inputs, int *targets) {
    const DataPiece *p = piece_of(ld, w);
    size_t at = (w - p->first_window) * (size_t)ld->T; /* from the piece's start */
    /* one loop for both element types (a macro keeps each loop's loads of its own width) */
#define COPY_TOKENS(x)                                                                       \
    do {                                                                                     \
        int top = 0;                                                                         \
        for (int t = 0; t < ld->T; t++) {                                                    \
            inputs[t] = (x)[t];                                                              \
            targets[t] = (x)[t + 1];                                                         \
            top |= (x)[t + 1] > ld->ds->max_token;                                           \
        }                                                                                    \
        if (top || (x)[0] > ld->ds->max_token) token_changed(ld, p->begin + at);             \
    } while (0)
    if (ld->ds->kind == DATASET_BYTES) COPY_TOKENS(p->bytes + at);
    else COPY_TOKENS(p->tokens + at);
#undef COPY_TOKENS
}

void loader_next(DataLoader *ld, int *inputs, int *targets) {
    if (ld->steps_per_epoch == 0) return; /* not initialised */
    size_t group = ld->step_in_epoch * (size_t)ld->B * (size_t)ld->world;
    size_t first = group + (size_t)ld->rank * (size_t)ld->B;
    for (int b = 0; b < ld->B; b++) {
        size_t slot = first + (size_t)b;
        size_t w = ld->perm ? ld->perm[slot] : slot;
        copy_window(ld, w, inputs + (size_t)b * ld->T, targets + (size_t)b * ld->T);
    }
    /* Advance; finishing the epoch wraps at once, so (epoch, step) always names the next batch. */
    if (++ld->step_in_epoch == ld->steps_per_epoch) loader_seek(ld, ld->epoch + 1, 0);
}

void loader_reset(DataLoader *ld) { loader_seek(ld, 0, 0); }

void loader_seek(DataLoader *ld, uint64_t epoch, size_t step_in_epoch) {
    if (ld->steps_per_epoch == 0) return; /* not initialised */
    /* A step past the end of an epoch counts on into the following ones. */
    epoch += step_in_epoch / ld->steps_per_epoch;
    step_in_epoch %= ld->steps_per_epoch;
    if (ld->perm) draw_permutation(ld->perm, ld->num_windows, ld->seed, epoch);
    ld->epoch = epoch;
    ld->step_in_epoch = step_in_epoch;
}
