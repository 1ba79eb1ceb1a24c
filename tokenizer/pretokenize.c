/* tokenizer/pretokenize.c: GPT-2-style chunking of a byte stream (rule in pretokenize.h). */
#include "tokenizer/pretokenize.h"

#include "common/regular_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { CLASS_SPACE, CLASS_LETTER, CLASS_DIGIT, CLASS_OTHER };

static int byte_class(uint8_t c) {
    if (c == ' ' || (c >= '\t' && c <= '\r')) return CLASS_SPACE;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return CLASS_LETTER;
    if (c >= '0' && c <= '9') return CLASS_DIGIT;
    return CLASS_OTHER;
}

/* 's 't 'm 'd 're 've 'll: returns the contraction's length at p, or 0. */
static size_t contraction_len(const uint8_t *p, size_t n) {
    if (n < 2 || p[0] != '\'') return 0;
    uint8_t a = p[1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (n < 3) return 0;
    uint8_t b = p[2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

size_t pretok_chunk_len(const uint8_t *p, size_t n) {
    if (n > PRETOK_LOOKAHEAD) n = PRETOK_LOOKAHEAD; /* the cut never depends on more */
    size_t c = contraction_len(p, n);
    if (c) return c;
    size_t start = 0; /* where the class run begins: 1 after a leading space */
    int cls = byte_class(p[0]);
    if (cls == CLASS_SPACE) {
        size_t r = 1;
        while (r < n && r <= PRETOK_MAX_CHUNK && byte_class(p[r]) == CLASS_SPACE) r++;
        if (r > PRETOK_MAX_CHUNK) return PRETOK_MAX_CHUNK;
        if (r == n) return r;          /* whitespace up to the end of the text */
        if (r > 1) return r - 1;       /* leave the last one for the next chunk */
        if (p[0] != ' ') return 1;     /* a lone \n, \t, ... before a word */
        start = 1;                     /* " word": the space leads the run */
        cls = byte_class(p[1]);
    }
    size_t j = start + 1;
    while (j < n && j < PRETOK_MAX_CHUNK && byte_class(p[j]) == cls) j++;
    return j;
}

#define READER_BLOCK (1u << 20)

int chunk_reader_open(ChunkReader *r, const char *path, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    /* regular files only: a FIFO would block the open (and a directory or device mislead) */
    r->f = fopen_regular(path, "input", err, errlen);
    if (!r->f) return -1;
    r->cap = READER_BLOCK + PRETOK_LOOKAHEAD;
    r->buf = malloc(r->cap);
    if (!r->buf) {
        fclose(r->f);
        r->f = NULL;
        snprintf(err, errlen, "out of memory reading %s", path);
        return -1;
    }
    return 0;
}

/* Moves the unread tail to the front and fills the buffer from the file. */
static void refill(ChunkReader *r) {
    size_t keep = r->len - r->pos;
    memmove(r->buf, r->buf + r->pos, keep);
    r->len = keep;
    r->pos = 0;
    while (!r->eof && r->len < r->cap) {
        size_t got = fread(r->buf + r->len, 1, r->cap - r->len, r->f);
        r->len += got;
        r->bytes_read += got;
        if (got == 0) {
            if (ferror(r->f)) r->error = 1;
            r->eof = 1;
        }
    }
}

int chunk_reader_next(ChunkReader *r, const uint8_t **chunk, size_t *len) {
    if (r->len - r->pos < PRETOK_LOOKAHEAD && !r->eof) refill(r);
    if (r->error) return -1;
    size_t avail = r->len - r->pos;
    if (avail == 0) return 0;
    size_t n = pretok_chunk_len(r->buf + r->pos, avail);
    *chunk = r->buf + r->pos;
    *len = n;
    r->pos += n;
    return 1;
}

void chunk_reader_close(ChunkReader *r) {
    if (r->f) fclose(r->f);
    free(r->buf);
    memset(r, 0, sizeof *r);
}
