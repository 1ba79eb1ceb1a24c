/* test/test_model.c: the CPU GPT-2 as a whole -- gradients against finite differences,
 * overfitting one batch, every attention kernel giving the same model, the model file and
 * checkpoint formats, the learning-rate schedule and the sampler. */
#include <dirent.h>
#include <omp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layers/layers.h"
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

static Model *make_model_window(const GPT2Config *c, int B, int T, AttnKernel k, int window) {
    ModelOptions o = {0};
    o.config = *c;
    o.B = B;
    o.T = T;
    o.attn = k;
    o.mask = ATTN_MASK_CAUSAL;
    o.attn_window = window;
    o.precision = PRECISION_FP32;
    char err[256];
    Model *m = cpu_backend.create(&o, err, sizeof err);
    if (!m) fprintf(stderr, "create failed: %s\n", err);
    return m;
}

static Model *make_model(const GPT2Config *c, int B, int T, AttnKernel k) {
    return make_model_window(c, B, T, k, 0);
}

/* The four heads of the grouped-query and ALiBi tests: C = 16, D = 4. */
static GPT2Config tiny_config_h4(int kv_heads, int pos) {
    GPT2Config c = tiny_config();
    c.num_heads = 4;
    c.channels = 16;
    c.kv_heads = kv_heads;
    c.pos = pos;
    return c;
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
static void test_gradients_case(const GPT2Config *cfg, int window, AttnKernel k, const char *what) {
    GPT2Config c = *cfg;
    const int B = 2, T = 5;
    Model *m = make_model_window(&c, B, T, k, window);
    CHECK(m != NULL, "%s %s: the CPU backend refused the model", what, attn_kernel_name(k));
    if (!m) return;
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
        if (used == 0) continue; /* wpe with ALiBi */
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
        CHECK(gmax > 0.0f || t == P_WPE, "%s %s: tensor %s has an all-zero gradient",
              what, attn_kernel_name(k), gpt2_param_name(t));
        CHECK(worst < 2e-2, "%s %s: gradient of %s off by %.3g of its largest entry",
              what, attn_kernel_name(k), gpt2_param_name(t), worst);
    }
    /* padded vocabulary rows get no gradient */
    int padded_clean = 1;
    for (size_t i = (size_t)c.vocab_size * c.channels; i < size[P_WTE]; i++)
        if (g[off[P_WTE] + i] != 0.0f) padded_clean = 0;
    CHECK(padded_clean, "%s: padded wte rows received gradient", what);
    free(g);
    free(p);
    cpu_backend.destroy(m);
}

static void test_gradients_match_finite_differences(AttnKernel k) {
    GPT2Config c = tiny_config();
    test_gradients_case(&c, 0, k, "GPT-2");
}

/* The same whole-model check for grouped-query attention, ALiBi and a sliding window, with
 * every kernel (T = 5, so a window of 2 masks most pairs). */
static void test_gradients_extensions(void) {
    GPT2Config kv1 = tiny_config_h4(1, GPT2_POS_LEARNED), kv2 = tiny_config_h4(2, GPT2_POS_LEARNED);
    GPT2Config alibi = tiny_config_h4(0, GPT2_POS_ALIBI), all = tiny_config_h4(2, GPT2_POS_ALIBI);
    GPT2Config plain4 = tiny_config_h4(0, GPT2_POS_LEARNED);
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        test_gradients_case(&kv1, 0, (AttnKernel)k, "kv_heads 1");
        test_gradients_case(&kv2, 0, (AttnKernel)k, "kv_heads 2");
        test_gradients_case(&alibi, 0, (AttnKernel)k, "ALiBi");
        test_gradients_case(&plain4, 2, (AttnKernel)k, "window 2");
        test_gradients_case(&all, 3, (AttnKernel)k, "kv_heads 2 + ALiBi + window 3");
    }
}

/* One forward and backward: the loss and (when g) the gradients. */
static float loss_and_grads(const GPT2Config *c, const float *p, int window, AttnKernel k,
                            const int *inputs, const int *targets, int B, int T, float *g) {
    Model *m = make_model_window(c, B, T, k, window);
    if (!m) return NAN;
    cpu_backend.set_params(m, p);
    cpu_backend.zero_grad(m);
    float loss = cpu_backend.forward(m, inputs, targets, B, T);
    cpu_backend.backward(m, 1.0f, 1);
    if (g) cpu_backend.get_grads(m, g);
    cpu_backend.destroy(m);
    return loss;
}

/* kv_heads == H is plain GPT-2 bit for bit; a grouped-query model is the plain model whose K and
 * V heads are copied across each group; a window as long as the sequence changes nothing and a
 * short one does; ALiBi differs from learned positions only through the attention. */
static void test_extensions_equivalences(void) {
    const int B = 2, T = 7;
    int inputs[B * T], targets[B * T];
    uint64_t s = 17;
    GPT2Config plain = tiny_config_h4(0, GPT2_POS_LEARNED), kvh = tiny_config_h4(4, GPT2_POS_LEARNED);
    random_tokens(inputs, B * T, plain.vocab_size, &s);
    random_tokens(targets, B * T, plain.vocab_size, &s);
    size_t n = gpt2_num_params(&plain);
    float *p = random_params(&plain, 91), *g0 = malloc(n * sizeof(float)), *g1 = malloc(n * sizeof(float));
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        AttnKernel ak = (AttnKernel)k;
        float l0 = loss_and_grads(&plain, p, 0, ak, inputs, targets, B, T, g0);
        float l1 = loss_and_grads(&kvh, p, 0, ak, inputs, targets, B, T, g1);
        CHECK(memcmp(&l0, &l1, sizeof l0) == 0 && memcmp(g0, g1, n * sizeof(float)) == 0,
              "%s: kv_heads == H differs from plain GPT-2 (loss %.9g vs %.9g)", attn_kernel_name(ak), l1, l0);
        float lw = loss_and_grads(&plain, p, T, ak, inputs, targets, B, T, g1);
        CHECK(fabsf(lw - l0) <= 1e-6f * fabsf(l0) && test_max_err_scaled(g1, g0, n) < 1e-5,
              "%s: a window of T changes the model (loss %.9g vs %.9g)", attn_kernel_name(ak), lw, l0);
        float l2 = loss_and_grads(&plain, p, 2, ak, inputs, targets, B, T, NULL);
        CHECK(fabsf(l2 - l0) > 1e-4f, "%s: a window of 2 changes nothing", attn_kernel_name(ak));
    }

    /* grouped-query with G = 2 from the plain model: K/V rows of head h = those of group h / 2 */
    const int C = plain.channels, H = plain.num_heads, D = C / H, L = plain.num_layers;
    for (int G = 1; G <= 2; G++) {
        GPT2Config gq = tiny_config_h4(G, GPT2_POS_LEARNED);
        size_t ng = gpt2_num_params(&gq);
        float *pg = random_params(&gq, 92 + G), *pp = malloc(n * sizeof(float));
        size_t og[GPT2_NUM_PARAM_TENSORS], op[GPT2_NUM_PARAM_TENSORS], sg[GPT2_NUM_PARAM_TENSORS];
        gpt2_param_offsets(&gq, og);
        gpt2_param_offsets(&plain, op);
        gpt2_param_sizes(&gq, sg);
        for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++)
            if (t != P_QKVW && t != P_QKVB) memcpy(pp + op[t], pg + og[t], sg[t] * sizeof(float));
        const int Qg = C + 2 * G * D, Qp = 3 * C;
        for (int l = 0; l < L; l++)
            for (int r = 0; r < Qp; r++) { /* output row r of the plain projection */
                int src;
                if (r < C) src = r;
                else {
                    int part = (r - C) / C, h = ((r - C) % C) / D, d = (r - C) % D;
                    src = C + part * G * D + (h / (H / G)) * D + d;
                }
                memcpy(pp + op[P_QKVW] + ((size_t)l * Qp + r) * C,
                       pg + og[P_QKVW] + ((size_t)l * Qg + src) * C, C * sizeof(float));
                pp[op[P_QKVB] + (size_t)l * Qp + r] = pg[og[P_QKVB] + (size_t)l * Qg + src];
            }
        for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
            float lg = loss_and_grads(&gq, pg, 0, (AttnKernel)k, inputs, targets, B, T, NULL);
            float lp = loss_and_grads(&plain, pp, 0, (AttnKernel)k, inputs, targets, B, T, NULL);
            CHECK(fabsf(lg - lp) <= 2e-6f * fabsf(lp), "%s: kv_heads %d loss %.9g, the plain model with "
                  "K/V copied per group %.9g", attn_kernel_name((AttnKernel)k), G, lg, lp);
        }
        free(pg);
        free(pp);
        (void)ng;
    }

    /* ALiBi: the learned model with wpe = 0 and no position bias is not ALiBi, but with every
     * weight the same the two differ, and kernels agree on ALiBi */
    GPT2Config al = tiny_config_h4(0, GPT2_POS_ALIBI);
    size_t na = gpt2_num_params(&al);
    float *pa = random_params(&al, 95), *ga0 = malloc(na * sizeof(float)), *ga1 = malloc(na * sizeof(float));
    float la0 = loss_and_grads(&al, pa, 0, ATTN_NAIVE, inputs, targets, B, T, ga0);
    for (int k = 1; k < ATTN_NUM_KERNELS; k++) {
        float la = loss_and_grads(&al, pa, 0, (AttnKernel)k, inputs, targets, B, T, ga1);
        CHECK(fabsf(la - la0) <= 1e-5f * fabsf(la0) && test_max_err_scaled(ga1, ga0, na) < 1e-5,
              "ALiBi: %s differs from naive (loss %.9g vs %.9g)", attn_kernel_name((AttnKernel)k), la, la0);
    }
    /* the same weights with learned positions held at zero: only ALiBi's bias tells them apart */
    float *pz = calloc(n, sizeof(float));
    size_t oa[GPT2_NUM_PARAM_TENSORS], op2[GPT2_NUM_PARAM_TENSORS], sa[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_offsets(&al, oa);
    gpt2_param_offsets(&plain, op2);
    gpt2_param_sizes(&al, sa);
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) memcpy(pz + op2[t], pa + oa[t], sa[t] * sizeof(float));
    float lz = loss_and_grads(&plain, pz, 0, ATTN_NAIVE, inputs, targets, B, T, g0);
    CHECK(fabsf(lz - la0) > 1e-4f, "ALiBi's loss %.9g is that of no position information %.9g", la0, lz);
    free(pz);
    free(pa); free(ga0); free(ga1);
    free(p); free(g0); free(g1);
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
static void test_overfits_one_batch_with(int H, int kv_heads, int pos, int window, const char *what) {
    GPT2Config c = {.max_seq_len = 16, .vocab_size = 32, .padded_vocab_size = 32,
                    .num_layers = 2, .num_heads = H, .channels = 32, .kv_heads = kv_heads, .pos = pos};
    const int B = 2, T = 16;
    Model *m = make_model_window(&c, B, T, ATTN_FLASH, window);
    CHECK(m != NULL, "%s: model refused", what);
    if (!m) return;
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
    CHECK(first > 3.0f, "%s: initial loss %.3f should be near ln(32) = 3.47", what, first);
    CHECK(last < 0.05f, "%s: loss after 150 steps on one batch is %.4f, expected < 0.05", what, last);
    free(p);
    cpu_backend.destroy(m);
}

static void test_overfits_one_batch(void) {
    test_overfits_one_batch_with(2, 0, GPT2_POS_LEARNED, 0, "GPT-2");
    test_overfits_one_batch_with(2, 0, GPT2_POS_ALIBI, 0, "ALiBi");
    test_overfits_one_batch_with(4, 1, GPT2_POS_LEARNED, 0, "kv_heads 1 of 4");
    test_overfits_one_batch_with(4, 2, GPT2_POS_ALIBI, 4, "kv_heads 2 of 4, ALiBi, window 4");
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
    /* forward_backward is forward then backward: the same loss and, bit for bit, the same sum */
    float *g3 = malloc(n * sizeof(float));
    cpu_backend.zero_grad(m);
    float l0 = cpu_backend.forward(m, inputs, targets, B, T), l1 = 0.0f;
    cpu_backend.zero_grad(m);
    for (int i = 0; i < 2; i++) l1 = cpu_backend.forward_backward(m, inputs, targets, B, T, 0.5f, i == 1);
    cpu_backend.get_grads(m, g3);
    CHECK(l1 == l0 && l0 > 0.0f, "forward_backward's loss %g, forward's %g", l1, l0);
    CHECK(memcmp(g3, g2, n * sizeof(float)) == 0, "forward_backward's gradient differs from forward + backward");
    free(g3);
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
        {"wrong magic", 0, 12345, bytes}, {"bf16 version, fp32 size", 1, 5, bytes},
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

/* ---- damage: checksums, header validation, fallback, non-regular files, temporaries ------ */

static void flip_bit(const char *path, long offset, int bit) {
    FILE *f = fopen(path, "r+b");
    if (!f) { CHECK(0, "cannot open %s to damage it", path); return; }
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ (1 << bit), f);
    fclose(f);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup of %s", dir);
}

static void test_checksum64(void) {
    unsigned char buf[1000];
    uint64_t s = 3;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)test_rng_next(&s);
    Checksum64 a, b;
    checksum64_init(&a);
    checksum64_update(&a, buf, sizeof buf);
    uint64_t whole = checksum64_final(&a);
    checksum64_init(&b);
    for (size_t i = 0, step = 1; i < sizeof buf; i += step, step = step * 3 % 61 + 1)
        checksum64_update(&b, buf + i, i + step <= sizeof buf ? step : sizeof buf - i);
    CHECK(checksum64_final(&b) == whole, "checksum64 in pieces differs from one pass");
    int all_differ = 1;
    for (size_t i = 0; i < sizeof buf; i += 37)
        for (int bit = 0; bit < 8; bit += 7) {
            buf[i] ^= (unsigned char)(1 << bit);
            checksum64_init(&b);
            checksum64_update(&b, buf, sizeof buf);
            all_differ &= checksum64_final(&b) != whole;
            buf[i] ^= (unsigned char)(1 << bit);
        }
    CHECK(all_differ, "a flipped bit left checksum64 unchanged");
    checksum64_init(&b);
    checksum64_update(&b, buf, sizeof buf - 1);
    CHECK(checksum64_final(&b) != whole, "a shorter input has the same checksum64");
}

static void test_model_file_checksum(void) {
    GPT2Config c = tiny_config();
    size_t n = gpt2_num_params(&c);
    float *p = random_params(&c, 11), *q = malloc(n * sizeof(float));
    char path[256], err[512];
    tmp_path(path, sizeof path, "sum_model.bin");
    CHECK(model_file_save(path, &c, p, err, sizeof err) == 0, "save: %s", err);

    /* llm.c compatibility: words 0..7 as llm.c writes them, our checksum only in 16..19 */
    int32_t h[256];
    FILE *f = fopen(path, "rb");
    CHECK(f && fread(h, sizeof h, 1, f) == 1, "header read");
    if (f) fclose(f);
    CHECK(h[0] == 20240326 && h[1] == 3 && h[2] == c.max_seq_len && h[3] == c.vocab_size &&
          h[4] == c.num_layers && h[5] == c.num_heads && h[6] == c.channels &&
          h[7] == c.padded_vocab_size, "header words 0..7 are not llm.c's values");
    int rest_zero = 1;
    for (int i = 8; i < 256; i++) if ((i < 16 || i > 19) && h[i]) rest_zero = 0;
    CHECK(rest_zero, "header words other than 0..7 and 16..19 must stay 0");
    CHECK(h[16] == MODEL_FILE_CHECKSUM_MARKER && h[17] == MODEL_FILE_CHECKSUM_KIND,
          "saved file has no checksum marker in header[16..17]");
    int has = -1;
    CHECK(model_file_verify(path, NULL, &has, err, sizeof err) == 0 && has == 1, "verify: %s", err);

    /* one flipped bit anywhere in the weights: refused, naming the file */
    long size = file_size(path);
    long offsets[] = {1024, 1024 + (long)(n / 2) * 4 + 1, size - 1};
    for (int k = 0; k < 3; k++) {
        flip_bit(path, offsets[k], k == 2 ? 7 : 3);
        err[0] = 0;
        CHECK(model_file_load(path, &c, q, err, sizeof err) != 0, "flipped weight bit at %ld loaded",
              offsets[k]);
        CHECK(strstr(err, path) && strstr(err, "checksum mismatch (file damaged)"),
              "flipped weight bit: message %s", err);
        CHECK(model_file_verify(path, NULL, NULL, err, sizeof err) != 0, "verify missed a flipped bit");
        flip_bit(path, offsets[k], k == 2 ? 7 : 3);
    }
    CHECK(model_file_load(path, &c, q, err, sizeof err) == 0, "restored file: %s", err);

    /* a damaged marker word is not mistaken for an llm.c file without a checksum */
    flip_bit(path, 16 * 4, 0);
    CHECK(model_file_read_config(path, &c, err, sizeof err) != 0 && strstr(err, path),
          "damaged checksum marker accepted (%s)", err);
    flip_bit(path, 16 * 4, 0);
    flip_bit(path, 30 * 4, 2);
    CHECK(model_file_read_config(path, &c, err, sizeof err) != 0, "nonzero reserved header word accepted");
    flip_bit(path, 30 * 4, 2);

    /* a file as llm.c writes it (words 16..19 zero): loads, nothing to verify */
    memset(h + 16, 0, 4 * sizeof h[0]);
    f = fopen(path, "wb");
    fwrite(h, sizeof h, 1, f);
    fwrite(p, sizeof(float), n, f);
    fclose(f);
    test_poison(q, n);
    CHECK(model_file_load(path, &c, q, err, sizeof err) == 0, "llm.c file without checksum: %s", err);
    CHECK(memcmp(p, q, n * sizeof(float)) == 0, "llm.c file parameters");
    has = -1;
    CHECK(model_file_verify(path, NULL, &has, err, sizeof err) == 0 && has == 0,
          "verify of an llm.c file: %s", err);
    remove(path);
    free(p);
    free(q);
}

/* ---- model file versions 5 (bf16), 103 / 105 (grouped-query attention, ALiBi) ----------- */

static unsigned char *read_whole(const char *path, long *len) {
    *len = file_size(path);
    if (*len < 0) return NULL;
    unsigned char *b = malloc((size_t)*len + 1);
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(b, 1, (size_t)*len, f) : 0;
    if (f) fclose(f);
    if ((long)got != *len) { free(b); return NULL; }
    return b;
}

/* How llm.c's loaders look at a file: magic 20240326 and version 3 or 5, nothing else. */
static int llmc_would_read(const char *path) {
    int32_t h[256];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int ok = fread(h, sizeof h, 1, f) == 1;
    fclose(f);
    return ok && h[0] == 20240326 && (h[1] == 3 || h[1] == 5);
}

/* The bf16 rounding written independently of model_file.c: nearest, ties to even. */
static uint16_t ref_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t hi = u >> 16, lo = u & 0xffff;
    if (lo > 0x8000 || (lo == 0x8000 && (hi & 1))) hi++;
    return (uint16_t)hi;
}

static float widen_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* The bytes a file of this version must hold, built from the documented format: llm.c's words
 * 0..7, our [8], [9] for 103/105, our checksum in 16..19, then the parameters as stored. */
static unsigned char *expected_file(const GPT2Config *c, const float *p, int version, long *len) {
    size_t n = gpt2_num_params(c);
    int bf16 = version == 5 || version == 105;
    size_t pbytes = n * (bf16 ? 2 : 4);
    *len = (long)(1024 + pbytes);
    unsigned char *b = calloc((size_t)*len, 1);
    int32_t h[256] = {20240326, version, c->max_seq_len, c->vocab_size, c->num_layers,
                      c->num_heads, c->channels, c->padded_vocab_size};
    if (version >= 100) { h[8] = gpt2_kv_heads(c); h[9] = c->pos; }
    h[16] = 0x314B4843;
    h[17] = 1;
    if (bf16) {
        uint16_t *q = (uint16_t *)(b + 1024);
        for (size_t i = 0; i < n; i++) q[i] = ref_bf16(p[i]);
    } else {
        memcpy(b + 1024, p, pbytes);
    }
    Checksum64 s;
    checksum64_init(&s);
    checksum64_update(&s, h, 18 * 4);
    checksum64_update(&s, b + 1024, pbytes);
    uint64_t sum = checksum64_final(&s);
    h[18] = (int32_t)(uint32_t)sum;
    h[19] = (int32_t)(uint32_t)(sum >> 32);
    memcpy(b, h, sizeof h);
    return b;
}

static void check_file_is(const char *path, const GPT2Config *c, const float *p, int version,
                          const char *what) {
    long got_len, want_len;
    unsigned char *got = read_whole(path, &got_len), *want = expected_file(c, p, version, &want_len);
    CHECK(got && got_len == want_len && memcmp(got, want, (size_t)want_len) == 0,
          "%s: the file is not the documented version-%d bytes (size %ld, expected %ld)", what,
          version, got_len, want_len);
    free(got);
    free(want);
}

static void test_bf16_rounding(void) {
    struct { uint32_t in; uint16_t out; } cases[] = {
        {0x3F800000u, 0x3F80}, {0x3F808000u, 0x3F80}, /* a tie rounds to the even 0x3F80 */
        {0x3F818000u, 0x3F82}, /* a tie rounds to the even 0x3F82 */
        {0x3F808001u, 0x3F81}, {0x3F807FFFu, 0x3F80}, {0xBF80C000u, 0xBF81},
        {0x7F7FFFFFu, 0x7F80}, /* the largest float rounds to infinity */
        {0x7F800000u, 0x7F80}, {0xFF800000u, 0xFF80}, {0x00000001u, 0x0000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float x;
        memcpy(&x, &cases[i].in, 4);
        uint16_t h = model_file_fp32_to_bf16(x);
        CHECK(h == cases[i].out, "bf16(0x%08x) = 0x%04x, expected 0x%04x", cases[i].in, h, cases[i].out);
    }
    uint32_t nan_bits = 0x7F800001u; /* a NaN whose payload is all in the low half */
    float nan_in;
    memcpy(&nan_in, &nan_bits, 4);
    CHECK(isnan(model_file_bf16_to_fp32(model_file_fp32_to_bf16(nan_in))), "NaN became a number");
    int exact = 1;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float x = model_file_bf16_to_fp32((uint16_t)h);
        if (!isnan(x)) exact &= model_file_fp32_to_bf16(x) == h && x == widen_bf16((uint16_t)h);
    }
    CHECK(exact, "bf16 -> fp32 -> bf16 is not the identity");
}

static void test_model_file_bf16(void) {
    GPT2Config c = tiny_config();
    size_t n = gpt2_num_params(&c);
    float *p = random_params(&c, 51), *q = malloc(n * sizeof(float));
    char path[256], err[512];
    tmp_path(path, sizeof path, "bf16.bin");
    CHECK(model_file_save_as(path, &c, p, 5, err, sizeof err) == 0, "save v5: %s", err);
    check_file_is(path, &c, p, 5, "plain bf16");
    CHECK(llmc_would_read(path), "llm.c would not read our version-5 file");
    GPT2Config r;
    CHECK(model_file_read_config(path, &r, err, sizeof err) == 0 && memcmp(&r, &c, sizeof c) == 0,
          "v5 config round trip: %s", err);
    test_poison(q, n);
    CHECK(model_file_load(path, &c, q, err, sizeof err) == 0, "load v5: %s", err);
    int same = 1;
    for (size_t i = 0; i < n; i++) same &= q[i] == widen_bf16(ref_bf16(p[i]));
    CHECK(same, "v5 round trip differs from the bf16-rounded parameters");
    int has = -1;
    CHECK(model_file_verify(path, NULL, &has, err, sizeof err) == 0 && has == 1, "verify v5: %s", err);
    flip_bit(path, 1024 + (long)n, 2); /* a bf16 element in the middle */
    CHECK(model_file_load(path, &c, q, err, sizeof err) != 0 && strstr(err, "checksum mismatch"),
          "a flipped bf16 bit loaded (%s)", err);
    CHECK(model_file_verify(path, NULL, NULL, err, sizeof err) != 0, "verify missed a flipped bf16 bit");

    /* a file as llm.c's CUDA trainer writes it: words 0..7, zeros, the raw bf16 parameters */
    int32_t h[256] = {20240326, 5, c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads,
                      c.channels, c.padded_vocab_size};
    uint16_t *raw = malloc(n * 2);
    for (size_t i = 0; i < n; i++) raw[i] = ref_bf16(p[i]);
    FILE *f = fopen(path, "wb");
    fwrite(h, sizeof h, 1, f);
    fwrite(raw, 2, n, f);
    fclose(f);
    test_poison(q, n);
    CHECK(model_file_load(path, &c, q, err, sizeof err) == 0, "llm.c's v5 file: %s", err);
    same = 1;
    for (size_t i = 0; i < n; i++) same &= q[i] == widen_bf16(raw[i]);
    CHECK(same, "llm.c's v5 file parameters");
    has = -1;
    CHECK(model_file_verify(path, NULL, &has, err, sizeof err) == 0 && has == 0,
          "verify llm.c's v5 file: %s", err);

    /* truncated, one element too long, and fp32-sized: refused with the path */
    CHECK(truncate(path, 1024 + (long)n * 2 - 2) == 0, "truncate");
    err[0] = 0;
    CHECK(model_file_read_config(path, &r, err, sizeof err) != 0 && strstr(err, path),
          "truncated v5 accepted (%s)", err);
    CHECK(model_file_load(path, &c, q, err, sizeof err) != 0, "truncated v5 loaded");
    CHECK(truncate(path, 1024 + (long)n * 4) == 0, "extend");
    CHECK(model_file_read_config(path, &r, err, sizeof err) != 0, "v5 with fp32 size accepted");

    /* versions nobody writes: one line naming the version and what is read */
    int versions[] = {4, 1, 6, 104, 0};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        h[1] = versions[i];
        f = fopen(path, "wb");
        fwrite(h, sizeof h, 1, f);
        fwrite(raw, 2, n, f);
        fclose(f);
        err[0] = 0;
        char want[32];
        snprintf(want, sizeof want, "version %d;", versions[i]);
        CHECK(model_file_read_config(path, &r, err, sizeof err) != 0 && strstr(err, path) &&
              strstr(err, want) && strstr(err, "3 (fp32) and 5 (bf16)") && !strchr(err, '\n'),
              "version %d: '%s'", versions[i], err);
    }
    CHECK(model_file_save_as(path, &c, p, 4, err, sizeof err) != 0 && strstr(err, "version 4"),
          "writing version 4: '%s'", err);
    CHECK(model_file_save_as(path, &c, p, 103, err, sizeof err) != 0, "writing version 103 directly");
    remove(path);
    free(raw);
    free(p);
    free(q);
}

/* Grouped-query attention and ALiBi: layout, validation, versions 103 / 105, and plain GPT-2
 * files unchanged. */
static void test_model_file_ext(void) {
    char path[256], err[512];
    tmp_path(path, sizeof path, "ext.bin");
    GPT2Config plain = {.max_seq_len = 8, .vocab_size = 11, .padded_vocab_size = 16,
                        .num_layers = 2, .num_heads = 4, .channels = 16};
    GPT2Config gqa = plain, alibi = plain, both = plain, kvh = plain;
    gqa.kv_heads = 2;
    alibi.pos = GPT2_POS_ALIBI;
    both.kv_heads = 1;
    both.pos = GPT2_POS_ALIBI;
    kvh.kv_heads = 4; /* kv == H: plain GPT-2 */

    /* layout */
    size_t sp[GPT2_NUM_PARAM_TENSORS], sg[GPT2_NUM_PARAM_TENSORS], sa[GPT2_NUM_PARAM_TENSORS];
    size_t np = gpt2_param_sizes(&plain, sp), ng = gpt2_param_sizes(&gqa, sg);
    size_t na = gpt2_param_sizes(&alibi, sa);
    CHECK(sp[P_QKVW] == 2 * 48 * 16 && sp[P_QKVB] == 2 * 48 && sp[P_WPE] == 8 * 16, "plain layout");
    CHECK(sg[P_QKVW] == 2 * (16 + 2 * 2 * 4) * 16 && sg[P_QKVB] == 2 * 32 && sg[P_WPE] == 8 * 16,
          "GQA layout: qkvw %zu qkvb %zu", sg[P_QKVW], sg[P_QKVB]);
    CHECK(ng == np - 2 * 16 * 17, "GQA parameter count %zu", ng);
    CHECK(sa[P_WPE] == 0 && na == np - 8 * 16 && sa[P_QKVW] == sp[P_QKVW], "ALiBi layout");
    CHECK(gpt2_qkv_channels(&plain) == 48 && gpt2_qkv_channels(&gqa) == 32 &&
          gpt2_qkv_channels(&both) == 24 && gpt2_qkv_channels(&kvh) == 48, "qkv channels");
    CHECK(gpt2_is_plain(&plain) && gpt2_is_plain(&kvh) && !gpt2_is_plain(&gqa) &&
          !gpt2_is_plain(&alibi), "gpt2_is_plain");
    CHECK(gpt2_config_same(&plain, &kvh) && !gpt2_config_same(&plain, &gqa) &&
          !gpt2_config_same(&plain, &alibi), "gpt2_config_same");
    CHECK(gpt2_num_params(&kvh) == np, "kv == H has plain GPT-2's parameters");
    double fp = gpt2_flops_per_token(&plain, 8, 1), fg = gpt2_flops_per_token(&gqa, 8, 1);
    CHECK(fp == 6.0 * (2 * 12.0 * 256 + 16 * 16) + 3.0 * 2 * 4 * 16 * 4, "plain flops %.0f", fp);
    CHECK(fp - fg == 6.0 * 2 * 16 * 16, "GQA flops %.0f: the smaller K/V projection", fg);

    /* validation */
    int bad_kv[] = {3, -1, 5, 8};
    for (size_t i = 0; i < 4; i++) {
        GPT2Config b = plain;
        b.kv_heads = bad_kv[i];
        err[0] = 0;
        CHECK(gpt2_config_validate(&b, err, sizeof err) != 0 && strstr(err, "kv-heads"),
              "kv_heads %d accepted (%s)", bad_kv[i], err);
    }
    GPT2Config badpos = plain;
    badpos.pos = 2;
    CHECK(gpt2_config_validate(&badpos, err, sizeof err) != 0, "position kind 2 accepted");
    CHECK(gpt2_config_validate(&both, err, sizeof err) == 0, "kv 1 with ALiBi: %s", err);
    int pk = -1;
    CHECK(gpt2_pos_from_name("alibi", &pk) == 0 && pk == GPT2_POS_ALIBI &&
          gpt2_pos_from_name("learned", &pk) == 0 && pk == GPT2_POS_LEARNED &&
          gpt2_pos_from_name("rope", &pk) != 0 && strcmp(gpt2_pos_name(1), "alibi") == 0, "pos names");

    /* plain GPT-2 (also with kv_heads == H spelled out): llm.c's versions 3 and 5, the documented
     * bytes (exactly what the version-3 writer wrote before these extensions) */
    float *p = random_params(&plain, 61);
    CHECK(model_file_save(path, &plain, p, err, sizeof err) == 0, "save: %s", err);
    check_file_is(path, &plain, p, 3, "plain fp32");
    CHECK(model_file_save_as(path, &kvh, p, 3, err, sizeof err) == 0, "save: %s", err);
    check_file_is(path, &plain, p, 3, "kv == H fp32");
    CHECK(llmc_would_read(path), "llm.c would not read a plain file");
    CHECK(model_file_save_as(path, &kvh, p, 5, err, sizeof err) == 0, "save: %s", err);
    check_file_is(path, &plain, p, 5, "kv == H bf16");
    free(p);

    /* the others: 103 / 105 with [8] kv_heads, [9] position kind; llm.c refuses them */
    const GPT2Config *ext[] = {&gqa, &alibi, &both};
    for (int k = 0; k < 3; k++) {
        const GPT2Config *c = ext[k];
        size_t n = gpt2_num_params(c);
        float *x = random_params(c, 70 + k), *y = malloc(n * sizeof(float));
        for (int version = 3; version <= 5; version += 2) {
            int want = version + 100;
            CHECK(model_file_version_for(c, version) == want, "version for %d", version);
            CHECK(model_file_save_as(path, c, x, version, err, sizeof err) == 0, "save: %s", err);
            check_file_is(path, c, x, want, version == 3 ? "ext fp32" : "ext bf16");
            CHECK(!llmc_would_read(path), "llm.c would read a version-%d file", want);
            GPT2Config r;
            CHECK(model_file_read_config(path, &r, err, sizeof err) == 0 &&
                  gpt2_config_same(&r, c) && r.kv_heads == gpt2_kv_heads(c) && r.pos == c->pos,
                  "version %d config round trip: %s", want, err);
            test_poison(y, n);
            CHECK(model_file_load(path, c, y, err, sizeof err) == 0, "load %d: %s", want, err);
            int same = 1;
            for (size_t i = 0; i < n; i++) same &= y[i] == (version == 3 ? x[i] : widen_bf16(ref_bf16(x[i])));
            CHECK(same, "version %d parameters round trip", want);
            err[0] = 0;
            CHECK(model_file_load(path, &plain, y, err, sizeof err) != 0 && strstr(err, "kv="),
                  "a version-%d file loaded as plain GPT-2 (%s)", want, err);
            int has = -1;
            CHECK(model_file_verify(path, NULL, &has, err, sizeof err) == 0 && has == 1, "verify: %s", err);
        }
        /* model_file_save (checkpoints) writes 103 */
        CHECK(model_file_save(path, c, x, err, sizeof err) == 0, "save: %s", err);
        check_file_is(path, c, x, 103, "checkpoint writer");
        free(x);
        free(y);
    }

    /* damaged extension words: refused with the path (the checksum alone would catch them; the
     * header checks must too, for files without a checksum) */
    size_t n = gpt2_num_params(&gqa);
    float *x = random_params(&gqa, 80);
    long len;
    unsigned char *want = expected_file(&gqa, x, 103, &len);
    struct { int word; int32_t value; } cases[] = {{8, 3}, {8, 0}, {8, 8}, {9, 2}, {9, -1}, {10, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int with_sum = 0; with_sum < 2; with_sum++) {
            int32_t h[256];
            memcpy(h, want, sizeof h);
            h[cases[i].word] = cases[i].value;
            if (!with_sum) memset(h + 16, 0, 16);
            FILE *f = fopen(path, "wb");
            fwrite(h, sizeof h, 1, f);
            fwrite(want + 1024, 1, (size_t)len - 1024, f);
            fclose(f);
            GPT2Config r;
            err[0] = 0;
            int rc = model_file_read_config(path, &r, err, sizeof err);
            if (cases[i].word == 10 && !with_sum) continue; /* unchecked without a checksum, as llm.c */
            CHECK(rc != 0 && strstr(err, path), "header word %d = %d accepted (checksum %d): %s",
                  cases[i].word, cases[i].value, with_sum, err);
        }
    }
    (void)n;
    free(want);
    free(x);
    remove(path);
}

/* A version-1 state file (no checksum) with the given header words changed. */
static void write_state_v1(const char *path, size_t n, uint64_t step, int field, uint64_t value) {
    uint64_t h[32] = {0x67707432737461ULL, 1, step, n, 1, 5, 7, 4};
    if (field >= 0) h[field] = value;
    float *z = calloc(2 * n, sizeof(float));
    FILE *f = fopen(path, "wb");
    fwrite(h, sizeof h, 1, f);
    fwrite(z, sizeof(float), 2 * n, f);
    fclose(f);
    free(z);
}

/* Rewrites the header of a version 2 or 3 state file: word `field` = value, the version, and the
 * checksum recomputed (a well-formed file of that content). */
static void rewrite_state_header(const char *path, size_t n, uint64_t version, int field, uint64_t value) {
    FILE *f = fopen(path, "r+b");
    uint64_t h[32];
    float *mv = malloc(2 * n * sizeof(float));
    if (!f || fread(h, sizeof h, 1, f) != 1 || fread(mv, sizeof(float), 2 * n, f) != 2 * n) {
        CHECK(0, "cannot read %s", path);
        if (f) fclose(f);
        free(mv);
        return;
    }
    h[1] = version;
    if (field >= 0) h[field] = value;
    h[31] = 0;
    Checksum64 s;
    checksum64_init(&s);
    checksum64_update(&s, h, sizeof h);
    checksum64_update(&s, mv, 2 * n * sizeof(float));
    h[31] = checksum64_final(&s);
    fseek(f, 0, SEEK_SET);
    fwrite(h, sizeof h, 1, f);
    fclose(f);
    free(mv);
}

/* Version 3: the loss scaler's mode, scale, clean-step count and skip count round trip; version 2
 * (words 12..15 zero) reads as "not recorded"; out-of-range scaler words are refused. */
static void test_state_loss_scaler(const char *dir, const GPT2Config *c, const float *p, const float *mo,
                                   const float *va) {
    size_t n = gpt2_num_params(c);
    float *m2 = malloc(n * sizeof(float)), *v2 = malloc(n * sizeof(float));
    char err[512], model[512], state[512];
    TrainProgress pr = {.step = 50, .loader_epoch = 1, .loader_step = 3, .seed = 5, .windows_per_step = 4,
                        .loss_scale_mode = 3, .loss_scale = 32768.0f, .loss_scale_clean = 1234,
                        .loss_scale_skipped = 7};
    CHECK(checkpoint_save(dir, c, p, mo, va, &pr, err, sizeof err) == 0, "save: %s", err);
    checkpoint_paths(dir, 50, model, state, sizeof model);
    TrainProgress got;
    memset(&got, 0, sizeof got);
    CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) == 0 && got.loss_scale_mode == 3 &&
              got.loss_scale == 32768.0f && got.loss_scale_clean == 1234 && got.loss_scale_skipped == 7,
          "loss scaler round trip (%s): mode %llu scale %g clean %llu skipped %llu", err,
          (unsigned long long)got.loss_scale_mode, got.loss_scale, (unsigned long long)got.loss_scale_clean,
          (unsigned long long)got.loss_scale_skipped);
    struct { const char *what; int field; uint64_t value; } bad[] = {
        {"mode 4", 12, 4}, {"scale 0", 13, 0}, {"scale inf", 13, 0x7f800000u}, {"scale NaN", 13, 0x7fc00000u},
        {"scale -1", 13, 0xbf800000u}, {"scale past 32 bits", 13, 1ULL << 40}, {"skipped past the step", 15, 51},
        {"clean 2^40", 14, 1ULL << 40},
    };
    uint64_t h[32];
    FILE *f = fopen(state, "rb");
    CHECK(f && fread(h, sizeof h, 1, f) == 1, "read the header");
    if (f) fclose(f);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rewrite_state_header(state, n, 3, bad[i].field, bad[i].value);
        err[0] = 0;
        CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) != 0 && strstr(err, "loss scaler") &&
                  !strchr(err, '\n'), "state with loss scaler %s accepted (%s)", bad[i].what, err);
        rewrite_state_header(state, n, 3, bad[i].field, h[bad[i].field]); /* put it back */
    }
    CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) == 0 && got.loss_scale == 32768.0f,
          "restored header reads (%s)", err);
    /* a version-2 file: words 12..15 are 0, no scaler recorded */
    for (int w = 12; w <= 15; w++) rewrite_state_header(state, n, 3, w, 0);
    rewrite_state_header(state, n, 2, -1, 0);
    memset(&got, 0xff, sizeof got);
    CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) == 0 && got.step == 50 &&
              got.loss_scale_mode == 0 && got.loss_scale_skipped == 0 && got.loss_scale_clean == 0,
          "version-2 state reads without a loss scaler (%s)", err);
    /* ... and in version 2 those words are reserved */
    rewrite_state_header(state, n, 2, 12, 3);
    CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) != 0 && strstr(err, "reserved"),
          "version 2 with a loss scaler word accepted (%s)", err);
    remove(model);
    remove(state);
    free(m2);
    free(v2);
}

static void test_state_checks(void) {
    GPT2Config c = tiny_config();
    size_t n = gpt2_num_params(&c);
    float *p = random_params(&c, 12), *mo = random_params(&c, 13), *va = random_params(&c, 14);
    float *m2 = malloc(n * sizeof(float)), *v2 = malloc(n * sizeof(float));
    char dir[256], err[512], model[512], state[512];
    tmp_path(dir, sizeof dir, "state_checks");
    CHECK(checkpoint_dir_ready(dir, err, sizeof err) == 0, "dir: %s", err);
    TrainProgress pr = {.step = 40, .loader_epoch = 1, .loader_step = 3, .seed = 5, .windows_per_step = 4};
    CHECK(checkpoint_save(dir, &c, p, mo, va, &pr, err, sizeof err) == 0, "save: %s", err);
    checkpoint_paths(dir, 40, model, state, sizeof model);
    TrainProgress got;
    CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) == 0, "load: %s", err);

    /* a flipped bit in the moments, in the second moments' last byte, in the seed field */
    long offsets[] = {256 + 4 * 17 + 2, file_size(state) - 1, 6 * 8 + 1};
    for (int k = 0; k < 3; k++) {
        flip_bit(state, offsets[k], 5);
        err[0] = 0;
        CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) != 0,
              "state with a flipped bit at %ld loaded", offsets[k]);
        CHECK(strstr(err, state) && strstr(err, "checksum mismatch (file damaged)"),
              "flipped state bit: message %s", err);
        flip_bit(state, offsets[k], 5);
    }

    /* version 1 (no checksum) still reads; absurd headers are errors, not step 0 */
    char v1[512];
    snprintf(v1, sizeof v1, "%s/old_state.bin", dir);
    write_state_v1(v1, n, 30, -1, 0);
    memset(&got, 0, sizeof got);
    CHECK(checkpoint_load_state(v1, n, m2, v2, &got, err, sizeof err) == 0 && got.step == 30 &&
          got.loader_epoch == 1 && got.loader_step == 5 && got.seed == 7 && got.windows_per_step == 4,
          "version-1 state: %s", err);
    struct { const char *what; int field; uint64_t value; } bad[] = {
        {"step 2^40", 2, 1ULL << 40}, {"step 2^63", 2, 1ULL << 63}, {"epoch 2^50", 4, 1ULL << 50},
        {"loader step 2^62", 5, 1ULL << 62}, {"windows 2^40", 7, 1ULL << 40},
        {"reserved word", 16, 99}, {"version 4", 1, 4}, {"version 0", 1, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_state_v1(v1, n, 30, bad[i].field, bad[i].value);
        err[0] = 0;
        CHECK(checkpoint_load_state(v1, n, m2, v2, &got, err, sizeof err) != 0 && strstr(err, v1),
              "state header with %s accepted (%s)", bad[i].what, err);
    }
    /* version 1 has no loss scaler: words 12..15 are reserved there */
    write_state_v1(v1, n, 30, 12, 3);
    CHECK(checkpoint_load_state(v1, n, m2, v2, &got, err, sizeof err) != 0, "version 1 with a loss scaler accepted");
    test_state_loss_scaler(dir, &c, p, mo, va);
    /* the step must be the one in the file's name */
    write_state_v1(state, n, 30, -1, 0);
    CHECK(checkpoint_load_state(state, n, m2, v2, &got, err, sizeof err) != 0 && strstr(err, state),
          "state_00000040.bin holding step 30 accepted");
    /* a state file one float short */
    write_state_v1(v1, n, 30, -1, 0);
    CHECK(truncate(v1, file_size(v1) - 4) == 0, "truncate");
    CHECK(checkpoint_load_state(v1, n, m2, v2, &got, err, sizeof err) != 0, "truncated state accepted");
    rm_rf(dir);
    free(p); free(mo); free(va); free(m2); free(v2);
}

static void test_resume_fallback(void) {
    GPT2Config c = tiny_config();
    float *p = random_params(&c, 21), *mo = random_params(&c, 22), *va = random_params(&c, 23);
    char dir[256], err[1024], warn[1024], model[512], state[512], rm[512], rs[512];
    tmp_path(dir, sizeof dir, "fallback");
    CHECK(checkpoint_dir_ready(dir, err, sizeof err) == 0, "dir: %s", err);
    long step = -7;
    CHECK(checkpoint_find_resume(dir, &step, rm, rs, sizeof rm, warn, sizeof warn, err, sizeof err) == 1,
          "an empty folder has nothing to resume");
    for (int s = 30; s <= 40; s += 10) {
        TrainProgress pr = {.step = (uint64_t)s, .loader_step = 1};
        CHECK(checkpoint_save(dir, &c, p, mo, va, &pr, err, sizeof err) == 0, "save: %s", err);
    }
    CHECK(checkpoint_find_resume(dir, &step, rm, rs, sizeof rm, warn, sizeof warn, err, sizeof err) == 0 &&
          step == 40 && warn[0] == 0, "intact newest: step %ld, warning '%s'", step, warn);
    checkpoint_paths(dir, 40, model, state, sizeof model);
    CHECK(strcmp(rm, model) == 0 && strcmp(rs, state) == 0, "resume paths");

    /* a newer state file without its model (a save interrupted): skipped with a warning */
    char orphan[512];
    checkpoint_paths(dir, 50, NULL, orphan, sizeof orphan);
    write_bytes(orphan, "x", 1);
    CHECK(checkpoint_find_resume(dir, &step, rm, rs, sizeof rm, warn, sizeof warn, err, sizeof err) == 0 &&
          step == 40 && strstr(warn, "checkpoint 50 is incomplete"), "orphan state: step %ld '%s'", step, warn);
    remove(orphan);

    /* newest model damaged: the older pair, with a warning naming what was wrong */
    flip_bit(model, 2000, 1);
    step = -7;
    int rc = checkpoint_find_resume(dir, &step, rm, rs, sizeof rm, warn, sizeof warn, err, sizeof err);
    CHECK(rc == 0 && step == 30, "damaged newest model: rc %d step %ld (%s)", rc, step, err);
    CHECK(strstr(warn, "checkpoint 40") && strstr(warn, "checksum mismatch") && strstr(warn, "30") &&
          !strchr(warn, '\n'), "fallback warning: '%s'", warn);
    checkpoint_paths(dir, 30, model, state, sizeof model);
    CHECK(rc == 0 && strcmp(rm, model) == 0 && strcmp(rs, state) == 0, "fallback paths %s", rm);

    /* newest state truncated (its model repaired) */
    checkpoint_paths(dir, 40, model, state, sizeof model);
    flip_bit(model, 2000, 1);
    CHECK(truncate(state, file_size(state) / 2) == 0, "truncate");
    step = -7;
    rc = checkpoint_find_resume(dir, &step, rm, rs, sizeof rm, warn, sizeof warn, err, sizeof err);
    CHECK(rc == 0 && step == 30 && strstr(warn, state), "truncated newest state: rc %d step %ld '%s'",
          rc, step, warn);

    /* both damaged: an error naming the folder, no step */
    checkpoint_paths(dir, 30, model, state, sizeof model);
    flip_bit(state, 300, 4);
    err[0] = 0;
    rc = checkpoint_find_resume(dir, &step, rm, rs, sizeof rm, warn, sizeof warn, err, sizeof err);
    CHECK(rc == -1 && strstr(err, dir) && strstr(err, "checkpoint 40") && strstr(err, "checkpoint 30") &&
          !strchr(err, '\n'), "both damaged: rc %d '%s'", rc, err);
    rm_rf(dir);
    free(p); free(mo); free(va);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL test_model: reading a FIFO hung\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void test_fifo_refused(void) {
    GPT2Config c = tiny_config(), r;
    size_t n = gpt2_num_params(&c);
    float *p = random_params(&c, 31);
    char dir[256], err[512], warn[1024], fifo[512], model[512], state[512], rm[512], rs[512];
    tmp_path(dir, sizeof dir, "fifo");
    CHECK(checkpoint_dir_ready(dir, err, sizeof err) == 0, "dir: %s", err);
    snprintf(fifo, sizeof fifo, "%s/init.bin", dir);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo");
    signal(SIGALRM, on_alarm);
    alarm(20);
    err[0] = 0;
    CHECK(model_file_read_config(fifo, &r, err, sizeof err) != 0 && strstr(err, fifo) && strstr(err, "FIFO"),
          "FIFO as a model file: '%s'", err);
    CHECK(model_file_load(fifo, &c, p, err, sizeof err) != 0, "FIFO loaded as a model file");
    CHECK(checkpoint_load_state(fifo, n, p, p, NULL, err, sizeof err) != 0 && strstr(err, "FIFO"),
          "FIFO as a state file: '%s'", err);
    CHECK(model_file_read_config(dir, &r, err, sizeof err) != 0 && strstr(err, "directory"),
          "a directory as a model file: '%s'", err);
    /* a FIFO where the newest checkpoint's model file should be: skipped, the older one used */
    TrainProgress pr = {.step = 10};
    CHECK(checkpoint_save(dir, &c, p, p, p, &pr, err, sizeof err) == 0, "save: %s", err);
    checkpoint_paths(dir, 20, model, state, sizeof model);
    CHECK(mkfifo(model, 0600) == 0, "mkfifo");
    write_state_v1(state, n, 20, -1, 0);
    long step = -1;
    int rc = checkpoint_find_resume(dir, &step, rm, rs, sizeof rm, warn, sizeof warn, err, sizeof err);
    CHECK(rc == 0 && step == 10 && strstr(warn, "FIFO"), "FIFO checkpoint: rc %d step %ld '%s'", rc, step, warn);
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    rm_rf(dir);
    free(p);
}

static int exists(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void test_temporaries(void) {
    char dir[256], err[512], name[4096], tmp[600];
    tmp_path(dir, sizeof dir, "temporaries");
    CHECK(checkpoint_dir_ready(dir, err, sizeof err) == 0, "dir: %s", err);
    atomic_temp_path("/a/b/model_00000040.bin", tmp, sizeof tmp);
    snprintf(name, sizeof name, "/a/b/.model_00000040.bin.tmp.%d", (int)getpid());
    CHECK(strcmp(tmp, name) == 0, "temporary name %s, expected %s", tmp, name);
    char ours[3][64], theirs[][64] = {
        "model_00000040.bin", "state_00000040.bin", "notes.tmp", ".model_00000040.bin.tmp.",
        ".model_00000040.bin.tmp.12x", ".model_0040.bin.tmp.5", "model_00000040.bin.tmp.5",
        ".other_00000040.bin.tmp.5", "x.model_00000040.bin.tmp.5", ".model_00000040.bin.tmp.5.bak",
        ".write_test.", "data.bin.tmp",
    };
    snprintf(ours[0], sizeof ours[0], ".model_00000040.bin.tmp.%d", (int)getpid());
    snprintf(ours[1], sizeof ours[1], ".state_00000040.bin.tmp.%d", 999999999); /* no such pid */
    snprintf(ours[2], sizeof ours[2], "state_00000030.bin.tmp"); /* the older versions' name */
    for (int i = 0; i < 3; i++) { snprintf(name, sizeof name, "%s/%s", dir, ours[i]); write_bytes(name, "x", 1); }
    size_t nt = sizeof theirs / sizeof theirs[0];
    for (size_t i = 0; i < nt; i++) { snprintf(name, sizeof name, "%s/%s", dir, theirs[i]); write_bytes(name, "y", 1); }
    /* a temporary of a live process that is not us (our parent) stays */
    char live[64];
    snprintf(live, sizeof live, ".model_00000050.bin.tmp.%d", (int)getppid());
    snprintf(name, sizeof name, "%s/%s", dir, live);
    write_bytes(name, "z", 1);
    int removed = checkpoint_clean_temporaries(dir, err, sizeof err);
    CHECK(removed == 3, "removed %d temporaries, expected 3 (%s)", removed, err);
    for (int i = 0; i < 3; i++) CHECK(!exists(dir, ours[i]), "temporary %s left", ours[i]);
    for (size_t i = 0; i < nt; i++) CHECK(exists(dir, theirs[i]), "%s removed: not ours", theirs[i]);
    CHECK(exists(dir, live), "a live process's temporary %s removed", live);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none", dir);
    CHECK(checkpoint_clean_temporaries(missing, err, sizeof err) == 0, "missing dir");
    rm_rf(dir);
}

/* A fresh run into a folder with checkpoints of higher steps: saving must never delete the file
 * it just wrote; checkpoint_highest reports what is there so the trainer can refuse. */
static void test_prune_keeps_written(void) {
    GPT2Config c = tiny_config();
    float *p = random_params(&c, 41);
    char dir[256], err[512], model[512], state[512];
    tmp_path(dir, sizeof dir, "prune");
    CHECK(checkpoint_dir_ready(dir, err, sizeof err) == 0, "dir: %s", err);
    CHECK(checkpoint_highest(dir) == -1, "empty folder: highest -1");
    long steps[] = {100, 200, 10, 20, 300};
    for (int i = 0; i < 5; i++) {
        TrainProgress pr = {.step = (uint64_t)steps[i]};
        CHECK(checkpoint_save(dir, &c, p, p, p, &pr, err, sizeof err) == 0, "save: %s", err);
        checkpoint_paths(dir, steps[i], model, state, sizeof model);
        CHECK(access(model, F_OK) == 0 && access(state, F_OK) == 0,
              "checkpoint %ld deleted right after it was written", steps[i]);
        if (i == 2) CHECK(checkpoint_highest(dir) == 200, "highest is 200");
        if (i == 3) {
            for (int k = 0; k < 4; k++) {
                checkpoint_paths(dir, steps[k], model, NULL, sizeof model);
                CHECK(access(model, F_OK) == 0, "pair %ld pruned by saving step 20", steps[k]);
            }
        }
    }
    long gone[] = {10, 20, 100}, kept[] = {200, 300};
    for (int k = 0; k < 3; k++) {
        checkpoint_paths(dir, gone[k], model, NULL, sizeof model);
        CHECK(access(model, F_OK) != 0, "old pair %ld not pruned", gone[k]);
    }
    for (int k = 0; k < 2; k++) {
        checkpoint_paths(dir, kept[k], model, NULL, sizeof model);
        CHECK(access(model, F_OK) == 0, "pair %ld pruned", kept[k]);
    }
    /* a partial pair counts for highest, not for latest; no temporary is left behind */
    checkpoint_paths(dir, 400, NULL, state, sizeof state);
    write_bytes(state, "x", 1);
    CHECK(checkpoint_highest(dir) == 400 && checkpoint_latest(dir) == 300, "highest/latest with a partial pair");
    DIR *d = opendir(dir);
    struct dirent *e;
    int tmps = 0;
    while (d && (e = readdir(d))) tmps += strstr(e->d_name, ".tmp") != NULL;
    if (d) closedir(d);
    CHECK(tmps == 0, "%d temporary files left in the checkpoint folder", tmps);
    rm_rf(dir);
    free(p);
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

/* Packed documents: a sequence holding documents that each start at the separator token gives,
 * for every document, the logits of that document alone (its positions restarting at 0), and
 * the gradient of the packed loss is the sum of the documents' gradients. Every kernel. */
static void test_packed_documents(void) {
    GPT2Config c = tiny_config();
    const int SEP = 3, T = 8;
    /* documents of 3, 1 and 4 tokens, each starting at SEP */
    const int packed[8] = {SEP, 5, 7, SEP, SEP, 1, 9, 2};
    const int starts[3] = {0, 3, 4}, lens[3] = {3, 1, 4};
    float *p = random_params(&c, 77);
    int targets[8];
    for (int t = 0; t < T; t++) targets[t] = (packed[t] * 7 + 3) % c.vocab_size;
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) {
        ModelOptions o = {0};
        o.config = c;
        o.B = 1;
        o.T = T;
        o.attn = (AttnKernel)k;
        o.mask = ATTN_MASK_CAUSAL;
        o.precision = PRECISION_FP32;
        o.doc_sep.len = 1;
        o.doc_sep.tokens[0] = SEP;
        o.doc_positions = 1;
        char err[256];
        Model *m = cpu_backend.create(&o, err, sizeof err);
        CHECK(m != NULL, "packed-document model (%s): %s", attn_kernel_name((AttnKernel)k), err);
        if (!m) continue;
        cpu_backend.set_params(m, p);
        cpu_backend.forward(m, packed, targets, 1, T);
        float got[16], want[16];
        double worst = 0.0;
        for (int d = 0; d < 3; d++) {
            Model *one = make_model(&c, 1, lens[d], (AttnKernel)k);
            cpu_backend.set_params(one, p);
            cpu_backend.forward(one, packed + starts[d], NULL, 1, lens[d]);
            for (int t = 0; t < lens[d]; t++) {
                cpu_backend.logits_at(m, 0, starts[d] + t, got);
                cpu_backend.logits_at(one, 0, t, want);
                for (int v = 0; v < c.vocab_size; v++) {
                    double e = fabs((double)got[v] - want[v]);
                    if (e > worst) worst = e;
                }
            }
            cpu_backend.destroy(one);
        }
        CHECK(worst < 1e-5, "packed documents (%s): logits differ from each document alone by %g",
              attn_kernel_name((AttnKernel)k), worst);
        /* without the documents, the later documents see the earlier ones: the logits differ */
        o.doc_sep.len = 0;
        Model *plain = cpu_backend.create(&o, err, sizeof err);
        cpu_backend.set_params(plain, p);
        cpu_backend.forward(plain, packed, targets, 1, T);
        cpu_backend.logits_at(plain, 0, 6, got);
        cpu_backend.logits_at(m, 0, 6, want);
        double diff = 0.0;
        for (int v = 0; v < c.vocab_size; v++) diff += fabs((double)got[v] - want[v]);
        CHECK(diff > 1e-3, "packed documents (%s): the mask changed nothing (%g)", attn_kernel_name((AttnKernel)k), diff);
        cpu_backend.destroy(plain);
        cpu_backend.destroy(m);
    }
    free(p);
}

/* The separator: parsing (a token id, a byte string with escapes, refusals) and the per-token
 * document starts of a multi-byte separator such as enwik8's "<page>". */
static void test_doc_separator(void) {
    DocSep sep;
    char err[256], text[128];
    CHECK(doc_sep_parse("50256", 0, &sep, err, sizeof err) == 0 && sep.len == 1 && sep.tokens[0] == 50256,
          "--doc-sep 50256");
    CHECK(doc_sep_parse("10", 1, &sep, err, sizeof err) == 0 && sep.len == 1 && sep.tokens[0] == 10, "--doc-sep 10");
    CHECK(doc_sep_parse("<page>", 1, &sep, err, sizeof err) == 0 && sep.len == 6 && sep.tokens[0] == '<' &&
          sep.tokens[5] == '>', "--doc-sep '<page>'");
    CHECK(doc_sep_parse("\\n\\n", 1, &sep, err, sizeof err) == 0 && sep.len == 2 && sep.tokens[1] == '\n', "escapes");
    CHECK(doc_sep_parse("\\x31\\x30", 1, &sep, err, sizeof err) == 0 && sep.len == 2 && sep.tokens[0] == '1',
          "hex escapes");
    CHECK(doc_sep_parse("<page>", 0, &sep, err, sizeof err) != 0 && strstr(err, "token data"),
          "a byte string with token data: %s", err);
    CHECK(doc_sep_parse("70000", 0, &sep, err, sizeof err) != 0, "a token id over 65535");
    CHECK(doc_sep_parse("a\\q", 1, &sep, err, sizeof err) != 0 && strstr(err, "escape"), "a bad escape");
    CHECK(doc_sep_parse("0123456789abcdef0123456789abcdefX", 1, &sep, err, sizeof err) != 0, "over 32 bytes");
    CHECK(doc_sep_parse("", 1, &sep, err, sizeof err) != 0, "empty");
    doc_sep_parse("<p\\x01'", 1, &sep, err, sizeof err);
    doc_sep_describe(&sep, text, sizeof text);
    CHECK(strcmp(text, "'<p\\x01\\''") == 0, "describe: %s", text);
    doc_sep_json(&sep, text, sizeof text);
    CHECK(strcmp(text, "text:<p\\u0001'") == 0, "json: %s", text);
    doc_sep_parse("7", 1, &sep, err, sizeof err);
    doc_sep_json(&sep, text, sizeof text);
    CHECK(strcmp(text, "7") == 0 && doc_sep_max_token(&sep) == 7, "json of a token: %s", text);

    /* two rows of 12 bytes: "<pa" cut by the end of row 0 starts nothing; row 1 starts at 0 and 6 */
    const char *rows = "ab<page>x<pa" "<page><page>";
    int tok[24], doc[24], pos[24];
    for (int i = 0; i < 24; i++) tok[i] = (unsigned char)rows[i];
    doc_sep_parse("<page>", 1, &sep, err, sizeof err);
    doc_starts_of_batch(&sep, tok, 2, 12, doc, pos);
    const int want_doc[24] = {0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6};
    int same = 1;
    for (int i = 0; i < 24; i++) same &= doc[i] == want_doc[i] && pos[i] == i % 12 - want_doc[i];
    CHECK(same, "document starts of '<page>'");
}

/* A byte-string separator in a model: packed documents split at "<p>" give each document's logits
 * alone, as the one-token separator does (test_packed_documents). */
static void test_packed_documents_text_separator(void) {
    GPT2Config c = tiny_config();
    c.max_seq_len = 16;
    const char *text = "<p>ab<p>cde";
    const int T = 11, starts[2] = {0, 5}, lens[2] = {5, 6};
    int packed[11], targets[11];
    for (int t = 0; t < T; t++) packed[t] = (unsigned char)text[t] % c.vocab_size;
    for (int t = 0; t < T; t++) targets[t] = (packed[t] * 7 + 3) % c.vocab_size;
    float *p = random_params(&c, 78);
    ModelOptions o = {0};
    o.config = c;
    o.B = 1;
    o.T = T;
    o.attn = ATTN_FLASH;
    o.mask = ATTN_MASK_CAUSAL;
    o.precision = PRECISION_FP32;
    char err[256];
    o.doc_sep.len = 3;
    for (int i = 0; i < 3; i++) o.doc_sep.tokens[i] = (unsigned char)"<p>"[i] % c.vocab_size;
    o.doc_positions = 1;
    Model *m = cpu_backend.create(&o, err, sizeof err);
    CHECK(m != NULL, "text-separator model: %s", err);
    if (!m) { free(p); return; }
    cpu_backend.set_params(m, p);
    cpu_backend.forward(m, packed, targets, 1, T);
    double worst = 0.0;
    float got[16], want[16];
    for (int d = 0; d < 2; d++) {
        Model *one = make_model(&c, 1, lens[d], ATTN_FLASH);
        cpu_backend.set_params(one, p);
        cpu_backend.forward(one, packed + starts[d], NULL, 1, lens[d]);
        for (int t = 0; t < lens[d]; t++) {
            cpu_backend.logits_at(m, 0, starts[d] + t, got);
            cpu_backend.logits_at(one, 0, t, want);
            for (int v = 0; v < c.vocab_size; v++) worst = fmax(worst, fabs((double)got[v] - want[v]));
        }
        cpu_backend.destroy(one);
    }
    CHECK(worst < 1e-5, "text separator: logits differ from each document alone by %g", worst);
    cpu_backend.destroy(m);
    free(p);
}

/* clip_and_update is grad_norm, layers.h adamw_grad_scale and update: the same parameters and
 * moments bit for bit, with and without clipping and a loss scale; a non-finite norm skips the
 * step (weights and moments untouched) only when asked to. */
static void test_clip_and_update(void) {
    float gs = -1.0f;
    CHECK(adamw_grad_scale(8.0f, 1.0f, 4.0f, 1, &gs) == 1 && gs == 0.125f, "adamw_grad_scale(8, clip 1, S 4) = %g", gs);
    CHECK(adamw_grad_scale(1.0f, 3.0f, 2.0f, 1, &gs) == 1 && gs == 0.5f, "adamw_grad_scale(1, clip 3, S 2) = %g", gs);
    gs = -1.0f;
    CHECK(adamw_grad_scale(NAN, 1.0f, 1.0f, 1, &gs) == 0 && adamw_grad_scale(INFINITY, 0.0f, 1.0f, 1, &gs) == 0 &&
              gs == -1.0f, "adamw_grad_scale skips a non-finite norm");
    /* not skipped (no loss scaling): the old rule's arithmetic, clip = max_norm / inf = 0, or 1 for NaN */
    float g_inf = -1.0f, g_nan = -1.0f;
    CHECK(adamw_grad_scale(INFINITY, 1.0f, 1.0f, 0, &g_inf) == 1 && g_inf == 0.0f &&
              adamw_grad_scale(NAN, 1.0f, 1.0f, 0, &g_nan) == 1 && g_nan == 1.0f,
          "adamw_grad_scale without skipping: %g for inf, %g for NaN", g_inf, g_nan);
    GPT2Config c = tiny_config();
    const int B = 2, T = 5;
    size_t n = gpt2_num_params(&c);
    float *p = random_params(&c, 9);
    float *out[2][3];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 3; j++) out[k][j] = malloc(n * sizeof(float));
    int inputs[10], targets[10];
    uint64_t s = 3;
    random_tokens(inputs, 10, c.vocab_size, &s);
    random_tokens(targets, 10, c.vocab_size, &s);
    /* max_norm, S, the backward's loss scale, skip_nonfinite */
    const float cases[4][4] = {{0.0f, 1.0f, 1.0f, 0}, {1e-3f, 4.0f, 4.0f, 1}, {0.5f, 2.0f, INFINITY, 1},
                               {0.5f, 2.0f, INFINITY, 0}};
    for (int ci = 0; ci < 4; ci++) {
        const float max_norm = cases[ci][0], S = cases[ci][1], ls = cases[ci][2];
        const int skip = cases[ci][3] != 0.0f;
        float norms[2];
        for (int k = 0; k < 2; k++) {
            Model *m = make_model(&c, B, T, ATTN_NAIVE);
            cpu_backend.set_params(m, p);
            for (int step = 1; step <= 2; step++) {
                cpu_backend.zero_grad(m);
                cpu_backend.forward(m, inputs, targets, B, T);
                cpu_backend.backward(m, step == 2 ? ls : S, 1);
                AdamWStep a = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                               .grad_scale = 7.0f /* not read by clip_and_update */, .t = step};
                if (k == 0) {
                    norms[k] = cpu_backend.grad_norm(m);
                    if (adamw_grad_scale(norms[k], max_norm, S, skip, &a.grad_scale)) cpu_backend.update(m, &a);
                } else {
                    norms[k] = cpu_backend.clip_and_update(m, &a, max_norm, S, skip);
                }
            }
            cpu_backend.get_params(m, out[k][0]);
            cpu_backend.get_adam_state(m, out[k][1], out[k][2]);
            cpu_backend.destroy(m);
        }
        int same = memcmp(&norms[0], &norms[1], sizeof(float)) == 0;
        for (int j = 0; j < 3; j++) same &= memcmp(out[0][j], out[1][j], n * sizeof(float)) == 0;
        CHECK(same, "clip_and_update case %d: differs from grad_norm + adamw_grad_scale + update", ci);
        if (ci >= 2) { /* the second step's gradients are inf / NaN */
            CHECK(!isfinite(norms[1]), "case %d: the norm %g should not be finite", ci, norms[1]);
            size_t changed = 0;
            Model *m = make_model(&c, B, T, ATTN_NAIVE); /* step 1 alone: what a skipped step 2 leaves */
            cpu_backend.set_params(m, p);
            cpu_backend.zero_grad(m);
            cpu_backend.forward(m, inputs, targets, B, T);
            cpu_backend.backward(m, S, 1);
            AdamWStep a = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .t = 1};
            cpu_backend.clip_and_update(m, &a, max_norm, S, skip);
            float *ref = malloc(n * sizeof(float));
            cpu_backend.get_params(m, ref);
            for (size_t i = 0; i < n; i++) changed += memcmp(&ref[i], &out[1][0][i], sizeof(float)) != 0;
            CHECK(skip ? changed == 0 : changed > 0, "case %d (skip %d): %zu of %zu weights changed by the step", ci,
                  skip, changed, n);
            free(ref);
            cpu_backend.destroy(m);
        }
    }
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 3; j++) free(out[k][j]);
    free(p);
}

int main(void) {
    for (int k = 0; k < ATTN_NUM_KERNELS; k++) test_gradients_match_finite_differences((AttnKernel)k);
    test_kernels_agree();
    test_gradients_extensions();
    test_extensions_equivalences();
    test_grad_accumulation();
    test_clip_and_update();
    test_packed_documents();
    test_doc_separator();
    test_packed_documents_text_separator();
    test_overfits_one_batch();
    test_init();
    test_model_file();
    test_checkpoints();
    test_checksum64();
    test_model_file_checksum();
    test_bf16_rounding();
    test_model_file_bf16();
    test_model_file_ext();
    test_state_checks();
    test_resume_fallback();
    test_fifo_refused();
    test_temporaries();
    test_prune_keeps_written();
    test_schedule_and_sampler();
    return test_summary("test_model");
}
