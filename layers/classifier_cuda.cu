/* layers/classifier_cuda.cu: softmax + cross-entropy + its gradient over the vocabulary, fused.
 *
 * Per row z (V logits): M = max z, S = sum exp(z - M), loss = log S + M - z[target],
 * dz = (exp(z - M) / S - onehot(target)) * dloss, written over z in place, so no probability
 * tensor and no separate gradient tensor ever exist. A block per row; pass 1 keeps a running
 * max and rescaled sum per thread (online softmax: one read), pass 2 re-reads the row (from
 * L2: a 100 KB bf16 row fits easily) and writes dz. DRAM bytes per row: ~1 read + 1 write.
 * (Staging the row in shared memory instead was measured slower: 1.99 ms against 1.74 ms for
 * 16K rows of 50304 bf16 on an H100, from the lower occupancy; the re-read hits L2.)
 * Rows of up to 8 packs a thread of 1024 (bf16: 65536 logits; GPT-2's 50304 is 7) are held in
 * registers instead (classifier_regs_kernel): one DRAM read and one write a row, the second pass
 * never re-reads, whether or not the row is still in L2 (with ~500 rows of 100 KB in flight over
 * the SMs, it often is not: the re-read cost a third DRAM pass). The maximum is exact (a first
 * sweep over the registers), so each logit costs two exponentials: one in the sum, one in the
 * gradient.
 * Where the GPU lends enough shared memory (sm_80+: a row's 16 bytes x 8 packs x 1024 threads),
 * classifier_stream_kernel runs instead: one block per SM walks rows with a stride of the grid,
 * and while it computes row r from registers, row r + grid is already on its way into shared
 * memory (cp.async, each thread staging exactly the packs it will hold). The register kernel's
 * block does load, reduce and store one after another with nothing else on its SM (1024 threads
 * of <= 64 registers fill the register file), so DRAM idles while it computes: ncu on an H200,
 * 16384 rows of 50304 bf16 (3.3 GB moved): 1.67 ms, 2.0 TB/s (dev/cuda_trainer_notes.md).
 */
#include "layers/layers_cuda.h"
#include "layers/cuda_common.cuh"

enum { CLS_THREADS = 512 };

template <typename T>
__global__ void __launch_bounds__(CLS_THREADS)
classifier_kernel(T *logits, float *losses, const int *targets, const float *dloss_ptr,
                  int V, int ld, int write_dlogits) {
    __shared__ float shared[32];
    constexpr int P = Pack16<T>::n;
    int row = blockIdx.x;
    T *z = logits + (size_t)row * ld;
    int target = targets[row];
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x * P; i < V; i += blockDim.x * P) {
        Pack16<T> x = load16(z + i);
        for (int j = 0; j < P; j++) {
            if (i + j >= V) break;
            float v = to_f32(x.v[j]);
            if (v > m) { s *= __expf(m - v); m = v; }
            s += __expf(v - m);
        }
    }
    float M = block_max(m, shared);
    float S = block_sum(m == -INFINITY ? 0.0f : s * __expf(m - M), shared);
    float lse = M + logf(S);
    if (threadIdx.x == 0)
        losses[row] = target >= 0 ? lse - to_f32(z[target]) : 0.0f;
    if (!write_dlogits) return;
    __syncthreads(); /* z[target] was read above before anyone overwrites it */
    float dloss = target >= 0 ? *dloss_ptr : 0.0f;
    float inv_S = 1.0f / S;
    for (int i = threadIdx.x * P; i < ld; i += blockDim.x * P) {
        Pack16<T> x = load16_cs(z + i), d;
        for (int j = 0; j < P; j++) {
            int col = i + j;
            float g = 0.0f;
            if (col < V) {
                float prob = __expf(to_f32(x.v[j]) - M) * inv_S;
                g = (prob - (col == target ? 1.0f : 0.0f)) * dloss;
            }
            d.v[j] = from_f32<T>(g);
        }
        store16(z + i, d);
    }
}

/* The row in registers: thread t holds packs t, t + blockDim.x, ... (NP of them), in the order of
 * the row, so loads and stores stay coalesced. */
template <typename T, int NP>
__global__ void __launch_bounds__(1024)
classifier_regs_kernel(T *logits, float *losses, const int *targets, const float *dloss_ptr,
                       int V, int ld, int write_dlogits) {
    __shared__ float shared[32];
    constexpr int P = Pack16<T>::n;
    const int row = blockIdx.x;
    T *z = logits + (size_t)row * ld;
    const int target = targets[row];
    const float zt = target >= 0 ? to_f32(z[target]) : 0.0f;
    Pack16<T> x[NP];
#pragma unroll
    for (int k = 0; k < NP; k++) {
        int i = (threadIdx.x + k * blockDim.x) * P;
        if (i < ld) x[k] = load16_cs(z + i);
    }
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < NP; k++) {
        int i = (threadIdx.x + k * blockDim.x) * P;
#pragma unroll
        for (int j = 0; j < P; j++)
            if (i + j < V) m = fmaxf(m, to_f32(x[k].v[j]));
    }
    const float M = block_max(m, shared);
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < NP; k++) {
        int i = (threadIdx.x + k * blockDim.x) * P;
#pragma unroll
        for (int j = 0; j < P; j++)
            if (i + j < V) s += __expf(to_f32(x[k].v[j]) - M);
    }
    const float S = block_sum(s, shared);
    if (threadIdx.x == 0) losses[row] = target >= 0 ? M + logf(S) - zt : 0.0f;
    /* Keep the row as packed 16-bit words across the reduction: without this the compiler keeps
     * the sum loop's converted floats alive for the gradient loop and spills (64 registers at
     * 1024 threads). The empty asm makes the words "new", so nothing computed from them is reused. */
#pragma unroll
    for (int k = 0; k < NP; k++) {
        unsigned *w = reinterpret_cast<unsigned *>(&x[k]);
#pragma unroll
        for (int q = 0; q < 4; q++) asm volatile("" : "+r"(w[q]));
    }
    if (!write_dlogits) return;
    const float dloss = target >= 0 ? *dloss_ptr : 0.0f, inv_S = 1.0f / S;
#pragma unroll
    for (int k = 0; k < NP; k++) {
        int i = (threadIdx.x + k * blockDim.x) * P;
        if (i >= ld) continue;
        Pack16<T> d;
#pragma unroll
        for (int j = 0; j < P; j++) {
            int col = i + j;
            float g = 0.0f;
            if (col < V) g = (__expf(to_f32(x[k].v[j]) - M) * inv_S - (col == target ? 1.0f : 0.0f)) * dloss;
            d.v[j] = from_f32<T>(g);
        }
        store16(z + i, d);
    }
}

/* 16 bytes global -> shared without a register stop (sm_80+; a plain copy below). */
__device__ __forceinline__ void stage16(void *smem, const void *gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(gmem) : "memory");
#else
    *reinterpret_cast<int4 *>(smem) = *reinterpret_cast<const int4 *>(gmem);
#endif
}
__device__ __forceinline__ void stage_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

#define LOG2E_CLS 1.4426950408889634f
/* 2^x by the SFU alone (what __expf does after its multiply), flushing subnormal results. */
__device__ __forceinline__ float ex2_fast(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* The register kernel's arithmetic over rows blockIdx.x, blockIdx.x + gridDim.x, ..., with the
 * next row staged in shared memory (stage[k * blockDim.x + t] is thread t's pack k) while the
 * current one is reduced and written. A thread reads back only what it staged itself, so the
 * staging needs no barrier. */
template <typename T, int NP>
__global__ void __launch_bounds__(1024)
classifier_stream_kernel(T *logits, float *losses, const int *targets, const float *dloss_ptr, int N,
                         int V, int ld, int write_dlogits) {
    extern __shared__ int4 stage[];
    __shared__ float shared[32];
    constexpr int P = Pack16<T>::n;
    const int packs = ld / P;
    const float dloss_all = write_dlogits ? *dloss_ptr : 0.0f;
    auto prefetch = [&](int row) {
        const T *z = logits + (size_t)row * ld;
#pragma unroll
        for (int k = 0; k < NP; k++) {
            int pk = threadIdx.x + k * blockDim.x;
            if (pk < packs) stage16(&stage[k * blockDim.x + threadIdx.x], z + (size_t)pk * P);
        }
    };
    int row = blockIdx.x;
    if (row < N) prefetch(row);
    for (; row < N; row += gridDim.x) {
        stage_wait_all();
        Pack16<T> x[NP];
#pragma unroll
        for (int k = 0; k < NP; k++)
            if (threadIdx.x + k * blockDim.x < packs)
                *reinterpret_cast<int4 *>(&x[k]) = stage[k * blockDim.x + threadIdx.x];
        if (row + gridDim.x < N) prefetch(row + gridDim.x);
        const int target = targets[row];
        /* thread 0's read of the target logit, from L2 (just staged), before block_max's
         * barrier, so no thread has overwritten it with its gradient yet */
        const float zt = threadIdx.x == 0 && target >= 0 ? to_f32(logits[(size_t)row * ld + target]) : 0.0f;
        /* Packs wholly below V (all but the row's last few) take the unchecked path: ncu
         * found the per-element bounds tests and the FADD + FMUL ahead of each exponential
         * keeping the SM 76% busy and DRAM at 44%. */
        float m = -INFINITY;
#pragma unroll
        for (int k = 0; k < NP; k++) {
            int i = (threadIdx.x + k * blockDim.x) * P;
            if (i + P <= V) {
#pragma unroll
                for (int j = 0; j < P; j++) m = fmaxf(m, to_f32(x[k].v[j]));
            } else {
#pragma unroll
                for (int j = 0; j < P; j++)
                    if (i + j < V) m = fmaxf(m, to_f32(x[k].v[j]));
            }
        }
        const float M = block_max(m, shared), Ml = M * LOG2E_CLS;
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < NP; k++) {
            int i = (threadIdx.x + k * blockDim.x) * P;
            if (i + P <= V) {
#pragma unroll
                for (int j = 0; j < P; j++) s += ex2_fast(fmaf(to_f32(x[k].v[j]), LOG2E_CLS, -Ml));
            } else {
#pragma unroll
                for (int j = 0; j < P; j++)
                    if (i + j < V) s += ex2_fast(fmaf(to_f32(x[k].v[j]), LOG2E_CLS, -Ml));
            }
        }
        const float S = block_sum(s, shared);
        if (threadIdx.x == 0) losses[row] = target >= 0 ? M + logf(S) - zt : 0.0f;
#pragma unroll
        for (int k = 0; k < NP; k++) {
            unsigned *w = reinterpret_cast<unsigned *>(&x[k]);
#pragma unroll
            for (int q = 0; q < 4; q++) asm volatile("" : "+r"(w[q]));
        }
        if (!write_dlogits) continue;
        T *z = logits + (size_t)row * ld;
        const float dloss = target >= 0 ? dloss_all : 0.0f, c = dloss / S;
#pragma unroll
        for (int k = 0; k < NP; k++) {
            int i = (threadIdx.x + k * blockDim.x) * P;
            if (i >= ld) continue;
            Pack16<T> d;
            if (i + P <= V && (target < i || target >= i + P)) {
#pragma unroll
                for (int j = 0; j < P; j++) d.v[j] = from_f32<T>(ex2_fast(fmaf(to_f32(x[k].v[j]), LOG2E_CLS, -Ml)) * c);
            } else {
#pragma unroll
                for (int j = 0; j < P; j++) {
                    int col = i + j;
                    float g = 0.0f;
                    if (col < V) g = ex2_fast(fmaf(to_f32(x[k].v[j]), LOG2E_CLS, -Ml)) * c - (col == target ? dloss : 0.0f);
                    d.v[j] = from_f32<T>(g);
                }
            }
            store16(z + i, d);
        }
    }
}

/* Blocks of the streaming kernel: one per SM (its shared memory and registers fill an SM), and
 * 0 where the GPU cannot lend NP packs x 16 bytes x 1024 threads of shared memory to a block. */
static int classifier_stream_blocks(size_t smem_bytes) {
    static int sms = -1, optin = 0;
    if (sms < 0) {
        int dev = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    }
    return smem_bytes + 1024 <= (size_t)optin ? sms : 0;
}

/* The register kernel where a row is at most 8 packs a thread of 1024 (bf16 / fp16: 65536 logits,
 * fp32: 32768); a row of at most 1024 packs runs one pack a thread on as many warps as it needs.
 * 0 when the row is longer (the two-pass kernel then runs). */
template <typename T>
static int classifier_regs(T *logits, float *losses, const int *targets, const float *dloss, int N,
                           int V, int ld, int write_dlogits, cudaStream_t stream) {
    constexpr int P = Pack16<T>::n;
    int packs = (ld + P - 1) / P, np = (packs + 1023) / 1024;
    int threads = np <= 1 ? (packs + 31) / 32 * 32 : 1024;
    /* the streaming kernel where rows are long enough to keep 1024 threads busy (np >= 2) and
     * there are more rows than SMs; the register kernel otherwise */
    const size_t smem = (size_t)np * 1024 * 16;
    const int sms = np >= 2 && ld % P == 0 ? classifier_stream_blocks(smem) : 0;
#define CLS_REGS(K)                                                                                  \
    if (np <= K) {                                                                                   \
        if (sms > 0 && N > sms) {                                                                    \
            CUDA_CHECK(cudaFuncSetAttribute(classifier_stream_kernel<T, K>,                          \
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)); \
            classifier_stream_kernel<T, K><<<sms, 1024, smem, stream>>>(logits, losses, targets,     \
                                                                        dloss, N, V, ld,             \
                                                                        write_dlogits);              \
        } else {                                                                                     \
            classifier_regs_kernel<T, K><<<N, threads, 0, stream>>>(logits, losses, targets, dloss,  \
                                                                    V, ld, write_dlogits);           \
        }                                                                                            \
        CUDA_LAUNCH_CHECK();                                                                         \
        return 1;                                                                                    \
    }
    CLS_REGS(1) CLS_REGS(2) CLS_REGS(3) CLS_REGS(4) CLS_REGS(5) CLS_REGS(6) CLS_REGS(7) CLS_REGS(8)
#undef CLS_REGS
    return 0;
}

extern "C" void cuda_classifier(Precision p, void *logits, float *losses, const int *targets,
                                const float *dloss, int N, int V, int ld, int write_dlogits,
                                cudaStream_t stream) {
    if (N <= 0) return;
    if (p == PRECISION_BF16 && classifier_regs((bf16 *)logits, losses, targets, dloss, N, V, ld, write_dlogits, stream)) return;
    if (p == PRECISION_FP16 && classifier_regs((half *)logits, losses, targets, dloss, N, V, ld, write_dlogits, stream)) return;
    if (p == PRECISION_FP32 && classifier_regs((float *)logits, losses, targets, dloss, N, V, ld, write_dlogits, stream)) return;
    if (p == PRECISION_BF16)
        classifier_kernel<<<N, CLS_THREADS, 0, stream>>>((bf16 *)logits, losses, targets, dloss, V, ld, write_dlogits);
    else if (p == PRECISION_FP16)
        classifier_kernel<<<N, CLS_THREADS, 0, stream>>>((half *)logits, losses, targets, dloss, V, ld, write_dlogits);
    else
        classifier_kernel<<<N, CLS_THREADS, 0, stream>>>((float *)logits, losses, targets, dloss, V, ld, write_dlogits);
    CUDA_LAUNCH_CHECK();
}

__global__ void sum_losses_kernel(float *out, const float *losses, int N, const float *scale) {
    __shared__ float shared[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < N; i += blockDim.x) s += losses[i];
    s = block_sum(s, shared);
    if (threadIdx.x == 0) *out = s * *scale;
}
extern "C" void cuda_sum_losses(float *out, const float *losses, int N, const float *scale,
                                cudaStream_t stream) {
    sum_losses_kernel<<<1, 1024, 0, stream>>>(out, losses, N, scale);
    CUDA_LAUNCH_CHECK();
}

/* A warp per vocabulary entry: out[v] = x . wte[v, :] */
template <typename T>
__global__ void logits_row_kernel(float *out, const T *x, const T *wte, int V, int C) {
    int v = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (v >= V) return;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += to_f32(x[c]) * to_f32(wte[(size_t)v * C + c]);
    s = warp_sum(s);
    if (lane == 0) out[v] = s;
}
extern "C" void cuda_logits_row(Precision p, float *out, const void *x, const void *wte, int V,
                                int C, cudaStream_t stream) {
    if (p == PRECISION_BF16)
        logits_row_kernel<<<ceil_div_u(V, 8), 256, 0, stream>>>(out, (const bf16 *)x, (const bf16 *)wte, V, C);
    else if (p == PRECISION_FP16)
        logits_row_kernel<<<ceil_div_u(V, 8), 256, 0, stream>>>(out, (const half *)x, (const half *)wte, V, C);
    else
        logits_row_kernel<<<ceil_div_u(V, 8), 256, 0, stream>>>(out, (const float *)x, (const float *)wte, V, C);
    CUDA_LAUNCH_CHECK();
}
