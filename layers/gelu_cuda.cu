/* layers/gelu_cuda.cu: GELU (tanh approximation) and elementwise add, where no matmul fuses them.
 *
 *   gelu(x)  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
 *   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 * Memory-bound: 16-byte loads and stores, one pass (read n, write n; backward reads 2n).
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

__device__ __forceinline__ float gelu_f(float x) {
    float u = GELU_K * (x + GELU_A * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
    float u = GELU_K * (x + GELU_A * x * x * x);
    float th = tanhf(u);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * GELU_A * x * x);
}

/* Each thread handles one 16-byte pack; the ragged tail goes element by element. */
template <typename T>
__global__ void gelu_forward_kernel(T *out, const T *inp, size_t n) {
    constexpr int P = Pack16<T>::n;
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * P;
    if (i + P <= n) {
        Pack16<T> x = load16_cs(inp + i), y;
        for (int j = 0; j < P; j++) y.v[j] = from_f32<T>(gelu_f(to_f32(x.v[j])));
        store16(out + i, y);
    } else {
        for (; i < n; i++) out[i] = from_f32<T>(gelu_f(to_f32(inp[i])));
    }
}
template <typename T>
__global__ void gelu_backward_kernel(T *dinp, const T *inp, const T *dout, size_t n) {
    constexpr int P = Pack16<T>::n;
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * P;
    if (i + P <= n) {
        Pack16<T> x = load16_cs(inp + i), d = load16_cs(dout + i), r;
        for (int j = 0; j < P; j++)
            r.v[j] = from_f32<T>(gelu_grad_f(to_f32(x.v[j])) * to_f32(d.v[j]));
        store16(dinp + i, r);
    } else {
        for (; i < n; i++) dinp[i] = from_f32<T>(gelu_grad_f(to_f32(inp[i])) * to_f32(dout[i]));
    }
}
template <typename T>
__global__ void add_kernel(T *out, const T *a, const T *b, size_t n) {
    constexpr int P = Pack16<T>::n;
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * P;
    if (i + P <= n) {
        Pack16<T> x = load16_cs(a + i), y = load16_cs(b + i), r;
        for (int j = 0; j < P; j++) r.v[j] = from_f32<T>(to_f32(x.v[j]) + to_f32(y.v[j]));
        store16(out + i, r);
    } else {
        for (; i < n; i++) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
    }
}

static unsigned pack_blocks(size_t n, int P, int threads) { return ceil_div_u(ceil_div_u(n, P), threads); }

extern "C" void cuda_gelu_forward(Precision p, void *out, const void *inp, size_t n,
                                  cudaStream_t stream) {
    if (n == 0) return;
    if (p == PRECISION_BF16)
        gelu_forward_kernel<<<pack_blocks(n, 8, 256), 256, 0, stream>>>((bf16 *)out, (const bf16 *)inp, n);
    else if (p == PRECISION_FP16)
        gelu_forward_kernel<<<pack_blocks(n, 8, 256), 256, 0, stream>>>((half *)out, (const half *)inp, n);
    else
        gelu_forward_kernel<<<pack_blocks(n, 4, 256), 256, 0, stream>>>((float *)out, (const float *)inp, n);
    CUDA_LAUNCH_CHECK();
}
extern "C" void cuda_gelu_backward(Precision p, void *dinp, const void *inp, const void *dout,
                                   size_t n, cudaStream_t stream) {
    if (n == 0) return;
    if (p == PRECISION_BF16)
        gelu_backward_kernel<<<pack_blocks(n, 8, 256), 256, 0, stream>>>(
            (bf16 *)dinp, (const bf16 *)inp, (const bf16 *)dout, n);
    else if (p == PRECISION_FP16)
        gelu_backward_kernel<<<pack_blocks(n, 8, 256), 256, 0, stream>>>(
            (half *)dinp, (const half *)inp, (const half *)dout, n);
    else
        gelu_backward_kernel<<<pack_blocks(n, 4, 256), 256, 0, stream>>>(
            (float *)dinp, (const float *)inp, (const float *)dout, n);
    CUDA_LAUNCH_CHECK();
}
extern "C" void cuda_add(Precision p, void *out, const void *a, const void *b, size_t n,
                         cudaStream_t stream) {
    if (n == 0) return;
    if (p == PRECISION_BF16)
        add_kernel<<<pack_blocks(n, 8, 256), 256, 0, stream>>>((bf16 *)out, (const bf16 *)a, (const bf16 *)b, n);
    else if (p == PRECISION_FP16)
        add_kernel<<<pack_blocks(n, 8, 256), 256, 0, stream>>>((half *)out, (const half *)a, (const half *)b, n);
    else
        add_kernel<<<pack_blocks(n, 4, 256), 256, 0, stream>>>((float *)out, (const float *)a, (const float *)b, n);
    CUDA_LAUNCH_CHECK();
}
