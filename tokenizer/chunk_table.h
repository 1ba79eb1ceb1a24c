/* tokenizer/chunk_table.h: counting distinct chunks of a text in bounded memory.
 *
 * An open-addressing hash table from chunk bytes to a count. It holds at most max_entries
 * chunks and max_bytes = CHUNK_TABLE_BYTES_PER_ENTRY * max_entries bytes of them (which bounds
 * the trainer's memory later, ~35 bytes per byte of distinct chunks): when either fills, chunks
 * seen fewer than t times are dropped (t = 2, doubled until at most half of each bound is
 * used), and the threshold at which such pruning happened is kept in prune_threshold. Without pruning the counts are exact; with it, a chunk's count misses what
 * it had when it was dropped -- the rare chunks matter least to BPE, whose merges follow the
 * frequent pairs.
 */
#ifndef CHUNK_TABLE_H
#define CHUNK_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define CHUNK_TABLE_BYTES_PER_ENTRY 16

typedef struct {
    uint64_t *hashes;       /* 0 where free */
    uint64_t *counts;
    uint64_t *offsets;      /* into arena: the chunk's bytes */
    uint8_t *lens;
    size_t slots, used, max_entries, max_bytes;
    uint8_t *arena;
    size_t arena_len, arena_cap;
    uint64_t prune_threshold; /* 0 when nothing was dropped */
} ChunkTable;

/* Returns 0, or -1 when out of memory. */
int chunk_table_init(ChunkTable *t, size_t max_entries);
/* Adds count occurrences of the chunk (1 <= n <= 255). Returns 0, or -1 when out of memory. */
int chunk_table_add(ChunkTable *t, const uint8_t *chunk, size_t n, uint64_t count);
/* How many times the chunk was counted (0 when absent or dropped). */
uint64_t chunk_table_count(const ChunkTable *t, const uint8_t *chunk, size_t n);
void chunk_table_free(ChunkTable *t);

#endif
