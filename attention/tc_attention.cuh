/* attention/tc_attention.cuh: attention-specific pieces of the tensor-core (mma.sync) kernels,
 * shared by flash.cu and memeff.cu: quad reductions over a fragment row, masking a score block,
 * the online-softmax step, and the forward's O / L and the backward's dK / dV epilogues; the element type E is
 * a template parameter where it matters (mma_bf16.cuh).
 * Scores are kept in log2 units (scale * log2(e) folded in) so that exp is one exp2.
 */
#ifndef ATTENTION_TC_ATTENTION_CUH
#define ATTENTION_TC_ATTENTION_CUH

#include "attention/cuda_common.cuh"
#include "attention/mma_bf16.cuh"

#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

/* The query and key of score entry s[nt][e] of this lane in a 16 x (8*NT) accumulator block whose
 * rows start at row0 and columns at col0 (global indices; acc_pos); with `keys_are_rows` the rows
 * are keys and the columns queries (the backward's transposed tiles). */
struct ScorePos { int query, key; };
__device__ __forceinline__ ScorePos score_pos(int row0, int col0, int nt, int e, bool keys_are_rows) {
    const AccPos a = acc_pos(row0, col0, nt, e);
    return {keys_are_rows ? a.col : a.row, keys_are_rows ? a.row : a.col};
}

/* A DENSE kind's bias for one 16 x (8*NT) score block (positions as mask_tile's), read into
 * registers ahead of the MMA that makes the scores, so that the loads' L2 latency runs under that
 * MMA and the tile's barrier instead of after them (reading each element where it is added waits
 * for each load there). `head` is the bias at (b, h, 0, 0); a position outside [0, T) reads the
 * clamped one, which mask_tile then masks. */
template <int NT>
__device__ __forceinline__ void bias_frag_load(float bf[][4], const float *head, long long stride_row, int row0,
                                               int col0, int T, bool keys_are_rows) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const auto [query, key] = score_pos(row0, col0, nt, e, keys_are_rows);
            bf[nt][e] = __ldg(head + (long long)min(query, T - 1) * stride_row + min(key, T - 1));
        }
}

/* Masks one 16 x (8*NT) accumulator block of scores in log2 units whose rows start at row0 and
 * columns at col0 (global indices); with `keys_are_rows` the rows are keys and the columns queries
 * (backward). Outside [0, T) and above the causal diagonal: -inf; MASK == ATTN_MASK_DENSE adds
 * log2(e) * bias, the block's bias as bias_frag_load read it (unused by the other kinds). */
template <int NT, int MASK>
__device__ __forceinline__ void mask_tile(float s[][4], int row0, int col0, int T, bool keys_are_rows,
                                          const float (*bias)[4] = nullptr) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const auto [query, key] = score_pos(row0, col0, nt, e, keys_are_rows);
            bool dead = key >= T || query >= T || (MASK == ATTN_MASK_CAUSAL && key > query);
            if (dead) s[nt][e] = -INFINITY;
            else if (MASK == ATTN_MASK_DENSE) s[nt][e] += LOG2E_F * bias[nt][e];
        }
}

/* Online-softmax step for the warp's 16 rows (this thread: rows g and g+8 = half 0, 1): turns
 * the scores s into P = 2^(scale * s - m) in place and rescales o, l; m is kept in the scaled
 * (log2) units. Taking the max on unscaled s (scale > 0) lets scale ride in one FFMA per score. */
template <int NT, int ND>
__device__ __forceinline__ void online_softmax_step(float s[][4], float o[][4], float m[2], float l[2],
                                                    float scale = 1.0f) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * half], s[nt][2 * half + 1]));
        mx = quad_max(mx) * scale;
        float m_new = fmaxf(m[half], mx);
        float m_use = m_new == -INFINITY ? 0.0f : m_new; /* all masked so far: keep exp2 finite */
        float corr = exp2f(m[half] - m_use);
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float p = exp2f(fmaf(s[nt][2 * half + e], scale, -m_use));
                s[nt][2 * half + e] = p;
                sum += p;
            }
        l[half] = l[half] * corr + sum;
        m[half] = m_new;
#pragma unroll
        for (int dt = 0; dt < ND; dt++) {
            o[dt][2 * half] *= corr;
            o[dt][2 * half + 1] *= corr;
        }
    }
}

/* Two adjacent outputs as one store: packed to E (bf16, fp16), or a float2 (fp32). */
template <typename E> __device__ __forceinline__ void store2(E *p, float lo, float hi) {
    *(uint32_t *)p = pack2<E>(lo, hi);
}
template <> __device__ __forceinline__ void store2<float>(float *p, float lo, float hi) {
    *(float2 *)p = make_float2(lo, hi);
}

/* The forward's epilogue for a warp's 16 rows [row0, row0 + 16) (this thread: g and g + 8):
 * O / l to the element type E (bf16, fp16 or fp32) in the token-major output (out_head = the
 * head's row 0, rows ld_o apart) and L = ln 2 (m + log2 l) into lse_head, +inf for a row that saw no key (backward's exp(S - L) = 0). */
template <int ND, typename E>
__device__ __forceinline__ void store_o_and_lse(E *out_head, long long ld_o, float *lse_head,
                                                const float o[][4], const float m[2], const float l[2],
                                                int row0, int T) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = 2 * (lane & 3);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        float lsum = quad_sum(l[half]);
        float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
        int t = row0 + g + 8 * half;
        if (t < T) {
            E *orow = out_head + (long long)t * ld_o;
#pragma unroll
            for (int dt = 0; dt < ND; dt++)
                store2<E>(orow + dt * 8 + c, o[dt][2 * half] * inv, o[dt][2 * half + 1] * inv);
            if ((lane & 3) == 0) lse_head[t] = lsum > 0.0f ? (m[half] + log2f(lsum)) * LN2_F : INFINITY;
        }
    }
}

/* The backward's epilogue: dK = p.scale * (the accumulated dS^T Q) and dV of a warp's 16 keys
 * key_row0 + g (+ 8) from their key-row accumulator fragments (ND = D / 8 column blocks; this
 * lane's fragment row g = lane / 4 and column c = 2 * (lane % 4), as the kernels hold them) into
 * p.dk and p.dv as OutE (the output type), rows p.ld_qkv apart from kv_off, the K/V head's first
 * element; keys >= T are not written. Shared by every tensor-core backward (flash's three,
 * memeff's skeleton); P: their AttnParams (attn_params.cuh). */
template <int ND, typename OutE, class P>
__device__ __forceinline__ void store_dk_dv(const P &p, long long kv_off, const float dk[][4], const float dv[][4],
                                            int key_row0, int g, int c, int T) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int t = key_row0 + g + 8 * half;
        if (t < T) {
            const long long off = kv_off + (long long)t * p.ld_qkv + c;
#pragma unroll
            for (int dt = 0; dt < ND; dt++) {
                store2<OutE>((OutE *)p.dk + off + dt * 8, dk[dt][2 * half] * p.scale, dk[dt][2 * half + 1] * p.scale);
                store2<OutE>((OutE *)p.dv + off + dt * 8, dv[dt][2 * half], dv[dt][2 * half + 1]);
            }
        }
    }
}

#endif
