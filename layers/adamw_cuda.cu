/* layers/adamw_cuda.cu: AdamW on fp32 master weights, writing the bf16 working copy in the same pass.
 *
 *   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr ( (m / bc1) / (sqrt(v / bc2) + eps) + wd p ),  bc = 1 - beta^t
 * Memory-bound: reads p, g, m, v (16 B) and writes p, m, v (12 B) + 2 B of bf16 per
 * parameter: 124M params -> 3.7 GB, about 1.5 ms at 2.5 TB/s.
 * Where every pointer allows it (fp32 arrays 16-byte aligned, the 16-bit copy 8-byte aligned) a
 * thread moves four parameters with 16-byte loads and stores (adamw4_kernel): the one-float
 * version reached ~2.9 TB/s on an H200 (1.28 ms for GPT-2 124M), the H200's ~4.8 TB/s needs
 * wider accesses. Same arithmetic per parameter, so both give the same bits.
 * The multiplier (clip x 1/S) and whether to step at all come from device memory, written by a
 * one-thread kernel from the gradients' sum of squares (or from a host value), so the trainer
 * need not read the norm before AdamW is queued.
 */
#include "layers/layers_cuda.h"
#include "layers/layers.h"
#include "layers/cuda_common.cuh"
#include <math.h>

/* One parameter's step, the formula above, for both kernels: m, v (the moments) and p are
 * updated where they are (global memory in adamw_kernel, registers in adamw4_kernel), the moments
 * first, p read after they are stored (the pointers carry no restrict), and the new p is returned
 * for the 16-bit copy. */
__device__ __forceinline__ float adamw_update(float &p, float grad, float &m, float &v, float lr, float beta1,
                                              float beta2, float bc1, float bc2, float eps, float wd,
                                              float grad_scale) {
    const float g = grad * grad_scale;
    const float mi = beta1 * m + (1.0f - beta1) * g;
    const float vi = beta2 * v + (1.0f - beta2) * g * g;
    m = mi;
    v = vi;
    const float pi = p;
    return p = pi - lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * pi);
}

template <typename T>
__global__ void adamw_kernel(float *params, T *params_x, const float *grads, float *m, float *v,
                             size_t n, float lr, float beta1, float beta2, float bc1, float bc2,
                             float eps, float wd, const float *gsc) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n || gsc[1] == 0.0f) return;
    const float grad_scale = gsc[0];
    const float p = adamw_update(params[i], grads[i], m[i], v[i], lr, beta1, beta2, bc1, bc2, eps, wd, grad_scale);
    if (params_x) params_x[i] = from_f32<T>(p);
}

template <typename T> struct Pack4 { T v[4]; };
template <typename T>
__global__ void adamw4_kernel(float *params, T *params_x, const float *grads, float *m, float *v,
                              size_t n4, float lr, float beta1, float beta2, float bc1, float bc2,
                              float eps, float wd, const float *gsc) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4 || gsc[1] == 0.0f) return;
    const float grad_scale = gsc[0];
    float4 g = __ldcs(reinterpret_cast<const float4 *>(grads) + i);
    float4 mm = __ldcs(reinterpret_cast<const float4 *>(m) + i);
    float4 vv = __ldcs(reinterpret_cast<const float4 *>(v) + i);
    float4 pp = __ldcs(reinterpret_cast<const float4 *>(params) + i);
    float *gs = &g.x, *ms = &mm.x, *vs = &vv.x, *ps = &pp.x;
    Pack4<T> x;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        x.v[k] = from_f32<T>(adamw_update(ps[k], gs[k], ms[k], vs[k], lr, beta1, beta2, bc1, bc2, eps, wd, grad_scale));
    }
    __stcs(reinterpret_cast<float4 *>(m) + i, mm);
    __stcs(reinterpret_cast<float4 *>(v) + i, vv);
    __stcs(reinterpret_cast<float4 *>(params) + i, pp);
    if (params_x) {
        if (sizeof(T) == 2) *reinterpret_cast<uint2 *>(params_x + 4 * i) = *reinterpret_cast<const uint2 *>(&x);
        else *reinterpret_cast<float4 *>(params_x + 4 * i) = *reinterpret_cast<const float4 *>(&x);
    }
}

static int aligned(const void *p, size_t a) { return p == NULL || ((size_t)p % a) == 0; }

template <typename T>
static void adamw_as(float *params, T *params_x, const float *grads, float *m, float *v, size_t n,
                     float lr, float beta1, float beta2, float bc1, float bc2, float eps, float wd,
                     const float *grad_scale, cudaStream_t stream) {
    size_t n4 = 0;
    if (aligned(params, 16) && aligned(grads, 16) && aligned(m, 16) && aligned(v, 16) &&
        aligned(params_x, 4 * sizeof(T)))
        n4 = n / 4;
    if (n4) {
        adamw4_kernel<<<ceil_div_u(n4, 256), 256, 0, stream>>>(params, params_x, grads, m, v, n4, lr, beta1,
                                                               beta2, bc1, bc2, eps, wd, grad_scale);
        CUDA_LAUNCH_CHECK();
    }
    size_t d = 4 * n4; /* the tail (or everything, unaligned) one parameter a thread */
    if (d < n) {
        adamw_kernel<<<ceil_div_u(n - d, 256), 256, 0, stream>>>(params + d, params_x ? params_x + d : NULL,
                                                                 grads + d, m + d, v + d, n - d, lr, beta1,
                                                                 beta2, bc1, bc2, eps, wd, grad_scale);
        CUDA_LAUNCH_CHECK();
    }
}

extern "C" void cuda_adamw(Precision p, float *params, void *params_x, const float *grads,
                           float *m, float *v, size_t n, float lr, float beta1, float beta2,
                           float eps, float weight_decay, const float *grad_scale, int t,
                           cudaStream_t stream) {
    if (n == 0) return;
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    if (p == PRECISION_BF16)
        adamw_as(params, (bf16 *)params_x, grads, m, v, n, lr, beta1, beta2, bc1, bc2, eps, weight_decay, grad_scale, stream);
    else if (p == PRECISION_FP16)
        adamw_as(params, (half *)params_x, grads, m, v, n, lr, beta1, beta2, bc1, bc2, eps, weight_decay, grad_scale, stream);
    else
        adamw_as(params, (float *)params_x, grads, m, v, n, lr, beta1, beta2, bc1, bc2, eps, weight_decay, grad_scale, stream);
}

__global__ void adamw_scale_set_kernel(float *gsc, float scale) {
    gsc[0] = scale;
    gsc[1] = 1.0f;
}
extern "C" void cuda_adamw_scale_set(float *grad_scale, float scale, cudaStream_t stream) {
    adamw_scale_set_kernel<<<1, 1, 0, stream>>>(grad_scale, scale);
    CUDA_LAUNCH_CHECK();
}
/* sqrtf is IEEE-rounded here (no fast math), as the host's sqrtf of the same sum */
__global__ void adamw_scale_from_sumsq_kernel(float *gsc, const float *sumsq, float max_norm, float S, int skip) {
    float scale = 0.0f;
    int run = adamw_grad_scale(sqrtf(*sumsq), max_norm, S, skip, &scale);
    gsc[0] = run ? scale : 0.0f;
    gsc[1] = run ? 1.0f : 0.0f;
}
extern "C" void cuda_adamw_scale_from_sumsq(float *grad_scale, const float *sumsq, float max_norm, float loss_scale,
                                            int skip_nonfinite, cudaStream_t stream) {
    adamw_scale_from_sumsq_kernel<<<1, 1, 0, stream>>>(grad_scale, sumsq, max_norm, loss_scale, skip_nonfinite);
    CUDA_LAUNCH_CHECK();
}

template <typename T>
__global__ void convert_kernel(T *dst, const float *src, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = from_f32<T>(src[i]);
}
extern "C" void cuda_convert_from_f32(Precision p, void *dst, const float *src, size_t n,
                                      cudaStream_t stream) {
    if (n == 0) return;
    if (p == PRECISION_BF16)
        convert_kernel<<<ceil_div_u(n, 256), 256, 0, stream>>>((bf16 *)dst, src, n);
    else if (p == PRECISION_FP16)
        convert_kernel<<<ceil_div_u(n, 256), 256, 0, stream>>>((half *)dst, src, n);
    else
        convert_kernel<<<ceil_div_u(n, 256), 256, 0, stream>>>((float *)dst, src, n);
    CUDA_LAUNCH_CHECK();
}
