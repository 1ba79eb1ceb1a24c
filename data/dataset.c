/* data/dataset.c: opening token streams (raw byte files, llm.c token files, the embedded
 * corpus), writing llm.c token files, and the 90/5/5 split. See data/dataset.h.
 *
 * An llm.c token file is a 1024-byte header of 256 little-endian int32
 *   header[0] = 20240520 (magic), header[1] = 1 (version), header[2] = N (token count)
 * followed by exactly N uint16 tokens. Any file that does not start with the magic is raw bytes.
 */
#include "data/dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/error_text.h"

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

int dataset_open(Dataset *ds, const char *path, char *err, size_t errlen) {
    memset(ds, 0, sizeof *ds);
    if (!path || !*path) {
        set_err(err, errlen, "dataset: no file name given");
        return -1;
    }
    /* O_NONBLOCK so that a FIFO does not hang the open; it is rejected below. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "%s: is a directory, not a data file", path);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        set_err(err, errlen, "%s: file is empty", path);
        close(fd);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        set_err(err, errlen, "%s: cannot read (mmap): %s", path, strerror(map_errno));
        return -1;
    }
    const uint8_t *bytes = (const uint8_t *)map;
    if (starts_with_token_magic(bytes, len)) {
        if (parse_token_file(ds, bytes, len, path, err, errlen) != 0) {
            munmap(map, len);
            memset(ds, 0, sizeof *ds);
            return -1;
        }
    } else {
        ds->kind = DATASET_BYTES;
        ds->bytes = bytes;
        ds->num_tokens = len;
        ds->max_token = max_byte(bytes, len);
    }
    ds->map = map;
    ds->map_len = len;
    set_name(ds, path);
    return 0;
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
    if (ds->map) munmap(ds->map, ds->map_len);
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
