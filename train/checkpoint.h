/* train/checkpoint.h: checkpoints -- the model in llm.c's format plus a training-state file.
 *
 * In DIR, step N writes model_NNNNNNNN.bin (llm.c model file) and state_NNNNNNNN.bin:
 *   a header of 32 uint64 -- [0] magic 0x67707432737461 ("gpt2sta"), [1] version 1, [2] step,
 *   [3] parameter count, [4] loader epoch, [5] loader step within the epoch, [6] seed,
 *   [7] windows per loader step (batch x ranks; 0 in older files: same as now) -- then
 *   AdamW's first and second moments (fp32, parameter count each).
 * Each file is written to a temporary name and renamed, the model first, so the newest
 * complete pair is always a good checkpoint; older pairs than the previous one are removed.
 */
#ifndef CHECKPOINT_H
#define CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include "model/gpt2.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t step;           /* optimizer steps completed */
    uint64_t loader_epoch, loader_step;
    uint64_t seed;
    uint64_t windows_per_step; /* B x world of the run that wrote it, so that a run on another
                                * number of GPUs finds the same place in the data; 0 = unknown */
} TrainProgress;

void checkpoint_paths(const char *dir, long step, char *model_path, char *state_path, size_t n);
/* Creates DIR if needed and checks a file can be written there. 0 or -1 with a message. */
int checkpoint_dir_ready(const char *dir, char *err, size_t errlen);
int checkpoint_save(const char *dir, const GPT2Config *c, const float *params,
                    const float *adam_m, const float *adam_v, const TrainProgress *p,
                    char *err, size_t errlen);
/* Step of the newest complete checkpoint in DIR, or -1 when there is none. */
long checkpoint_latest(const char *dir);
/* The progress in a state file's header alone (no moments read). 0 or -1 with a message. */
int checkpoint_read_progress(const char *state_path, TrainProgress *p, char *err, size_t errlen);
/* Reads a state file; params count must match. 0 or -1 with a message. */
int checkpoint_load_state(const char *state_path, size_t num_params, float *adam_m, float *adam_v,
                          TrainProgress *p, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
