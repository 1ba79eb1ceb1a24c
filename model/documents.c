/* model/documents.c: the packed-document separator and the per-token document starts
 * (model/documents.h). */
#include "model/documents.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error_text.h"

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int doc_sep_parse(const char *text, int byte_data, DocSep *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!text || !text[0]) {
        set_err(err, errlen, "--doc-sep expects a token id or, for byte data, a byte string; got an empty string");
        return -1;
    }
    int digits = 1;
    for (const char *c = text; *c; c++) digits &= isdigit((unsigned char)*c) != 0;
    if (digits) {
        long v = strlen(text) <= 6 ? strtol(text, NULL, 10) : 70000;
        if (v > 65535) {
            set_err(err, errlen, "--doc-sep %s: a token id is at most 65535", text);
            return -1;
        }
        out->len = 1;
        out->tokens[0] = (int)v;
        return 0;
    }
    if (!byte_data) {
        set_err(err, errlen, "--doc-sep '%s': a byte string separates byte data; token data takes a token id "
                "such as 50256", text);
        return -1;
    }
    for (const char *c = text; *c;) {
        int byte;
        if (*c != '\\') {
            byte = (unsigned char)*c++;
        } else if (c[1] == 'n' || c[1] == 't' || c[1] == '\\') {
            byte = c[1] == 'n' ? '\n' : c[1] == 't' ? '\t' : '\\';
            c += 2;
        } else if (c[1] == 'x' && hex_digit(c[2]) >= 0 && hex_digit(c[3]) >= 0) {
            byte = hex_digit(c[2]) * 16 + hex_digit(c[3]);
            c += 4;
        } else {
            set_err(err, errlen, "--doc-sep '%s': unknown escape (expected \\n, \\t, \\\\ or \\xHH)", text);
            return -1;
        }
        if (out->len == DOC_SEP_MAX) {
            set_err(err, errlen, "--doc-sep '%s': over %d bytes", text, DOC_SEP_MAX);
            memset(out, 0, sizeof *out);
            return -1;
        }
        out->tokens[out->len++] = byte;
    }
    return 0;
}

/* The separator's bytes with escapes; `json` escapes for a JSON string, else for a quoted text. */
static void escaped_bytes(const DocSep *sep, int json, char *buf, size_t n) {
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < sep->len && at + 8 < n; i++) {
        int b = sep->tokens[i];
        if (b == '"' || b == '\\' || (!json && b == '\''))
            at += (size_t)snprintf(buf + at, n - at, "\\%c", b);
        else if (b >= 32 && b < 127)
            buf[at++] = (char)b, buf[at] = '\0';
        else
            at += (size_t)snprintf(buf + at, n - at, json ? "\\u%04x" : "\\x%02x", b);
    }
}

void doc_sep_describe(const DocSep *sep, char *buf, size_t n) {
    if (sep->len == 1) { /* a byte given as text is its token too */
        snprintf(buf, n, "token %d", sep->tokens[0]);
        return;
    }
    char text[4 * DOC_SEP_MAX + 8];
    escaped_bytes(sep, 0, text, sizeof text);
    snprintf(buf, n, "'%s'", text);
}

void doc_sep_json(const DocSep *sep, char *buf, size_t n) {
    if (sep->len == 1) {
        snprintf(buf, n, "%d", sep->tokens[0]);
        return;
    }
    char text[6 * DOC_SEP_MAX + 8];
    escaped_bytes(sep, 1, text, sizeof text);
    snprintf(buf, n, "text:%s", text);
}

int doc_sep_max_token(const DocSep *sep) {
    int m = -1;
    for (int i = 0; i < sep->len; i++)
        if (sep->tokens[i] > m) m = sep->tokens[i];
    return m;
}

void doc_starts_of_batch(const DocSep *sep, const int *tokens, int B, int T, int *doc, int *pos) {
    const int len = sep->len;
    for (int b = 0; b < B; b++) {
        const int *row = tokens + (size_t)b * T;
        int start = 0;
        for (int t = 0; t < T; t++) {
            int at = len > 0 && t + len <= T;
            for (int i = 0; at && i < len; i++) at = row[t + i] == sep->tokens[i];
            if (at) start = t;
            doc[(size_t)b * T + t] = start;
            if (pos) pos[(size_t)b * T + t] = t - start;
        }
    }
}
