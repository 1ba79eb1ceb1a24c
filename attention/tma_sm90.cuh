/* attention/tma_sm90.cuh: Hopper (sm_90a) asynchronous-copy building blocks for warp-specialised
 * kernels: shared-memory mbarriers (init, arrive, arrive with an expected transaction count,
 * wait on a phase's parity), TMA tile loads (cp.async.bulk.tensor, completing on an mbarrier) and
 * the warpgroup register hand-off (setmaxnreg).
 *
 * An mbarrier's phase completes when its pending arrival count reaches zero and every byte that
 * arrive.expect_tx announced has landed (TMA's complete_tx); waiting with parity P returns once
 * the phase of parity P has completed (a fresh barrier is in phase 0). A TMA box with the 128-byte
 * swizzle and an inner extent of 128 bytes writes rows of 128 bytes whose 16-byte chunk c sits at
 * c ^ (row % 8): wgmma_sm90.cuh's SW128 panel, when the destination is 1024-byte aligned. Boxes
 * that reach past the tensor's extent are filled with zeros, and still count their whole size
 * towards complete_tx.
 */
#ifndef ATTENTION_TMA_SM90_CUH
#define ATTENTION_TMA_SM90_CUH

#include <stdint.h>
#include <cuda.h> /* CUtensorMap (a type only: nothing links against the driver library) */
#include "attention/mma_bf16.cuh"

__device__ __forceinline__ void mbar_init(uint64_t *bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
/* After the barriers are initialised and before the block barrier that publishes them: makes the
 * initialisation visible to the async proxy (TMA's complete_tx) as well. */
__device__ __forceinline__ void mbar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* One arrival (release semantics at CTA scope: this thread's earlier writes are seen by whoever
 * waits for the phase). */
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
/* One arrival that also announces `bytes` of transactions (TMA loads) to complete this phase. */
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
}
/* Blocks until the phase of parity `parity` has completed (acquire semantics at CTA scope). */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
    const uint32_t addr = smem_addr(bar);
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\n"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(addr), "r"(parity)
                     : "memory");
    } while (!done);
}

/* TMA: the box at coordinates (c0, c1, c2) (innermost first, in elements) of the 3-D tensor
 * `map` describes -> shared memory at dst; its bytes complete_tx on `bar`. One thread issues it. */
__device__ __forceinline__ void tma_load_3d(void *dst, const CUtensorMap *map, int c0, int c1, int c2, uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::
            "r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
}
/* Brings a kernel-parameter tensor map's descriptor into the TMA unit's cache ahead of its use. */
__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap *map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

/* Warpgroup register hand-off: every thread of the warpgroup executes the same one. The block's
 * registers are allocated at launch (launch bounds); dec gives a warpgroup's surplus back to the
 * pool, inc waits until the pool can raise the warpgroup to N per thread. N: a multiple of 8 in
 * [24, 256]. */
template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg: a multiple of 8 in [24, 256]");
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg: a multiple of 8 in [24, 256]");
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

#endif
