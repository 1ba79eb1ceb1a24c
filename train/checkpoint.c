/* train/checkpoint.c: writing and finding checkpoints (see checkpoint.h). */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/model_file.h"

#define STATE_MAGIC 0x67707432737461ULL
#define STATE_VERSION 1

void checkpoint_paths(const char *dir, long step, char *model_path, char *state_path, size_t n) {
    if (model_path) snprintf(model_path, n, "%s/model_%08ld.bin", dir, step);
    if (state_path) snprintf(state_path, n, "%s/state_%08ld.bin", dir, step);
}

int checkpoint_dir_ready(const char *dir, char *err, size_t errlen) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (mkdir(dir, 0755) != 0) {
            snprintf(err, errlen, "cannot create checkpoint directory %s: %s", dir, strerror(errno));
            return -1;
        }
    } else if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "checkpoint directory %s exists and is not a directory", dir);
        return -1;
    }
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/.write_test.%d", dir, (int)getpid());
    FILE *f = fopen(probe, "wb");
    if (!f) {
        snprintf(err, errlen, "checkpoint directory %s is not writable: %s", dir, strerror(errno));
        return -1;
    }
    fclose(f);
    remove(probe);
    return 0;
}

static int save_state(const char *path, size_t n, const float *m, const float *v,
                      const TrainProgress *p, char *err, size_t errlen) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    uint64_t h[32] = {STATE_MAGIC, STATE_VERSION, p->step, n, p->loader_epoch, p->loader_step, p->seed,
                     p->windows_per_step};
    if (write_all(f, h, sizeof h) || write_all(f, m, n * sizeof(float)) ||
        write_all(f, v, n * sizeof(float))) {
        snprintf(err, errlen, "could not write %s: %s", tmp, strerror(errno));
        fclose(f);
        remove(tmp);
        return -1;
    }
    return finish_atomic_write(f, tmp, path, err, errlen);
}

/* Steps of the checkpoints in dir (complete pairs only), sorted ascending; returns count. */
static int list_steps(const char *dir, long *steps, int max) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        long step;
        char tail[8];
        if (sscanf(e->d_name, "state_%ld.%7s", &step, tail) != 2 || strcmp(tail, "bin") != 0) continue;
        char model[4096];
        struct stat st;
        checkpoint_paths(dir, step, model, NULL, sizeof model);
        if (stat(model, &st) == 0) steps[n++] = step;
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort: a handful of entries */
        for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
            long t = steps[j]; steps[j] = steps[j - 1]; steps[j - 1] = t;
        }
    return n;
}

long checkpoint_latest(const char *dir) {
    long steps[1024];
    int n = list_steps(dir, steps, 1024);
    return n ? steps[n - 1] : -1;
}

/* Keep the newest two checkpoints, so a crash while writing one always leaves another. */
static void prune_old(const char *dir) {
    long steps[1024];
    int n = list_steps(dir, steps, 1024);
    for (int i = 0; i + 2 < n; i++) {
        char model[4096], state[4096];
        checkpoint_paths(dir, steps[i], model, state, sizeof model);
        remove(state);
        remove(model);
    }
}

int checkpoint_save(const char *dir, const GPT2Config *c, const float *params,
                    const float *adam_m, const float *adam_v, const TrainProgress *p,
                    char *err, size_t errlen) {
    char model[4096], state[4096];
    checkpoint_paths(dir, (long)p->step, model, state, sizeof model);
    if (model_file_save(model, c, params, err, errlen) != 0) return -1;
    if (save_state(state, gpt2_num_params(c), adam_m, adam_v, p, err, errlen) != 0) return -1;
    prune_old(dir);
    return 0;
}

int checkpoint_load_state(const char *path, size_t n, float *m, float *v, TrainProgress *p,
                          char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open training state %s: %s", path, strerror(errno));
        return -1;
    }
    uint64_t h[32];
    int rc = -1;
    if (fread(h, sizeof h, 1, f) != 1) {
        snprintf(err, errlen, "training state %s is truncated", path);
    } else if (h[0] != STATE_MAGIC || h[1] != STATE_VERSION) {
        snprintf(err, errlen, "training state %s has a wrong magic or version", path);
    } else if (h[3] != n) {
        snprintf(err, errlen, "training state %s is for %llu parameters, the model has %zu", path,
                 (unsigned long long)h[3], n);
    } else if (fread(m, sizeof(float), n, f) != n || fread(v, sizeof(float), n, f) != n) {
        snprintf(err, errlen, "training state %s is truncated", path);
    } else {
        p->step = h[2];
        p->loader_epoch = h[4];
        p->loader_step = h[5];
        p->seed = h[6];
        p->windows_per_step = h[7];
        rc = 0;
    }
    fclose(f);
    return rc;
}

int checkpoint_read_progress(const char *path, TrainProgress *p, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open training state %s: %s", path, strerror(errno));
        return -1;
    }
    uint64_t h[32];
    int ok = fread(h, sizeof h, 1, f) == 1;
    fclose(f);
    if (!ok || h[0] != STATE_MAGIC || h[1] != STATE_VERSION) {
        snprintf(err, errlen, "training state %s is truncated or has a wrong magic or version", path);
        return -1;
    }
    p->step = h[2];
    p->loader_epoch = h[4];
    p->loader_step = h[5];
    p->seed = h[6];
    p->windows_per_step = h[7];
    return 0;
}
