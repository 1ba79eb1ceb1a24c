/* model/profile_cuda.h: where the time of a training step goes, by part (--profile).
 *
 * The CUDA backend records an event on its stream between the parts of a step (eager runs only:
 * a step replayed as a CUDA graph records none); the intervals are read back at the next host
 * synchronisation and summed per part, the first PROF_WARMUP_STEPS + 1 steps left out. The
 * table goes to stderr when the model is destroyed. A forward's parts are held apart until a
 * backward follows it: forward-only passes (validation, evaluation, sampling) are left out, so the
 * parts add up to the training step. The marks cost about 1 ms a step on GPT-2 124M. C++ only
 * (used by model/gpt2_cuda.cu).
 */
#ifndef PROFILE_CUDA_H
#define PROFILE_CUDA_H

#include <cuda_runtime.h>

/* The parts of a step; a mark of part X ends an interval that is counted as X. PF_START ends
 * nothing: it opens the next interval. */
enum {
    PF_START = 0, PF_ENCODER, PF_LN_FWD, PF_QKV_FWD, PF_ATTN_FWD, PF_ATTPROJ_FWD, PF_FC_FWD, PF_FCPROJ_FWD,
    PF_LMHEAD_FWD, PF_CLASSIFIER, PF_LMHEAD_BWD, PF_LN_BWD, PF_FCPROJ_BWD, PF_FC_BWD, PF_ATTPROJ_BWD,
    PF_ATTN_BWD, PF_QKV_BWD, PF_RECOMPUTE, PF_ENCODER_BWD, PF_ADAMW, PF_NORM, PF_NUM
};
enum { PF_MAX_MARKS = 2048, PROF_WARMUP_STEPS = 3 };

typedef struct {
    int on;         /* --profile: the table is printed at the end */
    int record;     /* events are recorded (on, and the steps are not CUDA graphs) */
    int n, steps;
    cudaStream_t stream;
    cudaEvent_t ev[PF_MAX_MARKS];
    int cat[PF_MAX_MARKS];
    double ms[PF_NUM];
    int in_forward;          /* collections go to fwd_ms (a forward that no backward has followed yet) */
    double fwd_ms[PF_NUM];
} Profile;

/* Off unless `on`; `graphs`: the steps are captured as CUDA graphs, so no marks are recorded. */
void prof_init(Profile *p, int on, int graphs, cudaStream_t stream);
/* An event at this point of the stream, ending an interval of part `cat`. */
void prof_mark(Profile *p, int cat);
/* Whether a mark was recorded since the last collection (an interval is open). */
static inline int prof_open(const Profile *p) { return p->on && p->n; }
/* After a host synchronisation (every recorded event has completed): adds up the intervals. */
void prof_collect(Profile *p);
/* The start of a forward: a previous forward that no backward followed is dropped (it was
 * forward-only); this one's parts are held until prof_forward_trained. */
void prof_forward_begin(Profile *p);
/* The start of a backward: the forward before it was a training step's, its parts count. */
void prof_forward_trained(Profile *p);
/* The start of an optimizer update: counts a step, forgetting the warm-up's times. */
void prof_step(Profile *p);
/* Collects, prints the table (when on and past the warm-up) and frees the events. */
void prof_finish(Profile *p);

#endif
