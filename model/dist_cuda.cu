/* model/dist_cuda.cu: NCCL communicator with bounded waits (see dist_cuda.h). */
#include "model/dist_cuda.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_NCCL
#include <nccl.h>
#include "common/error_text.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}


struct DistComm {
    ncclComm_t comm;
    int rank, world;
    double timeout_s;
};

static ncclDataType_t nccl_type(DistType t) {
    return t == DIST_BF16 ? ncclBfloat16 : t == DIST_F64 ? ncclFloat64 : ncclFloat32;
}
static size_t type_bytes(DistType t) { return t == DIST_BF16 ? 2 : t == DIST_F64 ? 8 : 4; }

static void die(DistComm *c, const char *what, const char *detail) {
    fprintf(stderr, "error: rank %d of %d: %s (%s); stopping\n", c->rank, c->world, what, detail);
    fflush(stderr);
    ncclCommAbort(c->comm);
    exit(1);
}

/* A non-blocking communicator may answer ncclInProgress: poll until the call has settled. */
static void settle(DistComm *c, ncclResult_t rc, const char *what) {
    double deadline = now_s() + c->timeout_s;
    while (rc == ncclInProgress) {
        if (now_s() > deadline) die(c, what, "NCCL did not finish enqueuing within --dist-timeout");
        usleep(50);
        ncclResult_t st = ncclSuccess;
        ncclCommGetAsyncError(c->comm, &st);
        rc = st;
    }
    if (rc != ncclSuccess) die(c, what, ncclGetErrorString(rc));
}

DistComm *distc_create(int rank, int world, const void *nccl_id, double timeout_s, int max_ctas, char *err,
                       size_t errlen) {
    DistComm *c = (DistComm *)calloc(1, sizeof *c);
    c->rank = rank;
    c->world = world;
    c->timeout_s = timeout_s > 0 ? timeout_s : 300.0;
    ncclUniqueId id;
    memcpy(&id, nccl_id, sizeof id);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    /* Fewer NCCL CTAs leave SMs to the backward's matmuls that the gradient sync overlaps
     * (--nccl-max-ctas N; 0: NCCL's own choice). NCCL's own NCCL_MAX_CTAS or NCCL_MAX_NCHANNELS
     * in the environment win: NCCL reads them itself. */
    if (max_ctas > 0 && !getenv("NCCL_MAX_CTAS") && !getenv("NCCL_MAX_NCHANNELS")) config.maxCTAs = max_ctas;
    ncclResult_t rc = ncclCommInitRankConfig(&c->comm, world, id, rank, &config);
    double deadline = now_s() + c->timeout_s;
    while (rc == ncclInProgress) {
        if (now_s() > deadline) {
            set_err(err, errlen, "NCCL communicator of %d ranks not ready within %.0f s (a rank missing?)", world,
                    c->timeout_s);
            ncclCommAbort(c->comm);
            free(c);
            return NULL;
        }
        usleep(1000);
        ncclCommGetAsyncError(c->comm, &rc);
    }
    if (rc != ncclSuccess) {
        set_err(err, errlen, "NCCL communicator init failed on rank %d: %s", rank, ncclGetErrorString(rc));
        if (c->comm) ncclCommAbort(c->comm);
        free(c);
        return NULL;
    }
    return c;
}

void distc_destroy(DistComm *c) {
    if (!c) return;
    ncclCommFinalize(c->comm);
    ncclResult_t st = ncclInProgress;
    double deadline = now_s() + c->timeout_s;
    while (ncclCommGetAsyncError(c->comm, &st) == ncclSuccess && st == ncclInProgress && now_s() < deadline)
        usleep(1000);
    if (st == ncclSuccess) ncclCommDestroy(c->comm);
    else ncclCommAbort(c->comm);
    free(c);
}

void distc_group_start(DistComm *c) { settle(c, ncclGroupStart(), "ncclGroupStart"); }
void distc_group_end(DistComm *c) { settle(c, ncclGroupEnd(), "ncclGroupEnd"); }

void distc_all_reduce_sum(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream) {
    settle(c, ncclAllReduce(buf, buf, count, nccl_type(t), ncclSum, c->comm, stream), "all-reduce");
}
void distc_reduce_scatter_sum(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream) {
    char *shard = (char *)buf + (size_t)c->rank * count * type_bytes(t);
    settle(c, ncclReduceScatter(buf, shard, count, nccl_type(t), ncclSum, c->comm, stream), "reduce-scatter");
}
void distc_all_gather(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream) {
    char *shard = (char *)buf + (size_t)c->rank * count * type_bytes(t);
    settle(c, ncclAllGather(shard, buf, count, nccl_type(t), c->comm, stream), "all-gather");
}

void distc_reduce_sum(DistComm *c, void *buf, size_t count, DistType t, int root, cudaStream_t stream) {
    settle(c, ncclReduce(buf, buf, count, nccl_type(t), ncclSum, root, c->comm, stream), "reduce");
}
void distc_broadcast(DistComm *c, void *buf, size_t count, DistType t, int root, cudaStream_t stream) {
    settle(c, ncclBroadcast(buf, buf, count, nccl_type(t), root, c->comm, stream), "broadcast");
}

/* Polls `stream`, or `event` when it is not NULL, until it is done, watching NCCL meanwhile. */
static void wait_watched(DistComm *c, cudaStream_t stream, cudaEvent_t event) {
    double deadline = now_s() + c->timeout_s;
    for (;;) {
        cudaError_t q = event ? cudaEventQuery(event) : cudaStreamQuery(stream);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) die(c, "CUDA error while waiting for the GPU", cudaGetErrorString(q));
        ncclResult_t st = ncclSuccess;
        ncclCommGetAsyncError(c->comm, &st);
        if (st != ncclSuccess && st != ncclInProgress) die(c, "NCCL reported a failure", ncclGetErrorString(st));
        if (now_s() > deadline)
            die(c, "no progress within --dist-timeout", "another rank died, hangs, or is far behind");
        usleep(20);
    }
}

void distc_sync(DistComm *c, cudaStream_t stream) { wait_watched(c, stream, NULL); }
void distc_sync_event(DistComm *c, cudaEvent_t event) { wait_watched(c, NULL, event); }

#else /* no NCCL in this build */

struct DistComm { int unused; };

DistComm *distc_create(int rank, int world, const void *nccl_id, double timeout_s, int max_ctas, char *err,
                       size_t errlen) {
    set_err(err, errlen, "this build has no NCCL (nccl.h was not found), so it trains on one GPU only");
    return NULL;
}
void distc_destroy(DistComm *c) {}
void distc_group_start(DistComm *c) {}
void distc_group_end(DistComm *c) {}
void distc_all_reduce_sum(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream) {}
void distc_reduce_scatter_sum(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream) {}
void distc_all_gather(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream) {}
void distc_reduce_sum(DistComm *c, void *buf, size_t count, DistType t, int root, cudaStream_t stream) {}
void distc_broadcast(DistComm *c, void *buf, size_t count, DistType t, int root, cudaStream_t stream) {}
void distc_sync(DistComm *c, cudaStream_t stream) { cudaStreamSynchronize(stream); }
void distc_sync_event(DistComm *c, cudaEvent_t event) { cudaEventSynchronize(event); }

#endif

/* Rank 0's id for the rendezvous (cuda_extras). */
int distc_unique_id(void *id, char *err, size_t errlen) {
#ifdef HAVE_NCCL
    ncclUniqueId u;
    ncclResult_t rc = ncclGetUniqueId(&u);
    if (rc != ncclSuccess) {
        set_err(err, errlen, "ncclGetUniqueId failed: %s", ncclGetErrorString(rc));
        return -1;
    }
    memcpy(id, &u, sizeof u);
    return 0;
#else
    set_err(err, errlen, "this build has no NCCL (nccl.h was not found), so it trains on one GPU only");
    return -1;
#endif
}
