/* data/loader.c: the DataLoader of data/dataset.h.
 *
 * Window w of the range [begin, end) is the T+1 tokens starting at begin + w*T; there are
 * nwin = (end - begin - 1) / T of them. One step serves a group of B*world windows; rank r takes
 * slots r*B .. r*B+B-1 of the group, so ranks are disjoint. Slot s of the epoch is window s
 * (sequential) or window perm[s] (shuffled), where perm is a Fisher-Yates shuffle driven by
 * splitmix64 seeded from (seed, epoch): every rank draws the same permutation, and resuming at
 * (epoch, step) redraws it exactly. The nwin mod (B*world) windows left over are skipped that
 * epoch (in shuffled mode a different few each epoch).
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
    size_t nwin = n > 0 ? (n - 1) / (size_t)T : 0;
    if (nwin < per_step) {
        set_err(err, errlen,
                "data file %s has %zu tokens in [%zu, %zu); B=%d T=%d world=%d needs at least %zu",
                ds->name, n, begin, end, B, T, world, per_step * (size_t)T + 1);
        return -1;
    }
    if (shuffle && nwin > UINT32_MAX) {
        set_err(err, errlen, "loader: %zu windows in %s are too many to shuffle (max %u)", nwin,
                ds->name, UINT32_MAX);
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
    if (ld->shuffle) {
        ld->perm = malloc(nwin * sizeof *ld->perm);
        if (!ld->perm) {
            set_err(err, errlen, "loader: out of memory for %zu window indices", nwin);
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
    memset(ld, 0, sizeof *ld);
}

/* Copies window w: inputs are its first T tokens, targets its last T. */
static void copy_window(const DataLoader *ld, size_t w, int *inputs, int *targets) {
    size_t start = ld->begin + w * (size_t)ld->T;
    for (int t = 0; t < ld->T; t++) {
        inputs[t] = dataset_token(ld->ds, start + (size_t)t);
        targets[t] = dataset_token(ld->ds, start + (size_t)t + 1);
    }
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
