/* dev/cupti_trace.c: a timeline of any CUDA program's GPU work, without changing the program.
 *
 * Built as a shared library (make build/dev/libcupti_trace.so) and loaded by the CUDA driver at
 * its initialisation through CUDA's injection hook:
 *
 *   CUDA_INJECTION64_PATH=build/dev/libcupti_trace.so CUPTI_TRACE_OUT=trace.csv ./train_gpt2 ...
 *   python3 dev/trace_gaps.py trace.csv
 *
 * It asks CUPTI for activity records of every kernel, memcpy and memset (kernels inside a replayed
 * CUDA graph included) and of every runtime and driver API call, and writes them at exit as CSV:
 *   kind,start_ns,end_ns,stream_or_thread,correlation,graph,name
 * kind is kernel / memcpy / memset (stream = the CUDA stream id, graph = the graph id or 0) or
 * runtime / driver (the calling thread; name = the API function). A kernel and the API call that
 * launched it share a correlation id (all kernels of one graph replay share the cudaGraphLaunch's).
 * Timestamps are CUPTI's nanoseconds, one clock for the GPU and the host records.
 *
 * Kernel records use CUPTI's concurrent-kernel kind, which keeps kernels of different streams
 * overlapping as they would without the tracer. The lent machines have no working nsys
 * (the device tool's KINDS.md); this is what measures the time between kernels there.
 * A dev tool, so the output file comes from the environment (CUPTI_TRACE_OUT, default
 * cupti_trace.csv); the program traced is not changed. */
#include <cupti.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_BYTES (8u << 20)

static FILE *out;
static size_t dropped;

static void check(CUptiResult r, const char *what) {
    if (r == CUPTI_SUCCESS) return;
    const char *s = "?";
    cuptiGetResultString(r, &s);
    fprintf(stderr, "cupti_trace: %s: %s\n", what, s);
}

static void CUPTIAPI buffer_requested(uint8_t **buf, size_t *size, size_t *max_records) {
    *buf = (uint8_t *)aligned_alloc(8, BUF_BYTES);
    *size = *buf ? BUF_BYTES : 0;
    *max_records = 0;
}

static const char *api_name(CUpti_CallbackDomain dom, CUpti_CallbackId cbid) {
    const char *n = NULL;
    if (cuptiGetCallbackName(dom, cbid, &n) != CUPTI_SUCCESS || !n) return "?";
    return n;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid) {
    (void)size;
    CUpti_Activity *rec = NULL;
    while (out && cuptiActivityGetNextRecord(buf, valid, &rec) == CUPTI_SUCCESS) {
        switch (rec->kind) {
        case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
        case CUPTI_ACTIVITY_KIND_KERNEL: {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
            fprintf(out, "kernel,%llu,%llu,%u,%u,%u,%s\n", (unsigned long long)k->start, (unsigned long long)k->end,
                    k->streamId, k->correlationId, k->graphId, k->name ? k->name : "?");
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMCPY: {
            const CUpti_ActivityMemcpy6 *c = (const CUpti_ActivityMemcpy6 *)rec;
            fprintf(out, "memcpy,%llu,%llu,%u,%u,%u,memcpy_kind%u_%llu_bytes\n", (unsigned long long)c->start,
                    (unsigned long long)c->end, c->streamId, c->correlationId, c->graphId, (unsigned)c->copyKind,
                    (unsigned long long)c->bytes);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMSET: {
            const CUpti_ActivityMemset4 *s = (const CUpti_ActivityMemset4 *)rec;
            fprintf(out, "memset,%llu,%llu,%u,%u,%u,memset_%llu_bytes\n", (unsigned long long)s->start,
                    (unsigned long long)s->end, s->streamId, s->correlationId, s->graphId, (unsigned long long)s->bytes);
            break;
        }
        case CUPTI_ACTIVITY_KIND_RUNTIME:
        case CUPTI_ACTIVITY_KIND_DRIVER: {
            const CUpti_ActivityAPI *a = (const CUpti_ActivityAPI *)rec;
            int rt = rec->kind == CUPTI_ACTIVITY_KIND_RUNTIME;
            fprintf(out, "%s,%llu,%llu,%u,%u,0,%s\n", rt ? "runtime" : "driver", (unsigned long long)a->start,
                    (unsigned long long)a->end, a->threadId, a->correlationId,
                    api_name(rt ? CUPTI_CB_DOMAIN_RUNTIME_API : CUPTI_CB_DOMAIN_DRIVER_API, a->cbid));
            break;
        }
        default: break;
        }
    }
    size_t d = 0;
    if (cuptiActivityGetNumDroppedRecords(ctx, stream, &d) == CUPTI_SUCCESS) dropped += d;
    free(buf);
}

static void finish(void) {
    check(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "flush");
    if (!out) return;
    fclose(out);
    out = NULL;
    if (dropped) fprintf(stderr, "cupti_trace: %zu records dropped\n", dropped);
}

/* Called by the CUDA driver when CUDA_INJECTION64_PATH names this library. */
int InitializeInjection(void) {
    const char *path = getenv("CUPTI_TRACE_OUT");
    if (!path || !*path) path = "cupti_trace.csv";
    out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "cupti_trace: cannot write %s\n", path);
        return 0;
    }
    fprintf(out, "kind,start_ns,end_ns,stream_or_thread,correlation,graph,name\n");
    check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "register");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enable kernels");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "enable memcpy");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "enable memset");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME), "enable runtime API");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_DRIVER), "enable driver API");
    atexit(finish);
    return 1;
}
