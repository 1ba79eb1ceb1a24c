/* attention/memeff_tf32.cuh: memeff's fp32 kernels on TF32 tensor cores (AttnShape::tf32 = 1),
 * included by memeff.cu after its shared pieces (MemeffParams, MemeffRowX, memeff_mask_frag,
 * memeff_live, the row-dot kernel). The same three passes and the same mask family as the
 * bf16 / fp16 tensor-core kernels there (forward; backward dK/dV over key blocks, dQ over query
 * blocks; X instantiations for windows, documents, key padding, ALiBi, a bias with any kind and
 * its gradient; GQA), on mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32:
 *   - Q, K, V, dO tiles are copied to smem in fp32 (cp.async, 16 bytes = 4 floats) and rounded
 *     there once to TF32 (cvt.rna.tf32.f32: nearest, ties away; each thread rounds the chunks it
 *     copied, after its cp.async group completed and before the block barrier);
 *   - P and dS (fp32 accumulators) are rounded to TF32 when they become A operands;
 *   - scores, softmax statistics, dP and every accumulator stay fp32; outputs are fp32.
 * So it computes what a plain TF32 attention computes: every product's operands with 11
 * significant bits (unit roundoff 2^-11), fp32 sums (test/gpu/test_attention's tf32 bound).
 *
 * Fragments of m16n8k8 with .tf32 operands (PTX ISA, "Matrix Fragments for mma.m16n8k8"),
 * lane = 4 g + t (g = groupID 0..7, t = threadID_in_group 0..3), one fp32/tf32 value per register:
 *   A (16 x 8, row major)  a0 = (g, t)      a1 = (g + 8, t)   a2 = (g, t + 4)   a3 = (g + 8, t + 4)
 *   B (8 x 8, "col")       b0 = (k = t, n = g)                 b1 = (k = t + 4, n = g)
 *   C (16 x 8, fp32)       c0 = (g, 2t)     c1 = (g, 2t + 1)  c2 = (g + 8, 2t)  c3 = (g + 8, 2t + 1)
 * C is the bf16 m16n8k16 accumulator layout, so acc_pos / score_pos, mask_tile, memeff_mask_frag
 * and online_softmax_step (tc_attention.cuh, memeff.cu) apply unchanged. A and B are not: a lane
 * holds k = t and t + 4, where its accumulator holds columns 2t and 2t + 1. The kernels therefore
 * run each 8-wide k step in the order k -> column tf32_k_col(k) = 2 (k % 4) + k / 4 of the tile
 * (a sum over k does not care about its order, as long as A and B use the same one):
 *   - an accumulator becomes an A fragment without shuffles: a = {c0, c2, c1, c3};
 *   - a lane's A (and B^T) values of one row are two adjacent floats: one 8-byte smem load;
 *   - B read from a row-major [k][n] tile takes rows 2t and 2t + 1 (column n0 + g).
 * tf32_layout::consistent() checks these three statements against the PTX tables above at
 * compile time (static_assert below); the GPU test would catch a wrong table (a transposed B
 * fragment gives O(1) errors on its non-symmetric random data).
 *
 * Tiles: D <= 64: 4 warps, 64 rows per block, 64 streamed columns; D = 128: 8 warps, 128 rows,
 * 32 columns (fp32 tiles are twice the bf16 ones: about 104-208 KB of smem, 2 or 1 blocks and
 * 8 warps per SM). Smem rows: kStrideA = D + 8 floats for tiles read as 8-byte (row g, column
 * 2t) pairs (rows 8 banks apart: conflict-free), kStrideB = D + 4 for tiles read as B of the
 * second product (rows 2t: 8 banks apart) and for the backward's tiles read both ways.
 * Needs 16-byte aligned pointers and leading dimensions that are multiples of 4 (memeff.cu falls
 * back to the exact CUDA-core kernels otherwise).
 */
#ifndef ATTENTION_MEMEFF_TF32_CUH
#define ATTENTION_MEMEFF_TF32_CUH

/* The fragment bookkeeping as host/device constexpr functions, checked once at compile time. */
namespace tf32_layout {
/* PTX's tables (lane = 4 g + t; register i) */
__host__ __device__ constexpr int a_row(int lane, int i) { return lane / 4 + (i & 1) * 8; }
__host__ __device__ constexpr int a_k(int lane, int i) { return lane % 4 + (i >> 1) * 4; }
__host__ __device__ constexpr int b_k(int lane, int i) { return lane % 4 + i * 4; }
__host__ __device__ constexpr int c_row(int lane, int i) { return lane / 4 + (i >> 1) * 8; }
__host__ __device__ constexpr int c_col(int lane, int i) { return 2 * (lane % 4) + (i & 1); }
/* the kernels' order of a k step: the MMA's k -> the tile's column (or row) within the step */
__host__ __device__ constexpr int k_col(int k) { return 2 * (k % 4) + k / 4; }
/* what the loaders below read: register i of an A fragment = tile (row, column) */
__host__ __device__ constexpr int load_a_row(int lane, int i) { return lane / 4 + (i & 1) * 8; }
__host__ __device__ constexpr int load_a_col(int lane, int i) { return 2 * (lane % 4) + (i >> 1); }
/* register i of a B fragment = column (B^T tiles) or row (B tiles) 2t + i of the step */
__host__ __device__ constexpr int load_b_k(int lane, int i) { return 2 * (lane % 4) + i; }
/* an accumulator as an A fragment: a[i] = c[acc_src(i)] */
__host__ __device__ constexpr int acc_src(int i) { return i == 1 ? 2 : i == 2 ? 1 : i; }

constexpr bool consistent() {
    bool seen[8] = {};
    for (int k = 0; k < 8; k++) {
        if (k_col(k) < 0 || k_col(k) > 7 || seen[k_col(k)]) return false; /* a permutation */
        seen[k_col(k)] = true;
    }
    for (int lane = 0; lane < 32; lane++) {
        for (int i = 0; i < 4; i++) {
            /* the A loader reads the element PTX puts in register i, k in our order */
            if (load_a_row(lane, i) != a_row(lane, i) || load_a_col(lane, i) != k_col(a_k(lane, i))) return false;
            /* the accumulator entry moved into register i sits at that row and column */
            const int c = acc_src(i);
            if (c_row(lane, c) != a_row(lane, i) || c_col(lane, c) != k_col(a_k(lane, i))) return false;
        }
        /* registers 0 and 2 (1 and 3) of A are adjacent columns: one 8-byte load per row */
        if (load_a_col(lane, 2) != load_a_col(lane, 0) + 1 || load_a_row(lane, 2) != load_a_row(lane, 0)) return false;
        for (int i = 0; i < 2; i++)
            if (load_b_k(lane, i) != k_col(b_k(lane, i))) return false;
        if (load_b_k(lane, 1) != load_b_k(lane, 0) + 1) return false;
    }
    return true;
}
static_assert(consistent(), "memeff_tf32: fragment loaders disagree with the m16n8k8 tf32 layout");
} // namespace tf32_layout

template <int D_> struct MemeffTf32Traits {
    static constexpr int D = D_;
    static constexpr int kWarps = D_ == 128 ? 8 : 4;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int Rows = 16 * kWarps;          /* the block's own queries or keys */
    static constexpr int Cols = D_ == 128 ? 32 : 64;  /* streamed keys or queries per tile */
    static constexpr int kStrideA = D + 8;            /* floats; see the file comment */
    static constexpr int kStrideB = D + 4;
    static constexpr int kFwdSmem = (Rows * kStrideA + 2 * Cols * kStrideA + 2 * Cols * kStrideB) * 4;
    static constexpr int kDkvSmem = (2 * Rows * kStrideA + 2 * 2 * Cols * kStrideB + 2 * 2 * Cols) * 4;
    static constexpr int kDqSmem = (2 * Rows * kStrideA + 2 * Cols * kStrideB + 2 * Cols * kStrideA) * 4;
};

__device__ __forceinline__ uint32_t tf32_round(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

/* c += a b on one 16 x 8 x 8 tile, tf32 operands, fp32 accumulate. */
__device__ __forceinline__ void mma_1688_tf32(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Rows [row0, row0 + ROWS) of a token-major fp32 head into a smem tile of STRIDE floats per row,
 * 4 floats per cp.async; rows >= T become zeros. */
template <int ROWS, int D, int THREADS, int STRIDE>
__device__ __forceinline__ void tf32_load_rows_async(float *tile, const float *g, long long ld, int row0, int T) {
    constexpr int kChunks = D / 4;
    for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
        int r = c / kChunks, ch = c % kChunks, t = row0 + r;
        bool ok = t < T;
        cp_async_16(tile + r * STRIDE + ch * 4, g + (long long)(ok ? t : 0) * ld + ch * 4, ok);
    }
}
/* Rounds to TF32, in place, the chunks this thread copied with tf32_load_rows_async (same
 * arguments): call after its cp.async group has completed, before the barrier that publishes them. */
template <int ROWS, int D, int THREADS, int STRIDE>
__device__ __forceinline__ void tf32_round_rows(float *tile) {
    constexpr int kChunks = D / 4;
    for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
        float4 *x = (float4 *)(tile + (c / kChunks) * STRIDE + (c % kChunks) * 4);
        float4 v = *x;
        v.x = __uint_as_float(tf32_round(v.x));
        v.y = __uint_as_float(tf32_round(v.y));
        v.z = __uint_as_float(tf32_round(v.z));
        v.w = __uint_as_float(tf32_round(v.w));
        *x = v;
    }
}

/* A fragment of rows [r0, r0 + 16) x the k step [k0, k0 + 8) of a row-major (already rounded)
 * tile: registers (0, 2) and (1, 3) are the adjacent columns k0 + 2t, k0 + 2t + 1 of rows g, g + 8. */
__device__ __forceinline__ void tf32_load_a(uint32_t a[4], const float *tile, int stride, int r0, int k0) {
    using namespace tf32_layout;
    const int lane = threadIdx.x & 31;
    const float2 x = *(const float2 *)(tile + (r0 + load_a_row(lane, 0)) * stride + k0 + load_a_col(lane, 0));
    const float2 y = *(const float2 *)(tile + (r0 + load_a_row(lane, 1)) * stride + k0 + load_a_col(lane, 1));
    a[0] = __float_as_uint(x.x); a[2] = __float_as_uint(x.y);
    a[1] = __float_as_uint(y.x); a[3] = __float_as_uint(y.y);
}
/* B fragment of one n-tile when B = X^T, X row-major [n][k] (K in Q K^T): row n0 + g, columns
 * k0 + 2t, k0 + 2t + 1. */
__device__ __forceinline__ void tf32_load_bt(uint32_t b[2], const float *tile, int stride, int n0, int k0) {
    using namespace tf32_layout;
    const int lane = threadIdx.x & 31;
    const float2 z = *(const float2 *)(tile + (n0 + lane / 4) * stride + k0 + load_b_k(lane, 0));
    b[0] = __float_as_uint(z.x); b[1] = __float_as_uint(z.y);
}
/* B fragment of one n-tile when B = X, X row-major [k][n] (V in P V): rows k0 + 2t, k0 + 2t + 1,
 * column n0 + g. */
__device__ __forceinline__ void tf32_load_b(uint32_t b[2], const float *tile, int stride, int k0, int n0) {
    using namespace tf32_layout;
    const int lane = threadIdx.x & 31;
    const float *x = tile + (k0 + load_b_k(lane, 0)) * stride + n0 + lane / 4;
    b[0] = __float_as_uint(x[0]);
    b[1] = __float_as_uint(x[stride]);
}
/* The TF32 A fragments of a 16 x (8 NT) fp32 accumulator block (k = its columns, our order). */
template <int NT>
__device__ __forceinline__ void tf32_acc_to_a(uint32_t a[][4], const float s[][4]) {
    using namespace tf32_layout;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) a[nt][i] = tf32_round(s[nt][acc_src(i)]);
}

/* Forward: as memeff_tc_forward_kernel, in fp32 tiles and TF32 products. */
template <int D, int MASK, bool X>
__global__ void __launch_bounds__(MemeffTf32Traits<D>::kThreads) memeff_tf32_forward_kernel(MemeffParams p) {
    using Tr = MemeffTf32Traits<D>;
    constexpr int R = Tr::Rows, C = Tr::Cols, SA = Tr::kStrideA, SB = Tr::kStrideB, NT = C / 8, ND = D / 8;
    constexpr int TH = Tr::kThreads;
    constexpr bool CAUSAL = MASK == ATTN_MASK_CAUSAL;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float *sQ = (float *)smem_raw, *sK = sQ + R * SA, *sV = sK + 2 * C * SA;
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H, hk = h / p.group;
    const int q0 = attn_block_tile(true) * R;
    const int warp = threadIdx.x / 32, T = p.T;
    const long long qhead = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)hk * D;
    const float *gq = (const float *)p.q + qhead, *gk = (const float *)p.k + kvhead, *gv = (const float *)p.v + kvhead;
    const float scale_log2 = p.scale * LOG2E_F;
    int n_tiles = (T + C - 1) / C, j_lo = 0;
    if (CAUSAL) n_tiles = min(n_tiles, (min(q0 + R, T) + C - 1) / C);
    memeff_live<X, CAUSAL>(p, b, q0, min(q0 + R, T), C, n_tiles, true, j_lo, n_tiles);
    MemeffRowX rx = {};
    if (X) rx = memeff_row_x(p, b, h);

    tf32_load_rows_async<R, D, TH, SA>(sQ, gq, p.ld_qkv, q0, T);
    tf32_load_rows_async<C, D, TH, SA>(sK, gk, p.ld_qkv, j_lo * C, T);
    tf32_load_rows_async<C, D, TH, SB>(sV, gv, p.ld_qkv, j_lo * C, T);
    cp_async_commit();
    uint32_t qf[ND][4];
    float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dt = 0; dt < ND; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    const int row0 = q0 + warp * 16;
    for (int j = j_lo; j < n_tiles; j++) {
        const int stage = (j - j_lo) & 1;
        if (j + 1 < n_tiles) {
            tf32_load_rows_async<C, D, TH, SA>(sK + (stage ^ 1) * C * SA, gk, p.ld_qkv, (j + 1) * C, T);
            tf32_load_rows_async<C, D, TH, SB>(sV + (stage ^ 1) * C * SB, gv, p.ld_qkv, (j + 1) * C, T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        float *k_t = sK + stage * C * SA, *v_t = sV + stage * C * SB;
        if (j == j_lo) tf32_round_rows<R, D, TH, SA>(sQ);
        tf32_round_rows<C, D, TH, SA>(k_t);
        tf32_round_rows<C, D, TH, SB>(v_t);
        __syncthreads();
        if (j == j_lo) {
#pragma unroll
            for (int kk = 0; kk < ND; kk++) tf32_load_a(qf[kk], sQ, SA, warp * 16, kk * 8);
        }
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < ND; kk++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                uint32_t bfr[2];
                tf32_load_bt(bfr, k_t, SA, nt * 8, kk * 8);
                mma_1688_tf32(s[nt], qf[kk], bfr);
            }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
        const int col0 = j * C;
        if (X)
            memeff_mask_frag<NT, CAUSAL>(s, rx, T, row0, col0, false,
                                         flash_tile_full<CAUSAL>(p.mx.x, b, T, row0, row0 + 16, col0, col0 + C));
        else if (MASK == ATTN_MASK_DENSE || col0 + C > T || (CAUSAL && col0 + C - 1 > row0))
            mask_tile<NT, MASK>(s, row0, col0, T, false, &p.mask, b, h);
        online_softmax_step<NT, ND>(s, o, m, l);
        uint32_t pf[NT][4];
        tf32_acc_to_a<NT>(pf, s);
#pragma unroll
        for (int kk = 0; kk < NT; kk++)
#pragma unroll
            for (int dt = 0; dt < ND; dt++) {
                uint32_t bfr[2];
                tf32_load_b(bfr, v_t, SB, kk * 8, dt * 8);
                mma_1688_tf32(o[dt], pf[kk], bfr);
            }
        __syncthreads();
    }
    cp_async_wait<0>();
    /* O / l and L = ln 2 (m + log2 l), +inf for a row that saw no key (store_o_and_lse in fp32) */
    const int lane = threadIdx.x & 31, g = lane >> 2, c = 2 * (lane & 3);
    float *out_head = (float *)p.out + (long long)b * T * p.ld_o + (long long)h * D;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        float lsum = quad_sum(l[half]);
        float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
        int t = row0 + g + 8 * half;
        if (t < T) {
            float *orow = out_head + (long long)t * p.ld_o;
#pragma unroll
            for (int dt = 0; dt < ND; dt++)
                *(float2 *)(orow + dt * 8 + c) = make_float2(o[dt][2 * half] * inv, o[dt][2 * half + 1] * inv);
            if ((lane & 3) == 0)
                p.lse[(long long)bh * T + t] = lsum > 0.0f ? (m[half] + log2f(lsum)) * LN2_F : INFINITY;
        }
    }
}

/* Query tile rows [q0, q0 + ROWS) of Q and dO, and their L and D, into one stage. */
template <int D, int ROWS, int THREADS, int STRIDE>
__device__ __forceinline__ void tf32_load_query_side(float *sQ, float *sdO, float *sL, float *sD, const MemeffParams &p,
                                                     long long head, long long ohead, long long bh, int q0) {
    tf32_load_rows_async<ROWS, D, THREADS, STRIDE>(sQ, (const float *)p.q + head, p.ld_qkv, q0, p.T);
    tf32_load_rows_async<ROWS, D, THREADS, STRIDE>(sdO, (const float *)p.dout + ohead, p.ld_o, q0, p.T);
    for (int x = threadIdx.x; x < ROWS; x += THREADS) {
        int t = q0 + x;
        bool ok = t < p.T;
        cp_async_4(sL + x, p.lse + bh * p.T + (ok ? t : 0), ok);
        cp_async_4(sD + x, p.dvec + bh * p.T + (ok ? t : 0), ok);
    }
}

/* dK, dV for Rows keys of K/V head g: as memeff_tc_dkv_kernel (the (head, query tile) pairs of
 * the group in one double-buffered sequence; X: dbias += dS, this block owns its keys). */
template <int D, int MASK, bool X>
__global__ void __launch_bounds__(MemeffTf32Traits<D>::kThreads) memeff_tf32_dkv_kernel(MemeffParams p) {
    using Tr = MemeffTf32Traits<D>;
    constexpr int R = Tr::Rows, C = Tr::Cols, SA = Tr::kStrideA, SB = Tr::kStrideB, NQ = C / 8, ND = D / 8;
    constexpr int TH = Tr::kThreads;
    constexpr bool CAUSAL = MASK == ATTN_MASK_CAUSAL;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float *sK = (float *)smem_raw, *sV = sK + R * SA, *sQ = sV + R * SA, *sdO = sQ + 2 * C * SB;
    float *sL = sdO + 2 * C * SB, *sD = sL + 2 * C;
    const int bg = attn_block_head(), b = bg / p.Hkv, g_kv = bg % p.Hkv, k0 = attn_block_tile(false) * R;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, T = p.T;
    const int g = lane >> 2, c = 2 * (lane & 3);
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)g_kv * D;
    const long long qbase = (long long)b * T * p.ld_qkv, obase = (long long)b * T * p.ld_o;
    const float scale_log2 = p.scale * LOG2E_F;
    int m_first = CAUSAL ? k0 / C : 0, m_end = (T + C - 1) / C;
    memeff_live<X, CAUSAL>(p, b, k0, min(k0 + R, T), C, m_end, false, m_first, m_end);
    const int h_first = g_kv * p.group, total = p.group * (m_end - m_first); /* (head, tile) pairs */
    const bool atomic = X && p.mx.dbias_atomic;

    tf32_load_rows_async<R, D, TH, SA>(sK, (const float *)p.k + kvhead, p.ld_qkv, k0, T);
    tf32_load_rows_async<R, D, TH, SA>(sV, (const float *)p.v + kvhead, p.ld_qkv, k0, T);
    if (total > 0)
        tf32_load_query_side<D, C, TH, SB>(sQ, sdO, sL, sD, p, qbase + (long long)h_first * D,
                                           obase + (long long)h_first * D, (long long)b * p.H + h_first, m_first * C);
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
            tf32_load_query_side<D, C, TH, SB>(sQ + (stage ^ 1) * C * SB, sdO + (stage ^ 1) * C * SB,
                                               sL + (stage ^ 1) * C, sD + (stage ^ 1) * C, p,
                                               qbase + (long long)nh * D, obase + (long long)nh * D,
                                               (long long)b * p.H + nh, nmi * C);
        cp_async_commit();
        cp_async_wait<1>();
        float *q_t = sQ + stage * C * SB, *do_t = sdO + stage * C * SB;
        if (it == 0) {
            tf32_round_rows<R, D, TH, SA>(sK);
            tf32_round_rows<R, D, TH, SA>(sV);
        }
        tf32_round_rows<C, D, TH, SB>(q_t);
        tf32_round_rows<C, D, TH, SB>(do_t);
        __syncthreads();
        const float *L_t = sL + stage * C, *D_t = sD + stage * C;
        float st[NQ][4], dpt[NQ][4];
#pragma unroll
        for (int nt = 0; nt < NQ; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < ND; kk++) {
            uint32_t kf[4], vf[4];
            tf32_load_a(kf, sK, SA, warp * 16, kk * 8);
            tf32_load_a(vf, sV, SA, warp * 16, kk * 8);
#pragma unroll
            for (int nt = 0; nt < NQ; nt++) {
                uint32_t bq[2], bo[2];
                tf32_load_bt(bq, q_t, SB, nt * 8, kk * 8);
                tf32_load_bt(bo, do_t, SB, nt * 8, kk * 8);
                mma_1688_tf32(st[nt], kf, bq);
                mma_1688_tf32(dpt[nt], vf, bo);
            }
        }
#pragma unroll
        for (int nt = 0; nt < NQ; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[nt][e] *= scale_log2;
        const int q0 = mi * C;
        MemeffRowX rx = {};
        if (X) {
            rx = memeff_row_x(p, b, h);
            memeff_mask_frag<NQ, CAUSAL>(st, rx, T, key_row0, q0, true,
                                         flash_tile_full<CAUSAL>(p.mx.x, b, T, q0, q0 + C, key_row0, key_row0 + 16));
        } else if (MASK == ATTN_MASK_DENSE || q0 + C > T || key_row0 + 16 > T || (CAUSAL && key_row0 + 15 > q0)) {
            mask_tile<NQ, MASK>(st, key_row0, q0, T, true, &p.mask, b, h);
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
            /* dS (fp32, before rounding to TF32) into dbias, as memeff_tc_dkv_kernel */
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
        uint32_t pf[NQ][4], dsf[NQ][4];
        tf32_acc_to_a<NQ>(pf, st);
        tf32_acc_to_a<NQ>(dsf, dpt);
#pragma unroll
        for (int kk = 0; kk < NQ; kk++)
#pragma unroll
            for (int dt = 0; dt < ND; dt++) {
                uint32_t bo[2], bq[2];
                tf32_load_b(bo, do_t, SB, kk * 8, dt * 8);
                tf32_load_b(bq, q_t, SB, kk * 8, dt * 8);
                mma_1688_tf32(dv[dt], pf[kk], bo);
                mma_1688_tf32(dk[dt], dsf[kk], bq);
            }
        __syncthreads(); /* this stage is reloaded two tiles on */
        h = nh;
        mi = nmi;
    }
    cp_async_wait<0>();
    store_dk_dv<ND, float>(p, kvhead, dk, dv, key_row0, g, c, T);
}

/* dQ for Rows queries: as memeff_tc_dq_kernel. */
template <int D, int MASK, bool X>
__global__ void __launch_bounds__(MemeffTf32Traits<D>::kThreads) memeff_tf32_dq_kernel(MemeffParams p) {
    using Tr = MemeffTf32Traits<D>;
    constexpr int R = Tr::Rows, C = Tr::Cols, SA = Tr::kStrideA, SB = Tr::kStrideB, NT = C / 8, ND = D / 8;
    constexpr int TH = Tr::kThreads;
    constexpr bool CAUSAL = MASK == ATTN_MASK_CAUSAL;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float *sQ = (float *)smem_raw, *sdO = sQ + R * SA, *sK = sdO + R * SA, *sV = sK + 2 * C * SB;
    const int bh = attn_block_head(), b = bh / p.H, h = bh % p.H, hk = h / p.group;
    const int q0 = attn_block_tile(true) * R;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, T = p.T;
    const int g = lane >> 2;
    const long long qhead = (long long)b * T * p.ld_qkv + (long long)h * D;
    const long long kvhead = (long long)b * T * p.ld_qkv + (long long)hk * D;
    const long long ohead = (long long)b * T * p.ld_o + (long long)h * D;
    const float *gk = (const float *)p.k + kvhead, *gv = (const float *)p.v + kvhead;
    const float scale_log2 = p.scale * LOG2E_F;
    int n_tiles = (T + C - 1) / C, j_lo = 0;
    if (CAUSAL) n_tiles = min(n_tiles, (min(q0 + R, T) + C - 1) / C);
    memeff_live<X, CAUSAL>(p, b, q0, min(q0 + R, T), C, n_tiles, true, j_lo, n_tiles);
    MemeffRowX rx = {};
    if (X) rx = memeff_row_x(p, b, h);

    tf32_load_rows_async<R, D, TH, SA>(sQ, (const float *)p.q + qhead, p.ld_qkv, q0, T);
    tf32_load_rows_async<R, D, TH, SA>(sdO, (const float *)p.dout + ohead, p.ld_o, q0, T);
    tf32_load_rows_async<C, D, TH, SB>(sK, gk, p.ld_qkv, j_lo * C, T);
    tf32_load_rows_async<C, D, TH, SA>(sV, gv, p.ld_qkv, j_lo * C, T);
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
            tf32_load_rows_async<C, D, TH, SB>(sK + (stage ^ 1) * C * SB, gk, p.ld_qkv, (j + 1) * C, T);
            tf32_load_rows_async<C, D, TH, SA>(sV + (stage ^ 1) * C * SA, gv, p.ld_qkv, (j + 1) * C, T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        float *k_t = sK + stage * C * SB, *v_t = sV + stage * C * SA;
        if (j == j_lo) {
            tf32_round_rows<R, D, TH, SA>(sQ);
            tf32_round_rows<R, D, TH, SA>(sdO);
        }
        tf32_round_rows<C, D, TH, SB>(k_t);
        tf32_round_rows<C, D, TH, SA>(v_t);
        __syncthreads();
        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < ND; kk++) {
            uint32_t qf[4], of[4];
            tf32_load_a(qf, sQ, SA, warp * 16, kk * 8);
            tf32_load_a(of, sdO, SA, warp * 16, kk * 8);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                uint32_t bk[2], bv[2];
                tf32_load_bt(bk, k_t, SB, nt * 8, kk * 8);
                tf32_load_bt(bv, v_t, SA, nt * 8, kk * 8);
                mma_1688_tf32(s[nt], qf, bk);
                mma_1688_tf32(dp[nt], of, bv);
            }
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
        const int col0 = j * C;
        if (X)
            memeff_mask_frag<NT, CAUSAL>(s, rx, T, row0, col0, false,
                                         flash_tile_full<CAUSAL>(p.mx.x, b, T, row0, row0 + 16, col0, col0 + C));
        else if (MASK == ATTN_MASK_DENSE || col0 + C > T || row0 + 16 > T || (CAUSAL && col0 + C - 1 > row0))
            mask_tile<NT, MASK>(s, row0, col0, T, false, &p.mask, b, h);
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float pv = exp2f(s[nt][e] - L2[e >> 1]);
                dp[nt][e] = pv * (dp[nt][e] - Dv[e >> 1]);
            }
        uint32_t dsf[NT][4];
        tf32_acc_to_a<NT>(dsf, dp);
#pragma unroll
        for (int kk = 0; kk < NT; kk++)
#pragma unroll
            for (int dt = 0; dt < ND; dt++) {
                uint32_t bk[2];
                tf32_load_b(bk, k_t, SB, kk * 8, dt * 8);
                mma_1688_tf32(dq[dt], dsf[kk], bk);
            }
        __syncthreads();
    }
    cp_async_wait<0>();
    const int c = 2 * (lane & 3);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int t = row0 + g + 8 * half;
        if (t < T) {
            float *row = (float *)p.dq + qhead + (long long)t * p.ld_qkv + c;
#pragma unroll
            for (int dt = 0; dt < ND; dt++)
                *(float2 *)(row + dt * 8) = make_float2(dq[dt][2 * half] * p.scale, dq[dt][2 * half + 1] * p.scale);
        }
    }
}

#endif
