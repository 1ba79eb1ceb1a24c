/* attention/flash_sm90_tma.cu: the flash forward on Hopper in FlashAttention-3's design: a
 * producer warp that loads by TMA, consumer warpgroups that never meet at a block barrier but take
 * turns at the tensor cores (ping-pong), and the softmax of one key tile running under the
 * tensor cores' P V of the previous one and the other warpgroups' GEMMs.
 *
 * Same function and outputs as flash_sm90.cu's forward (O, and the natural log-sum-exp L per row,
 * +inf for a row that saw no key), so that flash-sm90's backward consumes them unchanged.
 * Persistent: one block per SM takes the work items (query tile of Br = 64 * kConsumers rows,
 * batch * head) one after another (TmaFwdSchedule), and the next item's loads run under this
 * one's last steps and epilogue instead of behind a block's launch; 128 + 128 * kConsumers
 * threads:
 *   warpgroup 0, the producer: gives its registers up (setmaxnreg.dec) and one warp of it issues
 *     TMA loads per item: the Q tile into one of kQBufs buffers (released by every consumer warp
 *     once its last S of the item landed), then K_j and V_j tiles of Bc = 128 keys into two rings
 *     of kStages SW128 buffers (wgmma_sm90.cuh's layout, by the 128-byte swizzle of the tensor maps), in the
 *     order the consumers read them: K_0, K_1, V_0, K_2, V_1, ... Each buffer has a full mbarrier
 *     (one arrival announcing the box bytes, completed by the TMA) and an empty one (one arrival
 *     per consumer warp: released).
 *   warpgroups 1..kConsumers: take the registers (setmaxnreg.inc), own 64 query rows each and
 *     wait only on the buffers' full barriers. The item's key tiles are [j0, j1) (n of them);
 *     every consumer warpgroup runs the same n + 1 steps t = j0 .. j1, and a step t waits for
 *     K_t (t < j1) and V_{t-1} (t > j0) and releases both, whether or not they lie in the
 *     warpgroup's own range [a, z) of tiles (causal: none past its last row; EXTRA: its hull).
 *     Inside the range, step t is
 *       wait for K_t, V_{t-1}; O *= corr_{t-1} (the previous tile's rescale)
 *       take the turn; issue S_t = Q K_t^T (wgmma SS) and O += P_{t-1} V_{t-1} (wgmma RS, V
 *       MN-major); hand the turn on
 *       wait for S_t; mask; softmax of S_t (max, exp2, row sums; corr_t) under P_{t-1} V_{t-1} and
 *       the other warpgroups' GEMMs; release K_t; wait for P V; release V_{t-1}; P_t as 16-bit A
 *       fragments
 *     (step a issues S_a alone, step z the last P V alone), then the epilogue of flash_sm90.cu
 *     (store_o_and_lse). A step outside the range waits, takes the turn, hands it on at once and
 *     releases.
 * Ping-pong (the turn): named barriers 1 .. kConsumers, one per consumer warpgroup, each of 256
 * threads: its own warpgroup waits there (bar.sync, 128 threads) and the warpgroup before it in the
 * cycle 0, 1, .., kConsumers - 1, 0 arrives there (bar.arrive, 128 threads) to hand the turn over.
 * So the warpgroups issue their GEMMs in turn, and each one's softmax runs while the tensor cores
 * work through the others' S and P V instead of all softmaxes at once. Why it cannot deadlock:
 *   - one turn exists: the last warpgroup's arrival at barrier 1 before its first step creates it,
 *     and a warpgroup arrives at the next one's barrier only after its own wait there completed.
 *     So the arrivals at barrier 1 + w alternate with warpgroup w's waits (an arrival never falls
 *     into the next phase of a barrier), and the turns run in the order (t, w) lexicographically.
 *     Every warpgroup takes exactly n + 1 turns per item (the items run as one sequence of
 *     steps), and warpgroup 0 waits once more at the end for the last hand-over, so no barrier
 *     is left holding arrivals at exit.
 *   - the turn's holder does not block while holding it: all mbarrier waits come before the
 *     take, and between take and hand-over there are only wgmma issues (their operands have
 *     landed) and the arrival.
 *   - the data a step t waits for never needs a later turn: the producer loads K_0, K_1, V_0, K_2,
 *     V_1, ..., so K_t and V_{t-1} (and every load before them) reuse only buffers released in
 *     steps <= t - 1 (load i of a ring waits for the release of load i - kStages, kStages >= 1),
 *     and every warpgroup's releases of step t' follow its turn (t', w) with no further wait but
 *     its own wgmma's completion. By induction over (t, w) every turn is taken and every step ends.
 *   (A model of this protocol, warps interleaved at random with the mbarriers' parity waits and
 *   the named barriers' counts, ran thousands of random ranges without a deadlock, an early
 *   overwrite or a barrier left holding arrivals: dev/attention_notes.md, v10.)
 * Masks: causal and none, and with EXTRA the rest of the family (window, documents, key padding,
 * ALiBi) exactly as flash_sm90.cu's forward does it (flash_sm90_spans.cuh: closed-form ranges,
 * per-warp full / partial tiles, documents of the key tile staged in smem beside K by the producer
 * warp). GQA: the K/V tensor maps are indexed by the K/V head h / group.
 * Element type E (bf16 or fp16): as in flash_sm90.cu, it names wgmma's input type and what P and
 * O are rounded to; the tensor maps carry the matching data type.
 * Registers (setmaxnreg): D = 64 runs 3 consumer warpgroups at 160 registers (producer 32); D = 128
 * runs 2 at 240 (producer 24), where O (64), S (64) and P (32) are live at once.
 * Built for sm_90a only (Makefile: -DFLASH_SM90=1); elsewhere flash_tma_refuses() says so.
 */
#include <limits.h>
#include <string.h>
#include <algorithm>
#include "attention/attn_params.cuh"
#include "attention/cuda_common.cuh"
#include "attention/flash_mask.cuh"
#include "attention/flash_sm90.h"
#include "attention/flash_sm90_spans.cuh"
#include "attention/flash_sm90_tma.h"
#include "attention/tc_attention.cuh"
#include "attention/tma_sm90.cuh"
#include "attention/wgmma_sm90.cuh"

#ifndef FLASH_SM90
#define FLASH_SM90 0
#endif

/* The key tile: 128 keys, but 176 at D = 128 without a causal or EXTRA mask (the v10 notes count
 * it: same FLOP per K/V byte, the per-tile costs spread over 1.375x the keys); one place, read by
 * the kernel and by the host's tensor maps. */
constexpr int tma_fwd_bc(int D, bool causal, bool extra) { return D == 128 && !causal && !extra ? 176 : 128; }

template <int D_, int Bc_> struct TmaFwdTraits {
    static constexpr int D = D_;
    static constexpr int kConsumers = D_ == 64 ? 3 : 2; /* consumer warpgroups, 64 query rows each */
    static constexpr int Br = 64 * kConsumers;
    static constexpr int Bc = Bc_;
    static constexpr int kStages = D_ == 64 ? 4 : 2; /* buffers in each of the K and V rings */
    static constexpr int kThreads = 128 * (kConsumers + 1);
    static constexpr int kConsumerWarps = 4 * kConsumers;
    static constexpr int kProducerRegs = kConsumers == 3 ? 32 : 24;
    static constexpr int kConsumerRegs = kConsumers == 3 ? 160 : 240;
    /* one TMA box: 64 columns (128 bytes: the swizzle's span) x its rows; a tile is D / 64 of them */
    static constexpr int kBoxCols = 64, kPanels = D_ / kBoxCols;
    static constexpr int kQBoxBytes = Br * kBoxCols * 2, kKVBoxBytes = Bc * kBoxCols * 2;
    static constexpr int kQBytes = kPanels * kQBoxBytes, kTileBytes = kPanels * kKVBoxBytes;
    /* Q buffers: two where they fit, so that the next item's Q loads while this one's runs */
    static constexpr int kQBufs = 2 * kQBytes + 2 * kStages * kTileBytes + 1024 + 8 * 1024 <= 227 * 1024 ? 2 : 1;
    static constexpr int kSmemBytes = kQBufs * kQBytes + 2 * kStages * kTileBytes + 1024; /* + alignment slack */

    static_assert(D_ == 64 || D_ == 128, "flash-tma: D = 64 or 128");
    static_assert(Bc_ == 128 || Bc_ == 176, "flash-tma: the S wgmma covers 128 or 176 keys");
    static_assert(kConsumers >= 2 && kConsumers <= 15, "the turn: named barriers 1 .. kConsumers");
    static_assert(kQBoxBytes % 1024 == 0 && kKVBoxBytes % 1024 == 0,
                  "every SW128 panel must start 1024-byte aligned (the swizzle's period)");
    static_assert(Br <= 256 && Bc <= 256 && kBoxCols * 2 == 128, "a TMA box: <= 256 rows, 128-byte rows");
    static_assert(kQBytes == Br * D_ * 2 && kTileBytes == Bc * D_ * 2, "boxes cover the tiles");
    static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= 65536, "setmaxnreg: the SM's registers");
    static_assert(kProducerRegs <= 65536 / kThreads && kConsumerRegs >= 65536 / kThreads,
                  "setmaxnreg: dec below and inc above the launch's registers per thread");
    static_assert(kSmemBytes + 8 * 1024 <= 227 * 1024, "dynamic smem + static (barriers, EXTRA tables) fit an SM");
};

/* The rings' barriers (static shared memory, 8-byte aligned). */
template <class Tr> struct TmaFwdBarriers {
    uint64_t q_full[Tr::kQBufs], q_empty[Tr::kQBufs];
    uint64_t k_full[Tr::kStages], k_empty[Tr::kStages];
    uint64_t v_full[Tr::kStages], v_empty[Tr::kStages];
};

/* EXTRA's tables: the K ring's key document starts (non-causal documents; written by the producer
 * warp with the K tile, published by its full barrier); per row of the current item its keys
 * [row_lo, row_hi) and document start, and per consumer warp its full range and slope (each warp
 * writes and reads its own 16 rows and entries: in smem, not registers, which the main loop needs). */
template <class Tr> struct TmaFwdExtra {
    int key_doc[Tr::kStages][Tr::Bc];
    int row_lo[Tr::Br], row_hi[Tr::Br], row_doc[Tr::Br];
    int2 warp_full[Tr::kConsumerWarps]; /* per consumer warp: the keys whose tiles need no per-element mask */
    float warp_slope[Tr::kConsumerWarps]; /* per consumer warp: the item's ALiBi slope */
};

/* The persistent schedule: gridDim.x blocks (at most one per SM); block i starts with work item
 * i, and each next item is the first not yet taken: gridDim.x + a counter the producer warps
 * count up (atomicAdd, in the call's workspace, zeroed by a one-thread kernel before the
 * launch). So a block that finishes early takes more, as the hardware's block scheduler would,
 * and items are taken in the order the non-persistent grid ran them: batch * head by batch *
 * head (the blocks running at once share a few heads' K and V in L2), within one its query
 * tiles heaviest (causal: last) first. The kernel takes it as an argument of its own, beside the
 * AttnParams every tiled kernel shares (attn_params.cuh): it belongs to this launch's grid, not
 * to the shape. */
struct TmaFwdSchedule {
    int n_m;       /* query tiles per head */
    int items;     /* n_m * batch * heads */
    int *counter;  /* items taken beyond the first gridDim.x */
};

/* Named barriers (ids 1..15; id 0 is __syncthreads): `bar.sync id, n` blocks the calling warp until
 * n threads (a multiple of 32) have reached barrier id in this phase, counting those that
 * `bar.arrive id, n` without waiting; every arrival at an id must name the same n. The phase then
 * completes and the barrier starts over. Warp-uniform calls only (.aligned). */
__device__ __forceinline__ void named_bar_sync(int id, int n) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int n) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

/* 2^x as one MUFU.EX2: exp2f's own code adds, per call, a compare and two predicated multiplies
 * that keep results below 2^-126 as denormals (3 more issue slots per score, which at D = 64
 * rival the GEMMs); here such results are 0 (ftz; -inf gives 0): a P below 2^-126 in a row sum
 * >= 1, or a rescale factor below it, changes nothing at fp32's precision. */
__device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* The online softmax of one tile for this thread's rows g, g + 8 (half 0, 1), as
 * tc_attention.cuh's online_softmax_step but leaving O alone: corr is the factor O must be
 * multiplied by before this tile's P V is added (applied by the caller one step later). */
template <int NT>
__device__ __forceinline__ void tma_softmax(float s[][4], float m[2], float l[2], float corr[2], float scale) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * half], s[nt][2 * half + 1]));
        mx = quad_max(mx) * scale;
        const float m_new = fmaxf(m[half], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new; /* all masked so far: keep exp2 finite */
        corr[half] = exp2_ftz(m[half] - m_use);
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float pv = exp2_ftz(fmaf(s[nt][2 * half + e], scale, -m_use));
                s[nt][2 * half + e] = pv;
                sum += pv;
            }
        l[half] = l[half] * corr[half] + sum;
        m[half] = m_new;
    }
}

/* The block's current work item (one query tile of one batch * head) and its key tiles [j0, j1).
 * Warp-wide with EXTRA (khi_doc): every warp that needs it computes it itself, so that no block
 * barrier is needed between items. */
struct TmaFwdItem {
    int b, h, q0, j0, j1;
};
template <class Tr, typename E>
__device__ __forceinline__ TmaFwdItem tma_fwd_coords(const AttnParams<E> &p, const TmaFwdSchedule &sched,
                                                     int w) { /* b, h, q0 */
    const int bh = w / sched.n_m, rank = w - bh * sched.n_m; /* rank 0: the heaviest tile */
    TmaFwdItem it;
    it.b = bh / p.H;
    it.h = bh - it.b * p.H;
    it.q0 = (sched.n_m - 1 - rank) * Tr::Br;
    return it;
}
template <class Tr, typename E, bool CAUSAL, bool EXTRA>
__device__ __forceinline__ TmaFwdItem tma_fwd_item(const AttnParams<E> &p, const TmaFwdSchedule &sched, int w) {
    TmaFwdItem it = tma_fwd_coords<Tr, E>(p, sched, w);
    const int T = p.T;
    it.j0 = 0;
    it.j1 = (T + Tr::Bc - 1) / Tr::Bc;
    if (CAUSAL) it.j1 = min(it.j1, (min(it.q0 + Tr::Br, T) + Tr::Bc - 1) / Tr::Bc);
    if (EXTRA) {
        const Sm90Spans<CAUSAL> sp = sm90_spans<CAUSAL, EXTRA>(p.x, it.b, T);
        const int lo = sp.klo(it.q0), hi = sp.khi_doc(min(it.q0 + Tr::Br, T) - 1);
        it.j0 = lo / Tr::Bc;
        it.j1 = min(it.j1, (hi + Tr::Bc - 1) / Tr::Bc);
        if (it.j1 <= it.j0) it.j0 = 0, it.j1 = 1; /* no row sees a key: one tile, which every warpgroup skips */
    }
    return it;
}

template <typename E, int D, bool CAUSAL, bool EXTRA>
__global__ void __launch_bounds__(TmaFwdTraits<D, 128>::kThreads, 1)
flash_fwd_tma_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                     const __grid_constant__ CUtensorMap tm_v, const AttnParams<E> p, const TmaFwdSchedule sched) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using Tr = TmaFwdTraits<D, tma_fwd_bc(D, CAUSAL, EXTRA)>;
    constexpr int Bc = Tr::Bc, NT = Bc / 8, ND = D / 8, KD = D / 16, S = Tr::kStages, QB = Tr::kQBufs;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *sQ = (unsigned char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023); /* [QB][kPanels][Br][64] */
    unsigned char *sK = sQ + QB * Tr::kQBytes;   /* [S][kPanels][Bc][64] */
    unsigned char *sV = sK + S * Tr::kTileBytes; /* [S][kPanels][Bc][64] */
    __shared__ TmaFwdBarriers<Tr> bar;
    __shared__ TmaFwdExtra<Tr> ex;
    __shared__ int item_of[Tr::kQBufs]; /* the item of each Q buffer (>= items: no more), published by q_full */

    const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x & 31;
    const int cw = wg - 1; /* consumer warpgroup index; -1: the producer */
    const int T = p.T;
    const bool doc_cols = EXTRA && !CAUSAL && p.x.doc; /* per-score document test against ex.key_doc */

    if (threadIdx.x == 0) {
#pragma unroll
        for (int i = 0; i < QB; i++) {
            mbar_init(&bar.q_full[i], 1);
            mbar_init(&bar.q_empty[i], Tr::kConsumerWarps);
        }
#pragma unroll
        for (int s = 0; s < S; s++) {
            mbar_init(&bar.k_full[s], 1);
            mbar_init(&bar.v_full[s], 1);
            mbar_init(&bar.k_empty[s], Tr::kConsumerWarps);
            mbar_init(&bar.v_empty[s], Tr::kConsumerWarps);
        }
        mbar_init_fence();
    }
    __syncthreads(); /* the barriers; the only block-wide barrier */

    if (cw < 0) {
        /* ---- producer: one warp issues every load; the other three only give registers back */
        setmaxnreg_dec<Tr::kProducerRegs>();
        if (warp != 0) return;
        if (lane == 0) {
            tma_prefetch_map(&tm_q);
            tma_prefetch_map(&tm_k);
            tma_prefetch_map(&tm_v);
        }
        int g = 0; /* tiles loaded into each ring by the items before */
        for (int w = blockIdx.x, k = 0;; k++) {
            const int qb = k % QB;
            if (lane == 0) { /* item k and its Q, once every consumer warp is done with the buffer's item k - QB */
                if (k >= QB) mbar_wait(&bar.q_empty[qb], ((k / QB) - 1) & 1);
                item_of[qb] = w;
                if (w < sched.items) {
                    const TmaFwdItem c = tma_fwd_coords<Tr, E>(p, sched, w);
                    mbar_arrive_expect_tx(&bar.q_full[qb], Tr::kQBytes);
#pragma unroll
                    for (int pn = 0; pn < Tr::kPanels; pn++)
                        tma_load_3d(sQ + qb * Tr::kQBytes + pn * Tr::kQBoxBytes, &tm_q, c.h * D + pn * Tr::kBoxCols,
                                    c.q0, c.b, &bar.q_full[qb]);
                } else {
                    mbar_arrive(&bar.q_full[qb]); /* the end, for the consumers */
                }
            }
            if (w >= sched.items) break;
            const TmaFwdItem it = tma_fwd_item<Tr, E, CAUSAL, EXTRA>(p, sched, w);
            const int n = it.j1 - it.j0, kvh = it.h / p.group;
            const int *doc = doc_cols ? p.x.doc + (long long)it.b * T : nullptr;
            /* load i (i-th tile of the item) of one ring, the ring's (g + i)-th: its buffer's previous
             * contents (load g + i - S) must have been released by every consumer warp */
            auto load_k = [&](int i) {
                const int u = g + i, s = u % S, jt = it.j0 + i;
                if (u >= S) mbar_wait(&bar.k_empty[s], ((u / S) - 1) & 1);
                if (doc_cols) { /* the tile's document starts, published by the same full barrier */
                    for (int c = lane; c < Bc; c += 32) {
                        const int t = jt * Bc + c;
                        ex.key_doc[s][c] = t < T ? __ldg(doc + t) : 0;
                    }
                    __threadfence_block();
                    __syncwarp();
                }
                if (lane == 0) {
                    mbar_arrive_expect_tx(&bar.k_full[s], Tr::kTileBytes);
#pragma unroll
                    for (int pn = 0; pn < Tr::kPanels; pn++)
                        tma_load_3d(sK + s * Tr::kTileBytes + pn * Tr::kKVBoxBytes, &tm_k, kvh * D + pn * Tr::kBoxCols,
                                    jt * Bc, it.b, &bar.k_full[s]);
                }
            };
            auto load_v = [&](int i) {
                const int u = g + i, s = u % S, jt = it.j0 + i;
                if (u >= S) mbar_wait(&bar.v_empty[s], ((u / S) - 1) & 1);
                if (lane == 0) {
                    mbar_arrive_expect_tx(&bar.v_full[s], Tr::kTileBytes);
#pragma unroll
                    for (int pn = 0; pn < Tr::kPanels; pn++)
                        tma_load_3d(sV + s * Tr::kTileBytes + pn * Tr::kKVBoxBytes, &tm_v, kvh * D + pn * Tr::kBoxCols,
                                    jt * Bc, it.b, &bar.v_full[s]);
                }
            };
            load_k(0);
            for (int i = 1; i < n; i++) {
                load_k(i);
                load_v(i - 1);
            }
            load_v(n - 1);
            g += n;
            /* the next item, taken only now (the consumers are at most kStages tiles from this
             * one's end), not when this one began: taken a whole item ahead, the last heavy items
             * were held by busy blocks while others ran out of work (2-3% at T = 16K) */
            int w_next = 0;
            if (lane == 0) w_next = gridDim.x + atomicAdd(sched.counter, 1);
            w = __shfl_sync(0xffffffffu, w_next, 0);
        }
        return;
    }

    /* ---- consumers ---------------------------------------------------------------------------- */
    setmaxnreg_inc<Tr::kConsumerRegs>();
    auto release = [&](uint64_t *empty) { /* one arrival per warp, after all of its lanes' reads */
        __syncwarp();
        if (lane == 0) mbar_arrive(empty);
    };
    /* The tensor-core turn (the ping-pong; the header says why it cannot deadlock): warpgroup cw
     * waits at barrier 1 + cw for the turn, issues its GEMMs and hands the turn to the next
     * warpgroup at that one's barrier. One turn per step t = j0 .. j1 of every item, the items one
     * after another as one sequence of steps, and warpgroup 0 takes one more at the very end: the
     * last warpgroup's hand-over of the last step (every arrival meets a wait). */
    constexpr int kTurnThreads = 2 * 128; /* the warpgroup that waits + the one that hands over */
    auto take_turn = [&]() { named_bar_sync(1 + cw, kTurnThreads); };
    auto pass_turn = [&]() { named_bar_arrive(1 + (cw + 1) % Tr::kConsumers, kTurnThreads); };
    if (cw == Tr::kConsumers - 1) pass_turn(); /* the first turn: warpgroup 0's */

    int g = 0; /* tiles the items before took from each ring */
    for (int k = 0;; k++) {
        const int qb = k % QB;
        mbar_wait(&bar.q_full[qb], (k / QB) & 1); /* item k's Q (or the end) */
        const int w = item_of[qb];
        if (w >= sched.items) break;
        const TmaFwdItem it = tma_fwd_item<Tr, E, CAUSAL, EXTRA>(p, sched, w);
        const int j0 = it.j0, j1 = it.j1, q0 = it.q0;
        const int wg_row0 = q0 + cw * 64, warp_row0 = wg_row0 + warp * 16;
        const int wi = cw * 4 + warp; /* this warp's entries of the EXTRA tables */
        int a, z;     /* this warpgroup's key tiles [a, z) within [j0, j1) */
        if (EXTRA) {
            const Sm90Spans<CAUSAL> sp = sm90_spans<CAUSAL, EXTRA>(p.x, it.b, T);
            const int full_lo = warp_row0 + 15 < T ? sp.klo(warp_row0 + 15) : INT_MAX;
            const int full_hi = warp_row0 < T ? sp.khi_doc(warp_row0) : 0;
            int wg_lo = 0, wg_hi = 0;
            if (wg_row0 < T) wg_lo = sp.klo(wg_row0), wg_hi = sp.khi_doc(min(wg_row0 + 63, T - 1));
            a = z = j0;
            if (wg_lo < wg_hi) {
                a = max(j0, wg_lo / Bc);
                z = max(a, min(j1, (wg_hi + Bc - 1) / Bc));
            }
            /* this warp's 16 rows of the row tables: written and read by this warp only */
            __syncwarp(); /* its reads of the item before are done */
            if (lane < 16) {
                const int r = warp_row0 + lane, i = r - q0;
                ex.row_lo[i] = r < T ? sp.klo(r) : 0;
                ex.row_hi[i] = r < T ? sp.khi(r) : 0;
                ex.row_doc[i] = doc_cols && r < T ? __ldg(sp.d + r) : 0;
            }
            if (lane == 0) {
                ex.warp_full[wi] = make_int2(full_lo, full_hi);
                ex.warp_slope[wi] = flash_mask_slope(p.x, it.h);
            }
            __syncwarp();
        } else {
            a = j0;
            z = wg_row0 >= T ? a : CAUSAL ? min(j1, (min(wg_row0 + 63, T - 1) + Bc) / Bc) : j1;
        }
        /* tile jt's buffer and the parity of its fill */
        auto stage_of = [&](int jt) { return (int)((unsigned)(g + jt - j0) % S); }; /* unsigned: a mask, not a signed % */
        auto parity_of = [&](int jt) { return ((unsigned)(g + jt - j0) / S) & 1u; };
        /* step t of the item outside this warpgroup's range: K_t and V_{t-1} (those that exist)
         * are waited for (so that the release counts towards this fill of the buffer, not the
         * next) and released, and the turn passes through */
        auto idle_step = [&](int t, bool free_q) {
            const bool kk = t < j1, vv = t > j0;
            if (kk) mbar_wait(&bar.k_full[stage_of(t)], parity_of(t));
            if (vv) mbar_wait(&bar.v_full[stage_of(t - 1)], parity_of(t - 1));
            take_turn();
            if (free_q) release(&bar.q_empty[qb]);
            pass_turn();
            if (kk) release(&bar.k_empty[stage_of(t)]);
            if (vv) release(&bar.v_empty[stage_of(t - 1)]);
        };
        /* The Q buffer's release (q_empty, one arrival per warp) of item k must follow every warp's
         * release of item k - QB, or it would count towards that phase: so each warp releases it
         * after one of its turns of item k (every release of an item comes before the holder's
         * last turn of that item). A warpgroup without tiles does at its first turn. */
        for (int t = j0; t < (a < z ? a : j1 + 1); t++) idle_step(t, a >= z && t == j0); /* before the range (or all: none) */

        float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
        for (int dt = 0; dt < ND; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;

        if (a < z) { /* steps a .. z */
            /* this warpgroup's 64 rows of each Q panel, as a descriptor's low half (sw128_desc_at) */
            const uint32_t q_desc = sw128_desc_lo(smem_addr(sQ + qb * Tr::kQBytes) + cw * 64 * 128);
            float sc[NT][4], corr[2];
            uint32_t pf[NT / 2][4];

            auto issue_s = [&](int s) { /* S = Q K^T, both K-major */
                const uint32_t k_desc = sw128_desc_lo(smem_addr(sK + s * Tr::kTileBytes));
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < KD; kk++) {
                    const uint64_t da = sw128_desc_at(q_desc, (kk / 4) * Tr::kQBoxBytes + (kk % 4) * 32),
                                   db = sw128_desc_at(k_desc, (kk / 4) * Tr::kKVBoxBytes + (kk % 4) * 32);
                    wgmma_ss<E, Bc, 0>(sc, da, db, kk > 0);
                }
                wgmma_commit();
            };
            auto issue_pv = [&](int s) { /* O += P V, V MN-major, one 64-column panel at a time */
                const uint32_t v_desc = sw128_desc_lo(smem_addr(sV + s * Tr::kTileBytes));
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
                    for (int pn = 0; pn < Tr::kPanels; pn++)
                        wgmma_rs<E, 64, 1>(*reinterpret_cast<float(*)[8][4]>(&o[pn * 8]), pf[kk],
                                           sw128_desc_at(v_desc, pn * Tr::kKVBoxBytes + kk * 16 * 128), 1);
                wgmma_commit();
            };
            auto rescale_o = [&]() {
#pragma unroll
                for (int dt = 0; dt < ND; dt++) {
                    o[dt][0] *= corr[0];
                    o[dt][1] *= corr[0];
                    o[dt][2] *= corr[1];
                    o[dt][3] *= corr[1];
                }
                /* here, not sunk past the turn and the next wgmma.fence (where ptxas would have to add
                 * a warpgroup.arrive of its own, which serializes the wgmma) */
                wgmma_fence_operands(o);
            };
            auto mask_softmax = [&](int jt) { /* on sc: the mask of tile jt, then the online softmax */
                const int col0 = jt * Bc;
                if (EXTRA) {
                    const int2 fr = ex.warp_full[wi];
                    if (col0 < fr.x || col0 + Bc > fr.y) {
                        const int rl = wi * 16 + (lane >> 2); /* this thread's rows rl, rl + 8 of the item */
                        const int lo[2] = {ex.row_lo[rl], ex.row_lo[rl + 8]}, hi[2] = {ex.row_hi[rl], ex.row_hi[rl + 8]};
                        const int rdoc[2] = {ex.row_doc[rl], ex.row_doc[rl + 8]};
                        sm90_mask_tile<NT>(sc, lo, hi, doc_cols ? ex.key_doc[stage_of(jt)] : nullptr, rdoc, col0);
                    }
                    if (p.x.slopes) alibi_tile<NT>(sc, ex.warp_slope[wi], warp_row0, col0, false);
                } else {
                    const bool needs_mask = col0 + Bc > T || (CAUSAL && col0 + Bc - 1 > warp_row0);
                    if (needs_mask) mask_tile<NT, CAUSAL>(sc, warp_row0, col0, T, false);
                }
                tma_softmax<NT>(sc, m, l, corr, p.scale_log2);
            };

            { /* step a: S, softmax, P (O is zero: its rescale waits for the next step); V_{a-1}, if
               * the item has it, lies outside the range */
                const int s = stage_of(a), sp = stage_of(a - 1);
                mbar_wait(&bar.k_full[s], parity_of(a));
                if (a > j0) mbar_wait(&bar.v_full[sp], parity_of(a - 1));
                take_turn();
                issue_s(s);
                pass_turn();
                wgmma_wait<0>();
                wgmma_fence_operands(sc);
                mask_softmax(a);
                release(&bar.k_empty[s]); /* K (and its document starts) read */
                if (a > j0) release(&bar.v_empty[sp]);
                acc_to_a_frags<E, NT>(pf, sc);
            }
            for (int jt = a + 1; jt < z; jt++) { /* steps a + 1 .. z - 1 */
                const int s = stage_of(jt), sp = stage_of(jt - 1);
                mbar_wait(&bar.k_full[s], parity_of(jt));
                mbar_wait(&bar.v_full[sp], parity_of(jt - 1));
                rescale_o();                                       /* by corr_{jt-1}, while waiting for the turn */
                take_turn();
                issue_s(s);                                        /* S_jt */
                issue_pv(sp);                                      /* O += P_{jt-1} V_{jt-1} */
                pass_turn();
                wgmma_wait<1>();                                   /* S_jt landed; P V may still run */
                wgmma_fence_operands(sc);
                mask_softmax(jt);                                  /* under P V and the others' GEMMs */
                release(&bar.k_empty[s]);
                wgmma_wait<0>();
                wgmma_fence_operands(o);
                release(&bar.v_empty[sp]);
                acc_to_a_frags<E, NT>(pf, sc);                     /* P_jt: P_{jt-1}'s registers are free */
            }
            /* every S of the item has landed (and this follows the turn of step a): the Q buffer may
             * take item k + QB */
            release(&bar.q_empty[qb]);
            { /* step z: the last tile's P V; K_z, if the item has it, lies outside the range */
                const int s = stage_of(z), sp = stage_of(z - 1);
                if (z < j1) mbar_wait(&bar.k_full[s], parity_of(z));
                mbar_wait(&bar.v_full[sp], parity_of(z - 1));
                rescale_o();
                take_turn();
                issue_pv(sp);
                pass_turn();
                if (z < j1) release(&bar.k_empty[s]);
                wgmma_wait<0>();
                wgmma_fence_operands(o);
                release(&bar.v_empty[sp]);
            }
        }

        { /* a row that saw no key: l = 0, so O = 0 and L = +inf. The item's head is computed
           * again from an opaque copy of w, so that it is not held in registers through the loop. */
            int w2;
            asm volatile("mov.b32 %0, %1;\n" : "=r"(w2) : "r"(w));
            const TmaFwdItem e = tma_fwd_coords<Tr, E>(p, sched, w2);
            store_o_and_lse<ND>(p.out + (long long)e.b * T * p.ld_o + (long long)e.h * D, p.ld_o,
                                p.lse + ((long long)e.b * p.H + e.h) * T, o, m, l, e.q0 + wi * 16, T);
        }
        /* steps z + 1 .. j1, after the range: the producer can refill their buffers for the others */
        if (a < z)
            for (int t = z + 1; t <= j1; t++) idle_step(t, false);
        g += j1 - j0;
    }
    if (cw == 0) take_turn(); /* the hand-over of the last step: no barrier left with arrivals */
#endif
}

/* ---- host side ------------------------------------------------------------------------------ */

/* cuTensorMapEncodeTiled, from the driver through the runtime (no -lcuda). */
typedef CUresult (*TmaEncodeTiledFn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                     const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                     CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static TmaEncodeTiledFn tma_encode_fn(void) {
    static const TmaEncodeTiledFn fn = [] {
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
        const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q);
#else
        const cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &q);
#endif
        if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) f = nullptr;
        cudaGetLastError(); /* a failed query leaves no error behind */
        return (TmaEncodeTiledFn)f;
    }();
    return fn;
}

CUresult flash_tma_encode(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank, const void *base,
                          const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box, CUtensorMapSwizzle swz) {
    const cuuint32_t elem_strides[5] = {1, 1, 1, 1, 1};
    TmaEncodeTiledFn fn = tma_encode_fn();
    if (!fn) return CUDA_ERROR_NOT_SUPPORTED;
    return fn(map, type, rank, const_cast<void *>(base), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
              swz, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

const char *flash_tma_refuses(const AttnShape *s) {
    if (!FLASH_SM90) return "flash-tma: needs a build for sm_90a";
    const char *why = flash_sm90_refuses(s);
    if (why) return why;
    if (s->ld_qkv % 8) return "flash-tma: the rows of q, k, v must be a multiple of 16 bytes apart (ld_qkv % 8 == 0)";
    if ((long long)s->T * s->ld_qkv * 2 >= (1LL << 40)) return "flash-tma: a sequence of q, k, v must span < 2^40 bytes";
    if (!tma_encode_fn()) return "flash-tma: the driver has no cuTensorMapEncodeTiled";
    return NULL;
}

#if FLASH_SM90 /* the launchers: only an sm_90a build has the kernels */
/* flash_sm90_tma.h */
int flash_tma_map_tokens(CUtensorMap *map, const void *base, AttnDtype dtype, int cols, int T, int B, long long ld,
                         int box_rows) {
    const cuuint64_t dims[3] = {(cuuint64_t)cols, (cuuint64_t)T, (cuuint64_t)B};
    const cuuint64_t strides[2] = {(cuuint64_t)ld * 2, (cuuint64_t)ld * 2 * (cuuint64_t)T}; /* bytes, dims 1 and 2 */
    const cuuint32_t box[3] = {64, (cuuint32_t)box_rows, 1};
    const CUresult r = flash_tma_encode(map, dtype == ATTN_FP16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                                        3, base, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B);
    if (r != CUDA_SUCCESS) return attn_cuda_fail("flash-tma: cuTensorMapEncodeTiled failed (CUresult %d)", (int)r);
    return 0;
}

/* Zeroes the persistent schedule's work counter. A kernel, not cudaMemsetAsync: a memset between
 * two kernels leaves the GPU idle ~3-5 us (dev/trace_gaps.py, H200 2026-12-04), a kernel ~1 us. */
__global__ void tma_counter_zero_kernel(int *counter) { *counter = 0; }

template <typename E, int D, bool CAUSAL, bool EXTRA>
static int launch_tma_forward(const AttnShape *s, const CUtensorMap &mq, const CUtensorMap &mk, const CUtensorMap &mv,
                              const AttnParams<E> &p, int *counter, cudaStream_t st) {
    using Tr = TmaFwdTraits<D, tma_fwd_bc(D, CAUSAL, EXTRA)>;
    void (*kernel)(const CUtensorMap, const CUtensorMap, const CUtensorMap, const AttnParams<E>, const TmaFwdSchedule) =
        flash_fwd_tma_kernel<E, D, CAUSAL, EXTRA>;
    ATTN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
    int dev = 0, sms = 0;
    ATTN_CUDA_TRY(cudaGetDevice(&dev));
    ATTN_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    TmaFwdSchedule sched;
    sched.n_m = (s->T + Tr::Br - 1) / Tr::Br;
    sched.items = sched.n_m * s->B * s->H;
    sched.counter = counter;
    tma_counter_zero_kernel<<<1, 1, 0, st>>>(sched.counter);
    ATTN_LAUNCH_CHECK();
    const int grid = std::max(1, std::min(sched.items, sms));
    kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, st>>>(mq, mk, mv, p, sched);
    ATTN_LAUNCH_CHECK();
    return 0;
}

template <typename E, int D>
static int tma_forward_d(const AttnShape *s, const void *q, const void *k, const void *v, const AttnParams<E> &p,
                         int *counter, cudaStream_t st) {
    const bool extra = flash_mask_has_extras(s), causal = s->mask.kind == ATTN_MASK_CAUSAL;
    const int Br = TmaFwdTraits<D, 128>::Br, Bc = tma_fwd_bc(D, causal, extra); /* the kernel's tiles */
    const int Hkv = attn_kv_heads(s);
    CUtensorMap mq, mk, mv;
    if (flash_tma_map_tokens(&mq, q, s->dtype, s->H * D, s->T, s->B, s->ld_qkv, Br) ||
        flash_tma_map_tokens(&mk, k, s->dtype, Hkv * D, s->T, s->B, s->ld_qkv, Bc) ||
        flash_tma_map_tokens(&mv, v, s->dtype, Hkv * D, s->T, s->B, s->ld_qkv, Bc))
        return 1;
    if (causal)
        return extra ? launch_tma_forward<E, D, true, true>(s, mq, mk, mv, p, counter, st)
                     : launch_tma_forward<E, D, true, false>(s, mq, mk, mv, p, counter, st);
    return extra ? launch_tma_forward<E, D, false, true>(s, mq, mk, mv, p, counter, st)
                 : launch_tma_forward<E, D, false, false>(s, mq, mk, mv, p, counter, st);
}

template <typename E>
static int tma_forward_as(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                          int *counter, cudaStream_t st) {
    AttnIO io = {};
    io.q = q; io.k = k; io.v = v; /* read through the tensor maps */
    io.out = o;
    io.lse = lse;
    const AttnParams<E> p = attn_params<E>(s, io);
    return s->D == 64 ? tma_forward_d<E, 64>(s, q, k, v, p, counter, st) : tma_forward_d<E, 128>(s, q, k, v, p, counter, st);
}

int flash_tma_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                      int *counter, cudaStream_t stream) {
    if (flash_tma_refuses(s)) return -1;
    switch (s->dtype) {
    case ATTN_BF16: return tma_forward_as<bf16>(s, q, k, v, o, lse, counter, stream);
    case ATTN_FP16: return tma_forward_as<fp16>(s, q, k, v, o, lse, counter, stream);
    default: return -1; /* refused above */
    }
}
#else
int flash_tma_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                      int *counter, cudaStream_t stream) {
    return -1; /* refused: not an sm_90a build */
}
#endif
