/* common/atomic_file.h: a regular output file written whole or not at all. The text goes to
 * PATH.tmp.PID beside it; atomic_commit flushes, checks every write succeeded (a full disk shows
 * only at the flush), closes and renames it over PATH. On any failure the temporary is removed
 * and PATH is left as it was: a reader never sees a half-written or empty file. */
#ifndef COMMON_ATOMIC_FILE_H
#define COMMON_ATOMIC_FILE_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    FILE *f;
    const char *path;
    char tmp[4200];
} AtomicFile;

/* The stream to write, or NULL (errno set) when the temporary cannot be created. */
static inline FILE *atomic_open(AtomicFile *a, const char *path) {
    a->path = path;
    a->f = NULL;
    if (snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof a->tmp) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    a->f = fopen(a->tmp, "wb");
    return a->f;
}

/* 0 when PATH now holds everything written, else -1 with errno (PATH untouched). */
static inline int atomic_commit(AtomicFile *a) {
    int failed = fflush(a->f) != 0 || ferror(a->f);
    int saved = errno;
    if (fclose(a->f) != 0 && !failed) {
        failed = 1;
        saved = errno;
    }
    a->f = NULL;
    if (!failed && rename(a->tmp, a->path) != 0) {
        failed = 1;
        saved = errno;
    }
    if (failed) {
        unlink(a->tmp);
        errno = saved ? saved : EIO;
        return -1;
    }
    return 0;
}

/* Drops what was written; PATH is untouched. */
static inline void atomic_abandon(AtomicFile *a) {
    if (a->f) fclose(a->f);
    a->f = NULL;
    unlink(a->tmp);
}

#endif
