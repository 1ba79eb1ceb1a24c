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

typedef enum { PRECISION_FP32 = 0, PRECISION_BF16, PRECISION_NUM } Precision;
const char *precision_name(Precision p);   /* "fp32", "bf16"; "?" out of range */
int precision_from_name(const char *name, Precision *out); /* 0, or -1 for an unknown name */

#ifdef __cplusplus
}
#endif
#endif
