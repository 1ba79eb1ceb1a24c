/* tokenizer/vocab_save.c: tokenizer_save, the vocabulary file written to a path through
 * out_file.h (a temporary renamed onto a regular file or a link's target; in place for a
 * device or FIFO). Apart from vocab_file.c so that the parser links without out_file.c. */
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/out_file.h"

int tokenizer_save(const Tokenizer *tok, const char *path, char *err, size_t errlen) {
    uint8_t *data;
    size_t n;
    if (tokenizer_serialize(tok, &data, &n)) {
        snprintf(err, errlen, "out of memory saving the vocabulary");
        return -1;
    }
    /* through out_file.h: a temporary renamed onto a regular file (next to a link's target),
     * written in place for a device or FIFO */
    OutFile o;
    if (out_file_open(&o, path, err, errlen)) {
        free(data);
        return -1;
    }
    if (fwrite(data, 1, n, o.f) != n) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        out_file_abort(&o);
        free(data);
        return -1;
    }
    free(data);
    return out_file_commit(&o, err, errlen);
}
