/* test/test_data.c: datasets (byte files, llm.c token files, bad files, the embedded corpus,
 * several files as one: globs and lists), the window loader (exact windows, epochs, shuffling,
 * ranks, resume, no window across files), data changing under a live run (SIGBUS guard, tokens
 * rewritten in place) and the 90/5/5 split.
 * All data is fresh random bytes/tokens written to temporary files under /tmp.
 */
#define _GNU_SOURCE /* memmem */
#include "data/dataset.h"
#include "test/test.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t rng = 0x5eed0fda7a5e7ULL;
static char tmpdir[64];

/* ---- helpers ------------------------------------------------------------------------------ */

/* A fresh path inside the test's temporary directory. */
static const char *tmp_path(const char *name) {
    static char paths[16][256];
    static int next = 0;
    char *p = paths[next++ % 16];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    if (n && fwrite(data, 1, n, f) != n) { perror(path); exit(2); }
    fclose(f);
}

static void random_bytes(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(test_rng_next(&rng) >> 56);
}

static void random_tokens(uint16_t *p, size_t n, unsigned vocab) {
    for (size_t i = 0; i < n; i++) p[i] = (uint16_t)((test_rng_next(&rng) >> 32) % vocab);
}

static int one_line_naming(const char *err, const char *path) {
    return err[0] != '\0' && strchr(err, '\n') == NULL && strstr(err, path) != NULL;
}

/* Which window of the loader's range a (inputs, targets) row is; -1 if none or not unique.
 * With random tokens, a window's T+1 tokens identify it. */
static long find_window(const DataLoader *ld, const int *in, const int *tg) {
    long found = -1;
    for (size_t w = 0; w < ld->num_windows; w++) {
        size_t s = loader_window_start(ld, w);
        int same = 1;
        for (int t = 0; t < ld->T && same; t++)
            same = in[t] == dataset_token(ld->ds, s + t) && tg[t] == dataset_token(ld->ds, s + t + 1);
        if (same) {
            if (found >= 0) return -1;
            found = (long)w;
        }
    }
    return found;
}

/* Draws the next batch and writes the window index of each of its B rows (or -1) into win. */
static void next_windows(DataLoader *ld, long *win) {
    size_t n = (size_t)ld->B * ld->T;
    int *in = malloc(n * sizeof *in), *tg = malloc(n * sizeof *tg);
    loader_next(ld, in, tg);
    for (int b = 0; b < ld->B; b++) win[b] = find_window(ld, in + b * ld->T, tg + b * ld->T);
    free(in);
    free(tg);
}

/* ---- datasets ----------------------------------------------------------------------------- */

static void test_byte_file_round_trip(void) {
    size_t n = 4099;
    uint8_t *data = malloc(n);
    random_bytes(data, n);
    data[0] = 'x'; /* not the token-file magic */
    int expect_max = 0;
    for (size_t i = 0; i < n; i++) if (data[i] > expect_max) expect_max = data[i];
    const char *path = tmp_path("bytes.bin");
    write_file(path, data, n);

    Dataset ds;
    char err[512] = "";
    int rc = dataset_open(&ds, path, err, sizeof err);
    CHECK(rc == 0, "open byte file: %s", err);
    if (rc == 0) {
        CHECK(ds.kind == DATASET_BYTES, "byte file kind %d", ds.kind);
        CHECK(ds.num_tokens == n, "byte file has %zu tokens, want %zu", ds.num_tokens, n);
        CHECK(memcmp(ds.bytes, data, n) == 0, "byte file content differs");
        CHECK(ds.max_token == expect_max, "max_token %d want %d", ds.max_token, expect_max);
        CHECK(strcmp(ds.name, path) == 0, "name '%s'", ds.name);
        CHECK(dataset_token(&ds, 17) == data[17], "dataset_token on bytes");
        dataset_close(&ds);
        CHECK(ds.map == NULL && ds.num_tokens == 0, "dataset_close clears the dataset");
    }
    /* a small byte file that is all low values: max_token is found exactly */
    uint8_t small[5] = {3, 9, 1, 7, 2};
    write_file(path, small, sizeof small);
    rc = dataset_open(&ds, path, err, sizeof err);
    CHECK(rc == 0 && ds.num_tokens == 5 && ds.max_token == 9, "small byte file: rc %d max %d", rc,
          ds.max_token);
    if (rc == 0) dataset_close(&ds);
    unlink(path);
    free(data);
}

static void test_token_file_round_trip(void) {
    size_t n = 1237;
    uint16_t *tok = malloc(n * sizeof *tok);
    random_tokens(tok, n, 50257);
    tok[100] = 50256;
    const char *path = tmp_path("tokens.bin");
    char err[512] = "";
    int rc = token_file_write(path, tok, n, err, sizeof err);
    CHECK(rc == 0, "token_file_write: %s", err);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "token_file_write left %s behind", tmp);

    struct stat st;
    CHECK(stat(path, &st) == 0 && (size_t)st.st_size == 1024 + 2 * n, "token file size %lld",
          (long long)st.st_size);
    FILE *f = fopen(path, "rb");
    int32_t header[256] = {0};
    CHECK(f && fread(header, 4, 256, f) == 256, "read header back");
    if (f) fclose(f);
    CHECK(header[0] == 20240520 && header[1] == 1 && header[2] == (int32_t)n,
          "header %d %d %d", header[0], header[1], header[2]);

    Dataset ds;
    rc = dataset_open(&ds, path, err, sizeof err);
    CHECK(rc == 0, "open token file: %s", err);
    if (rc == 0) {
        CHECK(ds.kind == DATASET_TOKENS16, "token file kind %d", ds.kind);
        CHECK(ds.num_tokens == n, "token file has %zu tokens, want %zu", ds.num_tokens, n);
        CHECK(memcmp(ds.tokens, tok, n * 2) == 0, "token content differs");
        CHECK(ds.max_token == 50256, "max_token %d", ds.max_token);
        CHECK(dataset_token(&ds, 100) == 50256, "dataset_token on tokens");
        dataset_close(&ds);
    }
    /* overwriting an existing file works (rename replaces it) */
    rc = token_file_write(path, tok, 7, err, sizeof err);
    CHECK(rc == 0 && dataset_open(&ds, path, err, sizeof err) == 0 && ds.num_tokens == 7,
          "rewrite with 7 tokens: %s", err);
    if (ds.map) dataset_close(&ds);

    /* write failures: a missing directory, no tokens */
    const char *bad = "/tmp/no_such_dir_for_test_data/x.bin";
    err[0] = '\0';
    CHECK(token_file_write(bad, tok, n, err, sizeof err) == -1 && strstr(err, bad) &&
              !strchr(err, '\n'), "write into a missing dir: '%s'", err);
    err[0] = '\0';
    CHECK(token_file_write(path, tok, 0, err, sizeof err) == -1 && strstr(err, path),
          "write of 0 tokens: '%s'", err);
    unlink(path);
    free(tok);
}

/* Opens path expecting failure; the message must be one line naming the file and contain
 * the word given. */
static void expect_open_fails(const char *path, const char *word, const char *what) {
    Dataset ds;
    memset(&ds, 0x5a, sizeof ds);
    char err[512] = "";
    int rc = dataset_open(&ds, path, err, sizeof err);
    CHECK(rc == -1, "%s: open returned %d", what, rc);
    CHECK(one_line_naming(err, path), "%s: message '%s' should be one line naming %s", what, err,
          path);
    CHECK(strstr(err, word) != NULL, "%s: message '%s' should say '%s'", what, err, word);
    CHECK(ds.map == NULL && ds.num_tokens == 0, "%s: dataset left half-open", what);
}

/* A token file of n tokens whose header then gets patched: version, count, or a cut. */
static const char *make_token_file(const char *name, size_t n, int version, long count,
                                   long cut_bytes, long extra_bytes) {
    size_t len = 1024 + 2 * n;
    uint8_t *buf = calloc(len + (size_t)extra_bytes, 1);
    int32_t h[3] = {20240520, version, (int32_t)count};
    memcpy(buf, h, sizeof h);
    random_tokens((uint16_t *)(buf + 1024), n, 65536);
    random_bytes(buf + len, (size_t)extra_bytes);
    const char *path = tmp_path(name);
    write_file(path, buf, len - (size_t)cut_bytes + (size_t)extra_bytes);
    free(buf);
    return path;
}

/* As root, permissions do not stop open(); a child that drops to "nobody" sees them. */
static void test_unreadable_file(void) {
    const char *path = tmp_path("unreadable.bin");
    uint8_t data[64];
    random_bytes(data, sizeof data);
    write_file(path, data, sizeof data);
    chmod(path, 0);
    chmod(tmpdir, 0755);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(77);
        Dataset ds;
        char err[512] = "";
        int rc = dataset_open(&ds, path, err, sizeof err);
        if (rc == -1 && one_line_naming(err, path) && strstr(err, "denied")) _exit(0);
        fprintf(stderr, "unreadable file: rc %d, message '%s'\n", rc, err);
        _exit(1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 77) {
        printf("test_data: note: cannot drop privileges; unreadable-file case skipped\n");
    } else {
        CHECK(code == 0, "unreadable file: child exit %d", code);
    }
    chmod(tmpdir, 0700);
    unlink(path);
}

static void test_bad_files(void) {
    expect_open_fails(tmp_path("does_not_exist.bin"), "No such file", "missing file");
    expect_open_fails(tmpdir, "directory", "directory");

    const char *empty = tmp_path("empty.bin");
    write_file(empty, "", 0);
    expect_open_fails(empty, "empty", "empty file");
    unlink(empty);

    const char *cut = make_token_file("cut.bin", 300, 1, 300, 2, 0);
    expect_open_fails(cut, "truncated", "token file one token short");
    unlink(cut);
    const char *cut_odd = make_token_file("cut_odd.bin", 300, 1, 300, 1, 0);
    expect_open_fails(cut_odd, "truncated", "token file half a token short");
    unlink(cut_odd);
    const char *too_many = make_token_file("claims_more.bin", 300, 1, 100000, 0, 0);
    expect_open_fails(too_many, "truncated", "header claims more tokens than present");
    unlink(too_many);

    /* the magic, then less than a whole header */
    uint8_t stub[100];
    random_bytes(stub, sizeof stub);
    int32_t magic = 20240520;
    memcpy(stub, &magic, 4);
    const char *stubp = tmp_path("stub.bin");
    write_file(stubp, stub, sizeof stub);
    expect_open_fails(stubp, "truncated", "header cut short");
    unlink(stubp);

    const char *v2 = make_token_file("v2.bin", 50, 2, 50, 0, 0);
    expect_open_fails(v2, "version", "token file version 2");
    unlink(v2);
    const char *v0 = make_token_file("v0.bin", 50, 0, 50, 0, 0);
    expect_open_fails(v0, "version", "token file version 0");
    unlink(v0);

    const char *neg = make_token_file("neg.bin", 10, 1, -5, 0, 0);
    expect_open_fails(neg, "tokens", "negative token count");
    unlink(neg);
    const char *extra = make_token_file("extra.bin", 40, 1, 40, 0, 6);
    expect_open_fails(extra, "stray", "token file with trailing bytes");
    unlink(extra);

    /* a FIFO must be refused, not block the open */
    const char *fifo = tmp_path("fifo");
    if (mkfifo(fifo, 0600) == 0) {
        expect_open_fails(fifo, "regular", "fifo");
        unlink(fifo);
    }
    /* a device is refused by name, without reading from it */
    expect_open_fails("/dev/null", "device", "character device");
    expect_open_fails("/dev/zero", "device", "character device that never ends");
    test_unreadable_file();

    Dataset ds;
    char err[128] = "";
    CHECK(dataset_open(&ds, "", err, sizeof err) == -1 && err[0], "empty path: '%s'", err);
    /* a tiny err buffer is truncated, never overrun */
    char small[8];
    memset(small, 'Z', sizeof small);
    CHECK(dataset_open(&ds, tmp_path("nope"), small, 4) == -1 && small[3] == '\0' &&
              small[4] == 'Z', "small err buffer");
}

static void test_memory_and_embedded(void) {
    uint8_t bytes[333];
    random_bytes(bytes, sizeof bytes);
    bytes[5] = 255;
    Dataset ds;
    dataset_from_bytes(&ds, bytes, sizeof bytes, "mem");
    CHECK(ds.kind == DATASET_BYTES && ds.num_tokens == 333 && ds.bytes == bytes && ds.map == NULL,
          "dataset_from_bytes fields");
    CHECK(ds.max_token == 255 && strcmp(ds.name, "mem") == 0, "from_bytes max %d name %s",
          ds.max_token, ds.name);
    dataset_close(&ds);
    CHECK(bytes[5] == 255, "closing a memory dataset leaves its bytes alone");

    dataset_embedded(&ds);
    CHECK(ds.kind == DATASET_BYTES && ds.num_tokens > 1000, "embedded corpus has %zu bytes",
          ds.num_tokens);
    CHECK(strcmp(ds.name, "embedded corpus") == 0, "embedded name '%s'", ds.name);
    CHECK(ds.max_token > 'z' - 10 && ds.max_token <= 255, "embedded max_token %d", ds.max_token);
    /* the corpus holds the project's headers, this contract among them */
    CHECK(memmem(ds.bytes, ds.num_tokens, "TOKEN_FILE_MAGIC", 16) != NULL,
          "embedded corpus should contain data/dataset.h");
    dataset_close(&ds);
}

/* ---- several files as one dataset ---------------------------------------------------------- */

/* Writes `count` shards named prefix_<names[i]>.bin of the given sizes (tokens), bytes or token
 * files, and the concatenation of their tokens into all[]; returns the paths. */
static void make_shards(char paths[][256], const char *prefix, const char *const *names,
                        const size_t *sizes, int count, int tokens, int *all) {
    size_t at = 0;
    for (int i = 0; i < count; i++) {
        snprintf(paths[i], 256, "%s/%s_%s.bin", tmpdir, prefix, names[i]);
        if (tokens) {
            uint16_t *t = malloc(sizes[i] * sizeof *t);
            random_tokens(t, sizes[i], 50257);
            char err[256];
            if (token_file_write(paths[i], t, sizes[i], err, sizeof err)) { puts(err); exit(2); }
            for (size_t k = 0; k < sizes[i]; k++) all[at++] = t[k];
            free(t);
        } else {
            uint8_t *b = malloc(sizes[i]);
            random_bytes(b, sizes[i]);
            b[0] = 'a' + (uint8_t)i; /* never the token-file magic */
            write_file(paths[i], b, sizes[i]);
            for (size_t k = 0; k < sizes[i]; k++) all[at++] = b[k];
            free(b);
        }
    }
}

/* The windows the boundary rule allows in [begin, end): per file, at multiples of T from the
 * start of the file's part of the range. Returns how many, their starts in starts[]. */
static size_t expected_windows(const size_t *sizes, int count, size_t begin, size_t end, int T,
                               size_t *starts) {
    size_t n = 0, first = 0;
    for (int i = 0; i < count; i++) {
        size_t a = first > begin ? first : begin, b = first + sizes[i] < end ? first + sizes[i] : end;
        for (size_t s = a; b > a && s + (size_t)T < b; s += (size_t)T) starts[n++] = s;
        first += sizes[i];
    }
    return n;
}

static void test_spec_concatenation(int tokens) {
    const char *kind = tokens ? "token shards" : "byte shards";
    const char *names[3] = {"000", "001", "002"};
    size_t sizes[3] = {203, 61, 340}, total = 604;
    char paths[3][256];
    int all[604];
    const char *prefix = tokens ? "tok" : "byt";
    make_shards(paths, prefix, names, sizes, 3, tokens, all);
    char spec[600];
    snprintf(spec, sizeof spec, "%s/%s_*.bin", tmpdir, prefix);

    Dataset ds;
    char err[512] = "";
    int rc = dataset_open_spec(&ds, spec, err, sizeof err);
    CHECK(rc == 0, "%s: open '%s': %s", kind, spec, err);
    if (rc) return;
    CHECK(ds.num_files == 3 && ds.num_tokens == total, "%s: %zu files, %zu tokens", kind,
          ds.num_files, ds.num_tokens);
    CHECK(ds.kind == (tokens ? DATASET_TOKENS16 : DATASET_BYTES), "%s: kind %d", kind, ds.kind);
    CHECK(strstr(ds.name, spec) && strstr(ds.name, "3 files"), "%s: name '%s'", kind, ds.name);
    int same = 1, expect_max = 0;
    for (size_t i = 0; i < total; i++) {
        same &= dataset_token(&ds, i) == all[i];
        if (all[i] > expect_max) expect_max = all[i];
    }
    CHECK(same, "%s: tokens differ from the concatenation", kind);
    CHECK(ds.max_token == expect_max, "%s: max_token %d want %d", kind, ds.max_token, expect_max);
    size_t run = 0;
    const void *p = dataset_run(&ds, 210, &run); /* token 7 of the second file */
    int at210 = p ? (tokens ? ((const uint16_t *)p)[0] : ((const uint8_t *)p)[0]) : -1;
    CHECK(p && run == 203 + 61 - 210 && at210 == all[210], "%s: dataset_run(210) gives %zu",
          kind, run);
    CHECK(dataset_run(&ds, total, &run) == NULL && run == 0, "%s: dataset_run past the end", kind);

    /* every window of a sequential epoch over the whole dataset, T=8: inside one file each */
    int T = 8;
    size_t starts[700]; /* at most one window per token */
    size_t nexp = expected_windows(sizes, 3, 0, total, T, starts);
    DataLoader ld;
    rc = loader_init(&ld, &ds, 0, total, 1, T, 0, 1, 0, 0, err, sizeof err);
    CHECK(rc == 0 && ld.num_windows == nexp, "%s: loader %d, %zu windows want %zu: %s", kind, rc,
          ld.num_windows, nexp, err);
    if (rc == 0) {
        int bad = 0, in[8], tg[8];
        for (size_t w = 0; w < nexp; w++) {
            loader_next(&ld, in, tg);
            for (int t = 0; t < T; t++)
                bad += in[t] != all[starts[w] + t] || tg[t] != all[starts[w] + t + 1];
        }
        CHECK(bad == 0, "%s: %d tokens of the epoch differ from the per-file windows", kind, bad);
        loader_free(&ld);
    }
    /* the 90/5/5 split still works: val and train ranges cut across files */
    size_t b, e;
    const char *parts[] = {"train", "val", "test"};
    for (int k = 0; k < 3; k++) {
        dataset_split(&ds, parts[k], &b, &e);
        T = 4;
        nexp = expected_windows(sizes, 3, b, e, T, starts);
        rc = loader_init(&ld, &ds, b, e, 1, T, 0, 1, 1, 3, err, sizeof err);
        CHECK(rc == 0 && ld.num_windows == nexp, "%s: %s split [%zu, %zu): %zu windows want %zu: %s",
              kind, parts[k], b, e, ld.num_windows, nexp, err);
        int inside = 1;
        for (size_t w = 0; rc == 0 && w < ld.num_windows; w++) inside &= loader_window_start(&ld, w) == starts[w];
        CHECK(inside, "%s: %s split windows start where the rule says", kind, parts[k]);
        if (rc == 0) loader_free(&ld);
    }
    dataset_close(&ds);
    CHECK(ds.files == NULL && ds.num_files == 0, "%s: closed", kind);

    /* a comma list in another order is that order */
    snprintf(spec, sizeof spec, "%s,%s", paths[2], paths[0]);
    rc = dataset_open_spec(&ds, spec, err, sizeof err);
    CHECK(rc == 0 && ds.num_files == 2 && ds.num_tokens == sizes[2] + sizes[0] &&
              dataset_token(&ds, 0) == all[203 + 61] && dataset_token(&ds, sizes[2]) == all[0] &&
              strstr(ds.name, "2 files"), "%s: list '%s': %s", kind, spec, err);
    if (rc == 0) dataset_close(&ds);
    /* a list item may itself be a pattern */
    snprintf(spec, sizeof spec, "%s,%s/%s_00[01].bin", paths[2], tmpdir, prefix);
    rc = dataset_open_spec(&ds, spec, err, sizeof err);
    CHECK(rc == 0 && ds.num_files == 3 && dataset_token(&ds, sizes[2]) == all[0] &&
              dataset_token(&ds, sizes[2] + sizes[0]) == all[203], "%s: list with a pattern: %s",
          kind, err);
    if (rc == 0) dataset_close(&ds);
    for (int i = 0; i < 3; i++) unlink(paths[i]);
}

static void test_spec_glob_order(void) {
    /* created out of order; strcmp order is 02, 1, 10, 9 */
    const char *names[4] = {"10", "02", "9", "1"};
    size_t sizes[4] = {20, 30, 40, 50};
    char paths[4][256];
    int all[140];
    make_shards(paths, "ord", names, sizes, 4, 0, all);
    char spec[300];
    snprintf(spec, sizeof spec, "%s/ord_*.bin", tmpdir);
    Dataset ds;
    char err[512] = "";
    int rc = dataset_open_spec(&ds, spec, err, sizeof err);
    CHECK(rc == 0 && ds.num_files == 4, "glob order: %s", err);
    if (rc == 0) {
        const char *want[4] = {"ord_02.bin", "ord_1.bin", "ord_10.bin", "ord_9.bin"};
        int order_ok = 1;
        for (int i = 0; i < 4; i++) order_ok &= strstr(ds.files[i].path, want[i]) != NULL;
        CHECK(order_ok, "glob matches in byte order: %s %s %s %s", ds.files[0].path,
              ds.files[1].path, ds.files[2].path, ds.files[3].path);
        /* the second file is ord_1.bin = names[3], after ord_02.bin = names[1] */
        CHECK(dataset_token(&ds, 30) == all[20 + 30 + 40], "glob order: token 30");
        dataset_close(&ds);
    }
    for (int i = 0; i < 4; i++) unlink(paths[i]);
}

static void expect_spec_fails(const char *spec, const char *word, const char *what) {
    Dataset ds;
    memset(&ds, 0x5a, sizeof ds);
    char err[512] = "";
    int rc = dataset_open_spec(&ds, spec, err, sizeof err);
    CHECK(rc == -1, "%s: open returned %d", what, rc);
    CHECK(err[0] && !strchr(err, '\n') && strstr(err, word), "%s: message '%s' should be one "
          "line saying '%s'", what, err, word);
    CHECK(ds.files == NULL && ds.num_files == 0 && ds.num_tokens == 0, "%s: left half-open",
          what);
    if (rc == 0) dataset_close(&ds);
}

static void test_spec_errors(void) {
    char spec[800];
    snprintf(spec, sizeof spec, "%s/nothing_*.bin", tmpdir);
    expect_spec_fails(spec, "matches no file", "empty glob");
    expect_spec_fails(spec, "nothing_*.bin", "empty glob names the pattern");

    const char *names[2] = {"a", "b"};
    size_t sizes[2] = {100, 100};
    char bp[2][256], tp[2][256];
    int all[200];
    make_shards(bp, "mixb", names, sizes, 1, 0, all);
    make_shards(tp, "mixt", names, sizes, 2, 1, all);
    snprintf(spec, sizeof spec, "%s,%s,%s", tp[0], bp[0], tp[1]);
    expect_spec_fails(spec, "mix", "token file then bytes");
    snprintf(spec, sizeof spec, "%s,%s", bp[0], tp[0]);
    expect_spec_fails(spec, "mix", "bytes then token file");
    snprintf(spec, sizeof spec, "%s/mix*.bin", tmpdir);
    expect_spec_fails(spec, "mix", "mixed kinds by a pattern");

    snprintf(spec, sizeof spec, "%s,,%s", tp[0], tp[1]);
    expect_spec_fails(spec, "empty file name", "empty list item");
    snprintf(spec, sizeof spec, "%s,", tp[0]);
    expect_spec_fails(spec, "empty file name", "trailing comma");
    snprintf(spec, sizeof spec, "%s,%s/missing.bin", tp[0], tmpdir);
    expect_spec_fails(spec, "missing.bin", "a missing file in the list");
    snprintf(spec, sizeof spec, "%s,%s", tp[0], tmpdir);
    expect_spec_fails(spec, "directory", "a directory in the list");
    expect_spec_fails("", "no file name", "empty spec");

    /* an existing file whose name has a comma and a bracket is that one file */
    char odd[300];
    snprintf(odd, sizeof odd, "%s/odd,name[1].bin", tmpdir);
    write_file(odd, "hello world", 11);
    Dataset ds;
    char err[512] = "";
    int rc = dataset_open_spec(&ds, odd, err, sizeof err);
    CHECK(rc == 0 && ds.num_files == 1 && ds.num_tokens == 11 && strcmp(ds.name, odd) == 0 &&
              ds.bytes && ds.bytes[0] == 'h', "existing path with ',' and '[': %s", err);
    if (rc == 0) dataset_close(&ds);
    unlink(odd);
    unlink(bp[0]);
    unlink(tp[0]);
    unlink(tp[1]);
}

static void test_spec_short_shard(void) {
    const char *names[3] = {"0", "1", "2"};
    size_t sizes[3] = {500, 5, 500};
    char paths[3][256];
    int all[1005];
    make_shards(paths, "short", names, sizes, 3, 1, all);
    char spec[300];
    snprintf(spec, sizeof spec, "%s/short_*.bin", tmpdir);
    Dataset ds;
    char err[512] = "";
    int rc = dataset_open_spec(&ds, spec, err, sizeof err);
    CHECK(rc == 0, "short shard: open: %s", err);
    if (rc) return;
    DataLoader ld;
    err[0] = '\0';
    rc = loader_init(&ld, &ds, 0, ds.num_tokens, 2, 8, 0, 1, 0, 0, err, sizeof err);
    CHECK(rc == -1 && !strchr(err, '\n') && strstr(err, paths[1]) && strstr(err, "fewer than"),
          "a 5-token shard with T=8: rc %d '%s'", rc, err);
    if (rc == 0) loader_free(&ld);
    /* T=4: the 5-token shard holds exactly one window */
    rc = loader_init(&ld, &ds, 0, ds.num_tokens, 2, 4, 0, 1, 0, 0, err, sizeof err);
    CHECK(rc == 0 && ld.num_windows == 124 + 1 + 124, "T=4: %zu windows: %s", ld.num_windows,
          err);
    if (rc == 0) loader_free(&ld);
    /* a range that only clips the short shard is fine: its part just holds no window */
    rc = loader_init(&ld, &ds, 0, 502, 2, 8, 0, 1, 0, 0, err, sizeof err);
    CHECK(rc == 0 && ld.num_windows == 62, "range clipping the short shard: %zu windows: %s",
          ld.num_windows, err);
    if (rc == 0) loader_free(&ld);
    /* too few windows in all: the message says they must fit inside one file */
    err[0] = '\0';
    rc = loader_init(&ld, &ds, 495, 504, 1, 8, 0, 1, 0, 0, err, sizeof err);
    CHECK(rc == -1 && !strchr(err, '\n') && strstr(err, "inside one file"),
          "9 tokens over two files: '%s'", err);
    dataset_close(&ds);
    for (int i = 0; i < 3; i++) unlink(paths[i]);
}

/* ---- data changing under a live run ------------------------------------------------------- */

/* Runs fn in a child with stderr captured; returns the wait status, the text in out. */
static int run_child(void (*fn)(const char *), const char *arg, char *out, size_t outlen) {
    int fds[2];
    if (pipe(fds) != 0) { perror("pipe"); exit(2); }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        alarm(20); /* a hang is a failure, not a stuck test */
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < outlen && (r = read(fds[0], out + n, outlen - 1 - n)) > 0) n += (size_t)r;
    out[n] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

#define SHRINK_BYTES 200000

/* Opens the file, truncates it to 100 bytes, then reads a window far past the new end. */
static void child_truncate(const char *path) {
    Dataset ds;
    char err[512];
    if (dataset_open_spec(&ds, path, err, sizeof err)) { fprintf(stderr, "%s\n", err); _exit(3); }
    DataLoader ld;
    if (loader_init(&ld, &ds, 0, ds.num_tokens, 1, 64, 0, 1, 0, 0, err, sizeof err)) _exit(4);
    if (truncate(ds.num_files > 1 ? ds.files[1].path : path, 100) != 0) _exit(5);
    int in[64], tg[64];
    loader_seek(&ld, 0, ld.steps_per_epoch - 1); /* the last window: past the new end */
    loader_next(&ld, in, tg);
    _exit(6); /* read stale data: the test fails below */
}

static void child_raise(const char *path) {
    Dataset ds;
    char err[512];
    if (dataset_open(&ds, path, err, sizeof err)) _exit(3);
    raise(SIGBUS); /* not a data fault: must die of SIGBUS as before */
    _exit(7);
}

static void test_truncated_while_training(void) {
    uint8_t *data = malloc(SHRINK_BYTES);
    random_bytes(data, SHRINK_BYTES);
    data[0] = 'x';
    const char *path = tmp_path("shrinks.bin");
    char out[1024];
    char want[128];
    snprintf(want, sizeof want, "shrank while training (was %d bytes", SHRINK_BYTES);

    write_file(path, data, SHRINK_BYTES);
    int st = run_child(child_truncate, path, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "truncated file: child %s %d (want exit 2)",
          WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    CHECK(strstr(out, "error: training data ") && strstr(out, path) && strstr(out, want) &&
              strchr(out, '\n') == out + strlen(out) - 1, "truncated file: message '%s'", out);

    /* the same through a pattern of two files, the second truncated */
    char p2[2][256], spec[300];
    for (int i = 0; i < 2; i++) {
        snprintf(p2[i], 256, "%s/shrink2_%d.bin", tmpdir, i);
        write_file(p2[i], data, SHRINK_BYTES);
    }
    snprintf(spec, sizeof spec, "%s/shrink2_*.bin", tmpdir);
    st = run_child(child_truncate, spec, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2 && strstr(out, p2[1]) && strstr(out, want),
          "truncated shard: status %d message '%s'", st, out);
    unlink(p2[0]);
    unlink(p2[1]);

    /* a SIGBUS that is no data fault still kills by the signal */
    write_file(path, data, SHRINK_BYTES);
    st = run_child(child_raise, path, out, sizeof out);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS, "raise(SIGBUS) after open: status %d", st);
    unlink(path);
    free(data);
}

/* Opens a token file (largest id 99), writes id 60000 into it in place, then reads it. */
static void child_rewrite(const char *path) {
    Dataset ds;
    char err[512];
    if (dataset_open(&ds, path, err, sizeof err)) _exit(3);
    DataLoader ld;
    if (loader_init(&ld, &ds, 0, ds.num_tokens, 2, 16, 0, 1, 0, 0, err, sizeof err)) _exit(4);
    int fd = open(path, O_WRONLY);
    uint16_t big = 60000;
    if (fd < 0 || pwrite(fd, &big, 2, 1024 + 2 * 20) != 2) _exit(5); /* token 20: window 1 */
    close(fd);
    int in[32], tg[32];
    loader_next(&ld, in, tg);
    _exit(in[20] == 60000 || tg[19] == 60000 ? 6 : 8);
}

/* The same for a byte file whose bytes are all below 'q': a 0xff written in place. */
static void child_rewrite_bytes(const char *path) {
    Dataset ds;
    char err[512];
    if (dataset_open(&ds, path, err, sizeof err)) _exit(3);
    DataLoader ld;
    if (loader_init(&ld, &ds, 0, ds.num_tokens, 1, 16, 0, 1, 0, 0, err, sizeof err)) _exit(4);
    int fd = open(path, O_WRONLY);
    uint8_t big = 0xff;
    if (fd < 0 || pwrite(fd, &big, 1, 5) != 1) _exit(5);
    close(fd);
    int in[16], tg[16];
    loader_next(&ld, in, tg);
    _exit(in[5] == 0xff ? 6 : 8);
}

static void test_rewritten_while_training(void) {
    uint16_t tok[500];
    random_tokens(tok, 500, 100);
    const char *path = tmp_path("rewritten.bin");
    char err[256], out[1024];
    if (token_file_write(path, tok, 500, err, sizeof err)) { CHECK(0, "%s", err); return; }
    int st = run_child(child_rewrite, path, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "token rewritten in place: child %s %d (want "
          "exit 2)", WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    CHECK(strstr(out, path) && strstr(out, "changed while training") && strstr(out, "60000"),
          "token rewritten in place: message '%s'", out);
    unlink(path);

    uint8_t bytes[300];
    for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)('a' + i % 16);
    write_file(path, bytes, sizeof bytes);
    st = run_child(child_rewrite_bytes, path, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2 && strstr(out, "changed while training") &&
              strstr(out, "255"), "byte rewritten in place: status %d message '%s'", st, out);
    unlink(path);
}

/* ---- loader ------------------------------------------------------------------------------- */

static void test_loader_exact_windows(const Dataset *ds) {
    size_t begin = 13, end = 990;
    int B = 3, T = 7;
    DataLoader ld;
    char err[512] = "";
    int rc = loader_init(&ld, ds, begin, end, B, T, 0, 1, 0, 1, err, sizeof err);
    CHECK(rc == 0, "loader_init: %s", err);
    if (rc) return;
    size_t nwin = (end - begin - 1) / T;
    CHECK(ld.num_windows == nwin && ld.steps_per_epoch == nwin / B, "nwin %zu spe %zu",
          ld.num_windows, ld.steps_per_epoch);
    CHECK(ld.perm == NULL, "sequential loader has no permutation");
    int in[21], tg[21];
    int bad = 0;
    for (size_t s = 0; s < ld.steps_per_epoch; s++) {
        for (int i = 0; i < B * T; i++) in[i] = tg[i] = -7;
        loader_next(&ld, in, tg);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                size_t pos = begin + (s * B + b) * T + t; /* window at a multiple of T */
                if (in[b * T + t] != dataset_token(ds, pos) ||
                    tg[b * T + t] != dataset_token(ds, pos + 1))
                    bad++;
            }
    }
    CHECK(bad == 0, "sequential epoch: %d tokens differ from the expected windows", bad);
    CHECK(ld.epoch == 1 && ld.step_in_epoch == 0, "after one epoch: epoch %llu step %zu",
          (unsigned long long)ld.epoch, ld.step_in_epoch);
    /* wraps to the first batch */
    loader_next(&ld, in, tg);
    int first_ok = 1;
    for (int i = 0; i < B * T; i++)
        first_ok &= in[i] == dataset_token(ds, begin + i) && tg[i] == dataset_token(ds, begin + i + 1);
    CHECK(first_ok, "epoch 1 starts again at the first window");
    /* targets are inputs shifted by one inside each row */
    int shift_ok = 1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t + 1 < T; t++) shift_ok &= tg[b * T + t] == in[b * T + t + 1];
    CHECK(shift_ok, "targets[t] == inputs[t+1]");
    loader_free(&ld);
    CHECK(ld.perm == NULL && ld.ds == NULL, "loader_free clears");
}

/* Runs one epoch and counts how often each window is served; returns the order in order[]. */
static void epoch_windows(DataLoader *ld, long *order, int *count) {
    size_t per_step = (size_t)ld->B;
    memset(count, 0, ld->num_windows * sizeof *count);
    for (size_t s = 0; s < ld->steps_per_epoch; s++) {
        next_windows(ld, order + s * per_step);
        for (size_t b = 0; b < per_step; b++) {
            long w = order[s * per_step + b];
            if (w >= 0) count[w]++;
        }
    }
}

static void test_loader_sequential_coverage(const Dataset *ds) {
    DataLoader ld;
    char err[512];
    /* 121 tokens, T=5: 24 windows, B=4: 6 steps, covering every window */
    if (loader_init(&ld, ds, 200, 321, 4, 5, 0, 1, 0, 0, err, sizeof err)) {
        CHECK(0, "init: %s", err);
        return;
    }
    long order[24];
    int count[24];
    epoch_windows(&ld, order, count);
    int in_order = 1, once = 1;
    for (int i = 0; i < 24; i++) in_order &= order[i] == i;
    for (int i = 0; i < 24; i++) once &= count[i] == 1;
    CHECK(in_order && once, "sequential epoch serves windows 0..23 in order, once each");
    loader_free(&ld);
}

static void test_loader_shuffled(const Dataset *ds) {
    DataLoader a, b, c, seq;
    char err[512];
    size_t begin = 7, end = 7 + 601; /* T=5: 120 windows; B=4: 30 steps */
    int ok = !loader_init(&a, ds, begin, end, 4, 5, 0, 1, 1, 42, err, sizeof err) &&
             !loader_init(&b, ds, begin, end, 4, 5, 0, 1, 1, 42, err, sizeof err) &&
             !loader_init(&c, ds, begin, end, 4, 5, 0, 1, 1, 43, err, sizeof err) &&
             !loader_init(&seq, ds, begin, end, 4, 5, 0, 1, 0, 42, err, sizeof err);
    CHECK(ok, "init shuffled loaders: %s", err);
    if (!ok) return;
    CHECK(a.num_windows == 120 && a.steps_per_epoch == 30, "shuffled nwin %zu", a.num_windows);
    long oa[2][120], ob[120], oc[120], os[120];
    int count[120];
    for (int e = 0; e < 2; e++) {
        epoch_windows(&a, oa[e], count);
        int once = 1;
        for (int i = 0; i < 120; i++) once &= count[i] == 1;
        CHECK(once, "shuffled epoch %d serves every window exactly once", e);
    }
    epoch_windows(&b, ob, count);
    epoch_windows(&c, oc, count);
    epoch_windows(&seq, os, count);
    CHECK(memcmp(oa[0], ob, sizeof ob) == 0, "same seed gives the same order");
    CHECK(memcmp(oa[0], oc, sizeof oc) != 0, "another seed gives another order");
    CHECK(memcmp(oa[0], os, sizeof os) != 0, "shuffled differs from sequential");
    CHECK(memcmp(oa[0], oa[1], sizeof ob) != 0, "the permutation is redrawn each epoch");
    loader_free(&a);
    loader_free(&b);
    loader_free(&c);
    loader_free(&seq);

    /* windows not a multiple of B: each window at most once, spe*B of them */
    DataLoader d;
    if (loader_init(&d, ds, 0, 500, 3, 6, 0, 1, 1, 9, err, sizeof err)) {
        CHECK(0, "init: %s", err);
        return;
    }
    size_t nwin = d.num_windows; /* 83 windows, 27 steps, 2 left over */
    long *od = malloc(d.steps_per_epoch * 3 * sizeof *od);
    int *cd = malloc(nwin * sizeof *cd);
    for (int e = 0; e < 3; e++) {
        epoch_windows(&d, od, cd);
        int at_most_once = 1, served = 0, unknown = 0;
        for (size_t i = 0; i < nwin; i++) { at_most_once &= cd[i] <= 1; served += cd[i]; }
        for (size_t i = 0; i < d.steps_per_epoch * 3; i++) unknown += od[i] < 0;
        CHECK(at_most_once && unknown == 0 && (size_t)served == d.steps_per_epoch * 3,
              "ragged epoch %d: served %d of %zu windows", e, served, nwin);
    }
    free(od);
    free(cd);
    loader_free(&d);
}

static void test_loader_ranks(const Dataset *ds, int shuffle) {
    int B = 2, T = 6, W = 3;
    size_t begin = 31, end = 1500;
    DataLoader one, r[3];
    char err[512];
    int ok = !loader_init(&one, ds, begin, end, B * W, T, 0, 1, shuffle, 5, err, sizeof err);
    for (int k = 0; k < W; k++)
        ok = ok && !loader_init(&r[k], ds, begin, end, B, T, k, W, shuffle, 5, err, sizeof err);
    CHECK(ok, "init rank loaders: %s", err);
    if (!ok) return;
    CHECK(r[0].steps_per_epoch == one.steps_per_epoch, "ranks and world=1 agree on steps");
    size_t steps = one.steps_per_epoch * 2 + 3; /* past two epoch boundaries */
    int *in1 = malloc(B * W * T * sizeof(int)), *tg1 = malloc(B * W * T * sizeof(int));
    int *in = malloc(B * T * sizeof(int)), *tg = malloc(B * T * sizeof(int));
    int *seen = calloc(one.num_windows, sizeof(int));
    int mismatch = 0, overlap = 0;
    for (size_t s = 0; s < steps; s++) {
        if (s % one.steps_per_epoch == 0) memset(seen, 0, one.num_windows * sizeof(int));
        loader_next(&one, in1, tg1);
        for (int k = 0; k < W; k++) {
            loader_next(&r[k], in, tg);
            /* rank k's batch is rows k*B .. k*B+B-1 of the world=1 batch */
            if (memcmp(in, in1 + k * B * T, B * T * sizeof(int)) ||
                memcmp(tg, tg1 + k * B * T, B * T * sizeof(int)))
                mismatch++;
            for (int b = 0; b < B; b++) {
                long w = find_window(&r[k], in + b * T, tg + b * T);
                if (w < 0 || seen[w]++) overlap++;
            }
        }
    }
    CHECK(mismatch == 0, "%s: %d rank batches differ from the world=1 batch",
          shuffle ? "shuffled" : "sequential", mismatch);
    CHECK(overlap == 0, "%s: %d windows served twice in an epoch across ranks",
          shuffle ? "shuffled" : "sequential", overlap);
    free(in1); free(tg1); free(in); free(tg); free(seen);
    loader_free(&one);
    for (int k = 0; k < W; k++) loader_free(&r[k]);
}

static void test_loader_seek(const Dataset *ds) {
    int B = 2, T = 9, rank = 1, world = 2;
    size_t begin = 3, end = 700;
    DataLoader ld;
    char err[512];
    if (loader_init(&ld, ds, begin, end, B, T, rank, world, 1, 77, err, sizeof err)) {
        CHECK(0, "init: %s", err);
        return;
    }
    size_t spe = ld.steps_per_epoch, steps = 3 * spe + 2, n = (size_t)B * T;
    int *in = malloc(steps * n * sizeof(int)), *tg = malloc(steps * n * sizeof(int));
    uint64_t *ep = malloc(steps * sizeof *ep);
    size_t *st = malloc(steps * sizeof *st);
    for (size_t s = 0; s < steps; s++) {
        ep[s] = ld.epoch;
        st[s] = ld.step_in_epoch;
        loader_next(&ld, in + s * n, tg + s * n);
    }
    CHECK(ep[spe] == 1 && st[spe] == 0 && ep[2 * spe + 1] == 2 && st[2 * spe + 1] == 1,
          "epoch/step counters: %llu/%zu", (unsigned long long)ep[spe], st[spe]);
    size_t resume[] = {0, 1, spe - 1, spe, spe + 3, 2 * spe, 2 * spe + 1, 3 * spe - 1};
    int x[B * T], y[B * T];
    for (size_t r = 0; r < sizeof resume / sizeof resume[0]; r++) {
        DataLoader fresh;
        loader_init(&fresh, ds, begin, end, B, T, rank, world, 1, 77, err, sizeof err);
        loader_seek(&fresh, ep[resume[r]], st[resume[r]]);
        int same = 1;
        for (size_t s = resume[r]; s < steps; s++) {
            loader_next(&fresh, x, y);
            same &= !memcmp(x, in + s * n, sizeof x) && !memcmp(y, tg + s * n, sizeof y);
        }
        CHECK(same, "resume at step %zu (epoch %llu, step %zu) reproduces the batches", resume[r],
              (unsigned long long)ep[resume[r]], st[resume[r]]);
        loader_free(&fresh);
    }
    /* a step count past the epoch's end carries into the next epoch */
    loader_seek(&ld, 0, spe + 3);
    CHECK(ld.epoch == 1 && ld.step_in_epoch == 3, "seek(0, spe+3) -> %llu/%zu",
          (unsigned long long)ld.epoch, ld.step_in_epoch);
    loader_next(&ld, x, y);
    CHECK(!memcmp(x, in + (spe + 3) * n, sizeof x), "seek(0, spe+3) serves step spe+3");
    loader_reset(&ld);
    loader_next(&ld, x, y);
    CHECK(ld.epoch == 0 && ld.step_in_epoch == 1 && !memcmp(x, in, sizeof x),
          "loader_reset goes back to the first batch");
    free(in); free(tg); free(ep); free(st);
    loader_free(&ld);
}

static void test_loader_init_errors(const Dataset *ds) {
    DataLoader ld;
    char err[512] = "";
    /* B*world*T + 1 tokens is exactly enough, one fewer is not */
    int B = 3, T = 10, W = 2;
    size_t need = (size_t)B * W * T + 1;
    CHECK(loader_init(&ld, ds, 100, 100 + need, B, T, 1, W, 1, 3, err, sizeof err) == 0 &&
              ld.steps_per_epoch == 1, "exactly enough tokens: %s", err);
    loader_free(&ld);
    err[0] = '\0';
    int rc = loader_init(&ld, ds, 100, 100 + need - 1, B, T, 1, W, 1, 3, err, sizeof err);
    char needs[64];
    snprintf(needs, sizeof needs, "at least %zu", need);
    CHECK(rc == -1 && one_line_naming(err, ds->name) && strstr(err, needs),
          "one token short: '%s'", err);
    CHECK(ld.perm == NULL, "failed init allocates nothing");
    struct { size_t begin, end; int B, T, rank, world; const char *what; } bad[] = {
        {0, 500, 0, 8, 0, 1, "B=0"},          {0, 500, 2, 0, 0, 1, "T=0"},
        {0, 500, 2, 8, 2, 2, "rank=world"},   {0, 500, 2, 8, -1, 2, "rank<0"},
        {0, 500, 2, 8, 0, 0, "world=0"},      {300, 200, 2, 8, 0, 1, "begin>end"},
        {0, ds->num_tokens + 1, 1, 4, 0, 1, "end past the data"},
        {50, 50, 1, 1, 0, 1, "empty range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        rc = loader_init(&ld, ds, bad[i].begin, bad[i].end, bad[i].B, bad[i].T, bad[i].rank,
                         bad[i].world, 0, 0, err, sizeof err);
        CHECK(rc == -1 && err[0] && !strchr(err, '\n'), "%s: rc %d '%s'", bad[i].what, rc, err);
    }
    /* T=1: every token but the last starts a window */
    CHECK(loader_init(&ld, ds, 0, 10, 9, 1, 0, 1, 0, 0, err, sizeof err) == 0 &&
              ld.num_windows == 9, "T=1 windows %zu", ld.num_windows);
    loader_free(&ld);
}

/* ---- split -------------------------------------------------------------------------------- */

static void test_split(void) {
    size_t sizes[] = {100, 1, 19, 20, 1000003, 4154517, 100000000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        Dataset ds;
        memset(&ds, 0, sizeof ds);
        ds.num_tokens = sizes[i];
        size_t n = sizes[i], tb, te, vb, ve, sb, se;
        dataset_split(&ds, "train", &tb, &te);
        dataset_split(&ds, "val", &vb, &ve);
        dataset_split(&ds, "test", &sb, &se);
        CHECK(tb == 0 && te == vb && ve == sb && se == n, "n=%zu: parts not contiguous", n);
        CHECK(te == n * 9 / 10 && ve == n * 95 / 100, "n=%zu: split at %zu, %zu", n, te, ve);
    }
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.num_tokens = 100000000;
    size_t b, e;
    dataset_split(&ds, "train", &b, &e);
    CHECK(e - b == 90000000, "enwik8 train %zu", e - b);
    dataset_split(&ds, "val", &b, &e);
    CHECK(b == 90000000 && e - b == 5000000, "enwik8 val [%zu, %zu)", b, e);
    dataset_split(&ds, "test", &b, &e);
    CHECK(b == 95000000 && e == 100000000, "enwik8 test [%zu, %zu)", b, e);
    b = e = 99;
    dataset_split(&ds, "validation?", &b, &e);
    CHECK(b == 0 && e == 0, "unknown part gives an empty range");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }

    test_byte_file_round_trip();
    test_token_file_round_trip();
    test_bad_files();
    test_memory_and_embedded();
    test_spec_concatenation(0);
    test_spec_concatenation(1);
    test_spec_glob_order();
    test_spec_errors();
    test_spec_short_shard();
    test_truncated_while_training();
    test_rewritten_while_training();

    /* loader tests run over a random token file and a random byte file */
    size_t n = 3001;
    uint16_t *tok = malloc(n * sizeof *tok);
    random_tokens(tok, n, 50257);
    const char *tpath = tmp_path("loader_tokens.bin");
    char err[512];
    Dataset dt, db;
    if (token_file_write(tpath, tok, n, err, sizeof err) || dataset_open(&dt, tpath, err, sizeof err)) {
        CHECK(0, "loader dataset: %s", err);
    } else {
        test_loader_exact_windows(&dt);
        test_loader_sequential_coverage(&dt);
        test_loader_shuffled(&dt);
        test_loader_ranks(&dt, 0);
        test_loader_ranks(&dt, 1);
        test_loader_seek(&dt);
        test_loader_init_errors(&dt);
        dataset_close(&dt);
    }
    uint8_t *bytes = malloc(n);
    random_bytes(bytes, n);
    dataset_from_bytes(&db, bytes, n, "random bytes");
    test_loader_exact_windows(&db);
    test_loader_ranks(&db, 1);
    test_loader_seek(&db);
    test_split();

    unlink(tpath);
    free(tok);
    free(bytes);
    if (rmdir(tmpdir) != 0) CHECK(0, "temporary dir %s not empty at the end", tmpdir);
    return test_summary("test_data");
}
