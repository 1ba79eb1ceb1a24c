/* attention/cpu_common.c: shape checks shared by the CPU kernels. */
#include <stdint.h>
#include <stdio.h>
#include "attention/cpu_common.h"

/* Bytes of a token-major tensor of B*T rows with leading dimension ld, or 0 on overflow. */
static size_t tensor_bytes(int B, int T, int ld) {
    size_t rows, elems, bytes;
    if (__builtin_mul_overflow((size_t)B, (size_t)T, &rows)) return 0;
    if (__builtin_mul_overflow(rows, (size_t)ld, &elems)) return 0;
    if (__builtin_mul_overflow(elems, sizeof(float), &bytes)) return 0;
    return bytes;
}

const char *attn_cpu_unsupported(const AttnShape *s) {
    if (!s) return "no shape given";
    if (s->dtype != ATTN_FP32) return "the CPU kernels compute in fp32 only";
    if (s->B < 1 || s->T < 1 || s->H < 1 || s->D < 1) return "B, T, H and D must be >= 1";
    long long width = (long long)s->H * s->D;
    if (width > INT32_MAX) return "H*D is too large";
    if (s->ld_qkv < width || s->ld_o < width) return "ld_qkv and ld_o must be >= H*D";
    if (!tensor_bytes(s->B, s->T, s->ld_qkv) || !tensor_bytes(s->B, s->T, s->ld_o))
        return "tensors too large for this machine's address space";
    if (!isfinite(s->scale)) return "scale must be finite";
    const AttnMask *m = &s->mask;
    if (s->Hkv < 0 || s->H % attn_kv_heads(s)) return "Hkv must divide H";
    switch (m->kind) {
    case ATTN_MASK_NONE:
    case ATTN_MASK_CAUSAL:
        break;
    case ATTN_MASK_DENSE:
        if (!m->bias) return "a dense mask needs a bias array";
        break;
    default:
        return "unknown mask kind";
    }
    if (m->bias && (m->stride_b < 0 || m->stride_h < 0 || m->stride_row < 0))
        return "bias strides must be >= 0";
    if (m->dbias && !m->bias) return "a bias gradient needs a bias";
    if (m->window < 0) return "window must be >= 0";
    if (m->doc)
        for (int b = 0; b < s->B; b++)
            for (int t = 1; t < s->T; t++)
                if (m->doc[(size_t)b * s->T + t] < m->doc[(size_t)b * s->T + t - 1])
                    return "doc must be non-decreasing in every sequence";
    return NULL;
}

/* First t in [lo, hi) with row[t] > x (upper) or >= x (!upper), row non-decreasing. */
static int doc_search(const int *row, int lo, int hi, int x, int upper) {
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (upper ? row[mid] <= x : row[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void attn_row_keys(const AttnShape *s, int b, int i, int *lo, int *hi) {
    const AttnMask *m = &s->mask;
    const int T = s->T, causal = m->kind == ATTN_MASK_CAUSAL;
    int a = 0, e = causal ? i + 1 : T;
    if (m->window > 0) {
        a = attn_max(a, i - m->window + 1); /* causal: (i - w, i]; else |i - j| < w */
        if (!causal && i < T - m->window) e = attn_min(e, i + m->window);
    }
    if (m->doc) {
        const int *row = m->doc + (size_t)b * T;
        a = attn_max(a, doc_search(row, 0, i, row[i], 0));
        e = attn_min(e, doc_search(row, i + 1, T, row[i], 1));
    }
    if (m->key_begin) a = attn_max(a, m->key_begin[b]);
    if (m->key_end) e = attn_min(e, m->key_end[b]);
    e = attn_max(0, attn_min(e, T)); /* normalised: 0 <= lo <= hi <= T */
    *lo = attn_max(0, attn_min(a, e));
    *hi = e;
}

void attn_key_range(const AttnShape *s, int b, int i0, int i1, int *j0, int *j1) {
    int a = s->T, e = 0;
    for (int i = i0; i < i1; i++) {
        int lo, hi;
        attn_row_keys(s, b, i, &lo, &hi);
        if (lo >= hi) continue;
        a = attn_min(a, lo);
        e = attn_max(e, hi);
    }
    *j0 = a;
    *j1 = e;
}

int attn_cpu_check_call(const char *why_unsupported, const char *who, int pointers_present) {
    const char *why = why_unsupported;
    if (!why && !pointers_present) why = "a required buffer is NULL";
    return why ? attn_cpu_error(who, why) : 0;
}

int attn_cpu_error(const char *who, const char *why) {
    fprintf(stderr, "attention: %s: %s\n", who, why);
    return -1;
}
