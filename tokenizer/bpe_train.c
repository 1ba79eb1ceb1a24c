/* tokenizer/bpe_train.c: learning BPE merges from a text.
 *
 * 1. Count the distinct chunks of the text (chunk_table.h); chunks of one byte never merge and
 *    are skipped.
 * 2. Lay every distinct chunk out as a doubly linked list of symbols (initially its bytes),
 *    weighted by its count. For each adjacent pair (a, b) keep
 *        count(a, b) = sum of the weights of its occurrences
 *    and the list of positions (index of the left symbol) where it has occurred.
 * 3. Repeat until the vocabulary is full: take the pair with the largest count -- ties to the
 *    smallest (a, b) -- from a max-heap, make it token c, and at each of its positions, left to
 *    right (so "aaa" becomes "(aa)a"), replace a b by c. Only the neighbours change:
 *        x a b y  ->  x c y:   count(x,a) -= w, count(b,y) -= w, count(x,c) += w, count(c,y) += w
 *    so one merge costs time in proportion to its occurrences, not to the corpus.
 * The heap is lazy: an entry whose count is stale is re-pushed with the current count when it
 * reaches the top; a pair whose count grew during a merge gets a fresh entry. Every live pair
 * thus has an entry at least as large as its count, and the top entry that is current is the
 * true maximum. Positions are checked when used (the symbols there may have merged since).
 */
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chunk_table.h"
#include "tokenizer/pretokenize.h"

#define DEFAULT_MAX_UNIQUE (1u << 21)
#define DEFAULT_MIN_COUNT 2
#define MAX_SYMBOLS 0x7FFFFFFF

typedef struct {
    int64_t count;
    int32_t *occ;          /* positions of the left symbol, in no particular order */
    uint32_t nocc, cap;
    uint32_t key;          /* a << 16 | b */
    uint32_t pushed_at;    /* merge number at which the pair was last re-pushed */
} Pair;

typedef struct {
    int64_t count;
    uint32_t key;
} HeapEntry;

typedef struct {
    /* symbols of all distinct chunks; sym = -1 once merged into its left neighbour */
    int32_t *sym, *prev, *next, *word;
    int64_t *weight;       /* per distinct chunk */
    size_t num_symbols, num_words;
    /* pairs, and a map from key to index into pairs */
    Pair *pairs;
    size_t num_pairs, pairs_cap;
    uint32_t *map_keys, *map_idx;
    size_t map_slots;
    /* pairs whose count grew during the current merge */
    uint32_t *grown;
    size_t num_grown, grown_cap;
    HeapEntry *heap;
    size_t heap_len, heap_cap;
    uint32_t merge_no;
    int oom;
} Trainer;

/* ---- the pair map ---------------------------------------------------------------------------- */

#define MAP_EMPTY 0xFFFFFFFFu

static size_t map_slot(uint32_t key, size_t mask) {
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
}

static int map_grow(Trainer *tr) {
    size_t slots = tr->map_slots ? 2 * tr->map_slots : 1 << 16;
    uint32_t *keys = malloc(slots * sizeof *keys), *idx = malloc(slots * sizeof *idx);
    if (!keys || !idx) {
        free(keys);
        free(idx);
        return -1;
    }
    memset(keys, 0xFF, slots * sizeof *keys);
    for (size_t i = 0; i < tr->num_pairs; i++) {
        size_t s = map_slot(tr->pairs[i].key, slots - 1);
        while (keys[s] != MAP_EMPTY) s = (s + 1) & (slots - 1);
        keys[s] = tr->pairs[i].key;
        idx[s] = (uint32_t)i;
    }
    free(tr->map_keys);
    free(tr->map_idx);
    tr->map_keys = keys;
    tr->map_idx = idx;
    tr->map_slots = slots;
    return 0;
}

/* The pair (a, b), created with count 0 when new; NULL when out of memory. */
static Pair *get_pair(Trainer *tr, uint32_t a, uint32_t b) {
    uint32_t key = a << 16 | b;
    size_t mask = tr->map_slots - 1, s = map_slot(key, mask);
    for (; tr->map_keys[s] != MAP_EMPTY; s = (s + 1) & mask)
        if (tr->map_keys[s] == key) return &tr->pairs[tr->map_idx[s]];
    if (2 * (tr->num_pairs + 1) > tr->map_slots || tr->num_pairs == tr->pairs_cap) {
        if (2 * (tr->num_pairs + 1) > tr->map_slots && map_grow(tr)) return NULL;
        if (tr->num_pairs == tr->pairs_cap) {
            size_t cap = tr->pairs_cap ? 2 * tr->pairs_cap : 1 << 16;
            Pair *bigger = realloc(tr->pairs, cap * sizeof *bigger);
            if (!bigger) return NULL;
            tr->pairs = bigger;
            tr->pairs_cap = cap;
        }
        mask = tr->map_slots - 1;
        for (s = map_slot(key, mask); tr->map_keys[s] != MAP_EMPTY; s = (s + 1) & mask) {}
    }
    Pair *p = &tr->pairs[tr->num_pairs];
    memset(p, 0, sizeof *p);
    p->key = key;
    p->pushed_at = UINT32_MAX;
    tr->map_keys[s] = key;
    tr->map_idx[s] = (uint32_t)tr->num_pairs++;
    return p;
}

/* ---- the heap: largest count first, then smallest key ------------------------------------------ */

static int heap_above(HeapEntry x, HeapEntry y) {
    return x.count > y.count || (x.count == y.count && x.key < y.key);
}

static void heap_sift_down(HeapEntry *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, top = i;
        if (l < n && heap_above(h[l], h[top])) top = l;
        if (r < n && heap_above(h[r], h[top])) top = r;
        if (top == i) return;
        HeapEntry t = h[i]; h[i] = h[top]; h[top] = t;
        i = top;
    }
}

static int heap_push(Trainer *tr, int64_t count, uint32_t key) {
    if (tr->heap_len == tr->heap_cap) {
        size_t cap = tr->heap_cap ? 2 * tr->heap_cap : 1 << 16;
        HeapEntry *bigger = realloc(tr->heap, cap * sizeof *bigger);
        if (!bigger) return -1;
        tr->heap = bigger;
        tr->heap_cap = cap;
    }
    size_t i = tr->heap_len++;
    tr->heap[i] = (HeapEntry){count, key};
    while (i > 0 && heap_above(tr->heap[i], tr->heap[(i - 1) / 2])) {
        HeapEntry t = tr->heap[i]; tr->heap[i] = tr->heap[(i - 1) / 2]; tr->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    return 0;
}

static HeapEntry heap_pop(Trainer *tr) {
    HeapEntry top = tr->heap[0];
    tr->heap[0] = tr->heap[--tr->heap_len];
    heap_sift_down(tr->heap, tr->heap_len, 0);
    return top;
}

/* ---- pair counts ------------------------------------------------------------------------------- */

/* count(a, b) += w, with an occurrence at pos; remembers the pair as grown. */
static void pair_add(Trainer *tr, uint32_t a, uint32_t b, int64_t w, int32_t pos) {
    Pair *p = get_pair(tr, a, b);
    if (!p) { tr->oom = 1; return; }
    if (p->nocc == p->cap) {
        uint32_t cap = p->cap ? 2 * p->cap : 2;
        int32_t *bigger = realloc(p->occ, cap * sizeof *bigger);
        if (!bigger) { tr->oom = 1; return; }
        p->occ = bigger;
        p->cap = cap;
    }
    p->occ[p->nocc++] = pos;
    p->count += w;
    if (p->pushed_at != tr->merge_no) {
        p->pushed_at = tr->merge_no;
        if (tr->num_grown == tr->grown_cap) {
            size_t cap = tr->grown_cap ? 2 * tr->grown_cap : 1024;
            uint32_t *bigger = realloc(tr->grown, cap * sizeof *bigger);
            if (!bigger) { tr->oom = 1; return; }
            tr->grown = bigger;
            tr->grown_cap = cap;
        }
        tr->grown[tr->num_grown++] = (uint32_t)(p - tr->pairs);
    }
}

/* count(a, b) -= w; a pair with no occurrence left drops its position list. */
static void pair_remove(Trainer *tr, uint32_t a, uint32_t b, int64_t w) {
    Pair *p = get_pair(tr, a, b);
    if (!p) { tr->oom = 1; return; }
    p->count -= w;
    if (p->count <= 0) {
        p->count = 0;
        free(p->occ);
        p->occ = NULL;
        p->nocc = p->cap = 0;
    }
}

/* Gives every pair that grew during this merge a heap entry with its new count. */
static void push_grown(Trainer *tr) {
    for (size_t i = 0; i < tr->num_grown; i++) {
        Pair *p = &tr->pairs[tr->grown[i]];
        if (p->count > 0 && heap_push(tr, p->count, p->key)) tr->oom = 1;
    }
    tr->num_grown = 0;
}

/* ---- building the symbol lists from the chunk table -------------------------------------------- */

static int load_words(Trainer *tr, const ChunkTable *t, char *err, size_t errlen) {
    size_t symbols = 0, words = 0;
    for (size_t s = 0; s < t->slots; s++)
        if (t->hashes[s]) { symbols += t->lens[s]; words++; }
    if (symbols > MAX_SYMBOLS) {
        snprintf(err, errlen, "%zu distinct chunk bytes: too many, lower max_unique_chunks", symbols);
        return -1;
    }
    size_t n = symbols ? symbols : 1;
    tr->sym = malloc(n * sizeof *tr->sym);
    tr->prev = malloc(n * sizeof *tr->prev);
    tr->next = malloc(n * sizeof *tr->next);
    tr->word = malloc(n * sizeof *tr->word);
    tr->weight = malloc((words ? words : 1) * sizeof *tr->weight);
    if (!tr->sym || !tr->prev || !tr->next || !tr->word || !tr->weight || map_grow(tr)) {
        snprintf(err, errlen, "out of memory laying out %zu chunk bytes", symbols);
        return -1;
    }
    size_t pos = 0, w = 0;
    for (size_t s = 0; s < t->slots; s++) {
        if (!t->hashes[s]) continue;
        const uint8_t *bytes = t->arena + t->offsets[s];
        size_t len = t->lens[s];
        tr->weight[w] = (int64_t)t->counts[s];
        for (size_t i = 0; i < len; i++) {
            tr->sym[pos + i] = bytes[i];
            tr->prev[pos + i] = i ? (int32_t)(pos + i - 1) : -1;
            tr->next[pos + i] = i + 1 < len ? (int32_t)(pos + i + 1) : -1;
            tr->word[pos + i] = (int32_t)w;
            if (i) pair_add(tr, bytes[i - 1], bytes[i], tr->weight[w], (int32_t)(pos + i - 1));
        }
        pos += len;
        w++;
    }
    tr->num_symbols = symbols;
    tr->num_words = words;
    push_grown(tr);
    if (tr->oom) {
        snprintf(err, errlen, "out of memory counting pairs");
        return -1;
    }
    return 0;
}

/* ---- merging ----------------------------------------------------------------------------------- */

static int cmp_int32(const void *x, const void *y) {
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

/* Replaces every current occurrence of (a, b) by c, left to right. */
static void apply_merge(Trainer *tr, Pair *p, int32_t c) {
    uint32_t a = p->key >> 16, b = p->key & 0xFFFF;
    int32_t *occ = p->occ;
    size_t nocc = p->nocc;
    p->occ = NULL;
    p->nocc = p->cap = 0;
    qsort(occ, nocc, sizeof *occ, cmp_int32);
    for (size_t k = 0; k < nocc; k++) {
        int32_t i = occ[k];
        if (k && occ[k - 1] == i) continue;
        int32_t j = tr->next[i];
        if (tr->sym[i] != (int32_t)a || j < 0 || tr->sym[j] != (int32_t)b) continue;
        int64_t w = tr->weight[tr->word[i]];
        int32_t h = tr->prev[i], after = tr->next[j];
        if (h >= 0) {
            pair_remove(tr, (uint32_t)tr->sym[h], a, w);
            pair_add(tr, (uint32_t)tr->sym[h], (uint32_t)c, w, h);
        }
        if (after >= 0) {
            pair_remove(tr, b, (uint32_t)tr->sym[after], w);
            pair_add(tr, (uint32_t)c, (uint32_t)tr->sym[after], w, i);
        }
        tr->sym[i] = c;
        tr->sym[j] = -1;
        tr->next[i] = after;
        if (after >= 0) tr->prev[after] = i;
    }
    free(occ);
    /* re-fetch: pair_add may have moved the pairs array */
    Pair *q = get_pair(tr, a, b);
    if (q) q->count = 0;
    push_grown(tr);
}

/* The current best pair, or NULL when none is left. */
static Pair *best_pair(Trainer *tr) {
    while (tr->heap_len) {
        HeapEntry e = heap_pop(tr);
        Pair *p = get_pair(tr, e.key >> 16, e.key & 0xFFFF);
        if (!p) { tr->oom = 1; return NULL; }
        if (p->count == e.count) return p;
        if (p->count > 0 && p->count < e.count && heap_push(tr, p->count, p->key)) {
            tr->oom = 1;
            return NULL;
        }
    }
    return NULL;
}

static void trainer_free(Trainer *tr) {
    for (size_t i = 0; i < tr->num_pairs; i++) free(tr->pairs[i].occ);
    free(tr->pairs);
    free(tr->map_keys);
    free(tr->map_idx);
    free(tr->grown);
    free(tr->heap);
    free(tr->sym);
    free(tr->prev);
    free(tr->next);
    free(tr->word);
    free(tr->weight);
}

/* Steps 2 and 3: merges from the counted chunks into a new tokenizer. The table is freed as
 * soon as its chunks are laid out, so its memory and the trainer's never add up. */
static int learn_merges(Tokenizer *tok, ChunkTable *table, const BpeTrainOptions *opt,
                        char *err, size_t errlen) {
    int target = opt->vocab_size;
    uint64_t min_count = opt->min_pair_count ? opt->min_pair_count : DEFAULT_MIN_COUNT;
    Trainer tr;
    memset(&tr, 0, sizeof tr);
    uint16_t (*merges)[2] = malloc((size_t)(target - 256 + 1) * sizeof *merges);
    int num = 0, rc = -1;
    if (!merges) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (load_words(&tr, table, err, errlen)) goto done;
    chunk_table_free(table);
    if (opt->verbose)
        fprintf(stderr, "bpe: %zu distinct chunks, %zu bytes in them, %zu pairs\n", tr.num_words,
                tr.num_symbols, tr.num_pairs);
    while (256 + num < target) {
        tr.merge_no = (uint32_t)num + 1; /* 0 was the initial count */
        Pair *p = best_pair(&tr);
        if (!p || (uint64_t)p->count < min_count) break;
        merges[num][0] = (uint16_t)(p->key >> 16);
        merges[num][1] = (uint16_t)(p->key & 0xFFFF);
        if (opt->verbose && (num % 1000 == 0 || 256 + num + 1 == target))
            fprintf(stderr, "bpe: merge %d: (%u, %u) -> %d, count %lld\n", num, merges[num][0],
                    merges[num][1], 256 + num, (long long)p->count);
        apply_merge(&tr, p, 256 + num);
        num++;
        if (tr.oom) break;
    }
    if (tr.oom) {
        snprintf(err, errlen, "out of memory after %d merges", num);
        goto done;
    }
    rc = tokenizer_init_merges(tok, (const uint16_t(*)[2])merges, num, err, errlen);
done:
    trainer_free(&tr);
    free(merges);
    return rc;
}

/* ---- entry points ------------------------------------------------------------------------------ */

static int check_options(const BpeTrainOptions *opt, char *err, size_t errlen) {
    if (opt->vocab_size > TOKENIZER_MAX_VOCAB) {
        snprintf(err, errlen, "vocabulary size %d too large: token ids are uint16, at most %d",
                 opt->vocab_size, TOKENIZER_MAX_VOCAB);
        return -1;
    }
    if (opt->vocab_size < 256) {
        snprintf(err, errlen, "vocabulary size %d too small: the 256 bytes come first",
                 opt->vocab_size);
        return -1;
    }
    return 0;
}

static size_t max_unique(const BpeTrainOptions *opt) {
    return opt->max_unique_chunks ? opt->max_unique_chunks : DEFAULT_MAX_UNIQUE;
}

int tokenizer_train_bytes(Tokenizer *tok, const uint8_t *data, size_t n,
                          const BpeTrainOptions *opt, char *err, size_t errlen) {
    memset(tok, 0, sizeof *tok);
    if (check_options(opt, err, errlen)) return -1;
    ChunkTable table;
    if (chunk_table_init(&table, max_unique(opt))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t pos = 0; pos < n;) {
        size_t len = pretok_chunk_len(data + pos, n - pos);
        if (len > 1 && chunk_table_add(&table, data + pos, len, 1)) {
            snprintf(err, errlen, "out of memory counting chunks");
            chunk_table_free(&table);
            return -1;
        }
        pos += len;
    }
    int rc = learn_merges(tok, &table, opt, err, errlen);
    chunk_table_free(&table);
    return rc;
}

int tokenizer_train_file(Tokenizer *tok, const char *path, const BpeTrainOptions *opt,
                         char *err, size_t errlen) {
    memset(tok, 0, sizeof *tok);
    if (check_options(opt, err, errlen)) return -1;
    ChunkReader r;
    if (chunk_reader_open(&r, path, err, errlen)) return -1;
    ChunkTable table;
    if (chunk_table_init(&table, max_unique(opt))) {
        chunk_reader_close(&r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const uint8_t *chunk;
    size_t len;
    int got, rc = -1;
    while ((got = chunk_reader_next(&r, &chunk, &len)) == 1) {
        if (len > 1 && chunk_table_add(&table, chunk, len, 1)) {
            snprintf(err, errlen, "out of memory counting chunks of %s", path);
            goto done;
        }
    }
    if (got < 0) {
        snprintf(err, errlen, "read error in %s", path);
        goto done;
    }
    if (opt->verbose)
        fprintf(stderr, "bpe: read %llu bytes of %s%s\n", (unsigned long long)r.bytes_read, path,
                table.prune_threshold ? " (rare chunks pruned)" : "");
    rc = learn_merges(tok, &table, opt, err, errlen);
done:
    chunk_reader_close(&r);
    chunk_table_free(&table);
    return rc;
}
