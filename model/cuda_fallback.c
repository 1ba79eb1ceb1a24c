/* model/cuda_fallback.c: the CPU-only build's answer to "is there a CUDA backend?".
 * A weak definition: when model/gpt2_cuda.cu is linked, its strong definition wins. */
#include <stdio.h>

#include "model/backend.h"
#include "model/cuda_extras.h"

__attribute__((weak)) const Backend *cuda_backend_if_available(char *why, size_t whylen) {
    snprintf(why, whylen, "this build has no CUDA backend (nvcc was not found at build time)");
    return NULL;
}

/* No GPU extras (device name, peak rate, graphs) without CUDA. */
__attribute__((weak)) const CudaExtras *cuda_extras(void) {
    return NULL;
}
