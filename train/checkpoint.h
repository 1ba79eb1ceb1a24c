/* train/checkpoint.h: checkpoints -- the model in llm.c's format plus a training-state file.
 *
 * In DIR, step N writes model_NNNNNNNN.bin (llm.c model file with our checksum in header words
 * 16..19, see model/model_file.h) and state_NNNNNNNN.bin:
 *   a header of 32 uint64 -- [0] magic 0x67707432737461 ("gpt2sta"), [1] version 3, [2] step,
 *   [3] parameter count, [4] loader epoch, [5] loader step within the epoch, [6] seed,
 *   [7] windows per loader step (batch x ranks; 0 in older files: same as now), [8] sequence
 *   length, [9] 1 when the windows were shuffled, [10] the run's planned --steps, [11] tokens of
 *   the training range (words 8..11 are 0 in older files: unknown), the loss scaler
 *   (train/loss_scale.h): [12] its mode + 1 (1 off, 2 fixed, 3 dynamic; 0: not recorded),
 *   [13] its scale (the bits of the fp32 value), [14] its clean-step count, [15] steps skipped so
 *   far, [16..30] 0, [31] checksum64 of the header (with [31] taken as 0) followed by the
 *   payload -- then AdamW's first and second moments (fp32, parameter count each).
 *   Version 2 is the same with words 12..15 reserved (0: no loss scaler recorded), version 1
 *   also without the checksum ([31] is 0); both are still read.
 * Each file is written to DIR/.NAME.tmp.PID, synced and renamed, the model first, so the newest
 * complete pair is normally a good checkpoint; after a save only checkpoints of lower steps than
 * the one written are pruned, keeping the newest of them, so two pairs remain: the older one is
 * what checkpoint_find_resume falls back to when the newer one turns out damaged.
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
    /* what --resume must match or report (0 = unknown, in files of older versions) */
    uint64_t seq_len;        /* T of the windows */
    uint64_t shuffled;       /* 1: random window order, 2: --sequential */
    uint64_t total_steps;    /* --steps of the run that wrote it (the learning-rate schedule) */
    uint64_t data_tokens;    /* tokens of its training range */
    /* the loss scaler (train/loss_scale.h): loss_scale_mode 0 = not recorded (older files), else
     * its LossScaleMode + 1; then the scale for the next step, its clean-step count, and the
     * steps skipped so far (AdamW's t is step + 1 - skipped) */
    uint64_t loss_scale_mode;
    float loss_scale;
    uint64_t loss_scale_clean, loss_scale_skipped;
} TrainProgress;

void checkpoint_paths(const char *dir, long step, char *model_path, char *state_path, size_t n);
/* Creates DIR if needed and checks a file can be written there. 0 or -1 with a message. */
int checkpoint_dir_ready(const char *dir, char *err, size_t errlen);
/* Writes the pair for p->step, then removes checkpoints of lower steps except the newest of
 * them (never the pair just written, nor any of a higher step). 0 or -1 with a message. */
int checkpoint_save(const char *dir, const GPT2Config *c, const float *params,
                    const float *adam_m, const float *adam_v, const TrainProgress *p,
                    char *err, size_t errlen);
/* Step of the newest complete pair in DIR (files present; not verified), or -1 when none. */
long checkpoint_latest(const char *dir);
/* Highest step of any checkpoint file (model_ or state_, paired or not) in DIR, or -1. A fresh
 * run (no --resume) should refuse a DIR where this is >= 0. */
long checkpoint_highest(const char *dir);
/* The checkpoint to resume from: the newest pair in DIR that is intact -- both files regular,
 * headers valid, sizes right, checksums matching, the state's step equal to the file names'
 * and its parameter count equal to the model file's. Newer pairs that are damaged or
 * incomplete are skipped; `warn` gets one line naming each and what is wrong with it, and the
 * step resumed from ("" when nothing was skipped). Reads both files of each candidate once
 * (call it before creating the model; model_file_read_config then gives the shape).
 * Returns 0 with *step, model_path and state_path (pathlen bytes each) filled; 1 when DIR
 * holds no checkpoint file at all (nothing to resume); -1 with one line in err when it holds
 * checkpoints but none is intact, or cannot be read. */
int checkpoint_find_resume(const char *dir, long *step, char *model_path, char *state_path,
                           size_t pathlen, char *warn, size_t warnlen, char *err, size_t errlen);
/* Reads a state file; params count must match, the header must be sane (step below 2^31 and
 * equal to the step in the file's name when it is named state_NNNNNNNN.bin, loader fields in
 * range, reserved words 0), the size exact and, in version 2, the checksum right.
 * A non-regular file (FIFO, device, directory) is refused without blocking. 0 or -1 with a
 * message naming the file. adam_m and adam_v may be NULL to read (and verify) the header only. */
int checkpoint_load_state(const char *state_path, size_t num_params, float *adam_m, float *adam_v,
                          TrainProgress *p, char *err, size_t errlen);
/* Removes what an interrupted write (kill -9, power loss) of this program left in DIR: files
 * named exactly .model_NNNNNNNN.bin.tmp.PID / .state_NNNNNNNN.bin.tmp.PID (N 8 or more
 * digits, PID digits) whose PID is this process or no live process, the older versions'
 * model_NNNNNNNN.bin.tmp / state_NNNNNNNN.bin.tmp, and checkpoint_dir_ready's
 * .write_test.PID. Only regular files; nothing else is touched. Returns how many were removed,
 * or -1 with a message when DIR exists but cannot be read (a missing DIR gives 0). */
int checkpoint_clean_temporaries(const char *dir, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
