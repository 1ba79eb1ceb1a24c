/* model/memory_plan_cuda.cu: the CUDA backend's arenas (see memory_plan_cuda.h). */
#include "model/memory_plan_cuda.h"
#include "model/backend.h"
#include "layers/layers_cuda.h"

#include <string.h>

/* An arena being laid out: its base (NULL while only measuring), the bytes used so far, the
 * phases the next buffers are live in, and the layout whose table records each buffer. */
typedef struct {
    char *base;
    size_t used;
    int id, phases;
    MemoryLayout *lay;
} Arena;

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static void *arena_take(Arena *a, const char *name, size_t bytes) {
    size_t at = align256(a->used);
    a->used = at + bytes;
    MemoryLayout *o = a->lay;
    if (o->num_buffers < MEMPLAN_MAX_BUFFERS) {
        MemPlanBuffer *b = &o->buffers[o->num_buffers++];
        b->name = name;
        b->arena = a->id;
        b->phases = a->phases;
        b->offset = at;
        b->bytes = bytes;
    }
    return a->base ? a->base + at : NULL;
}

/* Overlays: memory that buffers of disjoint phases share. Each overlay starts at the same base
 * (overlay_next rewinds there); overlay_end leaves the arena after the largest. */
typedef struct {
    Arena *a;
    size_t start, end;
} Overlay;
static void overlay_begin(Overlay *v, Arena *a) {
    v->a = a;
    v->start = v->end = a->used = align256(a->used);
}
static void overlay_next(Overlay *v) {
    if (v->a->used > v->end) v->end = v->a->used;
    v->a->used = v->start;
}
static void overlay_end(Overlay *v) {
    if (v->a->used > v->end) v->end = v->a->used;
    v->a->used = v->end;
}

void memplan_input(const ModelOptions *opt, const AttnImpl *attn, const GradSync *gs, MemPlanInput *in) {
    const GPT2Config *c = &opt->config;
    memset(in, 0, sizeof *in);
    in->prec = opt->precision;
    in->L = c->num_layers; in->C = c->channels; in->H = c->num_heads;
    in->Vp = c->padded_vocab_size; in->maxT = opt->T;
    in->Hkv = gpt2_kv_heads(c); in->Q = gpt2_qkv_channels(c);
    in->recompute = opt->recompute;
    in->keep_layers = opt->keep_layers < 0 ? 0 : opt->keep_layers > c->num_layers ? c->num_layers : opt->keep_layers;
    in->mask = opt->mask;
    in->window = opt->attn_window;
    in->alibi = c->pos == GPT2_POS_ALIBI;
    in->packed_docs = opt->doc_sep.len > 0;
    in->doc_positions = in->packed_docs && opt->doc_positions;
    in->attn = attn;
    in->num_params = gs->num_params;
    in->n_pad = gs->n_pad;
    in->shard = gs->shard;
    in->zero = gs->zero;
    in->grads_bf16_copy = gs->world > 1 && gs->comm_bf16;
    in->logits_chunk_rows = opt->logits_chunk_rows;
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
    o->params = (float *)arena_take(a, "params (fp32 master)", n * 4);
    o->grads = (float *)arena_take(a, "grads (fp32)", n * 4);
    o->adam_m = (float *)arena_take(a, "adam m", nm * 4);
    o->adam_v = (float *)arena_take(a, "adam v", nm * 4);
    o->params_x = in->prec != PRECISION_FP32 ? arena_take(a, "params (16-bit copy)", n * 2) : (void *)o->params;
    o->gcomm = in->grads_bf16_copy ? (__nv_bfloat16 *)arena_take(a, "grads (bf16 to send)", n * 2) : NULL;
    o->dense_bias = in->mask == ATTN_MASK_DENSE
                        ? (float *)arena_take(a, "dense mask bias", (size_t)in->maxT * in->maxT * 4) : NULL;
    o->alibi_slopes = in->alibi ? (float *)arena_take(a, "alibi slopes", (size_t)in->H * 4) : NULL;
    o->fp8_params = in->fp8_param_bytes ? (char *)arena_take(a, "fp8 weights (E4M3 + transposes)", in->fp8_param_bytes) : NULL;
    return a->used;
}

/* Per layer unless shared: a shared buffer is one copy in the scratch region (plan_scratch). */
static size_t plan_acts(const MemPlanInput *in, MemoryLayout *o, Arena *a, int B, int T) {
    size_t N = (size_t)B * T, C = in->C, L = in->L, e = esize_of(in);
    Acts *x = &o->a;
    x->encoded = arena_take(a, "encoded", N * C * e);
    const size_t kept = L - (size_t)o->rc_layers; /* layers that keep a buffer recompute shares */
    if (!o->share_ln) x->ln1 = arena_take(a, "ln1 (per layer)", L * N * C * e);
    else if (kept) x->ln1_kept = arena_take(a, "ln1 (kept layers)", kept * N * C * e);
    x->ln1_mean = (float *)arena_take(a, "ln1 mean", L * N * 4);
    x->ln1_rstd = (float *)arena_take(a, "ln1 rstd", L * N * 4);
    x->qkv = arena_take(a, "qkv", L * N * (size_t)in->Q * e);
    x->atty = arena_take(a, "atty", L * N * C * e);
    x->att_saved = (char *)arena_take(a, "attention saved", L * o->att_saved_per_layer);
    x->res2 = arena_take(a, "res2", L * N * C * e);
    if (!o->share_ln) x->ln2 = arena_take(a, "ln2 (per layer)", L * N * C * e);
    else if (kept) x->ln2_kept = arena_take(a, "ln2 (kept layers)", kept * N * C * e);
    x->ln2_mean = (float *)arena_take(a, "ln2 mean", L * N * 4);
    x->ln2_rstd = (float *)arena_take(a, "ln2 rstd", L * N * 4);
    x->fch = arena_take(a, "fch (GELU input)", L * N * 4 * C * e);
    if (!o->share_gelu) x->fch_gelu = arena_take(a, "fch_gelu (per layer)", L * N * 4 * C * e);
    else if (kept) x->fch_gelu_kept = arena_take(a, "fch_gelu (kept layers)", kept * N * 4 * C * e);
    x->res3 = arena_take(a, "res3", L * N * C * e);
    x->lnf = arena_take(a, "lnf", N * C * e);
    x->lnf_mean = (float *)arena_take(a, "lnf mean", N * 4);
    x->lnf_rstd = (float *)arena_take(a, "lnf rstd", N * 4);
    x->losses = (float *)arena_take(a, "losses", N * 4);
    return a->used;
}

static size_t plan_scratch(const MemPlanInput *in, MemoryLayout *o, Arena *a, int B, int T) {
    size_t N = (size_t)B * T, C = in->C, e = esize_of(in);
    Scratch *s = &o->s;
    Acts *x = &o->a;
    /* persistent */
    a->phases = MEMPHASE_ALL;
    s->dln = arena_take(a, "dln", N * C * e);
    o->fp8_scratch = in->fp8_bytes_per_token ? (char *)arena_take(a, "fp8 casts of activations / gradients", N * in->fp8_bytes_per_token) : NULL;
    size_t red = cuda_colsum_scratch_floats(4 * in->C);
    if (cuda_layernorm_scratch_floats(in->C) > red) red = cuda_layernorm_scratch_floats(in->C);
    s->reduce = (float *)arena_take(a, "reduce", red * 4);
    s->norm_partials = (float *)arena_take(a, "norm partials", CUDA_NORM_BLOCKS * 4);
    s->logits_row = (float *)arena_take(a, "logits row", (size_t)in->Vp * 4);
    s->inputs = (int *)arena_take(a, "inputs", N * 4);
    s->targets = (int *)arena_take(a, "targets", N * 4);
    s->uniq = (int *)arena_take(a, "encoder groups", N * 4);
    s->start = (int *)arena_take(a, "encoder group starts", (N + 1) * 4);
    s->pos = (int *)arena_take(a, "encoder group rows", N * 4);
    s->num_uniq = (int *)arena_take(a, "encoder group count", 4);
    if (in->packed_docs) {
        s->doc = (int *)arena_take(a, "document starts", N * 4);
        if (in->doc_positions) {
            s->doc_pos = (int *)arena_take(a, "document positions", N * 4);
            s->pos_uniq = (int *)arena_take(a, "position groups", N * 4);
            s->pos_start = (int *)arena_take(a, "position group starts", (N + 1) * 4);
            s->pos_rows = (int *)arena_take(a, "position group rows", N * 4);
            s->pos_num_uniq = (int *)arena_take(a, "position group count", 4);
        }
    }
    s->dloss = (float *)arena_take(a, "dloss", 4);
    s->dlogits_scale = in->prec == PRECISION_FP16 ? (float *)arena_take(a, "dlogits scale", 4) : s->dloss;
    s->loss = (float *)arena_take(a, "loss", 4);
    s->sumsq = (float *)arena_take(a, "sum of squares", 4);
    s->adamw_scale = (float *)arena_take(a, "adamw scale", 2 * 4);
    /* the phase-shared region (the header comment says who lives when) */
    Overlay region, dir;
    overlay_begin(&region, a);
    o->region_offset = a->used;
    a->phases = MEMPHASE_CLASSIFIER;
    s->logits = arena_take(a, "logits / dlogits", (size_t)o->chunk_rows * o->ld_logits * e);
    overlay_next(&region);
    a->phases = MEMPHASE_BLOCKS;
    s->att_ws = o->att_ws_bytes ? arena_take(a, "attention workspace", o->att_ws_bytes) : NULL;
    /* two copies each, by layer parity: backward recomputes layer l-1's while layer l reads its own */
    if (o->share_gelu) x->fch_gelu = arena_take(a, "fch_gelu (shared)", 2 * N * 4 * C * e);
    if (o->share_ln) {
        x->ln1 = arena_take(a, "ln1 (shared)", 2 * N * C * e);
        x->ln2 = arena_take(a, "ln2 (shared)", 2 * N * C * e);
    }
    overlay_begin(&dir, a);
    a->phases = MEMPHASE_BLOCKS_FWD;
    s->proj = arena_take(a, "proj", N * C * e);
    overlay_next(&dir);
    a->phases = MEMPHASE_BLOCKS_BWD;
    s->dres = arena_take(a, "dres", N * C * e);
    s->dbig = arena_take(a, "dbig", N * 4 * C * e);
    s->dqkv = arena_take(a, "dqkv", N * (size_t)in->Q * e);
    overlay_end(&dir);
    overlay_end(&region);
    o->region_bytes = a->used - o->region_offset;
    a->phases = MEMPHASE_ALL;
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
    out->att_saved_per_layer = align256(in->attn->saved_bytes(&shape));
    out->att_ws_bytes = in->attn->workspace_bytes(&shape);
    out->ld_logits = (in->Vp + 7) & ~7;
    out->chunk_rows = logits_chunk_rows(in, out->ld_logits, B * T);
    out->rc_layers = in->recompute == RECOMPUTE_NONE ? 0 : in->L - in->keep_layers;
    out->share_gelu = in->recompute >= RECOMPUTE_GELU && out->rc_layers > 0;
    out->share_ln = in->recompute >= RECOMPUTE_ALL && out->rc_layers > 0;
    Arena p = {param_arena, 0, MEMARENA_PARAMS, MEMPHASE_ALL, out};
    Arena x = {act_arena, 0, MEMARENA_ACTS, MEMPHASE_ALL, out};
    Arena s = {scratch_arena, 0, MEMARENA_SCRATCH, MEMPHASE_ALL, out};
    out->param_bytes = plan_params(in, out, &p);
    out->act_bytes = plan_acts(in, out, &x, B, T);
    out->scratch_bytes = plan_scratch(in, out, &s, B, T);
    return out->param_bytes + out->act_bytes + out->scratch_bytes + cuda_matmul_workspace_bytes();
}

static const char *phases_name(int ph) {
    switch (ph) {
    case MEMPHASE_ALL: return "all";
    case MEMPHASE_BLOCKS: return "blocks fwd+bwd";
    case MEMPHASE_BLOCKS_FWD: return "blocks fwd";
    case MEMPHASE_BLOCKS_BWD: return "blocks bwd";
    case MEMPHASE_CLASSIFIER: return "classifier";
    default: return "?";
    }
}

void memory_plan_print(const MemoryLayout *o, int B, int T, FILE *f) {
    static const char *arena[3] = {"params", "acts", "scratch"};
    const double MiB = 1024.0 * 1024.0, GiB = MiB * 1024.0, N = (double)B * T;
    fprintf(f, "%-26s %-8s %-15s %12s %12s %12s\n", "buffer", "arena", "live in", "offset", "MiB", "bytes/token");
    for (int i = 0; i < o->num_buffers; i++) {
        const MemPlanBuffer *b = &o->buffers[i];
        fprintf(f, "%-26s %-8s %-15s %12zu %12.2f %12.1f\n", b->name, arena[b->arena], phases_name(b->phases),
                b->offset, b->bytes / MiB, b->bytes / N);
    }
    size_t mm = cuda_matmul_workspace_bytes();
    size_t total = o->param_bytes + o->act_bytes + o->scratch_bytes + mm;
    fprintf(f, "params arena  %10.2f MiB\n", o->param_bytes / MiB);
    fprintf(f, "acts arena    %10.2f MiB  (%.1f bytes/token)\n", o->act_bytes / MiB, o->act_bytes / N);
    fprintf(f, "scratch arena %10.2f MiB  (%.1f bytes/token; phase-shared region %.2f MiB at offset %zu)\n",
            o->scratch_bytes / MiB, o->scratch_bytes / N, o->region_bytes / MiB, o->region_offset);
    fprintf(f, "matmul workspace %7.2f MiB\n", mm / MiB);
    fprintf(f, "total (held)  %10.3f GiB\n", total / GiB);
}
