/*
 * `agora cluster`: the members' processes, their health and status.json.
 *
 * Processes. A member is a direct child (fork + exec): PostgreSQL's `postgres -D`
 * (not pg_ctl, so its pid is ours to watch), `nats-server -c`, `agora serve` and
 * `agora gateway`. Each runs in its own process group, so a Ctrl-C at the terminal
 * reaches only the supervisor, which stops them in order; each has a parent-death
 * signal (SIGTERM; PostgreSQL SIGINT, its fast shutdown), so a supervisor killed
 * with SIGKILL takes its members with it. Output goes to DIR/logs/<name>.log,
 * appended. A root supervisor runs PostgreSQL as its own user (it refuses root).
 *
 * Health. Once a second per running member, blocking and short (connect 250 ms,
 * answer 500 ms): an instance (over mTLS with the supervisor's certificate unless
 * --insecure-plaintext, cluster_tls.c) and the gateway answer GET /health/ready 200, a NATS
 * node GET /healthz 200 on its monitoring port (JetStream current), PostgreSQL
 * says `ready` in its postmaster.pid (PostgreSQL 10+ writes its state there; a
 * probe connection would fill its log with "incomplete startup packet").
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agora/platform.h"
#include "cli/cluster.h"

#define ARGV_MAX 32

uint64_t cl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- command lines ---- */

struct cmdline {
    char *argv[ARGV_MAX];
    int argc;
    char text[8192]; /* the strings argv points into */
    size_t used;
};

static void arg(struct cmdline *l, const char *f, ...) __attribute__((format(printf, 2, 3)));
static void arg(struct cmdline *l, const char *f, ...)
{
    if (l->argc >= ARGV_MAX - 1 || l->used >= sizeof l->text) return;
    va_list ap;
    va_start(ap, f);
    int w = vsnprintf(l->text + l->used, sizeof l->text - l->used, f, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= sizeof l->text - l->used) return;
    l->argv[l->argc++] = l->text + l->used;
    l->argv[l->argc] = NULL;
    l->used += (size_t)w + 1;
}

static void instance_cmd(const struct cl_cluster *c, const struct cl_member *m, struct cmdline *l)
{
    char pg[PATH_MAX], bus[256];
    cl_pg_uri(c, pg, sizeof pg);
    cl_bus_uri(c, bus, sizeof bus);
    arg(l, "%s", c->agora);
    arg(l, "serve");
    for (const char *const *n = ag_platform_context_names(); *n; n++)
        if (m->contexts & ag_platform_context_bit(*n)) arg(l, "%s", *n);
    arg(l, "--listen");
    arg(l, "127.0.0.1:%u", m->port);
    arg(l, "--store");
    arg(l, "%s&schema=es", pg);
    arg(l, "--readmodels");
    arg(l, "%s", pg);
    arg(l, "--bus");
    arg(l, "%s", bus);
    arg(l, "--data");
    arg(l, "%s/data", c->dir);
    if (m->seed) arg(l, "--seed");
    if (!c->tls) return;
    char pem[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
    if (!cl_cert_path(c, m, "pem", pem, sizeof pem) ||
        !cl_cert_path(c, m, "key", key, sizeof key) || !cl_cert_path(c, NULL, "pem", ca, sizeof ca))
        return;
    arg(l, "--tls-cert");
    arg(l, "%s", pem);
    arg(l, "--tls-key");
    arg(l, "%s", key);
    arg(l, "--tls-ca");
    arg(l, "%s", ca);
}

static void command(const struct cl_cluster *c, const struct cl_member *m, struct cmdline *l)
{
    memset(l, 0, sizeof *l);
    switch (m->role) {
    case CL_PG:
        arg(l, "%s/postgres", c->pgbin);
        arg(l, "-D");
        arg(l, "%s/pg/data", c->dir);
        break;
    case CL_NATS:
        arg(l, "nats-server");
        arg(l, "-c");
        arg(l, "%s/nats/%s.conf", c->dir, m->name);
        break;
    case CL_INSTANCE:
        instance_cmd(c, m, l);
        break;
    case CL_GATEWAY:
        arg(l, "%s", c->agora);
        arg(l, "gateway");
        arg(l, "--config");
        arg(l, "%s/gateway.yaml", c->dir);
        arg(l, "--cluster-status");
        arg(l, "%s/status.json", c->dir);
        break;
    }
}

/* ---- fork + exec ---- */

/* In the child: never returns. Only async-signal-safe calls (and setenv: the
 * supervisor has one thread). */
static void child(const struct cl_cluster *c, char *const argv[], const char *log, bool as_pg,
                  int deathsig, pid_t parent)
{
    setpgid(0, 0);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL); /* not the supervisor's (ignored), nor a shell's */
    signal(SIGQUIT, SIG_DFL);
    if (chdir("/") != 0) _exit(126); /* PostgreSQL's user may not read our directory */
    if (as_pg && c->pg_other &&
        (setgroups(0, NULL) != 0 || setgid(c->pg_gid) != 0 || setuid(c->pg_uid) != 0)) {
        dprintf(2, "agora cluster: cannot become the postgres user: %s\n", strerror(errno));
        _exit(126);
    }
    prctl(PR_SET_PDEATHSIG, deathsig); /* after setuid, which clears it */
    if (getppid() != parent) _exit(1);
    if (!as_pg) setenv("AGORA_MESH_KEY", c->mesh, 1); /* the instances and the gateway */
    execvp(argv[0], argv);
    dprintf(2, "agora cluster: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static pid_t start(const struct cl_cluster *c, char *const argv[], const char *name, bool as_pg,
                   int deathsig)
{
    char log[PATH_MAX];
    if (snprintf(log, sizeof log, "%s/logs/%s", c->dir, name) >= (int)sizeof log) return -1;
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) child(c, argv, log, as_pg, deathsig, parent);
    return pid;
}

int cl_run(const struct cl_cluster *c, char *const argv[], const char *log, bool as_pg)
{
    pid_t pid = start(c, argv, log, as_pg, SIGTERM);
    int st = 0;
    if (pid < 0) return -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int cl_spawn(struct cl_cluster *c, size_t i, uint64_t now_ms)
{
    struct cl_member *m = &c->m[i];
    struct cmdline l;
    char log[128];
    command(c, m, &l);
    snprintf(log, sizeof log, "%s.log", m->name);
    pid_t pid = start(c, l.argv, log, m->role == CL_PG, m->role == CL_PG ? SIGINT : SIGTERM);
    if (pid < 0) return AG_EIO;
    m->pid = pid;
    m->state = CL_UP;
    m->ready = false;
    m->ready_since = 0;
    m->started_ms = now_ms;
    return 0;
}

/* ---- health ---- */

/* A connected socket to host:port (numeric), or -1: connect within 250 ms. */
int cl_dial(const char *host, uint16_t port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0) return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    bool conn = fd >= 0 && (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
                            (errno == EINPROGRESS && poll(&p, 1, 250) == 1));
    freeaddrinfo(ai);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (conn && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && !soerr) return fd;
    if (fd >= 0) close(fd);
    return -1;
}

/* ssl (an SSL *, cluster_tls.c) on a blocking socket with 500 ms timeouts, or NULL:
 * plain on the non-blocking one */
int cl_http_exchange(int fd, void *ssl, const char *host, const char *path, const char *headers,
                     char *out, size_t cap)
{
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n",
                     path, host, headers ? headers : "");
    out[0] = 0;
    if (n <= 0 || n >= (int)sizeof req) return 0;
    if (ssl ? SSL_write(ssl, req, n) != n : send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t r;
        size_t room = cap - 1 - got;
        if (ssl)
            r = SSL_read(ssl, out + got, room > INT_MAX ? INT_MAX : (int)room);
        else
            r = poll(&p, 1, 500) == 1 ? recv(fd, out + got, room, 0) : 0;
        if (r <= 0) break;
        got += (size_t)r;
    }
    out[got] = 0;
    return got >= 12 && strncmp(out, "HTTP/1.", 7) == 0 ? (int)strtol(out + 9, NULL, 10) : 0;
}

int cl_http_get(const char *host, uint16_t port, const char *path, const char *headers, char *out,
                size_t cap)
{
    int fd = cl_dial(host, port);
    out[0] = 0;
    if (fd < 0) return 0;
    int status = cl_http_exchange(fd, NULL, host, path, headers, out, cap);
    close(fd);
    return status;
}

int cl_member_get(const struct cl_cluster *c, const struct cl_member *m, const char *path,
                  const char *headers, char *out, size_t cap)
{
    if (m->role == CL_INSTANCE && c->tls) return cl_tls_get(c, m, path, headers, out, cap);
    return cl_http_get("127.0.0.1", m->port, path, headers, out, cap);
}

static int http_status(const char *host, uint16_t port, const char *path)
{
    char head[512];
    return cl_http_get(host, port, path, NULL, head, sizeof head);
}

/* postmaster.pid: line 1 the pid, line 8 the state */
static bool pg_ready(const struct cl_cluster *c, pid_t pid)
{
    char path[PATH_MAX], buf[1024];
    snprintf(path, sizeof path, "%s/pg/data/postmaster.pid", c->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    if (strtol(buf, NULL, 10) != (long)pid) return false;
    const char *line = buf;
    for (int k = 1; k < 8 && line; k++) {
        line = strchr(line, '\n');
        if (line) line++;
    }
    return line && strncmp(line, "ready", 5) == 0;
}

/* the gateway's --listen, as a client reaches it */
static void gateway_addr(const struct cl_cluster *c, char host[64], uint16_t *port)
{
    struct ag_err err;
    if (ag_hostport_parse(c->listen, 0, host, 64, port, &err)) host[0] = 0;
    if (!strcmp(host, "0.0.0.0") || !strcmp(host, "localhost")) snprintf(host, 64, "127.0.0.1");
    if (!strcmp(host, "::")) snprintf(host, 64, "::1");
}

bool cl_healthy(const struct cl_cluster *c, size_t i)
{
    const struct cl_member *m = &c->m[i];
    char host[64];
    uint16_t port = 0;
    switch (m->role) {
    case CL_PG:
        return pg_ready(c, m->pid);
    case CL_NATS:
        return http_status("127.0.0.1", m->mport, "/healthz") == 200;
    case CL_INSTANCE: {
        char head[512];
        return cl_member_get(c, m, "/health/ready", NULL, head, sizeof head) == 200;
    }
    case CL_GATEWAY:
        gateway_addr(c, host, &port);
        return host[0] && http_status(host, port, "/health/ready") == 200;
    }
    return false;
}

/* ---- status.json ---- */

static json_t *member_json(const struct cl_cluster *c, const struct cl_member *m, uint64_t now)
{
    char addr[PATH_MAX];
    if (m->role == CL_PG)
        snprintf(addr, sizeof addr, "unix:%s/pg/.s.PGSQL.%d", c->dir, CL_PG_PORT);
    else if (m->role == CL_GATEWAY)
        snprintf(addr, sizeof addr, "%s", c->listen);
    else
        snprintf(addr, sizeof addr, "127.0.0.1:%u", m->port);
    static const char *const states[] = {"down", "up", "stopped"};
    const char *state = m->parked && !m->pid ? "parked" : states[m->state];
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s}", "name", m->name, "role",
                          cl_role_name(m->role), "address", addr, "state", state, "health",
                          m->pid ? (m->ready ? "ready" : "unready") : "down", "restarts",
                          (int)m->restarts, "lastExit", m->last_exit);
    json_object_set_new(j, "pid", m->pid ? json_integer(m->pid) : json_null());
    if (m->role == CL_INSTANCE) json_object_set_new(j, "tls", json_boolean(c->tls));
    json_object_set_new(j, "uptimeMs",
                        json_integer(m->pid ? (json_int_t)(now - m->started_ms) : 0));
    if (m->state == CL_DOWN && m->next_start_ms > now)
        json_object_set_new(j, "restartInMs", json_integer((json_int_t)(m->next_start_ms - now)));
    if (m->role == CL_NATS) {
        json_object_set_new(j, "clusterPort", json_integer(m->cport));
        json_object_set_new(j, "monitorPort", json_integer(m->mport));
    }
    if (m->role == CL_INSTANCE) {
        json_t *ctx = json_array();
        for (const char *const *n = ag_platform_context_names(); *n; n++)
            if (m->contexts & ag_platform_context_bit(*n))
                json_array_append_new(ctx, json_string(*n));
        json_object_set_new(j, "contexts", ctx);
        json_object_set_new(j, "seed", json_boolean(m->seed));
        json_object_set_new(j, "group", json_string(m->group));
        json_object_set_new(j, "draining", json_boolean(m->draining));
        if (m->pid && m->inflight >= 0) json_object_set_new(j, "inflight", json_real(m->inflight));
    }
    return j;
}

/* the groups and the autoscaler's decisions */
static json_t *groups_json(const struct cl_cluster *c)
{
    json_t *a = json_array();
    for (size_t gi = 0; gi < c->ng; gi++) {
        const struct cl_group *g = &c->g[gi];
        unsigned n = 0;
        for (size_t i = 0; i < c->n; i++)
            n += c->m[i].role == CL_INSTANCE && c->m[i].gi == gi && !c->m[i].parked;
        json_array_append_new(a, json_pack("{s:s, s:i, s:i, s:i, s:b, s:f, s:i, s:i, s:s}", "name",
                                           g->name, "min", (int)g->min, "max", (int)g->max,
                                           "instances", (int)n, "autoscaled", g->min < g->max,
                                           "load", g->load, "scaleUps", (int)g->ups, "scaleDowns",
                                           (int)g->downs, "lastDecision", g->last));
        json_object_set_new(json_array_get(a, gi), "utilisation", json_real(g->util));
    }
    return a;
}

char *cl_status_json(const struct cl_cluster *c, uint64_t now_ms)
{
    json_t *members = json_array();
    for (size_t i = 0; i < c->n; i++)
        json_array_append_new(members, member_json(c, &c->m[i], now_ms));
    char at[32], since[32];
    ag_time_rfc3339(now_ms * 1000000u, at);
    ag_time_rfc3339(c->started_ms * 1000000u, since);
    json_t *j = json_pack("{s:s, s:s, s:{s:i, s:s}, s:s, s:I, s:o, s:o, s:{s:f, s:I}}", "dir",
                          c->dir, "state", c->state, "supervisor", "pid", (int)getpid(),
                          "startedAt", since, "updatedAt", at, "updatedAtMs", (json_int_t)now_ms,
                          "members", members, "groups", groups_json(c), "autoscaling",
                          "targetInflight", c->target, "cooldownMs", (json_int_t)c->cooldown_ms);
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL; /* ag_malloc'd (ag_json_init) */
    json_decref(j);
    return text;
}
