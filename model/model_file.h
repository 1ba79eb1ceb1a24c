/* model/model_file.h: GPT-2 weights in llm.c's model file format, so models move between this
 * project and llm.c both ways.
 *
 * Layout: a header of 256 int32 -- [0] magic 20240326, [1] version 3 (fp32 weights),
 * [2] max sequence length, [3] vocab, [4] layers, [5] heads, [6] channels, [7] padded vocab,
 * the rest 0 -- then the parameters as fp32 in the order of model/gpt2.h.
 */
#ifndef MODEL_FILE_H
#define MODEL_FILE_H

#include <stddef.h>
#include <stdio.h>
#include "model/gpt2.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MODEL_FILE_MAGIC 20240326
#define MODEL_FILE_VERSION_FP32 3
#define MODEL_FILE_VERSION_BF16 5 /* llm.c's bf16 files: recognised, not read */

/* Writes through `path.tmp`, renamed into place. Returns 0, or -1 with a message in err. */
int model_file_save(const char *path, const GPT2Config *c, const float *params,
                    char *err, size_t errlen);
/* Reads the header only. Returns 0, or -1 with a message naming the problem (missing file,
 * wrong magic, unsupported version, inconsistent shapes, size not matching the shapes). */
int model_file_read_config(const char *path, GPT2Config *c, char *err, size_t errlen);
/* Reads the parameters into `params` (gpt2_num_params(c) floats), after checking the
 * header matches `expect`. Returns 0 or -1 with a message. */
int model_file_load(const char *path, const GPT2Config *expect, float *params,
                    char *err, size_t errlen);

/* Helpers shared with the training-state file: write a whole buffer / rename with checks. */
int write_all(FILE *f, const void *data, size_t bytes);
int finish_atomic_write(FILE *f, const char *tmp, const char *path, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
