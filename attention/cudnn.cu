/* attention/cudnn.cu: `--attn cudnn`, cuDNN's fused flash attention (SDPA) through the graph API of
 * NVIDIA's header-only cudnn-frontend: the vendor kernel, run in the same trainer as ours, as a
 * speed and accuracy reference. The Makefile builds this file only where cudnn.h and the frontend
 * are found (and links -lcudnn then); the registry (attention.c) names attn_cudnn_cuda weakly, so
 * a build without it simply has no CUDA `cudnn`. There is no CPU counterpart.
 *
 * What maps onto cuDNN (everything else is refused in unsupported() with a one-line reason):
 *   layout     attention.h's token-major tensors are cuDNN (B, H, T, D) tensors with strides
 *              (T*ld, D, ld, 1): no copy; K/V with Hkv heads (GQA/MQA, cuDNN sums dK/dV itself)
 *   dtype      bf16 or fp16 (cuDNN's BFLOAT16 / HALF io type, fp32 compute and statistics;
 *              its fused attention has no fp32 path)
 *   masks      causal (diagonal band, right bound 0, top-left aligned), sliding windows (left bound
 *              W: j > i - W; without causal also right bound W - 1: j < i + W), key padding given as
 *              key_end (cuDNN's padding mask: per-sequence lengths, seq_len_q = T for every b)
 *   refused    dense bias and its gradient (cuDNN takes a bias in the element type, not
 *              attention.h's fp32), packed documents, left padding (key_begin), ALiBi (cuDNN
 *              computes its own slopes, which differ from attn_alibi_slopes() unless H is a power
 *              of two, and it copies them from host memory on every call, which a CUDA graph
 *              capture cannot hold), windows together with key padding (rows left with no key),
 *              and whatever cuDNN itself rejects for the shape (its reason is passed on).
 * Not checked (device data): key_end[b] >= 1; a sequence with no valid key is not defined here.
 *
 * saved = cuDNN's softmax statistics, (B, H, T) fp32 at (b*H + h)*T + t (the log-sum-exp of each
 * scaled score row). The backward is cuDNN's default (non-deterministic) algorithm.
 *
 * Graphs: one forward and one backward graph per shape (and device), built on first sight and
 * kept for the life of the process. unsupported() and workspace_bytes() build them (cuDNN's own
 * verdict and workspace size need the built plan), so the trainer, which asks both before its
 * first step and runs every new shape once eagerly before capturing it, never builds inside a CUDA
 * graph capture; forward/backward refuse to build while their stream is capturing. Sampling at
 * growing T builds one graph per length (a few ms each once cuDNN has compiled its kernel).
 * workspace = [seq_len_q: B ints, padded to 256 bytes, with key padding only][cuDNN's workspace].
 *
 * Errors: cuDNN and frontend failures (error objects or C++ exceptions) become attn_cuda_fail()
 * one-liners or unsupported() reasons; nothing escapes into C.
 */
#include <cudnn_frontend.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

#include "attention/cuda_common.cuh"

namespace fe = cudnn_frontend;

namespace {

enum : int64_t { UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_DO, UID_DQ, UID_DK, UID_DV, UID_SEQ_Q, UID_SEQ_KV };

const size_t kSeqSlot = 256; /* bytes at the front of the workspace for seq_len_q (key padding only) */

/* Everything a graph depends on. */
struct Key {
    int device, dtype, B, T, H, Hkv, D, ld_qkv, ld_o, causal, window, padding;
    float scale;
    bool operator<(const Key &o) const {
        return std::tie(device, dtype, B, T, H, Hkv, D, ld_qkv, ld_o, causal, window, padding, scale) <
               std::tie(o.device, o.dtype, o.B, o.T, o.H, o.Hkv, o.D, o.ld_qkv, o.ld_o, o.causal, o.window, o.padding,
                        o.scale);
    }
};

struct Entry {
    std::shared_ptr<fe::graph::Graph> fwd, bwd;
    std::string why;      /* non-empty: cuDNN cannot run this shape ("cudnn: ..."), one line */
    size_t workspace = 0; /* bytes: the seq_len_q slot (if padding) + the larger graph's need */
};

std::mutex g_mutex;                           /* guards everything below */
std::map<Key, std::unique_ptr<Entry>> g_cache; /* entries are never removed: why strings stay valid */
std::map<int, cudnnHandle_t> g_handles;       /* one handle per device */
std::map<int, std::string> g_handle_errors;

/* "cudnn: <msg>" on one line, short enough for a log line. */
std::string one_line(const std::string &msg) {
    std::string s = "cudnn: " + msg;
    for (char &c : s)
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    if (s.size() > 300) s = s.substr(0, 297) + "...";
    return s;
}

Key key_of(const AttnShape *s, int device) {
    Key k;
    k.device = device;
    k.dtype = (int)s->dtype;
    k.B = s->B; k.T = s->T; k.H = s->H; k.Hkv = attn_kv_heads(s); k.D = s->D;
    k.ld_qkv = s->ld_qkv; k.ld_o = s->ld_o;
    k.causal = s->mask.kind == ATTN_MASK_CAUSAL;
    k.window = s->mask.window > 0 ? s->mask.window : 0;
    k.padding = s->mask.key_end != NULL;
    k.scale = s->scale;
    return k;
}

/* The shape checks that need no cuDNN: NULL or a reason. */
const char *refusal(const AttnShape *s) {
    const char *why = attn_shape_basics(s);
    if (why) return why;
    const AttnMask &m = s->mask;
    if (s->dtype != ATTN_BF16 && s->dtype != ATTN_FP16)
        return "cudnn: bf16 or fp16 only (cuDNN's fused attention has no fp32 path)";
    if (s->H % attn_kv_heads(s) != 0) return "cudnn: Hkv must divide H";
    if (m.kind == ATTN_MASK_DENSE || m.bias || m.dbias)
        return "cudnn: no dense bias (cuDNN takes a bias in the element type, not attention.h's fp32)";
    if (m.doc) return "cudnn: no packed documents (cuDNN has them only as ragged sequences, another layout)";
    if (m.key_begin) return "cudnn: no left padding (cuDNN's padding mask is sequence lengths: key_end only)";
    if (m.alibi_slopes)
        return "cudnn: no ALiBi (cuDNN's own slopes differ from attn_alibi_slopes unless H is a power of two)";
    if (m.window > 0 && m.key_end) return "cudnn: no window with key padding (rows could be left without keys)";
    if (s->D % 8 != 0 || s->D > 256) return "cudnn: D must be a multiple of 8, at most 256";
    if (s->ld_qkv % 8 != 0 || s->ld_o % 8 != 0) return "cudnn: leading dimensions must be multiples of 8";
    return NULL;
}

/* The handle of the current device (created on first use), or NULL with *why set. Lock held. */
cudnnHandle_t handle_locked(int device, const char **why) {
    auto it = g_handles.find(device);
    if (it != g_handles.end()) return it->second;
    auto err = g_handle_errors.find(device);
    if (err != g_handle_errors.end()) { *why = err->second.c_str(); return NULL; }
    cudnnHandle_t h = NULL;
    cudnnStatus_t st = cudnnCreate(&h);
    if (st != CUDNN_STATUS_SUCCESS) {
        std::string &e = g_handle_errors[device];
        e = one_line(std::string("cudnnCreate failed: ") + cudnnGetErrorString(st));
        *why = e.c_str();
        return NULL;
    }
    g_handles[device] = h;
    return h;
}

/* A (B, heads, T, D) tensor over attention.h's token-major layout with `ld` elements per token. */
fe::graph::Tensor_attributes token_major(const char *name, int64_t uid, const Key &k, int64_t heads, int64_t ld) {
    return fe::graph::Tensor_attributes()
        .set_name(name)
        .set_uid(uid)
        .set_dim({k.B, heads, k.T, k.D})
        .set_stride({(int64_t)k.T * ld, k.D, ld, 1});
}

/* The io type of a key's dtype (refusal() has let only bf16 and fp16 through). */
fe::DataType_t io_type(const Key &k) {
    return k.dtype == ATTN_FP16 ? fe::DataType_t::HALF : fe::DataType_t::BFLOAT16;
}

std::shared_ptr<fe::graph::Graph> new_graph(const Key &k) {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(io_type(k))
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    return g;
}

/* seq_len_q, seq_len_kv: (B, 1, 1, 1) int32 */
std::shared_ptr<fe::graph::Tensor_attributes> seq_lens(fe::graph::Graph &g, const char *name, int64_t uid, int B) {
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_name(name)
                        .set_uid(uid)
                        .set_dim({B, 1, 1, 1})
                        .set_stride({1, 1, 1, 1})
                        .set_data_type(fe::DataType_t::INT32));
}

/* The mask options shared by the forward and backward attributes. */
template <typename Attrs> void set_mask(Attrs &a, fe::graph::Graph &g, const Key &k) {
    if (k.causal || k.window > 0) a.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT);
    if (k.causal) a.set_diagonal_band_right_bound(0);                 /* keep j <= i */
    if (k.window > 0) {
        a.set_diagonal_band_left_bound(k.window);                     /* keep j > i - W */
        if (!k.causal) a.set_diagonal_band_right_bound(k.window - 1); /* keep j < i + W */
    }
    if (k.padding)
        a.set_padding_mask(true)
            .set_seq_len_q(seq_lens(g, "seq_len_q", UID_SEQ_Q, k.B))
            .set_seq_len_kv(seq_lens(g, "seq_len_kv", UID_SEQ_KV, k.B));
}

/* validate + operation graph + heuristics + plans; "" or the reason. */
std::string finish(fe::graph::Graph &g, cudnnHandle_t h, const char *pass, int64_t *ws) {
    fe::error_t e = g.build(h, {fe::HeurMode_t::A});
    if (!e.is_good()) return one_line(std::string(pass) + ": " + e.err_msg);
    fe::error_t w = g.get_workspace_size(*ws);
    if (!w.is_good()) return one_line(std::string(pass) + " workspace: " + w.err_msg);
    return "";
}

/* Builds both graphs of `k` into `e` (e->why says why not). */
void build(const Key &k, cudnnHandle_t h, Entry *e) {
    int64_t ws_f = 0, ws_b = 0;
    try {
        auto f = new_graph(k);
        auto q = f->tensor(token_major("Q", UID_Q, k, k.H, k.ld_qkv));
        auto kk = f->tensor(token_major("K", UID_K, k, k.Hkv, k.ld_qkv));
        auto v = f->tensor(token_major("V", UID_V, k, k.Hkv, k.ld_qkv));
        auto fo = fe::graph::SDPA_attributes().set_name("attention").set_generate_stats(true).set_attn_scale(k.scale);
        set_mask(fo, *f, k);
        auto [o, stats] = f->sdpa(q, kk, v, fo);
        o->set_output(true).set_uid(UID_O).set_dim({k.B, k.H, k.T, k.D}).set_stride({(int64_t)k.T * k.ld_o, k.D, k.ld_o, 1});
        stats->set_output(true).set_uid(UID_STATS).set_data_type(fe::DataType_t::FLOAT)
            .set_dim({k.B, k.H, k.T, 1}).set_stride({(int64_t)k.H * k.T, k.T, 1, 1});
        e->why = finish(*f, h, "forward", &ws_f);
        if (!e->why.empty()) return;

        auto b = new_graph(k);
        auto bq = b->tensor(token_major("Q", UID_Q, k, k.H, k.ld_qkv));
        auto bk = b->tensor(token_major("K", UID_K, k, k.Hkv, k.ld_qkv));
        auto bv = b->tensor(token_major("V", UID_V, k, k.Hkv, k.ld_qkv));
        auto bo = b->tensor(token_major("O", UID_O, k, k.H, k.ld_o));
        auto bdo = b->tensor(token_major("dO", UID_DO, k, k.H, k.ld_o));
        auto bst = b->tensor(fe::graph::Tensor_attributes().set_name("stats").set_uid(UID_STATS)
                                 .set_dim({k.B, k.H, k.T, 1}).set_stride({(int64_t)k.H * k.T, k.T, 1, 1})
                                 .set_data_type(fe::DataType_t::FLOAT));
        auto bopt = fe::graph::SDPA_backward_attributes().set_name("attention_backward").set_attn_scale(k.scale);
        set_mask(bopt, *b, k);
        auto [dq, dk, dv] = b->sdpa_backward(bq, bk, bv, bo, bdo, bst, bopt);
        dq->set_output(true).set_uid(UID_DQ).set_dim({k.B, k.H, k.T, k.D}).set_stride({(int64_t)k.T * k.ld_qkv, k.D, k.ld_qkv, 1});
        dk->set_output(true).set_uid(UID_DK).set_dim({k.B, k.Hkv, k.T, k.D}).set_stride({(int64_t)k.T * k.ld_qkv, k.D, k.ld_qkv, 1});
        dv->set_output(true).set_uid(UID_DV).set_dim({k.B, k.Hkv, k.T, k.D}).set_stride({(int64_t)k.T * k.ld_qkv, k.D, k.ld_qkv, 1});
        e->why = finish(*b, h, "backward", &ws_b);
        if (!e->why.empty()) return;
        e->fwd = f;
        e->bwd = b;
    } catch (const std::exception &x) {
        e->why = one_line(std::string("graph building threw: ") + x.what());
        return;
    } catch (...) {
        e->why = one_line("graph building threw an unknown exception");
        return;
    }
    size_t need = (size_t)(ws_f > ws_b ? ws_f : ws_b);
    e->workspace = (k.padding ? kSeqSlot : 0) + need;
}

/* The entry of s on the current device, built if new (unless `no_build`, then NULL if absent);
 * NULL with *why set when no handle can be had. */
Entry *lookup(const AttnShape *s, bool no_build, const char **why) {
    int device = 0;
    cudaError_t ce = cudaGetDevice(&device);
    if (ce != cudaSuccess) {
        cudaGetLastError();
        *why = "cudnn: no CUDA device";
        return NULL;
    }
    Key k = key_of(s, device);
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_cache.find(k);
    if (it != g_cache.end()) return it->second.get();
    if (no_build) { *why = NULL; return NULL; }
    cudnnHandle_t h = handle_locked(device, why);
    if (!h) return NULL;
    std::unique_ptr<Entry> e(new Entry);
    build(k, h, e.get());
    Entry *out = e.get();
    g_cache[k] = std::move(e);
    return out;
}

cudnnHandle_t current_handle() {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return NULL;
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_handles.find(device);
    return it == g_handles.end() ? NULL : it->second;
}

/* The entry for a pass, building it only outside a stream capture. 0, or 1 after attn_cuda_fail. */
int entry_for_pass(const AttnShape *s, cudaStream_t st, const char *pass, Entry **out) {
    const char *why = refusal(s);
    if (why) return attn_cuda_fail("cudnn %s: %s", pass, why);
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    ATTN_CUDA_TRY(cudaStreamIsCapturing(st, &cap));
    Entry *e = lookup(s, cap != cudaStreamCaptureStatusNone, &why);
    if (!e && !why)
        return attn_cuda_fail("cudnn %s: no graph for B=%d T=%d before a CUDA graph capture (ask workspace_bytes() "
                              "or run the shape once eagerly first)", pass, s->B, s->T);
    if (!e) return attn_cuda_fail("cudnn %s: %s", pass, why);
    if (!e->why.empty()) return attn_cuda_fail("cudnn %s: %s", pass, e->why.c_str());
    *out = e;
    return 0;
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

__global__ void fill_seq_len(int *out, int B, int T) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < B) out[b] = T;
}

/* The variant-pack entries of the padding mask: seq_len_q (= T, written into the workspace's
 * front slot on `st`) and seq_len_kv = key_end. 0, or 1 after attn_cuda_fail. */
int padding_pack(const AttnShape *s, void *workspace, cudaStream_t st, std::unordered_map<int64_t, void *> &pack) {
    int *seq_q = (int *)workspace;
    fill_seq_len<<<(s->B + 255) / 256, 256, 0, st>>>(seq_q, s->B, s->T);
    ATTN_LAUNCH_CHECK();
    pack[UID_SEQ_Q] = seq_q;
    pack[UID_SEQ_KV] = const_cast<int *>(s->mask.key_end);
    return 0;
}

int run(const fe::graph::Graph &g, std::unordered_map<int64_t, void *> &pack, void *workspace,
        cudaStream_t st, const char *pass, const AttnShape *s) {
    cudnnHandle_t h = current_handle();
    if (!h) return attn_cuda_fail("cudnn %s: no handle for this device", pass);
    cudnnStatus_t cs = cudnnSetStream(h, st);
    if (cs != CUDNN_STATUS_SUCCESS) return attn_cuda_fail("cudnn %s: cudnnSetStream: %s", pass, cudnnGetErrorString(cs));
    void *cudnn_ws = s->mask.key_end ? (char *)workspace + kSeqSlot : workspace;
    try {
        fe::error_t r = g.execute(h, pack, cudnn_ws);
        if (!r.is_good()) return attn_cuda_fail("%s", one_line(std::string(pass) + ": " + r.err_msg).c_str());
    } catch (const std::exception &x) {
        return attn_cuda_fail("%s", one_line(std::string(pass) + " threw: " + x.what()).c_str());
    } catch (...) {
        return attn_cuda_fail("cudnn %s: an unknown exception", pass);
    }
    ATTN_LAUNCH_CHECK();
    return 0;
}

} // namespace

static const char *cudnn_unsupported(const AttnShape *s) {
    const char *why = refusal(s);
    if (why) return why;
    Entry *e = lookup(s, false, &why);
    if (!e) return why;
    return e->why.empty() ? NULL : e->why.c_str();
}

static size_t cudnn_saved_bytes(const AttnShape *s) { return (size_t)attn_rows(s) * sizeof(float); }

static size_t cudnn_workspace_bytes(const AttnShape *s) {
    const char *why = refusal(s);
    if (why) return 0;
    Entry *e = lookup(s, false, &why);
    return e ? e->workspace : 0;
}

static int cudnn_forward(const AttnShape *s, const void *q, const void *k, const void *v, void *o, void *saved,
                         void *workspace, void *stream) {
    cudaStream_t st = attn_stream(stream);
    Entry *e;
    if (entry_for_pass(s, st, "forward", &e)) return 1;
    if (!aligned16(q) || !aligned16(k) || !aligned16(v) || !aligned16(o) || !aligned16(saved))
        return attn_cuda_fail("cudnn forward: q, k, v, o and saved must be 16-byte aligned");
    if (e->workspace && !workspace) return attn_cuda_fail("cudnn forward: a workspace of %zu bytes is needed", e->workspace);
    std::unordered_map<int64_t, void *> pack = {
        {UID_Q, const_cast<void *>(q)}, {UID_K, const_cast<void *>(k)}, {UID_V, const_cast<void *>(v)},
        {UID_O, o}, {UID_STATS, saved}};
    if (s->mask.key_end && padding_pack(s, workspace, st, pack)) return 1;
    return run(*e->fwd, pack, workspace, st, "forward", s);
}

static int cudnn_backward(const AttnShape *s, const void *q, const void *k, const void *v, const void *o,
                          const void *dout, const void *saved, void *dq, void *dk, void *dv, void *workspace,
                          void *stream) {
    cudaStream_t st = attn_stream(stream);
    Entry *e;
    if (entry_for_pass(s, st, "backward", &e)) return 1;
    const void *ptrs[] = {q, k, v, o, dout, saved, dq, dk, dv};
    for (const void *p : ptrs)
        if (!aligned16(p)) return attn_cuda_fail("cudnn backward: every tensor must be 16-byte aligned");
    if (e->workspace && !workspace) return attn_cuda_fail("cudnn backward: a workspace of %zu bytes is needed", e->workspace);
    std::unordered_map<int64_t, void *> pack = {
        {UID_Q, const_cast<void *>(q)}, {UID_K, const_cast<void *>(k)}, {UID_V, const_cast<void *>(v)},
        {UID_O, const_cast<void *>(o)}, {UID_DO, const_cast<void *>(dout)}, {UID_STATS, const_cast<void *>(saved)},
        {UID_DQ, dq}, {UID_DK, dk}, {UID_DV, dv}};
    if (s->mask.key_end) {
        /* Keys past key_end get no gradient; zero dK, dV first so that those rows read 0 whether or
         * not cuDNN writes them. */
        size_t es = attn_esize(s->dtype); /* 2: bf16 or fp16 */
        size_t row = (size_t)attn_kv_heads(s) * s->D * es, pitch = (size_t)s->ld_qkv * es;
        size_t rows = (size_t)s->B * s->T;
        ATTN_CUDA_TRY(cudaMemset2DAsync(dk, pitch, 0, row, rows, st));
        ATTN_CUDA_TRY(cudaMemset2DAsync(dv, pitch, 0, row, rows, st));
        if (padding_pack(s, workspace, st, pack)) return 1;
    }
    return run(*e->bwd, pack, workspace, st, "backward", s);
}

extern "C" const AttnImpl attn_cudnn_cuda = {ATTN_CUDNN, ATTN_CUDA, cudnn_unsupported, cudnn_saved_bytes,
                                             cudnn_workspace_bytes, cudnn_forward, cudnn_backward};
