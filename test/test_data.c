/* test/test_data.c: datasets (byte files, llm.c token files, bad files, the embedded corpus),
 * the window loader (exact windows, epochs, shuffling, ranks, resume) and the 90/5/5 split.
 * All data is fresh random bytes/tokens written to temporary files under /tmp.
 */
#define _GNU_SOURCE /* memmem */
#include "data/dataset.h"
#include "test/test.h"

#include <fcntl.h>
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
        size_t s = ld->begin + w * (size_t)ld->T;
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
