/* attention/mma_tf32.cuh: the TF32 tensor-core building blocks (mma.sync m16n8k8, fp32 tiles)
 * and their operand policy MmaOpsTf32, the twin of mma_bf16.cuh's MmaOps16: memeff.cu's
 * tensor-core skeleton instantiated with it runs fp32 attention on TF32 (AttnShape::tf32 = 1):
 *   - Q, K, V, dO tiles are copied to smem in fp32 (cp.async, 16 bytes = 4 floats) and rounded
 *     there once to TF32 (cvt.rna.tf32.f32: nearest, ties away; each thread rounds the chunks it
 *     copied, after its cp.async group completed and before the block barrier: round_rows);
 *   - P and dS (fp32 accumulators) are rounded to TF32 when they become A operands (acc_to_a);
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
 * Smem rows: stride_a = D + 8 floats for tiles read as 8-byte (row g, column 2t) pairs (A and
 * B^T: rows 8 banks apart, conflict-free), stride_b = D + 4 for tiles read as B (rows 2t: 8 banks
 * apart; also for a tile read both ways). Needs 16-byte aligned pointers and leading dimensions
 * that are multiples of 4 (memeff.cu falls back to the exact CUDA-core kernels otherwise).
 */
#ifndef ATTENTION_MMA_TF32_CUH
#define ATTENTION_MMA_TF32_CUH

#include "attention/mma_bf16.cuh" /* cp.async */

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
static_assert(consistent(), "mma_tf32: fragment loaders disagree with the m16n8k8 tf32 layout");
} // namespace tf32_layout

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

/* The operand policy (MmaOps16's members, in fp32 tiles and TF32 products; k steps of 8). */
struct MmaOpsTf32 {
    using Elem = float;
    static constexpr int kK = 8;
    template <int D> static constexpr int stride_a() { return D + 8; }
    template <int D> static constexpr int stride_b() { return D + 4; }
    template <int ROWS, int D, int THREADS, int STRIDE>
    static __device__ __forceinline__ void load_rows(float *tile, const float *g, long long ld, int row0, int T) {
        tf32_load_rows_async<ROWS, D, THREADS, STRIDE>(tile, g, ld, row0, T);
    }
    template <int ROWS, int D, int THREADS, int STRIDE>
    static __device__ __forceinline__ void round_rows(float *tile) {
        tf32_round_rows<ROWS, D, THREADS, STRIDE>(tile);
    }
    template <int KS>
    static __device__ __forceinline__ void load_a(uint32_t (&a)[KS][4], const float *tile, int stride, int r0) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++) tf32_load_a(a[kk], tile, stride, r0, kk * 8);
    }
    template <int NT, int KS>
    static __device__ __forceinline__ void mma_abt(float (&acc)[NT][4], const uint32_t (&a)[KS][4], const float *b,
                                                   int stride) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                uint32_t f[2];
                tf32_load_bt(f, b, stride, nt * 8, kk * 8);
                mma_1688_tf32(acc[nt], a[kk], f);
            }
    }
    template <int ND, int KS>
    static __device__ __forceinline__ void mma_ab(float (&acc)[ND][4], const uint32_t (&a)[KS][4], const float *b,
                                                  int stride) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int dt = 0; dt < ND; dt++) {
                uint32_t f[2];
                tf32_load_b(f, b, stride, kk * 8, dt * 8);
                mma_1688_tf32(acc[dt], a[kk], f);
            }
    }
    template <int ND, int KS>
    static __device__ __forceinline__ void mma_ab2(float (&x)[ND][4], const uint32_t (&a1)[KS][4], const float *b1,
                                                   float (&y)[ND][4], const uint32_t (&a2)[KS][4], const float *b2,
                                                   int stride) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int dt = 0; dt < ND; dt++) {
                uint32_t f1[2], f2[2];
                tf32_load_b(f1, b1, stride, kk * 8, dt * 8);
                tf32_load_b(f2, b2, stride, kk * 8, dt * 8);
                mma_1688_tf32(x[dt], a1[kk], f1);
                mma_1688_tf32(y[dt], a2[kk], f2);
            }
    }
    template <int KS, int SA, int SB1, int SB2, int NT>
    static __device__ __forceinline__ void mma_pair(float (&x)[NT][4], float (&y)[NT][4], const float *a1,
                                                    const float *a2, const float *b1, const float *b2, int a_row0) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) x[nt][e] = y[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t f1[4], f2[4];
            tf32_load_a(f1, a1, SA, a_row0, kk * 8);
            tf32_load_a(f2, a2, SA, a_row0, kk * 8);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                uint32_t g1[2], g2[2];
                tf32_load_bt(g1, b1, SB1, nt * 8, kk * 8);
                tf32_load_bt(g2, b2, SB2, nt * 8, kk * 8);
                mma_1688_tf32(x[nt], f1, g1);
                mma_1688_tf32(y[nt], f2, g2);
            }
        }
    }
    template <int NA, int NT>
    static __device__ __forceinline__ void acc_to_a(uint32_t (&a)[NA][4], const float (&s)[NT][4]) {
        static_assert(NA == NT, "MmaOpsTf32: one C tile makes one A fragment");
        tf32_acc_to_a<NT>(a, s);
    }
};

#endif
