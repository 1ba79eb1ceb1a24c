/* model/documents.h: packed documents -- the separator that starts each document, and where each
 * token's document starts.
 *
 * A training window may hold several documents back to back (enwik8's wiki pages, GPT-2 token
 * files joined at token 50256). With a separator, attention never crosses a document boundary
 * (attention.h's mask.doc) and, optionally, positions restart at 0 in each document.
 *
 * The separator is a sequence of 1 to DOC_SEP_MAX tokens: one token id (a byte value for byte
 * data, e.g. 10; a token id such as GPT-2's 50256), or, for byte data, a byte string such as
 * "<page>" (enwik8's page start: one byte cannot mark it). A document starts at the first token
 * of each occurrence inside the sequence; position 0 always starts one. An occurrence cut by the
 * end of the window starts no document there (the next window, which holds it whole, does).
 * Both backends compute the starts from the batch's tokens with doc_starts_of_batch, so they
 * agree exactly.
 */
#ifndef MODEL_DOCUMENTS_H
#define MODEL_DOCUMENTS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DOC_SEP_MAX 32

typedef struct {
    int len;                     /* 0: no packed documents */
    int tokens[DOC_SEP_MAX];     /* a document starts at each occurrence of tokens[0..len) */
} DocSep;

/* --doc-sep TEXT: a decimal number is one token id (0 .. 65535); anything else is a byte string
 * for byte data (byte_data != 0), with the escapes \n, \t, \\ and \xHH (so "\x31\x30" is the text
 * "10"). 0, or -1 with one line in err (empty, too long, a bad escape, text with token data). */
int doc_sep_parse(const char *text, int byte_data, DocSep *out, char *err, size_t errlen);

/* The separator for messages and logs: "token 10" or "'<page>'" (bytes outside printable ASCII
 * as \xHH, quotes and backslashes escaped). */
void doc_sep_describe(const DocSep *sep, char *buf, size_t n);

/* The separator as a JSON string: "10" for one token id, else its bytes, JSON-escaped, with a
 * "text:" prefix ("text:<page>"), so the two forms never read alike. */
void doc_sep_json(const DocSep *sep, char *buf, size_t n);

/* The largest token id of the separator (to check it against the vocabulary); -1 when len is 0. */
int doc_sep_max_token(const DocSep *sep);

/* For a batch of tokens (B, T): doc[b*T + t] = the position where t's document starts
 * (non-decreasing in t, doc[b*T] = 0) and, when pos is not NULL, pos[b*T + t] = t - doc[b*T + t]
 * (the position within the document). */
void doc_starts_of_batch(const DocSep *sep, const int *tokens, int B, int T, int *doc, int *pos);

#ifdef __cplusplus
}
#endif
#endif
