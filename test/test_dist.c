/* test/test_dist.c: the process side of multi-GPU training, without a GPU.
 *   - rank / world / local rank from each launcher's environment, precedence, bad values;
 *   - the TCP rendezvous on loopback with fork()ed ranks: all receive rank 0's 128 bytes; a rank
 *     that never connects makes rank 0 fail with a message within the deadline, and a rank
 *     without rank 0 gives up within its deadline too;
 *   - the --gpus launcher (dist_launch_local) runs this program as its workers: they see their
 *     RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*, rendezvous with rank 0 listening on the socket the
 *     launcher opened; one failing worker stops a hanging one quickly.
 * Data sharding over ranks is covered by test_data.
 */
#include "test/test.h"
#include "train/dist.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const ALL_VARS[] = {
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
    "SLURM_NNODES", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"};

static void clear_env(void) {
    for (size_t i = 0; i < sizeof ALL_VARS / sizeof ALL_VARS[0]; i++) unsetenv(ALL_VARS[i]);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Parses the environment given as NAME=VALUE strings (NULL-terminated); returns dist_from_env. */
static int parse_with(DistInfo *d, char *err, size_t errlen, const char *const *vars) {
    clear_env();
    for (int i = 0; vars[i]; i++) {
        char name[64];
        const char *eq = strchr(vars[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - vars[i]), vars[i]);
        setenv(name, eq + 1, 1);
    }
    return dist_from_env(d, err, errlen);
}

static void test_env_parsing(void) {
    DistInfo d;
    char err[256];
    const char *none[] = {NULL};
    CHECK(parse_with(&d, err, sizeof err, none) == 0 && d.world == 1 && d.rank == 0 &&
              !strcmp(d.launcher, "single") && !strcmp(d.master_addr, "127.0.0.1") &&
              d.master_port == DIST_DEFAULT_PORT, "no launcher: one process");

    const char *torch[] = {"RANK=3", "WORLD_SIZE=8", "LOCAL_RANK=1", "MASTER_ADDR=node7", "MASTER_PORT=1234", NULL};
    CHECK(parse_with(&d, err, sizeof err, torch) == 0 && d.rank == 3 && d.world == 8 && d.local_rank == 1 &&
              !strcmp(d.launcher, "torchrun") && !strcmp(d.master_addr, "node7") && d.master_port == 1234,
          "torchrun: %s", err);
    const char *torch_nolocal[] = {"RANK=2", "WORLD_SIZE=4", NULL};
    CHECK(parse_with(&d, err, sizeof err, torch_nolocal) == 0 && d.local_rank == 2, "LOCAL_RANK defaults to RANK");

    const char *slurm[] = {"SLURM_PROCID=5", "SLURM_NTASKS=6", "SLURM_LOCALID=1", "SLURM_NNODES=1", NULL};
    CHECK(parse_with(&d, err, sizeof err, slurm) == 0 && d.rank == 5 && d.world == 6 && d.local_rank == 1 &&
              !strcmp(d.launcher, "slurm") && !d.multi_node,
          "slurm: %s", err);
    const char *slurm_multi[] = {"SLURM_PROCID=5", "SLURM_NTASKS=8", "SLURM_LOCALID=1", "SLURM_NNODES=2", NULL};
    CHECK(parse_with(&d, err, sizeof err, slurm_multi) == -1 && strstr(err, "MASTER_ADDR"),
          "slurm on 2 nodes without MASTER_ADDR: '%s'", err);
    const char *slurm_multi_ok[] = {"SLURM_PROCID=5", "SLURM_NTASKS=8", "SLURM_LOCALID=1", "SLURM_NNODES=2",
                                    "MASTER_ADDR=10.0.0.1", NULL};
    CHECK(parse_with(&d, err, sizeof err, slurm_multi_ok) == 0 && d.multi_node && !strcmp(d.master_addr, "10.0.0.1"),
          "slurm on 2 nodes with MASTER_ADDR: %s", err);

    const char *mpi[] = {"OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=2", "OMPI_COMM_WORLD_LOCAL_RANK=1",
                         "OMPI_COMM_WORLD_LOCAL_SIZE=2", NULL};
    CHECK(parse_with(&d, err, sizeof err, mpi) == 0 && d.rank == 1 && d.world == 2 && d.local_rank == 1 &&
              !strcmp(d.launcher, "mpi") && !d.multi_node,
          "mpi: %s", err);
    const char *mpi_multi[] = {"OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=4", "OMPI_COMM_WORLD_LOCAL_RANK=1",
                               "OMPI_COMM_WORLD_LOCAL_SIZE=2", NULL};
    CHECK(parse_with(&d, err, sizeof err, mpi_multi) == -1 && strstr(err, "MASTER_ADDR"), "mpi on 2 nodes: '%s'", err);

    /* precedence: torchrun's explicit variables, then Slurm, then OpenMPI */
    const char *all3[] = {"RANK=1", "WORLD_SIZE=2", "SLURM_PROCID=3", "SLURM_NTASKS=4", "OMPI_COMM_WORLD_RANK=5",
                          "OMPI_COMM_WORLD_SIZE=6", NULL};
    CHECK(parse_with(&d, err, sizeof err, all3) == 0 && d.rank == 1 && d.world == 2, "torchrun wins");
    const char *two[] = {"SLURM_PROCID=3", "SLURM_NTASKS=4", "OMPI_COMM_WORLD_RANK=5", "OMPI_COMM_WORLD_SIZE=6", NULL};
    CHECK(parse_with(&d, err, sizeof err, two) == 0 && d.rank == 3 && d.world == 4, "slurm before mpi");

    /* bad values: one line naming the variable */
    struct { const char *vars[4]; const char *needle; } bad[] = {
        {{"RANK=2", "WORLD_SIZE=2", NULL}, "outside"},
        {{"RANK=abc", "WORLD_SIZE=2", NULL}, "RANK='abc'"},
        {{"RANK=1", "WORLD_SIZE=0", NULL}, "WORLD_SIZE='0'"},
        {{"RANK=-1", "WORLD_SIZE=2", NULL}, "RANK='-1'"},
        {{"RANK=1", NULL}, "WORLD_SIZE is not"},
        {{"RANK=1", "WORLD_SIZE=2x", NULL}, "WORLD_SIZE='2x'"},
        {{"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=7"}, "LOCAL_RANK=7"},
        {{"SLURM_PROCID=4", "SLURM_NTASKS=4", NULL}, "SLURM_PROCID=4"},
        {{"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=", NULL}, "OMPI_COMM_WORLD_SIZE=''"},
        {{"MASTER_PORT=70000", NULL}, "MASTER_PORT=70000"},
        {{"MASTER_PORT=http", NULL}, "MASTER_PORT='http'"},
        {{"MASTER_ADDR=", NULL}, "MASTER_ADDR"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = parse_with(&d, err, sizeof err, bad[i].vars);
        CHECK(rc == -1 && strstr(err, bad[i].needle) && !strchr(err, '\n'), "bad case %zu (%s): rc %d, '%s'", i,
              bad[i].needle, rc, err);
    }
    clear_env();
}

/* A port nobody listens on now, for the rendezvous tests: below Linux's ephemeral range (32768+),
 * so no outgoing connection of another program holds it. (Inside that range a client can also be
 * given the very port it connects to; dist.c drops such self-connections.) */
static int test_port(int k) { return 20000 + (int)(getpid() % 12000) + k; }

static DistInfo info_of(int rank, int world, int port) {
    DistInfo d;
    memset(&d, 0, sizeof d);
    d.rank = rank;
    d.world = world;
    d.local_rank = rank;
    d.launcher = "test";
    snprintf(d.master_addr, sizeof d.master_addr, "127.0.0.1");
    d.master_port = port;
    return d;
}

/* world-1 children fetch the id and exit 0 when it matches; rank 0 serves in the parent. */
static void test_rendezvous_ok(void) {
    enum { WORLD = 4 };
    int port = test_port(1);
    unsigned char want[DIST_ID_BYTES];
    for (int i = 0; i < DIST_ID_BYTES; i++) want[i] = (unsigned char)(i * 37 + 11);
    pid_t kids[WORLD];
    for (int r = 1; r < WORLD; r++) {
        kids[r] = fork();
        if (kids[r] == 0) {
            if (r == 2) usleep(300 * 1000); /* a late rank: rank 0 waits for it */
            DistInfo d = info_of(r, WORLD, port);
            unsigned char got[DIST_ID_BYTES];
            memset(got, 0, sizeof got);
            char err[256];
            int rc = dist_rendezvous(&d, got, 10.0, err, sizeof err);
            if (rc != 0) fprintf(stderr, "rank %d: %s\n", r, err);
            _exit(rc == 0 && memcmp(got, want, sizeof got) == 0 ? 0 : 1);
        }
    }
    usleep(100 * 1000); /* the others start first: they must retry until rank 0 listens */
    DistInfo d0 = info_of(0, WORLD, port);
    char err[256] = "";
    CHECK(dist_rendezvous(&d0, want, 10.0, err, sizeof err) == 0, "rank 0 serves: %s", err);
    for (int r = 1; r < WORLD; r++) {
        int status = -1;
        waitpid(kids[r], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rank %d received the same 128 bytes", r);
    }
}

/* Rank 2 of 3 never connects: rank 0 names it and gives up on time. */
static void test_rendezvous_missing_rank(void) {
    int port = test_port(2);
    unsigned char id[DIST_ID_BYTES] = {1, 2, 3};
    pid_t kid = fork();
    if (kid == 0) {
        DistInfo d = info_of(1, 3, port);
        unsigned char got[DIST_ID_BYTES];
        char err[256];
        _exit(dist_rendezvous(&d, got, 5.0, err, sizeof err) == 0 ? 0 : 1);
    }
    DistInfo d0 = info_of(0, 3, port);
    char err[256] = "";
    double t0 = now_s();
    int rc = dist_rendezvous(&d0, id, 1.5, err, sizeof err);
    double took = now_s() - t0;
    CHECK(rc == -1 && strstr(err, "missing ranks: 2") && !strchr(err, '\n'), "missing rank named: '%s'", err);
    CHECK(took >= 1.4 && took < 4.0, "rank 0 gave up after %.2f s (deadline 1.5 s)", took);
    int status = -1;
    waitpid(kid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rank 1 was served before the timeout");
}

/* No rank 0 at all: another rank gives up on time with a message. */
static void test_rendezvous_no_master(void) {
    DistInfo d = info_of(1, 2, test_port(3));
    unsigned char got[DIST_ID_BYTES];
    char err[256] = "";
    double t0 = now_s();
    int rc = dist_rendezvous(&d, got, 1.0, err, sizeof err);
    double took = now_s() - t0;
    CHECK(rc == -1 && strstr(err, "no answer from rank 0"), "no master: '%s'", err);
    CHECK(took >= 0.9 && took < 3.0, "gave up after %.2f s (deadline 1 s)", took);
}

static volatile sig_atomic_t g_stop_signals = 0;
static void count_signal(int sig) { g_stop_signals++; }

/* Worker side of the launcher tests: this program, started by dist_launch_local. */
static int worker_main(const char *mode) {
    DistInfo d;
    char err[256];
    if (dist_from_env(&d, err, sizeof err) != 0) return 10;
    const char *nvls = getenv("NCCL_NVLS_ENABLE");
    int env_ok = d.world == 3 && d.local_rank == d.rank && !strcmp(d.launcher, "torchrun") &&
                 !strcmp(d.master_addr, "127.0.0.1") && d.master_port > 0 && nvls && !strcmp(nvls, "0");
    if (!env_ok) return 11;
    if (!strcmp(mode, "ok")) return 0;
    if (!strcmp(mode, "rdzv")) { /* a real rendezvous; rank 0 on the socket the launcher opened */
        if (d.rank == 0 && !getenv("TRAIN_GPT2_RDZV_FD")) return 13;
        unsigned char id[DIST_ID_BYTES];
        for (int i = 0; i < DIST_ID_BYTES; i++) id[i] = d.rank == 0 ? (unsigned char)(i * 7 + 1) : 0;
        if (dist_rendezvous(&d, id, 10.0, err, sizeof err) != 0) return 14;
        for (int i = 0; i < DIST_ID_BYTES; i++)
            if (id[i] != (unsigned char)(i * 7 + 1)) return 15;
        return 0;
    }
    if (!strncmp(mode, "graceful:", 9)) { /* counts the stop signals it gets, finishes its "step" */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = count_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        for (int i = 0; i < 2000 && !g_stop_signals; i++) usleep(10 * 1000);
        usleep(300 * 1000); /* the step in flight and a checkpoint */
        char path[4096];
        snprintf(path, sizeof path, "%s/rank_%d", mode + 9, d.rank);
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%d\n", (int)g_stop_signals);
            fclose(f);
        }
        return 130;
    }
    /* "fail": rank 1 fails at once, the others would hang for a minute */
    if (d.rank == 1) return 7;
    sleep(60);
    return 0;
}

/* A Ctrl-C at the terminal (SIGINT to the launcher's process group): every worker gets exactly
 * one stop signal and may finish its step (it takes longer than the launcher's grace), and the
 * launcher returns 130. */
static void test_launcher_ctrl_c(const char *self) {
    char dir[] = "/tmp/test_dist_XXXXXX";
    if (!mkdtemp(dir)) return;
    char mode[256];
    snprintf(mode, sizeof mode, "graceful:%s", dir);
    pid_t launcher = fork();
    if (launcher == 0) {
        setpgid(0, 0);
        char *argv[] = {(char *)self, (char *)"--worker", mode, NULL};
        char err[256];
        _exit(dist_launch_local(3, argv, 0.1, err, sizeof err));
    }
    setpgid(launcher, launcher);
    usleep(500 * 1000);
    kill(-launcher, SIGINT);
    int status = -1;
    waitpid(launcher, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 130, "the launcher returns 130 after Ctrl-C (status %d)", status);
    for (int r = 0; r < 3; r++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/rank_%d", dir, r);
        int count = -1;
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%d", &count) != 1) count = -1;
            fclose(f);
            unlink(path);
        }
        CHECK(count == 1, "worker %d got %d stop signal(s) and finished its step (want 1)", r, count);
    }
    rmdir(dir);
}

static void test_launcher(const char *self) {
    char *ok_argv[] = {(char *)self, (char *)"--worker", (char *)"ok", NULL};
    char err[256] = "";
    CHECK(dist_launch_local(3, ok_argv, 2.0, err, sizeof err) == 0, "3 workers see their environment: %s", err);
    /* rank 0 rendezvouses on the socket the launcher bound (no port race), five times running */
    char *rdzv_argv[] = {(char *)self, (char *)"--worker", (char *)"rdzv", NULL};
    int rdzv_fails = 0;
    for (int i = 0; i < 5; i++) rdzv_fails += dist_launch_local(3, rdzv_argv, 2.0, err, sizeof err) != 0;
    CHECK(rdzv_fails == 0, "launched workers rendezvous on the inherited socket (%d of 5 failed)", rdzv_fails);
    char *fail_argv[] = {(char *)self, (char *)"--worker", (char *)"fail", NULL};
    double t0 = now_s();
    int rc = dist_launch_local(3, fail_argv, 2.0, err, sizeof err);
    double took = now_s() - t0;
    CHECK(rc == 7, "the failing worker's status comes back (got %d)", rc);
    CHECK(took < 5.0, "the hanging workers were stopped after %.2f s", took);
    test_launcher_ctrl_c(self);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--worker")) return worker_main(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    test_env_parsing();
    test_rendezvous_ok();
    test_rendezvous_missing_rank();
    test_rendezvous_no_master();
    test_launcher(argv[0]);
    return test_summary("test_dist");
}
