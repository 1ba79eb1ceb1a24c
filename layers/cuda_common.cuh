/* layers/cuda_common.cuh: what every CUDA layer shares (internal to the .cu files).
 *
 * Element types: the layers are templates over T = float (fp32 runs), __nv_bfloat16 (bf16
 * mixed precision) or __half (fp16 mixed precision); arithmetic is always fp32 in registers, so
 * the three instantiate the same code and differ only in to_f32 / from_f32 (rounding to nearest
 * even; fp16 overflows to +-inf past 65504, which the loss scaler's finite check catches).
 * Pack16<T> is 16 bytes of T, so every thread moves 16 bytes per load or store (4 floats or
 * 8 bf16 / fp16).
 */
#ifndef CUDA_COMMON_CUH
#define CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdio.h>
#include <stdlib.h>
#include "model/precision.h"

#define CUDA_CHECK(call)                                                                    \
    do {                                                                                    \
        cudaError_t err_ = (call);                                                          \
        if (err_ != cudaSuccess) {                                                          \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), __FILE__, \
                    __LINE__, cudaGetErrorString(err_));                                    \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)
/* After a launch: catches bad configurations at once (asynchronous faults surface later). */
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

typedef __nv_bfloat16 bf16;
/* fp16 is cuda_fp16.h's `half` (= __half). */

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ half from_f32<half>(float x) { return __float2half_rn(x); }

template <typename T> struct alignas(16) Pack16 {
    static constexpr int n = 16 / sizeof(T);
    T v[n];
};
template <typename T> __device__ __forceinline__ Pack16<T> load16(const T *p) {
    Pack16<T> r;
    *reinterpret_cast<int4 *>(&r) = *reinterpret_cast<const int4 *>(p);
    return r;
}
/* Streaming load: data read once, keep it out of the way of what is reused. */
template <typename T> __device__ __forceinline__ Pack16<T> load16_cs(const T *p) {
    Pack16<T> r;
    *reinterpret_cast<int4 *>(&r) = __ldcs(reinterpret_cast<const int4 *>(p));
    return r;
}
template <typename T> __device__ __forceinline__ void store16(T *p, const Pack16<T> &r) {
    *reinterpret_cast<int4 *>(p) = *reinterpret_cast<const int4 *>(&r);
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
/* Sum over a block of up to 1024 threads, in a fixed order (deterministic); every thread
 * gets the result. `shared` holds 32 floats. */
__device__ __forceinline__ float block_sum(float x, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = (blockDim.x + 31) / 32;
    x = warp_sum(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    float r = lane < nwarps ? shared[lane] : 0.0f;
    return warp_sum(r);
}
__device__ __forceinline__ float block_max(float x, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = (blockDim.x + 31) / 32;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) shared[warp] = x;
    __syncthreads();
    float r = lane < nwarps ? shared[lane] : -INFINITY;
    return warp_max(r);
}

static inline unsigned ceil_div_u(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

#endif
