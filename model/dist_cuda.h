/* model/dist_cuda.h: the CUDA backend's NCCL communicator (C++ only, used by grad_sync_cuda.cu).
 *
 * The communicator is non-blocking, and every wait on a stream that holds collectives polls
 * NCCL's asynchronous error state against a deadline: a rank that dies or hangs makes the
 * others print one line and exit(1) within the timeout instead of waiting forever. Without
 * NCCL in the build, create() fails with a message and nothing else is reachable.
 */
#ifndef DIST_CUDA_H
#define DIST_CUDA_H

#include <cuda_runtime.h>
#include <stddef.h>

typedef struct DistComm DistComm;
typedef enum { DIST_F32 = 0, DIST_BF16, DIST_F64 } DistType;

/* Joins the world's communicator (collective). NULL with one line in err on failure/timeout.
 * max_ctas > 0 caps the CTAs NCCL uses (fewer leave SMs to the matmuls the gradient sync
 * overlaps; --nccl-max-ctas); NCCL_MAX_CTAS or NCCL_MAX_NCHANNELS in the environment win. */
DistComm *distc_create(int rank, int world, const void *nccl_id, double timeout_s, int max_ctas, char *err,
                       size_t errlen);
void distc_destroy(DistComm *c);

/* Collectives, enqueued on `stream` (in place). On an NCCL error they print and exit(1). */
void distc_group_start(DistComm *c);
void distc_group_end(DistComm *c);
void distc_all_reduce_sum(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream);
/* buf holds count*world elements; rank r's reduced shard lands at buf + r*count. */
void distc_reduce_scatter_sum(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream);
/* buf holds count*world elements; each rank's shard at buf + r*count reaches every rank. */
void distc_all_gather(DistComm *c, void *buf, size_t count, DistType t, cudaStream_t stream);
/* In place: the sum of every rank's buf[0, count) lands in root's buf (the others' buf is not
 * to be relied on afterwards). Grouped, pieces of these move the bytes of a reduce-scatter. */
void distc_reduce_sum(DistComm *c, void *buf, size_t count, DistType t, int root, cudaStream_t stream);
/* In place: root's buf[0, count) to every rank. */
void distc_broadcast(DistComm *c, void *buf, size_t count, DistType t, int root, cudaStream_t stream);

/* Waits for the stream, watching NCCL and the deadline; prints one line and exit(1) when a peer
 * failed or nothing finished within the timeout. */
void distc_sync(DistComm *c, cudaStream_t stream);
/* The same for one event of a stream (the work queued before it; what follows may still run). */
void distc_sync_event(DistComm *c, cudaEvent_t event);

/* A fresh NCCL unique id (DIST_ID_BYTES) for rank 0 to hand out. 0, or -1 with err. */
int distc_unique_id(void *id, char *err, size_t errlen);

#endif
