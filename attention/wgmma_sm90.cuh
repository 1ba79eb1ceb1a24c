/* attention/wgmma_sm90.cuh: Hopper (sm_90a) warpgroup MMA building blocks: shared-memory matrix
 * descriptors for 128-byte-swizzled tiles, wgmma.mma_async bf16 or fp16 -> fp32, and its fences.
 * The element type E (__nv_bfloat16 or __half) is a template parameter of the wrappers: it names
 * the instruction's input type (.bf16 or .f16) and nothing else; the descriptors describe bytes
 * (start, strides, swizzle), the same for any 16-bit type, as are the layouts below.
 *
 * A warpgroup is 4 consecutive warps (128 threads); one wgmma computes a 64 x N x 16 product.
 * Warp w of the group owns accumulator rows 16w..16w+15, and within a warp the fp32 accumulator
 * d[N/8][4] and the 16-bit A register fragment a[4] (one k16 step) have exactly the layouts of
 * mma.sync m16n8k16 (see mma_bf16.cuh): d[j][0..1] = (row g, cols 8j + c..c+1), d[j][2..3] =
 * row g + 8; so the softmax helpers of tc_attention.cuh and the accumulator -> A fragment
 * conversion carry over unchanged.
 *
 * Shared-memory tiles ("SW128"): rows of 64 16-bit elements = 128 bytes; a tile of R rows x D columns is
 * D/64 panels of [R][64]; in row r the 16-byte chunk c sits at chunk c ^ (r % 8). The tile base
 * is 1024-byte aligned, so the hardware's 128-byte swizzle (address bits 4-6 ^= bits 7-9) finds
 * the same place. Such a panel is the canonical wgmma layout for both majors:
 *   K-major operand (k contiguous, e.g. K in S = Q K^T): 8-row groups 1024 bytes apart (SBO); a
 *     k16 step moves the start address by 32 bytes inside the 128-byte row;
 *   MN-major operand (n contiguous, e.g. V in O = P V, with the transpose bit): 8 k-rows form
 *     one 1024-byte atom (SBO to the next 8 k-rows), a k16 step moves the start by 2048 bytes.
 * wgmma reads shared memory through the async proxy: data written by ordinary stores or
 * cp.async must be followed by fence.proxy.async before the barrier that publishes it.
 */
#ifndef ATTENTION_WGMMA_SM90_CUH
#define ATTENTION_WGMMA_SM90_CUH

#include <stdint.h>
#include <type_traits>
#include "attention/mma_bf16.cuh"

/* Descriptor of a 128-byte-swizzled operand starting at smem address `addr` (bytes):
 * bits 0-13 start >> 4, 16-29 leading-dimension byte offset >> 4 (unused by these layouts: 1),
 * 32-45 stride-dimension byte offset >> 4 (1024: the next 8-row group), 62-63 swizzle = 1 (128B).
 * Built in two 32-bit halves: the high one is a constant, and since a shared-memory address is
 * below 2^18 (228 KB), the low one of addr + off (off a multiple of 16) is sw128_desc_lo(addr) +
 * off / 16 with no carry out of the start field. So a loop over the k steps of a tile computes
 * the low half once and adds a constant per step (sw128_desc_at), instead of masking, shifting
 * and or-ing every address again (5 instructions per wgmma, measured in ncu's SASS view). */
__device__ __forceinline__ uint32_t sw128_desc_lo(uint32_t addr) { return (addr >> 4) | (1u << 16); }
__device__ __forceinline__ uint64_t sw128_desc_at(uint32_t lo, uint32_t off) {
    uint64_t d;
    asm("mov.b64 %0, {%1, %2};\n" : "=l"(d) : "r"(lo + (off >> 4)), "r"((1024u >> 4) | (1u << 30)));
    return d;
}
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) { return sw128_desc_at(sw128_desc_lo(addr), 0); }

/* The first 1024-byte-aligned byte (the swizzle's period) at or after p, a shared-memory pointer:
 * p plus an offset, not an integer cast back to a pointer, so the compiler still knows that what is
 * derived from it is shared and reads and writes it with LDS / STS and 32-bit addresses (after
 * the cast it used generic 64-bit loads, ncu's view of flash-tma's backward). */
__device__ __forceinline__ unsigned char *smem_align1024(unsigned char *p) { return p + ((0u - smem_addr(p)) & 1023u); }

/* Byte offset of element (r, col) in an SW128 tile of R rows (col < D, any panel). */
template <int R>
__device__ __forceinline__ uint32_t sw128_offset(int r, int col) {
    int panel = col >> 6, chunk = (col >> 3) & 7;
    return (uint32_t)(panel * R * 128 + r * 128 + ((chunk ^ (r & 7)) << 4) + (col & 7) * 2);
}

/* Copies rows [row0, row0 + R) x D of a token-major head into an SW128 tile by cp.async; rows
 * >= T become zeros. */
template <int R, int D, int THREADS, typename E>
__device__ __forceinline__ void load_rows_sw128_async(unsigned char *tile, const E *g,
                                                      long long ld, int row0, int T) {
    constexpr int kChunks = D / 8;
    for (int i = threadIdx.x; i < R * kChunks; i += THREADS) {
        int r = i / kChunks, cc = i % kChunks, t = row0 + r;
        bool ok = t < T;
        cp_async_16(tile + sw128_offset<R>(r, cc * 8), g + (long long)(ok ? t : 0) * ld + cc * 8, ok);
    }
}

/* The mma/wgmma A fragment of rows [r0, r0+16) x cols [c0, c0+16) of an SW128 tile of R rows. */
template <int R>
__device__ __forceinline__ void load_a_frag_sw128(uint32_t a[4], const unsigned char *tile, int r0, int c0) {
    int lane = threadIdx.x & 31;
    ldmatrix_x4(a, tile + sw128_offset<R>(r0 + (lane & 15), c0 + (lane >> 4) * 8));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
/* Wait until at most N committed wgmma groups of this warpgroup are in flight. */
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Generic-proxy writes to shared memory (stores, cp.async) -> visible to wgmma. */
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
/* Keeps the compiler from moving accesses of an accumulator across a wgmma wait. */
template <int NT> __device__ __forceinline__ void wgmma_fence_operands(float (&d)[NT][4]) {
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+f"(d[i][e])::"memory");
}

/* ---- wgmma.mma_async wrappers: d (+)= A B, 64 x N x 16 ----------------------------------------
 * wgmma_rs: A from registers, B from smem (TRANS_B = 1: B is MN-major, n contiguous);
 * wgmma_ss: A and B from smem (TRANS = 1: both MN-major, else both K-major);
 * E: the inputs' element type (bf16 or fp16; the accumulator d is fp32 either way).
 * `accumulate` 0 overwrites d (scale-d), so the first k step needs no zeroed accumulator.
 *
 * One asm text per form, for every N: the instruction lists its N/2 accumulator registers one
 * by one, so a shape brings that list (WGMMA_REGS_N: the operands %0 .. %(N/2 - 1); WGMMA_DOPS_N:
 * d[0][0] .. d[N/8 - 1][3] as "+f" operands, in that order) and the numbers of the operands after
 * them (from N/2 on; the preprocessor cannot add). */
#define WGMMA_D4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define WGMMA_REGS_N32 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define WGMMA_DOPS_N32 WGMMA_D4(0), WGMMA_D4(1), WGMMA_D4(2), WGMMA_D4(3)
#define WGMMA_REGS_N64 WGMMA_REGS_N32 ", %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WGMMA_DOPS_N64 WGMMA_DOPS_N32, WGMMA_D4(4), WGMMA_D4(5), WGMMA_D4(6), WGMMA_D4(7)
#define WGMMA_REGS_N128                                                                                       \
    WGMMA_REGS_N64 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, " \
                   "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WGMMA_DOPS_N128 \
    WGMMA_DOPS_N64, WGMMA_D4(8), WGMMA_D4(9), WGMMA_D4(10), WGMMA_D4(11), WGMMA_D4(12), WGMMA_D4(13), WGMMA_D4(14), WGMMA_D4(15)
#define WGMMA_REGS_N176                                                                                         \
    WGMMA_REGS_N128 ", %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, " \
                    "%82, %83, %84, %85, %86, %87"
#define WGMMA_DOPS_N176 \
    WGMMA_DOPS_N128, WGMMA_D4(16), WGMMA_D4(17), WGMMA_D4(18), WGMMA_D4(19), WGMMA_D4(20), WGMMA_D4(21)

/* A0..A3: the A fragment's registers, B: B's descriptor, ACC: accumulate, TB: TRANS_B. */
#define WGMMA_RS_ASM(TY, N, A0, A1, A2, A3, B, ACC, TB)                                                  \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #ACC ", 0;\n"                                      \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " "                         \
                 "{" WGMMA_REGS_N##N "}, {%" #A0 ", %" #A1 ", %" #A2 ", %" #A3 "}, %" #B ", p, 1, 1, %" #TB \
                 ";\n}\n"                                                                                \
                 : WGMMA_DOPS_N##N                                                                       \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate), "n"(TRANS_B))
/* A, B: the descriptors, ACC: accumulate, TR: TRANS (for both operands). */
#define WGMMA_SS_ASM(TY, N, A, B, ACC, TR)                                                               \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #ACC ", 0;\n"                                      \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " "                         \
                 "{" WGMMA_REGS_N##N "}, %" #A ", %" #B ", p, 1, 1, %" #TR ", %" #TR ";\n}\n"            \
                 : WGMMA_DOPS_N##N                                                                       \
                 : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS))
/* The instruction's input type from E, then the form's asm with the shape's arguments. */
#define WGMMA_AS(E, FORM, ...)                                          \
    do {                                                                \
        if constexpr (std::is_same<E, __half>::value) FORM("f16", __VA_ARGS__); \
        else FORM("bf16", __VA_ARGS__);                                 \
    } while (0)

template <typename E, int N, int TRANS_B>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 8][4], const uint32_t a[4], uint64_t desc_b, int accumulate) {
    static_assert(N == 64 || N == 128, "wgmma_rs: N is 64 or 128");
    if constexpr (N == 64) WGMMA_AS(E, WGMMA_RS_ASM, 64, 32, 33, 34, 35, 36, 37, 38);
    else WGMMA_AS(E, WGMMA_RS_ASM, 128, 64, 65, 66, 67, 68, 69, 70);
}

template <typename E, int N, int TRANS>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b, int accumulate) {
    static_assert(N == 32 || N == 64 || N == 128 || N == 176, "wgmma_ss: N is 32, 64, 128 or 176");
    if constexpr (N == 32) WGMMA_AS(E, WGMMA_SS_ASM, 32, 16, 17, 18, 19);
    else if constexpr (N == 64) WGMMA_AS(E, WGMMA_SS_ASM, 64, 32, 33, 34, 35);
    else if constexpr (N == 128) WGMMA_AS(E, WGMMA_SS_ASM, 128, 64, 65, 66, 67);
    else WGMMA_AS(E, WGMMA_SS_ASM, 176, 88, 89, 90, 91);
}

#undef WGMMA_AS
#undef WGMMA_SS_ASM
#undef WGMMA_RS_ASM
#undef WGMMA_DOPS_N176
#undef WGMMA_REGS_N176
#undef WGMMA_DOPS_N128
#undef WGMMA_REGS_N128
#undef WGMMA_DOPS_N64
#undef WGMMA_REGS_N64
#undef WGMMA_DOPS_N32
#undef WGMMA_REGS_N32
#undef WGMMA_D4

#endif
