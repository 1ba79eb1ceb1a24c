/* train/schedule.h: the learning-rate schedule and token sampling. */
#ifndef SCHEDULE_H
#define SCHEDULE_H

#include <stdint.h>
#include "model/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Linear warm-up over `warmup` steps to `lr`, then cosine decay to lr * min_frac at the last
 * step:  lr_t = min + (lr - min) * (1 + cos(pi * progress)) / 2,  progress in [0, 1]. */
float lr_at_step(int step, int total_steps, int warmup, float lr, float min_frac);

/* Draws a token from softmax(logits / temperature) restricted to the top_k likeliest (top_k = 0
 * or >= V: all). `scratch` holds V floats. `rng` is a splitmix64 state, advanced. */
int sample_token(const float *logits, int V, float temperature, int top_k, uint64_t *rng,
                 float *scratch);

/* Continues `tokens` (n_prompt of them, capacity n_prompt + len) by `len` sampled tokens,
 * running the model on the last `window` tokens each time; calls emit(token, ctx) for each
 * new token. Returns the number of tokens generated. */
int generate(const Backend *be, Model *m, int *tokens, int n_prompt, int len, int window, int V,
             float temperature, int top_k, uint64_t seed,
             void (*emit)(int token, void *ctx), void *ctx);

#ifdef __cplusplus
}
#endif
#endif
