/* model/memory_plan_cuda.cu: the CUDA backend's arenas (see memory_plan_cuda.h). */
#include "model/memory_plan_cuda.h"
#include "model/backend.h"
#include "layers/layers_cuda.h"

#include <string.h>

typedef struct {
    char *base; /* NULL while only measuring */
    size_t used;
} Arena;

static void *arena_take(Arena *a, size_t bytes) {
    size_t at = (a->used + 255) & ~(size_t)255;
    a->used = at + bytes;
    return a->base ? a->base + at : NULL;
}

AttnShape memplan_attn_shape(const MemPlanInput *in, const MemoryLayout *mem, int B, int T) {
    static const float marker_f[1] = {0.0f}; /* presence only (see the header) */
    static const int marker_i[1] = {0};
    AttnShape s = attn_shape_packed_gqa(B, T, in->H, in->Hkv, in->C / in->H, in->mask,
                                        precision_attn_dtype(in->prec));
    if (in->mask == ATTN_MASK_DENSE) {
        s.mask.bias = mem ? mem->dense_bias : marker_f;
        s.mask.stride_b = 0;
        s.mask.stride_h = 0;
        s.mask.stride_row = in->maxT;
    }
    s.mask.window = in->window;
    if (in->alibi) s.mask.alibi_slopes = mem ? mem->alibi_slopes : marker_f;
    if (in->packed_docs) s.mask.doc = mem ? mem->s.doc : marker_i;
    return s;
}

static size_t esize_of(const MemPlanInput *in) { return (size_t)precision_esize(in->prec); }

static size_t plan_params(const MemPlanInput *in, MemoryLayout *o, Arena *a) {
    size_t n = in->n_pad, nm = in->zero ? in->shard : in->num_params;
    o->params = (float *)arena_take(a, n * 4);
    o->grads = (float *)arena_take(a, n * 4);
    o->adam_m = (float *)arena_take(a, nm * 4);
    o->adam_v = (float *)arena_take(a, nm * 4);
    o->params_x = in->prec != PRECISION_FP32 ? arena_take(a, n * 2) : (void *)o->params;
    o->gcomm = in->grads_bf16_copy ? (__nv_bfloat16 *)arena_take(a, n * 2) : NULL;
    o->dense_bias = in->mask == ATTN_MASK_DENSE ? (float *)arena_take(a, (size_t)in->maxT * in->maxT * 4) : NULL;
    o->alibi_slopes = in->alibi ? (float *)arena_take(a, (size_t)in->H * 4) : NULL;
    o->fp8_params = in->fp8_param_bytes ? (char *)arena_take(a, in->fp8_param_bytes) : NULL;
    return a->used;
}

static size_t plan_acts(const MemPlanInput *in, MemoryLayout *o, Arena *a, int B, int T) {
    size_t N = (size_t)B * T, C = in->C, L = in->L, e = esize_of(in);
    size_t Lr = in->recompute ? 1 : L; /* copies of what recompute shares */
    Acts *x = &o->a;
    x->encoded = arena_take(a, N * C * e);
    x->ln1 = arena_take(a, Lr * N * C * e);
    x->ln1_mean = (float *)arena_take(a, L * N * 4);
    x->ln1_rstd = (float *)arena_take(a, L * N * 4);
    x->qkv = arena_take(a, L * N * (size_t)in->Q * e);
    x->atty = arena_take(a, L * N * C * e);
    x->att_saved = (char *)arena_take(a, L * o->att_saved_per_layer);
    x->res2 = arena_take(a, L * N * C * e);
    x->ln2 = arena_take(a, Lr * N * C * e);
    x->ln2_mean = (float *)arena_take(a, L * N * 4);
    x->ln2_rstd = (float *)arena_take(a, L * N * 4);
    x->fch = arena_take(a, L * N * 4 * C * e);
    x->fch_gelu = arena_take(a, Lr * N * 4 * C * e);
    x->res3 = arena_take(a, L * N * C * e);
    x->lnf = arena_take(a, N * C * e);
    x->lnf_mean = (float *)arena_take(a, N * 4);
    x->lnf_rstd = (float *)arena_take(a, N * 4);
    x->losses = (float *)arena_take(a, N * 4);
    return a->used;
}

static size_t plan_scratch(const MemPlanInput *in, MemoryLayout *o, Arena *a, int B, int T) {
    size_t N = (size_t)B * T, C = in->C, e = esize_of(in);
    Scratch *s = &o->s;
    s->proj = arena_take(a, N * C * e);
    s->dres = arena_take(a, N * C * e);
    s->dln = arena_take(a, N * C * e);
    s->dbig = arena_take(a, N * 4 * C * e);
    s->dqkv = arena_take(a, N * (size_t)in->Q * e);
    s->logits = arena_take(a, (size_t)o->chunk_rows * o->ld_logits * e);
    s->att_ws = o->att_ws_bytes ? arena_take(a, o->att_ws_bytes) : NULL;
    o->fp8_scratch = in->fp8_bytes_per_token ? (char *)arena_take(a, N * in->fp8_bytes_per_token) : NULL;
    size_t red = cuda_colsum_scratch_floats(4 * in->C);
    if (cuda_layernorm_scratch_floats(in->C) > red) red = cuda_layernorm_scratch_floats(in->C);
    s->reduce = (float *)arena_take(a, red * 4);
    s->norm_partials = (float *)arena_take(a, CUDA_NORM_BLOCKS * 4);
    s->logits_row = (float *)arena_take(a, (size_t)in->Vp * 4);
    s->inputs = (int *)arena_take(a, N * 4);
    s->targets = (int *)arena_take(a, N * 4);
    s->uniq = (int *)arena_take(a, N * 4);
    s->start = (int *)arena_take(a, (N + 1) * 4);
    s->pos = (int *)arena_take(a, N * 4);
    s->num_uniq = (int *)arena_take(a, 4);
    if (in->packed_docs) {
        s->doc = (int *)arena_take(a, N * 4);
        if (in->doc_positions) {
            s->doc_pos = (int *)arena_take(a, N * 4);
            s->pos_uniq = (int *)arena_take(a, N * 4);
            s->pos_start = (int *)arena_take(a, (N + 1) * 4);
            s->pos_rows = (int *)arena_take(a, N * 4);
            s->pos_num_uniq = (int *)arena_take(a, 4);
        }
    }
    s->dloss = (float *)arena_take(a, 4);
    s->dlogits_scale = in->prec == PRECISION_FP16 ? (float *)arena_take(a, 4) : s->dloss;
    s->loss = (float *)arena_take(a, 4);
    s->sumsq = (float *)arena_take(a, 4);
    return a->used;
}

/* Rows of logits per chunk: all N in bf16 and fp16; fp32 keeps at most 256 MiB unless told. */
static int logits_chunk_rows(const MemPlanInput *in, int ld_logits, int N) {
    if (in->prec != PRECISION_FP32) return N;
    int rows = in->logits_chunk_rows;
    if (rows <= 0) rows = (int)((256u << 20) / ((size_t)ld_logits * 4));
    if (rows < 1) rows = 1;
    return rows < N ? rows : N;
}

size_t memory_plan(const MemPlanInput *in, int B, char *param_arena, char *act_arena, char *scratch_arena,
                   MemoryLayout *out) {
    int T = in->maxT;
    memset(out, 0, sizeof *out);
    AttnShape shape = memplan_attn_shape(in, NULL, B, T);
    out->att_saved_per_layer = (in->attn->saved_bytes(&shape) + 255) & ~(size_t)255;
    out->att_ws_bytes = in->attn->workspace_bytes(&shape);
    out->ld_logits = (in->Vp + 7) & ~7;
    out->chunk_rows = logits_chunk_rows(in, out->ld_logits, B * T);
    Arena p = {param_arena, 0}, x = {act_arena, 0}, s = {scratch_arena, 0};
    out->param_bytes = plan_params(in, out, &p);
    out->act_bytes = plan_acts(in, out, &x, B, T);
    out->scratch_bytes = plan_scratch(in, out, &s, B, T);
    return out->param_bytes + out->act_bytes + out->scratch_bytes + cuda_matmul_workspace_bytes();
}
