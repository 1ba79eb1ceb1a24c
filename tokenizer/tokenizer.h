/* tokenizer/tokenizer.h: the byte tokenizer and a trainable byte-level BPE.
 *
 * A Tokenizer maps bytes to token ids and back. Ids 0..255 are the single bytes; id 256+i is
 * merge i, the concatenation of the two earlier tokens merges[i][0] and merges[i][1]. The byte
 * tokenizer is the identity (vocabulary 256, no merges). Every id fits a uint16, so the
 * vocabulary holds at most TOKENIZER_MAX_VOCAB = 65535 tokens.
 *
 * Text is first cut into chunks, GPT-2 style (tokenizer/pretokenize.h): a merge never crosses a
 * chunk boundary, so a token is at most PRETOK_MAX_CHUNK bytes long. Encoding applies the merges
 * to each chunk in rank order, which reproduces exactly what training did to that chunk.
 *
 * Training streams a file in bounded memory: it counts the distinct chunks in a hash table
 * (pruning rare ones if the table outgrows max_unique_chunks), then repeatedly merges the most
 * frequent adjacent pair across the distinct chunks, each weighted by its count. Ties go to
 * the smallest (left id, right id), so training is deterministic.
 *
 * The vocabulary file (tokenizer/vocab_file.c, format in tokenizer/README.md) stores the merges
 * behind a magic, a version and a CRC-32; loading validates everything and never trusts sizes.
 */
#ifndef TOKENIZER_H
#define TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TOKENIZER_MAX_VOCAB 65535

struct TokenizerCache;

typedef struct {
    int vocab_size;            /* 256 + num_merges */
    int num_merges;
    uint16_t (*merges)[2];     /* merges[i] = (left, right) makes token 256 + i */
    uint32_t *token_start;     /* token t is token_data[token_start[t] .. token_start[t+1]) */
    uint8_t *token_data;
    /* Encoding: open-addressing map from the pair key (left << 16 | right) to the merged id. */
    uint32_t *pair_keys;       /* PAIR_EMPTY where free */
    uint16_t *pair_ids;
    uint32_t pair_mask;        /* table size - 1 */
    struct TokenizerCache *cache; /* chunk -> tokens memo of the encoder, NULL until used */
} Tokenizer;

typedef struct {
    int vocab_size;            /* target, 256 .. TOKENIZER_MAX_VOCAB */
    size_t max_unique_chunks;  /* bound on the chunk table (0: default 2^21) */
    uint64_t min_pair_count;   /* stop when the best pair occurs fewer times (0: default 2) */
    int verbose;               /* progress on stderr */
} BpeTrainOptions;

/* The identity tokenizer: vocabulary 256. Returns 0, or -1 when out of memory. */
int tokenizer_init_bytes(Tokenizer *tok);
/* A tokenizer from a merge list. Returns 0, or -1 with a one-line message in err when the
 * list is invalid (a merge names a token not yet defined, a pair is repeated, a token would be
 * longer than PRETOK_MAX_CHUNK bytes, more than TOKENIZER_MAX_VOCAB tokens). */
int tokenizer_init_merges(Tokenizer *tok, const uint16_t (*merges)[2], int num_merges,
                          char *err, size_t errlen);
void tokenizer_free(Tokenizer *tok);

/* Learns merges from a file (streamed) or from bytes in memory. On success *tok is a new
 * tokenizer (its vocabulary may be smaller than asked when the text runs out of pairs seen at
 * least min_pair_count times). Returns 0, or -1 with a one-line message in err. */
int tokenizer_train_file(Tokenizer *tok, const char *path, const BpeTrainOptions *opt,
                         char *err, size_t errlen);
int tokenizer_train_bytes(Tokenizer *tok, const uint8_t *data, size_t n,
                          const BpeTrainOptions *opt, char *err, size_t errlen);

/* Vocabulary files. Save writes a temporary file and renames it into place. Load and parse
 * validate strictly; on failure *tok is left zeroed (safe to free). Return 0, or -1 with a
 * one-line message in err. */
int tokenizer_save(const Tokenizer *tok, const char *path, char *err, size_t errlen);
int tokenizer_load(Tokenizer *tok, const char *path, char *err, size_t errlen);
int tokenizer_parse(Tokenizer *tok, const uint8_t *data, size_t n, char *err, size_t errlen);
/* The serialised file in a new malloc'd buffer (*data, *n); returns 0, or -1 out of memory. */
int tokenizer_serialize(const Tokenizer *tok, uint8_t **data, size_t *n);
/* CRC-32 (IEEE 802.3, as zlib) of n bytes: the vocabulary file's checksum. */
uint32_t tokenizer_crc32(const void *data, size_t n);

/* Encodes n bytes, treating their end as the end of the text. out must hold n tokens (a token
 * covers at least one byte). Returns the number of tokens written. Not thread-safe: the encoder
 * memoises chunks inside tok. */
size_t tokenizer_encode(Tokenizer *tok, const uint8_t *text, size_t n, uint16_t *out);
/* Encodes one chunk (as cut by pretok_chunk_len) of at most PRETOK_MAX_CHUNK bytes. */
size_t tokenizer_encode_chunk(Tokenizer *tok, const uint8_t *chunk, size_t n, uint16_t *out);
/* Encodes a whole file, streamed, into a growing array (*tokens, *num_tokens; free() it).
 * Returns 0, or -1 with a one-line message in err. */
int tokenizer_encode_file(Tokenizer *tok, const char *path, uint16_t **tokens,
                          size_t *num_tokens, char *err, size_t errlen);

/* The bytes of token id (not NUL-terminated) and their count in *len; NULL for an id outside
 * the vocabulary. */
const uint8_t *tokenizer_token_bytes(const Tokenizer *tok, int id, size_t *len);
/* Total bytes the ids decode to; ids outside the vocabulary count as 0 bytes. */
size_t tokenizer_decoded_length(const Tokenizer *tok, const uint16_t *ids, size_t n);
/* Decodes ids into out (capacity out_cap). Returns the bytes written, or -1 when an id is
 * outside the vocabulary (its index in *bad_index when non-NULL) or out is too small. */
long long tokenizer_decode(const Tokenizer *tok, const uint16_t *ids, size_t n, uint8_t *out,
                           size_t out_cap, size_t *bad_index);
/* Decoded bytes per token over the n tokens (0 when n == 0): bits per token divided by this is
 * bits per byte of the underlying text, which makes BPE and byte-level runs comparable. */
double tokenizer_bytes_per_token(const Tokenizer *tok, const uint16_t *tokens, size_t n);

#ifdef __cplusplus
}
#endif
#endif
