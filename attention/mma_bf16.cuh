/* attention/mma_bf16.cuh: the tensor-core building blocks of the 16-bit kernels (sm_80+):
 * cp.async tile loads, ldmatrix, and mma.sync m16n8k16 (bf16 or fp16 in, fp32 accumulate).
 * (The name is from when bf16 was the only 16-bit type.) The element type E (__nv_bfloat16 or
 * __half) is a template parameter: it changes only the MMA instruction's input type and the
 * fp32 -> 16-bit conversion of fragments (pack2); ldmatrix and cp.async move 16-bit elements
 * whatever they hold, so both types instantiate the same bodies.
 *
 * Fragment layouts of mma.m16n8k16 for a lane: g = lane / 4, c = 2 * (lane % 4).
 *   A (16 x 16, row):  a0 = (g, c..c+1)  a1 = (g+8, c..c+1)  a2 = (g, c+8..c+9)  a3 = (g+8, c+8..c+9)
 *   B (16 x 8, col):   b0 = (k = c..c+1, n = g)   b1 = (k = c+8..c+9, n = g)
 *   C (16 x 8, fp32):  c0, c1 = (g, c..c+1)       c2, c3 = (g+8, c..c+1)
 * Two adjacent C tiles (n and n+8) hold exactly the A fragment of a 16 x 16 block, which is how
 * P goes from one product into the next without leaving registers.
 *
 * Shared-memory tiles are row-major 16-bit elements with rows of D + 8 elements: the 16-byte pad puts the 8
 * rows one ldmatrix reads in 8 different bank groups (no conflicts) and keeps rows 16-byte aligned.
 */
#ifndef ATTENTION_MMA_BF16_CUH
#define ATTENTION_MMA_BF16_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <type_traits>

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, asynchronously; with pred false the destination is zero-filled. */
__device__ __forceinline__ void cp_async_16(void *dst, const void *src, bool pred) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(pred ? 16 : 0));
}
/* 4 bytes (one float), likewise. */
__device__ __forceinline__ void cp_async_4(void *dst, const void *src, bool pred) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(pred ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
/* Wait until at most N committed groups are still in flight. */
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

/* The element types of the 16-bit kernels; MmaElem<E> says what differs between them. */
template <typename E> struct MmaElem;
template <> struct MmaElem<__nv_bfloat16> {
    /* Two floats -> a bf16 pair in one register (lo in the low half: the lower column). */
    static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    /* A bf16 pair in one register -> two floats (x = the low half). */
    static __device__ __forceinline__ float2 unpack2(uint32_t u) {
        return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&u));
    }
};
template <> struct MmaElem<__half> {
    /* Two floats -> an fp16 pair (round to nearest; |x| >= 65520 becomes inf). */
    static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float2 unpack2(uint32_t u) {
        return __half22float2(*reinterpret_cast<const __half2 *>(&u));
    }
};
template <typename E> __device__ __forceinline__ uint32_t pack2(float lo, float hi) { return MmaElem<E>::pack2(lo, hi); }
template <typename E> __device__ __forceinline__ float2 unpack2(uint32_t u) { return MmaElem<E>::unpack2(u); }

/* c += a * b on one 16 x 8 x 16 tile; a and b hold elements of type E, c is fp32. */
#define MMA_16816_ASM(TY)                                                                     \
    asm volatile(                                                                             \
        "mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
        "{%8,%9}, {%0,%1,%2,%3};\n"                                                           \
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                      \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
template <typename E>
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    static_assert(sizeof(E) == 2, "mma_16816: a 16-bit element type");
    if constexpr (std::is_same<E, __half>::value) MMA_16816_ASM("f16");
    else MMA_16816_ASM("bf16");
}
#undef MMA_16816_ASM

/* Where accumulator entry acc[nt][e] of this lane sits in a 16 x (8 NT) block of NT C tiles side
 * by side whose rows start at row0 and columns at col0 (the C layout above): row g + 8 (e >= 2),
 * column 8 nt + c + (e & 1). Every per-entry mask, bias and gradient loop of the kernels takes its
 * coordinates from here (tc_attention.cuh's score_pos names them query and key). */
struct AccPos { int row, col; };
__device__ __forceinline__ int acc_lane_row() { return (threadIdx.x & 31) >> 2; } /* g */
__device__ __forceinline__ int acc_lane_col() { return 2 * (threadIdx.x & 3); }   /* c */
__host__ __device__ constexpr int acc_row_off(int e) { return e >= 2 ? 8 : 0; }
__host__ __device__ constexpr int acc_col_off(int nt, int e) { return nt * 8 + (e & 1); }
__device__ __forceinline__ AccPos acc_pos(int row0, int col0, int nt, int e) {
    return {row0 + acc_lane_row() + acc_row_off(e), col0 + acc_col_off(nt, e) + acc_lane_col()};
}

/* Copies rows [row0, row0 + ROWS) of a token-major head (row t at g + t * ld, D elements) into
 * a padded smem tile; rows >= T become zeros. */
template <int ROWS, int D, int THREADS, typename E>
__device__ __forceinline__ void load_rows_async(E *tile, const E *g,
                                                long long ld, int row0, int T) {
    constexpr int kChunks = D / 8, kStride = D + 8;
    for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
        int r = c / kChunks, ch = c % kChunks, t = row0 + r;
        bool ok = t < T;
        cp_async_16(tile + r * kStride + ch * 8, g + (long long)(ok ? t : 0) * ld + ch * 8, ok);
    }
}

/* The A fragment of rows [r0, r0+16) x cols [c0, c0+16) of a row-major smem tile. */
template <typename E>
__device__ __forceinline__ void load_a_frag(uint32_t a[4], const E *tile, int stride,
                                            int r0, int c0) {
    int lane = threadIdx.x & 31;
    ldmatrix_x4(a, tile + (r0 + (lane & 15)) * stride + c0 + (lane >> 4) * 8);
}
/* The A fragment of rows [r0, r0+16) x cols [c0, c0+16) of A when the smem tile holds A^T
 * (row-major [col of A][row of A]): ldmatrix's transpose undoes it. */
template <typename E>
__device__ __forceinline__ void load_a_frag_transposed(uint32_t a[4], const E *tile,
                                                       int stride, int r0, int c0) {
    int lane = threadIdx.x & 31;
    ldmatrix_x4_trans(a, tile + (c0 + (lane & 7) + ((lane >> 4) << 3)) * stride + r0 + ((lane >> 3) & 1) * 8);
}
/* B fragments for two n-tiles when B = X^T with X row-major [n][k] in smem (e.g. K in Q K^T):
 * rows [n0, n0+16) of X, cols [k0, k0+16). b[0], b[1] serve n-tile n0; b[2], b[3] n-tile n0+8. */
template <typename E>
__device__ __forceinline__ void load_bt_frags(uint32_t b[4], const E *tile, int stride,
                                              int n0, int k0) {
    int lane = threadIdx.x & 31;
    ldmatrix_x4(b, tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * stride + k0 + ((lane >> 3) & 1) * 8);
}
/* B fragments for two n-tiles when B = X with X row-major [k][n] in smem (e.g. V in P V):
 * rows [k0, k0+16) of X, cols [n0, n0+16). b[0], b[1] serve n-tile n0; b[2], b[3] n-tile n0+8. */
template <typename E>
__device__ __forceinline__ void load_b_frags(uint32_t b[4], const E *tile, int stride,
                                             int k0, int n0) {
    int lane = threadIdx.x & 31;
    ldmatrix_x4_trans(b, tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * stride + n0 + (lane >> 4) * 8);
}

/* One k-step of two warp products that read their B operands the same way: x += A1 B1^T and
 * y += A2 B2^T for the warp's 16 rows against NT n-tiles of 8 columns, B1 and B2 row-major [n][k]
 * in smem. The backward kernels compute the score tile and dP = dO V^T this way in one pass. */
template <int NT, typename E>
__device__ __forceinline__ void mma_pair_step(float (&x)[NT][4], float (&y)[NT][4], const uint32_t a1[4],
                                              const uint32_t a2[4], const E *b1, const E *b2, int stride,
                                              int k0) {
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
        uint32_t f1[4], f2[4];
        load_bt_frags(f1, b1, stride, np * 16, k0);
        load_bt_frags(f2, b2, stride, np * 16, k0);
        mma_16816<E>(x[2 * np], a1, f1[0], f1[1]);
        mma_16816<E>(x[2 * np + 1], a1, f1[2], f1[3]);
        mma_16816<E>(y[2 * np], a2, f2[0], f2[1]);
        mma_16816<E>(y[2 * np + 1], a2, f2[2], f2[3]);
    }
}

/* The two products over the whole k range (KD steps of 16): x = A1 B1^T and y = A2 B2^T for the
 * warp's 16 rows a_row0.. of A1, A2 (row-major [row][k] in smem) against NT n-tiles of B1, B2
 * (row-major [n][k]), every tile `stride` elements a row: the backward's S^T = K Q^T and
 * dP^T = V dO^T (flash, memeff's dK/dV kernel), or S = Q K^T and dP = dO V^T (memeff's dQ kernel). */
template <int NT, int KD, typename E>
__device__ __forceinline__ void mma_pair_tile(float (&x)[NT][4], float (&y)[NT][4], const E *a1, const E *a2,
                                              const E *b1, const E *b2, int stride, int a_row0) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) x[nt][e] = y[nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++) {
        uint32_t f1[4], f2[4];
        load_a_frag(f1, a1, stride, a_row0, kk * 16);
        load_a_frag(f2, a2, stride, a_row0, kk * 16);
        mma_pair_step<NT>(x, y, f1, f2, b1, b2, stride, kk * 16);
    }
}

/* The A fragments (element type E) of a 16 x (8*NT) fp32 accumulator block (k = its columns). */
template <typename E, int NT>
__device__ __forceinline__ void acc_to_a_frags(uint32_t a[][4], const float s[][4]) {
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
        a[kk][0] = pack2<E>(s[2 * kk][0], s[2 * kk][1]);
        a[kk][1] = pack2<E>(s[2 * kk][2], s[2 * kk][3]);
        a[kk][2] = pack2<E>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[kk][3] = pack2<E>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
}

/* The 16-bit operand policy of the skeletons that run on either MMA (memeff.cu's tensor-core
 * kernels; mma_tf32.cuh has the TF32 one with the same members): the element type in smem and out,
 * the MMA's k, the padded smem rows, the row loads, and the warp products over a tile. A product's
 * A operand is a warp's 16 rows as KS fragments (k = kK KS); its B tile is row-major in smem,
 * [n][k] for A B^T and [k][n] for A B; accumulators are NT (ND) C tiles of 8 columns. Array sizes
 * are deduced from the arguments. */
template <typename E> struct MmaOps16 {
    using Elem = E;
    static constexpr int kK = 16;
    /* smem row strides (elements) of tiles read as A or B^T (stride_a) and as B (stride_b) */
    template <int D> static constexpr int stride_a() { return D + 8; }
    template <int D> static constexpr int stride_b() { return D + 8; }
    template <int ROWS, int D, int THREADS, int STRIDE>
    static __device__ __forceinline__ void load_rows(E *tile, const E *g, long long ld, int row0, int T) {
        static_assert(STRIDE == D + 8, "MmaOps16: tiles are D + 8 elements a row");
        load_rows_async<ROWS, D, THREADS>(tile, g, ld, row0, T);
    }
    /* after a tile's cp.async group: nothing to do (TF32 rounds here) */
    template <int ROWS, int D, int THREADS, int STRIDE> static __device__ __forceinline__ void round_rows(E *) {}
    template <int KS>
    static __device__ __forceinline__ void load_a(uint32_t (&a)[KS][4], const E *tile, int stride, int r0) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++) load_a_frag(a[kk], tile, stride, r0, kk * 16);
    }
    /* acc += A B^T */
    template <int NT, int KS>
    static __device__ __forceinline__ void mma_abt(float (&acc)[NT][4], const uint32_t (&a)[KS][4], const E *b, int stride) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t f[4];
                load_bt_frags(f, b, stride, np * 16, kk * 16);
                mma_16816<E>(acc[2 * np], a[kk], f[0], f[1]);
                mma_16816<E>(acc[2 * np + 1], a[kk], f[2], f[3]);
            }
    }
    /* acc += A B */
    template <int ND, int KS>
    static __device__ __forceinline__ void mma_ab(float (&acc)[ND][4], const uint32_t (&a)[KS][4], const E *b, int stride) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t f[4];
                load_b_frags(f, b, stride, kk * 16, dp * 16);
                mma_16816<E>(acc[2 * dp], a[kk], f[0], f[1]);
                mma_16816<E>(acc[2 * dp + 1], a[kk], f[2], f[3]);
            }
    }
    /* x += A1 B1 and y += A2 B2 in one pass (the backward's dV and dK) */
    template <int ND, int KS>
    static __device__ __forceinline__ void mma_ab2(float (&x)[ND][4], const uint32_t (&a1)[KS][4], const E *b1,
                                                   float (&y)[ND][4], const uint32_t (&a2)[KS][4], const E *b2,
                                                   int stride) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t f1[4], f2[4];
                load_b_frags(f1, b1, stride, kk * 16, dp * 16);
                load_b_frags(f2, b2, stride, kk * 16, dp * 16);
                mma_16816<E>(x[2 * dp], a1[kk], f1[0], f1[1]);
                mma_16816<E>(x[2 * dp + 1], a1[kk], f1[2], f1[3]);
                mma_16816<E>(y[2 * dp], a2[kk], f2[0], f2[1]);
                mma_16816<E>(y[2 * dp + 1], a2[kk], f2[2], f2[3]);
            }
    }
    /* x = A1 B1^T and y = A2 B2^T over KS k steps, A1, A2 rows a_row0.. of smem tiles (mma_pair_tile;
     * strides SA of the A tiles, SB1 and SB2 of the B tiles: one stride for all 16-bit tiles) */
    template <int KS, int SA, int SB1, int SB2, int NT>
    static __device__ __forceinline__ void mma_pair(float (&x)[NT][4], float (&y)[NT][4], const E *a1, const E *a2,
                                                    const E *b1, const E *b2, int a_row0) {
        static_assert(SA == SB1 && SA == SB2, "MmaOps16: one stride for all tiles");
        mma_pair_tile<NT, KS>(x, y, a1, a2, b1, b2, SA, a_row0);
    }
    /* the A fragments (k = its 8 NT columns) of a 16 x (8 NT) fp32 accumulator block */
    template <int NA, int NT>
    static __device__ __forceinline__ void acc_to_a(uint32_t (&a)[NA][4], const float (&s)[NT][4]) {
        static_assert(NA * 2 == NT, "MmaOps16: two C tiles make one A fragment");
        acc_to_a_frags<E, NT>(a, s);
    }
};

#endif
