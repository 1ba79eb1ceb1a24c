/* model/profile_cuda.cu: per-part step times from CUDA events (see profile_cuda.h). */
#include "model/profile_cuda.h"

#include <stdio.h>
#include <string.h>

static const char *const PF_NAMES[PF_NUM] = {
    "start", "encoder", "layernorm fwd", "qkv fwd", "attention fwd", "attproj fwd", "fc+gelu fwd",
    "fcproj fwd", "lm head fwd", "classifier+loss", "lm head bwd", "layernorm bwd", "fcproj bwd",
    "fc bwd", "attproj bwd", "attention bwd", "qkv bwd", "recompute", "encoder bwd", "adamw", "grad norm"};

void prof_init(Profile *p, int on, int graphs, cudaStream_t stream) {
    memset(p, 0, sizeof *p);
    p->on = on != 0;
    p->record = p->on && !graphs;
    p->stream = stream;
}

void prof_mark(Profile *p, int cat) {
    if (!p->record || p->n >= PF_MAX_MARKS) return;
    if (!p->ev[p->n]) cudaEventCreate(&p->ev[p->n]);
    cudaEventRecord(p->ev[p->n], p->stream);
    p->cat[p->n++] = cat;
}

void prof_collect(Profile *p) {
    for (int k = 1; k < p->n; k++) {
        float ms = 0.0f;
        if (p->cat[k] != PF_START && cudaEventElapsedTime(&ms, p->ev[k - 1], p->ev[k]) == cudaSuccess)
            (p->in_forward ? p->fwd_ms : p->ms)[p->cat[k]] += ms;
    }
    /* keep the last event as the start of the next interval */
    if (p->n > 1) {
        cudaEvent_t last = p->ev[p->n - 1];
        p->ev[p->n - 1] = p->ev[0];
        p->ev[0] = last;
        p->cat[0] = PF_START;
        p->n = 1;
    }
}

void prof_forward_begin(Profile *p) {
    /* what is still open belongs before this forward: the last update (counted) or a forward
     * without targets (held, then dropped below); waiting for it costs only --profile runs */
    if (p->record && p->n > 1) {
        cudaEventSynchronize(p->ev[p->n - 1]);
        prof_collect(p);
    }
    memset(p->fwd_ms, 0, sizeof p->fwd_ms);
    p->in_forward = 1;
}

void prof_forward_trained(Profile *p) {
    for (int c = 0; c < PF_NUM; c++) p->ms[c] += p->fwd_ms[c];
    memset(p->fwd_ms, 0, sizeof p->fwd_ms);
    p->in_forward = 0;
}

void prof_step(Profile *p) {
    if (p->steps == PROF_WARMUP_STEPS) memset(p->ms, 0, sizeof p->ms); /* drop warm-up */
    prof_mark(p, PF_START);
    p->steps++;
}

static void prof_report(const Profile *p) {
    int steps = p->steps - PROF_WARMUP_STEPS - 1;
    if (!p->on || steps <= 0) return;
    double total = 0.0;
    for (int c = 1; c < PF_NUM; c++) total += p->ms[c];
    fprintf(stderr, "cuda profile: %d steps after %d of warm-up, %.2f ms/step in the parts below\n", steps,
            PROF_WARMUP_STEPS + 1, total / steps);
    for (int c = 1; c < PF_NUM; c++)
        if (p->ms[c] > 0)
            fprintf(stderr, "  %-16s %8.3f ms/step  %5.1f%%\n", PF_NAMES[c], p->ms[c] / steps, 100 * p->ms[c] / total);
}

void prof_finish(Profile *p) {
    prof_collect(p);
    prof_report(p);
    for (int k = 0; k < PF_MAX_MARKS; k++)
        if (p->ev[k]) cudaEventDestroy(p->ev[k]);
    memset(p->ev, 0, sizeof p->ev);
}
