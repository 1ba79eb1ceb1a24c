/* model/model_file.c: reading and writing llm.c's GPT-2 model files (see model_file.h). */
#include "model/model_file.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int write_all(FILE *f, const void *data, size_t bytes) {
    return fwrite(data, 1, bytes, f) == bytes ? 0 : -1;
}

/* Flush, close and rename tmp over path; on any failure remove tmp and leave path alone. */
int finish_atomic_write(FILE *f, const char *tmp, const char *path, char *err, size_t errlen) {
    int failed = fflush(f) != 0 || ferror(f);
    failed |= fclose(f) != 0;
    if (failed) {
        snprintf(err, errlen, "could not write %s: %s", tmp, strerror(errno));
        remove(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "could not rename %s to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

int model_file_save(const char *path, const GPT2Config *c, const float *params,
                    char *err, size_t errlen) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write model file %s: %s", tmp, strerror(errno));
        return -1;
    }
    int32_t header[256] = {0};
    header[0] = MODEL_FILE_MAGIC;
    header[1] = MODEL_FILE_VERSION_FP32;
    header[2] = c->max_seq_len;
    header[3] = c->vocab_size;
    header[4] = c->num_layers;
    header[5] = c->num_heads;
    header[6] = c->channels;
    header[7] = c->padded_vocab_size;
    if (write_all(f, header, sizeof header) || write_all(f, params, gpt2_num_params(c) * sizeof(float))) {
        snprintf(err, errlen, "could not write model file %s: %s", tmp, strerror(errno));
        fclose(f);
        remove(tmp);
        return -1;
    }
    return finish_atomic_write(f, tmp, path, err, errlen);
}

static int read_header(FILE *f, const char *path, GPT2Config *c, char *err, size_t errlen) {
    int32_t h[256];
    if (fread(h, sizeof h, 1, f) != 1) {
        snprintf(err, errlen, "model file %s is too short for its 1024-byte header", path);
        return -1;
    }
    if (h[0] != MODEL_FILE_MAGIC) {
        snprintf(err, errlen, "model file %s has magic %d, expected %d (an llm.c GPT-2 model file)",
                 path, h[0], MODEL_FILE_MAGIC);
        return -1;
    }
    if (h[1] != MODEL_FILE_VERSION_FP32) {
        snprintf(err, errlen, "model file %s has version %d; only version %d (fp32 weights) is read%s",
                 path, h[1], MODEL_FILE_VERSION_FP32,
                 h[1] == MODEL_FILE_VERSION_BF16 ? " (version 5 is llm.c's bf16 format)" : "");
        return -1;
    }
    c->max_seq_len = h[2];
    c->vocab_size = h[3];
    c->num_layers = h[4];
    c->num_heads = h[5];
    c->channels = h[6];
    c->padded_vocab_size = h[7];
    char why[256];
    if (gpt2_config_validate(c, why, sizeof why) != 0 || c->max_seq_len > (1 << 20) ||
        c->num_layers > 4096 || c->channels > (1 << 16)) {
        snprintf(err, errlen, "model file %s has inconsistent shapes: %s", path,
                 gpt2_config_validate(c, why, sizeof why) ? why : "sizes out of range");
        return -1;
    }
    struct stat st;
    size_t expect = sizeof h + gpt2_num_params(c) * sizeof(float);
    if (fstat(fileno(f), &st) != 0 || (size_t)st.st_size != expect) {
        snprintf(err, errlen, "model file %s is %lld bytes; its header's shapes need %zu",
                 path, (long long)st.st_size, expect);
        return -1;
    }
    return 0;
}

static FILE *open_model_file(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "model file %s is a directory", path);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) snprintf(err, errlen, "cannot open model file %s: %s", path, strerror(errno));
    return f;
}

int model_file_read_config(const char *path, GPT2Config *c, char *err, size_t errlen) {
    FILE *f = open_model_file(path, err, errlen);
    if (!f) return -1;
    int rc = read_header(f, path, c, err, errlen);
    fclose(f);
    return rc;
}

int model_file_load(const char *path, const GPT2Config *expect, float *params,
                    char *err, size_t errlen) {
    FILE *f = open_model_file(path, err, errlen);
    if (!f) return -1;
    GPT2Config c;
    if (read_header(f, path, &c, err, errlen) != 0) {
        fclose(f);
        return -1;
    }
    if (memcmp(&c, expect, sizeof c) != 0) {
        snprintf(err, errlen, "model file %s has shape L=%d H=%d C=%d V=%d maxT=%d, expected "
                 "L=%d H=%d C=%d V=%d maxT=%d", path, c.num_layers, c.num_heads, c.channels,
                 c.vocab_size, c.max_seq_len, expect->num_layers, expect->num_heads,
                 expect->channels, expect->vocab_size, expect->max_seq_len);
        fclose(f);
        return -1;
    }
    size_t n = gpt2_num_params(&c);
    int rc = fread(params, sizeof(float), n, f) == n ? 0 : -1;
    if (rc) snprintf(err, errlen, "model file %s: read failed", path);
    fclose(f);
    return rc;
}
