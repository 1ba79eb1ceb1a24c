/* tokenizer/bpe.c: the Tokenizer itself -- building it from merges, encoding, decoding.
 *
 * Encoding one chunk: start from its bytes; while some adjacent pair is a merge, replace the
 * leftmost occurrence of the pair with the lowest rank (= the smallest merged id) by its id.
 * Merges only create pairs that contain the new token, whose ranks are all higher, so this
 * applies the merges in rank order, each left to right -- exactly what training did to the
 * chunk. Chunks repeat heavily in text, so results are memoised in a bounded table that is
 * simply emptied when full.
 */
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/hash.h"
#include "tokenizer/pretokenize.h"

#define PAIR_EMPTY 0xFFFFFFFFu
#define NO_MERGE 0xFFFFFFFFu

static uint32_t pair_key(uint32_t left, uint32_t right) { return left << 16 | right; }

static uint32_t pair_slot(uint32_t key, uint32_t mask) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
}

/* The id that merges (left, right), or NO_MERGE. */
static uint32_t merged_id(const Tokenizer *tok, uint32_t left, uint32_t right) {
    uint32_t key = pair_key(left, right);
    for (uint32_t s = pair_slot(key, tok->pair_mask);; s = (s + 1) & tok->pair_mask) {
        uint32_t k = tok->pair_keys[s];
        if (k == key) return tok->pair_ids[s];
        if (k == PAIR_EMPTY) return NO_MERGE;
    }
}

/* ---- the encoder's memo: chunk bytes -> tokens ---------------------------------------------- */

/* It starts small and doubles up to these bounds, then is emptied whenever it fills. */
#define CACHE_MIN_SLOTS (1u << 10)
#define CACHE_MAX_SLOTS (1u << 18)     /* emptied at half full */
#define CACHE_MIN_ARENA (64u << 10)
#define CACHE_MAX_ARENA (16u << 20)    /* bytes of entries */

/* An entry in the arena: [len][ntok][len bytes][ntok uint16 tokens], len, ntok <= 255. */
typedef struct TokenizerCache {
    uint64_t *hashes;                  /* 0 where free */
    uint32_t *offsets;
    size_t slots, used;
    uint8_t *arena;
    size_t arena_len, arena_cap;
} TokenizerCache;

static void cache_free(TokenizerCache *c) {
    if (!c) return;
    free(c->hashes);
    free(c->offsets);
    free(c->arena);
    free(c);
}

static TokenizerCache *cache_new(void) {
    TokenizerCache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slots = CACHE_MIN_SLOTS;
    c->arena_cap = CACHE_MIN_ARENA;
    c->hashes = calloc(c->slots, sizeof *c->hashes);
    c->offsets = malloc(c->slots * sizeof *c->offsets);
    c->arena = malloc(c->arena_cap);
    if (!c->hashes || !c->offsets || !c->arena) {
        cache_free(c);
        return NULL;
    }
    return c;
}

static void cache_clear(TokenizerCache *c) {
    memset(c->hashes, 0, c->slots * sizeof *c->hashes);
    c->used = 0;
    c->arena_len = 0;
}

static const uint8_t *cache_entry(const TokenizerCache *c, uint32_t slot) {
    return c->arena + c->offsets[slot];
}

/* The slot holding chunk, or the free slot where it belongs. */
static uint32_t cache_find(const TokenizerCache *c, uint64_t h, const uint8_t *chunk, size_t n) {
    uint32_t mask = (uint32_t)c->slots - 1;
    for (uint32_t s = (uint32_t)h & mask;; s = (s + 1) & mask) {
        if (c->hashes[s] == 0) return s;
        if (c->hashes[s] == h) {
            const uint8_t *e = cache_entry(c, s);
            if (e[0] == n && memcmp(e + 2, chunk, n) == 0) return s;
        }
    }
}

/* Doubles the slots, re-placing every entry; returns -1 (table unchanged) when out of memory. */
static int cache_grow_slots(TokenizerCache *c) {
    size_t slots = 2 * c->slots;
    uint64_t *hashes = calloc(slots, sizeof *hashes);
    uint32_t *offsets = malloc(slots * sizeof *offsets);
    if (!hashes || !offsets) {
        free(hashes);
        free(offsets);
        return -1;
    }
    for (size_t s = 0; s < c->slots; s++) {
        if (!c->hashes[s]) continue;
        size_t d = c->hashes[s] & (slots - 1);
        while (hashes[d]) d = (d + 1) & (slots - 1);
        hashes[d] = c->hashes[s];
        offsets[d] = c->offsets[s];
    }
    free(c->hashes);
    free(c->offsets);
    c->hashes = hashes;
    c->offsets = offsets;
    c->slots = slots;
    return 0;
}

static int cache_grow_arena(TokenizerCache *c) {
    uint8_t *bigger = realloc(c->arena, 2 * c->arena_cap);
    if (!bigger) return -1;
    c->arena = bigger;
    c->arena_cap *= 2;
    return 0;
}

static void cache_store(TokenizerCache *c, uint64_t h, const uint8_t *chunk, size_t n,
                        const uint16_t *toks, size_t ntok) {
    size_t need = 2 + n + 2 * ntok;
    if (2 * (c->used + 1) > c->slots &&
        (c->slots >= CACHE_MAX_SLOTS || cache_grow_slots(c)))
        cache_clear(c);
    if (c->arena_len + need > c->arena_cap &&
        (c->arena_cap >= CACHE_MAX_ARENA || cache_grow_arena(c)))
        cache_clear(c);
    uint32_t slot = cache_find(c, h, chunk, n);
    uint8_t *e = c->arena + c->arena_len;
    e[0] = (uint8_t)n;
    e[1] = (uint8_t)ntok;
    memcpy(e + 2, chunk, n);
    memcpy(e + 2 + n, toks, 2 * ntok);
    c->hashes[slot] = h;
    c->offsets[slot] = (uint32_t)c->arena_len;
    c->arena_len += need;
    c->used++;
}

/* ---- building and freeing ------------------------------------------------------------------- */

void tokenizer_free(Tokenizer *tok) {
    free(tok->merges);
    free(tok->token_start);
    free(tok->token_data);
    free(tok->pair_keys);
    free(tok->pair_ids);
    cache_free(tok->cache);
    memset(tok, 0, sizeof *tok);
}

int tokenizer_init_bytes(Tokenizer *tok) {
    char err[128];
    return tokenizer_init_merges(tok, NULL, 0, err, sizeof err);
}

/* Fills the pair map; fails on a repeated pair. */
static int build_pair_map(Tokenizer *tok, char *err, size_t errlen) {
    uint32_t size = 16;
    while (size < 2u * (uint32_t)tok->num_merges) size <<= 1;
    tok->pair_keys = malloc(size * sizeof *tok->pair_keys);
    tok->pair_ids = malloc(size * sizeof *tok->pair_ids);
    if (!tok->pair_keys || !tok->pair_ids) {
        snprintf(err, errlen, "out of memory building the tokenizer");
        return -1;
    }
    memset(tok->pair_keys, 0xFF, size * sizeof *tok->pair_keys);
    tok->pair_mask = size - 1;
    for (int i = 0; i < tok->num_merges; i++) {
        uint32_t key = pair_key(tok->merges[i][0], tok->merges[i][1]);
        uint32_t s = pair_slot(key, tok->pair_mask);
        while (tok->pair_keys[s] != PAIR_EMPTY && tok->pair_keys[s] != key)
            s = (s + 1) & tok->pair_mask;
        if (tok->pair_keys[s] == key) {
            snprintf(err, errlen, "merge %d repeats the pair (%u, %u) of merge %d", i,
                     tok->merges[i][0], tok->merges[i][1], tok->pair_ids[s] - 256);
            return -1;
        }
        tok->pair_keys[s] = key;
        tok->pair_ids[s] = (uint16_t)(256 + i);
    }
    return 0;
}

/* Checks each merge names earlier tokens and stays within a chunk's length; fills
 * token_start with the byte offsets. Returns the total bytes, or -1. */
static long long layout_tokens(Tokenizer *tok, char *err, size_t errlen) {
    uint32_t *start = tok->token_start;
    start[0] = 0;
    for (int t = 0; t < 256; t++) start[t + 1] = (uint32_t)(t + 1);
    for (int i = 0; i < tok->num_merges; i++) {
        int id = 256 + i;
        uint32_t a = tok->merges[i][0], b = tok->merges[i][1];
        if ((int)a >= id || (int)b >= id) {
            snprintf(err, errlen, "merge %d (token %d) uses token %u, not defined before it", i,
                     id, (int)a >= id ? a : b);
            return -1;
        }
        uint32_t len = (start[a + 1] - start[a]) + (start[b + 1] - start[b]);
        if (len > PRETOK_MAX_CHUNK) {
            snprintf(err, errlen, "merge %d (token %d) would be %u bytes, over the %d-byte limit",
                     i, id, len, PRETOK_MAX_CHUNK);
            return -1;
        }
        start[id + 1] = start[id] + len;
    }
    return start[tok->vocab_size];
}

int tokenizer_init_merges(Tokenizer *tok, const uint16_t (*merges)[2], int num_merges,
                          char *err, size_t errlen) {
    memset(tok, 0, sizeof *tok);
    if (num_merges < 0 || num_merges > TOKENIZER_MAX_VOCAB - 256) {
        snprintf(err, errlen, "%d merges make a vocabulary over %d tokens, too large for uint16",
                 num_merges, TOKENIZER_MAX_VOCAB);
        return -1;
    }
    tok->num_merges = num_merges;
    tok->vocab_size = 256 + num_merges;
    tok->merges = malloc((size_t)(num_merges ? num_merges : 1) * sizeof *tok->merges);
    tok->token_start = malloc((size_t)(tok->vocab_size + 1) * sizeof *tok->token_start);
    if (!tok->merges || !tok->token_start) goto oom;
    if (num_merges) memcpy(tok->merges, merges, (size_t)num_merges * sizeof *tok->merges);
    long long total = layout_tokens(tok, err, errlen);
    if (total < 0) goto fail;
    tok->token_data = malloc((size_t)total);
    if (!tok->token_data) goto oom;
    for (int t = 0; t < 256; t++) tok->token_data[t] = (uint8_t)t;
    for (int i = 0; i < num_merges; i++) {
        int a = tok->merges[i][0], b = tok->merges[i][1];
        uint8_t *dst = tok->token_data + tok->token_start[256 + i];
        uint32_t la = tok->token_start[a + 1] - tok->token_start[a];
        memcpy(dst, tok->token_data + tok->token_start[a], la);
        memcpy(dst + la, tok->token_data + tok->token_start[b],
               tok->token_start[b + 1] - tok->token_start[b]);
    }
    if (build_pair_map(tok, err, errlen)) goto fail;
    return 0;
oom:
    snprintf(err, errlen, "out of memory building the tokenizer");
fail:
    tokenizer_free(tok);
    return -1;
}

/* ---- encoding -------------------------------------------------------------------------------- */

/* The merges applied to one chunk of n <= PRETOK_MAX_CHUNK bytes, without the memo. */
static size_t encode_chunk_uncached(const Tokenizer *tok, const uint8_t *chunk, size_t n,
                                    uint16_t *out) {
    uint32_t sym[PRETOK_MAX_CHUNK], merge[PRETOK_MAX_CHUNK]; /* merge[i]: id of (sym[i], sym[i+1]) */
    size_t m = n;
    for (size_t i = 0; i < m; i++) sym[i] = chunk[i];
    for (size_t i = 0; i + 1 < m; i++) merge[i] = merged_id(tok, sym[i], sym[i + 1]);
    while (m > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (merge[i] < merge[best]) best = i;
        if (merge[best] == NO_MERGE) break;
        sym[best] = merge[best];
        memmove(sym + best + 1, sym + best + 2, (m - best - 2) * sizeof *sym);
        if (best + 3 <= m)
            memmove(merge + best + 1, merge + best + 2, (m - best - 3) * sizeof *merge);
        m--;
        if (best + 1 < m) merge[best] = merged_id(tok, sym[best], sym[best + 1]);
        if (best > 0) merge[best - 1] = merged_id(tok, sym[best - 1], sym[best]);
    }
    for (size_t i = 0; i < m; i++) out[i] = (uint16_t)sym[i];
    return m;
}

size_t tokenizer_encode_chunk(Tokenizer *tok, const uint8_t *chunk, size_t n, uint16_t *out) {
    if (n > PRETOK_MAX_CHUNK) { /* not a chunk: cut it as the splitter would at the limit */
        size_t k = tokenizer_encode_chunk(tok, chunk, PRETOK_MAX_CHUNK, out);
        return k + tokenizer_encode_chunk(tok, chunk + PRETOK_MAX_CHUNK, n - PRETOK_MAX_CHUNK,
                                          out + k);
    }
    if (n <= 1 || tok->num_merges == 0) {
        for (size_t i = 0; i < n; i++) out[i] = chunk[i];
        return n;
    }
    if (!tok->cache && !(tok->cache = cache_new())) return encode_chunk_uncached(tok, chunk, n, out);
    uint64_t h = tok_hash_bytes(chunk, n) | 1; /* never 0, the free mark */
    uint32_t slot = cache_find(tok->cache, h, chunk, n);
    if (tok->cache->hashes[slot]) {
        const uint8_t *e = cache_entry(tok->cache, slot);
        memcpy(out, e + 2 + n, 2 * (size_t)e[1]);
        return e[1];
    }
    size_t k = encode_chunk_uncached(tok, chunk, n, out);
    cache_store(tok->cache, h, chunk, n, out, k);
    return k;
}

size_t tokenizer_encode(Tokenizer *tok, const uint8_t *text, size_t n, uint16_t *out) {
    size_t pos = 0, k = 0;
    while (pos < n) {
        size_t len = pretok_chunk_len(text + pos, n - pos);
        k += tokenizer_encode_chunk(tok, text + pos, len, out + k);
        pos += len;
    }
    return k;
}

int tokenizer_encode_file(Tokenizer *tok, const char *path, uint16_t **tokens,
                          size_t *num_tokens, char *err, size_t errlen) {
    *tokens = NULL;
    *num_tokens = 0;
    ChunkReader r;
    if (chunk_reader_open(&r, path, err, errlen)) return -1;
    size_t cap = 1 << 16, n = 0;
    uint16_t *out = malloc(cap * sizeof *out);
    const uint8_t *chunk;
    size_t len;
    int got;
    while (out && (got = chunk_reader_next(&r, &chunk, &len)) == 1) {
        if (n + len > cap) {
            cap *= 2;
            uint16_t *bigger = realloc(out, cap * sizeof *out);
            if (!bigger) {
                free(out);
                out = NULL;
                break;
            }
            out = bigger;
        }
        n += tokenizer_encode_chunk(tok, chunk, len, out + n);
    }
    int read_error = r.error;
    chunk_reader_close(&r);
    if (!out) {
        snprintf(err, errlen, "out of memory encoding %s", path);
        return -1;
    }
    if (read_error) {
        free(out);
        snprintf(err, errlen, "read error in %s", path);
        return -1;
    }
    *tokens = out;
    *num_tokens = n;
    return 0;
}

/* ---- decoding -------------------------------------------------------------------------------- */

const uint8_t *tokenizer_token_bytes(const Tokenizer *tok, int id, size_t *len) {
    if (id < 0 || id >= tok->vocab_size) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = tok->token_start[id + 1] - tok->token_start[id];
    return tok->token_data + tok->token_start[id];
}

size_t tokenizer_decoded_length(const Tokenizer *tok, const uint16_t *ids, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < tok->vocab_size) total += tok->token_start[ids[i] + 1] - tok->token_start[ids[i]];
    return total;
}

long long tokenizer_decode(const Tokenizer *tok, const uint16_t *ids, size_t n, uint8_t *out,
                           size_t out_cap, size_t *bad_index) {
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *b = tokenizer_token_bytes(tok, ids[i], &len);
        if (!b || len > out_cap - pos) {
            if (bad_index) *bad_index = i;
            return -1;
        }
        memcpy(out + pos, b, len);
        pos += len;
    }
    return (long long)pos;
}

double tokenizer_bytes_per_token(const Tokenizer *tok, const uint16_t *tokens, size_t n) {
    if (n == 0) return 0.0;
    return (double)tokenizer_decoded_length(tok, tokens, n) / (double)n;
}
