/* train/bench.c: the bench mode's sweep. Each cell is a short real training run through the
 * Backend vtable (the same one the trainer uses):
 *
 *   check the kernel supports the shape -> pick the batch (fixed, tokens per step, or the largest
 *   that create() accepts) -> create -> parameters -> W warm-up steps -> S timed steps -> measure
 *   -> destroy
 *
 * A cell that does not fit or is not supported is recorded with its reason; it never ends the
 * sweep. create() of the CUDA backend sizes everything before allocating and fails cleanly with
 * the bytes needed, which is what makes the `max` batch search safe.
 */
#include "train/bench.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/atomic_file.h"
#include "data/dataset.h"
#include "model/backend.h"
#include "model/cuda_extras.h"
#include "model/gpt2.h"
#include "train/bench_plan.h"
#include "train/bench_report.h"
#include "train/dist.h"
#include "train/trainer.h"
#include "train/util.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

typedef struct {
    const Options *opt;
    const Backend *be;
    AttnPlace place;
    const CudaExtras *x;    /* NULL on the CPU */
    TrainData data;         /* trains on data.train[train_begin, train_end) */
    BenchContext ctx;
    double start;           /* when the sweep began */
} BenchEnv;

static int bench_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

/* ---- setup ---------------------------------------------------------------------------- */

/* The trainer's backend (--device) and data (--data, enwik8 or the embedded corpus; a file
 * without a separate validation file trains on its first 90%). */
static int open_backend_and_data(const Options *o, BenchEnv *env) {
    char err[512];
    if (trainer_choose_backend(o, &env->be, err, sizeof err) != 0) return bench_error("%s", err);
    env->place = env->be == &cpu_backend ? ATTN_CPU : ATTN_CUDA;
    env->x = env->place == ATTN_CUDA ? cuda_extras() : NULL;
    env->ctx.backend = env->be->name;
    if (trainer_data_open(o, &env->data, err, sizeof err) != 0) return bench_error("%s", err);
    snprintf(env->ctx.data, sizeof env->ctx.data, "%s (%zu tokens)", env->data.train.name,
             env->data.train_end - env->data.train_begin);
    return 0;
}

static void cpu_model_name(char *buf, size_t n) {
    snprintf(buf, n, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            colon++;
            while (*colon == ' ' || *colon == '\t') colon++;
            colon[strcspn(colon, "\n")] = '\0';
            snprintf(buf, n, "%s", colon);
            break;
        }
    }
    fclose(f);
}

static void describe_device(const BenchEnv *env, BenchContext *ctx) {
    if (env->x) {
        char name[128] = "GPU";
        size_t free_b = 0, total_b = 0;
        env->x->device_name(name, sizeof name);
        if (env->x->mem_info(&free_b, &total_b) == 0)
            snprintf(ctx->device, sizeof ctx->device, "%s, %.1f GiB", name, total_b / GIB);
        else
            snprintf(ctx->device, sizeof ctx->device, "%s", name);
        return;
    }
    char name[128];
    cpu_model_name(name, sizeof name);
    int threads = env->opt->threads > 0 ? env->opt->threads : omp_get_max_threads();
    snprintf(ctx->device, sizeof ctx->device, "%s, %d threads", name, threads);
}

/* mkdir -p, then a write test, so an unwritable --bench-out fails before the sweep. */
static int prepare_out_dir(const char *dir) {
    char path[4096];
    if (strlen(dir) + 16 >= sizeof path) return bench_error("--bench-out: the path is too long");
    snprintf(path, sizeof path, "%s", dir);
    for (char *s = path + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return bench_error("--bench-out: cannot create %s: %s", path, strerror(errno));
        *s = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return bench_error("--bench-out: cannot create %s: %s", path, strerror(errno));
    /* a probe written and removed: nothing of this sweep is left behind if it stops early */
    snprintf(path, sizeof path, "%s/results.md", dir);
    AtomicFile probe;
    if (!atomic_open(&probe, path)) return bench_error("--bench-out: cannot write in %s: %s", dir, strerror(errno));
    atomic_abandon(&probe);
    return 0;
}

/* ---- parameters ------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* GPT-2's initialisation (model/gpt2.h: std 0.02, residual projections 0.02/sqrt(2L), biases 0,
 * LayerNorm weights 1, padded vocabulary rows 0) drawn from a uniform distribution of the same
 * std by a counter-based hash, in parallel: gpt2_init_params' normals take ~30 s for gpt2-large
 * on one core, which a sweep of short runs cannot afford. Throughput does not depend on it. */
static void fast_init_params(const GPT2Config *c, float *params, uint64_t seed) {
    size_t size[GPT2_NUM_PARAM_TENSORS], off[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_sizes(c, size);
    gpt2_param_offsets(c, off);
    const float residual_std = 0.02f / sqrtf(2.0f * c->num_layers);
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        float *p = params + off[t];
        long long n = (long long)size[t];
        if (t == P_LN1W || t == P_LN2W || t == P_LNFW) {
            for (long long i = 0; i < n; i++) p[i] = 1.0f;
            continue;
        }
        if (!gpt2_param_decays(t)) {
            memset(p, 0, size[t] * sizeof(float));
            continue;
        }
        float half_width = ((t == P_ATTPROJW || t == P_FCPROJW) ? residual_std : 0.02f) * sqrtf(3.0f);
        uint64_t stream = mix64(seed * 1000003ULL + (uint64_t)t);
#pragma omp parallel for schedule(static)
        for (long long i = 0; i < n; i++) {
            uint64_t h = mix64(stream ^ (uint64_t)i);
            p[i] = half_width * ((float)(h >> 40) * (2.0f / 16777216.0f) - 1.0f);
        }
    }
    size_t used = (size_t)c->vocab_size * c->channels;
    memset(params + off[P_WTE] + used, 0, (size[P_WTE] - used) * sizeof(float));
}

/* The model a cell trains: the plan's, without a position table for an alibi mask. */
static GPT2Config cell_config(const BenchPlan *p, const BenchCell *c) {
    GPT2Config g = p->models[c->model].config;
    g.pos = c->mask.alibi ? GPT2_POS_ALIBI : GPT2_POS_LEARNED;
    return g;
}

/* One model's parameters, initialised once and shared by its cells (max_seq_len is the
 * longest T of the grid, so every cell of a model and position kind has the same shape). */
typedef struct {
    int key;                /* whose parameters these are: model * 2 + alibi; -1 none */
    float *params;
} ParamCache;

static const float *cached_params(ParamCache *pc, const BenchPlan *p, const BenchCell *c, uint64_t seed) {
    int key = c->model * 2 + (c->mask.alibi != 0);
    if (pc->key == key) return pc->params;
    free(pc->params);
    pc->key = -1;
    GPT2Config g = cell_config(p, c);
    size_t n = gpt2_num_params(&g);
    pc->params = (float *)malloc(n * sizeof(float));
    if (!pc->params) return NULL;
    fast_init_params(&g, pc->params, seed);
    pc->key = key;
    return pc->params;
}

/* ---- batches ------------------------------------------------------------------------------ */

/* Rows of a batch come one window at a time from a loader of batch 1, so any batch size works
 * with any data large enough for one window. */
typedef struct {
    DataLoader loader;
    int *inputs, *targets;
    int B, T;
} Feeder;

/* The loader first (it fails when the data holds no window of T+1 tokens), the batch arrays
 * once the batch size is known. */
static int feeder_open(Feeder *fd, const BenchEnv *env, int T, char *err, size_t errlen) {
    memset(fd, 0, sizeof *fd);
    fd->T = T;
    return loader_init(&fd->loader, &env->data.train, env->data.train_begin, env->data.train_end, 1, T, 0, 1, 0,
                       env->opt->seed, err, errlen);
}

static int feeder_alloc_batch(Feeder *fd, int B, char *err, size_t errlen) {
    int T = fd->T;
    fd->B = B;
    fd->inputs = (int *)malloc((size_t)B * T * sizeof(int));
    fd->targets = (int *)malloc((size_t)B * T * sizeof(int));
    if (!fd->inputs || !fd->targets) {
        snprintf(err, errlen, "out of host memory for a %d x %d batch", B, T);
        return -1;
    }
    return 0;
}

/* A BatchSource (train/trainer.h): one micro-batch, a window a row. */
static void feeder_fill(void *ctx, int *inputs, int *targets) {
    Feeder *fd = (Feeder *)ctx;
    for (int b = 0; b < fd->B; b++)
        loader_next(&fd->loader, inputs + (size_t)b * fd->T, targets + (size_t)b * fd->T);
}

static void feeder_close(Feeder *fd) {
    if (fd->loader.ds) loader_free(&fd->loader);
    free(fd->inputs);
    free(fd->targets);
}

/* --tokens-per-step: batch = tokens / T sequences, split into the fewest equal micro-batches of
 * at most `cap` (the rest of the step is gradient accumulation). */
static void split_tokens_per_step(int tokens, int T, int cap, int *B, int *accum) {
    int total = tokens / T > 0 ? tokens / T : 1;
    int a = 1;
    while (total / a > cap || total % a != 0) a++;
    *B = total / a;
    *accum = a;
}

/* ---- creating a model ---------------------------------------------------------------------- */

/* On the CPU: refuses (with the bytes needed) what would not fit in the host's available
 * memory, as the CUDA backend's create() does for the GPU. Returns 1 when it fits. */
static int fits_on_host(const BenchEnv *env, const ModelOptions *mo, char *err, size_t errlen) {
    if (env->place != ATTN_CPU) return 1;
    double avail = trainer_host_memory_available(), need = trainer_cpu_bytes_needed(mo);
    if (avail <= 0 || need <= 0.9 * avail) return 1;
    snprintf(err, errlen, "needs %.2f GiB of host memory (estimated), %.2f GiB available", need / GIB, avail / GIB);
    return 0;
}

/* The CPU's `max`: the largest B <= cap whose estimate fits (0 when none). */
static int largest_batch_on_host(const BenchEnv *env, ModelOptions *mo, int cap, char *err, size_t errlen) {
    int lo = 0, hi = cap + 1; /* lo fits (0: none), hi does not */
    while (hi - lo > 1) {
        mo->B = lo + (hi - lo) / 2;
        if (fits_on_host(env, mo, err, errlen)) lo = mo->B;
        else hi = mo->B;
    }
    if (lo == 0) {
        mo->B = 1;
        fits_on_host(env, mo, err, errlen);
    }
    return lo;
}

static int error_means_out_of_memory(const char *err) {
    return strstr(err, "GiB") || strstr(err, "out of memory") || strstr(err, "cudaMalloc");
}

/* The CUDA backend's create() says "... the largest batch that fits is B=N" when it refuses. */
static int hinted_batch(const char *err) {
    static const char key[] = "largest batch that fits is B=";
    const char *s = strstr(err, key);
    return s ? atoi(s + sizeof key - 1) : -1;
}

/* The largest B <= cap that create() accepts (each refusal costs nothing: create() checks the
 * sizes before allocating). Returns the model with mo->B set, or NULL with create()'s message
 * for the smallest batch tried. */
static Model *create_largest(const Backend *be, ModelOptions *mo, int cap, char *err, size_t errlen) {
    mo->B = cap;
    Model *m = be->create(mo, err, errlen);
    if (m) return m;
    int lo = 0, hi = cap; /* lo fits (0: none known), hi does not */
    int hint = hinted_batch(err);
    if (hint == 0) return NULL;
    if (hint > 0 && hint < cap) {
        mo->B = hint;
        if ((m = be->create(mo, err, errlen)) != NULL) return m;
        hi = hint;
    }
    char smallest_err[512];
    snprintf(smallest_err, sizeof smallest_err, "%s", err);
    while (hi - lo > 1) {
        mo->B = lo + (hi - lo) / 2;
        m = be->create(mo, err, errlen);
        if (m) {
            be->destroy(m);
            lo = mo->B;
        } else {
            hi = mo->B;
            snprintf(smallest_err, sizeof smallest_err, "%s", err);
        }
    }
    if (lo == 0) {
        snprintf(err, errlen, "%s", smallest_err);
        return NULL;
    }
    mo->B = lo;
    return be->create(mo, err, errlen);
}

static void model_options_for(const BenchEnv *env, const BenchPlan *p, const BenchCell *c,
                              const float *bias, ModelOptions *mo) {
    model_options_defaults(mo);
    trainer_model_options(env->opt, mo);
    mo->config = cell_config(p, c);
    mo->B = c->batch;
    mo->T = c->seq_len;
    mo->attn = c->kernel;
    mo->mask = c->mask.kind;
    mo->dense_bias = bias;
    mo->attn_window = c->mask.window;
    if (c->mask.docs) mo->doc_sep = p->doc_sep;
    mo->doc_positions = c->mask.docs && p->doc_positions;
    mo->precision = c->precision;
    mo->no_linear_bias = !p->linear_biases;
}

/* Why the cell cannot run on this backend, or NULL. */
static const char *unsupported_reason(const BenchEnv *env, const BenchPlan *p, const BenchCell *c,
                                      const float *bias, char *buf, size_t n) {
    if (env->place == ATTN_CPU && c->precision != PRECISION_FP32)
        return "the CPU backend trains in fp32 only";
    if (c->mask.docs && p->doc_sep.len == 0)
        return "docs: token data needs --doc-sep TOKEN (e.g. GPT-2's 50256)";
    ModelOptions mo;
    BenchCell one = *c;
    one.batch = 1;
    model_options_for(env, p, &one, bias, &mo);
    return trainer_check_attention(c->kernel, env->place, &mo, buf, n);
}

/* ---- measuring ------------------------------------------------------------------------- */

static double resident_bytes(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* Waits for the work queued on the device: the gradient norm is returned to the host, and it
 * is queued behind everything before it. */
static void fence(const Backend *be, Model *m) { (void)be->grad_norm(m); }

/* One optimizer step as the trainer takes it (trainer_step, with the cell's loss scaler), at a
 * constant rate. */
static float train_step(const BenchEnv *env, const BenchPlan *p, Model *m, Feeder *fd, int accum, int t,
                        LossScaler *ls) {
    const Options *o = env->opt;
    StepShape shape = {fd->B, fd->T, accum, 1, o->grad_clip};
    AdamWStep s;
    s.lr = p->lr;
    s.beta1 = o->beta1;
    s.beta2 = o->beta2;
    s.eps = o->eps;
    s.weight_decay = o->weight_decay;
    s.t = t - (int)ls->skipped;
    float norm;
    return trainer_step(env->be, m, &shape, feeder_fill, fd, fd->inputs, fd->targets, &s, ls, &norm);
}

/* Warm-up, then the timed steps. Returns 0, or -1 (the cell FAILED) when the loss is not finite. */
static int time_steps(const BenchEnv *env, const BenchPlan *p, Model *m, Feeder *fd, BenchCell *c) {
    double t0 = 0.0;
    char err[256];
    LossScaler ls; /* --loss-scale as a training run in this precision would use it */
    if (trainer_loss_scaler(env->opt, c->precision, 0, &ls, err, sizeof err) != 0) {
        snprintf(c->reason, sizeof c->reason, "%s", err);
        return -1;
    }
    for (int step = 0; step < p->warmup + p->steps; step++) {
        if (step == p->warmup) {
            fence(env->be, m);
            t0 = now_seconds();
        }
        float loss = train_step(env, p, m, fd, c->grad_accum, step + 1, &ls);
        if (!isfinite(loss)) {
            snprintf(c->reason, sizeof c->reason, "the loss became %f at step %d", loss, step + 1);
            return -1;
        }
        if (step == 0) c->loss_first = loss;
        c->loss_last = loss;
    }
    fence(env->be, m);
    double seconds = now_seconds() - t0;
    c->ms_per_step = seconds * 1000.0 / p->steps;
    c->tok_per_s = (double)c->batch * c->grad_accum * c->seq_len * p->steps / seconds;
    return 0;
}

static void measure_memory(const BenchEnv *env, Model *m, double rss_before, BenchCell *c) {
    c->peak_bytes = (double)env->be->memory_in_use(m);
    c->mem_source = "device";
    if (c->peak_bytes <= 0) {
        double grown = resident_bytes() - rss_before;
        c->peak_bytes = grown > 0 ? grown : 0;
        c->mem_source = "host-rss";
    }
    size_t free_b = 0, total_b = 0;
    if (env->x && env->x->mem_info(&free_b, &total_b) == 0) c->device_used_bytes = (double)(total_b - free_b);
}

/* Model FLOPs (causal attention at half cost for the causal and the dense causal mask) over
 * the device's peak; NAN when the peak is not known (the CPU, unless --peak-tflops). */
static double model_flops_utilisation(const BenchEnv *env, const BenchPlan *p, const BenchCell *c) {
    double peak = env->x ? env->x->peak_tflops(c->precision, !env->opt->no_tf32, env->opt->peak_tflops) : env->opt->peak_tflops;
    if (peak <= 0) return NAN;
    GPT2Config g = cell_config(p, c);
    double flops = gpt2_flops_per_token(&g, c->seq_len, c->mask.kind != ATTN_MASK_NONE);
    return flops * c->tok_per_s / (peak * 1e12);
}

/* ---- one cell ------------------------------------------------------------------------------- */

static void record(BenchCell *c, CellStatus s, const char *reason) {
    c->status = s;
    snprintf(c->reason, sizeof c->reason, "%s", reason);
}

/* What the sweep learns as it goes. */
typedef struct {
    ParamCache params;
    int bias_checked[BENCH_MAX_MODELS];
    int biases_trained;     /* as BenchContext.biases_trained */
} Sweep;

/* Without linear biases, the backend must have held them at zero through the steps: checked
 * once per model (a copy of the parameters to the host). */
static void check_biases_stayed_zero(const BenchEnv *env, const BenchPlan *p, Model *m, int model, Sweep *sw) {
    if (p->linear_biases || sw->bias_checked[model]) return;
    const GPT2Config *c = &p->models[model].config;
    size_t n = gpt2_num_params(c), size[GPT2_NUM_PARAM_TENSORS], off[GPT2_NUM_PARAM_TENSORS];
    float *params = (float *)malloc(n * sizeof(float));
    if (!params) return;
    env->be->get_params(m, params);
    gpt2_param_sizes(c, size);
    gpt2_param_offsets(c, off);
    int nonzero = 0;
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS && !nonzero; t++)
        for (size_t i = 0; gpt2_param_is_linear_bias(t) && i < size[t] && !nonzero; i++)
            nonzero = params[off[t] + i] != 0.0f;
    free(params);
    sw->bias_checked[model] = 1;
    if (nonzero) sw->biases_trained = 1;
    else if (sw->biases_trained < 0) sw->biases_trained = 0;
}

/* Creates the model with the cell's batch policy; NULL after recording why not. */
static Model *create_for_cell(const BenchEnv *env, const BenchPlan *p, BenchCell *c, const float *bias) {
    char err[512] = "";
    ModelOptions mo;
    c->grad_accum = 1;
    if (p->batch_policy == BATCH_FIXED) {
        c->batch = p->batch;
        c->grad_accum = p->grad_accum;
    } else if (p->batch_policy == BATCH_TOKENS) {
        split_tokens_per_step(p->tokens_per_step, c->seq_len, p->max_batch, &c->batch, &c->grad_accum);
    }
    model_options_for(env, p, c, bias, &mo);
    Model *m = NULL;
    if (env->place == ATTN_CPU && p->batch_policy == BATCH_MAX) {
        int B = largest_batch_on_host(env, &mo, p->max_batch, err, sizeof err);
        mo.B = B;
        if (B > 0) m = env->be->create(&mo, err, sizeof err);
    } else if (p->batch_policy == BATCH_MAX) {
        m = create_largest(env->be, &mo, p->max_batch, err, sizeof err);
    } else if (fits_on_host(env, &mo, err, sizeof err)) {
        m = env->be->create(&mo, err, sizeof err);
    }
    if (!m) {
        if (p->batch_policy == BATCH_MAX) c->batch = 0;
        record(c, error_means_out_of_memory(err) ? CELL_OOM : CELL_FAILED, err);
        return NULL;
    }
    c->batch = mo.B;
    return m;
}

static void run_cell(const BenchEnv *env, const BenchPlan *p, Sweep *sw, BenchCell *c) {
    char buf[512], err[512];
    c->mfu = NAN;
    float *bias = NULL;
    if (c->mask.kind == ATTN_MASK_DENSE && !(bias = trainer_dense_causal_bias(c->seq_len))) {
        record(c, CELL_FAILED, "out of host memory for the dense mask");
        return;
    }
    const char *why = unsupported_reason(env, p, c, bias, buf, sizeof buf);
    if (why) {
        record(c, CELL_UNSUPPORTED, why);
        free(bias);
        return;
    }
    const float *params = cached_params(&sw->params, p, c, env->opt->seed);
    if (!params) {
        record(c, CELL_FAILED, "out of host memory for the parameters");
        free(bias);
        return;
    }
    Feeder fd;
    if (feeder_open(&fd, env, c->seq_len, err, sizeof err) != 0) {
        record(c, CELL_FAILED, err);
        feeder_close(&fd);
        free(bias);
        return;
    }
    double rss_before = resident_bytes();
    Model *m = create_for_cell(env, p, c, bias);
    if (m) {
        if (feeder_alloc_batch(&fd, c->batch, err, sizeof err) != 0) {
            record(c, CELL_FAILED, err);
        } else {
            env->be->set_params(m, params);
            if (time_steps(env, p, m, &fd, c) == 0) {
                c->status = CELL_OK;
                measure_memory(env, m, rss_before, c);
                c->mfu = model_flops_utilisation(env, p, c);
                check_biases_stayed_zero(env, p, m, c->model, sw);
            } else {
                c->status = CELL_FAILED;
            }
        }
        env->be->destroy(m);
    }
    feeder_close(&fd);
    free(bias);
}

static void print_cell(const BenchPlan *p, const BenchCell *c, int i, int n, double elapsed) {
    printf("[%d/%d %.0fs] %s T=%d %s %s %s: ", i + 1, n, elapsed, p->models[c->model].name, c->seq_len,
           precision_name(c->precision), c->mask.name, attn_kernel_name(c->kernel));
    if (c->status != CELL_OK) {
        printf("%s: %s\n", bench_status_name(c->status), c->reason);
    } else {
        printf("B=%d", c->batch);
        if (c->grad_accum > 1) printf("x%d", c->grad_accum);
        printf(" | %.0f tok/s | %.1f ms/step | %.2f GiB", c->tok_per_s, c->ms_per_step, c->peak_bytes / GIB);
        if (!isnan(c->mfu)) printf(" | MFU %.1f%%", 100.0 * c->mfu);
        printf(" | loss %.3f -> %.3f\n", c->loss_first, c->loss_last);
    }
    fflush(stdout);
}

/* Runs every cell; returns BenchContext.biases_trained. */
static int run_sweep(const BenchEnv *env, const BenchPlan *p, BenchCell *cells) {
    static Sweep sw;
    memset(&sw, 0, sizeof sw);
    sw.params.key = -1;
    sw.biases_trained = -1;
    int n = bench_num_cells(p);
    for (int i = 0; i < n; i++) {
        double spent = now_seconds() - env->start;
        if (p->max_seconds > 0 && spent > p->max_seconds) {
            char why[128];
            snprintf(why, sizeof why, "the time budget (--bench-max-seconds %g) was spent", p->max_seconds);
            cells[i].mfu = NAN;
            record(&cells[i], CELL_SKIPPED, why);
        } else {
            run_cell(env, p, &sw, &cells[i]);
        }
        print_cell(p, &cells[i], i, n, now_seconds() - env->start);
    }
    free(sw.params.params);
    sw.params.params = NULL;
    return sw.biases_trained;
}

/* ---- results ------------------------------------------------------------------------------ */

static int write_results(const char *dir, const BenchPlan *p, const BenchContext *ctx, const BenchCell *cells) {
    char path[4096];
    AtomicFile out;
    snprintf(path, sizeof path, "%s/results.md", dir);
    FILE *f = atomic_open(&out, path);
    if (!f) {
        fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    bench_write_markdown(f, p, ctx, cells);
    if (atomic_commit(&out) != 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/results.csv", dir);
    if (bench_write_csv(path, p, cells) != 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/results.json", dir);
    if (bench_write_json(path, p, ctx, cells) != 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    bench_draw_charts(dir, p, ctx, cells);
    return 0;
}

/* With docs masks: the separator, and how many documents the training data holds. */
static void describe_documents(const BenchEnv *env, const BenchPlan *p, BenchContext *ctx) {
    int any = 0;
    for (int i = 0; i < p->num_masks; i++) any |= p->masks[i].docs;
    if (!any || p->doc_sep.len == 0) return;
    const Dataset *ds = &env->data.train;
    size_t begin = env->data.train_begin, end = env->data.train_end, count = 0;
    const DocSep *sep = &p->doc_sep;
    for (size_t i = begin; i + (size_t)sep->len <= end; i++) {
        if (dataset_token(ds, i) != sep->tokens[0]) continue;
        int k = 1;
        while (k < sep->len && dataset_token(ds, i + k) == sep->tokens[k]) k++;
        count += k == sep->len;
    }
    char what[4 * DOC_SEP_MAX + 16];
    doc_sep_describe(sep, what, sizeof what);
    int n = snprintf(ctx->documents, sizeof ctx->documents, "a document starts at each %s%s: %zu in the training "
                     "data", what, p->doc_positions ? " (positions restart at each)" : "", count);
    if (count > 0)
        snprintf(ctx->documents + n, sizeof ctx->documents - n, ", %.0f tokens each on average",
                 (double)(end - begin) / (double)count);
}

static void print_plan(const BenchEnv *env, const BenchPlan *p) {
    printf("bench %s%s on %s: %d cells (%d kernels x %d models x %d context lengths x %d precisions x "
           "%d masks), %d warm-up + %d timed steps each\n", p->grid, p->quick ? " (quick)" : "",
           env->ctx.device, bench_num_cells(p), p->num_kernels, p->num_models, p->num_seq_lens,
           p->num_precisions, p->num_masks, p->warmup, p->steps);
    if (env->ctx.documents[0]) printf("docs masks: %s\n", env->ctx.documents);
    fflush(stdout);
}

int bench_main(const Options *o) {
    static BenchEnv env;
    static BenchPlan plan;
    char err[512];
    memset(&env, 0, sizeof env);
    env.opt = o;
    env.start = now_seconds();
    DistInfo dist;
    if (dist_from_env(&dist, err, sizeof err) != 0) return bench_error("%s", err);
    if (dist.world > 1) return bench_error("--bench runs in one process (got a world of %d)", dist.world);
    LossScaler check; /* a bad --loss-scale stops the sweep before it starts */
    if (trainer_loss_scaler(o, PRECISION_FP16, 0, &check, err, sizeof err) != 0) return bench_error("%s", err);
    if (open_backend_and_data(o, &env) != 0) return 2;
    BenchTarget target;
    target.on_gpu = env.place == ATTN_CUDA;
    target.default_precision = env.x ? env.x->default_precision() : PRECISION_FP32;
    target.data_vocab = env.data.train.max_token + 1;
    target.byte_data = env.data.train.kind == DATASET_BYTES;
    int rc = 2;
    if (bench_plan_build(o, &target, &plan, err, sizeof err) != 0) {
        bench_error("%s", err);
        goto done;
    }
    if (prepare_out_dir(o->bench_out) != 0) goto done;
    describe_device(&env, &env.ctx);
    describe_documents(&env, &plan, &env.ctx);
    print_plan(&env, &plan);

    BenchCell *cells = (BenchCell *)calloc((size_t)bench_num_cells(&plan), sizeof(BenchCell));
    if (!cells) {
        bench_error("out of host memory for %d cells", bench_num_cells(&plan));
        goto done;
    }
    bench_cells_init(&plan, cells);
    env.ctx.biases_trained = run_sweep(&env, &plan, cells);
    env.ctx.seconds = now_seconds() - env.start;
    rc = write_results(o->bench_out, &plan, &env.ctx, cells);
    if (rc == 0) {
        printf("\n");
        bench_write_markdown(stdout, &plan, &env.ctx, cells);
        printf("\nwritten to %s: results.md, results.csv, results.json, plot.gp and the charts\n", o->bench_out);
    }
    free(cells);
done:
    trainer_data_close(&env.data);
    return rc;
}
