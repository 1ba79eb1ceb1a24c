/* train/loss_scale.h: loss scaling -- what multiplies the loss's gradient, and whether a step's
 * gradients may be used. Shared by both backends (the decision is host logic on one number).
 *
 * fp16 activation gradients underflow to zero below 2^-24 and overflow to inf above 65504, so
 * fp16 training multiplies the loss's gradient by a scale S before backward (every gradient then
 * carries S), and the optimizer unscales by 1/S (folded into AdamW's grad_scale, after the global
 * norm is unscaled and clipped). Three modes:
 *   off      S = 1, never skips: fp32 and bf16 by default (the step is exactly as without this
 *            module: a non-finite norm reaches AdamW as before)
 *   fixed    S constant; a step whose scaled gradient norm is not finite is skipped
 *   dynamic  PyTorch GradScaler's policy: start at `init` (default 2^16); a step whose scaled
 *            norm is not finite (inf/NaN anywhere in the gradients; on the GPU, which sums the
 *            squares in fp32, also a scaled norm above about 1.8e19) is skipped and S halves; after `window` (default 2000) consecutive
 *            clean steps S doubles. S stays within [2^-24, 2^127].
 * A skipped step leaves the weights and the AdamW state untouched; it still consumes its batches
 * and its place in the learning-rate schedule (the loop's step advances, as PyTorch's scheduler
 * does), while AdamW's bias-correction count t counts the updates actually applied:
 * t = step + 1 - skipped (PyTorch's Adam does not count a skipped step either).
 * Powers of two scale exactly: with a fixed power-of-two S that never overflows, training is
 * bitwise the same as without scaling.
 */
#ifndef LOSS_SCALE_H
#define LOSS_SCALE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LOSS_SCALE_OFF = 0, LOSS_SCALE_FIXED, LOSS_SCALE_DYNAMIC } LossScaleMode;

#define LOSS_SCALE_DEFAULT_INIT 65536.0f /* 2^16, GradScaler's init_scale */
#define LOSS_SCALE_DEFAULT_WINDOW 2000   /* GradScaler's growth_interval */
#define LOSS_SCALE_MIN 5.9604645e-08f    /* 2^-24 */
#define LOSS_SCALE_MAX 1.7014118e+38f    /* 2^127: doubling never reaches inf */

typedef struct {
    LossScaleMode mode;
    float scale;        /* S: multiplies the loss's gradient in the next backward */
    int window;         /* dynamic: clean steps before S doubles */
    int clean;          /* dynamic: consecutive clean steps since S last changed or overflowed */
    uint64_t skipped;   /* steps skipped so far in the run (all modes but off) */
    int last_skipped;   /* the last loss_scale_after_backward skipped its step */
    float last_scale;   /* the S that step's backward ran with */
} LossScaler;

/* mode off (S = 1); fixed (S = scale); dynamic (S = scale, doubling after `window` clean steps). */
void loss_scale_init(LossScaler *ls, LossScaleMode mode, float scale, int window);
/* Parses --loss-scale: "dynamic" or a positive finite number (a fixed scale). 0, or -1 with a
 * one-line message in err. */
int loss_scale_parse(const char *spec, LossScaleMode *mode, float *scale, char *err, size_t errlen);
/* After backward, with the global L2 norm of the scaled gradients: returns 1 when the step must be
 * skipped (not finite; never in mode off), 0 when AdamW may run; updates S, the clean-step count
 * and the skip count. */
int loss_scale_after_backward(LossScaler *ls, float scaled_norm);
/* Dynamic: S reached its floor and the last step still overflowed: no scale makes the gradients
 * finite (a diverged model, not an overflow). */
int loss_scale_exhausted(const LossScaler *ls);
const char *loss_scale_mode_name(LossScaleMode m); /* "off", "fixed", "dynamic" */

#ifdef __cplusplus
}
#endif
#endif
