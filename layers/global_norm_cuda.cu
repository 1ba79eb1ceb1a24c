/* layers/global_norm_cuda.cu: sum of squares of all gradients, for the global norm and clipping.
 *
 * Stage 1: a fixed grid of CUDA_NORM_BLOCKS blocks, each thread striding the array in a fixed
 * pattern, block sums into scratch; stage 2: one block adds the partials. The grid does not
 * depend on the device, so the result is bitwise the same run to run. Bytes: 4 n (one read).
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

__global__ void sum_squares_partials_kernel(float *partials, const float *x, size_t n) {
    __shared__ float shared[32];
    float s = 0.0f;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t n4 = n / 4;
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = x4[i];
        s += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    for (size_t i = n4 * 4 + (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        s += x[i] * x[i];
    s = block_sum(s, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}
__global__ void sum_partials_kernel(float *out, const float *partials, int n) {
    __shared__ float shared[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partials[i];
    s = block_sum(s, shared);
    if (threadIdx.x == 0) *out = s;
}

extern "C" void cuda_sum_of_squares(float *out, const float *x, size_t n, float *scratch,
                                    cudaStream_t stream) {
    sum_squares_partials_kernel<<<CUDA_NORM_BLOCKS, 256, 0, stream>>>(scratch, x, n);
    CUDA_LAUNCH_CHECK();
    sum_partials_kernel<<<1, 1024, 0, stream>>>(out, scratch, CUDA_NORM_BLOCKS);
    CUDA_LAUNCH_CHECK();
}
