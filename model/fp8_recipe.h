/* model/fp8_recipe.h: the FP8 linear layers' scaling recipe (--matmul fp8), in one place for the
 * backend (model/fp8_linear_cuda.cu), the memory plan and the run header.
 *
 * Delayed per-tensor scaling as Transformer Engine does it: every FP8 tensor (each linear layer's
 * input, weight and output gradient) keeps the amaxes its casts recorded in the last
 * FP8_AMAX_HISTORY forward passes; a forward casts with s = fp8_max / max(history) / 2^FP8_MARGIN,
 * rounded down to a power of two (layers/fp8_cuda.cu). The very first forward and backward have no
 * history: each of their casts measures its own amax first.
 */
#ifndef FP8_RECIPE_H
#define FP8_RECIPE_H

enum {
    FP8_AMAX_HISTORY = 16, /* forward passes of amaxes a scale is taken from */
    FP8_MARGIN = 0,        /* powers of two of headroom below the format's largest value */
    FP8_LINEARS = 4,       /* per layer: qkv, attention projection, fc, fc projection */
    FP8_ALIGN = 16         /* N, C and the qkv width must be multiples of this (16-byte FP8 rows) */
};
/* The linear layers of a transformer block, in the order of their FP8 buffers. */
enum { FP8_QKV = 0, FP8_ATTPROJ = 1, FP8_FC = 2, FP8_FCPROJ = 3 };

#endif
