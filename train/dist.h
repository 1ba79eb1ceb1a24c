/* train/dist.h: the process side of multi-GPU training -- who am I (rank, world, local rank)
 * from the launcher's environment, how the NCCL unique id reaches every rank (a small TCP
 * rendezvous with rank 0), and `--gpus N`, which starts N workers of this program on one node.
 *
 * Launchers, in order of precedence (the first whose variables are set wins):
 *   torchrun style  RANK, WORLD_SIZE, LOCAL_RANK (default: RANK), MASTER_ADDR, MASTER_PORT
 *   Slurm srun      SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (SLURM_NNODES > 1: multi-node)
 *   OpenMPI mpirun  OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
 *                   (OMPI_COMM_WORLD_LOCAL_SIZE < SIZE: multi-node)
 *   none            a single process: rank 0 of 1.
 * MASTER_ADDR / MASTER_PORT name rank 0's rendezvous for every launcher; they default to
 * 127.0.0.1 and DIST_DEFAULT_PORT, and a world known to span nodes must set MASTER_ADDR.
 */
#ifndef DIST_H
#define DIST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DIST_ID_BYTES 128 /* sizeof(ncclUniqueId) */
#define DIST_DEFAULT_PORT 29517

typedef struct {
    int rank, world, local_rank;
    const char *launcher;    /* "torchrun", "slurm", "mpi" or "single" */
    char master_addr[256];
    int master_port;
    int multi_node;          /* the launcher says the world spans more than one node */
} DistInfo;

/* Reads the environment. Returns 0, or -1 with one line in err naming the variable and the
 * problem (not a number, rank outside the world, a multi-node world without MASTER_ADDR). */
int dist_from_env(DistInfo *d, char *err, size_t errlen);

/* Every rank ends with rank 0's id: rank 0 listens on MASTER_PORT and sends its `id` to each of
 * the world-1 others, which connect to MASTER_ADDR:MASTER_PORT (retrying) and receive it into
 * `id`. All within timeout_s. Returns 0, or -1 with one line in err (who was missing). */
int dist_rendezvous(const DistInfo *d, unsigned char id[DIST_ID_BYTES], double timeout_s, char *err,
                    size_t errlen);

/* `--gpus N` on one node: runs N copies of this program (/proc/self/exe with argv) with RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT and
 * NCCL_NVLS_ENABLE=0 set, and waits. The launcher binds the rendezvous socket on a port the
 * kernel picks and rank 0 inherits it (TRAIN_GPT2_RDZV_FD), so the port cannot be taken between. When one exits non-zero (or is killed), the others get
 * SIGTERM, then SIGKILL after grace_s; the launcher returns the first failure's exit status
 * (128 + signal for a killed worker), else 0. Returns -1 with err when it cannot start. */
int dist_launch_local(int n, char **argv, double grace_s, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
