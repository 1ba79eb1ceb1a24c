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
 * tile go through R = 1 kernels. The forward's panel is a 16x16-block transpose in registers.
 * Parallel: the work is split in tasks of (64-column block) x (row chunk) -- forward over output
 * columns, dinp over input columns, dweight over input columns with rows = weight rows -- with
 * rows split only when there are too few column blocks for the threads. Every output element
 * has a single owner (no races), and its sum runs over k in the same order whatever the thread
 * count, so results are bitwise independent of OMP_NUM_THREADS.
 * Measured history and figures: dev/cpu_matmul_notes.md.
 */
#include "layers/layers.h"

#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* vfloat is 64 bytes; on a CPU without AVX-512 gcc warns that passing or returning one by value
 * would follow another ABI. Every function here that does is static and inlined, so no call
 * crosses an ABI boundary: the warning says nothing about this file. */
#pragma GCC diagnostic ignored "-Wpsabi"

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

/* How many row chunks to split `rows` into so that (column blocks x chunks) gives every thread
 * work; the chunk size (a multiple of TILE_R) is returned in *chunk_rows. */
static int row_chunks_for(int rows, int col_blocks, int *chunk_rows) {
    int threads = omp_get_max_threads();
    int chunks = col_blocks >= 2 * threads ? 1 : (2 * threads + col_blocks - 1) / col_blocks;
    int tiles = (rows + TILE_R - 1) / TILE_R;
    if (chunks > tiles) chunks = tiles > 0 ? tiles : 1;
    *chunk_rows = ((rows + chunks - 1) / chunks + TILE_R - 1) / TILE_R * TILE_R;
    return chunks;
}

/* ---- forward -------------------------------------------------------------------------------- */

typedef int vint __attribute__((vector_size(VL * sizeof(int))));

/* Butterfly masks for an in-register 16x16 transpose: stage d swaps M[i][k] with
 * M[i^d][k^d] where bit d of i and k differ; after d = 1, 2, 4, 8, M[i][k] holds M[k][i].
 * For the row pair (i, i|d): low row takes (k&d) ? row(i|d)[k^d] : row(i)[k], high row takes
 * (k&d) ? row(i|d)[k] : row(i)[k^d] (indices >= 16 select the second operand). */
static const vint transpose_masks[4][2] = {
    {{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}, {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}},
    {{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29}, {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}},
    {{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}, {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}},
    {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}, {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}},
};

/* rows[t] (16 floats each) -> rows[l][t] = old rows[t][l] */
static inline void transpose16(vfloat rows[VL]) {
    for (int stage = 0; stage < 4; stage++) {
        int d = 1 << stage;
        vint lo = transpose_masks[stage][0], hi = transpose_masks[stage][1];
        for (int i = 0; i < VL; i++) {
            if (i & d) continue;
            vfloat a = rows[i], b = rows[i | d];
            rows[i] = __builtin_shuffle(a, b, lo);
            rows[i | d] = __builtin_shuffle(a, b, hi);
        }
    }
}

/* panel[c][j] = weight[o0 + j][c] for j < cols, 0 for cols <= j < TILE_W (C x TILE_W floats).
 * Whole 16x16 blocks are transposed in registers; the edges element by element. */
static void pack_weight_panel(float *panel, const float *weight, int o0, int cols, int C) {
    int jfull = cols / VL * VL, cfull = C / VL * VL;
    for (int j0 = 0; j0 < jfull; j0 += VL)
        for (int c0 = 0; c0 < cfull; c0 += VL) {
            vfloat rows[VL];
            for (int t = 0; t < VL; t++) rows[t] = vload(weight + (size_t)(o0 + j0 + t) * C + c0);
            transpose16(rows);
            for (int l = 0; l < VL; l++) vstore(panel + (size_t)(c0 + l) * TILE_W + j0, rows[l]);
        }
    for (int j = 0; j < cols; j++) { /* what the blocks did not cover */
        const float *w = weight + (size_t)(o0 + j) * C;
        for (int c = j < jfull ? cfull : 0; c < C; c++) panel[(size_t)c * TILE_W + j] = w[c];
    }
    for (int c = 0; c < C; c++) /* zero padding beyond the last output column */
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
    int panels = (OC + TILE_W - 1) / TILE_W, chunk_rows;
    int chunks = row_chunks_for(N, panels, &chunk_rows);
#pragma omp parallel
    {
        float *panel = malloc(((size_t)C + 1) * TILE_W * sizeof(float));
        if (!panel) {
            fprintf(stderr, "matmul_forward: out of memory for a %d x %d panel\n", C, TILE_W);
            abort();
        }
#pragma omp for collapse(2) schedule(static)
        for (int p = 0; p < panels; p++)
            for (int chunk = 0; chunk < chunks; chunk++) {
                int o0 = p * TILE_W, cols = OC - o0 < TILE_W ? OC - o0 : TILE_W;
                int i0 = chunk * chunk_rows, i1 = i0 + chunk_rows < N ? i0 + chunk_rows : N;
                if (i0 >= i1) continue;
                pack_weight_panel(panel, weight, o0, cols, C);
                forward_panel(out, inp, panel, bias, i0, i1, o0, cols, C, OC);
            }
        free(panel);
    }
}

/* ---- backward ------------------------------------------------------------------------------- */

/* D (M x Ncols, leading dim ldd) += A B over K, A(r,k) = a[r*ar + k*ak], B (K x Ncols, leading
 * dim ldb). Must be called inside a parallel region (no barrier at the end): tasks are (64-column block, row chunk), each
 * summing over k in blocks of KC so that its B panel (KC x 64 floats, 64 KiB) stays in L2 while
 * the row tiles sweep it. The order over k is sequential for every element whatever the split. */
static void accumulate_product(int M, int Ncols, int K, const float *a, ptrdiff_t ar,
                               ptrdiff_t ak, const float *b, ptrdiff_t ldb, float *d,
                               ptrdiff_t ldd) {
    enum { KC = 256 };
    int col_blocks = (Ncols + TILE_W - 1) / TILE_W, chunk_rows;
    int chunks = row_chunks_for(M, col_blocks, &chunk_rows);
#pragma omp for collapse(2) schedule(static) nowait
    for (int cb = 0; cb < col_blocks; cb++)
        for (int chunk = 0; chunk < chunks; chunk++) {
            int c0 = cb * TILE_W, cols = Ncols - c0 < TILE_W ? Ncols - c0 : TILE_W;
            int r0 = chunk * chunk_rows, r1 = r0 + chunk_rows < M ? r0 + chunk_rows : M;
            for (int k0 = 0; r0 < r1 && k0 < K; k0 += KC) {
                int kc = K - k0 < KC ? K - k0 : KC;
                block_product(r1 - r0, cols, kc, a + r0 * ar + k0 * ak, ar, ak,
                              b + (size_t)k0 * ldb + c0, ldb, d + r0 * ldd + c0, ldd, NULL);
            }
        }
}

/* dbias[o] += sum_i dout[i][o], summed over i in order; vectorised across o. */
static void backward_bias(float *dbias, const float *dout, int N, int OC) {
    enum { CHUNK = 256 };
#pragma omp for schedule(static) nowait
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
#pragma omp parallel
    {
        /* dinp (N x C) += dout (N x OC) @ weight (OC x C): rows i, k = o */
        if (dinp) accumulate_product(N, C, OC, dout, OC, 1, weight, C, dinp, C);
        /* dweight (OC x C) += dout^T (OC x N) @ inp (N x C): rows o, k = i */
        accumulate_product(OC, C, N, dout, 1, OC, inp, C, dweight, C);
        if (dbias) backward_bias(dbias, dout, N, OC);
    }
}
