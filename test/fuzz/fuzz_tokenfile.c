/* test/fuzz/fuzz_tokenfile.c: libFuzzer target for the token-file reader (dataset_open in
 * data/dataset.c) and for decoding what it returns.
 *
 * Each input is written to one temporary file and opened. An accepted token file must be
 * self-consistent (count and largest id as read), and decoding must reject exactly the ids
 * outside the vocabulary -- for the byte tokenizer and for a small BPE one. A violation aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "tokenizer/tokenizer.h"

/* dataset.c also serves the corpus that data/embedded_corpus.S links into the real binaries;
 * the fuzzer never asks for it, so an empty stand-in satisfies the linker. */
const uint8_t embedded_corpus_start[1] = {0};
const uint8_t embedded_corpus_end[1] = {0};

static void require(int cond) {
    if (!cond) abort();
}

static char path[64];
static Tokenizer bytes_tok, bpe_tok;

static void setup(void) {
    snprintf(path, sizeof path, "/tmp/fuzz_tokenfile_%ld", (long)getpid());
    require(tokenizer_init_bytes(&bytes_tok) == 0);
    /* 260 tokens: "ab", "abab", "cd", "abcd" */
    static const uint16_t merges[4][2] = {{'a', 'b'}, {256, 256}, {'c', 'd'}, {256, 258}};
    char err[256];
    require(tokenizer_init_merges(&bpe_tok, merges, 4, err, sizeof err) == 0);
}

static void check_decode(const Tokenizer *tok, const Dataset *ds) {
    size_t first_bad = ds->num_tokens;
    for (size_t i = 0; i < ds->num_tokens; i++)
        if (ds->tokens[i] >= tok->vocab_size) { first_bad = i; break; }
    size_t cap = tokenizer_decoded_length(tok, ds->tokens, ds->num_tokens);
    uint8_t *out = malloc(cap ? cap : 1);
    require(out != NULL);
    size_t bad_at = (size_t)-1;
    long long n = tokenizer_decode(tok, ds->tokens, ds->num_tokens, out, cap, &bad_at);
    if (first_bad < ds->num_tokens) require(n == -1 && bad_at == first_bad);
    else require(n == (long long)cap);
    double bpt = tokenizer_bytes_per_token(tok, ds->tokens, ds->num_tokens);
    require(bpt >= 0.0 && bpt <= 128.0);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) setup();
    FILE *f = fopen(path, "wb");
    require(f != NULL);
    require(fwrite(data, 1, size, f) == size);
    require(fclose(f) == 0);
    Dataset ds;
    char err[512];
    if (dataset_open(&ds, path, err, sizeof err) == 0) {
        require(ds.num_tokens > 0);
        if (ds.kind == DATASET_TOKENS16) {
            require(size == 1024 + 2 * ds.num_tokens);
            int max = -1;
            for (size_t i = 0; i < ds.num_tokens; i++)
                if (ds.tokens[i] > max) max = ds.tokens[i];
            require(max == ds.max_token);
            check_decode(&bytes_tok, &ds);
            check_decode(&bpe_tok, &ds);
        } else {
            require(ds.num_tokens == size);
        }
        dataset_close(&ds);
    } else {
        require(err[0] != 0 && strchr(err, '\n') == NULL);
    }
    unlink(path);
    return 0;
}
