/* model/precision.h: the numeric precisions a backend can train in, and their names.
 *
 * Its own header so that the layers (layers/layers_cuda.h) name a precision without pulling in
 * the whole Backend contract (model/backend.h includes this one).
 */
#ifndef PRECISION_H
#define PRECISION_H

#ifdef __cplusplus
extern "C" {
#endif

/* fp32: everything fp32. bf16 and fp16: fp32 master weights, gradients and AdamW state, 2-byte
 * activations and matmul inputs (fp16 also needs loss scaling: train/loss_scale.h). */
typedef enum { PRECISION_FP32 = 0, PRECISION_BF16, PRECISION_FP16, PRECISION_NUM } Precision;
const char *precision_name(Precision p);   /* "fp32", "bf16", "fp16"; "?" out of range */
int precision_from_name(const char *name, Precision *out); /* 0, or -1 for an unknown name */
/* Bytes per activation element: 4 for fp32, 2 for bf16 and fp16. */
static inline int precision_esize(Precision p) { return p == PRECISION_FP32 ? 4 : 2; }

#ifdef __cplusplus
}
#endif
#endif
