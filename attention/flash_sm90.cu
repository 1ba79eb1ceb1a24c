/* attention/flash_sm90.cu: the flash kernels on Hopper's warpgroup MMA (wgmma, sm_90a).
 *
 * Same algorithms and outputs as flash.cu (O and the natural log-sum-exp L per row forward; dK,
 * dV and the fp32 dQ accumulator backward), on 64 x N x 16 warpgroup products instead of
 * 16 x 8 x 16 warp products. The forward:
 *   one block per (query tile of Br = 64 * kWarpgroups rows, batch*head); warpgroup w owns rows
 *   64w..64w+63 of the Q tile (smem, read by wgmma directly); K and V tiles of Bc keys stream
 *   through a ring of kStages SW128 smem buffers by cp.async, kPrefetch tiles ahead. Per tile:
 *     S = Q K_j^T      (wgmma, A = Q and B = K from smem, both K-major)
 *     mask, online softmax in base 2 (tc_attention.cuh, unchanged: the accumulator layout is
 *     mma.sync's), P to 16-bit A fragments in registers
 *     O += P V_j       (wgmma, B = V from smem, MN-major via the transpose bit)
 *   P V_j is left in flight while the warpgroup moves on to the next tile's S = Q K^T; waiting
 *   for that S also retires P V_j before O is rescaled. The ring leaves two tiles between a
 *   buffer's last reader (P V_j, possibly in flight) and its next writer: kStages =
 *   kPrefetch + 2, and one barrier per tile.
 * The backward's main kernel is described above flash_bwd_sm90_kernel.
 * The mask family beyond causal (window, documents, key padding, ALiBi: FlashMask) runs in the
 * EXTRA instantiation of each kernel (a template bool; the plain causal / no-mask kernels are
 * the same code without it): the tiles a block visits, the tiles that need a per-element mask and
 * the mask itself come from closed forms of each row's key interval (Sm90Spans below), so that
 * cost follows the unmasked area. Grouped-query attention: query head h reads K/V head
 * h / group in place; the backward runs one block per (key tile, batch, K/V head) that loops
 * over the group's query heads, so dK and dV are summed in registers.
 * Why: mma.sync streams every B fragment through registers with ldmatrix (~0.3 loads per MMA)
 * and kept the tensor cores at roughly 60% (dev/attention_notes.md, v5); wgmma reads its
 * operands straight from shared memory and runs asynchronously to the softmax.
 * Register budgets are what decide the shapes: ptxas serializes every wgmma (warning C7512/C7515)
 * when the accumulators in flight do not fit, which cost ~20% in the first version.
 * Element type E (bf16 or fp16) is a template parameter of both kernels: the wgmma wrappers
 * name the instruction's input type from it, and P, dS, O, dK, dV are rounded to it; everything
 * else (descriptors, swizzled tiles, fp32 accumulators) is the same for both.
 * Built only for sm_90a (Makefile: -DFLASH_SM90); elsewhere the entry points answer -1 and
 * flash.cu runs its own kernels (attn_flash_mma_cuda always does).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "attention/attn_params.cuh"
#include "attention/cuda_common.cuh"
#include "attention/flash_mask.cuh"
#include "attention/flash_sm90.h"
#include "attention/flash_sm90_spans.cuh"
#include "attention/tc_attention.cuh"
#include "attention/wgmma_sm90.cuh"

#ifndef FLASH_SM90
#define FLASH_SM90 0
#endif

template <int D_> struct Sm90FwdTraits {
    static constexpr int D = D_;
    static constexpr int kWarpgroups = 3;
    /* D = 128 keeps O (64 registers) and Q (32) in registers: 64-key tiles leave room for S */
    static constexpr int Bc = D_ == 64 ? 128 : 64;
    static constexpr int kPrefetch = 1;
    /* S = Q K^T reads Q from smem (wgmma SS): holding its A fragments in registers (RS) costs 16
     * (D = 64) or 32 registers, which at 168 per thread makes ptxas serialize the wgmmas */
    static constexpr bool kQRegs = false;
    static constexpr int kMinBlocks = 1;
    static constexpr int kStages = kPrefetch + 2;
    static constexpr int Br = 64 * kWarpgroups;
    static constexpr int kThreads = 128 * kWarpgroups;
    static constexpr int kQBytes = Br * D * 2, kTileBytes = Bc * D * 2;
    static constexpr int kSmemBytes = kQBytes + 2 * kStages * kTileBytes + 1024; /* + alignment slack */
    static constexpr int kWarps = 4 * kWarpgroups;
};

/* The EXTRA forward's static shared memory: the key tiles' document starts (read with
 * non-causal documents only); per row of the block its keys [klo, khi) leaving out a non-causal
 * document's end (Sm90Spans), and its document start; per warp [full_lo, full_hi): the key tiles
 * inside it are visible to all of the warp's 16 rows (no per-element mask); per warpgroup its
 * hull (tiles outside are skipped); ALiBi's slope in unscaled units. In registers (or dynamic
 * smem, whose addresses take registers) they spilled at the 168-register cap. */
template <class Tr> struct Sm90FwdExtra {
    int key_doc[Tr::kStages][Tr::Bc];
    int row_lo[Tr::Br], row_hi[Tr::Br], row_doc[Tr::Br];
    int2 warp_full[Tr::kWarps], wg_hull[Tr::kWarpgroups];
    float slope;
};

/* The mask family in closed form (Sm90Spans, sm90_mask_tile): attention/flash_sm90_spans.cuh. */

template <typename E, int D, bool CAUSAL, bool EXTRA>
__global__ void __launch_bounds__(Sm90FwdTraits<D>::kThreads, Sm90FwdTraits<D>::kMinBlocks)
flash_fwd_sm90_kernel(AttnParams<E> p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using Tr = Sm90FwdTraits<D>;
    constexpr int Br = Tr::Br, Bc = Tr::Bc, NT = Bc / 8, ND = D / 8, KD = D / 16;
    constexpr int kStages = Tr::kStages, kPrefetch = Tr::kPrefetch;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *sQ = smem_align1024(smem_raw);
    unsigned char *sK = sQ + Tr::kQBytes;              /* [kStages][Bc x D] */
    unsigned char *sV = sK + kStages * Tr::kTileBytes; /* [kStages][Bc x D] */

    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H;
    const int m_blk = attn_block_tile(true); /* heaviest (causal) query tiles first */
    const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4;
    const int T = p.T, q0 = m_blk * Br;
    const long long seq_off = (long long)b * T * p.ld_qkv, kv_off = seq_off + (long long)(h / p.group) * D;
    const E *gq = p.q + seq_off + (long long)h * D, *gk = p.k + kv_off, *gv = p.v + kv_off;

    int n_tiles = (T + Bc - 1) / Bc;
    if (CAUSAL) n_tiles = min(n_tiles, (min(q0 + Br, T) + Bc - 1) / Bc);
    const int wg_row0 = q0 + wg * 64, warp_row0 = wg_row0 + warp * 16;
    const int wg_row_last = min(wg_row0 + 63, T - 1);

    load_rows_sw128_async<Br, D, Tr::kThreads>(sQ, gq, p.ld_qkv, q0, T); /* committed with the first K, V tile */

    /* EXTRA: the block visits the key tiles [j, n_tiles) of its hull */
    __shared__ Sm90FwdExtra<Tr> ex;
    const bool doc_cols = EXTRA && !CAUSAL && p.x.doc; /* per-score document test against ex.key_doc */
    const int *doc = p.x.doc ? p.x.doc + (long long)b * T : nullptr;
    int j = 0;
    if (EXTRA) {
        const Sm90Spans<CAUSAL> sp = sm90_spans<CAUSAL, EXTRA>(p.x, b, T);
        const int lo = sp.klo(q0), hi = sp.khi_doc(min(q0 + Br, T) - 1);
        j = lo / Bc;
        n_tiles = min(n_tiles, (hi + Bc - 1) / Bc);
        if (n_tiles <= j) j = 0, n_tiles = 1; /* no row sees a key: one tile, which every warpgroup skips */
        if (threadIdx.x < Br) {
            const int r = q0 + threadIdx.x;
            ex.row_lo[threadIdx.x] = r < T ? sp.klo(r) : 0;
            ex.row_hi[threadIdx.x] = r < T ? sp.khi(r) : 0;
            ex.row_doc[threadIdx.x] = doc_cols && r < T ? __ldg(doc + r) : 0;
        }
        const int full_lo = warp_row0 + 15 < T ? sp.klo(warp_row0 + 15) : INT_MAX;
        const int full_hi = warp_row0 < T ? sp.khi_doc(warp_row0) : 0;
        if ((threadIdx.x & 31) == 0) ex.warp_full[wg * 4 + warp] = make_int2(full_lo, full_hi);
        if (warp == 0) {
            int wg_lo = 0, wg_hi = 0;
            if (wg_row0 < T) wg_lo = sp.klo(wg_row0), wg_hi = sp.khi_doc(wg_row_last);
            if (wg_hi <= wg_lo) wg_lo = wg_hi = 0;
            if ((threadIdx.x & 31) == 0) ex.wg_hull[wg] = make_int2(wg_lo, wg_hi);
        }
        if (threadIdx.x == 0) ex.slope = flash_mask_slope(p.x, h);
    } /* published by the first tile's barrier */

    auto load_tile = [&](int jt) {
        int stage = jt % kStages;
        load_rows_sw128_async<Bc, D, Tr::kThreads>(sK + stage * Tr::kTileBytes, gk, p.ld_qkv, jt * Bc, T);
        load_rows_sw128_async<Bc, D, Tr::kThreads>(sV + stage * Tr::kTileBytes, gv, p.ld_qkv, jt * Bc, T);
        if (doc_cols)
            for (int i = threadIdx.x; i < Bc; i += Tr::kThreads) {
                int t = jt * Bc + i;
                bool ok = t < T;
                cp_async_4(&ex.key_doc[stage][i], doc + (ok ? t : 0), ok);
            }
    };
    load_tile(j);
    cp_async_commit();
#pragma unroll
    for (int jp = 1; jp < kPrefetch; jp++) {
        if (j + jp < n_tiles) load_tile(j + jp);
        cp_async_commit();
    }

    uint32_t qf[Tr::kQRegs ? KD : 1][4]; /* kQRegs: Q's A fragments for the whole key loop */
    const uint32_t q_base = smem_addr(sQ) + wg * 64 * 128; /* this warpgroup's 64 rows of Q */
    float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dt = 0; dt < ND; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;

    /* n_tiles > j (T >= 1, q0 < T); a do-while has no zero-trip path, on which ptxas would
     * see O's registers zeroed while the loop's last P V may be in flight and serialize */
    const int j_first = j;
    do {
        /* tile j has landed (kPrefetch - 1 later groups may still fly); publish it to wgmma */
        cp_async_wait<kPrefetch - 1>();
        fence_proxy_async_smem();
        __syncthreads();
        /* the buffer reloaded here was last read by tile j - 2's P V, retired by every
         * warpgroup before it reached this barrier */
        if (j + kPrefetch < n_tiles) load_tile(j + kPrefetch);
        cp_async_commit();
        if (Tr::kQRegs && j == j_first) {
#pragma unroll
            for (int kk = 0; kk < KD; kk++) load_a_frag_sw128<Br>(qf[kk], sQ, wg * 64 + warp * 16, kk * 16);
        }
        const int col0 = j * Bc;
        /* no rows, or all of this warpgroup's pairs masked. A warpgroup may skip tiles after its
         * hull while later tiles still load (EXTRA, non-causal documents: its rows' documents end
         * long before the block's): its last P V must retire before the next barrier, after which
         * that tile's buffer is reloaded. (Without EXTRA a warpgroup skips at most the block's last
         * two tiles, past every reload.) */
        if (EXTRA) {
            const int2 wr = ex.wg_hull[wg];
            if (col0 >= wr.y || col0 + Bc <= wr.x) {
                wgmma_wait<0>();
                continue;
            }
        } else if (wg_row0 >= T || (CAUSAL && col0 > wg_row_last)) {
            continue;
        }
        const int stage = j % kStages;
        const uint32_t k_base = smem_addr(sK + stage * Tr::kTileBytes), v_base = smem_addr(sV + stage * Tr::kTileBytes);

        /* S = Q K_j^T */
        float s[NT][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint64_t kdesc = sw128_desc(k_base + (kk / 4) * Bc * 128 + (kk % 4) * 32);
            if (Tr::kQRegs) wgmma_rs<E, Bc, 0>(s, qf[kk], kdesc, kk > 0);
            else wgmma_ss<E, Bc, 0>(s, sw128_desc(q_base + (kk / 4) * Br * 128 + (kk % 4) * 32), kdesc, kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>(); /* S, and the previous tile's P V */
        wgmma_fence_operands(s);
        wgmma_fence_operands(o);

        if (EXTRA) {
            const int2 fr = ex.warp_full[wg * 4 + warp];
            if (col0 < fr.x || col0 + Bc > fr.y) {
                const int rl = warp_row0 - q0 + ((threadIdx.x & 31) >> 2); /* this thread's rows rl, rl + 8 */
                const int lo[2] = {ex.row_lo[rl], ex.row_lo[rl + 8]}, hi[2] = {ex.row_hi[rl], ex.row_hi[rl + 8]};
                const int rdoc[2] = {ex.row_doc[rl], ex.row_doc[rl + 8]};
                sm90_mask_tile<NT>(s, lo, hi, doc_cols ? ex.key_doc[stage] : nullptr, rdoc, col0);
            }
            if (p.x.slopes) alibi_tile<NT>(s, ex.slope, warp_row0, col0, false);
        } else {
            bool needs_mask = col0 + Bc > T || (CAUSAL && col0 + Bc - 1 > warp_row0);
            if (needs_mask) mask_tile<NT, CAUSAL>(s, warp_row0, col0, T, false);
        }
        online_softmax_step<NT, ND>(s, o, m, l, p.scale_log2);
        uint32_t pf[NT / 2][4];
        acc_to_a_frags<E, NT>(pf, s);

        /* O += P V_j, one 64-column panel of V at a time; left in flight */
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
            for (int panel = 0; panel < D / 64; panel++)
                wgmma_rs<E, 64, 1>(*reinterpret_cast<float(*)[8][4]>(&o[panel * 8]), pf[kk],
                                sw128_desc(v_base + panel * Bc * 128 + kk * 16 * 128), 1);
        wgmma_commit();
    } while (++j < n_tiles);
    wgmma_wait<0>();
    wgmma_fence_operands(o);
    cp_async_wait<0>();

    /* a row that saw no key: l = 0, so O = 0 and L = +inf */
    store_o_and_lse<ND>(p.out + (long long)b * T * p.ld_o + (long long)h * D, p.ld_o, p.lse + (long long)bh * T, o,
                        m, l, warp_row0, T);
#endif
}


/* ---- backward main kernel (D = 64) ----------------------------------------------------------
 * FA2's key-block-parallel backward on wgmma: one block per (key block of Bc = 128 keys,
 * batch, K/V head), warpgroup w owning keys 64w..64w+63; K and V stay in smem while query tiles
 * of Br = 64 (Q, dO, L, D) of each query head of the K/V head's group stream through two SW128
 * buffers (one loop over (head, tile) pairs, so dK and dV sum over the group in registers). Per
 * query tile, transposed so that keys are the wgmma rows:
 *   S^T = K Q^T, dP^T = V dO^T          (SS: A = K or V rows of this warpgroup, B = Q or dO)
 *   P^T = 2^(S^T scale log2e - L log2e), dS^T = P^T (dP^T - D)        (registers, fp32)
 *   dV += P^T dO, dK += dS^T Q          (RS: A = P^T, dS^T as E fragments; B MN-major)
 *   dS^T -> smem (E, [key][query] SW128), then dQ_tile = dS K split by columns: warpgroup w
 *   computes columns 32w..32w+31 over all Bc keys (SS: A = dS MN-major, B = K MN-major) and adds
 *   them into the fp32 accumulator of that query head with vector atomics, as flash.cu's does.
 * EXTRA: only the query tiles of the hull of the queries that see the block's keys are visited.
 * Registers per thread: S^T, dP^T, dV, dK 32 each, P^T and dS^T fragments 16 each, dQ 16. */
struct Sm90BwdTraits {
    static constexpr int D = 64, kWarpgroups = 2, Bc = 64 * kWarpgroups, Br = 64;
    static constexpr int kThreads = 128 * kWarpgroups;
    static constexpr int kKVBytes = Bc * D * 2, kQBytes = Br * D * 2, kDsBytes = Bc * Br * 2;
    static constexpr int kSmemBytes = 2 * kKVBytes + 2 * 2 * kQBytes + kDsBytes + 2 * 2 * Br * 4 + 1024;
    static constexpr int kDocBytes = 2 * Br * 4; /* EXTRA: the query tiles' document starts */
};

/* dst[0..1] += (a, b): one fp32 vector reduction */
__device__ __forceinline__ void red_add_f32x2(float *dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2 *>(dst), make_float2(a, b));
#endif
}

template <typename E, bool CAUSAL, bool EXTRA>
__global__ void __launch_bounds__(Sm90BwdTraits::kThreads, 1) flash_bwd_sm90_kernel(AttnParams<E> p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using Tr = Sm90BwdTraits;
    constexpr int D = Tr::D, Bc = Tr::Bc, Br = Tr::Br, NQ = Br / 8, ND = D / 8, KD = D / 16;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *sK = smem_align1024(smem_raw);
    unsigned char *sV = sK + Tr::kKVBytes;
    unsigned char *sQ = sV + Tr::kKVBytes;      /* [2][Br x D] */
    unsigned char *sdO = sQ + 2 * Tr::kQBytes;  /* [2][Br x D] */
    unsigned char *sdS = sdO + 2 * Tr::kQBytes; /* [Bc keys][Br queries] */
    float *sL = (float *)(sdS + Tr::kDsBytes);  /* [2][Br] */
    float *sD = sL + 2 * Br;                    /* [2][Br] */
    int *sDq = (int *)(sD + 2 * Br);            /* EXTRA with documents: [2][Br] */

    const int bg = attn_block_head(), b = bg / p.Hkv, kvh = bg % p.Hkv; /* (batch, K/V head) */
    const int h0 = kvh * p.group;                                       /* the group's first query head */
    const int n_blk = attn_block_tile(false);
    const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x & 31;
    const int g = lane >> 2, c = 2 * (lane & 3);
    const int T = p.T, k0 = n_blk * Bc;
    const int key_row0 = k0 + wg * 64 + warp * 16; /* this warp's 16 keys */
    const long long seq_qkv = (long long)b * T * p.ld_qkv, seq_o = (long long)b * T * p.ld_o;
    const long long kv_off = seq_qkv + (long long)kvh * D;

    load_rows_sw128_async<Bc, D, Tr::kThreads>(sK, p.k + kv_off, p.ld_qkv, k0, T); /* committed with the first */
    load_rows_sw128_async<Bc, D, Tr::kThreads>(sV, p.v + kv_off, p.ld_qkv, k0, T); /* query tile */

    /* query tiles this key block meets: causal from the diagonal on; EXTRA the hull of the
     * queries that see one of its valid keys [ka, kz). Without the causal mask every key block
     * starts at a different tile of that range (rotated), so that the key blocks of a head do
     * not all add into the same dQ rows at once. A warp's tile inside [full_lo, full_hi) is
     * visible to all of its 16 keys (no per-element mask). */
    const Sm90Spans<CAUSAL> sp = sm90_spans<CAUSAL, EXTRA>(p.x, b, T);
    int m_first, m_end, full_lo = 0, full_hi = 0;
    sp.template query_tiles<EXTRA>(k0, Bc, Br, m_first, m_end);
    if (EXTRA) {
        const int j15 = key_row0 + 15;
        full_lo = key_row0 >= sp.kb && j15 < sp.ke ? sp.qlo_doc(j15) : INT_MAX;
        full_hi = sp.qhi_doc(key_row0);
    }
    const int m_count = max(m_end - m_first, 0), n_iter = m_count * p.group;
    auto tile_at = [&](int t) { return m_first + (CAUSAL ? t : (t + n_blk) % m_count); };
    auto load_query_tile = [&](int hq, int mi, int stage) {
        const float *gL = p.lse + (long long)(b * p.H + hq) * T, *gD = p.dvec + (long long)(b * p.H + hq) * T;
        load_rows_sw128_async<Br, D, Tr::kThreads>(sQ + stage * Tr::kQBytes, p.q + seq_qkv + (long long)hq * D, p.ld_qkv,
                                                   mi * Br, T);
        load_rows_sw128_async<Br, D, Tr::kThreads>(sdO + stage * Tr::kQBytes, p.dout + seq_o + (long long)hq * D, p.ld_o,
                                                   mi * Br, T);
        for (int x = threadIdx.x; x < Br; x += Tr::kThreads) {
            int t = mi * Br + x;
            bool ok = t < T;
            cp_async_4(sL + stage * Br + x, gL + (ok ? t : 0), ok);
            cp_async_4(sD + stage * Br + x, gD + (ok ? t : 0), ok);
            if (EXTRA && sp.d) cp_async_4(sDq + stage * Br + x, sp.d + (ok ? t : 0), ok);
        }
    };

    if (n_iter > 0) load_query_tile(h0, tile_at(0), 0);
    cp_async_commit();

    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int dt = 0; dt < ND; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.0f;
    const uint32_t k_rows = smem_addr(sK) + wg * 64 * 128, v_rows = smem_addr(sV) + wg * 64 * 128;
    const uint32_t ds_base = smem_addr(sdS), k_base = smem_addr(sK);

    int ti = 0, gh = 0; /* iteration i: query head h0 + gh, query tile tile_at(ti) */
    for (int i = 0; i < n_iter; i++) {
        /* tile i landed; every warpgroup finished tile i - 1 (its wgmmas retired) */
        cp_async_wait<0>();
        fence_proxy_async_smem();
        __syncthreads();
        const int stage = i & 1, q0 = tile_at(ti) * Br, hq = h0 + gh;
        int ti_next = ti + 1, gh_next = gh;
        if (ti_next == m_count) ti_next = 0, gh_next++;
        if (i + 1 < n_iter) load_query_tile(h0 + gh_next, tile_at(ti_next), stage ^ 1);
        cp_async_commit();
        const uint32_t q_base = smem_addr(sQ + stage * Tr::kQBytes), do_base = smem_addr(sdO + stage * Tr::kQBytes);
        const float *L_t = sL + stage * Br, *D_t = sD + stage * Br;
        const float slope = EXTRA ? flash_mask_slope(p.x, hq) : 0.0f;

        /* S^T = K Q^T, dP^T = V dO^T */
        float st[NQ][4], dpt[NQ][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
            wgmma_ss<E, Br, 0>(st, sw128_desc(k_rows + kk * 32), sw128_desc(q_base + kk * 32), kk > 0);
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
            wgmma_ss<E, Br, 0>(dpt, sw128_desc(v_rows + kk * 32), sw128_desc(do_base + kk * 32), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operands(st);
        wgmma_fence_operands(dpt);

        if (EXTRA) {
            if (q0 < full_lo || q0 + Br > full_hi) {
                int lo[2], hi[2], rdoc[2];
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    const int jk = key_row0 + g + 8 * half;
                    lo[half] = sp.qlo(jk);
                    hi[half] = sp.qhi(jk);
                    rdoc[half] = sp.d && jk < T ? __ldg(sp.d + jk) : 0;
                }
                sm90_mask_tile<NQ>(st, lo, hi, sp.d ? sDq + stage * Br : nullptr, rdoc, q0);
            }
            if (p.x.slopes) alibi_tile<NQ>(st, slope, key_row0, q0, true);
        } else {
            bool needs_mask = q0 + Br > T || key_row0 + 16 > T || (CAUSAL && key_row0 + 15 > q0);
            if (needs_mask) mask_tile<NQ, CAUSAL>(st, key_row0, q0, T, true);
        }
#pragma unroll
        for (int nt = 0; nt < NQ; nt++) {
            float2 Lq = *(const float2 *)(L_t + nt * 8 + c), Dq = *(const float2 *)(D_t + nt * 8 + c);
            float L2[2] = {Lq.x * LOG2E_F, Lq.y * LOG2E_F}, Dd[2] = {Dq.x, Dq.y};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float pv = exp2f(st[nt][e] * p.scale_log2 - L2[e & 1]);
                st[nt][e] = pv;
                dpt[nt][e] = pv * (dpt[nt][e] - Dd[e & 1]);
            }
        }
        uint32_t pf[NQ / 2][4], dsf[NQ / 2][4];
        acc_to_a_frags<E, NQ>(pf, st);
        acc_to_a_frags<E, NQ>(dsf, dpt);

        /* dS^T to smem: this thread's keys (rows) g and g + 8 of the warp, queries 16kk + c (+8) */
        {
            const int r = wg * 64 + warp * 16 + g;
#pragma unroll
            for (int kk = 0; kk < NQ / 2; kk++) {
                *(uint32_t *)(sdS + sw128_offset<Bc>(r, kk * 16 + c)) = dsf[kk][0];
                *(uint32_t *)(sdS + sw128_offset<Bc>(r + 8, kk * 16 + c)) = dsf[kk][1];
                *(uint32_t *)(sdS + sw128_offset<Bc>(r, kk * 16 + 8 + c)) = dsf[kk][2];
                *(uint32_t *)(sdS + sw128_offset<Bc>(r + 8, kk * 16 + 8 + c)) = dsf[kk][3];
            }
        }
        fence_proxy_async_smem();

        /* dV += P^T dO, dK += dS^T Q: B = dO, Q tiles read MN-major (query rows are the k dim) */
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < NQ / 2; kk++) {
            wgmma_rs<E, D, 1>(dv, pf[kk], sw128_desc(do_base + kk * 16 * 128), 1);
            wgmma_rs<E, D, 1>(dk, dsf[kk], sw128_desc(q_base + kk * 16 * 128), 1);
        }
        wgmma_commit();
        __syncthreads(); /* all of dS^T is in smem */

        /* dQ[q0.., 32wg..32wg+31] += dS K over the Bc keys */
        float dq[4][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < Bc / 16; kk++)
            wgmma_ss<E, 32, 1>(dq, sw128_desc(ds_base + kk * 16 * 128), sw128_desc(k_base + kk * 16 * 128 + wg * 64), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operands(dq);
        wgmma_fence_operands(dv);
        wgmma_fence_operands(dk);
        float *gdq = p.dq_accum + (long long)(b * p.H + hq) * T * D;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int t = q0 + warp * 16 + g + 8 * half;
            if (t < T) {
                float *row = gdq + (long long)t * D + wg * 32 + c;
#pragma unroll
                for (int nt = 0; nt < 4; nt++) red_add_f32x2(row + nt * 8, dq[nt][2 * half], dq[nt][2 * half + 1]);
            }
        }
        ti = ti_next;
        gh = gh_next;
    }
    cp_async_wait<0>();

    /* dK = scale * sum dS^T Q, dV: this warp's 16 keys (zero where no query saw them) */
    store_dk_dv<ND, E>(p, kv_off, dk, dv, key_row0, g, c, T);
#endif
}

/* ---- host side ------------------------------------------------------------------------------ */

/* Whether the current device runs sm_90a code (compute capability 9.0), cached per device. */
static bool device_is_sm90(void) {
    static signed char known[64]; /* 0 unknown, 1 yes, -1 no */
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
    if (!known[dev]) {
        int major = 0, minor = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
        known[dev] = major == 9 && minor == 0 ? 1 : -1;
    }
    return known[dev] > 0;
}

bool flash_sm90_enabled(void) {
    return FLASH_SM90 && device_is_sm90();
}

/* Where the Hopper kernels apply (flash.cu has checked dtype (bf16 or fp16), D in {32, 64, 128}, Hkv dividing H
 * and the rest): causal or no mask with any of window, documents, key padding and ALiBi, and
 * grouped-query attention. The backward's main kernel exists for D = 64; D = 128 runs flash.cu's
 * there. */
const char *flash_sm90_refuses(const AttnShape *s) {
    if (!flash_sm90_enabled()) return "flash-sm90: needs an H100/H200 (compute capability 9.0) and a build for sm_90a";
    if (s->dtype != ATTN_BF16 && s->dtype != ATTN_FP16) return "flash-sm90: bf16 or fp16 only";
    if (s->D != 64 && s->D != 128) return "flash-sm90: head dimension must be 64 or 128";
    if (s->H % attn_kv_heads(s)) return "flash-sm90: the K/V heads (Hkv) must divide H";
    if (s->mask.kind != ATTN_MASK_CAUSAL && s->mask.kind != ATTN_MASK_NONE) return "flash-sm90: no dense bias";
    if (s->mask.bias || s->mask.dbias) return "flash-sm90: no dense bias (flash-mma adds it)";
    return NULL;
}

template <typename E, int D, bool CAUSAL, bool EXTRA>
static int launch_sm90_forward(const AttnShape *s, const AttnParams<E> &p, cudaStream_t st) {
    using Tr = Sm90FwdTraits<D>;
    return attn_launch_tiled(flash_fwd_sm90_kernel<E, D, CAUSAL, EXTRA>, s, Tr::Br, Tr::kThreads, Tr::kSmemBytes, p, st);
}
template <typename E, int D, bool CAUSAL>
static int launch_sm90_forward(const AttnShape *s, const AttnParams<E> &p, bool extra, cudaStream_t st) {
    return extra ? launch_sm90_forward<E, D, CAUSAL, true>(s, p, st) : launch_sm90_forward<E, D, CAUSAL, false>(s, p, st);
}

template <typename E>
static int sm90_forward_as(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                           cudaStream_t stream) {
    AttnIO io = {};
    io.q = q; io.k = k; io.v = v;
    io.out = o;
    io.lse = lse;
    const AttnParams<E> p = attn_params<E>(s, io);
    const bool extra = flash_mask_has_extras(s), causal = s->mask.kind == ATTN_MASK_CAUSAL;
    if (s->D == 64)
        return causal ? launch_sm90_forward<E, 64, true>(s, p, extra, stream) : launch_sm90_forward<E, 64, false>(s, p, extra, stream);
    return causal ? launch_sm90_forward<E, 128, true>(s, p, extra, stream) : launch_sm90_forward<E, 128, false>(s, p, extra, stream);
}

int flash_sm90_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                       cudaStream_t stream) {
    if (flash_sm90_refuses(s)) return -1;
    switch (s->dtype) {
    case ATTN_BF16: return sm90_forward_as<bf16>(s, q, k, v, o, lse, stream);
    case ATTN_FP16: return sm90_forward_as<fp16>(s, q, k, v, o, lse, stream);
    default: return -1; /* refused above */
    }
}

/* One block per (key block, batch * K/V head): attn_launch_tiled's grid has B * H rows. */
template <typename E, bool CAUSAL, bool EXTRA>
static int launch_sm90_backward(const AttnShape *s, const AttnParams<E> &p, cudaStream_t st) {
    using Tr = Sm90BwdTraits;
    void (*kernel)(AttnParams<E>) = flash_bwd_sm90_kernel<E, CAUSAL, EXTRA>;
    const int smem = Tr::kSmemBytes + (EXTRA ? Tr::kDocBytes : 0);
    ATTN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid((unsigned)((s->T + Tr::Bc - 1) / Tr::Bc), (unsigned)(s->B * attn_kv_heads(s)));
    kernel<<<grid, Tr::kThreads, smem, st>>>(p);
    ATTN_LAUNCH_CHECK();
    return 0;
}

template <typename E>
static int sm90_backward_main_as(const AttnShape *s, const AttnIO *a, cudaStream_t stream) {
    const AttnParams<E> p = attn_params<E>(s, *a);
    const bool extra = flash_mask_has_extras(s), causal = s->mask.kind == ATTN_MASK_CAUSAL;
    if (causal) return extra ? launch_sm90_backward<E, true, true>(s, p, stream) : launch_sm90_backward<E, true, false>(s, p, stream);
    return extra ? launch_sm90_backward<E, false, true>(s, p, stream) : launch_sm90_backward<E, false, false>(s, p, stream);
}

int flash_sm90_backward_main(const AttnShape *s, const AttnIO *a, cudaStream_t stream) {
    if (s->D != 64 || flash_sm90_refuses(s)) return -1;
    switch (s->dtype) {
    case ATTN_BF16: return sm90_backward_main_as<bf16>(s, a, stream);
    case ATTN_FP16: return sm90_backward_main_as<fp16>(s, a, stream);
    default: return -1; /* refused above */
    }
}
