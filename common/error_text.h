/* common/error_text.h: the one-line error convention every part shares: a function that can fail
 * takes (char *err, size_t errlen) and fills it with one line naming the problem. */
#ifndef COMMON_ERROR_TEXT_H
#define COMMON_ERROR_TEXT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* printf-style into err (nothing when err is NULL or errlen 0). */
static inline void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

#endif
