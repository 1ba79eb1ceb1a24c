/* data/dataset.c: opening token streams (raw byte files, llm.c token files, the embedded
 * corpus), writing llm.c token files, and the 90/5/5 split. See data/dataset.h.
 *
 * An llm.c token file is a 1024-byte header of 256 little-endian int32
 *   header[0] = 20240520 (magic), header[1] = 1 (version), header[2] = N (token count)
 * followed by exactly N uint16 tokens. Any file that does not start with the magic is raw bytes.
 *
 * Every mapping is registered with the SIGBUS guard below while it lives: a file truncated under
 * a live mapping raises SIGBUS on the first touch of a page past its new end, which the guard
 * reports in one line (exit 2) instead of dying with status 135.
 */
#include "data/dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/error_text.h"
#include "common/regular_file.h"

#define TOKEN_HEADER_INTS 256
#define TOKEN_HEADER_BYTES (TOKEN_HEADER_INTS * sizeof(int32_t))

/* The project's own text, assembled into the binary by data/embedded_corpus.S. */
extern const uint8_t embedded_corpus_start[];
extern const uint8_t embedded_corpus_end[];

static void set_name(Dataset *ds, const char *name) {
    snprintf(ds->name, sizeof ds->name, "%s", name ? name : "");
}

static int max_byte(const uint8_t *p, size_t n) {
    int m = -1;
    for (size_t i = 0; i < n && m < 255; i++)
        if (p[i] > m) m = p[i];
    return m;
}

static int max_token16(const uint16_t *p, size_t n) {
    int m = -1;
    for (size_t i = 0; i < n && m < 65535; i++)
        if (p[i] > m) m = p[i];
    return m;
}

static int starts_with_token_magic(const uint8_t *map, size_t len) {
    int32_t magic;
    if (len < sizeof magic) return 0;
    memcpy(&magic, map, sizeof magic);
    return magic == TOKEN_FILE_MAGIC;
}

/* Checks the header of a mapped token file against its length and fills ds. */
static int parse_token_file(Dataset *ds, const uint8_t *map, size_t len, const char *path,
                            char *err, size_t errlen) {
    if (len < TOKEN_HEADER_BYTES) {
        set_err(err, errlen, "%s: token file truncated: %zu bytes, the header alone needs %zu",
                path, len, (size_t)TOKEN_HEADER_BYTES);
        return -1;
    }
    int32_t header[3];
    memcpy(header, map, sizeof header);
    if (header[1] != TOKEN_FILE_VERSION) {
        set_err(err, errlen, "%s: token file version %d, expected %d", path, (int)header[1],
                TOKEN_FILE_VERSION);
        return -1;
    }
    if (header[2] <= 0) {
        set_err(err, errlen, "%s: token file header gives %d tokens; it must hold at least one",
                path, (int)header[2]);
        return -1;
    }
    size_t count = (size_t)header[2];
    size_t have = (len - TOKEN_HEADER_BYTES) / sizeof(uint16_t);
    if (have < count) {
        set_err(err, errlen, "%s: token file truncated: header says %zu tokens, file holds %zu",
                path, count, have);
        return -1;
    }
    size_t extra = len - TOKEN_HEADER_BYTES - count * sizeof(uint16_t);
    if (extra != 0) {
        set_err(err, errlen, "%s: token file has %zu stray bytes after its %zu tokens", path,
                extra, count);
        return -1;
    }
    ds->kind = DATASET_TOKENS16;
    ds->tokens = (const uint16_t *)(map + TOKEN_HEADER_BYTES);
    ds->num_tokens = count;
    ds->max_token = max_token16(ds->tokens, count);
    return 0;
}

/* ---- the SIGBUS guard ------------------------------------------------------------------- */

/* Live mappings, read by the handler. A slot is filled, then marked used; cleared before the
 * munmap. More mappings than slots are left unguarded (they fault as before). */
typedef struct {
    volatile sig_atomic_t used;
    uintptr_t lo, hi;
    const char *path;
    size_t size;
} GuardSlot;
static GuardSlot guard_slots[DATASET_MAX_FILES * 2];
static struct sigaction guard_previous;
static volatile sig_atomic_t guard_installed;

/* Async-signal-safe output: write(2) and hand-made decimals only. */
static void guard_puts(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void guard_putu(unsigned long long v) {
    char buf[24];
    int i = sizeof buf;
    buf[--i] = '\0';
    do buf[--i] = (char)('0' + v % 10); while ((v /= 10) && i > 0);
    guard_puts(buf + i);
}

static void guard_handler(int sig, siginfo_t *si, void *ctx) {
    uintptr_t a = (uintptr_t)si->si_addr;
    /* si_code <= 0: sent by kill/raise, not a fault; si_addr means nothing then. */
    for (size_t i = 0; si->si_code > 0 && i < sizeof guard_slots / sizeof guard_slots[0];
         i++) {
        const GuardSlot *g = &guard_slots[i];
        if (!g->used || a < g->lo || a >= g->hi) continue;
        struct stat st;
        int have_now = stat(g->path, &st) == 0;
        guard_puts("error: training data ");
        guard_puts(g->path);
        if (!have_now || (size_t)st.st_size < g->size) {
            guard_puts(" shrank while training (was ");
            guard_putu(g->size);
            guard_puts(" bytes");
            if (have_now) {
                guard_puts(", now ");
                guard_putu((unsigned long long)st.st_size);
            }
            guard_puts(")\n");
        } else {
            guard_puts(" could not be read while training (bus error at byte ");
            guard_putu(a - g->lo);
            guard_puts(" of ");
            guard_putu(g->size);
            guard_puts(")\n");
        }
        _exit(2);
    }
    /* Not a data file: whoever handled SIGBUS before, or the default action on return. */
    if ((guard_previous.sa_flags & SA_SIGINFO) && guard_previous.sa_sigaction) {
        guard_previous.sa_sigaction(sig, si, ctx);
    } else if (!(guard_previous.sa_flags & SA_SIGINFO) && guard_previous.sa_handler != SIG_DFL &&
               guard_previous.sa_handler != SIG_IGN) {
        guard_previous.sa_handler(sig);
    } else {
        /* The default action, as if no handler had been there: pending on return. */
        signal(SIGBUS, SIG_DFL);
        raise(sig);
    }
}

void dataset_guard_install(void) {
    if (guard_installed) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &guard_previous) == 0) guard_installed = 1;
}

static void guard_add(const void *map, size_t len, const char *path) {
    for (size_t i = 0; i < sizeof guard_slots / sizeof guard_slots[0]; i++) {
        GuardSlot *g = &guard_slots[i];
        if (g->used) continue;
        g->lo = (uintptr_t)map;
        g->hi = (uintptr_t)map + len;
        g->path = path;
        g->size = len;
        __atomic_store_n(&g->used, 1, __ATOMIC_RELEASE);
        return;
    }
}

static void guard_remove(const void *map) {
    for (size_t i = 0; i < sizeof guard_slots / sizeof guard_slots[0]; i++)
        if (guard_slots[i].used && guard_slots[i].lo == (uintptr_t)map)
            __atomic_store_n(&guard_slots[i].used, 0, __ATOMIC_RELEASE);
}

/* ---- one file ---------------------------------------------------------------------------- */

static void file_close(DatasetFile *f) {
    if (f->map) {
        guard_remove(f->map);
        munmap(f->map, f->map_len);
    }
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* Maps path into f (first = 0) and reports its kind and largest token. */
static int file_open(DatasetFile *f, const char *path, DatasetKind *kind, int *max_token,
                     char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    if (!path || !*path) {
        set_err(err, errlen, "dataset: no file name given");
        return -1;
    }
    /* Never blocks: a FIFO, device or directory is refused before any read. */
    int fd = open_regular_fd(path, "data file", err, errlen);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        set_err(err, errlen, "%s: file is empty", path);
        close(fd);
        return -1;
    }
    if ((unsigned long long)st.st_size > SIZE_MAX) {
        set_err(err, errlen, "%s: %lld bytes are too many to map", path, (long long)st.st_size);
        close(fd);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    f->path = strdup(path);
    if (!f->path) {
        set_err(err, errlen, "%s: out of memory", path);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        set_err(err, errlen, "%s: cannot read (mmap): %s", path, strerror(map_errno));
        file_close(f);
        return -1;
    }
    f->map = map;
    f->map_len = len;
    /* Guarded from the first read on: the file may shrink while its header is checked or its
     * tokens scanned. */
    dataset_guard_install();
    guard_add(map, len, f->path);
    const uint8_t *bytes = (const uint8_t *)map;
    Dataset one;
    memset(&one, 0, sizeof one);
    if (starts_with_token_magic(bytes, len)) {
        if (parse_token_file(&one, bytes, len, path, err, errlen) != 0) {
            file_close(f);
            return -1;
        }
        f->tokens = one.tokens;
    } else {
        one.kind = DATASET_BYTES;
        one.num_tokens = len;
        one.max_token = max_byte(bytes, len);
        f->bytes = bytes;
    }
    f->num_tokens = one.num_tokens;
    *kind = one.kind;
    *max_token = one.max_token;
    return 0;
}

int dataset_open(Dataset *ds, const char *path, char *err, size_t errlen) {
    memset(ds, 0, sizeof *ds);
    DatasetFile *f = calloc(1, sizeof *f);
    if (!f) {
        set_err(err, errlen, "%s: out of memory", path ? path : "dataset");
        return -1;
    }
    DatasetKind kind;
    int max_token;
    if (file_open(f, path, &kind, &max_token, err, errlen) != 0) {
        free(f);
        return -1;
    }
    ds->kind = kind;
    ds->bytes = f->bytes;
    ds->tokens = f->tokens;
    ds->num_tokens = f->num_tokens;
    ds->max_token = max_token;
    ds->map = f->map;
    ds->map_len = f->map_len;
    ds->num_files = 1;
    ds->files = f;
    set_name(ds, path);
    return 0;
}

/* ---- several files ----------------------------------------------------------------------- */

typedef struct {
    char **v;
    size_t n, cap;
} PathList;

static int paths_push(PathList *l, const char *p) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(p))) return -1;
    l->n++;
    return 0;
}

static void paths_free(PathList *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_paths(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Adds one list item: an existing path as is, a pattern's matches sorted, else the path (whose
 * open then says what is wrong with it). */
static int add_item(PathList *l, const char *item, const char *spec, char *err, size_t errlen) {
    if (!*item) {
        set_err(err, errlen, "data '%s': empty file name in the list", spec);
        return -1;
    }
    if (path_exists(item) || !strpbrk(item, "*?[")) {
        if (paths_push(l, item) == 0) return 0;
        set_err(err, errlen, "data '%s': out of memory", spec);
        return -1;
    }
    glob_t g;
    memset(&g, 0, sizeof g);
    int rc = glob(item, GLOB_NOSORT, NULL, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        set_err(err, errlen, "data pattern '%s' matches no file", item);
        globfree(&g);
        return -1;
    }
    if (rc != 0) {
        set_err(err, errlen, "data pattern '%s': %s", item,
                rc == GLOB_NOSPACE ? "out of memory" : "a directory could not be read");
        globfree(&g);
        return -1;
    }
    qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, cmp_paths);
    for (size_t i = 0; i < g.gl_pathc; i++)
        if (paths_push(l, g.gl_pathv[i]) != 0) {
            set_err(err, errlen, "data '%s': out of memory", spec);
            globfree(&g);
            return -1;
        }
    globfree(&g);
    return 0;
}

static int expand_spec(PathList *l, const char *spec, char *err, size_t errlen) {
    size_t len = strlen(spec);
    char *copy = malloc(len + 1);
    if (!copy) {
        set_err(err, errlen, "data '%s': out of memory", spec);
        return -1;
    }
    memcpy(copy, spec, len + 1);
    int rc = 0;
    char *item = copy;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma) *comma = '\0';
        if ((rc = add_item(l, item, spec, err, errlen)) != 0) break;
        if (!comma) break;
        item = comma + 1;
    }
    free(copy);
    return rc;
}

static const char *kind_words(DatasetKind k) {
    return k == DATASET_BYTES ? "raw bytes" : "an llm.c token file";
}

int dataset_open_spec(Dataset *ds, const char *spec, char *err, size_t errlen) {
    memset(ds, 0, sizeof *ds);
    if (!spec || !*spec) {
        set_err(err, errlen, "dataset: no file name given");
        return -1;
    }
    if (path_exists(spec)) return dataset_open(ds, spec, err, errlen);
    PathList paths = {0};
    if (expand_spec(&paths, spec, err, errlen) != 0) {
        paths_free(&paths);
        return -1;
    }
    if (paths.n > DATASET_MAX_FILES) {
        set_err(err, errlen, "data '%s' names %zu files; at most %d are supported", spec, paths.n,
                DATASET_MAX_FILES);
        paths_free(&paths);
        return -1;
    }
    DatasetFile *files = calloc(paths.n, sizeof *files);
    if (!files) {
        set_err(err, errlen, "data '%s': out of memory", spec);
        paths_free(&paths);
        return -1;
    }
    ds->files = files;
    DatasetKind first_kind = DATASET_BYTES;
    int max_token = -1;
    size_t total = 0;
    for (size_t i = 0; i < paths.n; i++) {
        DatasetKind kind;
        int m;
        if (file_open(&files[i], paths.v[i], &kind, &m, err, errlen) != 0) goto fail;
        ds->num_files = i + 1;
        if (i == 0) first_kind = kind;
        if (kind != first_kind) {
            set_err(err, errlen, "data '%s' mixes kinds: %s is %s, %s is %s; use one kind", spec,
                    paths.v[0], kind_words(first_kind), paths.v[i], kind_words(kind));
            goto fail;
        }
        files[i].first = total;
        total += files[i].num_tokens;
        if (m > max_token) max_token = m;
    }
    ds->kind = first_kind;
    ds->num_tokens = total;
    ds->max_token = max_token;
    if (ds->num_files == 1) { /* one file: the flat view works as for dataset_open */
        ds->bytes = files[0].bytes;
        ds->tokens = files[0].tokens;
        ds->map = files[0].map;
        ds->map_len = files[0].map_len;
    }
    snprintf(ds->name, sizeof ds->name, "%s (%zu file%s)", spec, ds->num_files,
             ds->num_files == 1 ? "" : "s");
    paths_free(&paths);
    return 0;
fail:
    paths_free(&paths);
    dataset_close(ds);
    return -1;
}

size_t dataset_file_of(const Dataset *ds, size_t i) {
    if (ds->num_files <= 1) return 0;
    size_t lo = 0, hi = ds->num_files; /* the last file with first <= i */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (ds->files[mid].first <= i) lo = mid;
        else hi = mid;
    }
    return lo;
}

const void *dataset_run(const Dataset *ds, size_t i, size_t *n) {
    *n = 0;
    if (!ds || i >= ds->num_tokens) return NULL;
    if (ds->num_files <= 1) {
        *n = ds->num_tokens - i;
        return ds->kind == DATASET_BYTES ? (const void *)(ds->bytes + i)
                                         : (const void *)(ds->tokens + i);
    }
    const DatasetFile *f = &ds->files[dataset_file_of(ds, i)];
    *n = f->first + f->num_tokens - i;
    return ds->kind == DATASET_BYTES ? (const void *)(f->bytes + (i - f->first))
                                     : (const void *)(f->tokens + (i - f->first));
}

void dataset_from_bytes(Dataset *ds, const uint8_t *bytes, size_t n, const char *name) {
    memset(ds, 0, sizeof *ds);
    ds->kind = DATASET_BYTES;
    ds->bytes = bytes;
    ds->num_tokens = n;
    ds->max_token = max_byte(bytes, n);
    set_name(ds, name ? name : "memory");
}

void dataset_embedded(Dataset *ds) {
    size_t n = (size_t)(embedded_corpus_end - embedded_corpus_start);
    dataset_from_bytes(ds, embedded_corpus_start, n, "embedded corpus");
}

void dataset_close(Dataset *ds) {
    if (!ds) return;
    for (size_t i = 0; i < ds->num_files; i++) file_close(&ds->files[i]);
    free(ds->files);
    memset(ds, 0, sizeof *ds);
}

/* Writes all of buf or reports why not. */
static int write_all(FILE *f, const void *buf, size_t size, size_t count) {
    return fwrite(buf, size, count, f) == count ? 0 : -1;
}

int token_file_write(const char *path, const uint16_t *tokens, size_t n, char *err,
                     size_t errlen) {
    if (!path || !*path) {
        set_err(err, errlen, "token file: no file name given");
        return -1;
    }
    if (n == 0 || n > (size_t)INT32_MAX || (!tokens && n)) {
        set_err(err, errlen, "%s: cannot write %zu tokens (need 1 .. %d)", path, n, INT32_MAX);
        return -1;
    }
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        set_err(err, errlen, "%s: path too long", path);
        return -1;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        set_err(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    int32_t header[TOKEN_HEADER_INTS] = {0};
    header[0] = TOKEN_FILE_MAGIC;
    header[1] = TOKEN_FILE_VERSION;
    header[2] = (int32_t)n;
    int bad = write_all(f, header, sizeof header[0], TOKEN_HEADER_INTS) ||
              write_all(f, tokens, sizeof tokens[0], n) || fflush(f) != 0 || ferror(f);
    int write_errno = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        write_errno = errno;
    }
    if (bad) {
        set_err(err, errlen, "%s: write failed: %s", tmp, strerror(write_errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Split points at 90% and 95% of n, rounded down; 128-bit so that n * 19 cannot overflow. */
static size_t split_point(size_t n, unsigned twentieths) {
    return (size_t)((unsigned __int128)n * twentieths / 20);
}

void dataset_split(const Dataset *ds, const char *part, size_t *begin, size_t *end) {
    size_t n = ds ? ds->num_tokens : 0;
    size_t a = split_point(n, 18), b = split_point(n, 19);
    if (part && strcmp(part, "train") == 0) {
        *begin = 0; *end = a;
    } else if (part && strcmp(part, "val") == 0) {
        *begin = a; *end = b;
    } else if (part && strcmp(part, "test") == 0) {
        *begin = b; *end = n;
    } else {
        *begin = 0; *end = 0; /* unknown part: an empty range, which loader_init rejects */
    }
}
