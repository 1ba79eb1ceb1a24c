/* model/gpt2.h: GPT-2's shape, its parameters' layout and the presets.
 *
 * Parameters live in one contiguous fp32 array in llm.c's order (so the model file is that
 * array behind a 256-int header). Weight matrices are (out, in): y = x W^T + b.
 *   wte (Vp, C)   wpe (maxT, C)   ln1w, ln1b (L, C)   qkvw (L, Q, C)   qkvb (L, Q)
 *   attprojw (L, C, C)   attprojb (L, C)   ln2w, ln2b (L, C)   fcw (L, 4C, C)   fcb (L, 4C)
 *   fcprojw (L, C, 4C)   fcprojb (L, C)   lnfw, lnfb (C)
 * Vp is the vocabulary padded up (to a multiple of 128 when V > 256) so GPU matmuls tile well;
 * rows V..Vp-1 of wte are never used as targets and stay zero.
 *
 * Two extensions llm.c does not have (a plain GPT-2 has kv_heads 0 or H and learned positions,
 * and then the layout above is exactly llm.c's, Q = 3C):
 *   kv_heads = G < H   grouped-query attention: K and V have G heads of D = C/H channels, so
 *                      the fused projection has Q = C + 2*G*D outputs, rows [0, C) for the
 *                      queries, [C, C + G*D) for K and [C + G*D, Q) for V (qkvb the same)
 *   pos = ALIBI        no position table: wpe has 0 elements (the attention adds ALiBi's
 *                      per-head linear bias instead)
 */
#ifndef GPT2_H
#define GPT2_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    P_WTE = 0, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB,
    GPT2_NUM_PARAM_TENSORS
};

typedef struct {
    int max_seq_len;       /* maxT: rows of wpe */
    int vocab_size;        /* V */
    int padded_vocab_size; /* Vp >= V */
    int num_layers;        /* L */
    int num_heads;         /* H */
    int channels;          /* C, divisible by H */
    int kv_heads;          /* heads of K and V (grouped-query attention), dividing H; 0 or H
                            * is plain multi-head attention */
    int pos;               /* GPT2PosKind: GPT2_POS_LEARNED (wpe) or GPT2_POS_ALIBI (no wpe) */
} GPT2Config;

typedef enum { GPT2_POS_LEARNED = 0, GPT2_POS_ALIBI = 1, GPT2_NUM_POS } GPT2PosKind;

/* "learned", "alibi" (NULL for an unknown kind); from_name returns 0, or -1 when unknown. */
const char *gpt2_pos_name(int pos);
int gpt2_pos_from_name(const char *name, int *out);

/* K/V heads of the config: kv_heads, or num_heads when kv_heads is 0. */
int gpt2_kv_heads(const GPT2Config *c);
/* Outputs of the fused QKV projection: C + 2 * kv_heads * (C / H) (3C for plain GPT-2). */
int gpt2_qkv_channels(const GPT2Config *c);
/* 1 when the model is llm.c's GPT-2 (kv_heads 0 or H and learned positions), so its model file
 * is llm.c's version 3 or 5; 0 for grouped-query attention or ALiBi. */
int gpt2_is_plain(const GPT2Config *c);
/* 1 when a and b describe the same model (kv_heads 0 and H count as equal). */
int gpt2_config_same(const GPT2Config *a, const GPT2Config *b);

/* Element counts of the 16 tensors, in the order above; returns the total. */
size_t gpt2_param_sizes(const GPT2Config *c, size_t sizes[GPT2_NUM_PARAM_TENSORS]);
/* Offsets of the 16 tensors into the flat array. */
void gpt2_param_offsets(const GPT2Config *c, size_t offsets[GPT2_NUM_PARAM_TENSORS]);
const char *gpt2_param_name(int tensor);
/* 1 for the tensors AdamW's weight decay applies to (the matrices and embeddings), 0 for
 * biases and LayerNorm parameters, as GPT-2 training does. */
int gpt2_param_decays(int tensor);
/* 1 for the biases of the linear layers (qkvb, attprojb, fcb, fcprojb). */
int gpt2_param_is_linear_bias(int tensor);

/* The padded vocabulary llm.c would use: V itself up to 256, else the next multiple of 128. */
int gpt2_padded_vocab(int vocab_size);

/* Presets: "gpt2" (12, 12, 768), "gpt2-medium" (24, 16, 1024), "gpt2-large" (36, 20, 1280),
 * "gpt2-xl" (48, 25, 1600), and depth descriptors "dN" (N layers, channels 64*N, heads N,
 * as llm.c) -- with max_seq_len 1024 and vocab 256 unless overridden afterwards.
 * Returns 0, or -1 with a message in err. */
int gpt2_config_preset(const char *name, GPT2Config *out, char *err, size_t errlen);

/* Checks shapes are positive and consistent (heads divide channels, Vp >= V, kv_heads in
 * [0, H] and dividing H, a known position kind, ...).
 * Returns 0, or -1 with a message in err. */
int gpt2_config_validate(const GPT2Config *c, char *err, size_t errlen);

/* Matmul parameters (everything but embeddings' positional table and norms/biases matter little);
 * FLOPs of one training step per token (forward + backward = 3x forward), counting every
 * matmul (6 per weight per token: the QKV projection has C x (C + 2 kv_heads D) weights) and
 * the causal attention (T/2 keys per query on average; per query head, whatever kv_heads). */
size_t gpt2_num_params(const GPT2Config *c);
double gpt2_flops_per_token(const GPT2Config *c, int T, int causal);

/* GPT-2 initialisation into a flat parameter array: weights ~ N(0, 0.02), residual projections
 * (attprojw, fcprojw) ~ N(0, 0.02/sqrt(2L)), biases 0, LayerNorm weights 1, padded wte rows 0.
 * Deterministic for a seed. */
void gpt2_init_params(const GPT2Config *c, float *params, unsigned long long seed);

#ifdef __cplusplus
}
#endif
#endif
