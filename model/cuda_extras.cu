/* model/cuda_extras.cu: the device questions of model/cuda_extras.h, and the GPU datasheet
 * (dense peak TFLOP/s by device name) that MFU is measured against. */
#include "model/cuda_extras.h"
#include "model/dist_cuda.h"

#include <cuda_runtime.h>
#include <string.h>
#include "common/error_text.h"

static int extras_device_name(char *buf, size_t len) {
    int dev = 0;
    cudaDeviceProp prop;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
        cudaGetLastError();
        set_err(buf, len, "none");
        return -1;
    }
    set_err(buf, len, "%s", prop.name);
    return 0;
}

/* Dense peak TFLOP/s (no sparsity) from the vendors' datasheets. The first row whose name part
 * is in the device's name wins, so the longer names come first ("H100 PCIe" before "H100"). */
typedef struct { const char *name_part; double bf16, tf32, fp32; } PeakRow;
static const PeakRow PEAKS[] = {
    {"H200", 989.4, 494.7, 66.9},     {"H100 PCIe", 756.0, 378.0, 51.2},
    {"H100 NVL", 835.0, 417.5, 60.0}, {"H100", 989.4, 494.7, 66.9},
    {"H800", 989.4, 494.7, 66.9},     {"GH200", 989.4, 494.7, 66.9},
    {"B200", 2250.0, 1100.0, 80.0},   {"A100", 312.0, 156.0, 19.5},
    {"A800", 312.0, 156.0, 19.5},     {"A10G", 70.0, 35.0, 31.2},
    {"A10", 125.0, 62.5, 31.2},       {"L40S", 362.0, 183.0, 91.6},
    {"L4", 121.0, 60.0, 30.3},        {"RTX 4090", 165.2, 82.6, 82.6},
    {"RTX 3090", 71.0, 35.6, 35.6},   {"V100", 0.0, 0.0, 15.7},
};

static double extras_peak_tflops(Precision p, int tf32, double override_tflops) {
    if (override_tflops > 0) return override_tflops;
    char name[256];
    if (extras_device_name(name, sizeof name) != 0) return 0.0;
    for (size_t i = 0; i < sizeof PEAKS / sizeof PEAKS[0]; i++) {
        if (!strstr(name, PEAKS[i].name_part)) continue;
        if (p != PRECISION_FP32) return PEAKS[i].bf16; /* fp16's dense tensor rate is bf16's on these GPUs */
        return tf32 ? PEAKS[i].tf32 : PEAKS[i].fp32;
    }
    return 0.0;
}

static Precision extras_default_precision(void) {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        cudaGetLastError();
        return PRECISION_FP32;
    }
    return major >= 8 ? PRECISION_BF16 : PRECISION_FP32;
}

static int extras_mem_info(size_t *free_bytes, size_t *total_bytes) {
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return 0;
}

static int extras_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

static int extras_select_device(int index, char *err, size_t errlen) {
    int n = extras_device_count();
    if (index < 0 || index >= n) {
        set_err(err, errlen, "local rank %d needs GPU %d, but %d GPU(s) are visible", index, index, n);
        return -1;
    }
    cudaError_t e = cudaSetDevice(index);
    if (e != cudaSuccess) {
        cudaGetLastError();
        set_err(err, errlen, "cudaSetDevice(%d): %s", index, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

static const CudaExtras extras = {
    extras_device_name,  extras_peak_tflops,   extras_default_precision, extras_mem_info,
    extras_device_count, extras_select_device, distc_unique_id,
};

extern "C" const CudaExtras *cuda_extras(void) { return &extras; }
