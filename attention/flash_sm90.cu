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
 *     mma.sync's), P to bf16 A fragments in registers
 *     O += P V_j       (wgmma, B = V from smem, MN-major via the transpose bit)
 *   P V_j is left in flight while the warpgroup moves on to the next tile's S = Q K^T; waiting
 *   for that S also retires P V_j before O is rescaled. The ring leaves two tiles between a
 *   buffer's last reader (P V_j, possibly in flight) and its next writer: kStages =
 *   kPrefetch + 2, and one barrier per tile.
 * The backward's main kernel is described above flash_bwd_sm90_kernel.
 * Why: mma.sync streams every B fragment through registers with ldmatrix (~0.3 loads per MMA)
 * and kept the tensor cores at roughly 60% (dev/attention_notes.md, v5); wgmma reads its
 * operands straight from shared memory and runs asynchronously to the softmax.
 * Register budgets are what decide the shapes: ptxas serializes every wgmma (warning C7512/C7515)
 * when the accumulators in flight do not fit, which cost ~20% in the first version.
 * Built only for sm_90a (Makefile: -DFLASH_SM90); elsewhere the entry points answer -1 and
 * flash.cu runs its own kernels (attn_flash_mma_cuda always does).
 */
#include <stdlib.h>
#include <string.h>
#include "attention/cuda_common.cuh"
#include "attention/flash_mask.cuh"
#include "attention/flash_sm90.h"
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
};

struct Sm90Params {
    const bf16 *q, *k, *v;
    bf16 *out;
    float *lse;
    int T, H;
    long long ld_qkv, ld_o;
    float scale_log2;
};

template <int D, bool CAUSAL>
__global__ void __launch_bounds__(Sm90FwdTraits<D>::kThreads, Sm90FwdTraits<D>::kMinBlocks)
flash_fwd_sm90_kernel(Sm90Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using Tr = Sm90FwdTraits<D>;
    constexpr int Br = Tr::Br, Bc = Tr::Bc, NT = Bc / 8, ND = D / 8, KD = D / 16;
    constexpr int kStages = Tr::kStages, kPrefetch = Tr::kPrefetch;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *sQ = (unsigned char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    unsigned char *sK = sQ + Tr::kQBytes;              /* [kStages][Bc x D] */
    unsigned char *sV = sK + kStages * Tr::kTileBytes; /* [kStages][Bc x D] */

    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H;
    const int m_blk = attn_block_tile(true); /* heaviest (causal) query tiles first */
    const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4;
    const int T = p.T, q0 = m_blk * Br;
    const long long head_off = (long long)b * T * p.ld_qkv + (long long)h * D;
    const bf16 *gq = p.q + head_off, *gk = p.k + head_off, *gv = p.v + head_off;

    int n_tiles = (T + Bc - 1) / Bc;
    if (CAUSAL) n_tiles = min(n_tiles, (min(q0 + Br, T) + Bc - 1) / Bc);
    const int wg_row0 = q0 + wg * 64, warp_row0 = wg_row0 + warp * 16;
    const int wg_row_last = min(wg_row0 + 63, T - 1);

    auto load_tile = [&](int j) {
        int stage = j % kStages;
        load_rows_sw128_async<Bc, D, Tr::kThreads>(sK + stage * Tr::kTileBytes, gk, p.ld_qkv, j * Bc, T);
        load_rows_sw128_async<Bc, D, Tr::kThreads>(sV + stage * Tr::kTileBytes, gv, p.ld_qkv, j * Bc, T);
    };
    load_rows_sw128_async<Br, D, Tr::kThreads>(sQ, gq, p.ld_qkv, q0, T);
    load_tile(0);
    cp_async_commit();
#pragma unroll
    for (int j = 1; j < kPrefetch; j++) {
        if (j < n_tiles) load_tile(j);
        cp_async_commit();
    }

    uint32_t qf[Tr::kQRegs ? KD : 1][4]; /* kQRegs: Q's A fragments for the whole key loop */
    const uint32_t q_base = smem_addr(sQ) + wg * 64 * 128; /* this warpgroup's 64 rows of Q */
    float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dt = 0; dt < ND; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;

    /* n_tiles >= 1 (T >= 1, q0 < T); a do-while has no zero-trip path, on which ptxas would
     * see O's registers zeroed while the loop's last P V may be in flight and serialize */
    int j = 0;
    do {
        /* tile j has landed (kPrefetch - 1 later groups may still fly); publish it to wgmma */
        cp_async_wait<kPrefetch - 1>();
        fence_proxy_async_smem();
        __syncthreads();
        /* the buffer reloaded here was last read by tile j - 2's P V, retired by every
         * warpgroup before it reached this barrier */
        if (j + kPrefetch < n_tiles) load_tile(j + kPrefetch);
        cp_async_commit();
        if (Tr::kQRegs && j == 0) {
#pragma unroll
            for (int kk = 0; kk < KD; kk++) load_a_frag_sw128<Br>(qf[kk], sQ, wg * 64 + warp * 16, kk * 16);
        }
        const int col0 = j * Bc;
        if (wg_row0 >= T || (CAUSAL && col0 > wg_row_last)) continue; /* no rows, or all masked */
        const int stage = j % kStages;
        const uint32_t k_base = smem_addr(sK + stage * Tr::kTileBytes), v_base = smem_addr(sV + stage * Tr::kTileBytes);

        /* S = Q K_j^T */
        float s[NT][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint64_t kdesc = sw128_desc(k_base + (kk / 4) * Bc * 128 + (kk % 4) * 32);
            if (Tr::kQRegs) wgmma_rs<Bc, 0>(s, qf[kk], kdesc, kk > 0);
            else wgmma_ss<Bc, 0>(s, sw128_desc(q_base + (kk / 4) * Br * 128 + (kk % 4) * 32), kdesc, kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>(); /* S, and the previous tile's P V */
        wgmma_fence_operands(s);
        wgmma_fence_operands(o);

        bool needs_mask = col0 + Bc > T || (CAUSAL && col0 + Bc - 1 > warp_row0);
        if (needs_mask) mask_tile<NT, CAUSAL>(s, warp_row0, col0, T, false);
        online_softmax_step<NT, ND>(s, o, m, l, p.scale_log2);
        uint32_t pf[NT / 2][4];
        acc_to_a_frags<NT>(pf, s);

        /* O += P V_j, one 64-column panel of V at a time; left in flight */
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
            for (int panel = 0; panel < D / 64; panel++)
                wgmma_rs<64, 1>(*reinterpret_cast<float(*)[8][4]>(&o[panel * 8]), pf[kk],
                                sw128_desc(v_base + panel * Bc * 128 + kk * 16 * 128), 1);
        wgmma_commit();
    } while (++j < n_tiles);
    wgmma_wait<0>();
    wgmma_fence_operands(o);
    cp_async_wait<0>();

    store_o_and_lse<ND>(p.out + (long long)b * T * p.ld_o + (long long)h * D, p.ld_o, p.lse + (long long)bh * T, o,
                        m, l, warp_row0, T);
#endif
}


/* ---- backward main kernel (D = 64) ----------------------------------------------------------
 * FA2's key-block-parallel backward on wgmma: one block per (key block of Bc = 128 keys,
 * batch*head), warpgroup w owning keys 64w..64w+63; K and V stay in smem while query tiles of
 * Br = 64 (Q, dO, L, D) stream through two SW128 buffers. Per query tile, transposed so that
 * keys are the wgmma rows:
 *   S^T = K Q^T, dP^T = V dO^T          (SS: A = K or V rows of this warpgroup, B = Q or dO)
 *   P^T = 2^(S^T scale log2e - L log2e), dS^T = P^T (dP^T - D)        (registers, fp32)
 *   dV += P^T dO, dK += dS^T Q          (RS: A = P^T, dS^T as bf16 fragments; B MN-major)
 *   dS^T -> smem (bf16, [key][query] SW128), then dQ_tile = dS K split by columns: warpgroup w
 *   computes columns 32w..32w+31 over all Bc keys (SS: A = dS MN-major, B = K MN-major) and adds
 *   them into the fp32 accumulator with vector atomics, as flash.cu's kernel does.
 * Registers per thread: S^T, dP^T, dV, dK 32 each, P^T and dS^T fragments 16 each, dQ 16. */
struct Sm90BwdTraits {
    static constexpr int D = 64, kWarpgroups = 2, Bc = 64 * kWarpgroups, Br = 64;
    static constexpr int kThreads = 128 * kWarpgroups;
    static constexpr int kKVBytes = Bc * D * 2, kQBytes = Br * D * 2, kDsBytes = Bc * Br * 2;
    static constexpr int kSmemBytes = 2 * kKVBytes + 2 * 2 * kQBytes + kDsBytes + 2 * 2 * Br * 4 + 1024;
};

struct Sm90BwdParams {
    const bf16 *q, *k, *v, *dout;
    bf16 *dk, *dv;
    const float *lse, *dvec;
    float *dq_accum;
    int T, H;
    long long ld_qkv, ld_o;
    float scale, scale_log2;
};

/* dst[0..1] += (a, b): one fp32 vector reduction */
__device__ __forceinline__ void red_add_f32x2(float *dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2 *>(dst), make_float2(a, b));
#endif
}

template <bool CAUSAL>
__global__ void __launch_bounds__(Sm90BwdTraits::kThreads, 1) flash_bwd_sm90_kernel(Sm90BwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using Tr = Sm90BwdTraits;
    constexpr int D = Tr::D, Bc = Tr::Bc, Br = Tr::Br, NQ = Br / 8, ND = D / 8, KD = D / 16;
    extern __shared__ unsigned char smem_raw[];
    unsigned char *sK = (unsigned char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    unsigned char *sV = sK + Tr::kKVBytes;
    unsigned char *sQ = sV + Tr::kKVBytes;      /* [2][Br x D] */
    unsigned char *sdO = sQ + 2 * Tr::kQBytes;  /* [2][Br x D] */
    unsigned char *sdS = sdO + 2 * Tr::kQBytes; /* [Bc keys][Br queries] */
    float *sL = (float *)(sdS + Tr::kDsBytes);  /* [2][Br] */
    float *sD = sL + 2 * Br;                    /* [2][Br] */

    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H;
    const int n_blk = attn_block_tile(false);
    const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x & 31;
    const int g = lane >> 2, c = 2 * (lane & 3);
    const int T = p.T, k0 = n_blk * Bc;
    const int key_row0 = k0 + wg * 64 + warp * 16; /* this warp's 16 keys */
    const long long head_off = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long o_off = (long long)b * T * p.ld_o + (long long)h * D;
    const float *gL = p.lse + (long long)bh * T, *gD = p.dvec + (long long)bh * T;
    float *gdq = p.dq_accum + (long long)bh * T * D;

    /* query tiles this key block meets (causal: from the diagonal on; else rotated so that the
     * key blocks of a head do not all add into the same dQ rows at once) */
    const int m_first = CAUSAL ? k0 / Br : 0;
    const int m_end = (T + Br - 1) / Br, m_count = m_end - m_first;
    auto tile_at = [&](int i) { return CAUSAL ? m_first + i : (i + n_blk) % m_end; };
    auto load_query_tile = [&](int mi, int stage) {
        load_rows_sw128_async<Br, D, Tr::kThreads>(sQ + stage * Tr::kQBytes, p.q + head_off, p.ld_qkv, mi * Br, T);
        load_rows_sw128_async<Br, D, Tr::kThreads>(sdO + stage * Tr::kQBytes, p.dout + o_off, p.ld_o, mi * Br, T);
        for (int x = threadIdx.x; x < Br; x += Tr::kThreads) {
            int t = mi * Br + x;
            bool ok = t < T;
            cp_async_4(sL + stage * Br + x, gL + (ok ? t : 0), ok);
            cp_async_4(sD + stage * Br + x, gD + (ok ? t : 0), ok);
        }
    };

    load_rows_sw128_async<Bc, D, Tr::kThreads>(sK, p.k + head_off, p.ld_qkv, k0, T);
    load_rows_sw128_async<Bc, D, Tr::kThreads>(sV, p.v + head_off, p.ld_qkv, k0, T);
    if (m_count > 0) load_query_tile(tile_at(0), 0);
    cp_async_commit();

    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int dt = 0; dt < ND; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.0f;
    const uint32_t k_rows = smem_addr(sK) + wg * 64 * 128, v_rows = smem_addr(sV) + wg * 64 * 128;
    const uint32_t ds_base = smem_addr(sdS), k_base = smem_addr(sK);

    for (int i = 0; i < m_count; i++) {
        /* tile i landed; every warpgroup finished tile i - 1 (its wgmmas retired) */
        cp_async_wait<0>();
        fence_proxy_async_smem();
        __syncthreads();
        const int stage = i & 1, q0 = tile_at(i) * Br;
        if (i + 1 < m_count) load_query_tile(tile_at(i + 1), stage ^ 1);
        cp_async_commit();
        const uint32_t q_base = smem_addr(sQ + stage * Tr::kQBytes), do_base = smem_addr(sdO + stage * Tr::kQBytes);
        const float *L_t = sL + stage * Br, *D_t = sD + stage * Br;

        /* S^T = K Q^T, dP^T = V dO^T */
        float st[NQ][4], dpt[NQ][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
            wgmma_ss<Br, 0>(st, sw128_desc(k_rows + kk * 32), sw128_desc(q_base + kk * 32), kk > 0);
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
            wgmma_ss<Br, 0>(dpt, sw128_desc(v_rows + kk * 32), sw128_desc(do_base + kk * 32), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operands(st);
        wgmma_fence_operands(dpt);

        bool needs_mask = q0 + Br > T || key_row0 + 16 > T || (CAUSAL && key_row0 + 15 > q0);
        if (needs_mask) mask_tile<NQ, CAUSAL>(st, key_row0, q0, T, true);
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
        acc_to_a_frags<NQ>(pf, st);
        acc_to_a_frags<NQ>(dsf, dpt);

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
            wgmma_rs<D, 1>(dv, pf[kk], sw128_desc(do_base + kk * 16 * 128), 1);
            wgmma_rs<D, 1>(dk, dsf[kk], sw128_desc(q_base + kk * 16 * 128), 1);
        }
        wgmma_commit();
        __syncthreads(); /* all of dS^T is in smem */

        /* dQ[q0.., 32wg..32wg+31] += dS K over the Bc keys */
        float dq[4][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < Bc / 16; kk++)
            wgmma_ss<32, 1>(dq, sw128_desc(ds_base + kk * 16 * 128), sw128_desc(k_base + kk * 16 * 128 + wg * 64), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operands(dq);
        wgmma_fence_operands(dv);
        wgmma_fence_operands(dk);
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int t = q0 + warp * 16 + g + 8 * half;
            if (t < T) {
                float *row = gdq + (long long)t * D + wg * 32 + c;
#pragma unroll
                for (int nt = 0; nt < 4; nt++) red_add_f32x2(row + nt * 8, dq[nt][2 * half], dq[nt][2 * half + 1]);
            }
        }
    }
    cp_async_wait<0>();

    /* dK = scale * sum dS^T Q, dV: this warp's 16 keys */
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int t = key_row0 + g + 8 * half;
        if (t < T) {
            long long off = head_off + (long long)t * p.ld_qkv + c;
#pragma unroll
            for (int dt = 0; dt < ND; dt++) {
                *(uint32_t *)(p.dk + off + dt * 8) = pack_bf16x2(dk[dt][2 * half] * p.scale, dk[dt][2 * half + 1] * p.scale);
                *(uint32_t *)(p.dv + off + dt * 8) = pack_bf16x2(dv[dt][2 * half], dv[dt][2 * half + 1]);
            }
        }
    }
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

/* Where the Hopper kernels apply (flash.cu has checked dtype, D in {32, 64, 128} and the rest).
 * The backward's main kernel exists for D = 64; D = 128 runs flash.cu's there. */
const char *flash_sm90_refuses(const AttnShape *s) {
    if (!flash_sm90_enabled()) return "flash-sm90: needs an H100/H200 (compute capability 9.0) and a build for sm_90a";
    if (s->D != 64 && s->D != 128) return "flash-sm90: head dimension must be 64 or 128";
    if (s->mask.kind != ATTN_MASK_CAUSAL && s->mask.kind != ATTN_MASK_NONE) return "flash-sm90: no dense bias";
    if (flash_mask_has_extras(s)) return "flash-sm90: causal or no mask only so far (flash-mma runs windows, documents, key padding and ALiBi)";
    if (attn_kv_heads(s) != s->H) return "flash-sm90: no grouped-query attention yet";
    return NULL;
}

template <int D, bool CAUSAL>
static int launch_sm90_forward(const AttnShape *s, Sm90Params p, cudaStream_t st) {
    using Tr = Sm90FwdTraits<D>;
    return attn_launch_tiled(flash_fwd_sm90_kernel<D, CAUSAL>, s, Tr::Br, Tr::kThreads, Tr::kSmemBytes, p, st);
}

int flash_sm90_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, float *lse,
                       cudaStream_t stream) {
    if (flash_sm90_refuses(s)) return -1;
    Sm90Params p;
    memset(&p, 0, sizeof p);
    p.q = (const bf16 *)q; p.k = (const bf16 *)k; p.v = (const bf16 *)v;
    p.out = (bf16 *)o;
    p.lse = lse;
    p.T = s->T; p.H = s->H;
    p.ld_qkv = s->ld_qkv; p.ld_o = s->ld_o;
    p.scale_log2 = s->scale * LOG2E_F;
    bool causal = s->mask.kind == ATTN_MASK_CAUSAL;
    if (s->D == 64) return causal ? launch_sm90_forward<64, true>(s, p, stream) : launch_sm90_forward<64, false>(s, p, stream);
    return causal ? launch_sm90_forward<128, true>(s, p, stream) : launch_sm90_forward<128, false>(s, p, stream);
}

template <bool CAUSAL>
static int launch_sm90_backward(const AttnShape *s, Sm90BwdParams p, cudaStream_t st) {
    using Tr = Sm90BwdTraits;
    return attn_launch_tiled(flash_bwd_sm90_kernel<CAUSAL>, s, Tr::Bc, Tr::kThreads, Tr::kSmemBytes, p, st);
}

int flash_sm90_backward_main(const AttnShape *s, const FlashSm90Bwd *a, cudaStream_t stream) {
    if (s->D != 64 || flash_sm90_refuses(s)) return -1;
    Sm90BwdParams p;
    memset(&p, 0, sizeof p);
    p.q = (const bf16 *)a->q; p.k = (const bf16 *)a->k; p.v = (const bf16 *)a->v; p.dout = (const bf16 *)a->dout;
    p.dk = (bf16 *)a->dk; p.dv = (bf16 *)a->dv;
    p.lse = a->lse; p.dvec = a->dvec; p.dq_accum = a->dq_accum;
    p.T = s->T; p.H = s->H;
    p.ld_qkv = s->ld_qkv; p.ld_o = s->ld_o;
    p.scale = s->scale;
    p.scale_log2 = s->scale * LOG2E_F;
    return s->mask.kind == ATTN_MASK_CAUSAL ? launch_sm90_backward<true>(s, p, stream)
                                            : launch_sm90_backward<false>(s, p, stream);
}
