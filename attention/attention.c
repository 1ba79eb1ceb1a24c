/* attention/attention.c: the kernel registry, names and the shape and mask helpers of attention.h. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "attention/attention.h"
#include "attention/attention_impls.h"

/* The CUDA implementation objects, declared weak: one that is not linked into this program reads
 * as NULL, so that row's CUDA column is empty (a CPU-only build has none, a build without cuDNN no
 * cudnn). The strong definitions are in attention/<kernel>.cu. (The CPU objects of
 * attention_impls.h stay strong references: that is what pulls them out of libcpu.a.) */
#define ATTN_WEAK __attribute__((weak))
extern const AttnImpl attn_naive_cuda ATTN_WEAK, attn_memeff_cuda ATTN_WEAK, attn_flash_cuda ATTN_WEAK;
extern const AttnImpl attn_flash_sm90_cuda ATTN_WEAK, attn_flash_mma_cuda ATTN_WEAK, attn_flash_tma_cuda ATTN_WEAK;
extern const AttnImpl attn_cudnn_cuda ATTN_WEAK;

/* The registry: one row per kernel, in AttnKernel order. auto_rank orders the kernels for
 * ATTN_AUTO (lower first) on either place; -1: never chosen by auto directly (the flash variants,
 * reached through flash's `variants`). Adding a kernel is its enum value, its object's
 * declaration above (or in attention_impls.h for a CPU one) and one row here; names, attn_impl(), the resolvers, the help texts, the
 * shared library, dev/bench_attention and the tests all read this table. */
enum { ATTN_MAX_VARIANTS = 3 };
typedef struct {
    AttnKernel kernel;
    const char *name;
    const AttnImpl *cpu, *cuda;
    int auto_rank;
    AttnKernel variants[ATTN_MAX_VARIANTS]; /* the variants attn_resolve picks among, in preference order */
    int unresolved_variant;   /* 1: a variant of another kernel that attn_resolve does not pick (by name only) */
} AttnKernelRow;

#define NO_VARIANTS {ATTN_AUTO, ATTN_AUTO, ATTN_AUTO}
static const AttnKernelRow kernel_rows[ATTN_NUM_IMPLS] = {
    {ATTN_NAIVE, "naive", &attn_naive_cpu, &attn_naive_cuda, 2, NO_VARIANTS, 0},
    {ATTN_MEMEFF, "memeff", &attn_memeff_cpu, &attn_memeff_cuda, 1, NO_VARIANTS, 0},
    /* flash on CUDA: the TMA, warp-specialised kernels (flash-tma: fwd+bwd 1.28-1.86x flash-sm90's
     * on an H200, 2026-12-02, dev/attention_notes.md v10), else the wgmma ones, else mma.sync */
    {ATTN_FLASH, "flash", &attn_flash_cpu, &attn_flash_cuda, 0, {ATTN_FLASH_TMA, ATTN_FLASH_SM90, ATTN_FLASH_MMA}, 0},
    {ATTN_FLASH_SM90, "flash-sm90", NULL, &attn_flash_sm90_cuda, -1, NO_VARIANTS, 0},
    {ATTN_FLASH_MMA, "flash-mma", NULL, &attn_flash_mma_cuda, -1, NO_VARIANTS, 0},
    {ATTN_CUDNN, "cudnn", NULL, &attn_cudnn_cuda, 3, NO_VARIANTS, 0},
    {ATTN_FLASH_TMA, "flash-tma", NULL, &attn_flash_tma_cuda, -1, NO_VARIANTS, 0},
};

static const char *const mask_names[ATTN_NUM_MASKS] = {"none", "causal", "dense"};
static const char *const dtype_names[ATTN_NUM_DTYPES] = {"fp32", "bf16", "fp16"};

/* Index of `name` in names[0..n), or -1. */
static int find_name(const char *const *names, int n, const char *name) {
    if (!name) return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

const char *attn_kernel_name(AttnKernel k) {
    if (k == ATTN_AUTO) return "auto";
    return (k >= 0 && k < ATTN_NUM_IMPLS) ? kernel_rows[k].name : "unknown";
}

int attn_kernel_from_name(const char *name, AttnKernel *out) {
    if (!name) return -1;
    if (strcmp(name, "auto") == 0) {
        if (out) *out = ATTN_AUTO;
        return 0;
    }
    for (int i = 0; i < ATTN_NUM_IMPLS; i++)
        if (strcmp(kernel_rows[i].name, name) == 0) {
            if (out) *out = kernel_rows[i].kernel;
            return 0;
        }
    return -1;
}

/* "naive, memeff, flash, ...": built once from the registry (C string literals cannot be). */
static char kernel_list[ATTN_NUM_IMPLS * 32];
static pthread_once_t kernel_list_once = PTHREAD_ONCE_INIT;
static void build_kernel_list(void) {
    size_t at = 0;
    for (int i = 0; i < ATTN_NUM_IMPLS; i++)
        at += (size_t)snprintf(kernel_list + at, sizeof kernel_list - at, "%s%s", i ? ", " : "",
                               kernel_rows[i].name);
}

const char *attn_kernel_names_list(void) {
    pthread_once(&kernel_list_once, build_kernel_list);
    return kernel_list;
}

int attn_kernel_is_variant(AttnKernel k) {
    if (k >= 0 && k < ATTN_NUM_IMPLS && kernel_rows[k].unresolved_variant) return 1;
    for (int i = 0; i < ATTN_NUM_IMPLS; i++)
        for (int v = 0; v < ATTN_MAX_VARIANTS; v++)
            if (k != ATTN_AUTO && kernel_rows[i].variants[v] == k) return 1;
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
    if (k < 0 || k >= ATTN_NUM_IMPLS) return NULL; /* ATTN_AUTO needs a shape: resolve first */
    switch (place) {
    case ATTN_CPU:
        return kernel_rows[k].cpu;
    case ATTN_CUDA:
        return kernel_rows[k].cuda;
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

/* The best-ranked kernel that `place` has and that supports s. When none does: on the CPU the
 * best-ranked kernel the CPU has anyway (flash; its unsupported() then says why), on CUDA
 * ATTN_AUTO (e.g. a CPU-only build, whose CUDA column is empty). */
AttnKernel attn_resolve(AttnKernel k, const AttnShape *s, AttnPlace place) {
    if (k == ATTN_AUTO) k = attn_resolve_auto(s, place);
    if (k < 0 || k >= ATTN_NUM_IMPLS) return k;
    for (int i = 0; i < ATTN_MAX_VARIANTS; i++) {
        AttnKernel v = kernel_rows[k].variants[i];
        const AttnImpl *impl = v >= 0 ? attn_impl(v, place) : NULL;
        if (impl && (!impl->unsupported || impl->unsupported(s) == NULL)) return v;
    }
    return k;
}

AttnKernel attn_resolve_auto(const AttnShape *s, AttnPlace place) {
    /* Rows in rank order, each asked only after every better-ranked one refused (so cudnn, last,
     * builds its cuDNN graphs only when none of ours runs the shape). */
    AttnKernel top = ATTN_AUTO;
    int done[ATTN_NUM_IMPLS] = {0};
    for (;;) {
        const AttnKernelRow *next = NULL;
        for (int i = 0; i < ATTN_NUM_IMPLS; i++) {
            const AttnKernelRow *row = &kernel_rows[i];
            if (done[i] || row->auto_rank < 0 || !attn_impl(row->kernel, place)) continue;
            if (!next || row->auto_rank < next->auto_rank) next = row;
        }
        if (!next) break;
        done[next->kernel] = 1;
        if (top == ATTN_AUTO) top = next->kernel;
        const AttnImpl *impl = attn_impl(next->kernel, place);
        if (!impl->unsupported || impl->unsupported(s) == NULL) return next->kernel;
    }
    return place == ATTN_CPU ? top : ATTN_AUTO;
}
