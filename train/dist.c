/* train/dist.c: rank and world from the environment, the TCP rendezvous, the --gpus launcher. */
#include "train/dist.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "common/error_text.h"

#define HELLO_MAGIC 0x67707432u /* "gpt2": a client's greeting is magic, rank, world */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- environment ------------------------------------------------------------------------- */

/* A whole non-negative decimal number in [min, INT_MAX]. 0, 1 when unset, -1 with err. */
static int env_int(const char *name, int min, int *out, char *err, size_t errlen) {
    const char *s = getenv(name);
    if (!s) return 1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || errno || *end || v < min || v > INT_MAX) {
        set_err(err, errlen, "%s='%s' is not a%s integer", name, s, min > 0 ? " positive" : " non-negative");
        return -1;
    }
    *out = (int)v;
    return 0;
}

typedef struct {
    const char *launcher, *rank, *world, *local_rank, *nodes_hint;
    int nodes_hint_is_local_size; /* the hint is the local size (MPI), else a node count (Slurm) */
} LauncherVars;

static const LauncherVars LAUNCHERS[] = {
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", 1},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NNODES", 0},
    {"mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE", 1},
};

static int parse_launcher(const LauncherVars *L, DistInfo *d, char *err, size_t errlen) {
    int rc = env_int(L->rank, 0, &d->rank, err, errlen);
    if (rc < 0) return -1;
    rc = env_int(L->world, 1, &d->world, err, errlen);
    if (rc < 0) return -1;
    if (rc == 1) {
        set_err(err, errlen, "%s is set but %s is not", L->rank, L->world);
        return -1;
    }
    if (d->rank >= d->world) {
        set_err(err, errlen, "%s=%d is outside the world of %s=%d", L->rank, d->rank, L->world, d->world);
        return -1;
    }
    d->local_rank = d->rank;
    if (env_int(L->local_rank, 0, &d->local_rank, err, errlen) < 0) return -1;
    int hint = 0;
    rc = env_int(L->nodes_hint, 1, &hint, err, errlen);
    if (rc < 0) return -1;
    if (rc == 0) d->multi_node = L->nodes_hint_is_local_size ? hint < d->world : hint > 1;
    if (d->local_rank >= d->world) {
        set_err(err, errlen, "%s=%d is outside the world of %d", L->local_rank, d->local_rank, d->world);
        return -1;
    }
    d->launcher = L->launcher;
    return 0;
}

int dist_from_env(DistInfo *d, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    d->world = 1;
    d->launcher = "single";
    for (size_t i = 0; i < sizeof LAUNCHERS / sizeof LAUNCHERS[0]; i++) {
        if (!getenv(LAUNCHERS[i].rank)) continue;
        if (parse_launcher(&LAUNCHERS[i], d, err, errlen) != 0) return -1;
        break;
    }
    const char *addr = getenv("MASTER_ADDR");
    if (addr && (!*addr || strlen(addr) >= sizeof d->master_addr)) {
        set_err(err, errlen, "MASTER_ADDR='%s' is not a host name or address", addr);
        return -1;
    }
    if (!addr && d->multi_node) {
        set_err(err, errlen, "%s: a world of %d on several nodes needs MASTER_ADDR (rank 0's host)",
                d->launcher, d->world);
        return -1;
    }
    snprintf(d->master_addr, sizeof d->master_addr, "%s", addr ? addr : "127.0.0.1");
    d->master_port = DIST_DEFAULT_PORT;
    if (env_int("MASTER_PORT", 1, &d->master_port, err, errlen) < 0) return -1;
    if (d->master_port > 65535) {
        set_err(err, errlen, "MASTER_PORT=%d is not a TCP port (1-65535)", d->master_port);
        return -1;
    }
    return 0;
}

/* ---- rendezvous ---------------------------------------------------------------------------- */

/* Waits until fd is ready for `events` or the deadline passes. 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) return 0;
        struct pollfd p = {fd, events, 0};
        int rc = poll(&p, 1, (int)(left * 1000) + 1);
        if (rc > 0) return 1;
        if (rc < 0 && errno != EINTR) return -1;
    }
}

/* Sends or receives exactly n bytes before the deadline. 0 or -1. */
static int xfer_all(int fd, void *buf, size_t n, int sending, double deadline) {
    char *p = (char *)buf;
    while (n > 0) {
        if (wait_fd(fd, sending ? POLLOUT : POLLIN, deadline) != 1) return -1;
        ssize_t k = sending ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The --gpus launcher binds the rendezvous socket itself and hands it to rank 0 through this
 * variable (an inherited descriptor), so no other process can take the port in between. */
#define DIST_LISTEN_FD_ENV "TRAIN_GPT2_RDZV_FD"

static int inherited_listen_fd(int port) {
    const char *v = getenv(DIST_LISTEN_FD_ENV);
    if (!v || !*v) return -1;
    int fd = atoi(v);
    unsetenv(DIST_LISTEN_FD_ENV);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0 || ntohs(a.sin_port) != port) return -1;
    return fd;
}

static int listen_on(int port, char *err, size_t errlen) {
    int inherited = inherited_listen_fd(port);
    if (inherited >= 0) return inherited;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        set_err(err, errlen, "rendezvous: socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0) {
        set_err(err, errlen, "rendezvous: rank 0 cannot listen on port %d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void list_missing(const unsigned char *seen, int world, char *buf, size_t len) {
    size_t at = 0;
    buf[0] = '\0';
    for (int r = 1; r < world && at + 16 < len; r++)
        if (!seen[r]) at += (size_t)snprintf(buf + at, len - at, "%s%d", at ? "," : "", r);
}

/* Rank 0: accept one greeting from each other rank, answer each with the id. */
static int serve_id(const DistInfo *d, const unsigned char *id, double deadline, char *err, size_t errlen) {
    int lfd = listen_on(d->master_port, err, errlen);
    if (lfd < 0) return -1;
    unsigned char *seen = (unsigned char *)calloc((size_t)d->world, 1);
    int got = 0, rc = 0;
    while (got < d->world - 1) {
        if (wait_fd(lfd, POLLIN, deadline) != 1) {
            char missing[128];
            list_missing(seen, d->world, missing, sizeof missing);
            set_err(err, errlen, "rendezvous: rank 0 heard from %d of the %d other ranks on port %d "
                    "within the timeout (missing ranks: %s)", got, d->world - 1, d->master_port, missing);
            rc = -1;
            break;
        }
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) continue;
        uint32_t hello[3] = {0, 0, 0};
        if (xfer_all(fd, hello, sizeof hello, 0, deadline) != 0 || hello[0] != HELLO_MAGIC ||
            (int)hello[2] != d->world || (int)hello[1] <= 0 || (int)hello[1] >= d->world ||
            seen[hello[1]]) {
            /* a stray connection, or a rank of another world: ignore it */
            if (hello[0] == HELLO_MAGIC && (int)hello[2] != d->world)
                fprintf(stderr, "rendezvous: ignoring a rank that believes the world is %u (here %d)\n",
                        hello[2], d->world);
            close(fd);
            continue;
        }
        if (xfer_all(fd, (void *)id, DIST_ID_BYTES, 1, deadline) == 0) {
            seen[hello[1]] = 1;
            got++;
        }
        close(fd);
    }
    free(seen);
    close(lfd);
    return rc;
}

/* Whether a connected socket is connected to itself: on one host, connecting to a port nobody
 * listens on yet can be given that very port as the local one (it lies in the ephemeral range),
 * and TCP's simultaneous open connects the socket to itself -- which then holds the port rank 0
 * was about to listen on. Seen under load in test_dist; such a connection is dropped and retried. */
static int connected_to_self(int fd) {
    struct sockaddr_in me, peer;
    socklen_t a = sizeof me, b = sizeof peer;
    if (getsockname(fd, (struct sockaddr *)&me, &a) != 0 || getpeername(fd, (struct sockaddr *)&peer, &b) != 0)
        return 0;
    return me.sin_port == peer.sin_port && me.sin_addr.s_addr == peer.sin_addr.s_addr;
}

static int connect_once(const struct addrinfo *ai) {
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 || connected_to_self(fd)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Other ranks: connect (retrying while rank 0 starts), greet, receive the id. */
static int fetch_id(const DistInfo *d, unsigned char *id, double deadline, char *err, size_t errlen) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%d", d->master_port);
    int gai = getaddrinfo(d->master_addr, port, &hints, &res);
    if (gai != 0) {
        set_err(err, errlen, "rendezvous: cannot resolve MASTER_ADDR '%s': %s", d->master_addr, gai_strerror(gai));
        return -1;
    }
    int rc = -1;
    while (now_s() < deadline) {
        int fd = connect_once(res);
        if (fd < 0) {
            usleep(100 * 1000);
            continue;
        }
        uint32_t hello[3] = {HELLO_MAGIC, (uint32_t)d->rank, (uint32_t)d->world};
        int ok = xfer_all(fd, hello, sizeof hello, 1, deadline) == 0 &&
                 xfer_all(fd, id, DIST_ID_BYTES, 0, deadline) == 0;
        close(fd);
        if (ok) {
            rc = 0;
            break;
        }
        usleep(100 * 1000);
    }
    freeaddrinfo(res);
    if (rc != 0)
        set_err(err, errlen, "rendezvous: rank %d got no answer from rank 0 at %s:%d within the timeout",
                d->rank, d->master_addr, d->master_port);
    return rc;
}

int dist_rendezvous(const DistInfo *d, unsigned char id[DIST_ID_BYTES], double timeout_s, char *err,
                    size_t errlen) {
    if (d->world <= 1) return 0;
    double deadline = now_s() + timeout_s;
    return d->rank == 0 ? serve_id(d, id, deadline, err, errlen) : fetch_id(d, id, deadline, err, errlen);
}

/* ---- --gpus N launcher ------------------------------------------------------------------- */

/* The rendezvous socket, listening on a port the kernel picks (bind to 0) on the loopback
 * address; rank 0 inherits it (DIST_LISTEN_FD_ENV). Closing a probe socket and letting rank 0
 * bind the port again later raced with other programs' ephemeral ports (seen once: "Address
 * already in use" while a test ran NCCL jobs back to back). -1 on failure. */
static int open_launcher_socket(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void set_int_env(const char *name, int v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%d", v);
    setenv(name, buf, 1);
}

static volatile sig_atomic_t g_forward_signal = 0, g_signals = 0;
static void on_signal(int sig) {
    g_forward_signal = sig;
    g_signals++;
}

static void signal_all(const pid_t *pids, int n, int sig) {
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) kill(pids[i], sig);
}

static int status_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

/* Reaps the remaining workers, escalating to SIGKILL after grace_s. */
static void stop_all(pid_t *pids, int n, double grace_s) {
    signal_all(pids, n, SIGTERM);
    double deadline = now_s() + grace_s;
    int alive = 0;
    for (int i = 0; i < n; i++) alive += pids[i] > 0;
    while (alive > 0) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            for (int i = 0; i < n; i++)
                if (pids[i] == p) { pids[i] = 0; alive--; }
            continue;
        }
        if (p < 0 && errno == ECHILD) break;
        if (now_s() > deadline) {
            signal_all(pids, n, SIGKILL);
            deadline = now_s() + 3600;
        }
        usleep(20 * 1000);
    }
}

int dist_launch_local(int n, char **argv, double grace_s, char *err, size_t errlen) {
    int port = DIST_DEFAULT_PORT;
    int lfd = open_launcher_socket(&port);
    if (lfd < 0) {
        set_err(err, errlen, "--gpus %d: cannot open the rendezvous socket: %s", n, strerror(errno));
        return -1;
    }
    pid_t *pids = (pid_t *)calloc((size_t)n, sizeof(pid_t));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fflush(stdout);
    fflush(stderr);
    pid_t launcher = getpid();
    for (int r = 0; r < n; r++) {
        pid_t p = fork();
        if (p < 0) {
            set_err(err, errlen, "--gpus %d: fork failed: %s", n, strerror(errno));
            close(lfd);
            stop_all(pids, n, grace_s);
            free(pids);
            return -1;
        }
        if (p == 0) {
            set_int_env("RANK", r);
            set_int_env("WORLD_SIZE", n);
            set_int_env("LOCAL_RANK", r);
            set_int_env("LOCAL_WORLD_SIZE", n);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            set_int_env("MASTER_PORT", port);
            if (r == 0) set_int_env(DIST_LISTEN_FD_ENV, lfd);
            else close(lfd);
            /* NVLink multicast (NVLS) stays off: on shared hosts it can take GPUs out of service. */
            setenv("NCCL_NVLS_ENABLE", "0", 1);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            /* A process group of its own: a Ctrl-C at the terminal reaches the launcher alone,
             * which passes it on once (a worker that got it twice would stop at once instead of
             * after its step and checkpoint); and the worker stops if the launcher dies. */
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != launcher) _exit(2); /* it died before prctl */
            execv("/proc/self/exe", argv);
            fprintf(stderr, "error: --gpus: cannot start a worker: %s\n", strerror(errno));
            _exit(2);
        }
        pids[r] = p;
    }
    close(lfd); /* rank 0 holds it now */
    int rc = 0, alive = n, forwarded = 0;
    while (alive > 0) {
        /* SIGINT / SIGTERM: passed on once, and the workers stop after their step (writing a
         * checkpoint where asked); a second one stops them at once. */
        if (g_signals > forwarded) {
            int sig = (int)g_forward_signal;
            if (forwarded == 0) {
                fprintf(stderr, "train_gpt2 --gpus: got signal %d; the workers stop after this step (again: at once)\n", sig);
                rc = 128 + sig;
                signal_all(pids, n, sig);
                forwarded = 1;
            } else {
                fprintf(stderr, "train_gpt2 --gpus: got signal %d again; stopping the workers now\n", sig);
                signal_all(pids, n, sig);
                stop_all(pids, n, grace_s);
                break;
            }
        }
        int status;
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int r = -1;
        for (int i = 0; i < n; i++)
            if (pids[i] == p) r = i;
        if (r < 0) continue;
        pids[r] = 0;
        alive--;
        int code = status_code(status);
        if (code != 0 && !forwarded) {
            fprintf(stderr, "train_gpt2 --gpus: worker %d (rank %d) %s %d; stopping the other workers\n",
                    (int)p, r, WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                    WIFSIGNALED(status) ? WTERMSIG(status) : code);
            rc = code;
            stop_all(pids, n, grace_s);
            break;
        }
    }
    free(pids);
    return rc;
}
