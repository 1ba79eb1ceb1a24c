/* test/test_tokenizer.c: the byte tokenizer, the BPE trainer and encoder, the vocabulary file.
 *
 * - the chunk table counts exactly, and stays within its bounds when it must drop chunks;
 * - the pre-tokenizer cuts hand-picked strings as GPT-2's pattern would, and cuts a file read
 *   in blocks exactly as the whole text;
 * - a hand-worked corpus gives the merges worked out below, in order;
 * - the trainer agrees with a naive reference (recount every pair after every merge) on
 *   random text full of ties, and the encoder with applying the merges one by one;
 * - decode(encode(x)) == x for random bytes (NUL, invalid UTF-8, long runs);
 * - training is deterministic, and the same from a file as from memory;
 * - every truncation and corruption of a vocabulary file is an error, never a crash;
 * - a vocabulary over 65535 is refused;
 * - special files: a FIFO as vocabulary or corpus is refused at once (an alarm turns a hang into
 *   a failure); saving through a symbolic link keeps the link and replaces its target; saving
 *   to a FIFO writes into it in place; out_file.h resolves link chains (relative, dangling,
 *   looping), tells the same file through links, refuses directories and inputs as outputs,
 *   and an aborted write leaves the old file as it was and no temporary.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/dataset.h"
#include "test/test.h"
#include "tokenizer/chunk_table.h"
#include "tokenizer/out_file.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static int train_text(Tokenizer *tok, const char *text, int vocab, uint64_t min_count) {
    BpeTrainOptions opt = {.vocab_size = vocab, .min_pair_count = min_count};
    char err[256];
    int rc = tokenizer_train_bytes(tok, (const uint8_t *)text, strlen(text), &opt, err, sizeof err);
    if (rc) fprintf(stderr, "train failed: %s\n", err);
    return rc;
}

static int token_is(const Tokenizer *tok, int id, const char *s) {
    size_t len;
    const uint8_t *b = tokenizer_token_bytes(tok, id, &len);
    return b && len == strlen(s) && memcmp(b, s, len) == 0;
}

static int merge_is(const Tokenizer *tok, int i, int left, int right) {
    return i < tok->num_merges && tok->merges[i][0] == left && tok->merges[i][1] == right;
}

/* Random "text": syllables, spaces, punctuation, newlines, digits and the odd raw byte, so
 * pairs repeat a lot and ties are common. */
static size_t random_text(uint8_t *out, size_t n, uint64_t *rng, int raw_bytes) {
    static const char *pieces[] = {"ab", "ra", "ca", "da", "b", "r", " ", " ", " ", "  ", "\n",
                                   ",", ".", "'s", "'ll", "12", "7", "\t", "th", "e", "aa",
                                   "aaa", "é", "--"};
    size_t k = 0;
    while (k < n) {
        uint64_t r = test_rng_next(rng);
        if (raw_bytes && r % 17 == 0) {
            out[k++] = (uint8_t)(r >> 32);
            continue;
        }
        const char *p = pieces[(r >> 8) % (sizeof pieces / sizeof *pieces)];
        for (size_t i = 0; p[i] && k < n; i++) out[k++] = (uint8_t)p[i];
    }
    return k;
}

/* ---- pre-tokenizer ---------------------------------------------------------------------------- */

/* Cuts text and compares the pieces with the expected list (NULL-terminated). */
static int cuts_as(const char *text, const char *const *expect) {
    size_t n = strlen(text), pos = 0;
    int i = 0;
    while (pos < n) {
        size_t len = pretok_chunk_len((const uint8_t *)text + pos, n - pos);
        if (!expect[i] || strlen(expect[i]) != len || memcmp(expect[i], text + pos, len)) {
            fprintf(stderr, "  chunk %d of \"%s\": got \"%.*s\"\n", i, text, (int)len, text + pos);
            return 0;
        }
        pos += len;
        i++;
    }
    return expect[i] == NULL;
}

static void test_pretokenizer(void) {
    static const char *const e1[] = {"Hello", " world", "'s", " ", " end", "\n", "\n", "X", NULL};
    CHECK(cuts_as("Hello world's  end\n\nX", e1), "GPT-2 split of a sentence");
    static const char *const e2[] = {"don", "'t", " we", "'ll", " pay", " 42", ".", "50", "$!!",
                                     "   ", NULL};
    CHECK(cuts_as("don't we'll pay 42.50$!!   ", e2), "contractions, digits, punctuation, tail");
    static const char *const e3[] = {"a", "\t", "b", " ", "\t", "c", " \xc3\xa9t\xc3\xa9", NULL};
    CHECK(cuts_as("a\tb \tc \xc3\xa9t\xc3\xa9", e3), "tabs; UTF-8 stays in the word");
    static const char *const e4[] = {"'", "x", " '", "re", "'re", NULL};
    CHECK(cuts_as("'x 're're", e4), "apostrophes that are not contractions");

    /* runs longer than the limit are cut at exactly PRETOK_MAX_CHUNK */
    uint8_t run[3 * PRETOK_MAX_CHUNK];
    memset(run, 'q', sizeof run);
    CHECK(pretok_chunk_len(run, sizeof run) == PRETOK_MAX_CHUNK, "letter run cut at the limit");
    memset(run, ' ', sizeof run);
    CHECK(pretok_chunk_len(run, sizeof run) == PRETOK_MAX_CHUNK, "space run cut at the limit");
    CHECK(pretok_chunk_len(run, 5) == 5, "trailing spaces are one chunk");
    run[PRETOK_MAX_CHUNK] = 'x';
    CHECK(pretok_chunk_len(run, sizeof run) == PRETOK_MAX_CHUNK - 1,
          "a space run before a word leaves its last space to the word");
    uint8_t nul[3] = {0, 0, 'a'};
    CHECK(pretok_chunk_len(nul, 3) == 2, "NUL is punctuation");
}

/* A file read through ChunkReader in 1 MiB blocks is cut as the whole text in memory. */
static void test_streamed_cut_matches(uint64_t *rng) {
    size_t n = (5u << 19) + 77; /* 2.5 MiB: the reader refills twice */
    uint8_t *text = malloc(n);
    random_text(text, n, rng, 1);
    for (int k = 0; k < 40; k++) { /* long runs that straddle anything */
        size_t at = test_rng_next(rng) % (n - 400), len = 100 + test_rng_next(rng) % 300;
        memset(text + at, k % 2 ? ' ' : 'z', len);
    }
    char path[] = "/tmp/test_tokenizer_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, text, n) == (ssize_t)n, "write temp file");
    close(fd);
    ChunkReader r;
    char err[256];
    CHECK(chunk_reader_open(&r, path, err, sizeof err) == 0, "open: %s", err);
    size_t pos = 0, mismatches = 0, chunks = 0;
    const uint8_t *chunk;
    size_t len;
    while (chunk_reader_next(&r, &chunk, &len) == 1) {
        size_t want = pretok_chunk_len(text + pos, n - pos);
        if (want != len || memcmp(chunk, text + pos, len)) mismatches++;
        pos += len;
        chunks++;
    }
    chunk_reader_close(&r);
    CHECK(mismatches == 0 && pos == n, "streamed cut differs: %zu of %zu chunks, %zu of %zu bytes",
          mismatches, chunks, pos, n);

    /* and the trainer gives the same merges from the file as from memory */
    BpeTrainOptions opt = {.vocab_size = 700};
    Tokenizer a, b;
    int ra = tokenizer_train_file(&a, path, &opt, err, sizeof err);
    CHECK(ra == 0, "train from file: %s", err);
    int rb = tokenizer_train_bytes(&b, text, n, &opt, err, sizeof err);
    CHECK(rb == 0, "train from memory: %s", err);
    CHECK(ra == 0 && rb == 0 && a.num_merges == b.num_merges &&
              memcmp(a.merges, b.merges, (size_t)a.num_merges * 4) == 0,
          "file and memory training differ");
    tokenizer_free(&a);
    tokenizer_free(&b);
    unlink(path);
    free(text);
}

/* ---- the chunk table -------------------------------------------------------------------------- */

static void test_chunk_table(uint64_t *rng) {
    /* exact counts while nothing is dropped: chunk i of 500 is added i % 7 + 1 times */
    ChunkTable t;
    CHECK(chunk_table_init(&t, 1 << 20) == 0, "init");
    uint8_t key[24];
    int add_failed = 0;
    for (int round = 0; round < 7; round++)
        for (int i = 0; i < 500; i++) {
            int len = snprintf((char *)key, sizeof key, "chunk%d", i);
            if (i % 7 + 1 > round) add_failed += chunk_table_add(&t, key, (size_t)len, 1) != 0;
        }
    int wrong = 0;
    for (int i = 0; i < 500; i++) {
        int len = snprintf((char *)key, sizeof key, "chunk%d", i);
        wrong += chunk_table_count(&t, key, (size_t)len) != (uint64_t)(i % 7 + 1);
    }
    CHECK(wrong == 0 && t.used == 500 && t.prune_threshold == 0, "%d counts wrong", wrong);
    CHECK(chunk_table_count(&t, (const uint8_t *)"chunk500", 8) == 0, "absent chunk");
    chunk_table_free(&t);

    /* bounded: 20000 distinct 20-byte chunks through a table of 100, one chunk among them
     * every 10th add; the table stays within its bounds and the frequent chunk is exact */
    CHECK(chunk_table_init(&t, 100) == 0, "init small");
    size_t most_used = 0, most_bytes = 0;
    uint64_t frequent = 0;
    for (int i = 0; i < 20000; i++) {
        if (i % 10 == 0) {
            add_failed += chunk_table_add(&t, (const uint8_t *)"the frequent one", 16, 1) != 0;
            frequent++;
        }
        for (int k = 0; k < 20; k++) key[k] = (uint8_t)(test_rng_next(rng) >> 40);
        add_failed += chunk_table_add(&t, key, 20, 1) != 0;
        if (t.used > most_used) most_used = t.used;
        if (t.arena_len > most_bytes) most_bytes = t.arena_len;
    }
    CHECK(add_failed == 0, "%d adds failed", add_failed);
    CHECK(most_used <= 100 && most_bytes <= 100 * CHUNK_TABLE_BYTES_PER_ENTRY,
          "table grew to %zu chunks, %zu bytes", most_used, most_bytes);
    CHECK(t.prune_threshold == 2, "pruned below 2, threshold %llu",
          (unsigned long long)t.prune_threshold);
    CHECK(chunk_table_count(&t, (const uint8_t *)"the frequent one", 16) == frequent,
          "frequent chunk counted %llu of %llu",
          (unsigned long long)chunk_table_count(&t, (const uint8_t *)"the frequent one", 16),
          (unsigned long long)frequent);
    chunk_table_free(&t);
}

/* ---- hand-worked merges ------------------------------------------------------------------------ */

/* Corpus "hug,hug,hug,pug,pug,pun,pun,pun,pun,bun,hugs": the commas are one-byte chunks (never
 * merged), the words are hug x3, pug x2, pun x4, bun x1, hugs x1. Pair counts, weighted:
 *   h u 4   u g 6   p u 6   u n 5   b u 1   g s 1
 * merge 0: tie u g / p u at 6 -> the smaller pair (p=112, u=117) < (u=117, g=103):
 *          (p, u) -> 256 "pu".        now  h u 4, u g 4, pu g 2, pu n 4, u n 1, b u 1, g s 1
 * merge 1: tie at 4: (h=104, u) is smallest -> (h, u) -> 257 "hu".
 *                                     now  hu g 4, pu n 4, pu g 2, u n 1, b u 1, g s 1
 * merge 2: tie at 4: (256, n=110) < (257, g=103) -> (pu, n) -> 258 "pun".
 * merge 3: (hu, g) -> 259 "hug", count 4; hugs is now [hug, s].
 * merge 4: (pu, g) -> 260 "pug", count 2. Every pair left occurs once:
 *          u n (117,110), b u (98,117), hug s (259,115).
 * With the default minimum count 2 training stops here: vocabulary 261. With minimum 1:
 * merge 5: (b, u) -> 261 "bu"  (smallest of the ties); bun is [bu, n]: bu n (261,110)
 * merge 6: (hug, s) -> 262 "hugs"   (259,115) < (261,110)
 * merge 7: (bu, n) -> 263 "bun", and no pair is left: vocabulary 264 however large the target.
 */
static void test_hand_worked_merges(void) {
    const char *corpus = "hug,hug,hug,pug,pug,pun,pun,pun,pun,bun,hugs";
    Tokenizer tok;
    CHECK(train_text(&tok, corpus, 1000, 0) == 0, "train");
    CHECK(tok.vocab_size == 261, "min count 2 stops at 261 tokens, got %d", tok.vocab_size);
    CHECK(merge_is(&tok, 0, 'p', 'u') && token_is(&tok, 256, "pu"), "merge 0 is (p, u)");
    CHECK(merge_is(&tok, 1, 'h', 'u') && token_is(&tok, 257, "hu"), "merge 1 is (h, u)");
    CHECK(merge_is(&tok, 2, 256, 'n') && token_is(&tok, 258, "pun"), "merge 2 is (pu, n)");
    CHECK(merge_is(&tok, 3, 257, 'g') && token_is(&tok, 259, "hug"), "merge 3 is (hu, g)");
    CHECK(merge_is(&tok, 4, 256, 'g') && token_is(&tok, 260, "pug"), "merge 4 is (pu, g)");
    tokenizer_free(&tok);

    CHECK(train_text(&tok, corpus, 1000, 1) == 0, "train, min count 1");
    CHECK(tok.vocab_size == 264, "min count 1 runs out of pairs at 264, got %d", tok.vocab_size);
    CHECK(merge_is(&tok, 5, 'b', 'u') && token_is(&tok, 261, "bu"), "merge 5 is (b, u)");
    CHECK(merge_is(&tok, 6, 259, 's') && token_is(&tok, 262, "hugs"), "merge 6 is (hug, s)");
    CHECK(merge_is(&tok, 7, 261, 'n') && token_is(&tok, 263, "bun"), "merge 7 is (bu, n)");
    /* encoding: known words become one token; "pugs" was never seen: p u g s -> pu g s -> pug s */
    uint16_t out[32];
    const char *text = "hugs,bun,pugs";
    size_t n = tokenizer_encode(&tok, (const uint8_t *)text, strlen(text), out);
    const uint16_t want[] = {262, ',', 263, ',', 260, 's'};
    CHECK(n == 6 && memcmp(out, want, sizeof want) == 0, "encode \"%s\": %zu tokens", text, n);
    tokenizer_free(&tok);

    /* target 258: exactly two merges even though more are possible */
    CHECK(train_text(&tok, corpus, 258, 1) == 0 && tok.vocab_size == 258 &&
              merge_is(&tok, 1, 'h', 'u'), "training stops at the target");
    tokenizer_free(&tok);
}

/* "aaaaa" alone: pairs overlap. (a,a) occurs 4 times -> 256 "aa", applied left to right:
 * [aa, aa, a]. Then (aa, a) (256,97) beats (aa, aa) (256,256) on the tie -> 257 "aaa":
 * [aa, aaa]; then (aa, aaa) -> 258. Encoding six a's: [aa, aa, aa] (no merge (aa, aa)); three:
 * [aa, a] -> [aaa]. */
static void test_overlapping_pairs(void) {
    Tokenizer tok;
    CHECK(train_text(&tok, "aaaaa", 1000, 1) == 0, "train");
    CHECK(tok.vocab_size == 259 && merge_is(&tok, 0, 'a', 'a') && merge_is(&tok, 1, 256, 'a') &&
              merge_is(&tok, 2, 256, 257),
          "merges of aaaaa: got %d tokens", tok.vocab_size);
    uint16_t out[8];
    CHECK(tokenizer_encode(&tok, (const uint8_t *)"aaaaa", 5, out) == 1 && out[0] == 258, "aaaaa");
    CHECK(tokenizer_encode(&tok, (const uint8_t *)"aaaaaa", 6, out) == 3 && out[0] == 256 &&
              out[1] == 256 && out[2] == 256, "aaaaaa");
    CHECK(tokenizer_encode(&tok, (const uint8_t *)"aaa", 3, out) == 1 && out[0] == 257, "aaa");
    tokenizer_free(&tok);
}

/* ---- the naive reference ---------------------------------------------------------------------- */

typedef struct {
    int *sym;    /* every chunk's symbols, chunk after chunk */
    int *start;  /* chunk c is sym[start[c] .. start[c] + len[c]) */
    int *len;
    int num_chunks;
} RefWords;

static void ref_split(RefWords *w, const uint8_t *text, size_t n) {
    w->sym = malloc(n * sizeof *w->sym);
    w->start = malloc(n * sizeof *w->start);
    w->len = malloc(n * sizeof *w->len);
    w->num_chunks = 0;
    for (size_t pos = 0; pos < n;) {
        size_t len = pretok_chunk_len(text + pos, n - pos);
        w->start[w->num_chunks] = (int)pos;
        w->len[w->num_chunks++] = (int)len;
        for (size_t i = 0; i < len; i++) w->sym[pos + i] = text[pos + i];
        pos += len;
    }
}

/* Replaces (a, b) by c in every chunk, left to right. */
static void ref_apply(RefWords *w, int a, int b, int c) {
    for (int k = 0; k < w->num_chunks; k++) {
        int *s = w->sym + w->start[k], m = 0;
        for (int i = 0; i < w->len[k]; i++) {
            if (i + 1 < w->len[k] && s[i] == a && s[i + 1] == b) {
                s[m++] = c;
                i++;
            } else {
                s[m++] = s[i];
            }
        }
        w->len[k] = m;
    }
}

/* Recounts every pair after each merge; picks the largest count, ties to the smallest pair. */
static int ref_train(const uint8_t *text, size_t n, int vocab, uint16_t (*merges)[2]) {
    RefWords w;
    ref_split(&w, text, n);
    long long *count = malloc((size_t)vocab * vocab * sizeof *count);
    int num = 0;
    while (256 + num < vocab) {
        memset(count, 0, (size_t)vocab * vocab * sizeof *count);
        for (int k = 0; k < w.num_chunks; k++)
            for (int i = 0; i + 1 < w.len[k]; i++)
                count[w.sym[w.start[k] + i] * vocab + w.sym[w.start[k] + i + 1]]++;
        long long best = 1; /* the default minimum count is 2 */
        int ba = -1, bb = -1;
        for (int a = 0; a < 256 + num; a++)
            for (int b = 0; b < 256 + num; b++)
                if (count[a * vocab + b] > best) { best = count[a * vocab + b]; ba = a; bb = b; }
        if (ba < 0) break;
        merges[num][0] = (uint16_t)ba;
        merges[num][1] = (uint16_t)bb;
        ref_apply(&w, ba, bb, 256 + num);
        num++;
    }
    free(count);
    free(w.sym);
    free(w.start);
    free(w.len);
    return num;
}

/* Tokens of text by applying each merge in turn to every chunk. */
static size_t ref_encode(const Tokenizer *tok, const uint8_t *text, size_t n, uint16_t *out) {
    RefWords w;
    ref_split(&w, text, n);
    for (int i = 0; i < tok->num_merges; i++)
        ref_apply(&w, tok->merges[i][0], tok->merges[i][1], 256 + i);
    size_t k = 0;
    for (int c = 0; c < w.num_chunks; c++)
        for (int i = 0; i < w.len[c]; i++) out[k++] = (uint16_t)w.sym[w.start[c] + i];
    free(w.sym);
    free(w.start);
    free(w.len);
    return k;
}

static void test_against_reference(uint64_t *rng) {
    for (int trial = 0; trial < 4; trial++) {
        size_t n = 3000 + test_rng_next(rng) % 6000;
        uint8_t *text = malloc(n);
        random_text(text, n, rng, trial % 2);
        int vocab = 256 + 60 + trial * 40;
        uint16_t (*want)[2] = malloc((size_t)vocab * sizeof *want);
        int num = ref_train(text, n, vocab, want);
        Tokenizer tok;
        BpeTrainOptions opt = {.vocab_size = vocab};
        char err[256];
        int rc = tokenizer_train_bytes(&tok, text, n, &opt, err, sizeof err);
        CHECK(rc == 0, "train: %s", err);
        int first_diff = -1;
        for (int i = 0; rc == 0 && i < num && i < tok.num_merges && first_diff < 0; i++)
            if (tok.merges[i][0] != want[i][0] || tok.merges[i][1] != want[i][1]) first_diff = i;
        CHECK(rc == 0 && tok.num_merges == num && first_diff < 0,
              "trial %d: %d merges vs reference %d, first difference at %d", trial,
              tok.num_merges, num, first_diff);

        /* the encoder agrees with applying the merges in order, on new text */
        size_t m = 20000;
        uint8_t *other = malloc(m);
        random_text(other, m, rng, 1);
        uint16_t *got = malloc(m * sizeof *got), *ref = malloc(m * sizeof *ref);
        size_t ng = tokenizer_encode(&tok, other, m, got);
        size_t nr = ref_encode(&tok, other, m, ref);
        CHECK(ng == nr && memcmp(got, ref, ng * sizeof *got) == 0,
              "trial %d: encoder gives %zu tokens, reference %zu", trial, ng, nr);
        /* and a second time, from the memo */
        size_t ng2 = tokenizer_encode(&tok, other, m, got);
        CHECK(ng2 == nr && memcmp(got, ref, ng2 * sizeof *got) == 0, "memoised encode differs");
        free(other);
        free(got);
        free(ref);
        free(want);
        free(text);
        tokenizer_free(&tok);
    }
}

/* ---- round trips, determinism ------------------------------------------------------------------ */

static int round_trips(Tokenizer *tok, const uint8_t *x, size_t n) {
    uint16_t *ids = malloc((n ? n : 1) * sizeof *ids);
    uint8_t *back = malloc(n ? n : 1);
    size_t k = tokenizer_encode(tok, x, n, ids);
    long long m = tokenizer_decode(tok, ids, k, back, n, NULL);
    int ok = k <= n && m == (long long)n && memcmp(back, x, n) == 0 &&
             tokenizer_decoded_length(tok, ids, k) == n;
    for (size_t i = 0; i < k; i++) ok &= ids[i] < tok->vocab_size;
    free(ids);
    free(back);
    return ok;
}

static void test_round_trips(uint64_t *rng) {
    size_t n = 200000;
    uint8_t *corpus = malloc(n);
    random_text(corpus, n, rng, 1);
    Tokenizer bpe, bytes;
    BpeTrainOptions opt = {.vocab_size = 1500};
    char err[256];
    CHECK(tokenizer_train_bytes(&bpe, corpus, n, &opt, err, sizeof err) == 0, "train: %s", err);
    CHECK(bpe.vocab_size > 1000, "vocabulary grew to %d", bpe.vocab_size);
    CHECK(tokenizer_init_bytes(&bytes) == 0 && bytes.vocab_size == 256, "byte tokenizer");
    for (int t = 0; t < bpe.vocab_size; t++) {
        size_t len;
        tokenizer_token_bytes(&bpe, t, &len);
        if (len < 1 || len > PRETOK_MAX_CHUNK) { CHECK(0, "token %d is %zu bytes", t, len); break; }
    }

    int bad_bpe = 0, bad_bytes = 0;
    uint8_t *x = malloc(70000);
    for (int trial = 0; trial < 60; trial++) {
        size_t len = trial == 0 ? 0 : test_rng_next(rng) % 70000;
        int kind = trial % 4;
        if (kind == 0) /* uniform random bytes: NUL, invalid UTF-8, everything */
            for (size_t i = 0; i < len; i++) x[i] = (uint8_t)(test_rng_next(rng) >> 24);
        else if (kind == 1) /* text-like */
            random_text(x, len, rng, 1);
        else if (kind == 2) /* runs of one byte longer than a chunk */
            for (size_t i = 0; i < len;) {
                uint64_t r = test_rng_next(rng);
                size_t run = 1 + r % 400;
                uint8_t c = (uint8_t)" a\n\0\xff.7"[(r >> 20) % 7];
                for (size_t j = 0; j < run && i < len; j++) x[i++] = c;
            }
        else /* truncated UTF-8 and stray continuation bytes among text */
            for (size_t i = 0; i < len; i++) {
                uint64_t r = test_rng_next(rng);
                x[i] = (uint8_t)"ab \xc3\xa9\x80\xe2\x82\xf0'"[r % 10];
            }
        bad_bpe += !round_trips(&bpe, x, len);
        bad_bytes += !round_trips(&bytes, x, len);
    }
    CHECK(bad_bpe == 0, "BPE round trip failed %d times", bad_bpe);
    CHECK(bad_bytes == 0, "byte round trip failed %d times", bad_bytes);

    /* the byte tokenizer is the identity */
    uint16_t ids[4];
    CHECK(tokenizer_encode(&bytes, (const uint8_t *)"a\0\xff", 3, ids) == 3 && ids[0] == 'a' &&
              ids[1] == 0 && ids[2] == 255, "byte tokenizer is the identity");

    /* BPE shortens text it was trained on */
    uint16_t *tok_ids = malloc(n * sizeof *tok_ids);
    size_t k = tokenizer_encode(&bpe, corpus, n, tok_ids);
    double bpt = tokenizer_bytes_per_token(&bpe, tok_ids, k);
    CHECK(bpt > 2.0 && fabs(bpt - (double)n / k) < 1e-9, "bytes per token %.3f", bpt);
    CHECK(tokenizer_bytes_per_token(&bpe, tok_ids, 0) == 0.0, "bytes per token of nothing");
    uint16_t bad_ids[3] = {'a', 65000, 'b'};
    size_t bad_at = 99;
    uint8_t out[8];
    CHECK(tokenizer_decode(&bpe, bad_ids, 3, out, sizeof out, &bad_at) == -1 && bad_at == 1,
          "decode rejects an id outside the vocabulary");
    CHECK(tokenizer_decode(&bpe, tok_ids, k, out, 1, NULL) == -1, "decode into too small a buffer");
    CHECK(tokenizer_bytes_per_token(&bpe, bad_ids, 3) == 2.0 / 3.0, "invalid ids count 0 bytes");
    size_t len = 123;
    CHECK(tokenizer_token_bytes(&bpe, bpe.vocab_size, &len) == NULL && len == 0 &&
              tokenizer_token_bytes(&bpe, -1, NULL) == NULL, "token_bytes of an invalid id");

    /* through an llm.c token file and back */
    char path[] = "/tmp/test_tokenizer_tok_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(token_file_write(path, tok_ids, k, err, sizeof err) == 0, "token_file_write: %s", err);
    Dataset ds;
    if (dataset_open(&ds, path, err, sizeof err) == 0) {
        CHECK(ds.kind == DATASET_TOKENS16 && ds.num_tokens == k && ds.max_token < bpe.vocab_size,
              "token file read back");
        uint8_t *back = malloc(n);
        CHECK(tokenizer_decode(&bpe, ds.tokens, ds.num_tokens, back, n, NULL) == (long long)n &&
                  memcmp(back, corpus, n) == 0, "decode of the token file");
        free(back);
        dataset_close(&ds);
    } else {
        CHECK(0, "dataset_open: %s", err);
    }
    unlink(path);

    free(tok_ids);
    free(x);
    free(corpus);
    tokenizer_free(&bpe);
    tokenizer_free(&bytes);
}

static void test_determinism(uint64_t *rng) {
    size_t n = 100000;
    uint8_t *text = malloc(n);
    random_text(text, n, rng, 1);
    BpeTrainOptions opt = {.vocab_size = 1200};
    char err[256];
    Tokenizer a, b, c;
    CHECK(tokenizer_train_bytes(&a, text, n, &opt, err, sizeof err) == 0, "train a");
    CHECK(tokenizer_train_bytes(&b, text, n, &opt, err, sizeof err) == 0, "train b");
    uint8_t *fa = NULL, *fb = NULL;
    size_t na = 0, nb = 1;
    CHECK(tokenizer_serialize(&a, &fa, &na) == 0 && tokenizer_serialize(&b, &fb, &nb) == 0,
          "serialize");
    CHECK(fa && fb && na == nb && memcmp(fa, fb, na) == 0, "two trainings give identical files");
    /* a small chunk table forces pruning: still deterministic, still a valid tokenizer */
    opt.max_unique_chunks = 64;
    CHECK(tokenizer_train_bytes(&c, text, n, &opt, err, sizeof err) == 0, "pruned train: %s", err);
    Tokenizer d;
    CHECK(tokenizer_train_bytes(&d, text, n, &opt, err, sizeof err) == 0 &&
              d.num_merges == c.num_merges &&
              memcmp(d.merges, c.merges, (size_t)c.num_merges * 4) == 0 && c.num_merges > 0,
          "pruned training is deterministic");
    CHECK(round_trips(&c, text, n), "round trip with the pruned tokenizer");
    free(fa);
    free(fb);
    tokenizer_free(&a);
    tokenizer_free(&b);
    tokenizer_free(&c);
    tokenizer_free(&d);
    free(text);
}

/* ---- the vocabulary file ----------------------------------------------------------------------- */

/* Patches the CRC of a serialised vocabulary after an edit. */
static void fix_crc(uint8_t *data, size_t n) {
    uint32_t crc = tokenizer_crc32(data, n - 4);
    for (int i = 0; i < 4; i++) data[n - 4 + i] = (uint8_t)(crc >> (8 * i));
}

static int parse_fails(const uint8_t *data, size_t n, const char *expect_in_message) {
    Tokenizer tok;
    char err[512] = "";
    int rc = tokenizer_parse(&tok, data, n, err, sizeof err);
    int ok = rc == -1 && tok.vocab_size == 0 && err[0] && !strchr(err, '\n') &&
             (!expect_in_message || strstr(err, expect_in_message));
    if (!ok) fprintf(stderr, "  parse gave %d, \"%s\"\n", rc, err);
    if (rc == 0) tokenizer_free(&tok);
    return ok;
}

static void test_vocab_file(uint64_t *rng) {
    CHECK(tokenizer_crc32("123456789", 9) == 0xCBF43926u, "CRC-32 check value");
    Tokenizer tok;
    CHECK(train_text(&tok, "hug,hug,hug,pug,pug,pun,pun,pun,pun,bun,hugs", 1000, 1) == 0, "train");
    uint8_t *file = NULL;
    size_t n = 0;
    CHECK(tokenizer_serialize(&tok, &file, &n) == 0 && n == 28 + 4 * 8, "serialised size %zu", n);
    if (n != 28 + 4 * 8) {
        free(file);
        tokenizer_free(&tok);
        return;
    }

    /* save, load, same tokenizer */
    char path[] = "/tmp/test_tokenizer_vocab_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    char err[512];
    CHECK(tokenizer_save(&tok, path, err, sizeof err) == 0, "save: %s", err);
    Tokenizer back;
    CHECK(tokenizer_load(&back, path, err, sizeof err) == 0 && back.vocab_size == tok.vocab_size &&
              memcmp(back.merges, tok.merges, 4 * (size_t)tok.num_merges) == 0,
          "load: %s", err);
    tokenizer_free(&back);
    CHECK(tokenizer_load(&back, "/nonexistent/vocab.bin", err, sizeof err) == -1 &&
              strstr(err, "cannot open"), "missing file: %s", err);
    CHECK(tokenizer_load(&back, "/tmp", err, sizeof err) == -1, "a directory: %s", err);
    unlink(path);

    /* every truncation fails */
    int bad = 0;
    for (size_t len = 0; len < n; len++) bad += !parse_fails(file, len, NULL);
    CHECK(bad == 0, "%d truncations were accepted", bad);
    CHECK(parse_fails(file, 20, "truncated"), "a short header says truncated");
    CHECK(parse_fails(file, n - 4, "truncated"), "a missing checksum says truncated");
    /* every single-bit flip fails (the CRC catches what the fields do not) */
    bad = 0;
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            file[i] ^= (uint8_t)(1 << bit);
            bad += !parse_fails(file, n, NULL);
            file[i] ^= (uint8_t)(1 << bit);
        }
    CHECK(bad == 0, "%d bit flips were accepted", bad);
    /* trailing bytes */
    uint8_t *longer = malloc(n + 4);
    memcpy(longer, file, n);
    memset(longer + n, 0, 4);
    CHECK(parse_fails(longer, n + 4, "trailing"), "trailing bytes");
    free(longer);

    /* well-formed checksums around bad contents */
    uint8_t *f2 = malloc(n);
    memcpy(f2, file, n); f2[0] = 'X'; fix_crc(f2, n);
    CHECK(parse_fails(f2, n, "magic"), "bad magic");
    memcpy(f2, file, n); f2[8] = 2; fix_crc(f2, n);
    CHECK(parse_fails(f2, n, "version"), "bad version");
    memcpy(f2, file, n); f2[16] = 9; fix_crc(f2, n);
    CHECK(parse_fails(f2, n, "pre-tokenizer"), "bad pre-tokenizer rule");
    memcpy(f2, file, n); f2[21] = 1; fix_crc(f2, n);
    CHECK(parse_fails(f2, n, "reserved"), "reserved field not 0");
    memcpy(f2, file, n); f2[12] = 0xFF; f2[13] = 0xFF; f2[14] = 0; fix_crc(f2, n);
    CHECK(parse_fails(f2, n, "65535"), "vocabulary 65535 in a short file");
    memcpy(f2, file, n); f2[12] = 0; f2[13] = 0; f2[14] = 1; fix_crc(f2, n);
    CHECK(parse_fails(f2, n, "outside"), "vocabulary 65536");
    memcpy(f2, file, n); f2[24 + 4 * 2] = 0x07; f2[25 + 4 * 2] = 0x01; fix_crc(f2, n); /* 263 */
    CHECK(parse_fails(f2, n, "not defined before"), "a merge using a later token");
    memcpy(f2, file, n); memcpy(f2 + 24 + 4 * 3, f2 + 24, 4); fix_crc(f2, n);
    CHECK(parse_fails(f2, n, "repeats"), "a repeated pair");
    free(f2);

    /* tokens longer than a chunk: (a,a), (256,256), ... doubles up to 256 bytes */
    uint16_t doubling[8][2] = {{'a', 'a'}};
    for (int i = 1; i < 8; i++) doubling[i][0] = doubling[i][1] = (uint16_t)(256 + i - 1);
    CHECK(tokenizer_init_merges(&back, (const uint16_t(*)[2])doubling, 6, err, sizeof err) == 0,
          "a 128-byte token is fine: %s", err);
    tokenizer_free(&back);
    CHECK(tokenizer_init_merges(&back, (const uint16_t(*)[2])doubling, 8, err, sizeof err) == -1 &&
              strstr(err, "limit"), "a 256-byte token is refused");

    /* random garbage, with and without a valid checksum, never crashes */
    uint8_t junk[600];
    int accepted = 0;
    for (int t = 0; t < 3000; t++) {
        size_t len = 28 + 4 * (test_rng_next(rng) % 140);
        for (size_t i = 0; i < len; i++) junk[i] = (uint8_t)(test_rng_next(rng) >> 32);
        memcpy(junk, "BPEVOCAB\1\0\0\0", 12);
        uint32_t vocab = 256 + (uint32_t)(len - 28) / 4;
        junk[12] = (uint8_t)vocab; junk[13] = (uint8_t)(vocab >> 8); junk[14] = junk[15] = 0;
        junk[16] = 1; junk[17] = junk[18] = junk[19] = 0;
        memset(junk + 20, 0, 4);
        for (size_t i = 0; i < len - 28 && t % 2; i += 4) /* small ids, so some files are valid */
            junk[24 + i + 1] = junk[24 + i + 3] = 0;
        fix_crc(junk, len);
        Tokenizer g;
        if (tokenizer_parse(&g, junk, len, err, sizeof err) == 0) {
            accepted++;
            uint8_t text[300];
            random_text(text, sizeof text, rng, 1);
            if (!round_trips(&g, text, sizeof text)) bad++;
            tokenizer_free(&g);
        }
    }
    CHECK(accepted > 0 && bad == 0, "random vocabularies: %d accepted, %d bad round trips",
          accepted, bad);

    free(file);
    tokenizer_free(&tok);
}

static void test_vocab_limits(void) {
    Tokenizer tok;
    char err[256];
    BpeTrainOptions opt = {.vocab_size = 65536};
    const uint8_t text[] = "abababab";
    CHECK(tokenizer_train_bytes(&tok, text, 8, &opt, err, sizeof err) == -1 &&
              strstr(err, "uint16") && !strchr(err, '\n'), "65536 refused: %s", err);
    opt.vocab_size = 50257 * 2;
    CHECK(tokenizer_train_bytes(&tok, text, 8, &opt, err, sizeof err) == -1, "100514 refused");
    opt.vocab_size = 255;
    CHECK(tokenizer_train_bytes(&tok, text, 8, &opt, err, sizeof err) == -1, "255 refused");
    opt.vocab_size = 65535;
    CHECK(tokenizer_train_bytes(&tok, text, 8, &opt, err, sizeof err) == 0 &&
              tok.vocab_size == 258, "65535 accepted (stops at %d)", tok.vocab_size);
    tokenizer_free(&tok);
    CHECK(tokenizer_train_file(&tok, "/nonexistent/corpus.txt", &opt, err, sizeof err) == -1 &&
              strstr(err, "cannot open"), "missing corpus: %s", err);
    /* an empty corpus gives the byte vocabulary */
    CHECK(tokenizer_train_bytes(&tok, text, 0, &opt, err, sizeof err) == 0 &&
              tok.vocab_size == 256, "empty corpus");
    tokenizer_free(&tok);
    CHECK(tokenizer_init_merges(&tok, NULL, 65535 - 255, err, sizeof err) == -1,
          "65536 tokens from merges refused");
}

/* ---- special files: FIFOs, links, directories ------------------------------------------------ */

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp") != NULL;
    if (d) closedir(d);
    return n;
}

static int file_equals(const char *path, const uint8_t *want, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint8_t buf[4096];
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return got == n && memcmp(buf, want, n) == 0;
}

/* SIGALRM in test_special_files: something blocked on a FIFO. Say so, with the summary line. */
static void special_files_timed_out(int sig) {
    (void)sig;
    char line[200];
    int len = snprintf(line, sizeof line, "FAIL: special files: blocked on a FIFO for 20 s\n"
                       "test_tokenizer: %d passed, %d failed\n", test_passed_count,
                       test_failed_count + 1);
    if (write(STDOUT_FILENO, line, (size_t)len) < 0) _exit(1);
    _exit(1);
}

static void test_special_files(void) {
    char dir[] = "/tmp/test_tokenizer_special_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    char p[8][512], err[1024];
    for (int i = 0; i < 8; i++) p[i][0] = '\0';
    Tokenizer tok, back;
    CHECK(train_text(&tok, "hug,hug,hug,pug,pug,pun,pun,pun,pun,bun,hugs", 1000, 1) == 0, "train");
    uint8_t *file = NULL;
    size_t n = 0;
    CHECK(tokenizer_serialize(&tok, &file, &n) == 0, "serialise");
    signal(SIGALRM, special_files_timed_out);
    alarm(20); /* a regression that blocks on a FIFO fails instead of hanging */

    /* a FIFO as vocabulary or corpus: refused at once, not read forever */
    snprintf(p[0], sizeof p[0], "%s/fifo", dir);
    CHECK(mkfifo(p[0], 0600) == 0, "mkfifo");
    CHECK(tokenizer_load(&back, p[0], err, sizeof err) == -1 && strstr(err, "not a regular file"),
          "FIFO vocabulary: %s", err);
    BpeTrainOptions opt = {.vocab_size = 300};
    CHECK(tokenizer_train_file(&back, p[0], &opt, err, sizeof err) == -1 &&
              strstr(err, "not a regular file"), "FIFO corpus: %s", err);

    /* saving to a FIFO writes into it; it stays a FIFO */
    pid_t child = fork();
    if (child == 0) {
        alarm(10);
        int fd = open(p[0], O_RDONLY);
        static uint8_t got[4096];
        size_t k = 0;
        for (ssize_t r; fd >= 0 && (r = read(fd, got + k, sizeof got - k)) > 0;) k += (size_t)r;
        _exit(k == n && memcmp(got, file, n) == 0 ? 0 : 1);
    }
    CHECK(tokenizer_save(&tok, p[0], err, sizeof err) == 0, "save to a FIFO: %s", err);
    struct stat st;
    int still_fifo = lstat(p[0], &st) == 0 && S_ISFIFO(st.st_mode);
    CHECK(still_fifo, "the FIFO was replaced by a saved vocabulary");
    if (!still_fifo) kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(still_fifo && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the FIFO's reader did not get the vocabulary");

    /* saving through a relative link chain sub/b -> a -> ../real: links kept, real replaced */
    snprintf(p[1], sizeof p[1], "%s/sub", dir);
    mkdir(p[1], 0700);
    snprintf(p[2], sizeof p[2], "%s/real.bin", dir);
    snprintf(p[3], sizeof p[3], "%s/sub/a", dir);
    snprintf(p[4], sizeof p[4], "%s/sub/b", dir);
    FILE *f = fopen(p[2], "wb");
    if (f) { fputs("old", f); fclose(f); }
    CHECK(symlink("../real.bin", p[3]) == 0 && symlink("a", p[4]) == 0, "symlinks");
    char target[OUT_FILE_PATH];
    CHECK(out_file_resolve(p[4], target, sizeof target, err, sizeof err) == 0, "resolve: %s", err);
    CHECK(out_file_same(target, p[2]), "sub/b resolves to %s, not real.bin", target);
    CHECK(tokenizer_save(&tok, p[4], err, sizeof err) == 0, "save through links: %s", err);
    CHECK(lstat(p[4], &st) == 0 && S_ISLNK(st.st_mode) && lstat(p[3], &st) == 0 &&
              S_ISLNK(st.st_mode), "saving replaced a symbolic link");
    CHECK(file_equals(p[2], file, n), "the link's target does not hold the vocabulary");
    CHECK(count_tmp_files(dir) == 0 && count_tmp_files(p[1]) == 0, "temporary files left");

    /* a dangling link resolves to the file it would create; a loop is an error */
    snprintf(p[5], sizeof p[5], "%s/dangling", dir);
    CHECK(symlink("sub/new.bin", p[5]) == 0, "symlink");
    CHECK(out_file_resolve(p[5], target, sizeof target, err, sizeof err) == 0 &&
              strcmp(target, "") && strstr(target, "/sub/new.bin"), "dangling: %s", target);
    snprintf(p[6], sizeof p[6], "%s/loop", dir);
    CHECK(symlink("loop", p[6]) == 0, "symlink");
    CHECK(out_file_resolve(p[6], target, sizeof target, err, sizeof err) == -1 &&
              strstr(err, "symbolic links"), "a link loop: %s", err);

    /* same file through a link or a hard link; not for different or missing files */
    snprintf(p[7], sizeof p[7], "%s/hard.bin", dir);
    CHECK(link(p[2], p[7]) == 0, "link");
    CHECK(out_file_same(p[4], p[2]) && out_file_same(p[7], p[2]), "same file not seen");
    CHECK(!out_file_same(p[2], p[1]) && !out_file_same(p[5], p[2]), "different files seen as same");
    const char *inputs[2] = {NULL, p[7]};
    CHECK(out_file_check(p[4], inputs, 2, err, sizeof err) == -1 && strstr(err, "same file"),
          "--out = an input: %s", err);
    CHECK(out_file_check(p[1], NULL, 0, err, sizeof err) == -1 && strstr(err, "directory"),
          "--out a directory: %s", err);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/file", dir);
    CHECK(out_file_check(missing, NULL, 0, err, sizeof err) == -1 && strstr(err, "does not exist"),
          "--out in a missing directory: %s", err);
    CHECK(out_file_check("", NULL, 0, err, sizeof err) == -1, "--out empty");
    CHECK(out_file_check(p[5], inputs, 2, err, sizeof err) == 0, "a new file: %s", err);

    /* an aborted write leaves the old contents and no temporary */
    OutFile o;
    CHECK(out_file_open(&o, p[2], err, sizeof err) == 0 && !o.in_place, "open: %s", err);
    if (o.f) { fputs("half", o.f); out_file_abort(&o); }
    CHECK(file_equals(p[2], file, n) && count_tmp_files(dir) == 0, "abort changed the file");

    alarm(0);
    for (int i = 7; i >= 0; i--) if (i != 1 && p[i][0]) unlink(p[i]);
    rmdir(p[1]);
    rmdir(dir);
    free(file);
    tokenizer_free(&tok);
}

int main(void) {
    uint64_t rng = 0x7A3F00D5EEDULL;
    test_pretokenizer();
    test_streamed_cut_matches(&rng);
    test_chunk_table(&rng);
    test_hand_worked_merges();
    test_overlapping_pairs();
    test_against_reference(&rng);
    test_round_trips(&rng);
    test_determinism(&rng);
    test_vocab_file(&rng);
    test_vocab_limits();
    test_special_files();
    return test_summary("test_tokenizer");
}
