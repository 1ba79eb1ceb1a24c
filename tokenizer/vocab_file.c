/* tokenizer/vocab_file.c: the vocabulary file -- serialising it, and reading it back strictly
 * (tokenizer_save, which writes it to a path, is in vocab_save.c: it needs out_file.c, and the
 * fuzzers link this file alone).
 *
 * Layout (all integers little-endian):
 *     offset  size        field
 *     0       8           magic "BPEVOCAB"
 *     8       4           version, 1
 *     12      4           vocabulary size V, 256 .. 65535
 *     16      4           pre-tokenizer rule, 1 (tokenizer/pretokenize.h, chunks <= 128 bytes)
 *     20      4           reserved, 0
 *     24      4 (V-256)   merges: uint16 left id, uint16 right id; merge i makes token 256+i
 *     24+4(V-256)  4      CRC-32 of every byte before it
 * The length must be exactly 28 + 4 (V - 256). Loading checks each field, the checksum, then
 * every merge (tokenizer_init_merges): an error names the first thing wrong.
 */
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/regular_file.h"
#include "tokenizer/pretokenize.h"

#define VOCAB_MAGIC "BPEVOCAB"
#define VOCAB_VERSION 1
#define VOCAB_HEADER 24
#define VOCAB_MAX_FILE (VOCAB_HEADER + 4 * (TOKENIZER_MAX_VOCAB - 256) + 4)

uint32_t tokenizer_crc32(const void *data, size_t n) {
    static uint32_t table[256];
    static int ready = 0;
    if (!ready) { /* reflected polynomial 0xEDB88320, one entry per byte value */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
            table[i] = c;
        }
        ready = 1;
    }
    const uint8_t *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

int tokenizer_serialize(const Tokenizer *tok, uint8_t **data, size_t *n) {
    size_t len = VOCAB_HEADER + 4 * (size_t)tok->num_merges + 4;
    uint8_t *p = malloc(len);
    if (!p) return -1;
    memcpy(p, VOCAB_MAGIC, 8);
    put_u32(p + 8, VOCAB_VERSION);
    put_u32(p + 12, (uint32_t)tok->vocab_size);
    put_u32(p + 16, PRETOK_RULE_ID);
    put_u32(p + 20, 0);
    for (int i = 0; i < tok->num_merges; i++) {
        put_u16(p + VOCAB_HEADER + 4 * i, tok->merges[i][0]);
        put_u16(p + VOCAB_HEADER + 4 * i + 2, tok->merges[i][1]);
    }
    put_u32(p + len - 4, tokenizer_crc32(p, len - 4));
    *data = p;
    *n = len;
    return 0;
}

/* Checks the header fields and the length; returns the vocabulary size, or -1. */
static long check_header(const uint8_t *data, size_t n, char *err, size_t errlen) {
    if (n < VOCAB_HEADER + 4) {
        snprintf(err, errlen, "vocabulary file truncated: %zu bytes, a header needs %d", n,
                 VOCAB_HEADER + 4);
        return -1;
    }
    if (memcmp(data, VOCAB_MAGIC, 8) != 0) {
        snprintf(err, errlen, "not a vocabulary file (bad magic)");
        return -1;
    }
    uint32_t version = get_u32(data + 8), vocab = get_u32(data + 12);
    uint32_t rule = get_u32(data + 16), reserved = get_u32(data + 20);
    if (version != VOCAB_VERSION) {
        snprintf(err, errlen, "vocabulary file version %u, this build reads %d", version,
                 VOCAB_VERSION);
        return -1;
    }
    if (vocab < 256 || vocab > TOKENIZER_MAX_VOCAB) {
        snprintf(err, errlen, "vocabulary size %u outside 256..%d", vocab, TOKENIZER_MAX_VOCAB);
        return -1;
    }
    if (rule != PRETOK_RULE_ID) {
        snprintf(err, errlen, "vocabulary file uses pre-tokenizer rule %u, this build has %d",
                 rule, PRETOK_RULE_ID);
        return -1;
    }
    if (reserved != 0) {
        snprintf(err, errlen, "vocabulary file reserved field is %u, not 0", reserved);
        return -1;
    }
    size_t want = VOCAB_HEADER + 4 * (size_t)(vocab - 256) + 4;
    if (n != want) {
        snprintf(err, errlen, "vocabulary file %s: %zu bytes, vocabulary %u needs %zu",
                 n < want ? "truncated" : "has trailing bytes", n, vocab, want);
        return -1;
    }
    uint32_t stored = get_u32(data + n - 4), actual = tokenizer_crc32(data, n - 4);
    if (stored != actual) {
        snprintf(err, errlen, "vocabulary file corrupt: checksum %08x, contents give %08x",
                 stored, actual);
        return -1;
    }
    return (long)vocab;
}

int tokenizer_parse(Tokenizer *tok, const uint8_t *data, size_t n, char *err, size_t errlen) {
    memset(tok, 0, sizeof *tok);
    long vocab = check_header(data, n, err, errlen);
    if (vocab < 0) return -1;
    int num_merges = (int)vocab - 256;
    uint16_t (*merges)[2] = malloc((size_t)(num_merges ? num_merges : 1) * sizeof *merges);
    if (!merges) {
        snprintf(err, errlen, "out of memory reading the vocabulary");
        return -1;
    }
    for (int i = 0; i < num_merges; i++) {
        merges[i][0] = get_u16(data + VOCAB_HEADER + 4 * i);
        merges[i][1] = get_u16(data + VOCAB_HEADER + 4 * i + 2);
    }
    char why[200];
    int rc = tokenizer_init_merges(tok, (const uint16_t(*)[2])merges, num_merges, why, sizeof why);
    if (rc) snprintf(err, errlen, "vocabulary file invalid: %s", why);
    free(merges);
    return rc;
}

int tokenizer_load(Tokenizer *tok, const char *path, char *err, size_t errlen) {
    memset(tok, 0, sizeof *tok);
    /* a FIFO or a device would block the read or never end: regular files only */
    FILE *f = fopen_regular(path, "vocabulary", err, errlen);
    if (!f) return -1;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        snprintf(err, errlen, "cannot stat vocabulary %s: %s", path, strerror(errno));
        fclose(f);
        return -1;
    }
    if (st.st_size > VOCAB_MAX_FILE) {
        snprintf(err, errlen, "vocabulary %s: %lld bytes, larger than any vocabulary file", path,
                 (long long)st.st_size);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *data = malloc(n ? n : 1);
    size_t got = data ? fread(data, 1, n, f) : 0;
    int read_failed = !data || got != n || ferror(f);
    fclose(f);
    if (read_failed) {
        snprintf(err, errlen, "cannot read vocabulary %s", path);
        free(data);
        return -1;
    }
    char why[240];
    int rc = tokenizer_parse(tok, data, n, why, sizeof why);
    if (rc) snprintf(err, errlen, "%s: %s", path, why);
    free(data);
    return rc;
}
