/* common/regular_file.h: every input file is opened through here. A FIFO, a device or a
 * directory named where a file is read would block forever (a FIFO with no writer) or mislead,
 * so readers accept regular files only (a symbolic link to one is fine) and say so in one line.
 * The open itself never blocks: O_NONBLOCK is set for the open and cleared after the check. */
#ifndef COMMON_REGULAR_FILE_H
#define COMMON_REGULAR_FILE_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error_text.h"

/* A read-only descriptor of the regular file `path`, or -1 with one line in err naming `what`
 * ("model file", "vocabulary file", ...) and the problem. */
static inline int open_regular_fd(const char *path, const char *what, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s %s is not a regular file (%s)", what, path,
                S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                : (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) ? "a device" : "not a plain file");
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

/* The same as a stdio stream opened "rb"; NULL with err. */
static inline FILE *fopen_regular(const char *path, const char *what, char *err, size_t errlen) {
    int fd = open_regular_fd(path, what, err, errlen);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        set_err(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno));
        close(fd);
    }
    return f;
}

/* 1 when path names something that is not a regular file (a device, FIFO, socket, directory),
 * 0 when it is a regular file or does not exist. Follows symbolic links. */
static inline int exists_not_regular(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && !S_ISREG(st.st_mode);
}

#endif
