/* model/model_file.c: reading and writing llm.c's GPT-2 model files (see model_file.h). */
#include "model/model_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error_text.h"
#include "common/regular_file.h"

/* ---- checksum64 ------------------------------------------------------------------------ */

/* Each step is a bijection of the lane for a fixed word and injective in the word for a fixed
 * lane, so changing any one word always changes the lane, and the finaliser is injective in
 * each lane: a single damaged word (any number of its bits) is always detected. */
static inline uint64_t ck_round(uint64_t h, uint64_t w) {
    h ^= w;
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 32);
}

static inline uint64_t ck_mix(uint64_t h) { /* murmur3's fmix64, a bijection */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static inline void ck_block(uint64_t lane[4], const unsigned char *p) {
    uint64_t w[4];
    memcpy(w, p, sizeof w);
    lane[0] = ck_round(lane[0], w[0]);
    lane[1] = ck_round(lane[1], w[1]);
    lane[2] = ck_round(lane[2], w[2]);
    lane[3] = ck_round(lane[3], w[3]);
}

void checksum64_init(Checksum64 *s) {
    s->lane[0] = 0x9e3779b97f4a7c15ULL;
    s->lane[1] = 0xbf58476d1ce4e5b9ULL;
    s->lane[2] = 0x94d049bb133111ebULL;
    s->lane[3] = 0x2545f4914f6cdd1dULL;
    s->nbuf = 0;
    s->total = 0;
}

void checksum64_update(Checksum64 *s, const void *data, size_t bytes) {
    const unsigned char *p = (const unsigned char *)data;
    s->total += bytes;
    if (s->nbuf) {
        size_t take = 32 - s->nbuf < bytes ? 32 - s->nbuf : bytes;
        memcpy(s->buf + s->nbuf, p, take);
        s->nbuf += take;
        p += take;
        bytes -= take;
        if (s->nbuf < 32) return;
        ck_block(s->lane, s->buf);
        s->nbuf = 0;
    }
    uint64_t lane[4] = {s->lane[0], s->lane[1], s->lane[2], s->lane[3]};
    for (; bytes >= 32; p += 32, bytes -= 32) ck_block(lane, p);
    memcpy(s->lane, lane, sizeof lane);
    memcpy(s->buf, p, bytes);
    s->nbuf = bytes;
}

uint64_t checksum64_final(const Checksum64 *s) {
    uint64_t lane[4] = {s->lane[0], s->lane[1], s->lane[2], s->lane[3]};
    if (s->nbuf) { /* zero-padded last block; the length below tells the padding apart */
        unsigned char last[32] = {0};
        memcpy(last, s->buf, s->nbuf);
        ck_block(lane, last);
    }
    uint64_t h = ck_mix(s->total);
    for (int i = 0; i < 4; i++) h = ck_mix(h ^ lane[i]);
    return h;
}

int read_hashed(FILE *f, void *dst, size_t bytes, Checksum64 *s) {
    if (dst) {
        if (fread(dst, 1, bytes, f) != bytes) return -1;
        checksum64_update(s, dst, bytes);
        return 0;
    }
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = (unsigned char *)malloc(CHUNK);
    if (!buf) return -1;
    int rc = 0;
    while (bytes) {
        size_t take = bytes < CHUNK ? bytes : CHUNK;
        if (fread(buf, 1, take, f) != take) { rc = -1; break; }
        checksum64_update(s, buf, take);
        bytes -= take;
    }
    free(buf);
    return rc;
}

/* ---- writing ---------------------------------------------------------------------------- */

int write_all(FILE *f, const void *data, size_t bytes) {
    return fwrite(data, 1, bytes, f) == bytes ? 0 : -1;
}

void atomic_temp_path(const char *path, char *tmp, size_t n) {
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    snprintf(tmp, n, "%.*s.%s.tmp.%ld", dirlen, path, path + dirlen, (long)getpid());
}

static void fsync_parent_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: some file systems refuse fsync on a directory */
        close(fd);
    }
}

/* Flush, sync, close and rename tmp over path; on any failure remove tmp and leave path alone. */
int finish_atomic_write(FILE *f, const char *tmp, const char *path, char *err, size_t errlen) {
    int saved = 0;
    if (fflush(f) != 0 || ferror(f)) saved = errno ? errno : EIO;
    /* fsync before the rename: a crash after it must not leave a renamed, empty file */
    if (!saved && fsync(fileno(f)) != 0 && errno != EINVAL && errno != EROFS) saved = errno;
    if (fclose(f) != 0 && !saved) saved = errno ? errno : EIO;
    if (saved) {
        set_err(err, errlen, "could not write %s: %s", tmp, strerror(saved));
        remove(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "could not rename %s to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
        return -1;
    }
    fsync_parent_dir(path);
    return 0;
}

/* ---- bf16 -------------------------------------------------------------------------------- */

uint16_t model_file_fp32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

float model_file_bf16_to_fp32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

enum { BF16_CHUNK = 1 << 18 }; /* elements converted at a time */

int model_file_version_for(const GPT2Config *c, int version) {
    int plain = gpt2_is_plain(c);
    if (version == MODEL_FILE_VERSION_FP32)
        return plain ? MODEL_FILE_VERSION_FP32 : MODEL_FILE_VERSION_EXT_FP32;
    if (version == MODEL_FILE_VERSION_BF16)
        return plain ? MODEL_FILE_VERSION_BF16 : MODEL_FILE_VERSION_EXT_BF16;
    return -1;
}

static int is_bf16_version(int v) {
    return v == MODEL_FILE_VERSION_BF16 || v == MODEL_FILE_VERSION_EXT_BF16;
}

/* The parameters as the file stores them, fed to the checksum and written. */
static int write_params(FILE *f, const float *params, size_t n, int bf16, Checksum64 *s) {
    if (!bf16) {
        checksum64_update(s, params, n * sizeof(float));
        return write_all(f, params, n * sizeof(float));
    }
    uint16_t *buf = (uint16_t *)malloc(BF16_CHUNK * sizeof(uint16_t));
    if (!buf) return -1;
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0; at += BF16_CHUNK) {
        size_t take = n - at < BF16_CHUNK ? n - at : BF16_CHUNK;
        for (size_t i = 0; i < take; i++) buf[i] = model_file_fp32_to_bf16(params[at + i]);
        checksum64_update(s, buf, take * sizeof(uint16_t));
        rc = write_all(f, buf, take * sizeof(uint16_t));
    }
    free(buf);
    return rc;
}

int model_file_save_as(const char *path, const GPT2Config *c, const float *params, int version,
                       char *err, size_t errlen) {
    int v = model_file_version_for(c, version);
    if (v < 0) {
        set_err(err, errlen, "cannot write model file %s as version %d (expected 3 for fp32 or 5 "
                "for bf16)", path, version);
        return -1;
    }
    char tmp[4200];
    atomic_temp_path(path, tmp, sizeof tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        set_err(err, errlen, "cannot write model file %s: %s", tmp, strerror(errno));
        return -1;
    }
    int32_t header[256] = {0};
    header[0] = MODEL_FILE_MAGIC;
    header[1] = v;
    header[2] = c->max_seq_len;
    header[3] = c->vocab_size;
    header[4] = c->num_layers;
    header[5] = c->num_heads;
    header[6] = c->channels;
    header[7] = c->padded_vocab_size;
    if (v == MODEL_FILE_VERSION_EXT_FP32 || v == MODEL_FILE_VERSION_EXT_BF16) {
        header[MODEL_FILE_KV_HEADS_WORD] = gpt2_kv_heads(c);
        header[MODEL_FILE_POS_WORD] = c->pos;
    }
    header[MODEL_FILE_CHECKSUM_WORD] = MODEL_FILE_CHECKSUM_MARKER;
    header[MODEL_FILE_CHECKSUM_WORD + 1] = MODEL_FILE_CHECKSUM_KIND;
    Checksum64 s;
    checksum64_init(&s);
    checksum64_update(&s, header, (MODEL_FILE_CHECKSUM_WORD + 2) * sizeof(int32_t));
    /* the header goes first with the sum still 0, then again once the parameters are summed */
    int failed = write_all(f, header, sizeof header) ||
                 write_params(f, params, gpt2_num_params(c), is_bf16_version(v), &s);
    if (!failed) {
        uint64_t sum = checksum64_final(&s);
        header[MODEL_FILE_CHECKSUM_WORD + 2] = (int32_t)(uint32_t)sum;
        header[MODEL_FILE_CHECKSUM_WORD + 3] = (int32_t)(uint32_t)(sum >> 32);
        failed = fseek(f, 0, SEEK_SET) != 0 || write_all(f, header, sizeof header);
    }
    if (failed) {
        set_err(err, errlen, "could not write model file %s: %s", tmp, strerror(errno));
        fclose(f);
        remove(tmp);
        return -1;
    }
    return finish_atomic_write(f, tmp, path, err, errlen);
}

int model_file_save(const char *path, const GPT2Config *c, const float *params,
                    char *err, size_t errlen) {
    return model_file_save_as(path, c, params, MODEL_FILE_VERSION_FP32, err, errlen);
}

/* ---- reading ---------------------------------------------------------------------------- */

typedef struct {
    int version;
    int has_checksum;
    uint64_t checksum;
    int32_t words[MODEL_FILE_CHECKSUM_WORD + 2]; /* the checksummed part of the header */
} HeaderCheck;

static int read_header(FILE *f, const char *path, GPT2Config *c, HeaderCheck *hc,
                       char *err, size_t errlen) {
    int32_t h[256];
    if (fread(h, sizeof h, 1, f) != 1) {
        set_err(err, errlen, "model file %s is too short for its 1024-byte header", path);
        return -1;
    }
    if (h[0] != MODEL_FILE_MAGIC) {
        set_err(err, errlen, "model file %s has magic %d, expected %d (an llm.c GPT-2 model file)",
                path, h[0], MODEL_FILE_MAGIC);
        return -1;
    }
    const int v = h[1];
    const int ext = v == MODEL_FILE_VERSION_EXT_FP32 || v == MODEL_FILE_VERSION_EXT_BF16;
    if (v != MODEL_FILE_VERSION_FP32 && v != MODEL_FILE_VERSION_BF16 && !ext) {
        set_err(err, errlen, "model file %s has version %d; versions 3 (fp32) and 5 (bf16) of "
                "llm.c and 103 (fp32) and 105 (bf16) of grouped-query or ALiBi models are read",
                path, v);
        return -1;
    }
    memset(c, 0, sizeof *c);
    c->max_seq_len = h[2];
    c->vocab_size = h[3];
    c->num_layers = h[4];
    c->num_heads = h[5];
    c->channels = h[6];
    c->padded_vocab_size = h[7];
    if (ext) {
        c->kv_heads = h[MODEL_FILE_KV_HEADS_WORD];
        c->pos = h[MODEL_FILE_POS_WORD];
        if (c->kv_heads < 1) {
            set_err(err, errlen, "model file %s (version %d) has kv_heads %d in header word %d, "
                    "expected at least 1", path, v, c->kv_heads, MODEL_FILE_KV_HEADS_WORD);
            return -1;
        }
    }
    char why[256];
    if (gpt2_config_validate(c, why, sizeof why) != 0 || c->max_seq_len > (1 << 20) ||
        c->num_layers > 4096 || c->channels > (1 << 16)) {
        set_err(err, errlen, "model file %s has inconsistent shapes: %s", path,
                gpt2_config_validate(c, why, sizeof why) ? why : "sizes out of range");
        return -1;
    }
    const int cw = MODEL_FILE_CHECKSUM_WORD;
    hc->has_checksum = h[cw] == MODEL_FILE_CHECKSUM_MARKER;
    if (hc->has_checksum) {
        if (h[cw + 1] != MODEL_FILE_CHECKSUM_KIND) {
            set_err(err, errlen, "model file %s: unknown checksum kind %d in header word %d "
                    "(file damaged?)", path, h[cw + 1], cw + 1);
            return -1;
        }
        for (int i = ext ? MODEL_FILE_POS_WORD + 1 : 8; i < 256; i++)
            if ((i < cw || i >= cw + 4) && h[i] != 0) {
                set_err(err, errlen, "model file %s: header word %d is %d, expected 0 "
                        "(file damaged)", path, i, h[i]);
                return -1;
            }
        hc->checksum = (uint64_t)(uint32_t)h[cw + 2] | (uint64_t)(uint32_t)h[cw + 3] << 32;
    } else if (h[cw] || h[cw + 1] || h[cw + 2] || h[cw + 3]) {
        /* llm.c writes these words as 0: anything else is a damaged marker */
        set_err(err, errlen, "model file %s: header words %d..%d are neither 0 (llm.c) nor a "
                "checksum (file damaged?)", path, cw, cw + 3);
        return -1;
    }
    memcpy(hc->words, h, sizeof hc->words);
    hc->version = v;
    struct stat st;
    size_t expect = sizeof h + gpt2_num_params(c) * (is_bf16_version(v) ? 2 : 4);
    if (fstat(fileno(f), &st) != 0 || (size_t)st.st_size != expect) {
        set_err(err, errlen, "model file %s is %lld bytes; its header's shapes need %zu",
                path, (long long)st.st_size, expect);
        return -1;
    }
    return 0;
}

/* Reads the parameters after the header (into params, or only through the checksum when
 * params is NULL) and checks the checksum. */
static int read_params(FILE *f, const char *path, const GPT2Config *c, const HeaderCheck *hc,
                       float *params, char *err, size_t errlen) {
    Checksum64 s;
    checksum64_init(&s);
    checksum64_update(&s, hc->words, sizeof hc->words);
    if (!hc->has_checksum && !params) return 0; /* nothing to verify */
    size_t n = gpt2_num_params(c);
    int rc = 0;
    if (!is_bf16_version(hc->version)) {
        rc = read_hashed(f, params, n * sizeof(float), &s);
    } else if (!params) {
        rc = read_hashed(f, NULL, n * sizeof(uint16_t), &s);
    } else {
        uint16_t *buf = (uint16_t *)malloc(BF16_CHUNK * sizeof(uint16_t));
        rc = buf ? 0 : -1;
        for (size_t at = 0; at < n && rc == 0; at += BF16_CHUNK) {
            size_t take = n - at < BF16_CHUNK ? n - at : BF16_CHUNK;
            rc = read_hashed(f, buf, take * sizeof(uint16_t), &s);
            for (size_t i = 0; rc == 0 && i < take; i++) params[at + i] = model_file_bf16_to_fp32(buf[i]);
        }
        free(buf);
    }
    if (rc != 0) {
        set_err(err, errlen, "model file %s: read failed (%s)", path,
                ferror(f) ? strerror(errno) : "file ended early");
        return -1;
    }
    if (hc->has_checksum && checksum64_final(&s) != hc->checksum) {
        set_err(err, errlen, "%s: checksum mismatch (file damaged)", path);
        return -1;
    }
    return 0;
}

int model_file_read_config(const char *path, GPT2Config *c, char *err, size_t errlen) {
    FILE *f = fopen_regular(path, "model file", err, errlen);
    if (!f) return -1;
    HeaderCheck hc;
    int rc = read_header(f, path, c, &hc, err, errlen);
    fclose(f);
    return rc;
}

int model_file_verify(const char *path, GPT2Config *out, int *has_checksum, char *err,
                      size_t errlen) {
    FILE *f = fopen_regular(path, "model file", err, errlen);
    if (!f) return -1;
    GPT2Config c;
    HeaderCheck hc;
    int rc = read_header(f, path, &c, &hc, err, errlen);
    if (rc == 0) rc = read_params(f, path, &c, &hc, NULL, err, errlen);
    fclose(f);
    if (rc == 0 && out) *out = c;
    if (rc == 0 && has_checksum) *has_checksum = hc.has_checksum;
    return rc;
}

int model_file_load(const char *path, const GPT2Config *expect, float *params,
                    char *err, size_t errlen) {
    FILE *f = fopen_regular(path, "model file", err, errlen);
    if (!f) return -1;
    GPT2Config c;
    HeaderCheck hc;
    if (read_header(f, path, &c, &hc, err, errlen) != 0) {
        fclose(f);
        return -1;
    }
    if (!gpt2_config_same(&c, expect)) {
        set_err(err, errlen, "model file %s has shape L=%d H=%d C=%d V=%d Vp=%d maxT=%d kv=%d "
                "pos=%s, expected L=%d H=%d C=%d V=%d Vp=%d maxT=%d kv=%d pos=%s", path,
                c.num_layers, c.num_heads, c.channels, c.vocab_size, c.padded_vocab_size,
                c.max_seq_len, gpt2_kv_heads(&c), gpt2_pos_name(c.pos), expect->num_layers,
                expect->num_heads, expect->channels, expect->vocab_size, expect->padded_vocab_size,
                expect->max_seq_len, gpt2_kv_heads(expect),
                gpt2_pos_name(expect->pos) ? gpt2_pos_name(expect->pos) : "?");
        fclose(f);
        return -1;
    }
    int rc = read_params(f, path, &c, &hc, params, err, errlen);
    fclose(f);
    return rc;
}
