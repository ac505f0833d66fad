/*
 * `agora cluster up`: what a previous supervisor of DIR left behind (a crash, kill -9).
 *
 * Members normally die with their supervisor: each has a parent-death signal
 * (cluster_proc.c: SIGTERM, PostgreSQL SIGINT). But a member that got it is still
 * shutting down (an instance drains for up to 20 s, PostgreSQL checkpoints) when a
 * new `cluster up` starts, and would hold its port (cl_ports_free refuses) or the
 * data directory. And a supervisor killed between fork and prctl leaves a child
 * without one. So the new supervisor, once it holds DIR/supervisor.lock (no other
 * supervisor of DIR runs), looks for those orphans itself before it checks the ports:
 *
 *   - a process is a member of DIR when its executable is `postgres` started with
 *     `-D DIR/pg/data`, `nats-server` with `-c DIR/nats/...`, or `agora` running
 *     `serve` or `gateway` with an argument under DIR/ (--data DIR/data, --config
 *     DIR/gateway.yaml); found by scanning /proc, not from status.json's pids (a
 *     member started after the last status write is found too, and a pid reused by
 *     something else is never touched);
 *   - each gets its stop signal (PostgreSQL SIGINT, the others SIGTERM); those left
 *     after ORPHAN_WAIT_MS get SIGKILL (the data is crash-safe: that is what
 *     tests/integration/cluster_crash.sh checks); a zombie counts as gone;
 *   - DIR/pg/data/postmaster.pid naming a live process that is not PostgreSQL (its
 *     pid reused after a kill -9) is removed: PostgreSQL would refuse to start.
 * Each is a JSON log line: cluster.orphan_stopping, cluster.orphan_killed,
 * cluster.stale_pidfile_removed.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cluster.h"

#define ORPHAN_MAX     64
#define ORPHAN_WAIT_MS 15000u
#define KILL_WAIT_MS   5000u
#define CMDLINE_MAX    8192

/* /proc/PID/cmdline (NUL-separated) into buf; its length, 0 when unreadable */
static size_t read_cmdline(long pid, char *buf, size_t cap)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%ld/cmdline", pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    return (size_t)n;
}

/* the basename of /proc/PID/exe into out ("" when unreadable) */
static void exe_name(long pid, char *out, size_t cap)
{
    char p[64], target[PATH_MAX];
    snprintf(p, sizeof p, "/proc/%ld/exe", pid);
    ssize_t n = readlink(p, target, sizeof target - 1);
    out[0] = 0;
    if (n <= 0) return;
    target[n] = 0;
    char *gone = strstr(target, " (deleted)"); /* the binary was replaced since it started */
    if (gone && gone[10] == 0) *gone = 0;
    const char *base = strrchr(target, '/');
    base = base ? base + 1 : target;
    size_t len = strnlen(base, cap - 1);
    memcpy(out, base, len);
    out[len] = 0;
}

static bool under(const char *arg, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(arg, dir, n) == 0 && arg[n] == '/';
}

/* whether pid is a member of the cluster in dir (see the comment at the top) */
static bool is_member(long pid, const char *dir, bool *is_pg)
{
    char exe[128], cmd[CMDLINE_MAX];
    size_t len = read_cmdline(pid, cmd, sizeof cmd);
    if (!len) return false;
    exe_name(pid, exe, sizeof exe);
    const char *args[64];
    size_t na = 0;
    for (size_t at = 0; at < len && na < 64; at += strlen(cmd + at) + 1) args[na++] = cmd + at;
    *is_pg = strcmp(exe, "postgres") == 0;
    bool nats = strcmp(exe, "nats-server") == 0, agora = strcmp(exe, "agora") == 0;
    if (agora && (na < 2 || (strcmp(args[1], "serve") != 0 && strcmp(args[1], "gateway") != 0)))
        return false;
    if (!*is_pg && !nats && !agora) return false;
    for (size_t i = 1; i < na; i++) {
        const char *flag = args[i - 1];
        if (*is_pg && strcmp(flag, "-D") == 0) return under(args[i], dir);
        if (nats && strcmp(flag, "-c") == 0) return under(args[i], dir);
        if (agora && under(args[i], dir)) return true;
    }
    return false;
}

/* alive and not a zombie */
static bool running(long pid)
{
    char p[64], buf[512];
    if (kill((pid_t)pid, 0) != 0) return false;
    snprintf(p, sizeof p, "/proc/%ld/stat", pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return !paren || paren[1] != ' ' || paren[2] != 'Z';
}

static size_t find_orphans(const struct cl_cluster *c, pid_t *pids, bool *pg, size_t cap)
{
    DIR *d = opendir("/proc");
    size_t n = 0;
    for (struct dirent *e; d && (e = readdir(d)) && n < cap;) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1 || pid == (long)getpid()) continue;
        if (is_member(pid, c->dir, &pg[n]) && running(pid)) pids[n++] = (pid_t)pid;
    }
    if (d) closedir(d);
    return n;
}

static void pause_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* a postmaster.pid whose pid is alive but not PostgreSQL: a pid reused */
static void stale_pidfile(const struct cl_cluster *c)
{
    char p[PATH_MAX], buf[32] = {0}, exe[128];
    if (!cl_path(c, "pg/data/postmaster.pid", p, sizeof p)) return;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
    if (pid <= 0 || !running(pid)) return; /* PostgreSQL handles a dead pid itself */
    exe_name(pid, exe, sizeof exe);
    if (strcmp(exe, "postgres") == 0) return;
    if (unlink(p) == 0)
        AG_WARN("cluster.stale_pidfile_removed", AG_LS("path", p), AG_LI("pid", pid),
                AG_LS("process", exe));
}

static bool any_running(const pid_t *pids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (running(pids[i])) return true;
    return false;
}

static void kill_left(const pid_t *pids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!running(pids[i])) continue;
        AG_WARN("cluster.orphan_killed", AG_LI("pid", pids[i]));
        kill(pids[i], SIGKILL);
    }
}

/* wait for the signalled orphans; SIGKILL those left at ORPHAN_WAIT_MS */
static void wait_orphans(const pid_t *pids, size_t n)
{
    uint64_t deadline = cl_now_ms() + ORPHAN_WAIT_MS, give_up = deadline + KILL_WAIT_MS;
    bool killed = false;
    while (n && cl_now_ms() < give_up && any_running(pids, n)) {
        if (!killed && cl_now_ms() >= deadline) kill_left(pids, n), killed = true;
        pause_ms(50);
    }
}

void cl_stale_reap(const struct cl_cluster *c)
{
    pid_t pids[ORPHAN_MAX];
    bool pg[ORPHAN_MAX];
    size_t n = find_orphans(c, pids, pg, ORPHAN_MAX);
    for (size_t i = 0; i < n; i++) {
        AG_WARN("cluster.orphan_stopping", AG_LI("pid", pids[i]),
                AG_LS("signal", pg[i] ? "SIGINT" : "SIGTERM"));
        kill(pids[i], pg[i] ? SIGINT : SIGTERM);
    }
    wait_orphans(pids, n);
    stale_pidfile(c);
}
