/* attention/attention.c: names, the kernel tables and shape helpers of attention.h. */
#include <math.h>
#include <string.h>
#include "attention/attention.h"
#include "attention/attention_impls.h"

static const char *const kernel_names[ATTN_NUM_KERNELS] = {"naive", "memeff", "flash"};
static const char *const mask_names[ATTN_NUM_MASKS] = {"none", "causal", "dense"};
static const char *const dtype_names[ATTN_NUM_DTYPES] = {"fp32", "bf16"};

static const AttnImpl *const cpu_table[ATTN_NUM_KERNELS] = {
    [ATTN_NAIVE] = &attn_naive_cpu,
    [ATTN_MEMEFF] = &attn_memeff_cpu,
    [ATTN_FLASH] = &attn_flash_cpu,
};

/* Index of `name` in names[0..n), or -1. */
static int find_name(const char *const *names, int n, const char *name) {
    if (!name) return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

const char *attn_kernel_name(AttnKernel k) {
    if (k == ATTN_AUTO) return "auto";
    return (k >= 0 && k < ATTN_NUM_KERNELS) ? kernel_names[k] : "unknown";
}

int attn_kernel_from_name(const char *name, AttnKernel *out) {
    if (name && strcmp(name, "auto") == 0) {
        if (out) *out = ATTN_AUTO;
        return 0;
    }
    int i = find_name(kernel_names, ATTN_NUM_KERNELS, name);
    if (i < 0) return -1;
    if (out) *out = (AttnKernel)i;
    return 0;
}

const char *attn_mask_name(AttnMaskKind m) {
    return (m >= 0 && m < ATTN_NUM_MASKS) ? mask_names[m] : "unknown";
}

int attn_mask_from_name(const char *name, AttnMaskKind *out) {
    int i = find_name(mask_names, ATTN_NUM_MASKS, name);
    if (i < 0) return -1;
    if (out) *out = (AttnMaskKind)i;
    return 0;
}

const char *attn_dtype_name(AttnDtype d) {
    return (d >= 0 && d < ATTN_NUM_DTYPES) ? dtype_names[d] : "unknown";
}

const AttnImpl *attn_impl(AttnKernel k, AttnPlace place) {
    if (k < 0 || k >= ATTN_NUM_KERNELS) return NULL; /* ATTN_AUTO needs a shape: resolve first */
    switch (place) {
    case ATTN_CPU:
        return cpu_table[k];
    case ATTN_CUDA:
        return attn_cuda_table[k];
    default:
        return NULL;
    }
}

AttnShape attn_shape_packed(int B, int T, int H, int D, AttnMaskKind mask, AttnDtype dtype) {
    AttnShape s;
    memset(&s, 0, sizeof s);
    s.B = B;
    s.T = T;
    s.H = H;
    s.D = D;
    s.scale = D > 0 ? 1.0f / sqrtf((float)D) : 0.0f;
    s.ld_qkv = 3 * H * D;
    s.ld_o = H * D;
    s.mask.kind = mask;
    s.dtype = dtype;
    return s;
}

AttnShape attn_shape_packed_gqa(int B, int T, int H, int Hkv, int D, AttnMaskKind mask,
                                AttnDtype dtype) {
    AttnShape s = attn_shape_packed(B, T, H, D, mask, dtype);
    s.Hkv = Hkv;
    s.ld_qkv = (H + 2 * Hkv) * D;
    return s;
}

int attn_mask_has_extras(const AttnMask *m) {
    if (!m) return 0;
    return m->window > 0 || m->doc || m->key_begin || m->key_end || m->alibi_slopes || m->dbias ||
           (m->bias && m->kind != ATTN_MASK_DENSE);
}

int attn_doc_from_starts(int B, int T, const int *starts, const int *offsets, int *doc) {
    if (B < 0 || T < 0 || !offsets || !doc || (B > 0 && T > 0 && !starts && offsets[B] > offsets[0]))
        return -1;
    for (int b = 0; b < B; b++) {
        int *row = doc + (size_t)b * T, start = 0, prev = -1;
        int n = offsets[b], end = offsets[b + 1];
        if (end < n) return -1;
        for (int t = 0; t < T; t++) {
            /* the next listed start at or before t opens a new document */
            while (n < end && starts[n] <= t) {
                if (starts[n] < 0 || starts[n] <= prev) return -1;
                prev = start = starts[n++];
            }
            row[t] = start;
        }
        for (; n < end; n++) /* starts past the sequence: out of range, or not increasing */
            if (starts[n] >= T || starts[n] <= prev) return -1;
    }
    return 0;
}

void attn_alibi_slopes(int H, float *slopes) {
    for (int h = 0; h < H; h++) slopes[h] = (float)exp2(-8.0 * (h + 1) / H);
}

/* On the CPU: flash (it needs O(T) saved memory and is the fastest of the three there). On
 * CUDA: the first of flash, memeff, naive that this build has and that supports the shape, or
 * ATTN_AUTO when none does (e.g. a CPU-only build, whose CUDA table is empty). */
AttnKernel attn_resolve_auto(const AttnShape *s, AttnPlace place) {
    if (place == ATTN_CPU) return ATTN_FLASH;
    static const AttnKernel preference[] = {ATTN_FLASH, ATTN_MEMEFF, ATTN_NAIVE};
    for (size_t i = 0; i < sizeof preference / sizeof preference[0]; i++) {
        const AttnImpl *impl = attn_impl(preference[i], place);
        if (impl && (!impl->unsupported || impl->unsupported(s) == NULL)) return preference[i];
    }
    return ATTN_AUTO;
}
