/* test/fuzz/fuzz_vocab.c: libFuzzer target for the vocabulary-file parser.
 *
 * Each input is parsed three ways: as it is; with its checksum made right (so inputs get past
 * the CRC to the field checks); and with a valid header and checksum forced onto it (so every
 * input reaches the merge validation). Whatever parses must behave: encode -> decode gives the
 * text back, every token fits the chunk limit, and serialising gives the parsed bytes again.
 * A violation aborts, which libFuzzer reports as a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"

#define MAX_VOCAB_FILE (24 + 4 * (TOKENIZER_MAX_VOCAB - 256) + 4)

static void require(int cond) {
    if (!cond) abort();
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A parsed tokenizer must round-trip text and reproduce its own file. */
static void exercise(Tokenizer *tok, const uint8_t *file, size_t n, const uint8_t *text,
                     size_t text_len) {
    for (int id = 0; id < tok->vocab_size; id++) {
        size_t len;
        require(tokenizer_token_bytes(tok, id, &len) != NULL && len >= 1 &&
                len <= PRETOK_MAX_CHUNK);
    }
    uint16_t *ids = malloc((text_len ? text_len : 1) * sizeof *ids);
    uint8_t *back = malloc(text_len ? text_len : 1);
    require(ids && back);
    size_t k = tokenizer_encode(tok, text, text_len, ids);
    require(k <= text_len);
    require(tokenizer_decode(tok, ids, k, back, text_len, NULL) == (long long)text_len);
    require(memcmp(back, text, text_len) == 0);
    free(ids);
    free(back);
    uint8_t *again;
    size_t m;
    require(tokenizer_serialize(tok, &again, &m) == 0);
    require(m == n && memcmp(again, file, n) == 0);
    free(again);
}

static void parse_and_exercise(const uint8_t *file, size_t n, const uint8_t *text, size_t len) {
    Tokenizer tok;
    char err[512];
    if (tokenizer_parse(&tok, file, n, err, sizeof err) == 0) {
        exercise(&tok, file, n, text, len);
        tokenizer_free(&tok);
    } else {
        require(err[0] != 0 && strchr(err, '\n') == NULL && tok.vocab_size == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint8_t sample[] = "the cat's hat, 42 \xc3\xa9t\xc3\xa9\0\xff  \n\n  end";
    parse_and_exercise(data, size, data, size);
    if (size < 28 || size > MAX_VOCAB_FILE) return 0;
    uint8_t *copy = malloc(size);
    require(copy != NULL);
    memcpy(copy, data, size);
    put_u32(copy + size - 4, tokenizer_crc32(copy, size - 4));
    parse_and_exercise(copy, size, sample, sizeof sample - 1);
    /* a valid header for as many merges as fit */
    size_t n = 28 + (size - 28) / 4 * 4;
    memcpy(copy, "BPEVOCAB", 8);
    put_u32(copy + 8, 1);
    put_u32(copy + 12, (uint32_t)(256 + (n - 28) / 4));
    put_u32(copy + 16, PRETOK_RULE_ID);
    put_u32(copy + 20, 0);
    put_u32(copy + n - 4, tokenizer_crc32(copy, n - 4));
    parse_and_exercise(copy, n, sample, sizeof sample - 1);
    parse_and_exercise(copy, n, data, size);
    free(copy);
    return 0;
}
