/* model/gpt2.c: GPT-2's shape: parameter layout, presets, FLOP count, initialisation. */
#include "model/gpt2.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const PARAM_NAMES[GPT2_NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
};

const char *gpt2_param_name(int tensor) {
    return (tensor >= 0 && tensor < GPT2_NUM_PARAM_TENSORS) ? PARAM_NAMES[tensor] : "?";
}

int gpt2_param_decays(int tensor) {
    return tensor == P_WTE || tensor == P_WPE || tensor == P_QKVW || tensor == P_ATTPROJW ||
           tensor == P_FCW || tensor == P_FCPROJW;
}

int gpt2_param_is_linear_bias(int tensor) {
    return tensor == P_QKVB || tensor == P_ATTPROJB || tensor == P_FCB || tensor == P_FCPROJB;
}

static const char *const POS_NAMES[GPT2_NUM_POS] = {"learned", "alibi"};

const char *gpt2_pos_name(int pos) {
    return pos >= 0 && pos < GPT2_NUM_POS ? POS_NAMES[pos] : NULL;
}

int gpt2_pos_from_name(const char *name, int *out) {
    for (int i = 0; name && i < GPT2_NUM_POS; i++)
        if (strcmp(name, POS_NAMES[i]) == 0) {
            if (out) *out = i;
            return 0;
        }
    return -1;
}

int gpt2_kv_heads(const GPT2Config *c) {
    return c->kv_heads > 0 ? c->kv_heads : c->num_heads;
}

int gpt2_qkv_channels(const GPT2Config *c) {
    int D = c->num_heads > 0 ? c->channels / c->num_heads : 0;
    return c->channels + 2 * gpt2_kv_heads(c) * D;
}

int gpt2_is_plain(const GPT2Config *c) {
    return gpt2_kv_heads(c) == c->num_heads && c->pos == GPT2_POS_LEARNED;
}

int gpt2_config_same(const GPT2Config *a, const GPT2Config *b) {
    return a->max_seq_len == b->max_seq_len && a->vocab_size == b->vocab_size &&
           a->padded_vocab_size == b->padded_vocab_size && a->num_layers == b->num_layers &&
           a->num_heads == b->num_heads && a->channels == b->channels &&
           gpt2_kv_heads(a) == gpt2_kv_heads(b) && a->pos == b->pos;
}

size_t gpt2_param_sizes(const GPT2Config *c, size_t s[GPT2_NUM_PARAM_TENSORS]) {
    size_t Vp = c->padded_vocab_size, C = c->channels, L = c->num_layers, maxT = c->max_seq_len;
    size_t Q = (size_t)gpt2_qkv_channels(c);
    s[P_WTE] = Vp * C;
    s[P_WPE] = c->pos == GPT2_POS_ALIBI ? 0 : maxT * C;
    s[P_LN1W] = L * C;
    s[P_LN1B] = L * C;
    s[P_QKVW] = L * Q * C;
    s[P_QKVB] = L * Q;
    s[P_ATTPROJW] = L * C * C;
    s[P_ATTPROJB] = L * C;
    s[P_LN2W] = L * C;
    s[P_LN2B] = L * C;
    s[P_FCW] = L * 4 * C * C;
    s[P_FCB] = L * 4 * C;
    s[P_FCPROJW] = L * C * 4 * C;
    s[P_FCPROJB] = L * C;
    s[P_LNFW] = C;
    s[P_LNFB] = C;
    size_t total = 0;
    for (int i = 0; i < GPT2_NUM_PARAM_TENSORS; i++) total += s[i];
    return total;
}

void gpt2_param_offsets(const GPT2Config *c, size_t off[GPT2_NUM_PARAM_TENSORS]) {
    size_t s[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_sizes(c, s);
    size_t at = 0;
    for (int i = 0; i < GPT2_NUM_PARAM_TENSORS; i++) {
        off[i] = at;
        at += s[i];
    }
}

size_t gpt2_num_params(const GPT2Config *c) {
    size_t s[GPT2_NUM_PARAM_TENSORS];
    return gpt2_param_sizes(c, s);
}

int gpt2_padded_vocab(int V) {
    return V <= 256 ? V : (V + 127) / 128 * 128;
}

/* A training step costs 3x the forward (backward is two matmuls per forward matmul).
 * Forward per token: 2 FLOPs per matmul weight (C (C + 2 G D) + 9 C^2 per layer with G K/V
 * heads, 12 C^2 for plain GPT-2, + the Vp x C classifier)
 * plus attention: Q.K and P.V each 2 C FLOPs per (query, key) pair, over T keys, or on
 * average T/2 keys when causal (the convention of the public FLOP counts we compare with). */
double gpt2_flops_per_token(const GPT2Config *c, int T, int causal) {
    double C = c->channels, L = c->num_layers, Q = gpt2_qkv_channels(c);
    double matmul_params = L * (Q * C + 9.0 * C * C) + (double)c->padded_vocab_size * C;
    double keys = causal ? T / 2.0 : (double)T;
    return 6.0 * matmul_params + 3.0 * L * 4.0 * C * keys;
}

/* Depth descriptors as llm.c has them; other depths get 64 channels a head, d heads. */
static void depth_preset(int depth, int *channels, int *heads) {
    static const int table[][3] = {
        {6, 384, 6}, {12, 768, 12}, {24, 1024, 16}, {36, 1280, 20}, {48, 1600, 25}, {60, 1920, 30},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (table[i][0] == depth) {
            *channels = table[i][1];
            *heads = table[i][2];
            return;
        }
    }
    *channels = 64 * depth;
    *heads = depth;
}

int gpt2_config_preset(const char *name, GPT2Config *out, char *err, size_t errlen) {
    static const struct { const char *name; int L, H, C; } named[] = {
        {"gpt2", 12, 12, 768}, {"gpt2-medium", 24, 16, 1024},
        {"gpt2-large", 36, 20, 1280}, {"gpt2-xl", 48, 25, 1600},
    };
    GPT2Config c = {.max_seq_len = 1024, .vocab_size = 256, .padded_vocab_size = 256};
    int found = 0;
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        if (strcmp(name, named[i].name) == 0) {
            c.num_layers = named[i].L;
            c.num_heads = named[i].H;
            c.channels = named[i].C;
            found = 1;
        }
    }
    if (!found && name[0] == 'd' && name[1] >= '1' && name[1] <= '9') {
        char *end;
        long depth = strtol(name + 1, &end, 10);
        if (*end == '\0' && depth >= 1 && depth <= 256) {
            c.num_layers = (int)depth;
            depth_preset((int)depth, &c.channels, &c.num_heads);
            found = 1;
        }
    }
    if (!found) {
        snprintf(err, errlen,
                 "unknown model preset '%s' (expected gpt2, gpt2-medium, gpt2-large, gpt2-xl or dN "
                 "such as d12)", name);
        return -1;
    }
    *out = c;
    return 0;
}

int gpt2_config_validate(const GPT2Config *c, char *err, size_t errlen) {
    if (c->num_layers < 1 || c->num_heads < 1 || c->channels < 1 || c->vocab_size < 1 ||
        c->max_seq_len < 1) {
        snprintf(err, errlen, "model shape must be positive (layers %d, heads %d, channels %d, "
                 "vocab %d, max-seq-len %d)", c->num_layers, c->num_heads, c->channels,
                 c->vocab_size, c->max_seq_len);
        return -1;
    }
    if (c->channels % c->num_heads != 0) {
        snprintf(err, errlen, "heads (%d) must divide channels (%d)", c->num_heads, c->channels);
        return -1;
    }
    if (c->kv_heads < 0 || c->kv_heads > c->num_heads || c->num_heads % gpt2_kv_heads(c) != 0) {
        snprintf(err, errlen, "kv-heads (%d) must divide heads (%d)", c->kv_heads, c->num_heads);
        return -1;
    }
    if (!gpt2_pos_name(c->pos)) {
        snprintf(err, errlen, "unknown position kind %d (expected 0 learned or 1 alibi)", c->pos);
        return -1;
    }
    if (c->padded_vocab_size < c->vocab_size) {
        snprintf(err, errlen, "padded vocab (%d) is smaller than vocab (%d)",
                 c->padded_vocab_size, c->vocab_size);
        return -1;
    }
    if (c->vocab_size > 65536) {
        snprintf(err, errlen, "vocab %d is over 65536 (token files hold uint16 ids)", c->vocab_size);
        return -1;
    }
    return 0;
}

/* splitmix64: a small, well-mixed generator so initialisation is the same on every platform. */
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Fills x[0..n) with std * N(0, 1): Box-Muller turns two uniforms (u1 in (0, 1]) into two
 * independent normals, r cos(theta) and r sin(theta). */
static void fill_normal(float *x, size_t n, float std, uint64_t *state) {
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((splitmix64(state) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
        double u2 = (splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1)), theta = 2.0 * M_PI * u2;
        x[i] = std * (float)(r * cos(theta));
        if (i + 1 < n) x[i + 1] = std * (float)(r * sin(theta));
    }
}

void gpt2_init_params(const GPT2Config *c, float *params, unsigned long long seed) {
    size_t size[GPT2_NUM_PARAM_TENSORS], off[GPT2_NUM_PARAM_TENSORS];
    gpt2_param_sizes(c, size);
    gpt2_param_offsets(c, off);
    const float std = 0.02f, residual_std = 0.02f / sqrtf(2.0f * c->num_layers);
    const size_t chunk = 1 << 16; /* each chunk of a tensor has its own random stream, so the
                                   * values do not depend on the number of threads */
    for (int t = 0; t < GPT2_NUM_PARAM_TENSORS; t++) {
        float *p = params + off[t];
        if (t == P_LN1W || t == P_LN2W || t == P_LNFW) {
            for (size_t i = 0; i < size[t]; i++) p[i] = 1.0f;
        } else if (!gpt2_param_decays(t)) {
            memset(p, 0, size[t] * sizeof(float)); /* biases, LayerNorm shifts */
        } else {
            float s = (t == P_ATTPROJW || t == P_FCPROJW) ? residual_std : std;
            long nchunks = (long)((size[t] + chunk - 1) / chunk);
            #pragma omp parallel for schedule(static)
            for (long k = 0; k < nchunks; k++) {
                uint64_t state = (seed * 1000003ULL + (uint64_t)t) * 1000033ULL + (uint64_t)k;
                size_t end = ((size_t)k + 1) * chunk < size[t] ? ((size_t)k + 1) * chunk : size[t];
                fill_normal(p + (size_t)k * chunk, end - (size_t)k * chunk, s, &state);
            }
        }
    }
    /* padded vocabulary rows are never a target: keep them zero */
    size_t used = (size_t)c->vocab_size * c->channels;
    memset(params + off[P_WTE] + used, 0, (size[P_WTE] - used) * sizeof(float));
}
