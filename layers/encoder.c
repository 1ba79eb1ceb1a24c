/* layers/encoder.c: token + position embedding, out[b,t,:] = wte[inp[b,t],:] + wpe[t,:], or the
 * token embedding alone when wpe is NULL (ALiBi: no position table). The _at variants take each
 * token's position from pos[b*T + t] (positions restarting at each packed document). */
#include "layers/layers.h"

void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe,
                     int B, int T, int C) {
    encoder_forward_at(out, inp, NULL, wte, wpe, B, T, C);
}

void encoder_forward_at(float *out, const int *inp, const int *pos_of, const float *wte, const float *wpe,
                        int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        int t = pos_of ? pos_of[bt] : bt % T;
        const float *tok = wte + (size_t)inp[bt] * C;
        float *o = out + (size_t)bt * C;
        if (!wpe) {
            for (int c = 0; c < C; c++) o[c] = tok[c];
            continue;
        }
        const float *pos = wpe + (size_t)t * C;
        for (int c = 0; c < C; c++) o[c] = tok[c] + pos[c];
    }
}

/* dwte[inp[b,t]] += dout[b,t]; dwpe[t] += dout[b,t] (none when dwpe is NULL). Several rows may
 * share a token, so the dwte scatter runs serially per row; dwpe is parallel over positions
 * (each t owns its row). */
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp,
                      int B, int T, int C) {
    encoder_backward_at(dwte, dwpe, dout, inp, NULL, B, T, C);
}

void encoder_backward_at(float *dwte, float *dwpe, const float *dout, const int *inp, const int *pos_of,
                         int B, int T, int C) {
    if (dwpe && pos_of) { /* positions repeat within a row: a serial scatter, as for dwte */
        for (int bt = 0; bt < B * T; bt++) {
            float *dp = dwpe + (size_t)pos_of[bt] * C;
            const float *d = dout + (size_t)bt * C;
            for (int c = 0; c < C; c++) dp[c] += d[c];
        }
        dwpe = NULL;
    }
#pragma omp parallel for schedule(static)
    for (int t = 0; t < (dwpe ? T : 0); t++) {
        float *dp = dwpe + (size_t)t * C;
        for (int b = 0; b < B; b++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) dp[c] += d[c];
        }
    }
    for (int bt = 0; bt < B * T; bt++) {
        float *dt = dwte + (size_t)inp[bt] * C;
        const float *d = dout + (size_t)bt * C;
        for (int c = 0; c < C; c++) dt[c] += d[c];
    }
}
