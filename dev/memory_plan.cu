/* dev/memory_plan.cu: the CUDA backend's memory plan for a configuration, without a GPU.
 *
 *   build/dev/memory_plan MODEL B T [fp32|bf16|fp16] [recompute=none|gelu|all] [keep=K] [attn=NAME]
 *                         [vocab=V] [world=N] [zero] [chunk=ROWS]
 * MODEL is a preset (gpt2, gpt2-medium, ...; default vocabulary 50257, padded to 50304). Prints
 * every buffer of model/memory_plan_cuda.h (arena, phases, offset, MiB, bytes per token) and the
 * totals the backend would hold (its memory_in_use); nothing touches a device (memory_plan
 * measures with NULL bases). The CUDA context and libraries come on top of this on a GPU.
 */
#include "model/backend.h"
#include "model/gpt2.h"
#include "model/grad_sync_cuda.h"
#include "model/memory_plan_cuda.h"
#include "attention/attention.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL B T [fp32|bf16|fp16] [recompute=none|gelu|all] [keep=K] [attn=NAME] [vocab=V] "
                "[world=N] [zero] [chunk=ROWS]\n", argv[0]);
        return 2;
    }
    char err[512];
    GPT2Config c;
    if (gpt2_config_preset(argv[1], &c, err, sizeof err) != 0) { fprintf(stderr, "%s\n", err); return 2; }
    c.vocab_size = 50257;
    ModelOptions o;
    model_options_defaults(&o);
    o.B = atoi(argv[2]);
    o.T = atoi(argv[3]);
    o.attn = ATTN_FLASH_SM90;
    o.mask = ATTN_MASK_CAUSAL;
    o.precision = PRECISION_BF16;
    o.grad_comm = PRECISION_BF16;
    for (int i = 4; i < argc; i++) {
        const char *a = argv[i];
        if (precision_from_name(a, &o.precision) == 0) continue;
        if (!strncmp(a, "recompute=", 10) && recompute_from_name(a + 10, &o.recompute) == 0) continue;
        if (!strncmp(a, "attn=", 5) && attn_kernel_from_name(a + 5, &o.attn) == 0) continue;
        if (!strncmp(a, "keep=", 5)) { o.keep_layers = atoi(a + 5); continue; }
        if (!strncmp(a, "vocab=", 6)) { c.vocab_size = atoi(a + 6); continue; }
        if (!strncmp(a, "world=", 6)) { o.world = atoi(a + 6); continue; }
        if (!strncmp(a, "chunk=", 6)) { o.logits_chunk_rows = atoi(a + 6); continue; }
        if (!strcmp(a, "zero")) { o.zero_stage = 1; continue; }
        fprintf(stderr, "unknown argument '%s'\n", a);
        return 2;
    }
    if (o.B < 1 || o.T < 1 || c.vocab_size < 1) { fprintf(stderr, "bad B, T or vocab\n"); return 2; }
    c.padded_vocab_size = gpt2_padded_vocab(c.vocab_size);
    if (o.T > c.max_seq_len) c.max_seq_len = o.T;
    o.config = c;
    const AttnImpl *attn = attn_impl(o.attn, ATTN_CUDA);
    if (!attn) { fprintf(stderr, "no CUDA attention '%s' in this build\n", attn_kernel_name(o.attn)); return 2; }
    size_t off[GPT2_NUM_PARAM_TENSORS], size[GPT2_NUM_PARAM_TENSORS];
    size_t n = gpt2_param_sizes(&c, size);
    gpt2_param_offsets(&c, off);
    GradSync gs;
    gsync_plan(&gs, &o, n, off, size);
    MemPlanInput in;
    memplan_input(&o, attn, &gs, &in);
    MemoryLayout lay;
    memory_plan(&in, o.B, NULL, NULL, NULL, &lay);
    printf("%s B=%d T=%d vocab %d (padded %d), %s, recompute %s (last %d layers keep), attention %s, world %d%s: %zu parameters\n",
           argv[1], o.B, o.T, c.vocab_size, c.padded_vocab_size, precision_name(o.precision),
           recompute_name(o.recompute), o.keep_layers, attn_kernel_name(o.attn), gs.world, gs.zero ? " (ZeRO-1)" : "", n);
    memory_plan_print(&lay, o.B, o.T, stdout);
    return 0;
}
