/* train/util.h: two small helpers the trainer and the bench share. */
#ifndef TRAIN_UTIL_H
#define TRAIN_UTIL_H

#include <sys/stat.h>
#include <time.h>

/* Where `make enwik8` puts the corpus: the default data when present. */
#define ENWIK8_TRAIN "data/enwik8/enwik8.train"
#define ENWIK8_VAL "data/enwik8/enwik8.val"

/* Monotonic wall-clock seconds. */
static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

#endif
