/* model/model_file.h: GPT-2 weights in llm.c's model file format, so models move between this
 * project and llm.c both ways.
 *
 * Layout: a header of 256 int32 -- [0] magic 20240326, [1] version, [2] max sequence length,
 * [3] vocab, [4] layers, [5] heads, [6] channels, [7] padded vocab, then (our files only; llm.c
 * reads [0..7] and ignores the rest) [16] checksum marker 0x314B4843 ("CHK1"), [17] checksum
 * kind 1, [18] low and [19] high 32 bits of the 64-bit checksum (checksum64 below) of header
 * bytes 0..71 (words 0..17) followed by the parameter bytes as stored; every other word 0 --
 * then the parameters in the order and sizes of model/gpt2.h.
 * Versions: 3 = fp32 parameters, 5 = bf16 parameters (llm.c's two; plain GPT-2 only);
 * 103 = fp32, 105 = bf16 for the models llm.c cannot run (grouped-query attention or ALiBi),
 * with [8] kv_heads (>= 1, dividing heads) and [9] position kind (0 learned, 1 ALiBi), so that
 * llm.c, which accepts only 3 and 5, refuses them. bf16 is the top half of the fp32 bits,
 * rounded to nearest even when written (NaN stays NaN); reading widens it exactly.
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
#define MODEL_FILE_VERSION_BF16 5
#define MODEL_FILE_VERSION_EXT_FP32 103 /* grouped-query attention or ALiBi, fp32 */
#define MODEL_FILE_VERSION_EXT_BF16 105 /* the same in bf16 */
#define MODEL_FILE_KV_HEADS_WORD 8   /* versions 103, 105: header[8] kv_heads */
#define MODEL_FILE_POS_WORD 9        /* versions 103, 105: header[9] position kind */
#define MODEL_FILE_CHECKSUM_WORD 16          /* header[16..19], see above */
#define MODEL_FILE_CHECKSUM_MARKER 0x314B4843 /* "CHK1" */
#define MODEL_FILE_CHECKSUM_KIND 1            /* checksum64 */

/* Writes through a temporary name (atomic_temp_path), renamed into place, with the checksum in
 * the header: fp32, version 3 (or 103 when the model is not plain GPT-2, see gpt2_is_plain).
 * Returns 0, or -1 with a message in err. */
int model_file_save(const char *path, const GPT2Config *c, const float *params,
                    char *err, size_t errlen);
/* The same with the element type chosen by `version`: 3 (fp32) or 5 (bf16, rounded to nearest
 * even); a model that is not plain GPT-2 is written as 103 or 105 instead. Any other version is
 * refused. */
int model_file_save_as(const char *path, const GPT2Config *c, const float *params, int version,
                       char *err, size_t errlen);
/* The version model_file_save_as writes for `version` (3 or 5) and this model: 3, 5, 103 or 105;
 * -1 for a version that is not 3 or 5. */
int model_file_version_for(const GPT2Config *c, int version);

/* fp32 <-> bf16 as the files store it: round to nearest even (NaN kept a quiet NaN); exact. */
uint16_t model_file_fp32_to_bf16(float x);
float model_file_bf16_to_fp32(uint16_t h);
/* Reads the header only (the checksum is not verified: that needs the whole file). Returns 0,
 * or -1 with a message naming the problem (missing or not a regular file, wrong magic,
 * unsupported version, inconsistent shapes, damaged checksum words, size not matching). */
int model_file_read_config(const char *path, GPT2Config *c, char *err, size_t errlen);
/* Reads the parameters into `params` (gpt2_num_params(c) floats, widened from bf16 for
 * versions 5 and 105), after checking the header matches `expect` (gpt2_config_same), and verifies the checksum when the file has one ("PATH: checksum
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
