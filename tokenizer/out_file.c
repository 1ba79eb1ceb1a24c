/* tokenizer/out_file.c: writing outputs without replacing devices, FIFOs or links (out_file.h). */
#include "tokenizer/out_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error_text.h"

#define MAX_LINK_HOPS 40

static int copy_path(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

int out_file_resolve(const char *name, char *target, size_t cap, char *err, size_t errlen) {
    char cur[OUT_FILE_PATH], link[OUT_FILE_PATH];
    if (copy_path(cur, sizeof cur, name)) {
        set_err(err, errlen, "output path too long: %.200s...", name);
        return -1;
    }
    for (int hop = 0;; hop++) {
        struct stat st;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) break; /* missing, or not a link */
        if (hop == MAX_LINK_HOPS) {
            set_err(err, errlen, "cannot write %s: too many levels of symbolic links", name);
            return -1;
        }
        ssize_t len = readlink(cur, link, sizeof link - 1);
        if (len < 0) {
            set_err(err, errlen, "cannot write %s: cannot read link %s: %s", name, cur,
                    strerror(errno));
            return -1;
        }
        link[len] = '\0';
        if (len == 0) {
            set_err(err, errlen, "cannot write %s: link %s is empty", name, cur);
            return -1;
        }
        if (link[0] == '/') {
            memcpy(cur, link, (size_t)len + 1);
        } else { /* relative to the directory holding the link */
            char *slash = strrchr(cur, '/');
            size_t dir = slash ? (size_t)(slash - cur) + 1 : 0;
            if (dir + (size_t)len + 1 > sizeof cur) {
                set_err(err, errlen, "cannot write %s: resolved path too long", name);
                return -1;
            }
            memcpy(cur + dir, link, (size_t)len + 1);
        }
    }
    if (copy_path(target, cap, cur)) {
        set_err(err, errlen, "cannot write %s: resolved path too long", name);
        return -1;
    }
    return 0;
}

/* n when path is /dev/fd/n, /proc/self/fd/n or /proc/<our pid>/fd/n, else -1. */
static int fd_path(const char *path) {
    char self[64];
    snprintf(self, sizeof self, "/proc/%ld/fd/", (long)getpid());
    const char *prefixes[] = {"/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/", self};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
        size_t k = strlen(prefixes[i]);
        if (strncmp(path, prefixes[i], k) != 0 || !path[k]) continue;
        long n = 0;
        for (const char *c = path + k; *c; c++) {
            if (*c < '0' || *c > '9' || n > 1000000) return -1;
            n = n * 10 + (*c - '0');
        }
        return (int)n;
    }
    return -1;
}

/* The descriptor that name stands for when it is, or leads through symbolic links to, one of
 * our own descriptors (/dev/stdout -> /proc/self/fd/1); else -1. Such a name is written through
 * the descriptor itself: renaming onto the file behind it would throw away what the shell
 * opened (`--out /dev/stdout >> log` would replace log), and a pipe's link names no file. */
static int fd_alias(const char *name) {
    char cur[OUT_FILE_PATH], link[OUT_FILE_PATH];
    if (copy_path(cur, sizeof cur, name)) return -1;
    for (int hop = 0; hop <= MAX_LINK_HOPS; hop++) {
        int fd = fd_path(cur);
        if (fd >= 0) return fd;
        struct stat st;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) return -1;
        ssize_t len = readlink(cur, link, sizeof link - 1);
        if (len <= 0) return -1;
        link[len] = '\0';
        if (link[0] == '/') {
            memcpy(cur, link, (size_t)len + 1);
        } else {
            char *slash = strrchr(cur, '/');
            size_t dir = slash ? (size_t)(slash - cur) + 1 : 0;
            if (dir + (size_t)len + 1 > sizeof cur) return -1;
            memcpy(cur + dir, link, (size_t)len + 1);
        }
    }
    return -1;
}

int out_file_same(const char *a, const char *b) {
    struct stat sa, sb;
    if (!a || !b || stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The directory part of path ("." when it has none) into dir. */
static int dir_of(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) return copy_path(dir, cap, ".");
    size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x" -> "/" */
    if (n >= cap) return -1;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return 0;
}

int out_file_check(const char *name, const char *const *inputs, int n, char *err, size_t errlen) {
    if (!name || !*name) {
        set_err(err, errlen, "--out is empty");
        return -1;
    }
    /* what name finally is, links followed: a device or FIFO is written in place through the
     * name itself (so /dev/stdout onto a pipe works, whose link text is no path) */
    struct stat st;
    int exists = stat(name, &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "cannot write %s: it is a directory", name);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (inputs[i] && out_file_same(name, inputs[i])) {
            set_err(err, errlen, "--out %s is the same file as %s: writing it would destroy "
                    "the input", name, inputs[i]);
            return -1;
        }
    }
    if (exists && !S_ISREG(st.st_mode)) return 0; /* a device or FIFO: written in place */
    int fd = fd_alias(name);
    if (fd >= 0) { /* one of our descriptors: written through it */
        if (fcntl(fd, F_GETFL) < 0) {
            set_err(err, errlen, "cannot write %s: descriptor %d is not open", name, fd);
            return -1;
        }
        return 0;
    }
    char target[OUT_FILE_PATH];
    if (out_file_resolve(name, target, sizeof target, err, errlen)) return -1;
    char dir[OUT_FILE_PATH];
    struct stat sd;
    if (dir_of(target, dir, sizeof dir) || stat(dir, &sd) != 0 || !S_ISDIR(sd.st_mode)) {
        set_err(err, errlen, "cannot write %s: directory %s does not exist", name, dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        set_err(err, errlen, "cannot write %s: directory %s: %s", name, dir, strerror(errno));
        return -1;
    }
    return 0;
}

int out_file_open(OutFile *o, const char *name, char *err, size_t errlen) {
    memset(o, 0, sizeof *o);
    if (!name || !*name) {
        set_err(err, errlen, "--out is empty");
        return -1;
    }
    if (copy_path(o->name, sizeof o->name, name)) {
        set_err(err, errlen, "output path too long: %.200s...", name);
        return -1;
    }
    struct stat st;
    int alias = fd_alias(name);
    if (alias >= 0 || (stat(name, &st) == 0 && !S_ISREG(st.st_mode))) {
        if (alias < 0 && S_ISDIR(st.st_mode)) {
            set_err(err, errlen, "cannot write %s: it is a directory", name);
            return -1;
        }
        /* A device, FIFO or socket: in place. A FIFO blocks here until a reader comes. One of
         * our descriptors (/dev/stdout): a copy of it, so a regular file behind it is written at
         * its offset (appended to, after >>), never replaced. */
        copy_path(o->path, sizeof o->path, name);
        int fd = alias >= 0 ? fcntl(alias, F_DUPFD_CLOEXEC, 0)
                            : open(name, O_WRONLY | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
            set_err(err, errlen, "cannot write %s: %s", name, strerror(errno));
            return -1;
        }
        struct stat now;
        if (fstat(fd, &now) != 0 || (alias < 0 && S_ISREG(now.st_mode)) || S_ISDIR(now.st_mode)) {
            set_err(err, errlen, "cannot write %s: it changed while being opened", name);
            close(fd);
            return -1;
        }
        o->f = fdopen(fd, "wb");
        if (!o->f) {
            set_err(err, errlen, "cannot write %s: %s", name, strerror(errno));
            close(fd);
            return -1;
        }
        o->in_place = 1;
        return 0;
    }
    if (out_file_resolve(name, o->path, sizeof o->path, err, errlen)) return -1;
    /* A regular file or a new one: a temporary next to the final target, created exclusively
     * (never through a link someone left under the temporary name), mode 0666 less umask. */
    for (int attempt = 0;; attempt++) {
        if (snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld.%d", o->path, (long)getpid(), attempt) >=
            (int)sizeof o->tmp) {
            set_err(err, errlen, "cannot write %s: output path too long", name);
            o->tmp[0] = '\0';
            return -1;
        }
        int fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0666);
        if (fd < 0 && errno == EEXIST && attempt < 100) continue;
        if (fd < 0) {
            set_err(err, errlen, "cannot write %s: %s", name, strerror(errno));
            o->tmp[0] = '\0';
            return -1;
        }
        o->f = fdopen(fd, "wb");
        if (!o->f) {
            set_err(err, errlen, "cannot write %s: %s", name, strerror(errno));
            close(fd);
            unlink(o->tmp);
            o->tmp[0] = '\0';
            return -1;
        }
        return 0;
    }
}

int out_file_commit(OutFile *o, char *err, size_t errlen) {
    int bad = fflush(o->f) != 0 || ferror(o->f);
    int e = errno;
    /* fsync before the rename, so that a crash cannot leave an empty file where the old one was */
    if (!bad && !o->in_place && fsync(fileno(o->f)) != 0) { bad = 1; e = errno; }
    if (fclose(o->f) != 0 && !bad) { bad = 1; e = errno; }
    o->f = NULL;
    if (!bad && !o->in_place && rename(o->tmp, o->path) != 0) { bad = 1; e = errno; }
    if (bad) {
        set_err(err, errlen, "cannot write %s: %s", o->name, strerror(e ? e : EIO));
        if (!o->in_place) unlink(o->tmp);
        o->tmp[0] = '\0';
        return -1;
    }
    o->tmp[0] = '\0';
    return 0;
}

void out_file_abort(OutFile *o) {
    if (o->f) fclose(o->f);
    o->f = NULL;
    if (!o->in_place && o->tmp[0]) unlink(o->tmp);
    o->tmp[0] = '\0';
}
