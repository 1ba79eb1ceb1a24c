/* attention/flash.cu: FlashAttention-2 in bf16 or fp16 on tensor cores (mma.sync m16n8k16, fp32
 * accumulate). The element type E is a template parameter of every kernel: bf16 and fp16 run the
 * same bodies (mma_bf16.cuh: only the MMA's input type and the fp32 -> E conversions differ).
 *
 * Forward, one block per (query tile of Br rows, batch*head); each warp owns 16 query rows;
 * query head h reads K/V head h / group (grouped-query attention, group = H / Hkv) in place:
 *   Q tile -> registers; for each key tile j (K, V double-buffered in smem by cp.async):
 *     S = Q K_j^T (registers), masked; online softmax in base 2 with the scale folded in:
 *       m' = max(m, rowmax(S)),  P = 2^(S - m'),  l' = 2^(m - m') l + rowsum(P),
 *       O' = 2^(m - m') O + P V_j      (P goes to E straight from the S registers)
 *   O = O / l, L = ln 2 * (m + log2 l) (natural log-sum-exp of the scaled scores, +inf for an
 *   empty row so that backward's exp(S - L) gives 0). Causal: key tiles past the diagonal are
 *   never visited; only tiles that cross it (or T's ragged end) pay for the mask.
 * Backward, FA2's three kernels:
 *   1. D_i = rowsum(dO_i * O_i) (fp32), and the fp32 dQ accumulator is zeroed;
 *   2. one block per (key tile of Bc keys, batch*K/V head), each warp owning 16 keys; K, V stay
 *      in smem while the query tiles of the group's query heads stream by, head after head
 *      (double-buffered), so dK, dV are summed over the group in registers. Per query tile,
 *      transposed so that the key dimension is the MMA row:
 *        S^T = K Q^T, P^T = exp(S^T - L), dP^T = V dO^T,
 *      dS^T = P^T * (dP^T - D); dV += P^T dO, dK += dS^T Q in registers; dS goes through smem
 *      and dQ += dS K is added into the fp32 accumulator with atomics;
 *   3. dQ = scale * accumulator, to E.
 *   (1 and 3 run D/8 threads per row on 16-byte vectors over a (row block, batch*head) grid.)
 * The mask family (attention.h) beyond causal runs in the EXTRA instantiations of the same
 * bodies (flash_mask.cuh): windows, documents, key padding, ALiBi and a dense fp32 bias with any
 * kind, added in the kernel's unscaled score units (bias / scale); tiles no pair can see are not
 * visited, tiles every pair sees skip the per-element mask (a bias never makes a tile skippable).
 * With dbias the backward adds dS = dL/dS (fp32) into it by fp32 atomics: dbias is reproducible
 * only up to rounding order where a broadcast stride sends several additions to one entry.
 * Occupancy (D = 64): the forward re-reads Q's fragments from smem per key tile so that it fits
 * 168 registers (3 blocks of 4 warps per SM); the backward streams 32-query tiles so that it
 * fits 128 registers (2 blocks of 8 warps per SM). Both measured faster than holding more in
 * registers at lower occupancy (dev/attention_notes.md, v5).
 *   dQ's atomics make the backward's dQ non-deterministic in the last bits (and broadcast dbias
 *   entries); all else is.
 * Any T: rows past T load as zeros and are masked or not stored.
 */
#include "attention/attn_params.cuh"
#include "attention/cuda_common.cuh"
#include "attention/flash_mask.cuh"
#include "attention/flash_sm90.h"
#include "attention/flash_sm90_tma.h"
#include "attention/flash_sm90_tma_bwd.h"
#include "attention/mma_bf16.cuh"
#include "attention/tc_attention.cuh"
#include "attention/rowdot.cuh"


/* ---- tile shapes ----------------------------------------------------------------------------- */
template <int D_> struct FlashFwdTraits {
    static constexpr int D = D_;
    /* 16-row MMA tiles per warp: two halve the K/V fragment loads per MMA (smem bandwidth is the
     * limit at one); D = 128 has no registers for two. */
    static constexpr int kRowTiles = D_ == 128 ? 1 : 2;
    static constexpr int kWarps = 8 / kRowTiles;
    static constexpr int Br = 16 * kRowTiles * kWarps; /* query rows per block */
    static constexpr int Bc = D_ == 128 ? 32 : 64;     /* keys per tile */
    static constexpr int kThreads = 32 * kWarps;
    /* D = 64: 3 blocks (12 warps) per SM; needs <= 168 registers, which Q in registers exceeds
     * (232), so Q's fragments are re-read from smem per key tile (kQSmem). */
    static constexpr int kMinBlocks = D_ == 64 ? 3 : 1;
    /* Q's fragments re-read from smem per key tile (D = 64 only, for the 3 blocks per SM; at
     * D = 128 with one row tile it measured 8% slower: 4.64 vs 4.29 ms forward at T = 4096) */
    static constexpr bool kQSmem = D_ == 64;
    static constexpr int kStride = D + 8;              /* padded smem row (elements) */
    static constexpr int kSmemBytes = (Br + 2 * 2 * Bc) * kStride * 2; /* Q + 2 stages of K, V */
};
template <int D_> struct FlashBwdTraits {
    static constexpr int D = D_;
    /* 8 warps = 128 keys per block: each key block adds its dQ contribution once, so 128 keys
     * halve the fp32 atomic traffic of 64 (measured: 10.5 -> 7.2 ms fwd+bwd at T = 4096). */
    static constexpr int kWarps = 8;
    static constexpr int Bc = 16 * kWarps;       /* keys per block: 16 per warp */
    static constexpr int Br = D_ == 64 ? 32 : D_ == 128 ? 32 : 64; /* queries per streamed tile */
    static constexpr int kThreads = 32 * kWarps;
    /* D = 64: 2 blocks (16 warps) per SM at <= 128 registers, which 32-query tiles fit without
     * spilling (64-query tiles need 223) */
    static constexpr int kMinBlocks = D_ == 64 ? 2 : 1;
    static constexpr int kStride = D + 8;
    static constexpr int kDsStride = Br + 8;     /* dS tile [Bc keys][Br queries] */
    /* dQ = dS K is split over warps: row groups of 16 queries x column groups of D. */
    static constexpr int kDqRowGroups = Br / 16;
    static constexpr int kDqColGroups = kWarps / kDqRowGroups;
    static constexpr int kDqCols = D / kDqColGroups;
    static constexpr int kSmemBytes = (2 * Bc + 2 * 2 * Br) * kStride * 2 /* K, V, 2 x (Q, dO) */
                                      + Bc * kDsStride * 2                /* dS */
                                      + 2 * 2 * Br * 4;                   /* 2 x (L, D) */
};

/* What an EXTRA instantiation does with a dense bias: nothing, read it into the scores, or read it
 * and add the backward's dS into its gradient (backward only). */
enum FlashBiasUse { kNoBias = 0, kBias = 1, kBiasGrad = 2 };

/* ---- forward ------------------------------------------------------------------------------- */

template <typename E, int D, bool CAUSAL, bool EXTRA, int BIAS>
__device__ __forceinline__ void flash_forward_body(const AttnParams<E> &p) {
    static_assert(BIAS == kNoBias || (EXTRA && BIAS == kBias), "the forward reads a bias only in EXTRA");
    const FlashMask &x = p.x;     /* read by EXTRA only */
    const FlashBias &bias = p.bias; /* read by BIAS only */
    using Tr = FlashFwdTraits<D>;
    constexpr int Br = Tr::Br, Bc = Tr::Bc, S = Tr::kStride, MT = Tr::kRowTiles;
    constexpr int NT = Bc / 8, ND = D / 8, KD = D / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    E *sQ = (E *)smem_raw;
    E *sK = sQ + Br * S;          /* [2][Bc][S] */
    E *sV = sK + 2 * Bc * S;      /* [2][Bc][S] */

    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H;
    const int m_blk = attn_block_tile(true); /* heaviest (causal) query tiles first */
    const int warp = threadIdx.x / 32;
    const int T = p.T, q0 = m_blk * Br;
    /* GQA: query head h reads K/V head h / group, in place */
    const long long head_off = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long kv_off = (long long)b * T * p.ld_qkv + (long long)(h / p.group) * D;
    const E *gq = p.q + head_off, *gk = p.k + kv_off, *gv = p.v + kv_off;

    int n_tiles = (T + Bc - 1) / Bc, j_lo = 0;
    if (CAUSAL) n_tiles = min(n_tiles, (min(q0 + Br, T) + Bc - 1) / Bc);
    if (EXTRA) flash_live_tiles<CAUSAL>(x, b, T, q0, min(q0 + Br, T), Bc, n_tiles, true, j_lo, n_tiles);

    load_rows_async<Br, D, Tr::kThreads>(sQ, gq, p.ld_qkv, q0, T);
    load_rows_async<Bc, D, Tr::kThreads>(sK, gk, p.ld_qkv, j_lo * Bc, T);
    load_rows_async<Bc, D, Tr::kThreads>(sV, gv, p.ld_qkv, j_lo * Bc, T);
    cp_async_commit();

    uint32_t qf[MT][KD][4]; /* !kQSmem: Q stays in registers for the whole key loop */
    float o[MT][ND][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int dt = 0; dt < ND; dt++) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.0f;
    }
    const int warp_row0 = q0 + warp * 16 * MT; /* this warp's rows: warp_row0 + [0, 16 MT) */

    for (int j = j_lo; j < n_tiles; j++) {
        const int stage = (j - j_lo) & 1;
        if (j + 1 < n_tiles) {
            load_rows_async<Bc, D, Tr::kThreads>(sK + (stage ^ 1) * Bc * S, gk, p.ld_qkv, (j + 1) * Bc, T);
            load_rows_async<Bc, D, Tr::kThreads>(sV + (stage ^ 1) * Bc * S, gv, p.ld_qkv, (j + 1) * Bc, T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (!Tr::kQSmem && j == j_lo) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int kk = 0; kk < KD; kk++) load_a_frag(qf[mt][kk], sQ, S, (warp * MT + mt) * 16, kk * 16);
        }
        const E *k_t = sK + stage * Bc * S, *v_t = sV + stage * Bc * S;

        /* S = Q K^T: each K fragment serves all MT row tiles */
        float s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint32_t qk[MT][4];
            if (Tr::kQSmem) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++) load_a_frag(qk[mt], sQ, S, (warp * MT + mt) * 16, kk * 16);
            }
#define FLASH_QF(mt) (Tr::kQSmem ? qk[mt] : qf[mt][kk])
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t bfr[4];
                load_bt_frags(bfr, k_t, S, np * 16, kk * 16);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_16816<E>(s[mt][2 * np], FLASH_QF(mt), bfr[0], bfr[1]);
                    mma_16816<E>(s[mt][2 * np + 1], FLASH_QF(mt), bfr[2], bfr[3]);
                }
            }
#undef FLASH_QF
        }
        const int col0 = j * Bc;
        uint32_t pf[MT][NT / 2][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int row0 = warp_row0 + mt * 16;
            bool needs_mask = col0 + Bc > T || (CAUSAL && col0 + Bc - 1 > row0);
            if (EXTRA) {
                if (!flash_tile_full<CAUSAL>(x, b, T, row0, row0 + 16, col0, col0 + Bc)) {
                    mask_tile_x<NT, CAUSAL>(s[mt], x, b, h, row0, col0, T, false);
                    if (BIAS) bias_tile<NT, true>(s[mt], bias, x.inv_scale, b, h, row0, col0, T, false);
                } else {
                    if (x.slopes) alibi_tile<NT>(s[mt], x.slopes[h] * x.inv_scale, row0, col0, false);
                    if (BIAS) bias_tile<NT, false>(s[mt], bias, x.inv_scale, b, h, row0, col0, T, false);
                }
            } else if (needs_mask) {
                mask_tile<NT, CAUSAL>(s[mt], row0, col0, T, false);
            }
            online_softmax_step<NT, ND>(s[mt], o[mt], m[mt], l[mt], p.scale_log2);
            acc_to_a_frags<E, NT>(pf[mt], s[mt]);
        }

        /* O += P V */
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t bfr[4];
                load_b_frags(bfr, v_t, S, kk * 16, dp * 16);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_16816<E>(o[mt][2 * dp], pf[mt][kk], bfr[0], bfr[1]);
                    mma_16816<E>(o[mt][2 * dp + 1], pf[mt][kk], bfr[2], bfr[3]);
                }
            }
        __syncthreads(); /* this stage is reloaded two tiles on */
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        store_o_and_lse<ND>(p.out + (long long)b * T * p.ld_o + (long long)h * D, p.ld_o, p.lse + (long long)bh * T,
                            o[mt], m[mt], l[mt], warp_row0 + mt * 16, T);
}

template <typename E, int D, bool CAUSAL>
__global__ void __launch_bounds__(FlashFwdTraits<D>::kThreads, FlashFwdTraits<D>::kMinBlocks)
flash_forward_kernel(AttnParams<E> p) {
    flash_forward_body<E, D, CAUSAL, false, kNoBias>(p);
}
template <typename E, int D, bool CAUSAL, int BIAS>
__global__ void __launch_bounds__(FlashFwdTraits<D>::kThreads, FlashFwdTraits<D>::kMinBlocks)
flash_forward_x_kernel(AttnParams<E> p) {
    flash_forward_body<E, D, CAUSAL, true, BIAS>(p);
}

/* ---- backward ------------------------------------------------------------------------------ */

/* Row kernels of the backward: a 2-D grid (row blocks of a head, batch*head), D/8 threads per
 * row, each owning 8 consecutive elements (16-byte vectors): no 64-bit division per element. */
template <int D> struct FlashRowTraits {
    static constexpr int kLanes = D / 8;            /* threads per row */
    static constexpr int kRows = 256 / kLanes;      /* rows per 256-thread block */
};

/* dQ = scale * accumulator, into the token-major output (element type E). */
template <typename E, int D>
__global__ void __launch_bounds__(256) flash_bwd_convert_dq(AttnParams<E> p) {
    using R = FlashRowTraits<D>;
    const int bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
    const int t = blockIdx.x * R::kRows + threadIdx.x / R::kLanes, part = threadIdx.x % R::kLanes;
    if (t >= p.T) return;
    const float4 *src = (const float4 *)(p.dq_accum + ((long long)bh * p.T + t) * D + part * 8);
    float4 u = src[0], w = src[1];
    uint4 r;
    r.x = pack2<E>(u.x * p.scale, u.y * p.scale);
    r.y = pack2<E>(u.z * p.scale, u.w * p.scale);
    r.z = pack2<E>(w.x * p.scale, w.y * p.scale);
    r.w = pack2<E>(w.z * p.scale, w.w * p.scale);
    *(uint4 *)(p.dq + ((long long)b * p.T + t) * p.ld_qkv + (long long)h * D + part * 8) = r;
}

/* dst[0..1] += v (fp32, global): one vector reduction on sm_90, two before. */
__device__ __forceinline__ void atomic_add2(float *dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2 *>(dst), make_float2(a, b));
#else
    atomicAdd(dst, a);
    atomicAdd(dst + 1, b);
#endif
}

template <typename E, int D, bool CAUSAL, bool EXTRA, int BIAS>
__device__ __forceinline__ void flash_backward_body(const AttnParams<E> &p) {
    static_assert(BIAS == kNoBias || EXTRA, "the backward reads a bias only in EXTRA");
    const FlashMask &x = p.x;     /* read by EXTRA only */
    const FlashBias &bias = p.bias; /* read by BIAS only */
    using Tr = FlashBwdTraits<D>;
    constexpr int Br = Tr::Br, Bc = Tr::Bc, S = Tr::kStride, DS = Tr::kDsStride;
    constexpr int NQ = Br / 8, ND = D / 8, KD = D / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    E *sK = (E *)smem_raw;
    E *sV = sK + Bc * S;
    E *sQ = sV + Bc * S;          /* [2][Br][S] */
    E *sdO = sQ + 2 * Br * S;     /* [2][Br][S] */
    E *sdS = sdO + 2 * Br * S;    /* [Bc][DS]: dS^T[key][query] */
    float *sL = (float *)(sdS + Bc * DS); /* [2][Br] */
    float *sD = sL + 2 * Br;              /* [2][Br] */

    /* One block per (key tile, batch * K/V head); it runs the group's query heads one after the
     * other, so that dK, dV (the sums over the group) stay in registers. */
    const int bkv = attn_block_head(), b = bkv / p.Hkv, hkv = bkv % p.Hkv;
    const int n_blk = attn_block_tile(false); /* causal: low keys see the most queries */
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    const int g = lane >> 2, c = 2 * (lane & 3);
    const int T = p.T, k0 = n_blk * Bc;
    const long long kv_off = (long long)b * T * p.ld_qkv + (long long)hkv * D;
    const int h_first = hkv * p.group; /* the group's query heads: h_first + [0, group) */

    /* Query tiles this key block meets (the same for every query head: the structural masks
     * depend on the sequence alone): causal from the diagonal on. Without a mask every key block
     * starts at a different tile (rotated order), so that the blocks of one head do not all add
     * into the same dQ rows at once. */
    int m_first = CAUSAL ? k0 / Br : 0, m_end = (T + Br - 1) / Br;
    if (EXTRA) flash_live_tiles<CAUSAL>(x, b, T, k0, min(k0 + Bc, T), Br, m_end, false, m_first, m_end);
    const int m_count = m_end - m_first;
    auto tile_at = [&](int i) { return CAUSAL || EXTRA ? m_first + i : (i + n_blk) % m_end; };
    /* the steps: (query head, query tile) pairs, head-major, group * m_count of them */
    const int n_steps = m_count * p.group;

    auto load_query_tile = [&](int h, int mi, int stage) {
        const long long q_off = (long long)b * T * p.ld_qkv + (long long)h * D;
        const long long o_off = (long long)b * T * p.ld_o + (long long)h * D;
        const float *gL = p.lse + ((long long)b * p.H + h) * T, *gD = p.dvec + ((long long)b * p.H + h) * T;
        load_rows_async<Br, D, Tr::kThreads>(sQ + stage * Br * S, p.q + q_off, p.ld_qkv, mi * Br, T);
        load_rows_async<Br, D, Tr::kThreads>(sdO + stage * Br * S, p.dout + o_off, p.ld_o, mi * Br, T);
        for (int u = threadIdx.x; u < Br; u += Tr::kThreads) {
            int t = mi * Br + u;
            bool ok = t < T;
            cp_async_4(sL + stage * Br + u, gL + (ok ? t : 0), ok);
            cp_async_4(sD + stage * Br + u, gD + (ok ? t : 0), ok);
        }
    };

    load_rows_async<Bc, D, Tr::kThreads>(sK, p.k + kv_off, p.ld_qkv, k0, T);
    load_rows_async<Bc, D, Tr::kThreads>(sV, p.v + kv_off, p.ld_qkv, k0, T);
    if (n_steps > 0) load_query_tile(h_first, tile_at(0), 0);
    cp_async_commit();

    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int dt = 0; dt < ND; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.0f;
    const int key_row0 = k0 + warp * 16;

    int h = h_first, ti = 0; /* step i: query head h, query tile tile_at(ti) */
    for (int i = 0; i < n_steps; i++) {
        const int mi = tile_at(ti), stage = i & 1;
        int h_next = h, ti_next = ti + 1;
        if (ti_next == m_count) { h_next++; ti_next = 0; }
        if (i + 1 < n_steps) load_query_tile(h_next, tile_at(ti_next), stage ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const E *q_t = sQ + stage * Br * S, *do_t = sdO + stage * Br * S;
        const float *L_t = sL + stage * Br, *D_t = sD + stage * Br;

        /* S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys x Br queries */
        float st[NQ][4], dpt[NQ][4];
        mma_pair_tile<NQ, KD>(st, dpt, sK, sV, q_t, do_t, S, warp * 16);
        const int q0 = mi * Br;
        bool needs_mask = q0 + Br > T || key_row0 + 16 > T || (CAUSAL && key_row0 + 15 > q0);
        if (EXTRA) {
            if (!flash_tile_full<CAUSAL>(x, b, T, q0, q0 + Br, key_row0, key_row0 + 16)) {
                mask_tile_x<NQ, CAUSAL>(st, x, b, h, key_row0, q0, T, true);
                if (BIAS) bias_tile<NQ, true>(st, bias, x.inv_scale, b, h, key_row0, q0, T, true);
            } else {
                if (x.slopes) alibi_tile<NQ>(st, x.slopes[h] * x.inv_scale, key_row0, q0, true);
                if (BIAS) bias_tile<NQ, false>(st, bias, x.inv_scale, b, h, key_row0, q0, T, true);
            }
        } else if (needs_mask) {
            mask_tile<NQ, CAUSAL>(st, key_row0, q0, T, true);
        }

        /* P^T = 2^(S^T scale log2e - L log2e);  dS^T = P^T (dP^T - D). A thread's columns are
         * queries nt*8 + c and +1: one 8-byte load of each of L and D per n-tile. */
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
        /* dL/dbias = dS (fp32, before dQ's and dK's scale) */
        if (BIAS == kBiasGrad) dbias_tile_add<NQ>(dpt, bias, b, h, key_row0, q0, T, true);

        uint32_t pf[NQ / 2][4], dsf[NQ / 2][4];
        acc_to_a_frags<E, NQ>(pf, st);
        acc_to_a_frags<E, NQ>(dsf, dpt);
        /* dS^T to smem as [key][query] E pairs (the same rounded values dK uses) */
#pragma unroll
        for (int kk = 0; kk < NQ / 2; kk++) {
            E *row_lo = sdS + (warp * 16 + g) * DS + kk * 16 + c, *row_hi = row_lo + 8 * DS;
            *(uint32_t *)row_lo = dsf[kk][0];
            *(uint32_t *)row_hi = dsf[kk][1];
            *(uint32_t *)(row_lo + 8) = dsf[kk][2];
            *(uint32_t *)(row_hi + 8) = dsf[kk][3];
        }

        /* dV += P^T dO, dK += dS^T Q */
        MmaOps16<E>::mma_ab2(dv, pf, do_t, dk, dsf, q_t, S);
        __syncthreads(); /* sdS complete */

        /* dQ[q0 + rows, cols] += dS K for this warp's 16 queries x kDqCols columns, into query
         * head h's fp32 accumulator; dS's A fragments come transposed out of the [key][query] tile. */
        {
            constexpr int NC = Tr::kDqCols / 8;
            const int rg = warp % Tr::kDqRowGroups, cg = warp / Tr::kDqRowGroups;
            const int d0 = cg * Tr::kDqCols;
            float *gdq = p.dq_accum + ((long long)b * p.H + h) * T * D;
            float dq[NC][4];
#pragma unroll
            for (int nt = 0; nt < NC; nt++) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < Bc / 16; kk++) {
                uint32_t af[4];
                load_a_frag_transposed(af, sdS, DS, rg * 16, kk * 16);
#pragma unroll
                for (int dp = 0; dp < NC / 2; dp++) {
                    uint32_t bk[4];
                    load_b_frags(bk, sK, S, kk * 16, d0 + dp * 16);
                    mma_16816<E>(dq[2 * dp], af, bk[0], bk[1]);
                    mma_16816<E>(dq[2 * dp + 1], af, bk[2], bk[3]);
                }
            }
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int t = q0 + rg * 16 + g + 8 * half;
                if (t < T) {
                    float *row = gdq + (long long)t * D + d0 + c;
#pragma unroll
                    for (int nt = 0; nt < NC; nt++) {
                        atomic_add2(row + nt * 8, dq[nt][2 * half], dq[nt][2 * half + 1]);
                    }
                }
            }
        }
        h = h_next;
        ti = ti_next;
    }
    cp_async_wait<0>();

    /* dK = scale * dS^T Q, dV: this warp's 16 keys of K/V head hkv (summed over its group) */
    store_dk_dv<ND, E>(p, kv_off, dk, dv, key_row0, g, c, T);
}

template <typename E, int D, bool CAUSAL>
__global__ void __launch_bounds__(FlashBwdTraits<D>::kThreads, FlashBwdTraits<D>::kMinBlocks)
flash_backward_kernel(AttnParams<E> p) {
    flash_backward_body<E, D, CAUSAL, false, kNoBias>(p);
}
template <typename E, int D, bool CAUSAL, int BIAS>
__global__ void __launch_bounds__(FlashBwdTraits<D>::kThreads, FlashBwdTraits<D>::kMinBlocks)
flash_backward_x_kernel(AttnParams<E> p) {
    flash_backward_body<E, D, CAUSAL, true, BIAS>(p);
}

/* ---- host side ------------------------------------------------------------------------------ */

static const char *flash_unsupported(const AttnShape *s) {
    const char *why = attn_shape_basics(s);
    if (why) return why;
    if (s->dtype != ATTN_BF16 && s->dtype != ATTN_FP16) return "flash: bf16 or fp16 only";
    if (s->D != 32 && s->D != 64 && s->D != 128) return "flash: head dimension must be 32, 64 or 128";
    if (s->mask.dbias && !s->mask.bias) return "flash: a bias gradient needs a bias";
    if (s->mask.bias && (s->mask.stride_b < 0 || s->mask.stride_h < 0 || s->mask.stride_row < 0))
        return "flash: negative bias strides";
    if (s->H % attn_kv_heads(s)) return "flash: the K/V heads (Hkv) must divide H";
    if (s->mask.window < 0) return "flash: negative window";
    if (s->ld_qkv % 8 || s->ld_o % 8) return "flash: leading dimensions must be multiples of 8";
    if ((long long)s->B * s->H > kAttnMaxHeads) return "flash: B * H > 65535";
    return NULL;
}
static size_t flash_saved_bytes(const AttnShape *s) { return (size_t)attn_rows(s) * 4; }
/* The workspace: D_i (one float per row) and dQ's fp32 accumulator for the backward, and 256
 * bytes whose first int is flash-tma's persistent forward's work counter (zeroed by it). */
static size_t flash_dvec_bytes(const AttnShape *s) { return ((size_t)attn_rows(s) * 4 + 255) & ~(size_t)255; }
static size_t flash_counter_offset(const AttnShape *s) { return flash_dvec_bytes(s) + (size_t)attn_rows(s) * s->D * 4; }
static size_t flash_workspace_bytes(const AttnShape *s) { return flash_counter_offset(s) + 256; }

static bool misaligned(const void *x) { return ((uintptr_t)x & 15) != 0; }


/* The mask pieces beyond causal run the EXTRA instantiations; a dense bias (any kind) is one. */
static bool flash_needs_extra(const AttnShape *s) { return flash_mask_has_extras(s) || flash_mask_has_bias(s); }

template <typename E, int D, bool CAUSAL>
static int launch_forward(const AttnShape *s, const AttnIO &io, cudaStream_t st) {
    using Tr = FlashFwdTraits<D>;
    const AttnParams<E> p = attn_params<E>(s, io);
    if (flash_needs_extra(s)) {
        return s->mask.bias
                   ? attn_launch_tiled(flash_forward_x_kernel<E, D, CAUSAL, kBias>, s, Tr::Br, Tr::kThreads,
                                       Tr::kSmemBytes, p, st)
                   : attn_launch_tiled(flash_forward_x_kernel<E, D, CAUSAL, kNoBias>, s, Tr::Br, Tr::kThreads,
                                       Tr::kSmemBytes, p, st);
    }
    return attn_launch_tiled(flash_forward_kernel<E, D, CAUSAL>, s, Tr::Br, Tr::kThreads, Tr::kSmemBytes, p, st);
}

/* The backward's main kernel: one block per (key tile of Bc keys, batch * K/V head), unlike
 * attn_launch_tiled's batch * query head. */
template <int D, typename E>
static int launch_backward_main(void (*kernel)(AttnParams<E>), const AttnShape *s, const AttnParams<E> &p,
                                cudaStream_t st) {
    using Tr = FlashBwdTraits<D>;
    ATTN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
    dim3 grid((unsigned)((s->T + Tr::Bc - 1) / Tr::Bc), (unsigned)(s->B * attn_kv_heads(s)));
    kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, st>>>(p);
    ATTN_LAUNCH_CHECK();
    return 0;
}

/* The backward's main kernel: flash-mma's (mma.sync), flash-sm90's (wgmma) where it applies, or
 * flash-tma's (TMA, warp-specialised) where it applies and flash-sm90's where not. */
enum FlashBwdMain { kBwdMma, kBwdSm90, kBwdTma };

template <typename E, int D, bool CAUSAL>
static int launch_backward(const AttnShape *s, const AttnIO &io, cudaStream_t st, FlashBwdMain main_kernel) {
    using R = FlashRowTraits<D>;
    const AttnParams<E> p = attn_params<E>(s, io);
    dim3 row_grid((unsigned)((s->T + R::kRows - 1) / R::kRows), (unsigned)(s->B * s->H));
    attn_rowdot<E, D>(p.o, p.dout, p.ld_o, s->B, p.T, p.H, p.dvec, p.dq_accum, true, st); /* and zeroes dQ's accumulator */
    ATTN_LAUNCH_CHECK();
    int rc = main_kernel == kBwdTma ? flash_tma_backward_main(s, &io, st) : -1; /* -1: not applicable */
    if (rc < 0 && main_kernel != kBwdMma) rc = flash_sm90_backward_main(s, &io, st); /* wgmma, where it applies */
    if (rc < 0 && flash_needs_extra(s)) {
        rc = s->mask.dbias  ? launch_backward_main<D>(flash_backward_x_kernel<E, D, CAUSAL, kBiasGrad>, s, p, st)
             : s->mask.bias ? launch_backward_main<D>(flash_backward_x_kernel<E, D, CAUSAL, kBias>, s, p, st)
                            : launch_backward_main<D>(flash_backward_x_kernel<E, D, CAUSAL, kNoBias>, s, p, st);
    } else if (rc < 0) {
        rc = launch_backward_main<D>(flash_backward_kernel<E, D, CAUSAL>, s, p, st);
    }
    if (rc) return rc;
    flash_bwd_convert_dq<E, D><<<row_grid, 256, 0, st>>>(p);
    ATTN_LAUNCH_CHECK();
    return 0;
}

/* Calls F<E, D, CAUSAL> for the shape's head dimension and mask (E: the caller's element type). */
#define FLASH_DISPATCH(F, E, s, ...)                                                         \
    ((s)->mask.kind == ATTN_MASK_CAUSAL                                                      \
         ? ((s)->D == 32 ? F<E, 32, true>(__VA_ARGS__)                                       \
            : (s)->D == 64 ? F<E, 64, true>(__VA_ARGS__) : F<E, 128, true>(__VA_ARGS__))     \
         : ((s)->D == 32 ? F<E, 32, false>(__VA_ARGS__)                                      \
            : (s)->D == 64 ? F<E, 64, false>(__VA_ARGS__) : F<E, 128, false>(__VA_ARGS__)))

/* hopper: the wgmma kernels where they apply (flash_sm90.cu), else the mma.sync ones alone */
template <typename E>
static int flash_forward_as(bool hopper, const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                            void *saved, void *stream) {
    AttnIO io = {};
    io.q = q; io.k = k; io.v = v;
    io.out = o;
    io.lse = (float *)saved;
    int rc = hopper ? flash_sm90_forward(s, q, k, v, o, io.lse, attn_stream(stream)) : -1; /* -1: not applicable */
    if (rc >= 0) return rc;
    return FLASH_DISPATCH(launch_forward, E, s, s, io, attn_stream(stream));
}
static int flash_forward_with(bool hopper, const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                              void *saved, void *stream) {
    const char *why = flash_unsupported(s);
    if (why) return attn_cuda_fail("flash forward: %s", why);
    if (misaligned(q) || misaligned(k) || misaligned(v) || misaligned(o))
        return attn_cuda_fail("flash forward: q, k, v, o must be 16-byte aligned");
    switch (s->dtype) {
    case ATTN_BF16: return flash_forward_as<bf16>(hopper, s, q, k, v, o, saved, stream);
    case ATTN_FP16: return flash_forward_as<fp16>(hopper, s, q, k, v, o, saved, stream);
    default: return attn_cuda_fail("flash forward: dtype %s", attn_dtype_name(s->dtype)); /* refused above */
    }
}

template <typename E>
static int flash_backward_as(FlashBwdMain main_kernel, const AttnShape *s, const void *q, const void *k, const void *v,
                             const void *o, const void *dout, const void *saved, void *dq, void *dk, void *dv,
                             void *workspace, void *stream) {
    AttnIO io = {};
    io.q = q; io.k = k; io.v = v; io.o = o; io.dout = dout;
    io.dq = dq; io.dk = dk; io.dv = dv;
    io.lse = (float *)saved;
    io.dvec = (float *)workspace;
    io.dq_accum = (float *)((char *)workspace + flash_dvec_bytes(s));
    return FLASH_DISPATCH(launch_backward, E, s, s, io, attn_stream(stream), main_kernel);
}
static int flash_backward_with(FlashBwdMain main_kernel, const AttnShape *s, const void *q, const void *k, const void *v,
                               const void *o, const void *dout, const void *saved, void *dq, void *dk,
                               void *dv, void *workspace, void *stream) {
    const char *why = flash_unsupported(s);
    if (why) return attn_cuda_fail("flash backward: %s", why);
    if (misaligned(q) || misaligned(k) || misaligned(v) || misaligned(dout) || misaligned(dq) ||
        misaligned(dk) || misaligned(dv))
        return attn_cuda_fail("flash backward: pointers must be 16-byte aligned");
    switch (s->dtype) {
    case ATTN_BF16: return flash_backward_as<bf16>(main_kernel, s, q, k, v, o, dout, saved, dq, dk, dv, workspace, stream);
    case ATTN_FP16: return flash_backward_as<fp16>(main_kernel, s, q, k, v, o, dout, saved, dq, dk, dv, workspace, stream);
    default: return attn_cuda_fail("flash backward: dtype %s", attn_dtype_name(s->dtype)); /* refused above */
    }
}

static int flash_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, void *saved,
                         void *workspace, void *stream) {
    return flash_forward_with(true, s, q, k, v, o, saved, stream);
}
static int flash_backward(const AttnShape *s, const void *q, const void *k, const void *v, const void *o,
                          const void *dout, const void *saved, void *dq, void *dk, void *dv, void *workspace,
                          void *stream) {
    return flash_backward_with(kBwdSm90, s, q, k, v, o, dout, saved, dq, dk, dv, workspace, stream);
}
static int flash_mma_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, void *saved,
                             void *workspace, void *stream) {
    return flash_forward_with(false, s, q, k, v, o, saved, stream);
}
static int flash_mma_backward(const AttnShape *s, const void *q, const void *k, const void *v, const void *o,
                              const void *dout, const void *saved, void *dq, void *dk, void *dv, void *workspace,
                              void *stream) {
    return flash_backward_with(kBwdMma, s, q, k, v, o, dout, saved, dq, dk, dv, workspace, stream);
}

const AttnImpl attn_flash_cuda = {ATTN_FLASH,         ATTN_CUDA,          flash_unsupported,
                                  flash_saved_bytes,  flash_workspace_bytes, flash_forward,
                                  flash_backward};
/* flash-mma: without the Hopper kernels, the mma.sync ones on every GPU. */
const AttnImpl attn_flash_mma_cuda = {ATTN_FLASH_MMA,     ATTN_CUDA,             flash_unsupported,
                                      flash_saved_bytes,  flash_workspace_bytes, flash_mma_forward,
                                      flash_mma_backward};

/* flash-sm90: the Hopper kernels, where they exist: wgmma forward at D = 64 and 128, wgmma
 * backward at D = 64 (D = 128's backward runs the mma.sync kernel). */
static const char *flash_sm90_unsupported(const AttnShape *s) {
    const char *why = flash_unsupported(s);
    if (why) return why;
    return flash_sm90_refuses(s);
}
const AttnImpl attn_flash_sm90_cuda = {ATTN_FLASH_SM90,    ATTN_CUDA,             flash_sm90_unsupported,
                                       flash_saved_bytes,  flash_workspace_bytes, flash_forward,
                                       flash_backward};

/* flash-tma: flash-sm90 with the TMA, warp-specialised forward (flash_sm90_tma.cu) and backward
 * main kernel (flash_sm90_tma_bwd.cu; every mask but a dense bias, which flash-sm90 refuses
 * too). It runs exactly the shapes flash_tma_refuses() accepts (no fallback inside: a
 * refused shape is unsupported, so a measurement of flash-tma is always the new forward). */
static const char *flash_tma_unsupported(const AttnShape *s) {
    const char *why = flash_unsupported(s);
    if (why) return why;
    return flash_tma_refuses(s);
}
static int flash_tma_forward_impl(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                                  void *saved, void *workspace, void *stream) {
    const char *why = flash_tma_unsupported(s);
    if (why) return attn_cuda_fail("flash-tma forward: %s", why);
    if (misaligned(q) || misaligned(k) || misaligned(v) || misaligned(o))
        return attn_cuda_fail("flash-tma forward: q, k, v, o must be 16-byte aligned");
    if (!workspace || ((uintptr_t)workspace & 3)) return attn_cuda_fail("flash-tma forward: needs its workspace (4-byte aligned)");
    /* of the workspace (flash_workspace_bytes) the forward uses the work counter only */
    int *counter = (int *)((char *)workspace + flash_counter_offset(s));
    const int rc = flash_tma_forward(s, q, k, v, o, (float *)saved, counter, attn_stream(stream));
    return rc < 0 ? attn_cuda_fail("flash-tma forward: refused a supported shape") : rc;
}
static int flash_tma_backward(const AttnShape *s, const void *q, const void *k, const void *v, const void *o,
                              const void *dout, const void *saved, void *dq, void *dk, void *dv, void *workspace,
                              void *stream) {
    const char *why = flash_tma_unsupported(s);
    if (why) return attn_cuda_fail("flash-tma backward: %s", why);
    return flash_backward_with(kBwdTma, s, q, k, v, o, dout, saved, dq, dk, dv, workspace, stream);
}
const AttnImpl attn_flash_tma_cuda = {ATTN_FLASH_TMA,     ATTN_CUDA,             flash_tma_unsupported,
                                      flash_saved_bytes,  flash_workspace_bytes, flash_tma_forward_impl,
                                      flash_tma_backward};
