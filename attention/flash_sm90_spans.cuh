/* attention/flash_sm90_spans.cuh: the mask family (FlashMask) in closed form for the Hopper
 * forward kernels (flash_sm90.cu, flash_sm90_tma.cu) and flash_sm90.cu's backward: per-row key
 * intervals, the warp-wide search for a document's end, and the per-element mask of a score
 * fragment from those intervals. Moved here unchanged from flash_sm90.cu so that both forwards
 * read the same code. */
#ifndef ATTENTION_FLASH_SM90_SPANS_CUH
#define ATTENTION_FLASH_SM90_SPANS_CUH

#include "attention/cuda_common.cuh"
#include "attention/flash_mask.cuh"

/* ---- the mask family in closed form (EXTRA) --------------------------------------------------
 * Every piece of the mask (attention.h) leaves query r one interval of keys, and key j one
 * interval of queries, whose two ends never decrease along r (along j); so the keys a block of
 * rows [r0, r1] meets lie in [lo(r0), hi(r1)), and a tile is visible pair by pair ("full") iff
 * lo(r1) <= its first column and its last column < hi(r0). The one end with no closed form is a
 * document's end (the next document's start): sm90_doc_end finds it by a warp-wide search.
 * This relies on attention.h's definition of doc: doc[t] is the position where t's document
 * starts (so doc[t] <= t, and t's document is [doc[t], the next start)), as attn_doc_from_starts
 * builds it; flash-mma's predicates compare doc values only. */

/* The first position in [lo, hi) whose document start exceeds v (d non-decreasing), or hi.
 * Warp-wide: every lane of the warp calls it with the same arguments; 32 probes per round
 * shrink the range 32-fold (3 dependent loads at T = 16K). */
__device__ __forceinline__ int sm90_doc_end(const int *d, int lo, int hi, int v) {
    const int lane = threadIdx.x & 31;
    if (lo >= hi) return hi;
    while (hi - lo > 32) { /* the answer lies in [lo, hi] */
        const int step = (hi - lo + 31) >> 5, p = lo + lane * step;
        const unsigned m = __ballot_sync(0xffffffffu, p >= hi || __ldg(d + p) > v);
        if (m == 0) { /* all 32 probes are < hi and <= v */
            lo += 31 * step + 1;
            continue;
        }
        const int k = __ffs(m) - 1;
        if (k == 0) return lo;
        hi = min(hi, lo + k * step); /* probe k is > v or >= hi, probe k - 1 is <= v */
        lo += (k - 1) * step + 1;
    }
    const int p = lo + lane;
    const unsigned m = __ballot_sync(0xffffffffu, p >= hi || __ldg(d + p) > v);
    return m ? lo + __ffs(m) - 1 : hi;
}

/* sm90_doc_end by one thread alone: a binary search (log2(hi - lo) dependent loads), for
 * arguments that differ between the lanes of a warp. */
__device__ __forceinline__ int sm90_doc_end_lane(const int *d, int lo, int hi, int v) {
    while (lo < hi) { /* the answer lies in [lo, hi] */
        const int mid = (lo + hi) >> 1;
        if (__ldg(d + mid) > v) hi = mid;
        else lo = mid + 1;
    }
    return hi;
}

/* The mask of one sequence b as row intervals. Queries r < T, keys j: the functions ending in
 * _doc are warp-wide (sm90_doc_end) and must be called with a warp-uniform argument. */
template <bool CAUSAL> struct Sm90Spans {
    int T, W;      /* W: the window (0: none), clamped to T (a window >= T masks nothing) */
    int kb, ke;    /* the valid keys [kb, ke), within [0, T] */
    const int *d;  /* the sequence's document starts, or NULL */

    /* First key query r sees. */
    __device__ __forceinline__ int klo(int r) const {
        int lo = max(kb, W > 0 ? r - W + 1 : 0);
        return d ? max(lo, __ldg(d + r)) : lo;
    }
    /* One past the last key query r sees, leaving out a non-causal document's end. */
    __device__ __forceinline__ int khi(int r) const { return min(ke, CAUSAL ? r + 1 : W > 0 ? r + W : T); }
    /* The same with the document's end (causal: r's own key comes first). */
    __device__ __forceinline__ int khi_doc(int r) const {
        const int hi = khi(r);
        return !CAUSAL && d && hi > r + 1 ? sm90_doc_end(d, r + 1, hi, __ldg(d + r)) : hi;
    }
    /* First query that sees key j, leaving out documents. */
    __device__ __forceinline__ int qlo(int j) const { return max(CAUSAL ? j : 0, W > 0 ? j - W + 1 : 0); }
    /* The same with j's document start (no query before it shares j's document). */
    __device__ __forceinline__ int qlo_doc(int j) const { return d ? max(qlo(j), __ldg(d + j)) : qlo(j); }
    /* One past the last query that sees key j, leaving out documents (0: j is padding or >= T). */
    __device__ __forceinline__ int qhi(int j) const { return j < kb || j >= ke ? 0 : min(T, W > 0 ? j + W : T); }
    /* The same with the end of j's document. */
    __device__ __forceinline__ int qhi_doc(int j) const {
        const int hi = qhi(j);
        return d && hi > j + 1 ? sm90_doc_end(d, j + 1, hi, __ldg(d + j)) : hi;
    }
    /* The query tiles of br rows that the key block [k0, k0 + bc) meets: [m_first, m_end), causal
     * from the diagonal's tile on; EXTRA the hull of the queries that see one of its valid keys
     * (none: m_end = m_first). Warp-wide (qhi_doc). */
    template <bool EXTRA>
    __device__ __forceinline__ void query_tiles(int k0, int bc, int br, int &m_first, int &m_end) const {
        m_first = CAUSAL ? k0 / br : 0;
        m_end = (T + br - 1) / br;
        if (EXTRA) {
            const int ka = max(k0, kb), kz = min(k0 + bc, ke);
            if (ka < kz) {
                const int lo = qlo_doc(ka), hi = qhi_doc(kz - 1);
                m_first = lo / br;
                m_end = min(m_end, (hi + br - 1) / br);
            } else {
                m_end = m_first;
            }
        }
    }
    /* qhi_doc for a lane's own key j of a warp whose keys end at jl (warp-uniform, j <= jl < T),
     * given end_l, the end of jl's document (sm90_doc_end, warp-wide). j's document is either
     * jl's (the same start) or ends at or before jl: then a search of at most jl - j positions. */
    __device__ __forceinline__ int qhi_doc_in(int j, int jl, int end_l) const {
        const int hi = qhi(j);
        if (!d || hi <= j + 1) return hi;
        const int v = __ldg(d + j);
        return min(hi, v == __ldg(d + jl) ? end_l : sm90_doc_end_lane(d, j + 1, jl + 1, v));
    }
};
template <bool CAUSAL, bool EXTRA>
__device__ __forceinline__ Sm90Spans<CAUSAL> sm90_spans(const FlashMask &x, int b, int T) {
    Sm90Spans<CAUSAL> sp = {T, 0, 0, T, nullptr};
    if (!EXTRA) return sp;
    sp.W = min(x.window, T);
    sp.kb = x.key_begin ? max(__ldg(x.key_begin + b), 0) : 0;
    sp.ke = x.key_end ? min(__ldg(x.key_end + b), T) : T;
    sp.d = x.doc ? x.doc + (long long)b * T : nullptr;
    return sp;
}

/* A score fragment (rows row0 + g, + 8 of the warp; columns col0 + 8 nt + c, + 1) -> -inf outside
 * the rows' column intervals [lo[half], hi[half]), and where cdoc (the tile's column document
 * starts in smem, or NULL) differs from the row's document rdoc[half]. ALiBi is added apart
 * (alibi_tile; -inf stays -inf): fused here it made the forward spill. */
template <int NT>
__device__ __forceinline__ void sm90_mask_tile(float s[][4], const int lo[2], const int hi[2], const int *cdoc,
                                               const int rdoc[2], int col0) {
    const int c = 2 * (threadIdx.x & 3);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        /* element (nt, e) of this half sits k = 8 nt + (e & 1) columns right of col0 + c */
        const int a = lo[half] - col0 - c, z = hi[half] - col0 - c;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int2 cd = cdoc ? *(const int2 *)(cdoc + nt * 8 + c) : make_int2(0, 0);
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int k = nt * 8 + e;
                bool dead = k < a || k >= z;
                if (cdoc) dead = dead || (e ? cd.y : cd.x) != rdoc[half];
                if (dead) s[nt][2 * half + e] = -INFINITY;
            }
        }
    }
}

#endif
