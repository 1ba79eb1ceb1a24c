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
 * Tile arithmetic: 128 threads; a block's own 32 rows are split in 8 groups of 4 rows
 * (row group = tid / 16), and the streamed 64 columns (or D columns) are dealt round-robin to the
 * 16 threads of a half warp (column = tid % 16 + 16 j), so a row's values live in one half warp
 * and its reductions are 4 shuffles. Smem rows are padded by one float (no bank conflicts).
 */
#include "attention/cuda_common.cuh"

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
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * R; /* causal: heavy tiles first */
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
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H, k0 = blockIdx.y * R;
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
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * R;
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

/* ---- host side ------------------------------------------------------------------------------ */

static const char *memeff_unsupported(const AttnShape *s) {
    const char *why = attn_shape_problem(s);
    if (why) return why;
    if (s->D != 32 && s->D != 64 && s->D != 128) return "memeff: head dimension must be 32, 64 or 128";
    if ((long long)s->B * s->H > 0x7fffffffLL) return "memeff: too many heads";
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
    auto kernel = memeff_forward_kernel<E, D>;
    constexpr int smem = memeff_fwd_smem<D>();
    ATTN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid(s->B * s->H, (s->T + MemeffTraits::Rows - 1) / MemeffTraits::Rows);
    kernel<<<grid, MemeffTraits::kThreads, smem, st>>>(p);
    ATTN_LAUNCH_CHECK();
    return 0;
}

template <typename E, int D>
static int memeff_launch_backward(const AttnShape *s, MemeffParams p, cudaStream_t st) {
    long long rows = attn_rows(s);
    memeff_rowdot_kernel<E><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(p, D, rows);
    ATTN_LAUNCH_CHECK();
    dim3 grid(s->B * s->H, (s->T + MemeffTraits::Rows - 1) / MemeffTraits::Rows);
    auto dkv = memeff_dkv_kernel<E, D>;
    constexpr int smem_dkv = memeff_dkv_smem<D>();
    ATTN_CUDA_TRY(cudaFuncSetAttribute(dkv, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_dkv));
    dkv<<<grid, MemeffTraits::kThreads, smem_dkv, st>>>(p);
    ATTN_LAUNCH_CHECK();
    auto dq = memeff_dq_kernel<E, D>;
    constexpr int smem_dq = memeff_dq_smem<D>();
    ATTN_CUDA_TRY(cudaFuncSetAttribute(dq, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_dq));
    dq<<<grid, MemeffTraits::kThreads, smem_dq, st>>>(p);
    ATTN_LAUNCH_CHECK();
    return 0;
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
    return MEMEFF_DISPATCH(memeff_launch_backward, s, s, p, attn_stream(stream));
}

const AttnImpl attn_memeff_cuda = {ATTN_MEMEFF,        ATTN_CUDA,          memeff_unsupported,
                                   memeff_saved_bytes, memeff_workspace_bytes, memeff_forward,
                                   memeff_backward};
