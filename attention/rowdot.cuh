/* attention/rowdot.cuh: the fused backwards' first step, D_i = rowsum(dO_i * O_i) in fp32, one
 * kernel for flash's and memeff's. A 2-D grid (row blocks of a head, batch*head); each row is read
 * by D / kVec threads owning kVec consecutive elements (16 bytes: 8 bf16 / fp16, 4 fp32), summed in
 * a fixed order (deterministic). VEC: 16-byte loads (16-byte aligned pointers, leading dimension a
 * multiple of kVec); otherwise element by element (memeff's fallback for unaligned rows).
 * zero_rows: NULL, or a (B*H*T, D) fp32 array whose rows are zeroed on the way (flash's dQ
 * accumulator, which its backward adds into). */
#ifndef ATTENTION_ROWDOT_CUH
#define ATTENTION_ROWDOT_CUH

#include "attention/cuda_common.cuh"
#include "attention/mma_bf16.cuh" /* unpack2 */

template <typename E, int D> struct RowdotTraits {
    static constexpr int kVec = 16 / (int)sizeof(E);  /* elements per thread */
    static constexpr int kLanes = D / kVec;            /* threads per row: 4 .. 32, a power of 2 */
    static constexpr int kRows = 256 / kLanes;         /* rows per 256-thread block */
    static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "rowdot: D / kVec lanes");
};

template <typename E, int D, bool VEC>
__global__ void __launch_bounds__(256) attn_rowdot_kernel(const E *o, const E *dout, long long ld_o, int T, int H,
                                                          float *dvec, float *zero_rows) {
    using R = RowdotTraits<E, D>;
    const int bh = blockIdx.y, b = bh / H, h = bh % H;
    const int t = blockIdx.x * R::kRows + threadIdx.x / R::kLanes, part = threadIdx.x % R::kLanes;
    float acc = 0.0f;
    if (t < T) {
        const long long off = ((long long)b * T + t) * ld_o + (long long)h * D + part * R::kVec;
        if constexpr (VEC && sizeof(E) == 2) {
            uint4 x = *(const uint4 *)(dout + off), y = *(const uint4 *)(o + off);
            const uint32_t *xa = (const uint32_t *)&x, *ya = (const uint32_t *)&y;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 xf = unpack2<E>(xa[e]), yf = unpack2<E>(ya[e]);
                acc = fmaf(xf.x, yf.x, acc);
                acc = fmaf(xf.y, yf.y, acc);
            }
        } else if constexpr (VEC) {
            float4 x = *(const float4 *)(dout + off), y = *(const float4 *)(o + off);
            acc = fmaf(x.x, y.x, acc);
            acc = fmaf(x.y, y.y, acc);
            acc = fmaf(x.z, y.z, acc);
            acc = fmaf(x.w, y.w, acc);
        } else {
#pragma unroll
            for (int e = 0; e < R::kVec; e++) acc = fmaf(to_float(dout[off + e]), to_float(o[off + e]), acc);
        }
        if (zero_rows) {
            float4 *dst = (float4 *)(zero_rows + ((long long)bh * T + t) * D + part * R::kVec);
#pragma unroll
            for (int e = 0; e < R::kVec / 4; e++) dst[e] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }
#pragma unroll
    for (int x = R::kLanes / 2; x > 0; x >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, x);
    if (t < T && part == 0) dvec[(long long)bh * T + t] = acc;
}

/* Launches it over the B * H heads of T rows (o, dout: token-major, rows ld_o elements apart, the
 * head's D columns at h * D); vec: the rows allow 16-byte loads. */
template <typename E, int D>
static void attn_rowdot(const void *o, const void *dout, long long ld_o, int B, int T, int H, float *dvec,
                        float *zero_rows, bool vec, cudaStream_t st) {
    using R = RowdotTraits<E, D>;
    dim3 grid((unsigned)((T + R::kRows - 1) / R::kRows), (unsigned)(B * H));
    if (vec)
        attn_rowdot_kernel<E, D, true><<<grid, 256, 0, st>>>((const E *)o, (const E *)dout, ld_o, T, H, dvec, zero_rows);
    else
        attn_rowdot_kernel<E, D, false><<<grid, 256, 0, st>>>((const E *)o, (const E *)dout, ld_o, T, H, dvec, zero_rows);
}

/* Whether rows of `ld` elements at these pointers allow attn_rowdot's 16-byte loads. */
template <typename E>
static bool attn_rowdot_vec(const void *o, const void *dout, long long ld) {
    return (((uintptr_t)o | (uintptr_t)dout) & 15) == 0 && ld % (16 / (long long)sizeof(E)) == 0;
}

#endif
