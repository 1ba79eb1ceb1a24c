/* dev/bench_trainer.cu: tokens/sec, MFU and device memory of full training steps on the GPU.
 *
 *   build/dev/bench_trainer MODEL B T [steps] [fp32] [graphs] [recompute=none|gelu|all] [nofusion] [profile] [attn=NAME]
 * MODEL is a preset (gpt2, gpt2-medium, gpt2-large, dN); vocabulary 50257 padded to 50304.
 * A step is zero_grad, forward, backward, grad_norm, AdamW (what the trainer does); tokens are
 * random. Reports the median step over the timed steps (after 3 warm-up steps). profile: the
 * per-part table of train_gpt2 --profile, on stderr at the end.
 */
#include "model/backend.h"
#include "model/cuda_extras.h"
#include "model/gpt2.h"
#include "layers/layers_cuda.h"
#include <algorithm>
#include <chrono>
#include <vector>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL B T [steps] [fp32] [graphs] [recompute=none|gelu|all] [nofusion] [profile] [attn=NAME]\n",
                argv[0]);
        return 2;
    }
    char err[512];
    GPT2Config c;
    if (gpt2_config_preset(argv[1], &c, err, sizeof err) != 0) { fprintf(stderr, "%s\n", err); return 2; }
    c.vocab_size = 50257;
    c.padded_vocab_size = gpt2_padded_vocab(c.vocab_size);
    int B = atoi(argv[2]), T = atoi(argv[3]), steps = argc > 4 ? atoi(argv[4]) : 10;
    ModelOptions o;
    model_options_defaults(&o);
    o.config = c;
    o.B = B; o.T = T;
    o.attn = ATTN_NAIVE;
    o.mask = ATTN_MASK_CAUSAL;
    o.precision = PRECISION_BF16;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "fp32")) o.precision = PRECISION_FP32;
        else if (!strcmp(argv[i], "graphs")) o.cuda_graphs = 1;
        else if (!strncmp(argv[i], "recompute=", 10)) {
            if (recompute_from_name(argv[i] + 10, &o.recompute) != 0) { fprintf(stderr, "recompute=none|gelu|all\n"); return 2; }
        }
        else if (!strcmp(argv[i], "nofusion")) o.matmul_fusion = 0;
        else if (!strcmp(argv[i], "profile")) o.profile = 1;
        else if (!strncmp(argv[i], "attn=", 5)) attn_kernel_from_name(argv[i] + 5, &o.attn);
    }
    const Backend *be = cuda_backend_if_available(err, sizeof err);
    if (!be) { fprintf(stderr, "%s\n", err); return 1; }
    const CudaExtras *x = cuda_extras();
    Model *m = be->create(&o, err, sizeof err);
    if (!m) { printf("%s B=%d T=%d: %s\n", argv[1], B, T, err); return 0; }
    size_t sizes[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, sizes);
    std::vector<float> params(n);
    gpt2_init_params(&c, params.data(), 1);
    be->set_params(m, params.data());
    std::vector<int> inp((size_t)B * T), tgt((size_t)B * T);
    unsigned long long s = 88172645463325252ull;
    for (size_t i = 0; i < inp.size(); i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        inp[i] = (int)(s % c.vocab_size);
        tgt[i] = (int)((s >> 20) % c.vocab_size);
    }
    std::vector<double> ms;
    float loss = 0, norm = 0;
    for (int step = 0; step < steps + 3; step++) {
        auto t0 = std::chrono::steady_clock::now();
        be->zero_grad(m);
        loss = be->forward(m, inp.data(), tgt.data(), B, T);
        be->backward(m, 1.0f, 1);
        AdamWStep st = {1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, step + 1};
        norm = be->clip_and_update(m, &st, 1.0f, 1.0f, 0); /* as the trainer's step, clipping at 1 */
        cudaDeviceSynchronize();
        auto t1 = std::chrono::steady_clock::now();
        if (step >= 3) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    double med = ms[ms.size() / 2];
    double tok_s = (double)B * T / (med / 1e3);
    double peak = x->peak_tflops(o.precision, o.tf32, 0.0);
    double mfu = peak > 0 ? gpt2_flops_per_token(&c, T, 1) * tok_s / (peak * 1e12) : 0.0;
    size_t fr = 0, tot = 0;
    x->mem_info(&fr, &tot);
    char name[128];
    x->device_name(name, sizeof name);
    printf("%-11s B=%-3d T=%d %s%s recompute %s: %7.2f ms/step (min %.2f) %8.0f tok/s  MFU %4.1f%%  held %.2f GiB  "
           "device used %.2f GiB  loss %.4f norm %.3f  [%s]\n",
           argv[1], B, T, precision_name(o.precision), o.cuda_graphs ? " graphs" : "", recompute_name(o.recompute),
           med, ms[0], tok_s, 100 * mfu, be->memory_in_use(m) / 1073741824.0, (tot - fr) / 1073741824.0, loss,
           norm, name);
    be->destroy(m);
    return 0;
}
