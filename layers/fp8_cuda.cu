/* layers/fp8_cuda.cu: bf16 -> FP8 casts with their amax, and delayed per-tensor scaling.
 *
 * The cast: q = fp8(x * s), rounded to nearest even and saturated at the format's largest finite
 * value (E4M3 448, E5M2 57344), written row-major, transposed, or both from one read of x; the
 * same pass records max |x| into the amax it is given (an atomicMax on the float's bits, exact:
 * every |x| is >= 0, whose bit patterns order as the floats do). cuBLASLt on Hopper takes FP8
 * operands only as "TN" (A transposed, B not), so the backward GEMMs read transposed copies;
 * making them in the pass that casts anyway costs one more write of 1 byte per element.
 * A 64 x 64 tile per block of 256 threads: each thread reads two 16-byte packs of 8 bf16 and
 * writes 8 fp8 bytes of the row-major copy per pack; the tile goes through shared memory and
 * each thread writes 16 bytes of the transposed copy. Bytes per element: 2 read, 1 per copy
 * written.
 *
 * Delayed scaling (Transformer Engine's recipe): the scale a step casts with comes from the amaxes
 * the earlier steps recorded: s = fp8_max / max(last H amaxes) / 2^margin, here rounded down to a
 * power of two so that x * s and the GEMM's descale 1/s are exact (the cast's only rounding is the
 * FP8 one). An amax history whose maximum is 0 or not finite keeps the scale it had.
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"
#include <cuda_fp8.h>

enum { FP8_TILE = 64, FP8_THREADS = 256 };

static __host__ __device__ __forceinline__ __nv_fp8_interpretation_t interp(int fmt) {
    return fmt == FP8_E5M2 ? __NV_E5M2 : __NV_E4M3;
}

/* s = 2^floor(log2(fp8_max / amax)) / 2^margin; `previous` when amax is 0, not finite, or the
 * ratio is not finite (amax a tiny subnormal). */
static __host__ __device__ __forceinline__ float fp8_scale_rule(float fp8_max, float amax, int margin, float previous) {
    if (!(amax > 0.0f) || !isfinite(amax)) return previous;
    float r = fp8_max / amax;
    if (!isfinite(r)) return previous;
    int e;
    frexpf(r, &e); /* r = f 2^e, f in [0.5, 1): floor(log2 r) = e - 1 */
    return ldexpf(1.0f, e - 1 - margin);
}

extern "C" float cuda_fp8_max(Fp8Format f) { return f == FP8_E5M2 ? 57344.0f : 448.0f; }

extern "C" float cuda_fp8_scale_for(Fp8Format f, float amax, int margin, float previous) {
    return fp8_scale_rule(cuda_fp8_max(f), amax, margin, previous);
}

__global__ void __launch_bounds__(FP8_THREADS)
fp8_cast_transpose_kernel(unsigned char *out, unsigned char *out_t, const bf16 *in, int rows, int cols,
                          int ld_in, const float *scale, float *amax, int fmt) {
    __shared__ unsigned char tile[FP8_TILE][FP8_TILE + 4];
    __shared__ float warp_amax[FP8_THREADS / 32];
    const int r0 = blockIdx.y * FP8_TILE, c0 = blockIdx.x * FP8_TILE;
    const float s = *scale;
    const __nv_fp8_interpretation_t kind = interp(fmt);
    float a = 0.0f;
    for (int p = threadIdx.x; p < FP8_TILE * FP8_TILE / 8; p += FP8_THREADS) {
        int rl = p / (FP8_TILE / 8), cl = (p % (FP8_TILE / 8)) * 8;
        int r = r0 + rl, c = c0 + cl;
        if (r >= rows || c >= cols) continue; /* cols is a multiple of 16: a pack is all in or all out */
        Pack16<bf16> v = load16_cs(in + (size_t)r * ld_in + c);
        unsigned char q[8];
        for (int j = 0; j < 8; j++) {
            float x = __bfloat162float(v.v[j]);
            a = fmaxf(a, fabsf(x));
            q[j] = (unsigned char)__nv_cvt_float_to_fp8(x * s, __NV_SATFINITE, kind);
            tile[rl][cl + j] = q[j];
        }
        if (out) *reinterpret_cast<uint2 *>(out + (size_t)r * cols + c) = *reinterpret_cast<const uint2 *>(q);
    }
    if (out_t) {
        __syncthreads();
        /* out_t (cols, rows): thread -> column cl of the tile, 16 consecutive rows of it */
        int cl = threadIdx.x / 4, rl = (threadIdx.x % 4) * 16;
        int c = c0 + cl, r = r0 + rl;
        if (c < cols && r < rows) { /* rows is a multiple of 16 */
            alignas(16) unsigned char q[16];
            for (int i = 0; i < 16; i++) q[i] = tile[rl + i][cl];
            *reinterpret_cast<uint4 *>(out_t + (size_t)c * rows + r) = *reinterpret_cast<const uint4 *>(q);
        }
    }
    a = warp_max(a);
    if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = a;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < FP8_THREADS / 32; w++) a = fmaxf(a, warp_amax[w]);
        atomicMax(reinterpret_cast<int *>(amax), __float_as_int(a));
    }
}

extern "C" void cuda_fp8_cast_transpose(Fp8Format f, void *out, void *out_t, const void *in, int rows, int cols,
                                        int ld_in, const float *scale, float *amax, cudaStream_t stream) {
    if (rows <= 0 || cols <= 0) return;
    dim3 grid(ceil_div_u(cols, FP8_TILE), ceil_div_u(rows, FP8_TILE));
    fp8_cast_transpose_kernel<<<grid, FP8_THREADS, 0, stream>>>((unsigned char *)out, (unsigned char *)out_t,
                                                                (const bf16 *)in, rows, cols, ld_in, scale, amax,
                                                                (int)f);
    CUDA_LAUNCH_CHECK();
}

/* One block: thread t owns tensors t, t + blockDim, ...; tensors [0, n_e4m3) are E4M3, the rest
 * E5M2. History entry 0 is the one being recorded; the update rolls it to 1 and clears 0. */
__global__ void fp8_update_scales_kernel(float *hist, float *scale, float *scale_inv, int n_e4m3, int n, int H,
                                         int margin) {
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        float *h = hist + (size_t)t * H;
        float m = 0.0f;
        for (int i = 0; i < H; i++) m = fmaxf(m, h[i]);
        float s = fp8_scale_rule(t < n_e4m3 ? 448.0f : 57344.0f, m, margin, scale[t]);
        scale[t] = s;
        scale_inv[t] = 1.0f / s;
        for (int i = H - 1; i > 0; i--) h[i] = h[i - 1];
        h[0] = 0.0f;
    }
}

extern "C" void cuda_fp8_update_scales(float *hist, float *scale, float *scale_inv, int n_e4m3, int n, int H,
                                       int margin, cudaStream_t stream) {
    if (n <= 0) return;
    fp8_update_scales_kernel<<<1, 256, 0, stream>>>(hist, scale, scale_inv, n_e4m3, n, H, margin);
    CUDA_LAUNCH_CHECK();
}

/* One tensor's scale from the amax being recorded alone (a first step: no history yet). */
__global__ void fp8_scale_from_current_kernel(const float *amax, float *scale, float *scale_inv, float fmax,
                                              int margin) {
    float s = fp8_scale_rule(fmax, *amax, margin, *scale);
    *scale = s;
    *scale_inv = 1.0f / s;
}

extern "C" void cuda_fp8_scale_from_current(Fp8Format f, const float *amax, float *scale, float *scale_inv,
                                            int margin, cudaStream_t stream) {
    fp8_scale_from_current_kernel<<<1, 1, 0, stream>>>(amax, scale, scale_inv, cuda_fp8_max(f), margin);
    CUDA_LAUNCH_CHECK();
}

__global__ void fill_kernel(float *x, float v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = v;
}

extern "C" void cuda_fill_f32(float *x, float v, size_t n, cudaStream_t stream) {
    if (n == 0) return;
    fill_kernel<<<ceil_div_u((unsigned)n, 256), 256, 0, stream>>>(x, v, (int)n);
    CUDA_LAUNCH_CHECK();
}
