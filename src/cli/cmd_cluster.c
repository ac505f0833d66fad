/*
 * agora cluster up|status: the distributed shape on one machine (issue 14), under a
 * supervisor. The directory, the layout and the files: src/cli/cluster.h and
 * cluster_conf.c; the processes and health checks: cluster_proc.c.
 *
 * The supervision loop. One thread; every 100 ms it reaps exited members
 * (waitpid WNOHANG) and starts those that are due; every second it checks the
 * running members' health and rewrites DIR/status.json (which `agora cluster
 * status` and the gateway's GET /admin/cluster read: the file rather than an HTTP
 * server in the supervisor, so the two always show the same data, the gateway's
 * own admin check guards it, and a supervisor that hangs shows as a stale file).
 *
 * Starting. A member starts when every member it depends on has been ready once:
 * the first instance (which seeds the demo catalog into an empty store) after
 * PostgreSQL and the three NATS nodes, every other instance and the gateway after
 * it. Restarts do not wait for anything.
 *
 * Restarting. A member that exits while the cluster runs is started again after a
 * backoff: 250 ms doubled per consecutive exit, at most 30 s; a member that had
 * been ready for 10 s starts the count again. Every exit, start and health change
 * is a JSON log line (cluster.member_exited with restartInMs, cluster.member_started
 * with restarts, cluster.member_ready, cluster.member_unready) on stderr.
 *
 * Stopping. SIGINT or SIGTERM stop the members in order: the gateway, the
 * instances, the NATS nodes (SIGTERM each), PostgreSQL (SIGINT: its fast shutdown),
 * each kind waited for (10 s, 20 s, 10 s, 30 s, then SIGKILL; a third signal kills
 * at once). DIR/supervisor.lock (flock) keeps a second supervisor out of DIR.
 *
 * mTLS (cluster_tls.c), unless --insecure-plaintext: before anything starts, the
 * CA and every member's certificate are made or renewed in DIR/certs; the
 * instances get --tls-*, the gateway's configuration names its certificate
 * (cluster_gateway.c), and every 5 s the loop renews what is close to expiry.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "cli/cli.h"
#include "cli/cluster.h"

#define DEFAULT_SPEC   "customers,catalog,ordering,inventory,payments,shipping,sagas"
#define TICK_MS        100
#define BACKOFF_MIN_MS 250u
#define BACKOFF_MAX_MS 30000u
#define STABLE_MS      10000u

static const char usage_text[] =
    "usage: agora cluster up --dir DIR --listen HOST:PORT [--instances N] [--contexts SPEC]\n"
    "                        [--target-inflight X] [--cooldown DURATION] [--insecure-plaintext]\n"
    "       agora cluster status --dir DIR [--json]\n"
    "\n"
    "up: run the distributed shape on this machine under a supervisor: PostgreSQL (initdb\n"
    "in DIR at the first start; a Unix socket in DIR, no TCP), a 3-node NATS JetStream\n"
    "cluster on loopback, the contexts as `agora serve` instances and `agora gateway` on\n"
    "--listen in front. The first start makes DIR (0700): the layout and the ports it\n"
    "picks (DIR/cluster.json, kept for the next starts), the secrets (DIR/jwt-secret,\n"
    "DIR/mesh-key, 0600). Members that die are started again with a backoff (250 ms\n"
    "doubling to 30 s), logged as JSON lines on stderr; each member's own output is in\n"
    "DIR/logs/. SIGINT/SIGTERM stop them all in order (gateway, instances, NATS,\n"
    "PostgreSQL). One supervisor per DIR. Tokens: agora token --data DIR --sub ID --role R.\n"
    "The members speak mTLS: a cluster CA made in DIR/certs at the first start and a\n"
    "certificate per member (30 days, renewed 10 days before it expires, no restart).\n"
    "\n"
    "  --dir DIR          the cluster's directory (new or empty the first time)\n"
    "  --listen HOST:PORT the gateway's address\n"
    "  --instances N      instances per group of contexts (default 2; first start only)\n"
    "  --contexts SPEC    groups of contexts, each its own processes: groups separated by\n"
    "                     ',', contexts in a group by '+', `all` for every context, `=N`\n"
    "                     for a group's own count, `=MIN..MAX` to autoscale it; e.g.\n"
    "                     'customers+catalog+ordering+sagas=1..3,inventory+payments+shipping'.\n"
    "                     Default (every context alone):\n"
    "                     " DEFAULT_SPEC "\n"
    "                     (first start only)\n"
    "  --target-inflight X  autoscaling: in-flight requests per instance wanted (default 4):\n"
    "                     a group over it gets an instance more (up to MAX), one that fits\n"
    "                     in one fewer at 70 %% or less loses one (down to MIN)\n"
    "  --cooldown DURATION  autoscaling: at least this between a group's decisions (30s)\n"
    "  --insecure-plaintext  plain HTTP between the gateway and the instances and among\n"
    "                     the instances (debugging; this start only): no certificates\n"
    "\n"
    "status: the members (role, pid, address, up/down, health from /health/ready,\n"
    "restarts) from DIR/status.json, which the supervisor rewrites every second, as a\n"
    "table or --json. Exit 0 while the supervisor runs, 3 when it does not. The gateway\n"
    "answers the same at GET /admin/cluster (admin).\n";

static volatile sig_atomic_t stop_signals;

static void on_signal(int sig)
{
    (void)sig;
    stop_signals++;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short: the loop looks at once */
}

/* ---- the directory ---- */

static int abs_dir(const char *d, struct cl_cluster *c)
{
    char cwd[PATH_MAX];
    if (!d || !*d) return -1;
    if (d[0] == '/') return snprintf(c->dir, sizeof c->dir, "%s", d) < (int)sizeof c->dir ? 0 : -1;
    if (!getcwd(cwd, sizeof cwd)) return -1;
    return snprintf(c->dir, sizeof c->dir, "%s/%s", cwd, d) < (int)sizeof c->dir ? 0 : -1;
}

static bool has_file(const struct cl_cluster *c, const char *rel)
{
    char p[PATH_MAX];
    return cl_path(c, rel, p, sizeof p) && access(p, F_OK) == 0;
}

static bool dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
             strcmp(e->d_name, "supervisor.lock") != 0; /* a first start that failed early */
    if (d) closedir(d);
    return d && n == 0;
}

/* *fresh: a new cluster (DIR made, or empty); else DIR has cluster.json */
static int open_dir(struct cl_cluster *c, bool create, bool *fresh, struct ag_err *err)
{
    struct stat st;
    *fresh = false;
    if (stat(c->dir, &st) != 0) {
        if (errno != ENOENT || !create)
            return ag_err_set(err, AG_ENOTFOUND, "%s: %s", c->dir, strerror(errno));
        if (mkdir(c->dir, 0700) != 0)
            return ag_err_set(err, AG_EIO, "cannot make %s: %s", c->dir, strerror(errno));
        *fresh = true;
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) return ag_err_set(err, AG_EINVAL, "%s is not a directory", c->dir);
    if (has_file(c, "cluster.json")) return 0;
    if (create && dir_empty(c->dir)) {
        *fresh = true;
        return chmod(c->dir, 0700) == 0
                   ? 0
                   : ag_err_set(err, AG_EIO, "%s: %s", c->dir, strerror(errno));
    }
    return ag_err_set(err, AG_EINVAL,
                      "%s is not an agora cluster directory (it has no cluster.json)%s", c->dir,
                      create ? " and is not empty: give a new or an empty directory" : "");
}

/* The pid in DIR/supervisor.lock when a supervisor holds it, else 0. */
static long supervisor_pid(const struct cl_cluster *c)
{
    char p[PATH_MAX], buf[32] = {0};
    cl_path(c, "supervisor.lock", p, sizeof p);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    long pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        pid = n > 0 ? strtol(buf, NULL, 10) : -1;
    }
    close(fd);
    return pid;
}

static int lock_dir(const struct cl_cluster *c, int *out, struct ag_err *err)
{
    char p[PATH_MAX];
    cl_path(c, "supervisor.lock", p, sizeof p);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return ag_err_set(err, AG_EIO, "%s: %s", p, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        long pid = supervisor_pid(c);
        return ag_err_set(err, AG_ELOCKED,
                          "%s is in use: the supervisor pid %ld runs it (%s); one `agora "
                          "cluster up` per directory",
                          c->dir, pid, p);
    }
    if (ftruncate(fd, 0) != 0 || dprintf(fd, "%ld\n", (long)getpid()) < 0)
        AG_WARN("cluster.lock_pid_not_written", AG_LS("path", p));
    *out = fd;
    return 0;
}

static int make_dirs(const struct cl_cluster *c, struct ag_err *err)
{
    static const char *const dirs[] = {"logs", "data", "nats"};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (cl_path(c, dirs[i], p, sizeof p) && mkdir(p, 0700) != 0 && errno != EEXIST)
            return ag_err_set(err, AG_EIO, "%s: %s", p, strerror(errno));
    for (size_t i = 0; i < c->n; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "nats/%s", c->m[i].name);
        if (c->m[i].role == CL_NATS && cl_path(c, rel, p, sizeof p) && mkdir(p, 0700) != 0 &&
            errno != EEXIST)
            return ag_err_set(err, AG_EIO, "%s: %s", p, strerror(errno));
    }
    return 0;
}

/* ---- up: preparing ---- */

struct up_opts {
    const char *dir, *listen, *contexts;
    unsigned instances;
    double target;        /* --target-inflight */
    uint64_t cooldown_ms; /* --cooldown */
    bool contexts_set, instances_set;
    bool plaintext; /* --insecure-plaintext */
};

/* an existing cluster: its layout is fixed */
static int load_existing(struct cl_cluster *c, const struct up_opts *o, struct ag_err *err)
{
    int rc = cl_load(c, err);
    if (rc) return rc;
    if ((o->contexts_set && strcmp(o->contexts, c->spec) != 0) ||
        (o->instances_set && o->instances != c->instances))
        return ag_err_set(err, AG_EINVAL,
                          "%s was made with --contexts '%s' --instances %u: the layout is fixed "
                          "at the first start (start without those options, or in a new "
                          "directory)",
                          c->dir, c->spec, c->instances);
    return 0;
}

static int prepare(struct cl_cluster *c, const struct up_opts *o, int *lock, struct ag_err *err)
{
    bool fresh;
    int rc = open_dir(c, true, &fresh, err);
    if (!rc) rc = lock_dir(c, lock, err);
    if (rc) return rc;
    fresh = fresh && !has_file(c, "cluster.json");
    if (fresh) {
        rc = cl_layout(c, o->contexts, o->instances, err);
        if (!rc) rc = cl_pick_ports(c, err);
        if (!rc) rc = cl_save(c, err);
    } else {
        rc = load_existing(c, o, err);
    }
    if (!rc) cl_stale_reap(c); /* a crashed supervisor's members (cluster_stale.c) */
    if (!rc) rc = cl_ports_free(c, err);
    if (!rc) rc = make_dirs(c, err);
    if (!rc) rc = cl_secrets(c, err);
    if (!rc && c->tls) rc = cl_certs_prepare(c, err); /* before gateway.yaml names them */
    if (!rc) rc = cl_write_configs(c, err);
    if (!rc) rc = cl_pg_prepare(c, err);
    if (!rc && readlink("/proc/self/exe", c->agora, sizeof c->agora - 1) <= 0)
        rc = ag_err_set(err, AG_EIO, "cannot find this program (/proc/self/exe)");
    return rc;
}

/* ---- up: supervising ---- */

static void describe_exit(int st, char out[48])
{
    if (WIFEXITED(st))
        snprintf(out, 48, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, 48, "signal %d", WTERMSIG(st));
    else
        snprintf(out, 48, "status %d", st);
}

static void exited(struct cl_member *m, int st, bool stopping)
{
    uint64_t now = cl_now_ms();
    pid_t pid = m->pid;
    describe_exit(st, m->last_exit);
    m->pid = 0;
    m->ready = false;
    if (m->parked) { /* drained by the autoscaler */
        m->draining = false;
        m->state = CL_DOWN;
        AG_INFO("cluster.member_parked", AG_LS("member", m->name), AG_LI("pid", pid),
                AG_LS("exit", m->last_exit));
        return;
    }
    if (stopping) {
        m->state = CL_STOPPED;
        AG_INFO("cluster.member_stopped", AG_LS("member", m->name), AG_LI("pid", pid),
                AG_LS("exit", m->last_exit));
        return;
    }
    if (m->ready_since && now - m->ready_since >= STABLE_MS) m->failures = 0;
    m->failures++;
    unsigned shift = m->failures - 1 < 7 ? m->failures - 1 : 7;
    m->backoff_ms = BACKOFF_MIN_MS << shift;
    if (m->backoff_ms > BACKOFF_MAX_MS) m->backoff_ms = BACKOFF_MAX_MS;
    m->next_start_ms = now + m->backoff_ms;
    m->state = CL_DOWN;
    m->ready_since = 0;
    AG_WARN("cluster.member_exited", AG_LS("member", m->name), AG_LS("role", cl_role_name(m->role)),
            AG_LI("pid", pid), AG_LS("exit", m->last_exit), AG_LU("failures", m->failures),
            AG_LU("restartInMs", m->backoff_ms));
}

static void reap(struct cl_cluster *c, bool stopping)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        for (size_t i = 0; i < c->n; i++)
            if (c->m[i].pid == pid) exited(&c->m[i], st, stopping);
}

static bool deps_ready(const struct cl_cluster *c, const struct cl_member *m)
{
    for (size_t j = 0; j < c->n; j++)
        if ((m->deps & (1ull << j)) && !c->m[j].ever_ready) return false;
    return true;
}

static void start_due(struct cl_cluster *c, uint64_t now)
{
    for (size_t i = 0; i < c->n; i++) {
        struct cl_member *m = &c->m[i];
        if (m->state != CL_DOWN || m->parked || now < m->next_start_ms || !deps_ready(c, m))
            continue;
        bool again = m->started_ms != 0;
        if (cl_spawn(c, i, now)) {
            AG_WARN("cluster.member_not_started", AG_LS("member", m->name),
                    AG_LS("error", strerror(errno)));
            m->next_start_ms = now + BACKOFF_MAX_MS;
            continue;
        }
        if (again) m->restarts++;
        AG_INFO("cluster.member_started", AG_LS("member", m->name),
                AG_LS("role", cl_role_name(m->role)), AG_LI("pid", m->pid),
                AG_LU("restarts", m->restarts));
    }
}

static void check_health(struct cl_cluster *c, uint64_t now)
{
    bool all = true;
    for (size_t i = 0; i < c->n; i++) {
        struct cl_member *m = &c->m[i];
        bool ok = m->pid && cl_healthy(c, i);
        if (ok && !m->ready) {
            m->ready_since = now;
            m->ever_ready = true;
            AG_INFO("cluster.member_ready", AG_LS("member", m->name), AG_LI("pid", m->pid),
                    AG_LU("afterMs", now - m->started_ms));
            if (m->role == CL_INSTANCE && c->g[m->gi].min < c->g[m->gi].max)
                cl_gateway_reload(c); /* a scaled-up instance joins the endpoints */
            if (m->role == CL_GATEWAY && c->gw_reload && kill(m->pid, SIGHUP) == 0)
                c->gw_reload = false;
        } else if (!ok && m->ready && m->pid) {
            m->ready_since = 0;
            AG_WARN("cluster.member_unready", AG_LS("member", m->name), AG_LI("pid", m->pid));
        }
        m->ready = ok;
        all = all && (m->ever_ready || m->parked);
    }
    if (all && strcmp(c->state, "starting") == 0) {
        c->state = "running";
        AG_INFO("cluster.running", AG_LS("dir", c->dir), AG_LS("gateway", c->listen),
                AG_LU("members", c->n), AG_LU("afterMs", now - c->started_ms));
    }
}

static void write_status(struct cl_cluster *c, uint64_t now)
{
    char *text = cl_status_json(c, now);
    if (!text || cl_write_file(c, "status.json", text, strlen(text)))
        AG_WARN("cluster.status_not_written", AG_LS("dir", c->dir));
    ag_free(text);
}

static void supervise(struct cl_cluster *c)
{
    uint64_t next_check = 0;
    while (!stop_signals) {
        uint64_t now = cl_now_ms();
        reap(c, false);
        start_due(c, now);
        cl_drain_due(c, now);
        if (now >= next_check) {
            check_health(c, now);
            if (strcmp(c->state, "running") == 0) cl_autoscale(c, now); /* and the load */
            cl_certs_check(c, now);
            write_status(c, now);
            next_check = now + 1000;
        }
        sleep_ms(TICK_MS);
    }
}

static bool alive(const struct cl_cluster *c, enum cl_role role)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == role && c->m[i].pid) return true;
    return false;
}

static void signal_role(struct cl_cluster *c, enum cl_role role, int sig)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == role && c->m[i].pid) {
            if (sig == SIGKILL) AG_WARN("cluster.member_killed", AG_LS("member", c->m[i].name));
            kill(c->m[i].pid, sig);
        }
}

static void stop_role(struct cl_cluster *c, enum cl_role role, int sig, uint64_t timeout_ms)
{
    if (!alive(c, role)) return;
    AG_INFO("cluster.stopping", AG_LS("role", cl_role_name(role)));
    signal_role(c, role, sig);
    uint64_t deadline = cl_now_ms() + timeout_ms, next_status = 0;
    bool killed = false;
    while (alive(c, role)) {
        reap(c, true);
        uint64_t now = cl_now_ms();
        if (!killed && (now >= deadline || stop_signals >= 3)) {
            signal_role(c, role, SIGKILL);
            killed = true;
        }
        if (now >= next_status) write_status(c, now), next_status = now + 1000;
        sleep_ms(50);
    }
}

static void stop_all(struct cl_cluster *c)
{
    c->state = "stopping";
    for (size_t i = 0; i < c->n; i++)
        if (!c->m[i].pid) c->m[i].state = CL_STOPPED;
    write_status(c, cl_now_ms());
    stop_role(c, CL_GATEWAY, SIGTERM, 10000);
    stop_role(c, CL_INSTANCE, SIGTERM, 20000);
    stop_role(c, CL_NATS, SIGTERM, 10000);
    stop_role(c, CL_PG, SIGINT, 30000);
    reap(c, true);
    c->state = "stopped";
    write_status(c, cl_now_ms());
}

/* ---- up ---- */

static int parse_up(int argc, char **argv, struct up_opts *o)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool val = i + 1 < argc;
        if (strcmp(a, "--dir") == 0 && val) {
            o->dir = argv[++i];
        } else if (strcmp(a, "--listen") == 0 && val) {
            o->listen = argv[++i];
        } else if (strcmp(a, "--contexts") == 0 && val) {
            o->contexts = argv[++i];
            o->contexts_set = true;
        } else if (strcmp(a, "--target-inflight") == 0 && val) {
            char *end;
            o->target = strtod(argv[++i], &end);
            if (*end || !(o->target > 0 && o->target <= 100000))
                return ag_cli_usage_error("cluster up: --target-inflight takes a number > 0");
        } else if (strcmp(a, "--cooldown") == 0 && val) {
            o->cooldown_ms = ag_cli_duration_ms(argv[++i]);
            if (!o->cooldown_ms)
                return ag_cli_usage_error("cluster up: --cooldown takes a duration (30s, 2m)");
        } else if (strcmp(a, "--insecure-plaintext") == 0) {
            o->plaintext = true;
        } else if (strcmp(a, "--instances") == 0 && val) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 16)
                return ag_cli_usage_error("cluster up: --instances takes 1..16, not '%s'", argv[i]);
            o->instances = (unsigned)n;
            o->instances_set = true;
        } else {
            return ag_cli_usage_error(
                "cluster up: unknown or incomplete option '%s' (see 'agora cluster --help')", a);
        }
    }
    if (!o->dir) return ag_cli_usage_error("cluster up: --dir DIR is required");
    if (!o->listen) return ag_cli_usage_error("cluster up: --listen HOST:PORT is required");
    char host[64];
    uint16_t port;
    struct ag_err err;
    if (ag_hostport_parse(o->listen, 0, host, sizeof host, &port, &err))
        return ag_cli_usage_error("cluster up: --listen: %s", err.msg);
    struct cl_cluster *probe = ag_calloc(1, sizeof *probe); /* the spec, before DIR is touched */
    int rc = probe && cl_layout(probe, o->contexts, o->instances, &err)
                 ? ag_cli_usage_error("cluster up: %s", err.msg)
                 : 0;
    ag_free(probe);
    return rc;
}

static void install_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int up(int argc, char **argv)
{
    struct up_opts o = {
        .contexts = DEFAULT_SPEC, .instances = 2, .target = 4, .cooldown_ms = 30000};
    int rc = parse_up(argc, argv, &o);
    if (rc) return rc;
    struct cl_cluster *c = ag_calloc(1, sizeof *c);
    if (!c) return fputs("agora cluster: out of memory\n", stderr), 1;
    struct ag_err err;
    ag_err_clear(&err);
    int lock = -1;
    install_signals(); /* before the first child: a Ctrl-C during initdb stops cleanly */
    umask(077);
    snprintf(c->listen, sizeof c->listen, "%s", o.listen);
    c->target = o.target;
    c->cooldown_ms = o.cooldown_ms;
    c->tls = !o.plaintext;
    c->state = "starting";
    c->started_ms = cl_now_ms();
    rc = abs_dir(o.dir, c) ? ag_err_set(&err, AG_EINVAL, "--dir: too long a path") : 0;
    if (!rc) rc = prepare(c, &o, &lock, &err);
    if (rc) {
        fprintf(stderr, "agora cluster: %s\n", ag_err_msg(&err, rc));
        if (lock >= 0) close(lock);
        cl_certs_close(c);
        ag_free(c);
        return 1;
    }
    fprintf(stderr,
            "agora cluster: %s: %zu members, the gateway on http://%s (members' logs in "
            "%s/logs; `agora cluster status --dir %s`); %s; Ctrl-C stops\n",
            c->dir, c->n, c->listen, c->dir, c->dir,
            c->tls ? "mTLS among the members (DIR/certs)"
                   : "PLAIN HTTP among the members (--insecure-plaintext)");
    if (!stop_signals) supervise(c);
    stop_all(c);
    fprintf(stderr, "agora cluster: stopped\n");
    close(lock);
    cl_certs_close(c);
    ag_free(c);
    return 0;
}

/* ---- status ---- */

/* a string field of o, "" when missing */
static const char *str(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

static void print_table(const struct cl_cluster *c, json_t *st, long pid)
{
    uint64_t at = (uint64_t)json_integer_value(json_object_get(st, "updatedAtMs"));
    uint64_t now = cl_now_ms();
    long last = (long)json_integer_value(json_object_get(json_object_get(st, "supervisor"), "pid"));
    if (pid)
        printf("cluster %s: %s (supervisor pid %ld), gateway http://%s, status %.1f s old\n",
               c->dir, str(st, "state"), pid, c->listen,
               at && now > at ? (double)(now - at) / 1000.0 : 0.0);
    else
        printf("cluster %s: the supervisor is not running (last: pid %ld, %s)\n", c->dir, last,
               str(st, "state"));
    printf("%-40s %-10s %-8s %-22s %-7s %-8s %-8s %-8s %s\n", "MEMBER", "ROLE", "PID", "ADDRESS",
           "STATE", "HEALTH", "INFLIGHT", "RESTARTS", "LAST EXIT");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(st, "members"), i, m)
    {
        json_t *p = json_object_get(m, "pid");
        char pids[16] = "-", load[16] = "-";
        if (json_is_integer(p))
            snprintf(pids, sizeof pids, "%lld", (long long)json_integer_value(p));
        if (json_is_number(json_object_get(m, "inflight")))
            snprintf(load, sizeof load, "%.0f", json_number_value(json_object_get(m, "inflight")));
        const char *addr = str(m, "address");
        printf("%-40s %-10s %-8s %-22s %-7s %-8s %-8s %-8lld %s\n", str(m, "name"), str(m, "role"),
               pids, strlen(addr) > 22 && !strncmp(addr, "unix:", 5) ? "unix:DIR/pg" : addr,
               str(m, "state"), str(m, "health"), load,
               (long long)json_integer_value(json_object_get(m, "restarts")), str(m, "lastExit"));
    }
}

static int status(int argc, char **argv)
{
    const char *dir = NULL;
    bool as_json = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            as_json = true;
        else
            return ag_cli_usage_error(
                "cluster status: unknown or incomplete option '%s' (see 'agora cluster --help')",
                argv[i]);
    }
    if (!dir) return ag_cli_usage_error("cluster status: --dir DIR is required");
    struct cl_cluster *c = ag_calloc(1, sizeof *c);
    struct ag_err err;
    ag_err_clear(&err);
    bool fresh;
    int rc = !c ? AG_ENOMEM : abs_dir(dir, c) ? ag_err_set(&err, AG_EINVAL, "--dir: too long") : 0;
    if (!rc) rc = open_dir(c, false, &fresh, &err);
    if (!rc) rc = cl_load(c, &err);
    if (rc) {
        fprintf(stderr, "agora cluster: %s\n", ag_err_msg(&err, rc));
        ag_free(c);
        return 1;
    }
    long pid = supervisor_pid(c);
    char path[PATH_MAX];
    cl_path(c, "status.json", path, sizeof path);
    json_t *st = json_load_file(path, 0, NULL);
    if (!json_is_object(st)) {
        json_decref(st);
        st = json_pack("{s:s, s:[]}", "state", "unknown", "members");
    }
    json_object_set_new(st, "running", json_boolean(pid != 0));
    if (as_json) {
        char *text = json_dumps(st, JSON_INDENT(2));
        if (text) puts(text);
        ag_free(text);
    } else {
        print_table(c, st, pid);
    }
    json_decref(st);
    ag_free(c);
    return pid ? 0 : 3;
}

static int run(int argc, char **argv)
{
    if (argc < 2 || ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "up") == 0) return up(argc, argv);
    if (strcmp(argv[1], "status") == 0) return status(argc, argv);
    return ag_cli_usage_error("cluster: unknown subcommand '%s': up or status", argv[1]);
}

const struct ag_cli_cmd ag_cli_cmd_cluster = {
    "cluster", "run the distributed shape on this machine, supervised (up, status)", run};
