/* tokenizer/chunk_table.c: distinct chunks and their counts (see chunk_table.h). */
#include "tokenizer/chunk_table.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer/hash.h"

#define INITIAL_SLOTS (1u << 16)

static int alloc_slots(ChunkTable *t, size_t slots) {
    t->hashes = calloc(slots, sizeof *t->hashes);
    t->counts = malloc(slots * sizeof *t->counts);
    t->offsets = malloc(slots * sizeof *t->offsets);
    t->lens = malloc(slots);
    t->slots = slots;
    return t->hashes && t->counts && t->offsets && t->lens ? 0 : -1;
}

static void free_slots(ChunkTable *t) {
    free(t->hashes);
    free(t->counts);
    free(t->offsets);
    free(t->lens);
    t->hashes = t->counts = t->offsets = NULL;
    t->lens = NULL;
}

int chunk_table_init(ChunkTable *t, size_t max_entries) {
    memset(t, 0, sizeof *t);
    t->max_entries = max_entries < 16 ? 16 : max_entries;
    t->max_bytes = t->max_entries * CHUNK_TABLE_BYTES_PER_ENTRY;
    t->arena_cap = 1 << 20;
    t->arena = malloc(t->arena_cap);
    if (!t->arena || alloc_slots(t, INITIAL_SLOTS)) {
        chunk_table_free(t);
        return -1;
    }
    return 0;
}

void chunk_table_free(ChunkTable *t) {
    free_slots(t);
    free(t->arena);
    memset(t, 0, sizeof *t);
}

static size_t find_slot(const ChunkTable *t, uint64_t h, const uint8_t *chunk, size_t n) {
    size_t mask = t->slots - 1;
    for (size_t s = h & mask;; s = (s + 1) & mask) {
        if (t->hashes[s] == 0) return s;
        if (t->hashes[s] == h && t->lens[s] == n && memcmp(t->arena + t->offsets[s], chunk, n) == 0)
            return s;
    }
}

uint64_t chunk_table_count(const ChunkTable *t, const uint8_t *chunk, size_t n) {
    size_t s = find_slot(t, tok_hash_bytes(chunk, n) | 1, chunk, n);
    return t->hashes[s] ? t->counts[s] : 0;
}

/* Rebuilds the table with `slots` slots, keeping the entries whose count is >= keep_min and
 * compacting the arena. */
static int rebuild(ChunkTable *t, size_t slots, uint64_t keep_min) {
    ChunkTable old = *t;
    size_t new_arena_cap = old.arena_cap;
    uint8_t *arena = malloc(new_arena_cap);
    if (!arena || alloc_slots(t, slots)) {
        free(arena);
        free_slots(t);
        *t = old;
        return -1;
    }
    t->arena = arena;
    t->arena_len = 0;
    t->used = 0;
    for (size_t s = 0; s < old.slots; s++) {
        if (old.hashes[s] == 0 || old.counts[s] < keep_min) continue;
        const uint8_t *bytes = old.arena + old.offsets[s];
        size_t d = find_slot(t, old.hashes[s], bytes, old.lens[s]);
        t->hashes[d] = old.hashes[s];
        t->counts[d] = old.counts[s];
        t->lens[d] = old.lens[s];
        t->offsets[d] = t->arena_len;
        memcpy(t->arena + t->arena_len, bytes, old.lens[s]);
        t->arena_len += old.lens[s];
        t->used++;
    }
    free_slots(&old);
    free(old.arena);
    return 0;
}

/* Whether the chunks seen at least min times fill more than half the bounds. */
static int over_half_full(const ChunkTable *t, uint64_t min) {
    size_t n = 0, bytes = 0;
    for (size_t s = 0; s < t->slots; s++)
        if (t->hashes[s] && t->counts[s] >= min) {
            n++;
            bytes += t->lens[s];
        }
    return n > t->max_entries / 2 || bytes > t->max_bytes / 2;
}

/* Drops the rarest chunks until at most half of each bound is used. */
static int prune(ChunkTable *t) {
    uint64_t threshold = t->prune_threshold ? t->prune_threshold : 2;
    while (threshold < UINT64_MAX / 2 && over_half_full(t, threshold)) threshold *= 2;
    t->prune_threshold = threshold;
    return rebuild(t, t->slots, threshold);
}

int chunk_table_add(ChunkTable *t, const uint8_t *chunk, size_t n, uint64_t count) {
    uint64_t h = tok_hash_bytes(chunk, n) | 1; /* never 0, the free mark */
    size_t s = find_slot(t, h, chunk, n);
    if (t->hashes[s]) {
        t->counts[s] += count;
        return 0;
    }
    if (t->used >= t->max_entries || t->arena_len + n > t->max_bytes) {
        if (prune(t)) return -1;
        s = find_slot(t, h, chunk, n);
    } else if (2 * (t->used + 1) > t->slots) {
        if (rebuild(t, 2 * t->slots, 0)) return -1;
        s = find_slot(t, h, chunk, n);
    }
    if (t->arena_len + n > t->arena_cap) {
        size_t cap = 2 * t->arena_cap;
        uint8_t *bigger = realloc(t->arena, cap);
        if (!bigger) return -1;
        t->arena = bigger;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, chunk, n);
    t->hashes[s] = h;
    t->counts[s] = count;
    t->lens[s] = (uint8_t)n;
    t->offsets[s] = t->arena_len;
    t->arena_len += n;
    t->used++;
    return 0;
}
