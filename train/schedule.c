/* train/schedule.c: learning-rate schedule and sampling (see schedule.h). */
#include "train/schedule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float lr_at_step(int step, int total_steps, int warmup, float lr, float min_frac) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    float min_lr = lr * min_frac;
    int span = total_steps - 1 - warmup;
    if (span <= 0) return lr;
    double progress = (double)(step - warmup) / span;
    if (progress > 1.0) progress = 1.0;
    return min_lr + (lr - min_lr) * 0.5f * (float)(1.0 + cos(M_PI * progress));
}

static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int desc_cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int sample_token(const float *logits, int V, float temperature, int top_k, uint64_t *rng,
                 float *scratch) {
    float maxv = logits[0];
    for (int i = 1; i < V; i++) if (logits[i] > maxv) maxv = logits[i];
    /* the k-th largest logit is the cut-off below which tokens are never drawn */
    float cutoff = -INFINITY;
    if (top_k > 0 && top_k < V) {
        memcpy(scratch, logits, (size_t)V * sizeof(float));
        qsort(scratch, (size_t)V, sizeof(float), desc_cmp);
        cutoff = scratch[top_k - 1];
    }
    double total = 0.0;
    for (int i = 0; i < V; i++) {
        scratch[i] = logits[i] >= cutoff ? expf((logits[i] - maxv) / temperature) : 0.0f;
        total += scratch[i];
    }
    double u = (next_u64(rng) >> 11) * (1.0 / 9007199254740992.0) * total;
    double acc = 0.0;
    int last = 0;
    for (int i = 0; i < V; i++) {
        if (scratch[i] == 0.0f) continue;
        acc += scratch[i];
        last = i;
        if (u < acc) return i;
    }
    return last;
}

int generate(const Backend *be, Model *m, int *tokens, int n_prompt, int len, int window, int V,
             float temperature, int top_k, uint64_t seed,
             void (*emit)(int token, void *ctx), void *ctx) {
    float *logits = (float *)malloc((size_t)V * sizeof(float));
    float *scratch = (float *)malloc((size_t)V * sizeof(float));
    uint64_t rng = seed;
    int n = n_prompt;
    for (int i = 0; i < len; i++) {
        int start = n > window ? n - window : 0;
        int t = n - start;
        be->forward(m, tokens + start, NULL, 1, t);
        be->logits_at(m, 0, t - 1, logits);
        int next = sample_token(logits, V, temperature, top_k, &rng, scratch);
        tokens[n++] = next;
        emit(next, ctx);
    }
    free(logits);
    free(scratch);
    return n - n_prompt;
}
