/* model/memory_plan_cuda.h: where every buffer of the CUDA backend lives.
 *
 * Three arenas, sized before anything is allocated and allocated once by create() (so buffers
 * never move: a captured CUDA graph replays on the same addresses):
 *   params   master, grads, m, v (fp32) + the bf16 / fp16 weight copy (+ the bf16 gradient copy
 *            that data parallel sends, + a dense mask's bias, + the ALiBi slopes)
 *   acts     what backward needs from forward, per layer (the attention's saved buffer too)
 *   scratch  a persistent part (dln, reduction scratch, the batch's token ids and groupings,
 *            scalars) and one phase-shared region (below)
 * --recompute (model/backend.h): gelu keeps no GELU output per layer, all also no LayerNorm
 * output; each of those has two shared copies (by layer parity: backward recomputes layer l-1's
 * on a second stream while layer l reads its own), in the phase-shared region. --keep-layers K:
 * the last K layers keep theirs anyway, in the acts arena (K slots of each such buffer).
 *
 * The phase-shared region. A step's device work runs in order on one stream, in three phases:
 *   BLOCKS_FWD  forward's embedding and transformer blocks, up to and with the final LayerNorm
 *   CLASSIFIER  the lm head's forward (logits), the fused softmax/cross-entropy that writes
 *               dlogits over them, and backward's lm head (which reads dlogits and writes dln,
 *               the gradient into lnf; fp32's chunked classifier recomputes each chunk there)
 *   BLOCKS_BWD  backward after the lm head: the final LayerNorm's backward, the blocks, the
 *               encoder's backward
 * (grad norm and AdamW touch only the params arena and the persistent scratch.) Each buffer of
 * the region is live in one or both block phases or in CLASSIFIER alone:
 *   logits (dlogits)                       CLASSIFIER: written by the lm head's forward, read
 *                                          by its backward; dead once backward's lm head is done
 *   proj                                   BLOCKS_FWD: each block's attproj / fcproj output,
 *                                          consumed by the next residual + LayerNorm
 *   dres, dbig, dqkv                       BLOCKS_BWD: dres is cleared after the lm head loop
 *   attention workspace, the shared GELU   BLOCKS_FWD and BLOCKS_BWD: written and read within
 *   and LayerNorm outputs (recompute)      one layer's step of either pass (the attention's
 *                                          workspace is per call; see attention/attention.h)
 * so the region is laid out as two overlays at the same base: {logits} and {attention
 * workspace, shared GELU / LayerNorm outputs, then proj overlaid on dres, dbig, dqkv}, and is as
 * large as the larger. dln stays outside (backward's lm head writes it while reading dlogits).
 * Consequences: dlogits do not survive a backward (the backend refuses a second backward of
 * one forward) and a forward without targets overwrites the logits of the one before (it never
 * had any for backward). Nothing reads a region buffer across a phase it is not live in.
 *
 * memory_plan() lays the buffers out over arena bases; with NULL bases it only measures (every
 * pointer NULL, the sizes exact), so the same function answers "does it fit" and "where is it",
 * and lists every buffer (name, arena, offset, bytes, phases) for dev/memory_plan.cu and the
 * tests. C++ only (used by model/gpt2_cuda.cu).
 */
#ifndef MEMORY_PLAN_CUDA_H
#define MEMORY_PLAN_CUDA_H

#include <cuda_bf16.h>
#include <stddef.h>
#include <stdio.h>
#include "model/precision.h"
#include "model/backend.h"
#include "model/grad_sync_cuda.h"
#include "attention/attention.h"

typedef struct {
    /* per layer (L copies) unless recompute shares them (then two, by parity, in scratch's region) */
    void *ln1, *qkv, *atty, *res2, *ln2, *fch, *fch_gelu, *res3;
    /* with a shared buffer, the slots of the last layers that keep theirs (--keep-layers): layer
     * l >= rc_layers at index l - rc_layers; NULL when none keep it */
    void *ln1_kept, *ln2_kept, *fch_gelu_kept;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;
    char *att_saved;
    void *encoded, *lnf;
    float *lnf_mean, *lnf_rstd, *losses;
} Acts;

typedef struct {
    void *proj;     /* (N, C): attproj / fcproj output before the residual add */
    void *dres;     /* (N, C): gradient of the residual stream */
    void *dln;      /* (N, C): gradient into a LayerNorm output / attention output */
    void *dbig;     /* (N, 4C): gradient of the MLP pre-activation */
    void *dqkv;     /* (N, Q), Q = C + 2 Hkv D the QKV projection's outputs */
    void *logits;   /* (chunk_rows, ld_logits): logits, then dlogits in place */
    void *att_ws;
    float *reduce;  /* column-sum partials / bias-gradient scratch */
    float *norm_partials;
    float *logits_row; /* Vp floats for logits_at */
    int *inputs, *targets, *uniq, *start, *pos, *num_uniq;
    /* packed documents (NULL without): each token's document start (the attention's mask.doc)
     * and, with restarting positions, its position and the rows grouped by position (dwpe) */
    int *doc, *doc_pos, *pos_uniq, *pos_start, *pos_rows, *pos_num_uniq;
    float *dloss, *loss, *sumsq;
    float *adamw_scale;  /* {multiplier, run}: AdamW's gradient scale, decided on the device */
    /* the classifier's factor on dlogits: == dloss (1/valid tokens) in fp32 and bf16; in fp16 its
     * own float, G/valid tokens (gpt2_cuda.cu: the lm head's backward divides G out again) */
    float *dlogits_scale;
} Scratch;

/* What the layout depends on. */
typedef struct {
    Precision prec;
    int L, C, H, Vp, maxT;
    int Hkv, Q;              /* K/V heads; QKV projection outputs C + 2 Hkv D */
    RecomputeMode recompute;
    int keep_layers;         /* the last ones keep what recompute would recompute (0..L) */
    AttnMaskKind mask;
    int window;              /* the attention's sliding window (0 = none) */
    int alibi;               /* ALiBi: a device array of H slopes */
    int packed_docs;         /* documents: the per-token starts uploaded with each batch */
    int doc_positions;       /* with packed_docs: positions restart at each document */
    const AttnImpl *attn;
    size_t num_params;       /* real parameters */
    size_t n_pad, shard;     /* padded to world equal shards (model/grad_sync_cuda.h) */
    int zero;                /* ZeRO-1: AdamW m and v for the shard only */
    int grads_bf16_copy;     /* data parallel sends gradients in bf16: an n_pad bf16 copy */
    int logits_chunk_rows;   /* fp32: rows of logits at a time; 0 = at most 256 MiB of them */
    size_t fp8_param_bytes, fp8_bytes_per_token; /* --matmul fp8: its state and work (gpt2_cuda.cu), or 0 */
} MemPlanInput;

/* The phases a buffer is live in (the header comment); persistent buffers are live in all. */
enum {
    MEMPHASE_BLOCKS_FWD = 1,
    MEMPHASE_CLASSIFIER = 2,
    MEMPHASE_BLOCKS_BWD = 4,
    MEMPHASE_BLOCKS = MEMPHASE_BLOCKS_FWD | MEMPHASE_BLOCKS_BWD,
    MEMPHASE_ALL = 7
};
enum { MEMARENA_PARAMS = 0, MEMARENA_ACTS, MEMARENA_SCRATCH };

/* One buffer of the plan: two buffers of one arena may overlap only when their phases are
 * disjoint (test/gpu/test_trainer.cu checks every pair). */
typedef struct {
    const char *name;
    int arena;               /* MEMARENA_* */
    int phases;              /* MEMPHASE_* */
    size_t offset, bytes;    /* within the arena */
} MemPlanBuffer;
#define MEMPLAN_MAX_BUFFERS 64

typedef struct {
    size_t param_bytes, act_bytes, scratch_bytes;
    size_t region_offset, region_bytes; /* the phase-shared region, in the scratch arena */
    size_t att_saved_per_layer, att_ws_bytes;
    int ld_logits;           /* Vp rounded up to a multiple of 8 */
    int chunk_rows;          /* rows of logits per classifier chunk */
    int share_ln, share_gelu;/* recompute: shared LayerNorm / GELU output buffers (two copies,
                              * layer l's is l & 1), rewritten by backward before each layer's use */
    int rc_layers;           /* the layers 0 .. rc_layers-1 recompute (L - keep_layers, or 0 with
                              * recompute none); the rest keep theirs in the acts arena */
    /* params arena */
    float *params, *grads, *adam_m, *adam_v;
    void *params_x;          /* the weights the matmuls read: bf16 / fp16 copy, or == params in fp32 */
    __nv_bfloat16 *gcomm;    /* n_pad bf16 (grads_bf16_copy), else NULL */
    float *dense_bias;       /* (maxT, maxT) when the mask is dense */
    float *alibi_slopes;     /* (H) with ALiBi */
    char *fp8_params, *fp8_scratch; /* --matmul fp8 (params arena, scratch arena), else NULL */
    Acts a;
    Scratch s;
    MemPlanBuffer buffers[MEMPLAN_MAX_BUFFERS];
    int num_buffers;
} MemoryLayout;

/* What the layout depends on, from the model's options, its attention and its shards (gsync_plan). */
void memplan_input(const ModelOptions *opt, const AttnImpl *attn, const GradSync *gs, MemPlanInput *in);
/* The attention shape of a (B, T) batch: heads and K/V heads, mask kind, window, and the device
 * arrays of mem (the dense mask's (T, T) bias with row stride maxT, the ALiBi slopes, the
 * documents). With mem NULL (measuring, or checking before anything is allocated) each array that
 * the model has is a non-NULL marker that must only be tested for presence, never read. */
AttnShape memplan_attn_shape(const MemPlanInput *in, const MemoryLayout *mem, int B, int T);
/* Lays out the buffers for batch B (T = maxT) over the three arena bases (all NULL: measure
 * only). Returns the bytes of the three arenas plus the matmul workspace. */
size_t memory_plan(const MemPlanInput *in, int B, char *param_arena, char *act_arena, char *scratch_arena,
                   MemoryLayout *out);
/* The plan as a table: every buffer with its arena, phases, offset and size (MiB and bytes per
 * token of the B maxT batch), then the arenas' totals. */
void memory_plan_print(const MemoryLayout *lay, int B, int T, FILE *f);

#endif
