/* attention/memeff.cu: memory-efficient attention (Rabe and Staats; xFormers' kernel design) on
 * CUDA cores, fp32 arithmetic for fp32 and bf16 elements, every mask kind.
 *
 * Forward, one block per (32 queries, batch*head), streaming 64-key tiles through smem:
 *   S = scale Q K^T + bias;  m' = max(m, rowmax S);  P = exp(S - m');
 *   l' = e^(m - m') l + rowsum P;  O' = e^(m - m') O + P V;   finally O / l, L = m + log l
 * (L = +inf for a row with no live key, so that backward's exp(S - L) is 0 there).
 * Backward recomputes P = exp(S - L) tile by tile, with D_i = rowsum(dO_i * O_i):
 *   kernel dKV, one block per 32 keys streaming query tiles:  dV += P^T dO,  dK += dS^T Q
 *   kernel dQ,  one block per 32 queries streaming key tiles: dQ += dS K
 *   where dS = P * (dO V^T - D). Two passes recompute S twice instead of atomics: deterministic.
 * Memory: saved = L (B H T floats), workspace = D (B H T floats). O(T).
 *
 * bf16 runs the same algorithm on tensor cores (mma.sync m16n8k16, fp32 accumulate; 64 x 64
 * tiles, 4 warps of 16 rows, K/V or Q/dO double-buffered by cp.async, bias read straight from
 * global memory into the score fragments); fp32 runs on CUDA cores.
 *
 * CUDA-core tile arithmetic (fp32): 128 threads; a block's own 32 rows are split in 8 groups of 4 rows
 * (row group = tid / 16), and the streamed 64 columns (or D columns) are dealt round-robin to the
 * 16 threads of a half warp (column = tid % 16 + 16 j), so a row's values live in one half warp
 * and its reductions are 4 shuffles. Smem rows are padded by one float (no bank conflicts).
 */
#include "attention/cuda_common.cuh"
#include "attention/tc_attention.cuh"

struct MemeffTraits {
    static constexpr int kThreads = 128;
    static constexpr int Rows = 32;  /* the block's own queries (forward, dQ) or keys (dK, dV) */
    static constexpr int Cols = 64;  /* streamed keys or queries per tile */
    static constexpr int kRowsPerThread = 4, kColStep = 16;
    static constexpr int kColsPerThread = Cols / kColStep; /* 4 */
};

struct MemeffParams {
    const void *q, *k, *v, *o, *dout;
    void *out, *dq, *dk, *dv;
    float *lse, *dvec;
    MaskDev mask;
    int T, H;
    long long ld_qkv, ld_o;
    float scale;
};

/* Copies rows [row0, row0 + ROWS) of a token-major head into a float smem tile [ROWS][D+1]
 * (rows >= T become zeros). */
template <typename E, int ROWS, int D>
__device__ __forceinline__ void load_rows_f32(float *tile, const E *g, long long ld, int row0, int T) {
    for (int x = threadIdx.x; x < ROWS * D; x += MemeffTraits::kThreads) {
        int r = x / D, d = x % D, t = row0 + r;
        tile[r * (D + 1) + d] = t < T ? to_float(g[(long long)t * ld + d]) : 0.0f;
    }
}

/* acc[i][j] = sum_d X[r_i][d] Y[c_j][d] for this thread's 4 rows of X (32 x D) and 4 columns
 * c_j = tid%16 + 16 j of Y (64 x D): one tile of A B^T. */
template <int D>
__device__ __forceinline__ void tile_abt(float acc[4][4], const float *X, const float *Y) {
    const int r0 = (threadIdx.x / 16) * 4, c0 = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
#pragma unroll 8
    for (int d = 0; d < D; d++) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = X[(r0 + i) * (D + 1) + d];
#pragma unroll
        for (int j = 0; j < 4; j++) b[j] = Y[(c0 + 16 * j) * (D + 1) + d];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
}

/* acc[i][j] += sum_k P[r_i][k] Y[k][c_j], P 32 x 64 (stride 65), Y 64 x D (stride D+1), this
 * thread's columns c_j = tid%16 + 16 j of D: one tile of A B. */
template <int D>
__device__ __forceinline__ void tile_ab(float acc[4][D / 16], const float *P, const float *Y) {
    const int r0 = (threadIdx.x / 16) * 4, c0 = threadIdx.x % 16;
#pragma unroll 4
    for (int k = 0; k < MemeffTraits::Cols; k++) {
        float a[4], b[D / 16];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = P[(r0 + i) * (MemeffTraits::Cols + 1) + k];
#pragma unroll
        for (int j = 0; j < D / 16; j++) b[j] = Y[k * (D + 1) + c0 + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < D / 16; j++) acc[i][j] += a[i] * b[j];
    }
}

/* Reductions over the 16 threads that share a row. */
__device__ __forceinline__ float row_max16(float x) {
    for (int o = 8; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float row_sum16(float x) {
    for (int o = 8; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* scale * s + bias(query, key), -inf outside [0, T). */
__device__ __forceinline__ float masked_score(const MemeffParams &p, float s, int b, int h, int query, int key) {
    if (query >= p.T || key >= p.T) return -INFINITY;
    return s * p.scale + mask_bias(p.mask, b, h, query, key);
}

template <int D>
static constexpr int memeff_fwd_smem() {
    return ((MemeffTraits::Rows + 2 * MemeffTraits::Cols) * (D + 1) +
            MemeffTraits::Rows * (MemeffTraits::Cols + 1)) * 4;
}

template <typename E, int D>
__global__ void __launch_bounds__(MemeffTraits::kThreads) memeff_forward_kernel(MemeffParams p) {
    constexpr int R = MemeffTraits::Rows, C = MemeffTraits::Cols, ND = D / 16;
    extern __shared__ float smem_f[];
    float *sQ = smem_f, *sK = sQ + R * (D + 1), *sV = sK + C * (D + 1), *sP = sV + C * (D + 1);
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H;
    const int q0 = attn_block_tile(true) * R; /* causal: heavy tiles first */
    const int T = p.T, r0 = (threadIdx.x / 16) * 4, c0 = threadIdx.x % 16;
    const long long head = (long long)b * T * p.ld_qkv + (long long)h * D;
    const E *gq = (const E *)p.q + head, *gk = (const E *)p.k + head, *gv = (const E *)p.v + head;

    load_rows_f32<E, R, D>(sQ, gq, p.ld_qkv, q0, T);
    float o[4][ND], m[4], l[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY; l[i] = 0.0f;
#pragma unroll
        for (int j = 0; j < ND; j++) o[i][j] = 0.0f;
    }
    int k_end = p.mask.kind == ATTN_MASK_CAUSAL ? min(T, q0 + R) : T;
    for (int k0 = 0; k0 < k_end; k0 += C) {
        load_rows_f32<E, C, D>(sK, gk, p.ld_qkv, k0, T);
        load_rows_f32<E, C, D>(sV, gv, p.ld_qkv, k0, T);
        __syncthreads();
        float s[4][4];
        tile_abt<D>(s, sQ, sK);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                s[i][j] = masked_score(p, s[i][j], b, h, q0 + r0 + i, k0 + c0 + 16 * j);
                mx = fmaxf(mx, s[i][j]);
            }
            float m_new = fmaxf(m[i], row_max16(mx));
            float m_use = m_new == -INFINITY ? 0.0f : m_new;
            float corr = __expf(m[i] - m_use), sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float pv = __expf(s[i][j] - m_use);
                sP[(r0 + i) * (C + 1) + c0 + 16 * j] = pv;
                sum += pv;
            }
            l[i] = l[i] * corr + row_sum16(sum);
            m[i] = m_new;
#pragma unroll
            for (int j = 0; j < ND; j++) o[i][j] *= corr;
        }
        __syncthreads();
        tile_ab<D>(o, sP, sV);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int t = q0 + r0 + i;
        if (t >= T) continue;
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        E *orow = (E *)p.out + ((long long)b * T + t) * p.ld_o + (long long)h * D;
#pragma unroll
        for (int j = 0; j < ND; j++) orow[c0 + 16 * j] = from_float<E>(o[i][j] * inv);
        if (c0 == 0) p.lse[(long long)bh * T + t] = l[i] > 0.0f ? m[i] + logf(l[i]) : INFINITY;
    }
}

/* D_i = sum_d dO[i,d] O[i,d]: one warp per row. */
template <typename E>
__global__ void memeff_rowdot_kernel(MemeffParams p, int D, long long rows) {
    long long r = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;
    int lane = threadIdx.x & 31, t = (int)(r % p.T);
    long long bh = r / p.T;
    long long off = ((bh / p.H) * p.T + t) * p.ld_o + (bh % p.H) * D;
    float acc = 0.0f;
    for (int d = lane; d < D; d += 32)
        acc += to_float(((const E *)p.dout)[off + d]) * to_float(((const E *)p.o)[off + d]);
    for (int x = 16; x > 0; x >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, x);
    if (lane == 0) p.dvec[r] = acc;
}

template <int D>
static constexpr int memeff_dkv_smem() {
    return ((2 * MemeffTraits::Rows + 2 * MemeffTraits::Cols) * (D + 1) +
            2 * MemeffTraits::Rows * (MemeffTraits::Cols + 1) + 2 * MemeffTraits::Cols) * 4;
}

/* dK, dV for 32 keys: rows of the tiles are keys, columns queries. */
template <typename E, int D>
__global__ void __launch_bounds__(MemeffTraits::kThreads) memeff_dkv_kernel(MemeffParams p) {
    constexpr int R = MemeffTraits::Rows, C = MemeffTraits::Cols, ND = D / 16;
    extern __shared__ float smem_f[];
    float *sK = smem_f, *sV = sK + R * (D + 1), *sQ = sV + R * (D + 1), *sdO = sQ + C * (D + 1);
    float *sP = sdO + C * (D + 1), *sdS = sP + R * (C + 1), *sL = sdS + R * (C + 1), *sD = sL + C;
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H, k0 = attn_block_tile(false) * R;
    const int T = p.T, r0 = (threadIdx.x / 16) * 4, c0 = threadIdx.x % 16;
    const long long head = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long ohead = (long long)b * T * p.ld_o + (long long)h * D;

    load_rows_f32<E, R, D>(sK, (const E *)p.k + head, p.ld_qkv, k0, T);
    load_rows_f32<E, R, D>(sV, (const E *)p.v + head, p.ld_qkv, k0, T);
    float dk[4][ND], dv[4][ND];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < ND; j++) dk[i][j] = dv[i][j] = 0.0f;
    int q_begin = p.mask.kind == ATTN_MASK_CAUSAL ? (k0 / C) * C : 0;
    for (int q0 = q_begin; q0 < T; q0 += C) {
        load_rows_f32<E, C, D>(sQ, (const E *)p.q + head, p.ld_qkv, q0, T);
        load_rows_f32<E, C, D>(sdO, (const E *)p.dout + ohead, p.ld_o, q0, T);
        for (int x = threadIdx.x; x < C; x += MemeffTraits::kThreads) {
            int t = q0 + x;
            sL[x] = t < T ? p.lse[(long long)bh * T + t] : INFINITY;
            sD[x] = t < T ? p.dvec[(long long)bh * T + t] : 0.0f;
        }
        __syncthreads();
        float st[4][4], dpt[4][4];
        tile_abt<D>(st, sK, sQ);
        tile_abt<D>(dpt, sV, sdO);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int c = c0 + 16 * j;
                float s = masked_score(p, st[i][j], b, h, q0 + c, k0 + r0 + i);
                float pv = __expf(s - sL[c]);
                sP[(r0 + i) * (C + 1) + c] = pv;
                sdS[(r0 + i) * (C + 1) + c] = pv * (dpt[i][j] - sD[c]);
            }
        __syncthreads();
        tile_ab<D>(dv, sP, sdO);
        tile_ab<D>(dk, sdS, sQ);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int t = k0 + r0 + i;
        if (t >= T) continue;
        long long off = head + (long long)t * p.ld_qkv;
#pragma unroll
        for (int j = 0; j < ND; j++) {
            ((E *)p.dk)[off + c0 + 16 * j] = from_float<E>(dk[i][j] * p.scale);
            ((E *)p.dv)[off + c0 + 16 * j] = from_float<E>(dv[i][j]);
        }
    }
}

template <int D>
static constexpr int memeff_dq_smem() {
    return ((2 * MemeffTraits::Rows + 2 * MemeffTraits::Cols) * (D + 1) +
            MemeffTraits::Rows * (MemeffTraits::Cols + 1)) * 4;
}

/* dQ for 32 queries: rows are queries, columns keys. */
template <typename E, int D>
__global__ void __launch_bounds__(MemeffTraits::kThreads) memeff_dq_kernel(MemeffParams p) {
    constexpr int R = MemeffTraits::Rows, C = MemeffTraits::Cols, ND = D / 16;
    extern __shared__ float smem_f[];
    float *sQ = smem_f, *sdO = sQ + R * (D + 1), *sK = sdO + R * (D + 1), *sV = sK + C * (D + 1);
    float *sdS = sV + C * (D + 1);
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H;
    const int q0 = attn_block_tile(true) * R;
    const int T = p.T, r0 = (threadIdx.x / 16) * 4, c0 = threadIdx.x % 16;
    const long long head = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long ohead = (long long)b * T * p.ld_o + (long long)h * D;

    load_rows_f32<E, R, D>(sQ, (const E *)p.q + head, p.ld_qkv, q0, T);
    load_rows_f32<E, R, D>(sdO, (const E *)p.dout + ohead, p.ld_o, q0, T);
    float L[4], Dv[4], dq[4][ND];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int t = q0 + r0 + i;
        L[i] = t < T ? p.lse[(long long)bh * T + t] : INFINITY;
        Dv[i] = t < T ? p.dvec[(long long)bh * T + t] : 0.0f;
#pragma unroll
        for (int j = 0; j < ND; j++) dq[i][j] = 0.0f;
    }
    int k_end = p.mask.kind == ATTN_MASK_CAUSAL ? min(T, q0 + R) : T;
    for (int k0 = 0; k0 < k_end; k0 += C) {
        load_rows_f32<E, C, D>(sK, (const E *)p.k + head, p.ld_qkv, k0, T);
        load_rows_f32<E, C, D>(sV, (const E *)p.v + head, p.ld_qkv, k0, T);
        __syncthreads();
        float s[4][4], dp[4][4];
        tile_abt<D>(s, sQ, sK);
        tile_abt<D>(dp, sdO, sV);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float sc = masked_score(p, s[i][j], b, h, q0 + r0 + i, k0 + c0 + 16 * j);
                float pv = __expf(sc - L[i]);
                sdS[(r0 + i) * (C + 1) + c0 + 16 * j] = pv * (dp[i][j] - Dv[i]);
            }
        __syncthreads();
        tile_ab<D>(dq, sdS, sK);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int t = q0 + r0 + i;
        if (t >= T) continue;
        E *row = (E *)p.dq + head + (long long)t * p.ld_qkv;
#pragma unroll
        for (int j = 0; j < ND; j++) row[c0 + 16 * j] = from_float<E>(dq[i][j] * p.scale);
    }
}

/* ---- bf16 on tensor cores ------------------------------------------------------------------- */

template <int D_> struct MemeffTcTraits {
    static constexpr int D = D_;
    static constexpr int kWarps = 4;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int Rows = 16 * kWarps;          /* the block's own queries or keys */
    static constexpr int Cols = D_ == 128 ? 32 : 64;  /* streamed keys or queries per tile */
    static constexpr int kStride = D + 8;             /* padded smem row (elements) */
    static constexpr int kSmemBytes = (2 * Rows + 2 * 2 * Cols) * kStride * 2 + 2 * 2 * Cols * 4;
};

/* Forward: one block per 64 queries; as flash's forward with MT = 1 plus the dense bias. */
template <int D, int MASK>
__global__ void __launch_bounds__(MemeffTcTraits<D>::kThreads) memeff_tc_forward_kernel(MemeffParams p) {
    using Tr = MemeffTcTraits<D>;
    constexpr int R = Tr::Rows, C = Tr::Cols, S = Tr::kStride, NT = C / 8, ND = D / 8, KD = D / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sQ = (bf16 *)smem_raw, *sK = sQ + R * S, *sV = sK + 2 * C * S;
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H;
    const int q0 = attn_block_tile(true) * R;
    const int warp = threadIdx.x / 32, T = p.T;
    const long long head = (long long)b * T * p.ld_qkv + (long long)h * D;
    const bf16 *gq = (const bf16 *)p.q + head, *gk = (const bf16 *)p.k + head, *gv = (const bf16 *)p.v + head;
    const float scale_log2 = p.scale * LOG2E_F;
    int n_tiles = (T + C - 1) / C;
    if (MASK == ATTN_MASK_CAUSAL) n_tiles = min(n_tiles, (min(q0 + R, T) + C - 1) / C);

    load_rows_async<R, D, Tr::kThreads>(sQ, gq, p.ld_qkv, q0, T);
    load_rows_async<C, D, Tr::kThreads>(sK, gk, p.ld_qkv, 0, T);
    load_rows_async<C, D, Tr::kThreads>(sV, gv, p.ld_qkv, 0, T);
    cp_async_commit();
    uint32_t qf[KD][4];
    float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dt = 0; dt < ND; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    const int row0 = q0 + warp * 16;
    for (int j = 0; j < n_tiles; j++) {
        const int stage = j & 1;
        if (j + 1 < n_tiles) {
            load_rows_async<C, D, Tr::kThreads>(sK + (stage ^ 1) * C * S, gk, p.ld_qkv, (j + 1) * C, T);
            load_rows_async<C, D, Tr::kThreads>(sV + (stage ^ 1) * C * S, gv, p.ld_qkv, (j + 1) * C, T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (j == 0) {
#pragma unroll
            for (int kk = 0; kk < KD; kk++) load_a_frag(qf[kk], sQ, S, warp * 16, kk * 16);
        }
        const bf16 *k_t = sK + stage * C * S, *v_t = sV + stage * C * S;
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t bfr[4];
                load_bt_frags(bfr, k_t, S, np * 16, kk * 16);
                mma_16816(s[2 * np], qf[kk], bfr[0], bfr[1]);
                mma_16816(s[2 * np + 1], qf[kk], bfr[2], bfr[3]);
            }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
        const int col0 = j * C;
        if (MASK == ATTN_MASK_DENSE || col0 + C > T || (MASK == ATTN_MASK_CAUSAL && col0 + C - 1 > row0))
            mask_tile<NT, MASK>(s, row0, col0, T, false, &p.mask, b, h);
        online_softmax_step<NT, ND>(s, o, m, l);
        uint32_t pf[NT / 2][4];
        acc_to_a_frags<NT>(pf, s);
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t bfr[4];
                load_b_frags(bfr, v_t, S, kk * 16, dp * 16);
                mma_16816(o[2 * dp], pf[kk], bfr[0], bfr[1]);
                mma_16816(o[2 * dp + 1], pf[kk], bfr[2], bfr[3]);
            }
        __syncthreads();
    }
    cp_async_wait<0>();
    store_o_and_lse<ND>((bf16 *)p.out + (long long)b * T * p.ld_o + (long long)h * D, p.ld_o,
                        p.lse + (long long)bh * T, o, m, l, row0, T);
}

/* Loads query tile rows [q0, q0 + C) of Q and dO, and their L and D, into one stage. */
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_query_side(bf16 *sQ, bf16 *sdO, float *sL, float *sD,
                                                const MemeffParams &p, long long head,
                                                long long ohead, long long bh, int q0) {
    load_rows_async<ROWS, D, THREADS>(sQ, (const bf16 *)p.q + head, p.ld_qkv, q0, p.T);
    load_rows_async<ROWS, D, THREADS>(sdO, (const bf16 *)p.dout + ohead, p.ld_o, q0, p.T);
    for (int x = threadIdx.x; x < ROWS; x += THREADS) {
        int t = q0 + x;
        bool ok = t < p.T;
        cp_async_4(sL + x, p.lse + bh * p.T + (ok ? t : 0), ok);
        cp_async_4(sD + x, p.dvec + bh * p.T + (ok ? t : 0), ok);
    }
}

/* dK, dV for 64 keys (16 per warp, the MMA rows), query tiles streamed:
 *   S^T = K Q^T, P^T = 2^(S^T - L), dP^T = V dO^T, dS^T = P^T (dP^T - D);
 *   dV += P^T dO, dK += dS^T Q, all in registers. */
template <int D, int MASK>
__global__ void __launch_bounds__(MemeffTcTraits<D>::kThreads) memeff_tc_dkv_kernel(MemeffParams p) {
    using Tr = MemeffTcTraits<D>;
    constexpr int R = Tr::Rows, C = Tr::Cols, S = Tr::kStride, NQ = C / 8, ND = D / 8, KD = D / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sK = (bf16 *)smem_raw, *sV = sK + R * S, *sQ = sV + R * S, *sdO = sQ + 2 * C * S;
    float *sL = (float *)(sdO + 2 * C * S), *sD = sL + 2 * C;
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H, k0 = attn_block_tile(false) * R;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, T = p.T;
    const int g = lane >> 2, c = 2 * (lane & 3);
    const long long head = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long ohead = (long long)b * T * p.ld_o + (long long)h * D;
    const float scale_log2 = p.scale * LOG2E_F;
    const int m_first = MASK == ATTN_MASK_CAUSAL ? k0 / C : 0, m_end = (T + C - 1) / C;

    load_rows_async<R, D, Tr::kThreads>(sK, (const bf16 *)p.k + head, p.ld_qkv, k0, T);
    load_rows_async<R, D, Tr::kThreads>(sV, (const bf16 *)p.v + head, p.ld_qkv, k0, T);
    load_query_side<D, C, Tr::kThreads>(sQ, sdO, sL, sD, p, head, ohead, bh, m_first * C);
    cp_async_commit();
    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int dt = 0; dt < ND; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.0f;
    const int key_row0 = k0 + warp * 16;
    for (int mi = m_first; mi < m_end; mi++) {
        const int stage = (mi - m_first) & 1;
        if (mi + 1 < m_end)
            load_query_side<D, C, Tr::kThreads>(sQ + (stage ^ 1) * C * S, sdO + (stage ^ 1) * C * S,
                                                sL + (stage ^ 1) * C, sD + (stage ^ 1) * C, p, head,
                                                ohead, bh, (mi + 1) * C);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const bf16 *q_t = sQ + stage * C * S, *do_t = sdO + stage * C * S;
        const float *L_t = sL + stage * C, *D_t = sD + stage * C;
        float st[NQ][4], dpt[NQ][4];
#pragma unroll
        for (int nt = 0; nt < NQ; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint32_t kf[4], vf[4];
            load_a_frag(kf, sK, S, warp * 16, kk * 16);
            load_a_frag(vf, sV, S, warp * 16, kk * 16);
            mma_pair_step<NQ>(st, dpt, kf, vf, q_t, do_t, S, kk * 16);
        }
#pragma unroll
        for (int nt = 0; nt < NQ; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[nt][e] *= scale_log2;
        const int q0 = mi * C;
        if (MASK == ATTN_MASK_DENSE || q0 + C > T || key_row0 + 16 > T ||
            (MASK == ATTN_MASK_CAUSAL && key_row0 + 15 > q0))
            mask_tile<NQ, MASK>(st, key_row0, q0, T, true, &p.mask, b, h);
#pragma unroll
        for (int nt = 0; nt < NQ; nt++) {
            float2 Lq = *(const float2 *)(L_t + nt * 8 + c), Dq = *(const float2 *)(D_t + nt * 8 + c);
            float L2[2] = {Lq.x * LOG2E_F, Lq.y * LOG2E_F}, Dd[2] = {Dq.x, Dq.y};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float pv = exp2f(st[nt][e] - L2[e & 1]);
                st[nt][e] = pv;
                dpt[nt][e] = pv * (dpt[nt][e] - Dd[e & 1]);
            }
        }
        uint32_t pf[NQ / 2][4], dsf[NQ / 2][4];
        acc_to_a_frags<NQ>(pf, st);
        acc_to_a_frags<NQ>(dsf, dpt);
#pragma unroll
        for (int kk = 0; kk < NQ / 2; kk++)
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t bo[4], bq[4];
                load_b_frags(bo, do_t, S, kk * 16, dp * 16);
                load_b_frags(bq, q_t, S, kk * 16, dp * 16);
                mma_16816(dv[2 * dp], pf[kk], bo[0], bo[1]);
                mma_16816(dv[2 * dp + 1], pf[kk], bo[2], bo[3]);
                mma_16816(dk[2 * dp], dsf[kk], bq[0], bq[1]);
                mma_16816(dk[2 * dp + 1], dsf[kk], bq[2], bq[3]);
            }
        __syncthreads(); /* this stage is reloaded two tiles on */
    }
    cp_async_wait<0>();
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int t = key_row0 + g + 8 * half;
        if (t < T) {
            long long off = head + (long long)t * p.ld_qkv + c;
#pragma unroll
            for (int dt = 0; dt < ND; dt++) {
                *(uint32_t *)((bf16 *)p.dk + off + dt * 8) =
                    pack_bf16x2(dk[dt][2 * half] * p.scale, dk[dt][2 * half + 1] * p.scale);
                *(uint32_t *)((bf16 *)p.dv + off + dt * 8) = pack_bf16x2(dv[dt][2 * half], dv[dt][2 * half + 1]);
            }
        }
    }
}

/* dQ for 64 queries (16 per warp, the MMA rows), key tiles streamed:
 *   S = Q K^T, P = 2^(S - L), dP = dO V^T, dS = P (dP - D), dQ += dS K in registers. */
template <int D, int MASK>
__global__ void __launch_bounds__(MemeffTcTraits<D>::kThreads) memeff_tc_dq_kernel(MemeffParams p) {
    using Tr = MemeffTcTraits<D>;
    constexpr int R = Tr::Rows, C = Tr::Cols, S = Tr::kStride, NT = C / 8, ND = D / 8, KD = D / 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *sQ = (bf16 *)smem_raw, *sdO = sQ + R * S, *sK = sdO + R * S, *sV = sK + 2 * C * S;
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H;
    const int q0 = attn_block_tile(true) * R;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, T = p.T;
    const int g = lane >> 2, c = 2 * (lane & 3);
    const long long head = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long ohead = (long long)b * T * p.ld_o + (long long)h * D;
    const bf16 *gk = (const bf16 *)p.k + head, *gv = (const bf16 *)p.v + head;
    const float scale_log2 = p.scale * LOG2E_F;
    int n_tiles = (T + C - 1) / C;
    if (MASK == ATTN_MASK_CAUSAL) n_tiles = min(n_tiles, (min(q0 + R, T) + C - 1) / C);

    load_rows_async<R, D, Tr::kThreads>(sQ, (const bf16 *)p.q + head, p.ld_qkv, q0, T);
    load_rows_async<R, D, Tr::kThreads>(sdO, (const bf16 *)p.dout + ohead, p.ld_o, q0, T);
    load_rows_async<C, D, Tr::kThreads>(sK, gk, p.ld_qkv, 0, T);
    load_rows_async<C, D, Tr::kThreads>(sV, gv, p.ld_qkv, 0, T);
    cp_async_commit();
    const int row0 = q0 + warp * 16;
    float L2[2], Dv[2], dq[ND][4];
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int t = row0 + g + 8 * half;
        L2[half] = t < T ? p.lse[(long long)bh * T + t] * LOG2E_F : INFINITY;
        Dv[half] = t < T ? p.dvec[(long long)bh * T + t] : 0.0f;
    }
#pragma unroll
    for (int dt = 0; dt < ND; dt++) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.0f;
    for (int j = 0; j < n_tiles; j++) {
        const int stage = j & 1;
        if (j + 1 < n_tiles) {
            load_rows_async<C, D, Tr::kThreads>(sK + (stage ^ 1) * C * S, gk, p.ld_qkv, (j + 1) * C, T);
            load_rows_async<C, D, Tr::kThreads>(sV + (stage ^ 1) * C * S, gv, p.ld_qkv, (j + 1) * C, T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const bf16 *k_t = sK + stage * C * S, *v_t = sV + stage * C * S;
        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint32_t qf[4], of[4];
            load_a_frag(qf, sQ, S, warp * 16, kk * 16);
            load_a_frag(of, sdO, S, warp * 16, kk * 16);
            mma_pair_step<NT>(s, dp, qf, of, k_t, v_t, S, kk * 16);
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
        const int col0 = j * C;
        if (MASK == ATTN_MASK_DENSE || col0 + C > T || row0 + 16 > T ||
            (MASK == ATTN_MASK_CAUSAL && col0 + C - 1 > row0))
            mask_tile<NT, MASK>(s, row0, col0, T, false, &p.mask, b, h);
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float pv = exp2f(s[nt][e] - L2[e >> 1]);
                dp[nt][e] = pv * (dp[nt][e] - Dv[e >> 1]);
            }
        uint32_t dsf[NT / 2][4];
        acc_to_a_frags<NT>(dsf, dp);
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
            for (int dpp = 0; dpp < ND / 2; dpp++) {
                uint32_t bk[4];
                load_b_frags(bk, k_t, S, kk * 16, dpp * 16);
                mma_16816(dq[2 * dpp], dsf[kk], bk[0], bk[1]);
                mma_16816(dq[2 * dpp + 1], dsf[kk], bk[2], bk[3]);
            }
        __syncthreads();
    }
    cp_async_wait<0>();
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int t = row0 + g + 8 * half;
        if (t < T) {
            bf16 *row = (bf16 *)p.dq + head + (long long)t * p.ld_qkv + c;
#pragma unroll
            for (int dt = 0; dt < ND; dt++)
                *(uint32_t *)(row + dt * 8) = pack_bf16x2(dq[dt][2 * half] * p.scale, dq[dt][2 * half + 1] * p.scale);
        }
    }
}

template <int D, int MASK>
static int memeff_tc_launch_forward(const AttnShape *s, MemeffParams p, cudaStream_t st) {
    using Tr = MemeffTcTraits<D>;
    return attn_launch_tiled(memeff_tc_forward_kernel<D, MASK>, s, Tr::Rows, Tr::kThreads, Tr::kSmemBytes, p, st);
}

template <int D, int MASK>
static int memeff_tc_launch_backward(const AttnShape *s, MemeffParams p, cudaStream_t st) {
    using Tr = MemeffTcTraits<D>;
    long long rows = attn_rows(s);
    memeff_rowdot_kernel<bf16><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(p, D, rows);
    ATTN_LAUNCH_CHECK();
    int rc = attn_launch_tiled(memeff_tc_dkv_kernel<D, MASK>, s, Tr::Rows, Tr::kThreads, Tr::kSmemBytes, p, st);
    return rc ? rc : attn_launch_tiled(memeff_tc_dq_kernel<D, MASK>, s, Tr::Rows, Tr::kThreads, Tr::kSmemBytes, p, st);
}

/* Calls F<D, MASK> for the shape's head dimension and mask kind. */
#define MEMEFF_TC_DISPATCH_D(F, MASK, s, ...)                                                \
    ((s)->D == 32 ? F<32, MASK>(__VA_ARGS__)                                                 \
     : (s)->D == 64 ? F<64, MASK>(__VA_ARGS__) : F<128, MASK>(__VA_ARGS__))
#define MEMEFF_TC_DISPATCH(F, s, ...)                                                        \
    ((s)->mask.kind == ATTN_MASK_CAUSAL ? MEMEFF_TC_DISPATCH_D(F, ATTN_MASK_CAUSAL, s, __VA_ARGS__) \
     : (s)->mask.kind == ATTN_MASK_DENSE ? MEMEFF_TC_DISPATCH_D(F, ATTN_MASK_DENSE, s, __VA_ARGS__) \
     : MEMEFF_TC_DISPATCH_D(F, ATTN_MASK_NONE, s, __VA_ARGS__))

static bool memeff_use_tc(const AttnShape *s, const void *const *ptrs, int n) {
    if (s->dtype != ATTN_BF16 || s->ld_qkv % 8 || s->ld_o % 8) return false;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] & 15) return false;
    return true;
}

/* ---- host side ------------------------------------------------------------------------------ */

static const char *memeff_unsupported(const AttnShape *s) {
    const char *why = attn_shape_problem(s);
    if (why) return why;
    if (s->D != 32 && s->D != 64 && s->D != 128) return "memeff: head dimension must be 32, 64 or 128";
    if ((long long)s->B * s->H > kAttnMaxHeads) return "memeff: B * H > 65535";
    return NULL;
}
static size_t memeff_saved_bytes(const AttnShape *s) { return (size_t)attn_rows(s) * 4; }
static size_t memeff_workspace_bytes(const AttnShape *s) { return (size_t)attn_rows(s) * 4; }

static MemeffParams memeff_params(const AttnShape *s) {
    MemeffParams p;
    memset(&p, 0, sizeof p);
    p.mask = mask_dev(s);
    p.T = s->T; p.H = s->H;
    p.ld_qkv = s->ld_qkv; p.ld_o = s->ld_o;
    p.scale = s->scale;
    return p;
}

template <typename E, int D>
static int memeff_launch_forward(const AttnShape *s, MemeffParams p, cudaStream_t st) {
    return attn_launch_tiled(memeff_forward_kernel<E, D>, s, MemeffTraits::Rows, MemeffTraits::kThreads,
                             memeff_fwd_smem<D>(), p, st);
}

template <typename E, int D>
static int memeff_launch_backward(const AttnShape *s, MemeffParams p, cudaStream_t st) {
    long long rows = attn_rows(s);
    memeff_rowdot_kernel<E><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(p, D, rows);
    ATTN_LAUNCH_CHECK();
    int rc = attn_launch_tiled(memeff_dkv_kernel<E, D>, s, MemeffTraits::Rows, MemeffTraits::kThreads,
                               memeff_dkv_smem<D>(), p, st);
    return rc ? rc : attn_launch_tiled(memeff_dq_kernel<E, D>, s, MemeffTraits::Rows, MemeffTraits::kThreads,
                                       memeff_dq_smem<D>(), p, st);
}

/* Calls F<E, D> for the shape's element type and head dimension. */
#define MEMEFF_DISPATCH(F, s, ...)                                                           \
    ((s)->dtype == ATTN_BF16                                                                 \
         ? ((s)->D == 32 ? F<bf16, 32>(__VA_ARGS__)                                          \
            : (s)->D == 64 ? F<bf16, 64>(__VA_ARGS__) : F<bf16, 128>(__VA_ARGS__))           \
         : ((s)->D == 32 ? F<float, 32>(__VA_ARGS__)                                         \
            : (s)->D == 64 ? F<float, 64>(__VA_ARGS__) : F<float, 128>(__VA_ARGS__)))

static int memeff_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                          void *saved, void *workspace, void *stream) {
    const char *why = memeff_unsupported(s);
    if (why) return attn_cuda_fail("memeff forward: %s", why);
    MemeffParams p = memeff_params(s);
    p.q = q; p.k = k; p.v = v; p.out = o;
    p.lse = (float *)saved;
    const void *ptrs[] = {q, k, v, o};
    if (memeff_use_tc(s, ptrs, 4)) return MEMEFF_TC_DISPATCH(memeff_tc_launch_forward, s, s, p, attn_stream(stream));
    return MEMEFF_DISPATCH(memeff_launch_forward, s, s, p, attn_stream(stream));
}

static int memeff_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                           const void *o, const void *dout, const void *saved, void *dq, void *dk,
                           void *dv, void *workspace, void *stream) {
    const char *why = memeff_unsupported(s);
    if (why) return attn_cuda_fail("memeff backward: %s", why);
    MemeffParams p = memeff_params(s);
    p.q = q; p.k = k; p.v = v; p.o = o; p.dout = dout;
    p.dq = dq; p.dk = dk; p.dv = dv;
    p.lse = (float *)saved;
    p.dvec = (float *)workspace;
    const void *ptrs[] = {q, k, v, o, dout, dq, dk, dv};
    if (memeff_use_tc(s, ptrs, 8)) return MEMEFF_TC_DISPATCH(memeff_tc_launch_backward, s, s, p, attn_stream(stream));
    return MEMEFF_DISPATCH(memeff_launch_backward, s, s, p, attn_stream(stream));
}

const AttnImpl attn_memeff_cuda = {ATTN_MEMEFF,        ATTN_CUDA,          memeff_unsupported,
                                   memeff_saved_bytes, memeff_workspace_bytes, memeff_forward,
                                   memeff_backward};
