/* train/loss_scale.c: the loss scaler's decisions (train/loss_scale.h). */
#include "train/loss_scale.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/error_text.h"

void loss_scale_init(LossScaler *ls, LossScaleMode mode, float scale, int window) {
    memset(ls, 0, sizeof *ls);
    ls->mode = mode;
    ls->scale = mode == LOSS_SCALE_OFF ? 1.0f : scale;
    ls->window = window > 0 ? window : LOSS_SCALE_DEFAULT_WINDOW;
    ls->last_scale = ls->scale;
}

int loss_scale_parse(const char *spec, LossScaleMode *mode, float *scale, char *err, size_t errlen) {
    if (strcmp(spec, "dynamic") == 0) {
        *mode = LOSS_SCALE_DYNAMIC;
        *scale = LOSS_SCALE_DEFAULT_INIT;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(spec, &end);
    if (end == spec || *end != '\0' || errno == ERANGE || !(v > 0) || v > 3.0e38) {
        set_err(err, errlen, "--loss-scale expects dynamic or a positive number below 3e38, got '%s'", spec);
        return -1;
    }
    *mode = LOSS_SCALE_FIXED;
    *scale = (float)v;
    return 0;
}

int loss_scale_after_backward(LossScaler *ls, float scaled_norm) {
    ls->last_skipped = 0;
    ls->last_scale = ls->scale;
    if (ls->mode == LOSS_SCALE_OFF) return 0;
    if (isfinite(scaled_norm)) {
        if (ls->mode == LOSS_SCALE_DYNAMIC && ++ls->clean >= ls->window) {
            ls->clean = 0;
            if (ls->scale * 2.0f <= LOSS_SCALE_MAX) ls->scale *= 2.0f;
        }
        return 0;
    }
    ls->skipped++;
    ls->last_skipped = 1;
    if (ls->mode == LOSS_SCALE_DYNAMIC) {
        ls->clean = 0;
        if (ls->scale * 0.5f >= LOSS_SCALE_MIN) ls->scale *= 0.5f;
        else ls->scale = LOSS_SCALE_MIN;
    }
    return 1;
}

int loss_scale_exhausted(const LossScaler *ls) {
    return ls->mode == LOSS_SCALE_DYNAMIC && ls->last_skipped && ls->last_scale <= LOSS_SCALE_MIN;
}

const char *loss_scale_mode_name(LossScaleMode m) {
    return m == LOSS_SCALE_FIXED ? "fixed" : m == LOSS_SCALE_DYNAMIC ? "dynamic" : "off";
}
