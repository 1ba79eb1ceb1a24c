/* layers/matmul.c: the fully connected layer on the CPU.
 *
 *   forward:  out (N,OC)   = inp (N,C) @ weight^T + bias          weight is (OC,C)
 *   backward: dinp (N,C)  += dout (N,OC) @ weight
 *             dweight (OC,C) += dout^T @ inp
 *             dbias (OC)  += column sums of dout
 *
 * All three products are computed by one register-blocked micro-kernel of the form
 *
 *   D[r][j] (+)= sum_k A(r,k) * B[k][j]     r < R rows, j < 16*S columns, k = 0..K-1 in order,
 *
 * with R*S accumulators of 16 floats kept in vector registers: per k it loads S vectors of the
 * row B[k][..] once and broadcasts R scalars A(r,k), doing R*S vector FMAs. Each output is a sum
 * over k in plain sequential order (no reassociation), so results do not depend on the tiling.
 * The three products differ only in where A and B live:
 *   forward: A = inp (rows i, k = c), B = weight^T, packed per 64 output columns (zero padded);
 *   dinp:    A = dout (rows i, k = o), B = weight rows (contiguous in c), no packing;
 *   dweight: A = dout^T (rows o, k = i), B = inp rows (contiguous in c), no packing.
 * Columns that do not fill a 16-wide vector go through a scalar path; rows that do not fill a
 * tile go through R = 1 kernels. Parallel: forward over output-column panels, dinp over (row
 * tile, column block), dweight over (weight-row tile, column block): every output element has a
 * single owner, so there are no races and the result does not depend on the thread count.
 */
#include "layers/layers.h"

#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define VL 16         /* floats per vector (one AVX-512 register) */
#define TILE_R 6      /* rows per register tile */
#define TILE_S 4      /* vectors per register tile row: 64 columns */
#define TILE_W (VL * TILE_S)

typedef float vfloat __attribute__((vector_size(VL * sizeof(float))));

static inline vfloat vload(const float *p) {
    vfloat v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vstore(float *p, vfloat v) { memcpy(p, &v, sizeof v); }

/* D[r][16s + l] = init + sum_k A(r,k) * B[k][16s + l], A(r,k) = a[r*ar + k*ak].
 * init is the row vector `init` (same for every row) when given, else D's current contents.
 * R <= TILE_R and S <= TILE_S are compile-time constants at every call (the function is inlined),
 * so the accumulators live in registers. */
static inline __attribute__((always_inline)) void
micro_tile(const int R, const int S, int K, const float *a, ptrdiff_t ar, ptrdiff_t ak,
           const float *b, ptrdiff_t ldb, float *d, ptrdiff_t ldd, const float *init) {
    vfloat acc[TILE_R][TILE_S];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int s = 0; s < S; s++)
            acc[r][s] = init ? vload(init + VL * s) : vload(d + r * ldd + VL * s);
    for (int k = 0; k < K; k++) {
        const float *bk = b + k * ldb;
        vfloat bv[TILE_S];
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) bv[s] = vload(bk + VL * s);
        const float *ak_ = a + k * ak;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            float av = ak_[r * ar];
#pragma GCC unroll 4
            for (int s = 0; s < S; s++) acc[r][s] += av * bv[s];
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) vstore(d + r * ldd + VL * s, acc[r][s]);
}

/* The same product for `rows` x `cols` (any sizes, small), one scalar at a time, accumulating
 * into D (init == NULL) or starting from init[j]. */
static void scalar_tile(int rows, int cols, int K, const float *a, ptrdiff_t ar, ptrdiff_t ak,
                        const float *b, ptrdiff_t ldb, float *d, ptrdiff_t ldd,
                        const float *init) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            float acc = init ? init[j] : d[r * ldd + j];
            for (int k = 0; k < K; k++) acc += a[r * ar + k * ak] * b[k * ldb + j];
            d[r * ldd + j] = acc;
        }
}

/* D (rows x cols) (+)= A B over K for a block of at most TILE_W columns: full vector columns go
 * through the micro-kernel (R = TILE_R tiles, then single rows), the last cols % 16 through the
 * scalar path. B must be readable for every full vector column. */
static void block_product(int rows, int cols, int K, const float *a, ptrdiff_t ar, ptrdiff_t ak,
                          const float *b, ptrdiff_t ldb, float *d, ptrdiff_t ldd,
                          const float *init) {
    int full = cols / VL; /* whole vectors in this block, <= TILE_S */
    int r = 0;
    for (; r + TILE_R <= rows; r += TILE_R) {
        const float *ar0 = a + r * ar;
        float *dr = d + r * ldd;
        switch (full) {
        case 4: micro_tile(TILE_R, 4, K, ar0, ar, ak, b, ldb, dr, ldd, init); break;
        case 3: micro_tile(TILE_R, 3, K, ar0, ar, ak, b, ldb, dr, ldd, init); break;
        case 2: micro_tile(TILE_R, 2, K, ar0, ar, ak, b, ldb, dr, ldd, init); break;
        case 1: micro_tile(TILE_R, 1, K, ar0, ar, ak, b, ldb, dr, ldd, init); break;
        default: break;
        }
    }
    for (; r < rows; r++) {
        const float *ar0 = a + r * ar;
        float *dr = d + r * ldd;
        switch (full) {
        case 4: micro_tile(1, 4, K, ar0, ar, ak, b, ldb, dr, ldd, init); break;
        case 3: micro_tile(1, 3, K, ar0, ar, ak, b, ldb, dr, ldd, init); break;
        case 2: micro_tile(1, 2, K, ar0, ar, ak, b, ldb, dr, ldd, init); break;
        case 1: micro_tile(1, 1, K, ar0, ar, ak, b, ldb, dr, ldd, init); break;
        default: break;
        }
    }
    int done = full * VL;
    if (done < cols)
        scalar_tile(rows, cols - done, K, a, ar, ak, b + done, ldb, d + done, ldd,
                    init ? init + done : NULL);
}

/* ---- forward -------------------------------------------------------------------------------- */

/* panel[c][j] = weight[o0 + j][c] for j < cols, 0 for cols <= j < TILE_W (C x TILE_W floats) */
static void pack_weight_panel(float *panel, const float *weight, int o0, int cols, int C) {
    for (int j = 0; j < cols; j++) {
        const float *w = weight + (size_t)(o0 + j) * C;
        for (int c = 0; c < C; c++) panel[(size_t)c * TILE_W + j] = w[c];
    }
    for (int c = 0; c < C; c++)
        for (int j = cols; j < TILE_W; j++) panel[(size_t)c * TILE_W + j] = 0.0f;
}

/* out[:, o0:o0+cols] for rows [i0, i1) from a packed panel. Output columns beyond `cols` do not
 * exist in `out`, so a partial panel is computed into a scratch tile and copied. */
static void forward_panel(float *out, const float *inp, const float *panel, const float *bias,
                          int i0, int i1, int o0, int cols, int C, int OC) {
    float init[TILE_W];
    for (int j = 0; j < TILE_W; j++) init[j] = (bias && j < cols) ? bias[o0 + j] : 0.0f;
    if (cols == TILE_W) {
        block_product(i1 - i0, TILE_W, C, inp + (size_t)i0 * C, C, 1, panel, TILE_W,
                      out + (size_t)i0 * OC + o0, OC, init);
        return;
    }
    float scratch[TILE_R * TILE_W];
    for (int i = i0; i < i1; i += TILE_R) {
        int rows = i1 - i < TILE_R ? i1 - i : TILE_R;
        block_product(rows, TILE_W, C, inp + (size_t)i * C, C, 1, panel, TILE_W, scratch,
                      TILE_W, init);
        for (int r = 0; r < rows; r++)
            memcpy(out + (size_t)(i + r) * OC + o0, scratch + r * TILE_W, cols * sizeof(float));
    }
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC) {
    int panels = (OC + TILE_W - 1) / TILE_W;
    /* split the rows too when there are few panels, so every thread has work */
    int threads = omp_get_max_threads();
    int row_chunks = panels >= 2 * threads ? 1 : (2 * threads + panels - 1) / panels;
    int max_chunks = (N + TILE_R - 1) / TILE_R;
    if (row_chunks > max_chunks) row_chunks = max_chunks > 0 ? max_chunks : 1;
    int rows_per_chunk = ((N + row_chunks - 1) / row_chunks + TILE_R - 1) / TILE_R * TILE_R;
#pragma omp parallel
    {
        float *panel = malloc((size_t)C * TILE_W * sizeof(float));
#pragma omp for collapse(2) schedule(static)
        for (int p = 0; p < panels; p++) {
            for (int chunk = 0; chunk < row_chunks; chunk++) {
                int o0 = p * TILE_W, cols = OC - o0 < TILE_W ? OC - o0 : TILE_W;
                int i0 = chunk * rows_per_chunk;
                int i1 = i0 + rows_per_chunk < N ? i0 + rows_per_chunk : N;
                if (i0 >= i1) continue;
                pack_weight_panel(panel, weight, o0, cols, C);
                forward_panel(out, inp, panel, bias, i0, i1, o0, cols, C, OC);
            }
        }
        free(panel);
    }
}

/* ---- backward ------------------------------------------------------------------------------- */

/* dinp[i0:i0+rows, c0:c0+cols] += dout[i0:i0+rows, :] @ weight[:, c0:c0+cols] */
static void backward_input_block(float *dinp, const float *dout, const float *weight, int i0,
                                 int rows, int c0, int cols, int C, int OC) {
    block_product(rows, cols, OC, dout + (size_t)i0 * OC, OC, 1, weight + c0, C,
                  dinp + (size_t)i0 * C + c0, C, NULL);
}

/* dweight[o0:o0+rows, c0:c0+cols] += dout[:, o0:o0+rows]^T @ inp[:, c0:c0+cols] */
static void backward_weight_block(float *dweight, const float *dout, const float *inp, int o0,
                                  int rows, int c0, int cols, int N, int C, int OC) {
    block_product(rows, cols, N, dout + o0, 1, OC, inp + c0, C, dweight + (size_t)o0 * C + c0,
                  C, NULL);
}

/* dbias[o] += sum_i dout[i][o], summed over i in order; vectorised across o. */
static void backward_bias(float *dbias, const float *dout, int N, int OC) {
    enum { CHUNK = 256 };
#pragma omp for schedule(static)
    for (int o0 = 0; o0 < OC; o0 += CHUNK) {
        int o1 = o0 + CHUNK < OC ? o0 + CHUNK : OC;
        float acc[CHUNK];
        for (int o = o0; o < o1; o++) acc[o - o0] = dbias[o];
        for (int i = 0; i < N; i++) {
            const float *row = dout + (size_t)i * OC;
#pragma omp simd
            for (int o = o0; o < o1; o++) acc[o - o0] += row[o];
        }
        for (int o = o0; o < o1; o++) dbias[o] = acc[o - o0];
    }
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC) {
    int col_blocks = (C + TILE_W - 1) / TILE_W;
    int row_tiles = (N + TILE_R - 1) / TILE_R;
    int wrow_tiles = (OC + TILE_R - 1) / TILE_R;
#pragma omp parallel
    {
        if (dinp) {
#pragma omp for collapse(2) schedule(static)
            for (int cb = 0; cb < col_blocks; cb++)
                for (int t = 0; t < row_tiles; t++) {
                    int c0 = cb * TILE_W, cols = C - c0 < TILE_W ? C - c0 : TILE_W;
                    int i0 = t * TILE_R, rows = N - i0 < TILE_R ? N - i0 : TILE_R;
                    backward_input_block(dinp, dout, weight, i0, rows, c0, cols, C, OC);
                }
        }
#pragma omp for collapse(2) schedule(static)
        for (int cb = 0; cb < col_blocks; cb++)
            for (int t = 0; t < wrow_tiles; t++) {
                int c0 = cb * TILE_W, cols = C - c0 < TILE_W ? C - c0 : TILE_W;
                int o0 = t * TILE_R, rows = OC - o0 < TILE_R ? OC - o0 : TILE_R;
                backward_weight_block(dweight, dout, inp, o0, rows, c0, cols, N, C, OC);
            }
        if (dbias) backward_bias(dbias, dout, N, OC);
    }
}
