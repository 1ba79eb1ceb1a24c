/* attention/flash_sm90_tma_bwd.cu: flash-tma's backward main kernel on Hopper in FlashAttention-3's
 * design: a producer warp that loads by TMA, two consumer warpgroups that keep dK and dV in
 * registers across the query tiles, and dQ added into its fp32 accumulator by TMA reduce-adds.
 *
 * Same function and outputs as flash_sm90.cu's flash_bwd_sm90_kernel (FA2's key-block-parallel
 * backward): dK, dV (element type E) and dQ's fp32 accumulator, which flash.cu zeroes before (with
 * D_i = rowsum(dO_i * O_i)) and scales into dQ after. L is the forward's natural log-sum-exp per
 * row (+inf for a row that saw no key: P = 0 there). One block per (key block of Bc = 128 keys,
 * batch * K/V head); 384 threads:
 *   warpgroup 0, the producer: gives its registers up (setmaxnreg.dec) and one thread issues
 *     every TMA load: K and V of the block once, then per query tile (Br rows of one query head;
 *     GQA: the group's query heads one after the other, so dK and dV sum over the group in
 *     registers) Q with L, and dO with D_i, into a ring of kStages buffers. Each buffer has two
 *     full mbarriers (Q + L, dO + D_i: one arrival announcing the bytes, completed by the TMA) and
 *     one empty mbarrier (one arrival per consumer warp).
 *   warpgroups 1 and 2, the consumers (setmaxnreg.inc to 240): warpgroup w owns keys
 *     64w..64w+63 of the block. Per query tile, transposed so that keys are the wgmma rows (as
 *     flash_bwd_sm90_kernel):
 *       S^T = K Q^T, dP^T = V dO^T     issued back to back (SS, both K-major)
 *       P^T = 2^(S^T scale log2e - L log2e), under dP^T's wgmma; dS^T = P^T (dP^T - D)
 *       dV += P^T dO, dK += dS^T Q      (RS: P^T, dS^T as E fragments; dO, Q MN-major)
 *       dS^T -> smem (E, [key][query] SW128, double-buffered), then the only barrier the two
 *       warpgroups share (a named barrier, once per tile); dQ_tile = dS K (SS, A = dS MN-major,
 *       B = K MN-major), half of it per warpgroup (D = 64: 64 query rows each of the 128;
 *       D = 128: 64 of the 128 columns each), over all Bc keys;
 *       release the Q / dO buffer once dV, dK retire; dQ's fp32 fragment -> an SW128 smem
 *       staging tile -> one thread of the warpgroup issues cp.reduce.async.bulk.tensor (add)
 *       into the accumulator; rows past T are clipped by the tensor map.
 * Why TMA reduce-adds and not atomics (dev/attention_notes.md, v10): one instruction moves a
 * 64 x 32 fp32 box into L2's adders, instead of 64 red.global.add.v2 per thread, and the swizzled
 * staging tile takes the fragments without bank conflicts; the issuing thread itself waits for
 * the staging tile to have been read (cp.async.bulk.wait_group.read) one tile later, before the
 * shared barrier, so no extra warp and no extra mbarrier pair are needed.
 * Tiles: D = 64 Br = 128 (S^T / dP^T m64n128, 64 + 64 registers); D = 128 Br = 64 (dK, dV 64 + 64
 * registers). Smem ~193 KB at both: one block per SM.
 * Masks: causal and none, and with EXTRA the rest of the family (window, documents, key padding,
 * ALiBi) in flash_bwd_sm90_kernel's closed form (flash_sm90_spans.cuh): a key block visits only
 * the query tiles that see one of its keys (the hull from Sm90Spans, computed by every warp before
 * the roles split: the document search is warp-wide), a warp masks element by element only the
 * tiles its 16 keys do not all see, and ALiBi is added to every tile. Each key's queries are one
 * interval [lo, hi) (its document's end found once: Sm90Spans::qhi_doc_in), so the per-element
 * mask compares positions only; a per-element document test, as flash-sm90's backward
 * does it, held 32 more values live and spilled at D = 64. A dense bias is refused
 * (flash_sm90_refuses): flash-mma's backward adds it.
 * Built for sm_90a only (Makefile: -DFLASH_SM90=1); elsewhere the entry point answers -1.
 */
#include <limits.h>
#include <string.h>
#include "attention/attn_params.cuh"
#include "attention/cuda_common.cuh"
#include "attention/flash_mask.cuh"
#include "attention/flash_sm90.h"
#include "attention/flash_sm90_spans.cuh"
#include "attention/flash_sm90_tma.h"
#include "attention/flash_sm90_tma_bwd.h"
#include "attention/tc_attention.cuh"
#include "attention/tma_sm90.cuh"
#include "attention/wgmma_sm90.cuh"

#ifndef FLASH_SM90
#define FLASH_SM90 0
#endif

template <int D_> struct TmaBwdTraits {
    static constexpr int D = D_;
    static constexpr int Bc = 128;               /* keys per block, 64 per consumer warpgroup */
    static constexpr int Br = D_ == 64 ? 128 : 64; /* query rows per tile */
    static constexpr int kStages = 2;            /* Q / dO buffers */
    static constexpr int kConsumers = 2, kThreads = 128 * (kConsumers + 1), kConsumerWarps = 4 * kConsumers;
    static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
    /* dQ per warpgroup: 64 rows x kDqCols columns (Br = 128: its own 64 query rows, all D
     * columns; Br = 64: all 64 rows, half the columns) */
    static constexpr int kDqCols = Br == 128 ? D_ : D_ / 2;
    /* one TMA box of a 16-bit tile: 64 columns (128 bytes) x its rows; a tile is D / 64 of them */
    static constexpr int kPanels = D_ / 64;
    static constexpr int kKVBoxBytes = Bc * 128, kQBoxBytes = Br * 128;
    static constexpr int kKVBytes = kPanels * kKVBoxBytes, kQBytes = kPanels * kQBoxBytes;
    static constexpr int kDsBytes = Bc * Br * 2;         /* dS^T: Br / 64 panels of [Bc][64] */
    static constexpr int kDqBoxBytes = 64 * 32 * 4;      /* one fp32 box: 64 rows x 32 columns */
    static constexpr int kDqBoxes = kDqCols / 32;
    static constexpr int kDqBytes = kDqBoxes * kDqBoxBytes;
    /* L or D_i of one tile: a TMA box's start address must be 16-byte aligned (PTX ISA, tensors,
     * tiled mode, bounding box), and the tile's first entry (b * H + h) * T + q0 is one only when
     * T % 4 == 0; so the box starts at that entry rounded down to a multiple of 4 and takes
     * kRowBox = Br + 4 entries (its first 0..3 belong to the row before), and the consumers read
     * from the entry's offset in it. One buffer: kRowStride floats (128-byte multiple). */
    static constexpr int kRowBox = Br + 4, kRowBoxBytes = kRowBox * 4;
    static constexpr int kRowStride = (kRowBox + 31) / 32 * 32, kRowBytes = kRowStride * 4;
    static constexpr int kSmemBytes =
        2 * kKVBytes + 2 * kStages * kQBytes + 2 * kDsBytes + kConsumers * kDqBytes + 2 * kStages * kRowBytes + 1024;

    static_assert(D_ == 64 || D_ == 128, "flash-tma backward: D = 64 or 128");
    static_assert(Br == 64 || Br == 128, "a query tile is one or two 64-row wgmma M blocks");
    static_assert(kQBoxBytes % 1024 == 0 && kKVBoxBytes % 1024 == 0 && kDsBytes % 1024 == 0 &&
                      kDqBoxBytes % 1024 == 0,
                  "every SW128 panel starts 1024-byte aligned (the swizzle's period)");
    static_assert(kRowBytes % 128 == 0, "the L / D_i boxes stay 128-byte aligned");
    static_assert(kRowBox <= 256 && kRowBoxBytes % 16 == 0 && kRowBox <= kRowStride,
                  "an L / D_i box: <= 256 entries, a multiple of 16 bytes, within its buffer");
    static_assert(kDqCols % 32 == 0 && (Br == 128 ? kDqCols == D_ : 2 * kDqCols == D_), "dQ halves cover the tile");
    static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= 65536, "setmaxnreg: the SM's registers");
    static_assert(kProducerRegs <= 65536 / kThreads && kConsumerRegs >= 65536 / kThreads,
                  "setmaxnreg: dec below and inc above the launch's registers per thread");
    static_assert(kSmemBytes + 1024 <= 227 * 1024, "dynamic + static smem fit an SM");
};

template <class Tr> struct TmaBwdBarriers {
    uint64_t kv_full;
    uint64_t q_full[Tr::kStages], do_full[Tr::kStages], empty[Tr::kStages];
};

/* ---- asynchronous-copy pieces this kernel adds to tma_sm90.cuh's --------------------------- */
/* TMA: the box at element c0 of the 1-D tensor `map` -> shared memory at dst, completing on bar. */
__device__ __forceinline__ void tma_load_1d(void *dst, const CUtensorMap *map, int c0, uint64_t *bar) {
    asm volatile("cp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3}], [%2];\n" ::"r"(
                     smem_addr(dst)),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0)
                 : "memory");
}
/* TMA reduce: global box at (c0, c1, c2) of `map` += the smem tile at src (element-wise add in
 * the map's type; boxes past the tensor's extent are clipped). Tracked by this thread's bulk
 * groups (commit, then wait_group[.read]). */
__device__ __forceinline__ void tma_reduce_add_3d(const CUtensorMap *map, const void *src, int c0, int c1, int c2) {
    asm volatile("cp.reduce.async.bulk.tensor.3d.global.shared::cta.add.tile.bulk_group [%0, {%2, %3, %4}], [%1];\n" ::"l"(
                     reinterpret_cast<uint64_t>(map)),
                 "r"(smem_addr(src)), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
/* this thread's bulk groups have all read their shared memory (it may be rewritten) */
__device__ __forceinline__ void bulk_wait_read_all() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
/* this thread's bulk groups have completed (their global writes are done) */
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
/* A named barrier of `count` threads (whole warps). */
__device__ __forceinline__ void named_barrier_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/* Named barrier ids (0 is __syncthreads): both consumer warpgroups; consumer warpgroup w alone. */
enum { kBarConsumers = 1, kBarWarpgroup0 = 2 };

template <typename E, int D, bool CAUSAL, bool EXTRA>
__global__ void __launch_bounds__(TmaBwdTraits<D>::kThreads, 1)
flash_bwd_tma_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                     const __grid_constant__ CUtensorMap tm_v, const __grid_constant__ CUtensorMap tm_do,
                     const __grid_constant__ CUtensorMap tm_lse, const __grid_constant__ CUtensorMap tm_dvec,
                     const __grid_constant__ CUtensorMap tm_dq, const AttnParams<E> p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using Tr = TmaBwdTraits<D>;
    constexpr int Bc = Tr::Bc, Br = Tr::Br, NQ = Br / 8, ND = D / 8, KD = D / 16, S = Tr::kStages;
    constexpr int DQN = Tr::kDqCols;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *sK = smem_align1024(smem_raw);
    unsigned char *sV = sK + Tr::kKVBytes;
    unsigned char *sQ = sV + Tr::kKVBytes;         /* [S][kPanels][Br][64] */
    unsigned char *sdO = sQ + S * Tr::kQBytes;     /* [S][kPanels][Br][64] */
    unsigned char *sdS = sdO + S * Tr::kQBytes;    /* [2][Br / 64][Bc][64] */
    unsigned char *sdQ = sdS + 2 * Tr::kDsBytes;   /* [consumer][kDqBoxes][64][32] fp32 */
    float *sL = (float *)(sdQ + Tr::kConsumers * Tr::kDqBytes); /* [S][kRowStride] */
    float *sDv = sL + S * Tr::kRowStride;                       /* [S][kRowStride] */
    __shared__ TmaBwdBarriers<Tr> bar;

    const int bg = attn_block_head(), b = bg / p.Hkv, kvh = bg % p.Hkv; /* (batch, K/V head) */
    const int h0 = kvh * p.group;                                       /* the group's first query head */
    const int n_blk = attn_block_tile(false);
    const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x & 31;
    const int cw = wg - 1; /* consumer warpgroup; -1: the producer */
    const int T = p.T, k0 = n_blk * Bc;

    /* the query tiles this key block meets: causal from the diagonal's tile on; EXTRA the hull
     * of the queries that see one of its valid keys [ka, kz) (none: n_iter = 0, and dK = dV = 0).
     * Without the causal mask every key block starts at a different tile (rotated), so that the
     * key blocks of a head do not all add into the same dQ rows at once. Iteration i is query
     * head h0 + i / m_count, tile tile_at(i % m_count). Computed by every thread, before the
     * roles split: qhi_doc is warp-wide. */
    const Sm90Spans<CAUSAL> sp = sm90_spans<CAUSAL, EXTRA>(p.x, b, T);
    int m_first, m_end;
    sp.template query_tiles<EXTRA>(k0, Bc, Br, m_first, m_end);
    const int m_count = max(m_end - m_first, 0), n_iter = m_count * p.group;
    auto tile_at = [&](int t) { return m_first + (CAUSAL ? t : (t + n_blk) % m_count); };

    if (threadIdx.x == 0) {
        mbar_init(&bar.kv_full, 1);
#pragma unroll
        for (int s = 0; s < S; s++) {
            mbar_init(&bar.q_full[s], 1);
            mbar_init(&bar.do_full[s], 1);
            mbar_init(&bar.empty[s], Tr::kConsumerWarps);
        }
        mbar_init_fence();
    }
    __syncthreads(); /* the barriers; the only block-wide barrier */

    if (cw < 0) {
        /* ---- producer: one thread issues every load; the rest of the warpgroup only gives its
         * registers back */
        setmaxnreg_dec<Tr::kProducerRegs>();
        if (warp != 0 || lane != 0) return;
        tma_prefetch_map(&tm_q);
        tma_prefetch_map(&tm_k);
        tma_prefetch_map(&tm_v);
        tma_prefetch_map(&tm_do);
        tma_prefetch_map(&tm_lse);
        tma_prefetch_map(&tm_dvec);
        mbar_arrive_expect_tx(&bar.kv_full, 2 * Tr::kKVBytes);
#pragma unroll
        for (int pn = 0; pn < Tr::kPanels; pn++) {
            tma_load_3d(sK + pn * Tr::kKVBoxBytes, &tm_k, kvh * D + pn * 64, k0, b, &bar.kv_full);
            tma_load_3d(sV + pn * Tr::kKVBoxBytes, &tm_v, kvh * D + pn * 64, k0, b, &bar.kv_full);
        }
        int ti = 0, hq = h0;
        for (int i = 0; i < n_iter; i++) {
            const int s = i % S, q0 = tile_at(ti) * Br;
            /* L and D_i of (b, hq) are rows of one flat array; the box starts 16-byte aligned */
            const int row = (b * p.H + hq) * T + q0, row_box = row & ~3;
            /* the buffer's previous tile (i - S) released by every consumer warp */
            if (i >= S) mbar_wait(&bar.empty[s], ((i / S) - 1) & 1);
            mbar_arrive_expect_tx(&bar.q_full[s], Tr::kQBytes + Tr::kRowBoxBytes);
#pragma unroll
            for (int pn = 0; pn < Tr::kPanels; pn++)
                tma_load_3d(sQ + s * Tr::kQBytes + pn * Tr::kQBoxBytes, &tm_q, hq * D + pn * 64, q0, b, &bar.q_full[s]);
            tma_load_1d(sL + s * Tr::kRowStride, &tm_lse, row_box, &bar.q_full[s]);
            mbar_arrive_expect_tx(&bar.do_full[s], Tr::kQBytes + Tr::kRowBoxBytes);
#pragma unroll
            for (int pn = 0; pn < Tr::kPanels; pn++)
                tma_load_3d(sdO + s * Tr::kQBytes + pn * Tr::kQBoxBytes, &tm_do, hq * D + pn * 64, q0, b,
                            &bar.do_full[s]);
            tma_load_1d(sDv + s * Tr::kRowStride, &tm_dvec, row_box, &bar.do_full[s]);
            if (++ti == m_count) ti = 0, hq++;
        }
        return;
    }

    /* ---- consumers ---------------------------------------------------------------------------- */
    setmaxnreg_inc<Tr::kConsumerRegs>();
    const int g = lane >> 2, c = 2 * (lane & 3);
    const bool wg_leader = (threadIdx.x & 127) == 0; /* issues this warpgroup's dQ reduce-adds */
    const int key_row0 = k0 + cw * 64 + warp * 16;   /* this warp's 16 keys */
    /* this warpgroup's 64 rows of each K / V panel (the A operand of S^T and dP^T) */
    /* operands as descriptors' low halves (sw128_desc_at adds each k step's offset) */
    const uint32_t k_desc = sw128_desc_lo(smem_addr(sK) + cw * 64 * 128), v_desc = sw128_desc_lo(smem_addr(sV) + cw * 64 * 128);
    /* its part of dQ = dS K: A = the dS^T panel of its query rows, B = K from its first column */
    const int dq_row_off = Br == 128 ? cw * 64 : 0, dq_col0 = Br == 128 ? 0 : cw * DQN;
    const uint32_t dq_b_desc = sw128_desc_lo(smem_addr(sK) + (dq_col0 / 64) * Tr::kKVBoxBytes + (dq_col0 % 64) * 2);
    const int dq_a_panel = dq_row_off / 64;
    unsigned char *stage_dq = sdQ + cw * Tr::kDqBytes;
    /* EXTRA: the query tiles inside [full_lo, full_hi) are seen by all 16 of this warp's keys;
     * this thread's keys key_row0 + g (+ 8) are seen by the queries [q_lo[half], q_hi[half]) */
    int full_lo = 0, full_hi = 0, q_lo[2] = {0, 0}, q_hi[2] = {0, 0};
    if (EXTRA) {
        const int j15 = key_row0 + 15;
        full_lo = key_row0 >= sp.kb && j15 < sp.ke ? sp.qlo_doc(j15) : INT_MAX;
        full_hi = sp.qhi_doc(key_row0);
        /* the end of the warp's last key's document (warp-wide), from which each lane's follows */
        const int jl = min(j15, T - 1);
        const int end_l = sp.d && key_row0 < T ? sm90_doc_end(sp.d, jl + 1, T, __ldg(sp.d + jl)) : T;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int jk = key_row0 + g + 8 * half;
            if (jk < T) {
                q_lo[half] = sp.qlo_doc(jk);
                q_hi[half] = sp.qhi_doc_in(jk, jl, end_l);
            }
        }
    }

    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int dt = 0; dt < ND; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.0f;

    auto release = [&](uint64_t *empty) { /* one arrival per warp, after all of its lanes' reads */
        __syncwarp();
        if (lane == 0) mbar_arrive(empty);
    };

    mbar_wait(&bar.kv_full, 0);
    int ti = 0, hq = h0;
    for (int i = 0; i < n_iter; i++) {
        const int s = (int)((unsigned)i % S), q0 = tile_at(ti) * Br;
        const uint32_t ph = ((unsigned)i / S) & 1u;
        const uint32_t q_desc = sw128_desc_lo(smem_addr(sQ + s * Tr::kQBytes)), do_desc = sw128_desc_lo(smem_addr(sdO + s * Tr::kQBytes));
        const int row_off = ((b * p.H + hq) * T + q0) & 3; /* the tile's first entry in its L / D_i box */
        const float *L_t = sL + s * Tr::kRowStride + row_off, *D_t = sDv + s * Tr::kRowStride + row_off;
        unsigned char *ds_tile = sdS + (i & 1) * Tr::kDsBytes;

        /* S^T = K Q^T, dP^T = V dO^T: issued back to back, each as soon as its operands landed */
        float st[NQ][4], dpt[NQ][4];
        mbar_wait(&bar.q_full[s], ph);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
            wgmma_ss<E, Br, 0>(st, sw128_desc_at(k_desc, (kk / 4) * Tr::kKVBoxBytes + (kk % 4) * 32),
                               sw128_desc_at(q_desc, (kk / 4) * Tr::kQBoxBytes + (kk % 4) * 32), kk > 0);
        wgmma_commit();
        mbar_wait(&bar.do_full[s], ph);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
            wgmma_ss<E, Br, 0>(dpt, sw128_desc_at(v_desc, (kk / 4) * Tr::kKVBoxBytes + (kk % 4) * 32),
                               sw128_desc_at(do_desc, (kk / 4) * Tr::kQBoxBytes + (kk % 4) * 32), kk > 0);
        wgmma_commit();

        /* P^T while dP^T runs: rows past T, keys past T and (causal) keys after the query masked */
        wgmma_wait<1>();
        wgmma_fence_operands(st);
        if (EXTRA) {
            if (q0 < full_lo || q0 + Br > full_hi) {
                const int no_doc[2] = {0, 0};
                sm90_mask_tile<NQ>(st, q_lo, q_hi, nullptr, no_doc, q0);
            }
            if (p.x.slopes) alibi_tile<NQ>(st, flash_mask_slope(p.x, hq), key_row0, q0, true);
        } else {
            const bool needs_mask = q0 + Br > T || key_row0 + 16 > T || (CAUSAL && key_row0 + 15 > q0);
            if (needs_mask) mask_tile<NQ, CAUSAL ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE>(st, key_row0, q0, T, true);
        }
#pragma unroll
        for (int nt = 0; nt < NQ; nt++) {
            /* two 4-byte reads: row_off may be odd, so L_t + nt * 8 + c need not be 8-byte aligned */
            const float L2[2] = {L_t[nt * 8 + c] * LOG2E_F, L_t[nt * 8 + c + 1] * LOG2E_F};
#pragma unroll
            for (int e = 0; e < 4; e++) st[nt][e] = exp2f(st[nt][e] * p.scale_log2 - L2[e & 1]);
        }
        wgmma_wait<0>();
        wgmma_fence_operands(dpt);
#pragma unroll
        for (int nt = 0; nt < NQ; nt++) {
            const float Dd[2] = {D_t[nt * 8 + c], D_t[nt * 8 + c + 1]};
#pragma unroll
            for (int e = 0; e < 4; e++) dpt[nt][e] = st[nt][e] * (dpt[nt][e] - Dd[e & 1]);
        }
        uint32_t pf[NQ / 2][4], dsf[NQ / 2][4];
        acc_to_a_frags<E, NQ>(pf, st);
        acc_to_a_frags<E, NQ>(dsf, dpt);

        /* dV += P^T dO, dK += dS^T Q (query rows are the k dimension: dO, Q MN-major, one 64-column
         * panel per wgmma) */
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < NQ / 2; kk++)
#pragma unroll
            for (int pn = 0; pn < Tr::kPanels; pn++) {
                wgmma_rs<E, 64, 1>(*reinterpret_cast<float(*)[8][4]>(&dv[pn * 8]), pf[kk],
                                   sw128_desc_at(do_desc, pn * Tr::kQBoxBytes + kk * 16 * 128), 1);
                wgmma_rs<E, 64, 1>(*reinterpret_cast<float(*)[8][4]>(&dk[pn * 8]), dsf[kk],
                                   sw128_desc_at(q_desc, pn * Tr::kQBoxBytes + kk * 16 * 128), 1);
            }
        wgmma_commit();

        /* dS^T to smem under those: this thread's keys (rows) g and g + 8 of the warp, queries
         * 16kk + c (+8). The buffer was last read by tile i - 2's dQ wgmmas, which both warpgroups
         * retired before they met at tile i - 1's barrier. */
        {
            const int r = cw * 64 + warp * 16 + g;
#pragma unroll
            for (int kk = 0; kk < NQ / 2; kk++) {
                *(uint32_t *)(ds_tile + sw128_offset<Bc>(r, kk * 16 + c)) = dsf[kk][0];
                *(uint32_t *)(ds_tile + sw128_offset<Bc>(r + 8, kk * 16 + c)) = dsf[kk][1];
                *(uint32_t *)(ds_tile + sw128_offset<Bc>(r, kk * 16 + 8 + c)) = dsf[kk][2];
                *(uint32_t *)(ds_tile + sw128_offset<Bc>(r + 8, kk * 16 + 8 + c)) = dsf[kk][3];
            }
        }
        fence_proxy_async_smem();
        /* the staging tile's last reduce-add (tile i - 1) has read it: waited for by its issuer
         * before the barrier, after which every thread of the warpgroup may rewrite it */
        if (wg_leader) bulk_wait_read_all();
        named_barrier_sync(kBarConsumers, 128 * Tr::kConsumers); /* all of dS^T is in smem */

        /* dQ part = dS K over the Bc keys (A = dS^T MN-major, B = K MN-major) */
        float dq[DQN / 8][4];
        const uint32_t ds_desc = sw128_desc_lo(smem_addr(ds_tile) + dq_a_panel * (Bc * 128));
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < Bc / 16; kk++)
            wgmma_ss<E, DQN, 1>(dq, sw128_desc_at(ds_desc, kk * 16 * 128), sw128_desc_at(dq_b_desc, kk * 16 * 128), kk > 0);
        wgmma_commit();
        wgmma_wait<1>(); /* dV, dK retired: Q and dO are read */
        wgmma_fence_operands(dv);
        wgmma_fence_operands(dk);
        release(&bar.empty[s]);
        wgmma_wait<0>();
        wgmma_fence_operands(dq);

        /* dQ part -> the staging tile (fp32 SW128: row r's 16-byte chunk x at x ^ (r % 8)) -> one
         * reduce-add per 32-column box, rows past T clipped by the tensor map */
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int r = warp * 16 + g + 8 * half;
#pragma unroll
            for (int j = 0; j < DQN / 8; j++) {
                const int col = 8 * j + c;
                const uint32_t off = (col / 32) * Tr::kDqBoxBytes + r * 128 + (((((col % 32) / 4) ^ (r & 7))) << 4) +
                                     (col % 4) * 4;
                *(float2 *)(stage_dq + off) = make_float2(dq[j][2 * half], dq[j][2 * half + 1]);
            }
        }
        fence_proxy_async_smem();
        named_barrier_sync(kBarWarpgroup0 + cw, 128);
        const int dq_row0 = q0 + dq_row_off;
        if (wg_leader && dq_row0 < T) {
#pragma unroll
            for (int x = 0; x < Tr::kDqBoxes; x++)
                tma_reduce_add_3d(&tm_dq, stage_dq + x * Tr::kDqBoxBytes, dq_col0 + 32 * x, dq_row0, b * p.H + hq);
            bulk_commit();
        }
        if (++ti == m_count) ti = 0, hq++;
    }
    if (wg_leader) bulk_wait_all(); /* the last reduce-adds have read their smem and landed */

    /* dK = scale * sum dS^T Q, dV: this warp's 16 keys (zero where no query saw them) */
    const long long kv_off = (long long)b * T * p.ld_qkv + (long long)kvh * D;
    store_dk_dv<ND, E>(p, kv_off, dk, dv, key_row0, g, c, T);
#endif
}

/* ---- host side ------------------------------------------------------------------------------ */

static bool misaligned16(const void *x) { return ((uintptr_t)x & 15) != 0; }

#if FLASH_SM90 /* the launchers: only an sm_90a build has the kernel */
/* Encodes one tensor map: rank dims (innermost first, elements), the byte strides of dims 1.., the
 * box, and the swizzle; out-of-range boxes read as zeros (loads) or are clipped (reduce-adds). */
static int tma_bwd_map(CUtensorMap *map, const void *base, CUtensorMapDataType type, cuuint32_t rank,
                       const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box, CUtensorMapSwizzle swz) {
    const CUresult r = flash_tma_encode(map, type, rank, base, dims, strides, box, swz);
    if (r != CUDA_SUCCESS) return attn_cuda_fail("flash-tma backward: cuTensorMapEncodeTiled failed (CUresult %d)", (int)r);
    return 0;
}
/* The fp32 rows L or D_i ([B * H][T], flat): boxes of box_rows consecutive entries (Traits::kRowBox: a
 * tile's Br rows from its first entry rounded down to a multiple of 4, the box's address aligned). */
static int tma_bwd_map_rows(CUtensorMap *map, const float *base, long long n, int box_rows) {
    const cuuint64_t dims[1] = {(cuuint64_t)n}, strides[1] = {0};
    const cuuint32_t box[1] = {(cuuint32_t)box_rows};
    return tma_bwd_map(map, base, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 1, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_NONE);
}

template <typename E, int D, bool CAUSAL, bool EXTRA>
static int launch_tma_backward(const AttnShape *s, const AttnIO *a, cudaStream_t st) {
    using Tr = TmaBwdTraits<D>;
    const int Hkv = attn_kv_heads(s);
    const long long rows = attn_rows(s);
    CUtensorMap mq, mk, mv, mdo, ml, mdv, mdq;
    {
        /* the accumulator [B * H][T][D] fp32: boxes of 32 columns (128 bytes) x 64 rows, swizzled */
        const cuuint64_t dims[3] = {(cuuint64_t)D, (cuuint64_t)s->T, (cuuint64_t)s->B * s->H};
        const cuuint64_t strides[2] = {(cuuint64_t)D * 4, (cuuint64_t)D * 4 * (cuuint64_t)s->T};
        const cuuint32_t box[3] = {32, 64, 1};
        if (tma_bwd_map(&mdq, a->dq_accum, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, dims, strides, box,
                        CU_TENSOR_MAP_SWIZZLE_128B))
            return 1;
    }
    if (flash_tma_map_tokens(&mq, a->q, s->dtype, s->H * D, s->T, s->B, s->ld_qkv, Tr::Br) ||
        flash_tma_map_tokens(&mk, a->k, s->dtype, Hkv * D, s->T, s->B, s->ld_qkv, Tr::Bc) ||
        flash_tma_map_tokens(&mv, a->v, s->dtype, Hkv * D, s->T, s->B, s->ld_qkv, Tr::Bc) ||
        flash_tma_map_tokens(&mdo, a->dout, s->dtype, s->H * D, s->T, s->B, s->ld_o, Tr::Br) ||
        tma_bwd_map_rows(&ml, a->lse, rows, Tr::kRowBox) || tma_bwd_map_rows(&mdv, a->dvec, rows, Tr::kRowBox))
        return 1;
    const AttnParams<E> p = attn_params<E>(s, *a); /* the kernel writes dk, dv; the rest comes by tensor maps */
    void (*kernel)(const CUtensorMap, const CUtensorMap, const CUtensorMap, const CUtensorMap, const CUtensorMap,
                   const CUtensorMap, const CUtensorMap, const AttnParams<E>) =
        flash_bwd_tma_kernel<E, D, CAUSAL, EXTRA>;
    ATTN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
    dim3 grid((unsigned)((s->T + Tr::Bc - 1) / Tr::Bc), (unsigned)(s->B * Hkv));
    kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, st>>>(mq, mk, mv, mdo, ml, mdv, mdq, p);
    ATTN_LAUNCH_CHECK();
    return 0;
}

template <typename E, int D>
static int tma_backward_d(const AttnShape *s, const AttnIO *a, cudaStream_t st) {
    const bool extra = flash_mask_has_extras(s), causal = s->mask.kind == ATTN_MASK_CAUSAL;
    if (causal)
        return extra ? launch_tma_backward<E, D, true, true>(s, a, st) : launch_tma_backward<E, D, true, false>(s, a, st);
    return extra ? launch_tma_backward<E, D, false, true>(s, a, st) : launch_tma_backward<E, D, false, false>(s, a, st);
}
template <typename E>
static int tma_backward_as(const AttnShape *s, const AttnIO *a, cudaStream_t st) {
    return s->D == 64 ? tma_backward_d<E, 64>(s, a, st) : tma_backward_d<E, 128>(s, a, st);
}
#endif

int flash_tma_backward_main(const AttnShape *s, const AttnIO *a, cudaStream_t stream) {
    if (!FLASH_SM90 || flash_tma_refuses(s)) return -1;
    if (misaligned16(a->lse) || misaligned16(a->dvec) || misaligned16(a->dq_accum)) return -1;
    if ((long long)s->T * s->ld_o * 2 >= (1LL << 40)) return -1; /* dO's sequence stride, as ld_qkv's */
    if (attn_rows(s) >= (1LL << 31)) return -1;                    /* L / D_i coordinates are int32 */
#if FLASH_SM90
    switch (s->dtype) {
    case ATTN_BF16: return tma_backward_as<bf16>(s, a, stream);
    case ATTN_FP16: return tma_backward_as<fp16>(s, a, stream);
    default: return -1; /* refused above */
    }
#else
    return -1;
#endif
}
