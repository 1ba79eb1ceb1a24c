/* train_gpt2.cu: the trainer's entry point. Read the options; then a bench sweep
 * (train/bench.h), the launcher of N GPU workers (--gpus N), or one training run:
 *
 *   for each step: load a batch, forward, backward (x grad-accum; the last backward sums the
 *   gradients over the GPUs; the loss's gradient times the loss scale, train/loss_scale.h), the
 *   global norm (a non-finite one skips the step), clip, update, log
 *
 * on the CPU reference backend or the CUDA backend (model/backend.h), with the attention kernel
 * chosen at run time (attention/attention.h). The decisions around the loop (data, model shape,
 * kernel, checkpoints, the log) are made once, in the trainer library (train/trainer.h). With
 * several GPUs each process trains on its own shard of every batch, and rank 0 alone prints,
 * logs, samples and writes checkpoints; the losses printed are the means over the ranks.
 * This file holds host code only, in the common subset of C and C++: gcc builds it as C
 * (CPU-only build) and nvcc as C++.
 */
#include <math.h>
#include <signal.h>

#include "train/bench.h"
#include "train/options.h"
#include "train/trainer.h"
#include "train/util.h"

static int every(int n, int step) { return n > 0 && step % n == 0; }

int main(int argc, char **argv) {
    static Trainer tr;
    options_defaults(&tr.opt);
    int rc = options_parse(&tr.opt, argc, argv);
    if (rc != 0) return rc == 1 ? 0 : 2;               /* --help / --version, or a bad option */
    if (tr.opt.bench) return bench_main(&tr.opt);      /* --bench GRID: a sweep instead of a run */
    trainer_launch_workers_if_asked(&tr, argv);        /* --gpus N: start N workers and wait */
    trainer_setup(&tr, argv);
    trainer_catch_signals();
    const Options *o = &tr.opt;
    Timing timing = {0.0, 0};

    int step = tr.start_step, stop = 0;
    for (; step < o->steps; step++) {
        if (every(o->val_every, step)) trainer_report_validation(&tr, step);
        if (step > 0 && every(o->sample_every, step)) trainer_print_sample(&tr, step);

        double t0 = now_seconds();
        float norm, lr;
        float loss = trainer_train_step(&tr, step, &norm, &lr);
        double ms = (now_seconds() - t0) * 1000.0;
        if (!isfinite(loss)) trainer_fail("the loss became %f at step %d; lower --lr?", loss, step + 1);
        if (loss_scale_exhausted(&tr.scaler))
            trainer_fail("the gradients are not finite at step %d even at the smallest loss scale %g: the model "
                         "diverged (lower --lr?)", step + 1, tr.scaler.last_scale);
        trainer_log_step(&tr, step, loss, norm, lr, ms);
        trainer_record_step_time(&timing, step - tr.start_step, ms);

        if ((stop = trainer_stop_requested(&tr)) != 0) {   /* SIGINT / SIGTERM: stop cleanly */
            step++;
            break;
        }
        if (o->checkpoint_dir && every(o->checkpoint_every, step + 1) && step + 1 < o->steps)
            trainer_save_checkpoint(&tr, step + 1);
        fflush(stdout);
    }
    if (stop) {
        if (o->checkpoint_dir) trainer_save_checkpoint(&tr, step);
        printf("stopped by signal %d after step %d%s\n", stop, step,
               o->checkpoint_dir ? "; --resume continues from there" : "");
        trainer_teardown(&tr);
        return 128 + stop;
    }
    trainer_report_validation(&tr, o->steps);
    if (o->checkpoint_dir && o->steps > tr.start_step) trainer_save_checkpoint(&tr, o->steps);
    trainer_save_model(&tr);
    trainer_print_sample(&tr, o->steps);
    trainer_print_summary(&tr, &timing);
    trainer_teardown(&tr);
    return 0;
}
