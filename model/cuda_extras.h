/* model/cuda_extras.h: what the training loop may ask of the CUDA build beyond the Backend
 * vtable: the GPU's name and peak rate (for MFU), cudaMemGetInfo, CUDA graphs, TF32.
 *
 * One entry point, so a CPU-only build needs one weak stub returning NULL
 * (model/cuda_fallback.c):   const CudaExtras *x = cuda_extras();   if (x) ...
 */
#ifndef CUDA_EXTRAS_H
#define CUDA_EXTRAS_H

#include <stddef.h>
#include "model/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    /* The current device's name ("NVIDIA H100 80GB HBM3"); 0, or -1 without a device. */
    int (*device_name)(char *buf, size_t len);
    /* Peak dense TFLOP/s of the current GPU for `p` (bf16 tensor cores; fp32 means TF32
     * tensor cores when TF32 is on, else plain fp32), from a table by device name.
     * override_tflops > 0 wins. 0 when the GPU is not in the table. */
    double (*peak_tflops)(Precision p, double override_tflops);
    /* The precision to train in when none is asked for: bf16 on sm80 and newer, else fp32. */
    Precision (*default_precision)(void);
    /* cudaMemGetInfo of the current device; 0, or -1 on error. */
    int (*mem_info)(size_t *free_bytes, size_t *total_bytes);
    /* Replay forward and backward as CUDA graphs (captured on the second call with the same
     * shapes; the first runs eagerly). Default off. Takes effect on the next call. */
    void (*set_cuda_graphs)(int enabled);
    /* fp32 matmuls on TF32 tensor cores (default on). Off for exact fp32 comparisons. */
    void (*set_tf32)(int enabled);
    /* Rows of logits computed at a time in fp32 runs (0 = automatic: at most 256 MiB of
     * fp32 logits). bf16 runs keep all N rows of bf16 logits. Read by create(). */
    void (*set_logits_chunk_rows)(int rows);
    /* Fused cuBLASLt epilogues on/off (for measuring them; default on). */
    void (*set_matmul_fusion)(int enabled);
    /* Visible CUDA devices (0 on error). */
    int (*device_count)(void);
    /* Makes device `index` current for this process (before any model). 0, or -1 with err. */
    int (*select_device)(int index, char *err, size_t errlen);
    /* A fresh NCCL unique id (128 bytes) on rank 0. 0, or -1 with err (e.g. built without NCCL). */
    int (*nccl_unique_id)(void *id, char *err, size_t errlen);
} CudaExtras;

const CudaExtras *cuda_extras(void);

#ifdef __cplusplus
}
#endif
#endif
