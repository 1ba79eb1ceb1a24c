/* train/checkpoint.c: writing, finding and checking checkpoints (see checkpoint.h). */
#include "train/checkpoint.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common/error_text.h"
#include "common/regular_file.h"
#include "model/model_file.h"

#define STATE_MAGIC 0x67707432737461ULL
#define STATE_VERSION 3 /* 2: words 12..15 (the loss scaler) reserved; 1: no checksum in word 31 either */
#define STATE_HEADER_WORDS 32
#define STATE_CHECKSUM_WORD 31
#define STATE_FIRST_RESERVED 16 /* words 8..11: seq_len, shuffled, total steps, data tokens; 12..15: loss scaler */
#define STATE_FIRST_RESERVED_V2 12
#define STATE_MAX_STEP 0x7fffffffULL         /* the trainer counts steps in an int */
#define STATE_MAX_EPOCH 0x7fffffffULL
#define STATE_MAX_LOADER_STEP (1ULL << 40)   /* steps within one epoch */
#define STATE_MAX_WINDOWS 0x7fffffffULL

void checkpoint_paths(const char *dir, long step, char *model_path, char *state_path, size_t n) {
    if (model_path) snprintf(model_path, n, "%s/model_%08ld.bin", dir, step);
    if (state_path) snprintf(state_path, n, "%s/state_%08ld.bin", dir, step);
}

int checkpoint_dir_ready(const char *dir, char *err, size_t errlen) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (mkdir(dir, 0755) != 0) {
            set_err(err, errlen, "cannot create checkpoint directory %s: %s", dir, strerror(errno));
            return -1;
        }
    } else if (!S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "checkpoint directory %s exists and is not a directory", dir);
        return -1;
    }
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/.write_test.%d", dir, (int)getpid());
    FILE *f = fopen(probe, "wb");
    if (!f) {
        set_err(err, errlen, "checkpoint directory %s is not writable: %s", dir, strerror(errno));
        return -1;
    }
    fclose(f);
    remove(probe);
    return 0;
}

/* ---- names ------------------------------------------------------------------------------ */

/* Parses a run of at least `min` digits at *s into *v (no overflow past 18 digits); returns the
 * number of digits, 0 when there are too few. */
static int parse_digits(const char *s, int min, long *v) {
    int n = 0;
    long x = 0;
    while (isdigit((unsigned char)s[n])) {
        if (n >= 18) return 0;
        x = x * 10 + (s[n] - '0');
        n++;
    }
    if (n < min) return 0;
    *v = x;
    return n;
}

/* "model_NNNNNNNN.bin" / "state_NNNNNNNN.bin" exactly as checkpoint_paths forms them, followed
 * by `suffix`; returns 'm', 's' or 0, with the step in *step. */
static int parse_checkpoint_name(const char *name, const char *suffix, long *step) {
    int kind = strncmp(name, "model_", 6) == 0 ? 'm' : strncmp(name, "state_", 6) == 0 ? 's' : 0;
    if (!kind) return 0;
    int nd = parse_digits(name + 6, 8, step);
    if (!nd) return 0;
    if (nd > 8 && name[6] == '0') return 0; /* %08ld pads to 8 digits, never more */
    const char *rest = name + 6 + nd;
    if (strncmp(rest, ".bin", 4) != 0 || strcmp(rest + 4, suffix) != 0) return 0;
    return kind;
}

typedef struct {
    long step;
    int model, state;
} StepFiles;

static int cmp_step(const void *a, const void *b) {
    long x = ((const StepFiles *)a)->step, y = ((const StepFiles *)b)->step;
    return x < y ? -1 : x > y;
}

/* Every step with a checkpoint file in dir, ascending, in a malloc'ed array (*out); returns the
 * count: 0 when there is none or dir does not exist, -1 when dir cannot be read. */
static int list_steps(const char *dir, StepFiles **out) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    int n = 0, cap = 0;
    StepFiles *v = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long step;
        int kind = parse_checkpoint_name(e->d_name, "", &step);
        if (!kind) continue;
        int i = 0;
        while (i < n && v[i].step != step) i++;
        if (i == n) {
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                StepFiles *nv = (StepFiles *)realloc(v, cap * sizeof *v);
                if (!nv) break;
                v = nv;
            }
            v[n].step = step;
            v[n].model = v[n].state = 0;
            n++;
        }
        if (kind == 'm') v[i].model = 1;
        else v[i].state = 1;
    }
    closedir(d);
    if (n) qsort(v, n, sizeof *v, cmp_step);
    *out = v;
    return n;
}

long checkpoint_latest(const char *dir) {
    StepFiles *v;
    int n = list_steps(dir, &v);
    long best = -1;
    for (int i = 0; i < n; i++)
        if (v[i].model && v[i].state) best = v[i].step;
    free(v);
    return best;
}

long checkpoint_highest(const char *dir) {
    StepFiles *v;
    int n = list_steps(dir, &v);
    long best = n > 0 ? v[n - 1].step : -1;
    free(v);
    return best;
}

/* After writing step `written`: of the complete pairs below it keep the newest, remove the
 * rest. Pairs at or above `written` are never touched, so the file just written survives. */
static void prune_old(const char *dir, long written) {
    StepFiles *v;
    int n = list_steps(dir, &v);
    int kept = 0;
    for (int i = n - 1; i >= 0; i--) {
        if (v[i].step >= written || !v[i].model || !v[i].state) continue;
        if (!kept) { kept = 1; continue; }
        char model[4096], state[4096];
        checkpoint_paths(dir, v[i].step, model, state, sizeof model);
        remove(state);
        remove(model);
    }
    free(v);
}

/* ---- the state file --------------------------------------------------------------------- */

static int save_state(const char *path, size_t n, const float *m, const float *v,
                      const TrainProgress *p, char *err, size_t errlen) {
    char tmp[4200];
    atomic_temp_path(path, tmp, sizeof tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        set_err(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    uint64_t h[STATE_HEADER_WORDS] = {STATE_MAGIC,    STATE_VERSION, p->step,        n,
                                      p->loader_epoch, p->loader_step, p->seed,      p->windows_per_step,
                                      p->seq_len,     p->shuffled,   p->total_steps, p->data_tokens,
                                      p->loss_scale_mode, 0,         p->loss_scale_clean, p->loss_scale_skipped};
    uint32_t scale_bits;
    memcpy(&scale_bits, &p->loss_scale, sizeof scale_bits);
    h[13] = scale_bits;
    Checksum64 s;
    checksum64_init(&s);
    checksum64_update(&s, h, sizeof h);
    checksum64_update(&s, m, n * sizeof(float));
    checksum64_update(&s, v, n * sizeof(float));
    h[STATE_CHECKSUM_WORD] = checksum64_final(&s);
    if (write_all(f, h, sizeof h) || write_all(f, m, n * sizeof(float)) ||
        write_all(f, v, n * sizeof(float))) {
        set_err(err, errlen, "could not write %s: %s", tmp, strerror(errno));
        fclose(f);
        remove(tmp);
        return -1;
    }
    return finish_atomic_write(f, tmp, path, err, errlen);
}

/* The step in a path's file name when it is state_NNNNNNNN.bin, else -1. */
static long step_of_state_name(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    long step;
    return parse_checkpoint_name(base, "", &step) == 's' ? step : -1;
}

/* Reads and checks a state file; m and v may be NULL (verify only). */
static int read_state(const char *path, size_t n, float *m, float *v, TrainProgress *p,
                      char *err, size_t errlen) {
    FILE *f = fopen_regular(path, "training state", err, errlen);
    if (!f) return -1;
    uint64_t h[STATE_HEADER_WORDS];
    long name_step = step_of_state_name(path);
    struct stat st;
    int rc = -1;
    if (fread(h, sizeof h, 1, f) != 1) {
        set_err(err, errlen, "training state %s is truncated (no complete header)", path);
    } else if (h[0] != STATE_MAGIC) {
        set_err(err, errlen, "training state %s has a wrong magic (not a state file, or damaged)", path);
    } else if (h[1] < 1 || h[1] > STATE_VERSION) {
        set_err(err, errlen, "training state %s has version %llu; versions 1 to %d are read", path,
                (unsigned long long)h[1], STATE_VERSION);
    } else if (h[2] > STATE_MAX_STEP) {
        set_err(err, errlen, "training state %s claims step %llu (damaged header)", path,
                (unsigned long long)h[2]);
    } else if (name_step >= 0 && h[2] != (uint64_t)name_step) {
        set_err(err, errlen, "training state %s holds step %llu, not the step %ld of its name "
                "(damaged header)", path, (unsigned long long)h[2], name_step);
    } else if (h[4] > STATE_MAX_EPOCH || h[5] > STATE_MAX_LOADER_STEP || h[7] > STATE_MAX_WINDOWS) {
        set_err(err, errlen, "training state %s has loader fields out of range (epoch %llu, step "
                "%llu, windows %llu: damaged header)", path, (unsigned long long)h[4],
                (unsigned long long)h[5], (unsigned long long)h[7]);
    } else if (h[3] != n) {
        set_err(err, errlen, "training state %s is for %llu parameters, the model has %zu", path,
                (unsigned long long)h[3], n);
    } else if (fstat(fileno(f), &st) != 0 ||
               (uint64_t)st.st_size != sizeof h + 2 * (uint64_t)n * sizeof(float)) {
        set_err(err, errlen, "training state %s is %lld bytes, %llu expected (truncated or "
                "damaged)", path, (long long)st.st_size,
                (unsigned long long)(sizeof h + 2 * (uint64_t)n * sizeof(float)));
    } else {
        int reserved_ok = 1;
        for (int i = h[1] >= 3 ? STATE_FIRST_RESERVED : h[1] == 2 ? STATE_FIRST_RESERVED_V2 : 8; i < STATE_HEADER_WORDS; i++)
            if (h[i] != 0 && !(i == STATE_CHECKSUM_WORD && h[1] >= 2)) reserved_ok = 0;
        float scale = 0.0f;
        uint32_t scale_bits = (uint32_t)h[13];
        memcpy(&scale, &scale_bits, sizeof scale);
        int scaler_ok = h[12] == 0 ? (h[13] == 0 && h[14] == 0 && h[15] == 0)
                                   : (h[12] <= 3 && h[13] >> 32 == 0 && isfinite(scale) && scale > 0 &&
                                      h[14] <= STATE_MAX_STEP && h[15] <= h[2]);
        uint64_t want = h[STATE_CHECKSUM_WORD];
        Checksum64 s;
        checksum64_init(&s);
        h[STATE_CHECKSUM_WORD] = 0;
        checksum64_update(&s, h, sizeof h);
        int check = h[1] >= 2;
        if (!reserved_ok) {
            set_err(err, errlen, "training state %s: reserved header words are not 0 (damaged "
                    "header)", path);
        } else if (!scaler_ok) {
            set_err(err, errlen, "training state %s: the loss scaler's words are out of range (mode %llu, "
                    "scale %g, clean %llu, skipped %llu of %llu steps: damaged header)", path,
                    (unsigned long long)h[12], scale, (unsigned long long)h[14], (unsigned long long)h[15],
                    (unsigned long long)h[2]);
        } else if (!check && !m) {
            rc = 0; /* version 1: nothing more to verify without reading into buffers */
        } else if (read_hashed(f, m, n * sizeof(float), &s) != 0 ||
                   read_hashed(f, v, n * sizeof(float), &s) != 0) {
            set_err(err, errlen, "training state %s: read failed (%s)", path,
                    ferror(f) ? strerror(errno) : "file ended early");
        } else if (check && checksum64_final(&s) != want) {
            set_err(err, errlen, "%s: checksum mismatch (file damaged)", path);
        } else {
            rc = 0;
        }
        if (rc == 0 && p) {
            p->step = h[2];
            p->loader_epoch = h[4];
            p->loader_step = h[5];
            p->seed = h[6];
            p->windows_per_step = h[7];
            p->seq_len = h[8];
            p->shuffled = h[9];
            p->total_steps = h[10];
            p->data_tokens = h[11];
            p->loss_scale_mode = h[12];
            p->loss_scale = scale;
            p->loss_scale_clean = h[14];
            p->loss_scale_skipped = h[15];
        }
    }
    fclose(f);
    return rc;
}

int checkpoint_load_state(const char *path, size_t n, float *m, float *v, TrainProgress *p,
                          char *err, size_t errlen) {
    return read_state(path, n, m, v, p, err, errlen);
}

int checkpoint_save(const char *dir, const GPT2Config *c, const float *params,
                    const float *adam_m, const float *adam_v, const TrainProgress *p,
                    char *err, size_t errlen) {
    char model[4096], state[4096];
    checkpoint_paths(dir, (long)p->step, model, state, sizeof model);
    if (model_file_save(model, c, params, err, errlen) != 0) return -1;
    if (save_state(state, gpt2_num_params(c), adam_m, adam_v, p, err, errlen) != 0) return -1;
    prune_old(dir, (long)p->step);
    return 0;
}

/* ---- resuming --------------------------------------------------------------------------- */

/* Appends "; " (when not first) and printf text to buf, keeping it one line. */
static void append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t len, const char *fmt, ...) {
    if (!buf || !len) return;
    size_t used = strlen(buf);
    if (used + 1 >= len) return;
    if (used) {
        snprintf(buf + used, len - used, "; ");
        used = strlen(buf);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

/* Checks one complete pair: model file (header and checksum), then the state against it. */
static int pair_intact(const char *model, const char *state, char *why, size_t whylen) {
    GPT2Config c;
    if (model_file_verify(model, &c, NULL, why, whylen) != 0) return -1;
    return read_state(state, gpt2_num_params(&c), NULL, NULL, NULL, why, whylen);
}

int checkpoint_find_resume(const char *dir, long *step, char *model_path, char *state_path,
                           size_t pathlen, char *warn, size_t warnlen, char *err, size_t errlen) {
    if (warn && warnlen) warn[0] = 0;
    StepFiles *v;
    int n = list_steps(dir, &v);
    if (n < 0) {
        set_err(err, errlen, "cannot read checkpoint directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (n == 0) {
        free(v);
        return 1;
    }
    char skipped[2048] = "";
    for (int i = n - 1; i >= 0; i--) {
        char model[4096], state[4096], why[1024];
        checkpoint_paths(dir, v[i].step, model, state, sizeof model);
        if (!v[i].model || !v[i].state) {
            append(skipped, sizeof skipped, "checkpoint %ld is incomplete (%s missing)", v[i].step,
                   v[i].model ? state : model);
            continue;
        }
        if (pair_intact(model, state, why, sizeof why) != 0) {
            append(skipped, sizeof skipped, "checkpoint %ld is damaged (%s)", v[i].step, why);
            continue;
        }
        *step = v[i].step;
        snprintf(model_path, pathlen, "%s", model);
        snprintf(state_path, pathlen, "%s", state);
        if (skipped[0] && warn && warnlen)
            snprintf(warn, warnlen, "%s; resuming from the older checkpoint %ld", skipped, v[i].step);
        free(v);
        return 0;
    }
    set_err(err, errlen, "no intact checkpoint in %s: %s", dir, skipped);
    free(v);
    return -1;
}

/* ---- temporaries ------------------------------------------------------------------------ */

/* 1 when name is one of our temporaries that may be removed now. */
static int removable_temporary(const char *name) {
    long step, pid;
    if (name[0] == '.') {
        if (strncmp(name, ".write_test.", 12) == 0) {
            int nd = parse_digits(name + 12, 1, &pid);
            if (!nd || name[12 + nd]) return 0;
        } else {
            const char *tmp = strstr(name, ".bin.tmp.");
            if (!tmp || strstr(tmp + 1, ".bin.tmp.")) return 0;
            char base[256];
            size_t len = (size_t)(tmp - (name + 1)) + 4; /* "model_NNNNNNNN.bin" */
            if (len >= sizeof base) return 0;
            memcpy(base, name + 1, len);
            base[len] = 0;
            if (!parse_checkpoint_name(base, "", &step)) return 0;
            const char *p = tmp + 9;
            int nd = parse_digits(p, 1, &pid);
            if (!nd || p[nd]) return 0;
        }
        /* a temporary of another live process (a second run in the same folder) stays */
        if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) return 0;
        return 1;
    }
    return parse_checkpoint_name(name, ".tmp", &step) != 0; /* older versions' names */
}

int checkpoint_clean_temporaries(const char *dir, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        set_err(err, errlen, "cannot read checkpoint directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!removable_temporary(e->d_name)) continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (unlink(path) == 0) removed++;
    }
    closedir(d);
    return removed;
}

