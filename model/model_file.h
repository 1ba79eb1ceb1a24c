/* model/model_file.h: GPT-2 weights in llm.c's model file format, so models move between this
 * project and llm.c both ways.
 *
 * Layout: a header of 256 int32 -- [0] magic 20240326, [1] version 3 (fp32 weights),
 * [2] max sequence length, [3] vocab, [4] layers, [5] heads, [6] channels, [7] padded vocab,
 * then (our files only; llm.c reads [0..7] and ignores the rest) [16] checksum marker
 * 0x314B4843 ("CHK1"), [17] checksum kind 1, [18] low and [19] high 32 bits of the 64-bit
 * checksum (checksum64 below) of header bytes 0..71 (words 0..17) followed by the parameter
 * bytes; every other word 0 -- then the parameters as fp32 in the order of model/gpt2.h.
 * A file without the marker (llm.c's) has words 16..19 zero and is read without a check.
 */
#ifndef MODEL_FILE_H
#define MODEL_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "model/gpt2.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MODEL_FILE_MAGIC 20240326
#define MODEL_FILE_VERSION_FP32 3
#define MODEL_FILE_VERSION_BF16 5 /* llm.c's bf16 files: recognised, not read */
#define MODEL_FILE_CHECKSUM_WORD 16          /* header[16..19], see above */
#define MODEL_FILE_CHECKSUM_MARKER 0x314B4843 /* "CHK1" */
#define MODEL_FILE_CHECKSUM_KIND 1            /* checksum64 */

/* Writes through a temporary name (atomic_temp_path), renamed into place, with the checksum in
 * the header. Returns 0, or -1 with a message in err. */
int model_file_save(const char *path, const GPT2Config *c, const float *params,
                    char *err, size_t errlen);
/* Reads the header only (the checksum is not verified: that needs the whole file). Returns 0,
 * or -1 with a message naming the problem (missing or not a regular file, wrong magic,
 * unsupported version, inconsistent shapes, damaged checksum words, size not matching). */
int model_file_read_config(const char *path, GPT2Config *c, char *err, size_t errlen);
/* Reads the parameters into `params` (gpt2_num_params(c) floats), after checking the
 * header matches `expect`, and verifies the checksum when the file has one ("PATH: checksum
 * mismatch (file damaged)"). Returns 0 or -1 with a message. */
int model_file_load(const char *path, const GPT2Config *expect, float *params,
                    char *err, size_t errlen);
/* Reads the whole file without keeping it: header checks as model_file_read_config, then the
 * checksum when there is one. *c (may be NULL) gets the shape; *has_checksum (may be NULL)
 * 1 or 0. Returns 0 or -1 with a message. */
int model_file_verify(const char *path, GPT2Config *c, int *has_checksum, char *err, size_t errlen);

/* A fast 64-bit checksum (four multiply-xorshift lanes over 64-bit little-endian words, a
 * finaliser over the lanes and the length): any change of one 8-byte word changes it, and it
 * runs at memory speed. Streaming: update with pieces of any size gives the same result. */
typedef struct {
    uint64_t lane[4];
    unsigned char buf[32];
    size_t nbuf;
    uint64_t total;
} Checksum64;
void checksum64_init(Checksum64 *s);
void checksum64_update(Checksum64 *s, const void *data, size_t bytes);
uint64_t checksum64_final(const Checksum64 *s);

/* Helpers shared with the training-state file. */
int write_all(FILE *f, const void *data, size_t bytes);
/* The temporary name a file is written under before the rename: DIR/.NAME.tmp.PID for
 * DIR/NAME (see checkpoint_clean_temporaries). */
void atomic_temp_path(const char *path, char *tmp, size_t n);
/* Flush, fsync, close and rename tmp over path (then fsync the directory); on any failure
 * remove tmp and leave path alone. */
int finish_atomic_write(FILE *f, const char *tmp, const char *path, char *err, size_t errlen);
/* Reads `bytes` into dst (or, when dst is NULL, through a scratch buffer), feeding the checksum.
 * 0, or -1 when the file ends early or a read fails. */
int read_hashed(FILE *f, void *dst, size_t bytes, Checksum64 *s);

#ifdef __cplusplus
}
#endif
#endif
