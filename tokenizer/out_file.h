/* tokenizer/out_file.h: where ./tokenize writes its outputs (vocabulary, token file, text).
 *
 * A regular file (or a name that does not exist yet) is written to a temporary file in the same
 * directory and renamed onto the name, so a failed run never leaves half a file under it. That
 * is for regular files only: renaming over /dev/null, a FIFO or a symbolic link would replace
 * the device, the pipe or the link with a plain file. So
 *   - a symbolic link is followed to its final target, and the temporary file is made and
 *     renamed next to that target: the link stays a link, the file it names is replaced;
 *   - a character or block device, a FIFO or a socket (named directly or through links) is
 *     opened for writing through the name as given and written in place, no temporary, no
 *     rename (a FIFO blocks until a reader opens it, as a shell redirection would);
 *   - a name for one of our own descriptors (/dev/stdout, /dev/fd/N, /proc/self/fd/N, also
 *     through links) is written through a copy of that descriptor, at its offset: a pipe's
 *     link text "pipe:[...]" names no file, and `--out /dev/stdout >> log` must append to log,
 *     not replace it;
 *   - a directory is refused.
 * out_file_check does every check that needs no writing (run it before any long work);
 * out_file_open then opens, out_file_commit finishes (flush, fsync, rename), out_file_abort
 * throws the temporary away. Errors are one line in err. */
#ifndef TOKENIZER_OUT_FILE_H
#define TOKENIZER_OUT_FILE_H

#include <stddef.h>
#include <stdio.h>

#define OUT_FILE_PATH 4096

typedef struct {
    FILE *f;
    int in_place;               /* writing straight into a device, FIFO or socket */
    char path[OUT_FILE_PATH];   /* where the bytes end up: the name with links resolved */
    char tmp[OUT_FILE_PATH];    /* the temporary renamed onto path; "" when in place */
    char name[OUT_FILE_PATH];   /* the name as given, for messages */
} OutFile;

/* Follows symbolic links from name to the last path, which need not exist (a dangling link is
 * resolved to the file it would create). Relative link targets are taken from the link's own
 * directory. Returns 0, or -1 with err (a loop, a path too long, an unreadable link). */
int out_file_resolve(const char *name, char *target, size_t cap, char *err, size_t errlen);

/* 1 when a and b both exist and are the same file (st_dev and st_ino, following links, so a
 * symbolic or hard link to the same file counts), else 0. */
int out_file_same(const char *a, const char *b);

/* Refuses an output name that cannot or must not be written: empty, a directory, one that is
 * the same file as one of the n inputs (NULL entries skipped), or whose directory is missing or
 * not writable. Writes nothing. Returns 0, or -1 with err. */
int out_file_check(const char *name, const char *const *inputs, int n, char *err, size_t errlen);

/* Opens name for writing as described above. Returns 0, or -1 with err (nothing left behind). */
int out_file_open(OutFile *o, const char *name, char *err, size_t errlen);

/* Flushes and closes; for a regular file fsyncs and renames the temporary onto the target.
 * Returns 0, or -1 with err, the temporary removed and the target untouched. */
int out_file_commit(OutFile *o, char *err, size_t errlen);

/* Closes and removes the temporary; the target is untouched. */
void out_file_abort(OutFile *o);

#endif
