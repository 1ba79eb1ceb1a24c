/* attention/attention_api.h: a plain C API over the CUDA attention kernels, for the shared library
 * build/libattention.so (`make libattention`), so that other C programs and Python (ctypes) can
 * call the same forward and backward on device pointers.
 *
 * Strings name the choices: kernel: a name of the registry (attention/attention.c; the ones this
 * library has: attn_lib_kernel_names()); mask "none" | "causal" | "dense"; dtype "fp32" | "bf16" | "fp16". Layout, scale and buffers are those of attention/attention.h
 * (token-major, element (b,t,h,d) at X[(b*T + t)*ld + h*D + d]); scale <= 0 means 1/sqrt(D).
 * `bias` and its strides are read only for mask "dense". `stream` is a cudaStream_t (NULL: the
 * default stream). Calls are asynchronous on that stream like any kernel launch.
 * Every function returns ATTN_LIB_OK (0) or an error code; attn_lib_last_error() says why.
 */
#ifndef ATTENTION_API_H
#define ATTENTION_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    ATTN_LIB_OK = 0,
    ATTN_LIB_BAD_ARGUMENT = 1, /* unknown name, bad shape */
    ATTN_LIB_UNSUPPORTED = 2,  /* the kernel does not support this shape/dtype/mask */
    ATTN_LIB_CUDA_ERROR = 3    /* a CUDA or cuBLAS call failed */
};

/* The kernels this library can run, comma separated in registry order, e.g.
 * "naive,memeff,flash,flash-sm90,flash-mma,cudnn,flash-tma" (cudnn only where it was built with cuDNN). */
const char *attn_lib_kernel_names(void);

/* Bytes of `saved` (forward -> backward) and `workspace` the call needs (0: NULL may be passed). */
int attn_lib_buffer_sizes(const char *kernel, const char *mask, const char *dtype, int B, int T,
                          int H, int D, size_t *saved_bytes, size_t *workspace_bytes);

int attn_lib_forward(const char *kernel, const char *mask, const char *dtype, int B, int T, int H,
                     int D, int ld_qkv, int ld_o, float scale, const float *bias,
                     long long bias_stride_b, long long bias_stride_h, long long bias_stride_row,
                     const void *q, const void *k, const void *v, void *o, void *saved,
                     void *workspace, void *stream);

int attn_lib_backward(const char *kernel, const char *mask, const char *dtype, int B, int T, int H,
                      int D, int ld_qkv, int ld_o, float scale, const float *bias,
                      long long bias_stride_b, long long bias_stride_h, long long bias_stride_row,
                      const void *q, const void *k, const void *v, const void *o,
                      const void *dout, const void *saved, void *dq, void *dk, void *dv,
                      void *workspace, void *stream);

/* Why the last failing call failed ("" if none has). */
const char *attn_lib_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
