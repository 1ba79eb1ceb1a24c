/* tokenizer/pretokenize.h: cutting a byte stream into chunks before BPE, GPT-2 style.
 *
 * GPT-2 splits text with the pattern
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * and BPE merges never cross a chunk. This is the same rule over bytes, with byte classes in
 * place of Unicode ones:
 *   whitespace  space \t \n \v \f \r
 *   letter      A-Z a-z and every byte >= 0x80 (so a UTF-8 sequence stays inside its word)
 *   digit       0-9
 *   other       everything else, NUL included
 * A chunk is, tried in this order at each position:
 *   - a contraction: ' followed by s, t, m, d, re, ve or ll (lowercase, as GPT-2);
 *   - an optional single space, then a run of letters, or of digits, or of others;
 *   - a run of whitespace: when a non-whitespace byte follows, the run stops one short of it
 *     (that last byte then starts the next chunk: a space joins the following word, any other
 *     whitespace byte is a chunk of its own), otherwise (end of text) the whole run.
 * Every chunk is also cut at PRETOK_MAX_CHUNK bytes, which bounds token length and the work of
 * encoding one chunk. The cut depends only on the next PRETOK_LOOKAHEAD bytes, so a stream
 * read in blocks is cut exactly as the whole text would be.
 */
#ifndef PRETOKENIZE_H
#define PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PRETOK_MAX_CHUNK 128
#define PRETOK_LOOKAHEAD (PRETOK_MAX_CHUNK + 1)
/* Identifies this splitting rule in vocabulary files. */
#define PRETOK_RULE_ID 1

/* Length (1 .. PRETOK_MAX_CHUNK) of the chunk starting at p, given n >= 1 visible bytes. When
 * n < PRETOK_LOOKAHEAD the text is taken to end at p + n. */
size_t pretok_chunk_len(const uint8_t *p, size_t n);

/* Streams a file as chunks in a fixed-size buffer. */
typedef struct {
    FILE *f;
    uint8_t *buf;
    size_t cap, len, pos;   /* buf[pos .. len) not yet handed out */
    int eof, error;
    uint64_t bytes_read;
} ChunkReader;

/* Opens path; returns 0, or -1 with a one-line message in err. */
int chunk_reader_open(ChunkReader *r, const char *path, char *err, size_t errlen);
/* The next chunk in *chunk / *len (valid until the next call). Returns 1, 0 at the end, or -1
 * on a read error (r->error set). */
int chunk_reader_next(ChunkReader *r, const uint8_t **chunk, size_t *len);
void chunk_reader_close(ChunkReader *r);

#endif
