/* model/cuda_extras.h: what the training loop may ask of the CUDA build beyond the Backend
 * vtable: the GPU's name and peak rate (for MFU), cudaMemGetInfo, the device and the NCCL id.
 * Settings of a model (CUDA graphs, TF32, ...) are ModelOptions fields, read by create().
 *
 * One entry point, so a CPU-only build needs one weak stub returning NULL
 * (model/cuda_fallback.c):   const CudaExtras *x = cuda_extras();   if (x) ...
 */
#ifndef CUDA_EXTRAS_H
#define CUDA_EXTRAS_H

#include <stddef.h>
#include "model/precision.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    /* The current device's name ("NVIDIA H100 80GB HBM3"); 0, or -1 without a device. */
    int (*device_name)(char *buf, size_t len);
    /* Peak dense TFLOP/s of the current GPU for `p` (bf16 and fp16: 16-bit tensor cores; fp32
     * means TF32 tensor cores when tf32, else plain fp32), from a table by device name.
     * override_tflops > 0 wins. 0 when the GPU is not in the table. */
    double (*peak_tflops)(Precision p, int tf32, double override_tflops);
    /* The precision to train in when none is asked for: bf16 on sm80 and newer, else fp32. */
    Precision (*default_precision)(void);
    /* cudaMemGetInfo of the current device; 0, or -1 on error. */
    int (*mem_info)(size_t *free_bytes, size_t *total_bytes);
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
