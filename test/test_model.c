/* test/test_model.c: the CPU GPT-2 as a whole -- gradients against finite differences,
 * overfitting one batch, every attention kernel giving the same model, the model file and
 * checkpoint formats, the learning-rate schedule and the sampler. */
#include <omp.h>
#include <unistd.h>

#include "model/backend.h"
#include "model/gpt2.h"
#include "model/model_file.h"
#include "test/test.h"
#include "train/checkpoint.h"
#include "train/schedule.h"

static GPT2Config tiny_config(void) {
    GPT2Config c = {.max_seq_len = 8, .vocab_size = 11, .padded_vocab_size = 16,
                    .num_layers = 2, .num_heads = 2, .channels = 8};
    return c;
}

static Model *make_model(const GPT2Config *c, int B, int T, AttnKernel k) {
    ModelOptions o = {0};
    o.config = *c;
    o.B = B;
    o.T = T;
    o.attn = k;
    o.mask = ATTN_MASK_CAUSAL;
    o.precision = PRECISION_FP32;
    char err[256];
    Model *m = cpu_backend.create(&o, err, sizeof err);
    if (!m) fprintf(stderr, "create failed: %s\n", err);
    return m;
}

/* Parameters with a larger spread than GPT-2's 0.02, so every gradient is well above noise. */
static float *random_params(const GPT2Config *c, uint64_t seed) {
    size_t n = gpt2_num_params(c);
    float *p = malloc(n * sizeof(float));
    uint64_t s = seed;
    test_fill_random(p, n, &s, 0.3f);
    size_t off[GPT2_NUM_PARAM_TENSORS], size[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_offsets(c, off);
    gpt2_param_sizes(c, size);
    for (size_t i = 0; i < size[P_LN1W]; i++) p[off[P_LN1W] + i] += 1.0f;
    for (size_t i = 0; i < size[P_LN2W]; i++) p[off[P_LN2W] + i] += 1.0f;
    for (size_t i = 0; i < size[P_LNFW]; i++) p[off[P_LNFW] + i] += 1.0f;
    return p;
}

static void random_tokens(int *x, int n, int V, uint64_t *s) {
    for (int i = 0; i < n; i++) x[i] = (int)(test_rng_next(s) % (uint64_t)V);
}

/* Central differences of the fp32 loss at a few coordinates of every tensor: the largest
 * gradients and some random ones. fp32 loss noise ~1e-6 over 2*eps = 2e-2 gives ~5e-5;
 * truncation eps^2 f'''/6 ~1e-5; so 2e-2 of the tensor's largest gradient + 2e-4 holds a
 * correct gradient and fails a missing or misplaced term, which is O(the gradient). */
static void test_gradients_match_finite_differences(AttnKernel k) {
    GPT2Config c = tiny_config();
    const int B = 2, T = 5;
    Model *m = make_model(&c, B, T, k);
    float *p = random_params(&c, 7);
    size_t n = gpt2_num_params(&c);
    int inputs[10], targets[10];
    uint64_t s = 99;
    random_tokens(inputs, B * T, c.vocab_size, &s);
    random_tokens(targets, B * T, c.vocab_size, &s);
    targets[3] = -1; /* an ignored position */
    cpu_backend.set_params(m, p);
    cpu_backend.zero_grad(m);
    cpu_backend.forward(m, inputs, targets, B, T);
    cpu_backend.backward(m, 1.0f, 1);
    float *g = malloc(n * sizeof(float));
    cpu_backend.get_grads(m, g);

    size_t off[GPT2_NUM_PARAM_TENSORS], size[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_offsets(&c, off);
    gpt2_param_sizes(&c, size);
    const float eps = 1e-2f;
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        size_t used = t == P_WTE ? (size_t)c.vocab_size * c.channels : size[t];
        float gmax = 0.0f;
        size_t argmax = 0;
        for (size_t i = 0; i < used; i++)
            if (fabsf(g[off[t] + i]) > gmax) { gmax = fabsf(g[off[t] + i]); argmax = i; }
        double worst = 0.0;
        for (int probe = 0; probe < 6; probe++) {
            size_t i = off[t] + (probe == 0 ? argmax : test_rng_next(&s) % used);
            float saved = p[i];
            p[i] = saved + eps;
            cpu_backend.set_params(m, p);
            double lp = cpu_backend.forward(m, inputs, targets, B, T);
            p[i] = saved - eps;
            cpu_backend.set_params(m, p);
            double lm = cpu_backend.forward(m, inputs, targets, B, T);
            p[i] = saved;
            double fd = (lp - lm) / (2.0 * eps);
            double e = fabs(fd - g[i]) / (gmax + 1e-2);
            if (e > worst) worst = e;
        }
        CHECK(gmax > 0.0f || t == P_WPE, "%s: tensor %s has an all-zero gradient",
              attn_kernel_name(k), gpt2_param_name(t));
        CHECK(worst < 2e-2, "%s: gradient of %s off by %.3g of its largest entry",
              attn_kernel_name(k), gpt2_param_name(t), worst);
    }
    /* padded vocabulary rows get no gradient */
    int padded_clean = 1;
    for (size_t i = (size_t)c.vocab_size * c.channels; i < size[P_WTE]; i++)
        if (g[off[P_WTE] + i] != 0.0f) padded_clean = 0;
    CHECK(padded_clean, "padded wte rows received gradient");
    free(g);
    free(p);
    cpu_backend.destroy(m);
}

/* Every attention kernel computes the same function: same loss and gradients to fp32 noise. */
static void test_kernels_agree(void) {
    GPT2Config c = tiny_config();
    c.max_seq_len = 64;
    const int B = 2, T = 37;
    float *p = random_params(&c, 3);
    size_t n = gpt2_num_params(&c);
    int inputs[B * T], targets[B * T];
    uint64_t s = 5;
    random_tokens(inputs, B * T, c.vocab_size, &s);
    random_tokens(targets, B * T, c.vocab_size, &s);
    float loss[ATTN_NUM_KERNELS];
    float *g[ATTN_NUM_KERNELS];
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        Model *m = make_model(&c, B, T, (AttnKernel)k);
        cpu_backend.set_params(m, p);
        cpu_backend.zero_grad(m);
        loss[k] = cpu_backend.forward(m, inputs, targets, B, T);
        cpu_backend.backward(m, 1.0f, 1);
        g[k] = malloc(n * sizeof(float));
        cpu_backend.get_grads(m, g[k]);
        cpu_backend.destroy(m);
    }
    for (int k = 1; k < ATTN_NUM_KERNELS; k++) {
        CHECK(fabsf(loss[k] - loss[0]) < 1e-5f * fabsf(loss[0]), "loss %s %.7f vs naive %.7f",
              attn_kernel_name((AttnKernel)k), loss[k], loss[0]);
        double e = test_max_err_scaled(g[k], g[0], n);
        CHECK(e < 1e-5, "gradients of %s differ from naive by %.3g", attn_kernel_name((AttnKernel)k), e);
    }
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) free(g[k]);
    free(p);
}

/* AdamW on one fixed batch must memorise it: the loss goes near zero. */
static void test_overfits_one_batch(void) {
    GPT2Config c = {.max_seq_len = 16, .vocab_size = 32, .padded_vocab_size = 32,
                    .num_layers = 2, .num_heads = 2, .channels = 32};
    const int B = 2, T = 16;
    Model *m = make_model(&c, B, T, ATTN_FLASH);
    size_t n = gpt2_num_params(&c);
    float *p = malloc(n * sizeof(float));
    gpt2_init_params(&c, p, 42);
    cpu_backend.set_params(m, p);
    int inputs[B * T], targets[B * T];
    uint64_t s = 11;
    random_tokens(inputs, B * T, c.vocab_size, &s);
    random_tokens(targets, B * T, c.vocab_size, &s);
    float first = 0, last = 0;
    for (int step = 0; step < 150; step++) {
        cpu_backend.zero_grad(m);
        float loss = cpu_backend.forward(m, inputs, targets, B, T);
        cpu_backend.backward(m, 1.0f, 1);
        AdamWStep a = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                       .weight_decay = 0.0f, .grad_scale = 1.0f, .t = step + 1};
        cpu_backend.update(m, &a);
        if (step == 0) first = loss;
        last = loss;
    }
    CHECK(first > 3.0f, "initial loss %.3f should be near ln(32) = 3.47", first);
    CHECK(last < 0.05f, "loss after 150 steps on one batch is %.4f, expected < 0.05", last);
    free(p);
    cpu_backend.destroy(m);
}

/* Gradient accumulation: two half-scaled backward passes of the same batch equal one. */
static void test_grad_accumulation(void) {
    GPT2Config c = tiny_config();
    const int B = 2, T = 5;
    Model *m = make_model(&c, B, T, ATTN_NAIVE);
    float *p = random_params(&c, 8);
    size_t n = gpt2_num_params(&c);
    int inputs[10], targets[10];
    uint64_t s = 1;
    random_tokens(inputs, 10, c.vocab_size, &s);
    random_tokens(targets, 10, c.vocab_size, &s);
    cpu_backend.set_params(m, p);
    float *g1 = malloc(n * sizeof(float)), *g2 = malloc(n * sizeof(float));
    cpu_backend.zero_grad(m);
    cpu_backend.forward(m, inputs, targets, B, T);
    cpu_backend.backward(m, 1.0f, 1);
    cpu_backend.get_grads(m, g1);
    cpu_backend.zero_grad(m);
    for (int i = 0; i < 2; i++) {
        cpu_backend.forward(m, inputs, targets, B, T);
        cpu_backend.backward(m, 0.5f, i == 1);
    }
    cpu_backend.get_grads(m, g2);
    CHECK(test_max_err_scaled(g2, g1, n) < 1e-6, "accumulated gradient differs");
    free(g1);
    free(g2);
    free(p);
    cpu_backend.destroy(m);
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/test_model_%d_%s", (int)getpid(), name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void test_model_file(void) {
    GPT2Config c = tiny_config();
    size_t n = gpt2_num_params(&c);
    float *p = random_params(&c, 1), *q = malloc(n * sizeof(float));
    char path[256], err[512];
    tmp_path(path, sizeof path, "model.bin");
    CHECK(model_file_save(path, &c, p, err, sizeof err) == 0, "save: %s", err);
    GPT2Config r;
    CHECK(model_file_read_config(path, &r, err, sizeof err) == 0, "read config: %s", err);
    CHECK(memcmp(&r, &c, sizeof c) == 0, "config round trip");
    test_poison(q, n);
    CHECK(model_file_load(path, &c, q, err, sizeof err) == 0, "load: %s", err);
    CHECK(memcmp(p, q, n * sizeof(float)) == 0, "parameters round trip bit for bit");

    /* the header as llm.c writes it */
    int32_t h[256];
    FILE *f = fopen(path, "rb");
    CHECK(fread(h, sizeof h, 1, f) == 1, "header read");
    fclose(f);
    CHECK(h[0] == 20240326 && h[1] == 3 && h[2] == 8 && h[3] == 11 && h[4] == 2 && h[5] == 2 &&
          h[6] == 8 && h[7] == 16, "llm.c header fields");

    /* bad files: each refused with a message naming the file */
    size_t bytes = sizeof h + n * sizeof(float);
    unsigned char *raw = malloc(bytes);
    memcpy(raw, h, sizeof h);
    memcpy(raw + sizeof h, p, n * sizeof(float));
    char bad[256];
    tmp_path(bad, sizeof bad, "bad.bin");
    struct { const char *what; int field; int32_t value; size_t len; } cases[] = {
        {"wrong magic", 0, 12345, bytes}, {"bf16 version", 1, 5, bytes},
        {"unknown version", 1, 9, bytes}, {"heads not dividing channels", 5, 3, bytes},
        {"zero layers", 4, 0, bytes}, {"truncated", -1, 0, bytes - 4},
        {"header only", -1, 0, sizeof h}, {"too long", -1, 0, bytes + 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t hh[256];
        memcpy(hh, h, sizeof h);
        if (cases[i].field >= 0) hh[cases[i].field] = cases[i].value;
        unsigned char *buf = calloc(cases[i].len, 1);
        memcpy(buf, raw, cases[i].len < bytes ? cases[i].len : bytes);
        memcpy(buf, hh, sizeof hh);
        write_bytes(bad, buf, cases[i].len);
        err[0] = 0;
        GPT2Config x;
        CHECK(model_file_read_config(bad, &x, err, sizeof err) != 0 && strstr(err, bad),
              "%s: accepted or message without the path (%s)", cases[i].what, err);
        free(buf);
    }
    CHECK(model_file_read_config("/nonexistent/model.bin", &r, err, sizeof err) != 0, "missing file");
    remove(bad);
    remove(path);
    free(raw);
    free(p);
    free(q);
}

static void test_checkpoints(void) {
    GPT2Config c = tiny_config();
    size_t n = gpt2_num_params(&c);
    float *p = random_params(&c, 2), *mo = random_params(&c, 3), *va = random_params(&c, 4);
    float *m2 = malloc(n * sizeof(float)), *v2 = malloc(n * sizeof(float));
    char dir[256], err[512];
    tmp_path(dir, sizeof dir, "ckpt");
    CHECK(checkpoint_dir_ready(dir, err, sizeof err) == 0, "dir: %s", err);
    CHECK(checkpoint_latest(dir) == -1, "empty dir has no checkpoint");
    for (int step = 10; step <= 40; step += 10) {
        TrainProgress pr = {.step = (uint64_t)step, .loader_epoch = 2, .loader_step = (uint64_t)step + 1, .seed = 9};
        CHECK(checkpoint_save(dir, &c, p, mo, va, &pr, err, sizeof err) == 0, "save: %s", err);
    }
    CHECK(checkpoint_latest(dir) == 40, "latest is the newest");
    char model[512], state[512];
    checkpoint_paths(dir, 10, model, state, sizeof model);
    CHECK(access(model, F_OK) != 0 && access(state, F_OK) != 0, "old checkpoints pruned");
    checkpoint_paths(dir, 30, model, state, sizeof model);
    CHECK(access(model, F_OK) == 0 && access(state, F_OK) == 0, "previous checkpoint kept");
    checkpoint_paths(dir, 40, model, state, sizeof model);
    TrainProgress got;
    CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) == 0, "load: %s", err);
    CHECK(memcmp(m2, mo, n * 4) == 0 && memcmp(v2, va, n * 4) == 0, "moments round trip");
    CHECK(got.step == 40 && got.loader_epoch == 2 && got.loader_step == 41 && got.seed == 9,
          "progress round trip");
    CHECK(checkpoint_load_state(state, n + 1, m2, v2, &got, err, sizeof err) != 0,
          "state for another model refused");
    /* a state file without its model file is not a checkpoint */
    remove(model);
    CHECK(checkpoint_latest(dir) == 30, "incomplete pair ignored");
    char file[256];
    tmp_path(file, sizeof file, "plainfile");
    write_bytes(file, "x", 1);
    CHECK(checkpoint_dir_ready(file, err, sizeof err) != 0, "a file is not a checkpoint dir");
    CHECK(checkpoint_dir_ready("/proc/nope/x", err, sizeof err) != 0, "uncreatable dir refused");
    remove(file);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    free(p); free(mo); free(va); free(m2); free(v2);
}

static void test_schedule_and_sampler(void) {
    CHECK(fabsf(lr_at_step(0, 100, 10, 1.0f, 0.1f) - 0.1f) < 1e-6f, "warm-up starts at lr/warmup");
    CHECK(fabsf(lr_at_step(9, 100, 10, 1.0f, 0.1f) - 1.0f) < 1e-6f, "warm-up reaches lr");
    CHECK(fabsf(lr_at_step(10, 100, 10, 1.0f, 0.1f) - 1.0f) < 1e-6f, "decay starts at lr");
    CHECK(fabsf(lr_at_step(99, 100, 10, 1.0f, 0.1f) - 0.1f) < 1e-6f, "decay ends at min");
    float mid = lr_at_step(10 + 89 / 2, 100, 10, 1.0f, 0.1f);
    CHECK(mid > 0.5f && mid < 0.6f, "cosine midpoint %.3f near 0.55", mid);
    float logits[5] = {0.0f, 5.0f, 4.9f, -3.0f, 1.0f}, scratch[5];
    uint64_t rng = 1;
    int counts[5] = {0};
    for (int i = 0; i < 2000; i++) counts[sample_token(logits, 5, 1.0f, 2, &rng, scratch)]++;
    CHECK(counts[0] == 0 && counts[3] == 0 && counts[4] == 0, "top-k 2 draws only the two best");
    CHECK(counts[1] > 800 && counts[2] > 800, "both top tokens drawn (%d, %d)", counts[1], counts[2]);
    rng = 1;
    int cold = 0;
    for (int i = 0; i < 200; i++) cold += sample_token(logits, 5, 1e-3f, 0, &rng, scratch) == 1;
    CHECK(cold == 200, "near-zero temperature is greedy");
}

/* GPT-2 initialisation: N(0, 0.02) matrices, residual projections 0.02/sqrt(2L), LayerNorm
 * weights 1, biases 0, padded vocabulary rows 0; the same for every thread count. */
static void test_init(void) {
    GPT2Config c = {.max_seq_len = 64, .vocab_size = 250, .padded_vocab_size = 384,
                    .num_layers = 2, .num_heads = 4, .channels = 128};
    size_t n = gpt2_num_params(&c), off[GPT2_NUM_PARAM_TENSORS], size[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_offsets(&c, off);
    gpt2_param_sizes(&c, size);
    float *p = malloc(n * sizeof(float));
    test_poison(p, n);
    gpt2_init_params(&c, p, 5);
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        size_t used = t == P_WTE ? (size_t)c.vocab_size * c.channels : size[t];
        double sum = 0, sq = 0;
        for (size_t i = 0; i < used; i++) { sum += p[off[t] + i]; sq += (double)p[off[t] + i] * p[off[t] + i]; }
        double mean = sum / used, sd = sqrt(sq / used - mean * mean);
        if (t == P_LN1W || t == P_LN2W || t == P_LNFW) {
            CHECK(mean == 1.0 && sd == 0.0, "%s should be all ones", gpt2_param_name(t));
        } else if (!gpt2_param_decays(t)) {
            CHECK(sq == 0.0, "%s should be zero", gpt2_param_name(t));
        } else {
            double want = (t == P_ATTPROJW || t == P_FCPROJW) ? 0.02 / sqrt(2.0 * c.num_layers) : 0.02;
            CHECK(fabs(sd - want) < 0.05 * want && fabs(mean) < 0.05 * want,
                  "%s: mean %.4g sd %.4g, expected 0 and %.4g", gpt2_param_name(t), mean, sd, want);
        }
    }
    int padded_zero = 1;
    for (size_t i = (size_t)c.vocab_size * c.channels; i < size[P_WTE]; i++) padded_zero &= p[off[P_WTE] + i] == 0.0f;
    CHECK(padded_zero, "padded wte rows should be zero");
    float *q = malloc(n * sizeof(float));
    omp_set_num_threads(1);
    gpt2_init_params(&c, q, 5);
    omp_set_num_threads(2);
    CHECK(memcmp(p, q, n * sizeof(float)) == 0, "init differs between 1 and 2 threads");
    free(p);
    free(q);
}

int main(void) {
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) test_gradients_match_finite_differences((AttnKernel)k);
    test_kernels_agree();
    test_grad_accumulation();
    test_overfits_one_batch();
    test_init();
    test_model_file();
    test_checkpoints();
    test_schedule_and_sampler();
    return test_summary("test_model");
}
