/* attention/memeff.cu: memory-efficient attention (Rabe and Staats; xFormers' kernel design), the
 * whole contract of attention.h: every mask kind, a dense bias with any kind and its gradient,
 * sliding windows, packed documents, key padding, ALiBi, grouped-query attention.
 *
 * Forward, one block per (query tile, batch*head), streaming key tiles through smem:
 *   S = scale Q K^T + bias;  m' = max(m, rowmax S);  P = exp(S - m');
 *   l' = e^(m - m') l + rowsum P;  O' = e^(m - m') O + P V;   finally O / l, L = m + log l
 * (L = +inf for a row with no live key, so that backward's exp(S - L) is 0 there).
 * Backward recomputes P = exp(S - L) tile by tile, with D_i = rowsum(dO_i * O_i):
 *   kernel dKV, one block per (key tile, batch, K/V head), streaming the query tiles of every
 *     query head of the K/V head's group:  dV += P^T dO,  dK += dS^T Q  (registers)
 *   kernel dQ,  one block per (query tile, batch*head), streaming key tiles: dQ += dS K
 *   where dS = P * (dO V^T - D). Two passes recompute S twice instead of atomics: dQ, dK, dV are
 *   deterministic, and so is dbias unless a stride of 0 shares its entries between blocks (below).
 * Memory: saved = L (B H T floats), workspace = D (B H T floats). O(T).
 *
 * Grouped-query attention: query head h reads K/V head h / (H / Hkv) in place; the dKV block of a
 * K/V head loops over its group's query heads, so dK, dV are summed in registers, no atomics.
 *
 * Two instantiations of every kernel (template flag X):
 *   X = false  kind + constant DENSE bias (the plain cases): causal cuts the key (query) range at
 *              the diagonal, only tiles crossing it or T's ragged end are masked element by element.
 *   X = true   the rest of the mask family (AttnParams' x and bias): key tiles (forward, dQ) and
 *              query tiles (dKV) that no pair of the block can see are not visited (flash_live_tiles),
 *              tiles whose every pair is visible (flash_tile_full) only add bias and ALiBi, the others
 *              are masked element by element; the bias (with any kind) and ALiBi are read in the kernel.
 *   The bias gradient (X only) is written by the dKV pass, which owns keys j of (b, K/V head) and
 *   sees every query row i of every head of the group: dbias[b, h, i, j] += dS_ij. With stride_row
 *   = 0 (one bias row for all queries) a block sums its queries first (fixed order) and adds once
 *   per (b, h, key). A block's entries are its own unless stride_b = 0 with B > 1 or stride_h = 0
 *   with more than one K/V head: then several blocks add into one entry and the adds are fp32
 *   atomics (dbias reproducible only up to rounding order there; dQ, dK, dV stay bitwise).
 *   A non-zero stride is taken to give distinct entries (as a tensor of those dimensions does).
 *
 * bf16, fp16 and fp32 with AttnShape::tf32 = 1 (the trainer's default; 0, exact fp32, is the
 * library's) run one tensor-core skeleton per pass (forward, dK/dV, dQ; 16-row warps, K/V or Q/dO
 * double-buffered by cp.async, bias read straight from global memory into the score fragments),
 * instantiated with an operand policy: MmaOps16<E> (mma.sync m16n8k16, 64-row tiles in 4 warps;
 * mma_bf16.cuh) or MmaOpsTf32 (fp32 tiles rounded once to TF32 in smem, m16n8k8; mma_tf32.cuh;
 * 8 warps at D = 128). They need 16-byte aligned pointers and leading dimensions (multiples of 8
 * elements for 16 bits, 4 for fp32); otherwise, and for exact fp32, the CUDA-core kernels run it:
 * they compute in fp32 from the converted inputs and round only the outputs (P and dS stay fp32).
 *
 * CUDA-core tile arithmetic (fp32): 128 threads; a block's own 32 rows are split in 8 groups of 4 rows
 * (row group = tid / 16), and the streamed 64 columns (or D columns) are dealt round-robin to the
 * 16 threads of a half warp (column = tid % 16 + 16 j), so a row's values live in one half warp
 * and its reductions are 4 shuffles. Smem rows are padded by one float (no bank conflicts).
 */
#include "attention/attn_params.cuh"
#include "attention/cuda_common.cuh"
#include "attention/flash_mask.cuh"
#include "attention/tc_attention.cuh"
#include "attention/rowdot.cuh"

struct MemeffTraits {
    static constexpr int kThreads = 128;
    static constexpr int Rows = 32;  /* the block's own queries (forward, dQ) or keys (dK, dV) */
    static constexpr int Cols = 64;  /* streamed keys or queries per tile */
    static constexpr int kRowsPerThread = 4, kColStep = 16;
    static constexpr int kColsPerThread = Cols / kColStep; /* 4 */
};

/* The kernels take attn_params.cuh's AttnParams<E> (E: bf16, fp16 or float). The plain (X = false)
 * kernels read the kind at run time and a DENSE kind's bias through attn_mask_dev; the X kernels
 * read x (window, documents, key padding, ALiBi; its inv_scale unused: memeff scales the dot
 * product, not the bias), bias (the additive bias with any kind, and dbias) and dbias_atomic. */

/* What the X kernels need of the mask for one (b, h), resolved once. */
struct MemeffRowX {
    int kb, ke, window;               /* valid keys [kb, ke); window (0: none) */
    const int *doc;                   /* this sequence's document starts, or NULL */
    const float *bias;                /* bias at (b, h, 0, 0), or NULL */
    float *dbias;                     /* dbias at (b, h, 0, 0), or NULL */
    long long stride_row;
    float slope;                      /* ALiBi slope of h (0: none) */
};

template <typename E> __device__ __forceinline__ MemeffRowX memeff_row_x(const AttnParams<E> &p, int b, int h) {
    const FlashMask &x = p.x;
    const FlashBias &m = p.bias;
    MemeffRowX r;
    r.kb = x.key_begin ? x.key_begin[b] : 0;
    r.ke = x.key_end ? x.key_end[b] : p.T;
    r.window = x.window;
    r.doc = x.doc ? x.doc + (long long)b * p.T : nullptr;
    const long long at = (long long)b * m.stride_b + (long long)h * m.stride_h;
    r.bias = m.bias ? m.bias + at : nullptr;
    r.dbias = m.dbias ? m.dbias + at : nullptr;
    r.stride_row = m.stride_row;
    r.slope = x.slopes ? x.slopes[h] : 0.0f;
    return r;
}

/* 1 when the structural mask (attention.h's masked(i, j)) hides `key` from `query`, or either is
 * outside [0, T). Both are >= 0. */
template <bool CAUSAL>
__device__ __forceinline__ bool memeff_dead(const MemeffRowX &r, int T, int query, int key) {
    if (key >= T || query >= T || key < r.kb || key >= r.ke) return true;
    if (CAUSAL && key > query) return true;
    if (r.window > 0 && (CAUSAL ? key <= query - r.window : abs(query - key) >= r.window)) return true;
    return r.doc && r.doc[query] != r.doc[key];
}

/* bias[i, j] - slope |i - j| of a visible pair (natural units). */
__device__ __forceinline__ float memeff_bias_x(const MemeffRowX &r, int query, int key) {
    float x = -r.slope * fabsf((float)(query - key));
    if (r.bias) x += __ldg(r.bias + (long long)query * r.stride_row + key);
    return x;
}

/* dbias[query, key] += ds; atomic where blocks share entries (AttnParams::dbias_atomic). */
__device__ __forceinline__ void memeff_add_dbias(float *dst, float ds, bool atomic) {
    if (atomic) atomicAdd(dst, ds);
    else *dst += ds;
}

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

/* The score of (query, key) from s = q . k. X = false: scale s + the kind's bias, -inf outside
 * [0, T). X = true: the structural mask (unless the tile is `full`), bias and ALiBi. */
template <bool X, bool CAUSAL, typename E>
__device__ __forceinline__ float masked_score(const AttnParams<E> &p, const MemeffRowX &r, float s, int b, int h,
                                              int query, int key, bool full) {
    if (X) {
        if (!full && memeff_dead<CAUSAL>(r, p.T, query, key)) return -INFINITY;
        return s * p.scale + memeff_bias_x(r, query, key);
    }
    if (query >= p.T || key >= p.T) return -INFINITY;
    return s * p.scale + mask_bias(attn_mask_dev(p), b, h, query, key);
}

/* The streamed tiles [*lo, *hi) (of `tile` rows, `n` of them) that the block's fixed rows
 * [f0, f1) may meet: X asks flash_live_tiles, else all of [*lo, n). */
template <bool X, bool CAUSAL, typename E>
__device__ __forceinline__ void memeff_live(const AttnParams<E> &p, int b, int f0, int f1, int tile, int n,
                                            bool fixed_is_queries, int &lo, int &hi) {
    if (X) {
        int a, e;
        flash_live_tiles<CAUSAL>(p.x, b, p.T, f0, f1, tile, n, fixed_is_queries, a, e);
        lo = a;
        hi = e;
    } else {
        hi = n;
    }
}

template <int D>
static constexpr int memeff_fwd_smem() {
    return ((MemeffTraits::Rows + 2 * MemeffTraits::Cols) * (D + 1) +
            MemeffTraits::Rows * (MemeffTraits::Cols + 1)) * 4;
}

/* X = false reads the kind at run time (CAUSAL unused); X = true takes it from CAUSAL. */
template <typename E, int D, bool X, bool CAUSAL>
__global__ void __launch_bounds__(MemeffTraits::kThreads) memeff_forward_kernel(AttnParams<E> p) {
    constexpr int R = MemeffTraits::Rows, C = MemeffTraits::Cols, ND = D / 16;
    extern __shared__ float smem_f[];
    float *sQ = smem_f, *sK = sQ + R * (D + 1), *sV = sK + C * (D + 1), *sP = sV + C * (D + 1);
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H, hk = h / p.group;
    const int q0 = attn_block_tile(true) * R; /* causal: heavy tiles first */
    const int T = p.T, r0 = (threadIdx.x / 16) * 4, c0 = threadIdx.x % 16;
    const long long qhead = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)hk * D;
    const E *gq = p.q + qhead, *gk = p.k + kvhead, *gv = p.v + kvhead;
    MemeffRowX rx = {};
    if (X) rx = memeff_row_x(p, b, h);

    load_rows_f32<E, R, D>(sQ, gq, p.ld_qkv, q0, T);
    float o[4][ND], m[4], l[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY; l[i] = 0.0f;
#pragma unroll
        for (int j = 0; j < ND; j++) o[i][j] = 0.0f;
    }
    const bool causal = X ? CAUSAL : p.kind == ATTN_MASK_CAUSAL;
    int k_begin = 0, k_end = causal ? min(T, q0 + R) : T;
    if (X) { /* only the key tiles some pair of the block sees */
        int lo = 0, hi;
        memeff_live<X, CAUSAL>(p, b, q0, min(q0 + R, T), C, (k_end + C - 1) / C, true, lo, hi);
        k_begin = lo * C;
        k_end = min(k_end, hi * C);
    }
    for (int k0 = k_begin; k0 < k_end; k0 += C) {
        load_rows_f32<E, C, D>(sK, gk, p.ld_qkv, k0, T);
        load_rows_f32<E, C, D>(sV, gv, p.ld_qkv, k0, T);
        __syncthreads();
        const bool full = X && flash_tile_full<CAUSAL>(p.x, b, T, q0, q0 + R, k0, k0 + C);
        float s[4][4];
        tile_abt<D>(s, sQ, sK);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                s[i][j] = masked_score<X, CAUSAL>(p, rx, s[i][j], b, h, q0 + r0 + i, k0 + c0 + 16 * j, full);
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
        E *orow = p.out + ((long long)b * T + t) * p.ld_o + (long long)h * D;
#pragma unroll
        for (int j = 0; j < ND; j++) orow[c0 + 16 * j] = from_float<E>(o[i][j] * inv);
        if (c0 == 0) p.lse[(long long)bh * T + t] = l[i] > 0.0f ? m[i] + logf(l[i]) : INFINITY;
    }
}

template <int D>
static constexpr int memeff_dkv_smem() {
    return ((2 * MemeffTraits::Rows + 2 * MemeffTraits::Cols) * (D + 1) +
            2 * MemeffTraits::Rows * (MemeffTraits::Cols + 1) + 2 * MemeffTraits::Cols) * 4;
}

/* dK, dV for 32 keys of K/V head g: rows of the tiles are keys, columns queries; the query heads
 * of g's group one after another. X: also dbias (this block owns keys [k0, k0 + 32) of (b, g)). */
template <typename E, int D, bool X, bool CAUSAL>
__global__ void __launch_bounds__(MemeffTraits::kThreads) memeff_dkv_kernel(AttnParams<E> p) {
    constexpr int R = MemeffTraits::Rows, C = MemeffTraits::Cols, ND = D / 16;
    extern __shared__ float smem_f[];
    float *sK = smem_f, *sV = sK + R * (D + 1), *sQ = sV + R * (D + 1), *sdO = sQ + C * (D + 1);
    float *sP = sdO + C * (D + 1), *sdS = sP + R * (C + 1), *sL = sdS + R * (C + 1), *sD = sL + C;
    const int bg = attn_block_head(), b = bg / p.Hkv, g = bg % p.Hkv, k0 = attn_block_tile(false) * R;
    const int T = p.T, r0 = (threadIdx.x / 16) * 4, c0 = threadIdx.x % 16;
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)g * D;

    load_rows_f32<E, R, D>(sK, p.k + kvhead, p.ld_qkv, k0, T);
    load_rows_f32<E, R, D>(sV, p.v + kvhead, p.ld_qkv, k0, T);
    float dk[4][ND], dv[4][ND];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < ND; j++) dk[i][j] = dv[i][j] = 0.0f;
    const bool causal = X ? CAUSAL : p.kind == ATTN_MASK_CAUSAL;
    /* the query tiles [q_begin, q_end) that meet these keys (the same for every head) */
    int q_begin = causal ? (k0 / C) * C : 0, q_end = T;
    if (X) {
        int lo = 0, hi;
        memeff_live<X, CAUSAL>(p, b, k0, min(k0 + R, T), C, (T + C - 1) / C, false, lo, hi);
        q_begin = lo * C;
        q_end = min(T, hi * C);
    }
    const bool atomic = X && p.dbias_atomic;
    for (int h = g * p.group; h < (g + 1) * p.group; h++) {
        const long long qhead = (long long)b * T * p.ld_qkv + (long long)h * D;
        const long long ohead = (long long)b * T * p.ld_o + (long long)h * D;
        const long long bh = (long long)b * p.H + h;
        MemeffRowX rx = {};
        if (X) rx = memeff_row_x(p, b, h);
        const bool key_sums = X && rx.dbias && rx.stride_row == 0; /* dbias[b, h, key] = sum over queries */
        float ksum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int q0 = q_begin; q0 < q_end; q0 += C) {
            load_rows_f32<E, C, D>(sQ, p.q + qhead, p.ld_qkv, q0, T);
            load_rows_f32<E, C, D>(sdO, p.dout + ohead, p.ld_o, q0, T);
            for (int x = threadIdx.x; x < C; x += MemeffTraits::kThreads) {
                int t = q0 + x;
                sL[x] = t < T ? p.lse[bh * T + t] : INFINITY;
                sD[x] = t < T ? p.dvec[bh * T + t] : 0.0f;
            }
            __syncthreads();
            const bool full = X && flash_tile_full<CAUSAL>(p.x, b, T, q0, q0 + C, k0, k0 + R);
            float st[4][4], dpt[4][4];
            tile_abt<D>(st, sK, sQ);
            tile_abt<D>(dpt, sV, sdO);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    int c = c0 + 16 * j, query = q0 + c, key = k0 + r0 + i;
                    float s = masked_score<X, CAUSAL>(p, rx, st[i][j], b, h, query, key, full);
                    float pv = __expf(s - sL[c]), ds = pv * (dpt[i][j] - sD[c]);
                    sP[(r0 + i) * (C + 1) + c] = pv;
                    sdS[(r0 + i) * (C + 1) + c] = ds;
                    /* pv != 0 only for a visible pair inside [0, T) (L = +inf for rows >= T) */
                    if (X && rx.dbias && pv != 0.0f && query < T && key < T) {
                        if (key_sums) ksum[i] += ds;
                        else memeff_add_dbias(rx.dbias + (long long)query * rx.stride_row + key, ds, atomic);
                    }
                }
            __syncthreads();
            tile_ab<D>(dv, sP, sdO);
            tile_ab<D>(dk, sdS, sQ);
            __syncthreads();
        }
        if (key_sums) { /* uniform over the block: every lane takes part in the shuffles */
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float v = row_sum16(ksum[i]);
                int key = k0 + r0 + i;
                if (c0 == 0 && key < T) memeff_add_dbias(rx.dbias + key, v, atomic);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int t = k0 + r0 + i;
        if (t >= T) continue;
        long long off = kvhead + (long long)t * p.ld_qkv;
#pragma unroll
        for (int j = 0; j < ND; j++) {
            p.dk[off + c0 + 16 * j] = from_float<E>(dk[i][j] * p.scale);
            p.dv[off + c0 + 16 * j] = from_float<E>(dv[i][j]);
        }
    }
}

template <int D>
static constexpr int memeff_dq_smem() {
    return ((2 * MemeffTraits::Rows + 2 * MemeffTraits::Cols) * (D + 1) +
            MemeffTraits::Rows * (MemeffTraits::Cols + 1)) * 4;
}

/* dQ for 32 queries: rows are queries, columns keys. */
template <typename E, int D, bool X, bool CAUSAL>
__global__ void __launch_bounds__(MemeffTraits::kThreads) memeff_dq_kernel(AttnParams<E> p) {
    constexpr int R = MemeffTraits::Rows, C = MemeffTraits::Cols, ND = D / 16;
    extern __shared__ float smem_f[];
    float *sQ = smem_f, *sdO = sQ + R * (D + 1), *sK = sdO + R * (D + 1), *sV = sK + C * (D + 1);
    float *sdS = sV + C * (D + 1);
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H, hk = h / p.group;
    const int q0 = attn_block_tile(true) * R;
    const int T = p.T, r0 = (threadIdx.x / 16) * 4, c0 = threadIdx.x % 16;
    const long long qhead = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)hk * D;
    const long long ohead = (long long)b * T * p.ld_o + (long long)h * D;
    MemeffRowX rx = {};
    if (X) rx = memeff_row_x(p, b, h);

    load_rows_f32<E, R, D>(sQ, p.q + qhead, p.ld_qkv, q0, T);
    load_rows_f32<E, R, D>(sdO, p.dout + ohead, p.ld_o, q0, T);
    float L[4], Dv[4], dq[4][ND];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int t = q0 + r0 + i;
        L[i] = t < T ? p.lse[(long long)bh * T + t] : INFINITY;
        Dv[i] = t < T ? p.dvec[(long long)bh * T + t] : 0.0f;
#pragma unroll
        for (int j = 0; j < ND; j++) dq[i][j] = 0.0f;
    }
    const bool causal = X ? CAUSAL : p.kind == ATTN_MASK_CAUSAL;
    int k_begin = 0, k_end = causal ? min(T, q0 + R) : T;
    if (X) { /* only the key tiles some pair of the block sees */
        int lo = 0, hi;
        memeff_live<X, CAUSAL>(p, b, q0, min(q0 + R, T), C, (k_end + C - 1) / C, true, lo, hi);
        k_begin = lo * C;
        k_end = min(k_end, hi * C);
    }
    for (int k0 = k_begin; k0 < k_end; k0 += C) {
        load_rows_f32<E, C, D>(sK, p.k + kvhead, p.ld_qkv, k0, T);
        load_rows_f32<E, C, D>(sV, p.v + kvhead, p.ld_qkv, k0, T);
        __syncthreads();
        const bool full = X && flash_tile_full<CAUSAL>(p.x, b, T, q0, q0 + R, k0, k0 + C);
        float s[4][4], dp[4][4];
        tile_abt<D>(s, sQ, sK);
        tile_abt<D>(dp, sdO, sV);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float sc = masked_score<X, CAUSAL>(p, rx, s[i][j], b, h, q0 + r0 + i, k0 + c0 + 16 * j, full);
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
        E *row = p.dq + qhead + (long long)t * p.ld_qkv;
#pragma unroll
        for (int j = 0; j < ND; j++) row[c0 + 16 * j] = from_float<E>(dq[i][j] * p.scale);
    }
}

/* ---- on tensor cores: one skeleton, two operand policies ------------------------------------ */
/* Ops: MmaOps16<bf16 | fp16> (mma.sync m16n8k16, mma_bf16.cuh) or MmaOpsTf32 (fp32 tiles, m16n8k8
 * on TF32, mma_tf32.cuh). The skeleton owns the algorithm (tiles, pipeline, mask, softmax, dbias,
 * epilogues); the policy owns the element type, smem row strides, row loads (and TF32's rounding
 * of a loaded tile) and the warp products. */
#include "attention/mma_tf32.cuh"

template <class Ops, int D_> struct MemeffTcTraits {
    using Elem = typename Ops::Elem;
    static constexpr int D = D_;
    /* fp32 tiles are twice the 16-bit ones: at D = 128, 8 warps of 16 rows keep 8 warps per SM
     * within the smem (about 104-208 KB a block) */
    static constexpr int kWarps = sizeof(Elem) == 4 && D_ == 128 ? 8 : 4;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int Rows = 16 * kWarps;          /* the block's own queries or keys */
    static constexpr int Cols = D_ == 128 ? 32 : 64;  /* streamed keys or queries per tile */
    static constexpr int kStrideA = Ops::template stride_a<D_>(), kStrideB = Ops::template stride_b<D_>();
    static constexpr int KS = D_ / Ops::kK;           /* k steps over D */
    static constexpr int KC = Cols / Ops::kK;         /* k steps over a streamed tile */
    static constexpr int kElemBytes = sizeof(Elem);
    static constexpr int kFwdSmem = (Rows * kStrideA + 2 * Cols * kStrideA + 2 * Cols * kStrideB) * kElemBytes;
    static constexpr int kDkvSmem = (2 * Rows * kStrideA + 2 * 2 * Cols * kStrideB) * kElemBytes + 2 * 2 * Cols * 4;
    static constexpr int kDqSmem = (2 * Rows * kStrideA + 2 * Cols * kStrideB + 2 * Cols * kStrideA) * kElemBytes;
};

/* The X kernels' mask on one 16 x (8 NT) score block in log2 units (rows from row0, columns from
 * col0, global indices; keys_are_rows: the rows are keys, the columns queries): -inf where
 * memeff_dead (not tested when `full`: every pair visible), else + log2(e) (bias - slope |i - j|). */
template <int NT, bool CAUSAL>
__device__ __forceinline__ void memeff_mask_frag(float s[][4], const MemeffRowX &r, int T, int row0, int col0,
                                                 bool keys_are_rows, bool full) {
    if (full && !r.bias && r.slope == 0.0f) return;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const auto [query, key] = score_pos(row0, col0, nt, e, keys_are_rows);
            if (!full && memeff_dead<CAUSAL>(r, T, query, key)) s[nt][e] = -INFINITY;
            else s[nt][e] += LOG2E_F * memeff_bias_x(r, query, key);
        }
}

/* Forward: one block per 64 queries; as flash's forward with MT = 1 plus the dense bias.
 * X = false: MASK is the kind (DENSE: the constant bias); X = true: MASK is CAUSAL or NONE. */
template <class Ops, int D, int MASK, bool X>
__global__ void __launch_bounds__(MemeffTcTraits<Ops, D>::kThreads) memeff_tc_forward_kernel(AttnParams<typename Ops::Elem> p) {
    using Tr = MemeffTcTraits<Ops, D>;
    using E = typename Ops::Elem;
    constexpr int R = Tr::Rows, C = Tr::Cols, SA = Tr::kStrideA, SB = Tr::kStrideB, NT = C / 8, ND = D / 8;
    constexpr int TH = Tr::kThreads;
    constexpr bool CAUSAL = MASK == ATTN_MASK_CAUSAL;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    E *sQ = (E *)smem_raw, *sK = sQ + R * SA, *sV = sK + 2 * C * SA;
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H, hk = h / p.group;
    const int q0 = attn_block_tile(true) * R;
    const int warp = threadIdx.x / 32, T = p.T;
    const long long qhead = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)hk * D;
    const E *gq = p.q + qhead, *gk = p.k + kvhead, *gv = p.v + kvhead;
    const float scale_log2 = p.scale * LOG2E_F;
    int n_tiles = (T + C - 1) / C, j_lo = 0;
    if (CAUSAL) n_tiles = min(n_tiles, (min(q0 + R, T) + C - 1) / C);
    memeff_live<X, CAUSAL>(p, b, q0, min(q0 + R, T), C, n_tiles, true, j_lo, n_tiles);
    MemeffRowX rx = {};
    if (X) rx = memeff_row_x(p, b, h);
    const MaskDev md = attn_mask_dev(p); /* X = false: the kind and a DENSE bias */
    /* X = false, DENSE: the bias of each tile is read ahead of its MMA (bias_frag_load) */
    constexpr bool kPre = !X && MASK == ATTN_MASK_DENSE;
    const float *bias_head = kPre ? md.bias + (long long)b * md.stride_b + (long long)h * md.stride_h : nullptr;

    Ops::template load_rows<R, D, TH, SA>(sQ, gq, p.ld_qkv, q0, T);
    Ops::template load_rows<C, D, TH, SA>(sK, gk, p.ld_qkv, j_lo * C, T);
    Ops::template load_rows<C, D, TH, SB>(sV, gv, p.ld_qkv, j_lo * C, T);
    cp_async_commit();
    uint32_t qf[Tr::KS][4];
    float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dt = 0; dt < ND; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    const int row0 = q0 + warp * 16;
    for (int j = j_lo; j < n_tiles; j++) {
        const int stage = (j - j_lo) & 1;
        if (j + 1 < n_tiles) {
            Ops::template load_rows<C, D, TH, SA>(sK + (stage ^ 1) * C * SA, gk, p.ld_qkv, (j + 1) * C, T);
            Ops::template load_rows<C, D, TH, SB>(sV + (stage ^ 1) * C * SB, gv, p.ld_qkv, (j + 1) * C, T);
        }
        cp_async_commit();
        float bfr[NT][4];
        if constexpr (kPre) bias_frag_load<NT>(bfr, bias_head, md.stride_row, row0, j * C, T, false);
        cp_async_wait<1>();
        E *k_t = sK + stage * C * SA, *v_t = sV + stage * C * SB;
        if (j == j_lo) Ops::template round_rows<R, D, TH, SA>(sQ);
        Ops::template round_rows<C, D, TH, SA>(k_t);
        Ops::template round_rows<C, D, TH, SB>(v_t);
        __syncthreads();
        if (j == j_lo) Ops::load_a(qf, sQ, SA, warp * 16);
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        Ops::mma_abt(s, qf, k_t, SA);
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
        const int col0 = j * C;
        if (X)
            memeff_mask_frag<NT, CAUSAL>(s, rx, T, row0, col0, false,
                                         flash_tile_full<CAUSAL>(p.x, b, T, row0, row0 + 16, col0, col0 + C));
        else if (kPre || col0 + C > T || (CAUSAL && col0 + C - 1 > row0))
            mask_tile<NT, MASK>(s, row0, col0, T, false, bfr);
        online_softmax_step<NT, ND>(s, o, m, l);
        uint32_t pf[Tr::KC][4];
        Ops::acc_to_a(pf, s);
        Ops::mma_ab(o, pf, v_t, SB);
        __syncthreads();
    }
    cp_async_wait<0>();
    store_o_and_lse<ND>(p.out + (long long)b * T * p.ld_o + (long long)h * D, p.ld_o,
                        p.lse + (long long)bh * T, o, m, l, row0, T);
}

/* Loads query tile rows [q0, q0 + C) of Q and dO, and their L and D, into one stage. */
template <class Ops, int D, int ROWS, int THREADS, int STRIDE, typename E>
__device__ __forceinline__ void load_query_side(E *sQ, E *sdO, float *sL, float *sD,
                                                const AttnParams<E> &p, long long head,
                                                long long ohead, long long bh, int q0) {
    Ops::template load_rows<ROWS, D, THREADS, STRIDE>(sQ, p.q + head, p.ld_qkv, q0, p.T);
    Ops::template load_rows<ROWS, D, THREADS, STRIDE>(sdO, p.dout + ohead, p.ld_o, q0, p.T);
    for (int x = threadIdx.x; x < ROWS; x += THREADS) {
        int t = q0 + x;
        bool ok = t < p.T;
        cp_async_4(sL + x, p.lse + bh * p.T + (ok ? t : 0), ok);
        cp_async_4(sD + x, p.dvec + bh * p.T + (ok ? t : 0), ok);
    }
}

/* dK, dV for 64 keys of K/V head g (16 per warp, the MMA rows); the query tiles of the group's
 * query heads streamed one after another, (head, tile) pairs in one double-buffered sequence:
 *   S^T = K Q^T, P^T = 2^(S^T - L), dP^T = V dO^T, dS^T = P^T (dP^T - D);
 *   dV += P^T dO, dK += dS^T Q, all in registers. X: dbias += dS (this block owns its keys). */
template <class Ops, int D, int MASK, bool X>
__global__ void __launch_bounds__(MemeffTcTraits<Ops, D>::kThreads) memeff_tc_dkv_kernel(AttnParams<typename Ops::Elem> p) {
    using Tr = MemeffTcTraits<Ops, D>;
    using E = typename Ops::Elem;
    constexpr int R = Tr::Rows, C = Tr::Cols, SA = Tr::kStrideA, SB = Tr::kStrideB, NQ = C / 8, ND = D / 8;
    constexpr int TH = Tr::kThreads;
    constexpr bool CAUSAL = MASK == ATTN_MASK_CAUSAL;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    E *sK = (E *)smem_raw, *sV = sK + R * SA, *sQ = sV + R * SA, *sdO = sQ + 2 * C * SB;
    float *sL = (float *)(sdO + 2 * C * SB), *sD = sL + 2 * C;
    const int bg = attn_block_head(), b = bg / p.Hkv, g_kv = bg % p.Hkv, k0 = attn_block_tile(false) * R;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, T = p.T;
    const int g = lane >> 2, c = 2 * (lane & 3);
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)g_kv * D;
    const long long qbase = (long long)b * T * p.ld_qkv, obase = (long long)b * T * p.ld_o;
    const float scale_log2 = p.scale * LOG2E_F;
    int m_first = CAUSAL ? k0 / C : 0, m_end = (T + C - 1) / C;
    memeff_live<X, CAUSAL>(p, b, k0, min(k0 + R, T), C, m_end, false, m_first, m_end);
    const int h_first = g_kv * p.group, total = p.group * (m_end - m_first); /* (head, tile) pairs */
    const bool atomic = X && p.dbias_atomic;
    const MaskDev md = attn_mask_dev(p); /* X = false: the kind and a DENSE bias */
    /* X = false, DENSE: the bias of each tile is read ahead of its MMA (bias_frag_load) */
    constexpr bool kPre = !X && MASK == ATTN_MASK_DENSE;

    Ops::template load_rows<R, D, TH, SA>(sK, p.k + kvhead, p.ld_qkv, k0, T);
    Ops::template load_rows<R, D, TH, SA>(sV, p.v + kvhead, p.ld_qkv, k0, T);
    if (total > 0)
        load_query_side<Ops, D, C, TH, SB>(sQ, sdO, sL, sD, p, qbase + (long long)h_first * D,
                                            obase + (long long)h_first * D, (long long)b * p.H + h_first,
                                            m_first * C);
    cp_async_commit();
    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int dt = 0; dt < ND; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.0f;
    const int key_row0 = k0 + warp * 16;
    float ksum[2] = {0.0f, 0.0f}; /* X, stride_row = 0: this thread's part of keys g, g + 8 */
    int h = h_first, mi = m_first;
    for (int it = 0; it < total; it++) {
        const int stage = it & 1;
        int nh = h, nmi = mi + 1; /* the next pair; nmi == m_first: head h ends with this tile */
        if (nmi == m_end) { nmi = m_first; nh++; }
        if (it + 1 < total)
            load_query_side<Ops, D, C, TH, SB>(sQ + (stage ^ 1) * C * SB, sdO + (stage ^ 1) * C * SB,
                                                sL + (stage ^ 1) * C, sD + (stage ^ 1) * C, p,
                                                qbase + (long long)nh * D, obase + (long long)nh * D,
                                                (long long)b * p.H + nh, nmi * C);
        cp_async_commit();
        float bfr[NQ][4];
        if constexpr (kPre)
            bias_frag_load<NQ>(bfr, md.bias + (long long)b * md.stride_b + (long long)h * md.stride_h, md.stride_row,
                               key_row0, mi * C, T, true);
        cp_async_wait<1>();
        E *q_t = sQ + stage * C * SB, *do_t = sdO + stage * C * SB;
        if (it == 0) {
            Ops::template round_rows<R, D, TH, SA>(sK);
            Ops::template round_rows<R, D, TH, SA>(sV);
        }
        Ops::template round_rows<C, D, TH, SB>(q_t);
        Ops::template round_rows<C, D, TH, SB>(do_t);
        __syncthreads();
        const float *L_t = sL + stage * C, *D_t = sD + stage * C;
        float st[NQ][4], dpt[NQ][4];
        Ops::template mma_pair<Tr::KS, SA, SB, SB>(st, dpt, sK, sV, q_t, do_t, warp * 16);
#pragma unroll
        for (int nt = 0; nt < NQ; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[nt][e] *= scale_log2;
        const int q0 = mi * C;
        MemeffRowX rx = {};
        if (X) {
            rx = memeff_row_x(p, b, h);
            memeff_mask_frag<NQ, CAUSAL>(st, rx, T, key_row0, q0, true,
                                         flash_tile_full<CAUSAL>(p.x, b, T, q0, q0 + C, key_row0, key_row0 + 16));
        } else if (kPre || q0 + C > T || key_row0 + 16 > T || (CAUSAL && key_row0 + 15 > q0)) {
            mask_tile<NQ, MASK>(st, key_row0, q0, T, true, bfr);
        }
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
        if (X && rx.dbias) {
            /* dS (fp32, before rounding to E) into dbias; pv != 0 only for a visible pair inside
             * [0, T) (rows >= T load L = 0 and are masked to -inf; masked pairs give 0). */
            const bool key_sums = rx.stride_row == 0;
#pragma unroll
            for (int nt = 0; nt < NQ; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const auto [query, key] = score_pos(key_row0, q0, nt, e, true);
                    if (st[nt][e] != 0.0f && key < T && query < T) {
                        if (key_sums) ksum[e >> 1] += dpt[nt][e];
                        else memeff_add_dbias(rx.dbias + (long long)query * rx.stride_row + key, dpt[nt][e], atomic);
                    }
                }
            if (key_sums && nmi == m_first) { /* head h's last tile: warp-uniform */
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    float v = quad_sum(ksum[half]);
                    ksum[half] = 0.0f;
                    int key = key_row0 + g + 8 * half;
                    if ((lane & 3) == 0 && key < T) memeff_add_dbias(rx.dbias + key, v, atomic);
                }
            }
        }
        uint32_t pf[Tr::KC][4], dsf[Tr::KC][4];
        Ops::acc_to_a(pf, st);
        Ops::acc_to_a(dsf, dpt);
        Ops::mma_ab2(dv, pf, do_t, dk, dsf, q_t, SB);
        __syncthreads(); /* this stage is reloaded two tiles on */
        h = nh;
        mi = nmi;
    }
    cp_async_wait<0>();
    store_dk_dv<ND, E>(p, kvhead, dk, dv, key_row0, g, c, T);
}

/* dQ for 64 queries (16 per warp, the MMA rows), key tiles streamed:
 *   S = Q K^T, P = 2^(S - L), dP = dO V^T, dS = P (dP - D), dQ += dS K in registers. */
template <class Ops, int D, int MASK, bool X>
__global__ void __launch_bounds__(MemeffTcTraits<Ops, D>::kThreads) memeff_tc_dq_kernel(AttnParams<typename Ops::Elem> p) {
    using Tr = MemeffTcTraits<Ops, D>;
    using E = typename Ops::Elem;
    constexpr int R = Tr::Rows, C = Tr::Cols, SA = Tr::kStrideA, SB = Tr::kStrideB, NT = C / 8, ND = D / 8;
    constexpr int TH = Tr::kThreads;
    constexpr bool CAUSAL = MASK == ATTN_MASK_CAUSAL;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    /* K is read as B^T (S = Q K^T) and as B (dQ += dS K): stride_b; V as B^T only */
    E *sQ = (E *)smem_raw, *sdO = sQ + R * SA, *sK = sdO + R * SA, *sV = sK + 2 * C * SB;
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H, hk = h / p.group;
    const int q0 = attn_block_tile(true) * R;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, T = p.T;
    const int g = lane >> 2;
    const long long qhead = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)hk * D;
    const long long ohead = (long long)b * T * p.ld_o + (long long)h * D;
    const E *gk = p.k + kvhead, *gv = p.v + kvhead;
    const float scale_log2 = p.scale * LOG2E_F;
    int n_tiles = (T + C - 1) / C, j_lo = 0;
    if (CAUSAL) n_tiles = min(n_tiles, (min(q0 + R, T) + C - 1) / C);
    memeff_live<X, CAUSAL>(p, b, q0, min(q0 + R, T), C, n_tiles, true, j_lo, n_tiles);
    MemeffRowX rx = {};
    if (X) rx = memeff_row_x(p, b, h);
    const MaskDev md = attn_mask_dev(p); /* X = false: the kind and a DENSE bias */
    /* X = false, DENSE: the bias of each tile is read ahead of its MMA (bias_frag_load) */
    constexpr bool kPre = !X && MASK == ATTN_MASK_DENSE;
    const float *bias_head = kPre ? md.bias + (long long)b * md.stride_b + (long long)h * md.stride_h : nullptr;

    Ops::template load_rows<R, D, TH, SA>(sQ, p.q + qhead, p.ld_qkv, q0, T);
    Ops::template load_rows<R, D, TH, SA>(sdO, p.dout + ohead, p.ld_o, q0, T);
    Ops::template load_rows<C, D, TH, SB>(sK, gk, p.ld_qkv, j_lo * C, T);
    Ops::template load_rows<C, D, TH, SA>(sV, gv, p.ld_qkv, j_lo * C, T);
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
    for (int j = j_lo; j < n_tiles; j++) {
        const int stage = (j - j_lo) & 1;
        if (j + 1 < n_tiles) {
            Ops::template load_rows<C, D, TH, SB>(sK + (stage ^ 1) * C * SB, gk, p.ld_qkv, (j + 1) * C, T);
            Ops::template load_rows<C, D, TH, SA>(sV + (stage ^ 1) * C * SA, gv, p.ld_qkv, (j + 1) * C, T);
        }
        cp_async_commit();
        float bfr[NT][4];
        if constexpr (kPre) bias_frag_load<NT>(bfr, bias_head, md.stride_row, row0, j * C, T, false);
        cp_async_wait<1>();
        E *k_t = sK + stage * C * SB, *v_t = sV + stage * C * SA;
        if (j == j_lo) {
            Ops::template round_rows<R, D, TH, SA>(sQ);
            Ops::template round_rows<R, D, TH, SA>(sdO);
        }
        Ops::template round_rows<C, D, TH, SB>(k_t);
        Ops::template round_rows<C, D, TH, SA>(v_t);
        __syncthreads();
        float s[NT][4], dp[NT][4];
        Ops::template mma_pair<Tr::KS, SA, SB, SA>(s, dp, sQ, sdO, k_t, v_t, warp * 16);
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
        const int col0 = j * C;
        if (X)
            memeff_mask_frag<NT, CAUSAL>(s, rx, T, row0, col0, false,
                                         flash_tile_full<CAUSAL>(p.x, b, T, row0, row0 + 16, col0, col0 + C));
        else if (kPre || col0 + C > T || row0 + 16 > T || (CAUSAL && col0 + C - 1 > row0))
            mask_tile<NT, MASK>(s, row0, col0, T, false, bfr);
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float pv = exp2f(s[nt][e] - L2[e >> 1]);
                dp[nt][e] = pv * (dp[nt][e] - Dv[e >> 1]);
            }
        uint32_t dsf[Tr::KC][4];
        Ops::acc_to_a(dsf, dp);
        Ops::mma_ab(dq, dsf, k_t, SB);
        __syncthreads();
    }
    cp_async_wait<0>();
    const int c = 2 * (lane & 3);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int t = row0 + g + 8 * half;
        if (t < T) {
            E *row = p.dq + qhead + (long long)t * p.ld_qkv + c;
#pragma unroll
            for (int dt = 0; dt < ND; dt++) store2<E>(row + dt * 8, dq[dt][2 * half] * p.scale, dq[dt][2 * half + 1] * p.scale);
        }
    }
}

/* ---- host side ------------------------------------------------------------------------------ */

/* Launches a tiled kernel over (tiles of `rows` rows of T, `heads`) blocks: the query heads B*H
 * (forward, dQ) or the K/V heads B*Hkv (dKV). */
template <typename E>
static int memeff_launch(void (*kernel)(AttnParams<E>), const AttnShape *s, int rows, long long heads, int threads,
                         int smem, const AttnParams<E> &p, cudaStream_t st) {
    ATTN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid((unsigned)((s->T + rows - 1) / rows), (unsigned)heads);
    kernel<<<grid, threads, smem, st>>>(p);
    ATTN_LAUNCH_CHECK();
    return 0;
}
static long long memeff_q_heads(const AttnShape *s) { return (long long)s->B * s->H; }
static long long memeff_kv_heads(const AttnShape *s) { return (long long)s->B * attn_kv_heads(s); }

/* The kernels' parameters (attn_params) and where blocks share dbias entries: blocks are (key
 * tile, b, K/V head), so only across a broadcast b or a head stride of 0 between K/V heads (a
 * group's heads run in one block, in order). */
template <typename E> static AttnParams<E> memeff_params(const AttnShape *s, const AttnIO &io) {
    AttnParams<E> p = attn_params<E>(s, io);
    const AttnMask *m = &s->mask;
    p.dbias_atomic = (m->stride_b == 0 && s->B > 1) || (m->stride_h == 0 && attn_kv_heads(s) > 1);
    return p;
}

/* The tensor-core policy of an element type: 16-bit MMA for bf16 / fp16, TF32 for fp32. */
template <typename E> struct MemeffOps { using type = MmaOps16<E>; };
template <> struct MemeffOps<float> { using type = MmaOpsTf32; };

template <typename E, int D, int MASK, bool X>
static int memeff_tc_launch_forward(const AttnShape *s, const AttnIO &io, cudaStream_t st) {
    using Ops = typename MemeffOps<E>::type;
    using Tr = MemeffTcTraits<Ops, D>;
    const AttnParams<E> p = memeff_params<E>(s, io);
    return memeff_launch(memeff_tc_forward_kernel<Ops, D, MASK, X>, s, Tr::Rows, memeff_q_heads(s), Tr::kThreads,
                         Tr::kFwdSmem, p, st);
}

template <typename E, int D, int MASK, bool X>
static int memeff_tc_launch_backward(const AttnShape *s, const AttnIO &io, cudaStream_t st) {
    using Ops = typename MemeffOps<E>::type;
    using Tr = MemeffTcTraits<Ops, D>;
    const AttnParams<E> p = memeff_params<E>(s, io);
    attn_rowdot<E, D>(p.o, p.dout, p.ld_o, s->B, p.T, p.H, p.dvec, nullptr, attn_rowdot_vec<E>(p.o, p.dout, p.ld_o), st);
    ATTN_LAUNCH_CHECK();
    int rc = memeff_launch(memeff_tc_dkv_kernel<Ops, D, MASK, X>, s, Tr::Rows, memeff_kv_heads(s), Tr::kThreads,
                           Tr::kDkvSmem, p, st);
    return rc ? rc : memeff_launch(memeff_tc_dq_kernel<Ops, D, MASK, X>, s, Tr::Rows, memeff_q_heads(s), Tr::kThreads,
                                   Tr::kDqSmem, p, st);
}

/* Calls F<E, D, MASK, X> for element type E, the shape's head dimension, mask kind and X (the
 * mask family beyond kind + constant DENSE bias; X reads a DENSE kind's bias at run time, so it
 * runs as NONE). */
#define MEMEFF_TC_DISPATCH_D(F, E, MASK, X, s, ...)                                          \
    ((s)->D == 32 ? F<E, 32, MASK, X>(__VA_ARGS__)                                           \
     : (s)->D == 64 ? F<E, 64, MASK, X>(__VA_ARGS__) : F<E, 128, MASK, X>(__VA_ARGS__))
#define MEMEFF_TC_DISPATCH_E(F, E, x, s, ...)                                                \
    ((x) ? ((s)->mask.kind == ATTN_MASK_CAUSAL ? MEMEFF_TC_DISPATCH_D(F, E, ATTN_MASK_CAUSAL, true, s, __VA_ARGS__) \
                                              : MEMEFF_TC_DISPATCH_D(F, E, ATTN_MASK_NONE, true, s, __VA_ARGS__)) \
     : (s)->mask.kind == ATTN_MASK_CAUSAL ? MEMEFF_TC_DISPATCH_D(F, E, ATTN_MASK_CAUSAL, false, s, __VA_ARGS__) \
     : (s)->mask.kind == ATTN_MASK_DENSE ? MEMEFF_TC_DISPATCH_D(F, E, ATTN_MASK_DENSE, false, s, __VA_ARGS__) \
     : MEMEFF_TC_DISPATCH_D(F, E, ATTN_MASK_NONE, false, s, __VA_ARGS__))
/* memeff_use_tc has checked the dtype: bf16 or fp16. */
#define MEMEFF_TC_DISPATCH(F, x, s, ...)                                                     \
    ((s)->dtype == ATTN_FP16 ? MEMEFF_TC_DISPATCH_E(F, fp16, x, s, __VA_ARGS__)             \
                             : MEMEFF_TC_DISPATCH_E(F, bf16, x, s, __VA_ARGS__))

/* The 16-bit dtypes with 16-byte aligned pointers and leading dimensions run on tensor cores. */
static bool memeff_use_tc(const AttnShape *s, const void *const *ptrs, int n) {
    if (s->dtype != ATTN_BF16 && s->dtype != ATTN_FP16) return false;
    if (s->ld_qkv % 8 || s->ld_o % 8) return false;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] & 15) return false;
    return true;
}

/* fp32 with TF32 allowed runs on TF32 tensor cores, given 16-byte aligned pointers and leading
 * dimensions that are multiples of 4 (cp.async copies 4 floats); otherwise (unaligned) the exact
 * CUDA-core kernels run it: the only fallback, every mask piece and GQA run on both. */
static bool memeff_use_tf32(const AttnShape *s, const void *const *ptrs, int n) {
    if (s->dtype != ATTN_FP32 || !s->tf32) return false;
    if (s->ld_qkv % 4 || s->ld_o % 4) return false;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptrs[i] & 15) return false;
    return true;
}

/* The X kernels run the shape: forward for a window, documents, key padding, ALiBi or a bias with
 * CAUSAL / NONE; backward for those or a bias gradient (attn_mask_has_extras). */
static bool memeff_x_forward(const AttnShape *s) {
    return flash_mask_has_extras(s) || (s->mask.bias && s->mask.kind != ATTN_MASK_DENSE);
}
static bool memeff_x_backward(const AttnShape *s) { return attn_mask_has_extras(&s->mask) != 0; }

/* Everything attention.h allows, except what the kernels were not built for (the head
 * dimensions, the grid's y limit). `doc` is a device array, so that it never decreases within a
 * sequence (attention.h) is the caller's promise, not checked here. */
static const char *memeff_unsupported(const AttnShape *s) {
    const char *why = attn_shape_basics(s);
    if (why) return why;
    const AttnMask *m = &s->mask;
    if (s->D != 32 && s->D != 64 && s->D != 128) return "memeff: head dimension must be 32, 64 or 128";
    if ((long long)s->B * s->H > kAttnMaxHeads) return "memeff: B * H > 65535";
    if (s->Hkv < 0 || s->H % attn_kv_heads(s)) return "memeff: Hkv must divide H";
    if (!isfinite(s->scale)) return "memeff: scale must be finite";
    if (m->bias && (m->stride_b < 0 || m->stride_h < 0 || m->stride_row < 0))
        return "memeff: bias strides must be >= 0";
    if (m->dbias && !m->bias) return "memeff: a bias gradient needs a bias";
    if (m->window < 0) return "memeff: window must be >= 0";
    return NULL;
}
static size_t memeff_saved_bytes(const AttnShape *s) { return (size_t)attn_rows(s) * 4; }
static size_t memeff_workspace_bytes(const AttnShape *s) { return (size_t)attn_rows(s) * 4; }

template <typename E, int D, bool X, bool CAUSAL>
static int memeff_launch_forward(const AttnShape *s, const AttnIO &io, cudaStream_t st) {
    const AttnParams<E> p = memeff_params<E>(s, io);
    return memeff_launch(memeff_forward_kernel<E, D, X, CAUSAL>, s, MemeffTraits::Rows, memeff_q_heads(s),
                         MemeffTraits::kThreads, memeff_fwd_smem<D>(), p, st);
}

template <typename E, int D, bool X, bool CAUSAL>
static int memeff_launch_backward(const AttnShape *s, const AttnIO &io, cudaStream_t st) {
    const AttnParams<E> p = memeff_params<E>(s, io);
    attn_rowdot<E, D>(p.o, p.dout, p.ld_o, s->B, p.T, p.H, p.dvec, nullptr, attn_rowdot_vec<E>(p.o, p.dout, p.ld_o), st);
    ATTN_LAUNCH_CHECK();
    int rc = memeff_launch(memeff_dkv_kernel<E, D, X, CAUSAL>, s, MemeffTraits::Rows, memeff_kv_heads(s),
                           MemeffTraits::kThreads, memeff_dkv_smem<D>(), p, st);
    return rc ? rc : memeff_launch(memeff_dq_kernel<E, D, X, CAUSAL>, s, MemeffTraits::Rows, memeff_q_heads(s),
                                   MemeffTraits::kThreads, memeff_dq_smem<D>(), p, st);
}

/* Calls F<E, D, X, CAUSAL> for the shape's element type (fp32, bf16 or fp16: attn_shape_basics
 * refuses any other), head dimension and X (X = false reads the kind at run time: CAUSAL false). */
#define MEMEFF_DISPATCH_D(F, E, X, C, s, ...)                                                \
    ((s)->D == 32 ? F<E, 32, X, C>(__VA_ARGS__)                                              \
     : (s)->D == 64 ? F<E, 64, X, C>(__VA_ARGS__) : F<E, 128, X, C>(__VA_ARGS__))
#define MEMEFF_DISPATCH_ED(F, X, C, s, ...)                                                  \
    ((s)->dtype == ATTN_BF16   ? MEMEFF_DISPATCH_D(F, bf16, X, C, s, __VA_ARGS__)            \
     : (s)->dtype == ATTN_FP16 ? MEMEFF_DISPATCH_D(F, fp16, X, C, s, __VA_ARGS__)            \
                               : MEMEFF_DISPATCH_D(F, float, X, C, s, __VA_ARGS__))
#define MEMEFF_DISPATCH(F, x, s, ...)                                                        \
    (!(x) ? MEMEFF_DISPATCH_ED(F, false, false, s, __VA_ARGS__)                              \
     : (s)->mask.kind == ATTN_MASK_CAUSAL ? MEMEFF_DISPATCH_ED(F, true, true, s, __VA_ARGS__) \
     : MEMEFF_DISPATCH_ED(F, true, false, s, __VA_ARGS__))

static int memeff_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o,
                          void *saved, void *workspace, void *stream) {
    const char *why = memeff_unsupported(s);
    if (why) return attn_cuda_fail("memeff forward: %s", why);
    AttnIO io = {};
    io.q = q; io.k = k; io.v = v; io.out = o;
    io.lse = (float *)saved;
    const void *ptrs[] = {q, k, v, o};
    const bool x = memeff_x_forward(s);
    if (memeff_use_tc(s, ptrs, 4)) return MEMEFF_TC_DISPATCH(memeff_tc_launch_forward, x, s, s, io, attn_stream(stream));
    if (memeff_use_tf32(s, ptrs, 4))
        return MEMEFF_TC_DISPATCH_E(memeff_tc_launch_forward, float, x, s, s, io, attn_stream(stream));
    return MEMEFF_DISPATCH(memeff_launch_forward, x, s, s, io, attn_stream(stream));
}

static int memeff_backward(const AttnShape *s, const void *q, const void *k, const void *v,
                           const void *o, const void *dout, const void *saved, void *dq, void *dk,
                           void *dv, void *workspace, void *stream) {
    const char *why = memeff_unsupported(s);
    if (why) return attn_cuda_fail("memeff backward: %s", why);
    AttnIO io = {};
    io.q = q; io.k = k; io.v = v; io.o = o; io.dout = dout;
    io.dq = dq; io.dk = dk; io.dv = dv;
    io.lse = (float *)saved;
    io.dvec = (float *)workspace;
    const void *ptrs[] = {q, k, v, o, dout, dq, dk, dv};
    const bool x = memeff_x_backward(s);
    if (memeff_use_tc(s, ptrs, 8)) return MEMEFF_TC_DISPATCH(memeff_tc_launch_backward, x, s, s, io, attn_stream(stream));
    if (memeff_use_tf32(s, ptrs, 8))
        return MEMEFF_TC_DISPATCH_E(memeff_tc_launch_backward, float, x, s, s, io, attn_stream(stream));
    return MEMEFF_DISPATCH(memeff_launch_backward, x, s, s, io, attn_stream(stream));
}

const AttnImpl attn_memeff_cuda = {ATTN_MEMEFF,        ATTN_CUDA,          memeff_unsupported,
                                   memeff_saved_bytes, memeff_workspace_bytes, memeff_forward,
                                   memeff_backward};
