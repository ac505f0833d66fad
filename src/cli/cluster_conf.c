/*
 * `agora cluster`: the directory and its files (the layout in src/cli/cluster.h).
 *
 * The layout. Members are PostgreSQL, three NATS nodes, the instances and the
 * gateway. The instances come from a --contexts SPEC: groups separated by commas,
 * a group being contexts joined by '+' (or `all`) with an optional `=N` instances
 * (default --instances): `customers+catalog=1,ordering,all=2`. Every context must be
 * served by some group (a context served nowhere would have no routes and its read
 * models nobody to project them). The default is every context on its own, twice.
 *
 * cluster.json records the SPEC, --instances and the ports chosen at the first start
 * (free loopback ports, all bound at once so no two are the same); a later start
 * rebuilds the layout from the SPEC and takes the ports from the file, checking each
 * field (errors name the field, e.g. `nats[1].clusterPort`; a syntax error names the
 * line and column). The gateway configuration and the NATS configurations are
 * written again at every start from the layout (the gateway's endpoints by one
 * function, endpoints_yaml: a static list now, service discovery later).
 *
 * PostgreSQL refuses to run as root: a root supervisor runs it as the `postgres`
 * user, owner of DIR/pg, and makes DIR root:postgres 0710 (that user may pass
 * through DIR to its own directory, list nothing); otherwise DIR is 0700. Files are
 * 0600.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/http.h"
#include "agora/platform.h"
#include "cli/cli.h"
#include "cli/cluster.h"

#define MAX_INSTANCES 16

/* snprintf that says whether it fitted */
static bool fmt(char *out, size_t n, const char *f, ...) __attribute__((format(printf, 3, 4)));
static bool fmt(char *out, size_t n, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int w = vsnprintf(out, n, f, ap);
    va_end(ap);
    return w >= 0 && (size_t)w < n;
}

bool cl_path(const struct cl_cluster *c, const char *rel, char *out, size_t n)
{
    return fmt(out, n, "%s/%s", c->dir, rel);
}

const char *cl_role_name(enum cl_role r)
{
    static const char *const names[] = {"postgresql", "nats", "instance", "gateway"};
    return names[r];
}

int cl_write_file(const struct cl_cluster *c, const char *rel, const char *text, size_t len)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (!cl_path(c, rel, path, sizeof path) || !fmt(tmp, sizeof tmp, "%s.tmp", path))
        return AG_EINVAL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return AG_EIO;
    bool ok = write(fd, text, len) == (ssize_t)len;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) == 0) return 0;
    unlink(tmp);
    return AG_EIO;
}

/* ---- the layout ---- */

static struct cl_member *add(struct cl_cluster *c, const char *name, enum cl_role role)
{
    if (c->n >= CL_MAX_MEMBERS) return NULL;
    struct cl_member *m = &c->m[c->n++];
    memset(m, 0, sizeof *m);
    if (!fmt(m->name, sizeof m->name, "%s", name)) return c->n--, NULL;
    m->role = role;
    m->inflight = -1;
    return m;
}

static unsigned all_contexts(void)
{
    unsigned all = 0;
    for (const char *const *n = ag_platform_context_names(); *n; n++)
        all |= ag_platform_context_bit(*n);
    return all;
}

/* "customers+catalog" into a mask */
static int group_mask(const char *g, unsigned *mask, struct ag_err *err)
{
    char buf[80];
    if (!fmt(buf, sizeof buf, "%s", g) || !*buf)
        return ag_err_set(err, AG_EINVAL, "--contexts: group '%s' is empty or too long", g);
    *mask = 0;
    for (char *save = NULL, *t = strtok_r(buf, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
        unsigned bit = strcmp(t, "all") == 0 ? all_contexts() : ag_platform_context_bit(t);
        if (!bit)
            return ag_err_set(err, AG_EINVAL,
                              "--contexts: '%s' is not a context (customers, catalog, ordering, "
                              "inventory, payments, shipping, sagas or all)",
                              t);
        *mask |= bit;
    }
    return *mask ? 0 : ag_err_set(err, AG_EINVAL, "--contexts: group '%s' names no context", g);
}

/* "=N" or "=MIN..MAX" (autoscaled) after a group's contexts */
static int group_count(const char *g, const char *v, unsigned *min, unsigned *max,
                       struct ag_err *err)
{
    char *end;
    long lo = strtol(v, &end, 10), hi = lo;
    if (end != v && strncmp(end, "..", 2) == 0) {
        const char *h = end + 2;
        hi = strtol(h, &end, 10);
        if (end == h) hi = 0;
    }
    if (*end || end == v || lo < 1 || hi < lo || hi > MAX_INSTANCES)
        return ag_err_set(err, AG_EINVAL,
                          "--contexts: '%s': after '=' a count 1..%d, or MIN..MAX to autoscale", g,
                          MAX_INSTANCES);
    *min = (unsigned)lo;
    *max = (unsigned)hi;
    return 0;
}

/* one group "a+b[=N|=MIN..MAX]": its instances (those past MIN parked) */
static int add_group(struct cl_cluster *c, char *g, unsigned instances, struct ag_err *err)
{
    char *eq = strchr(g, '=');
    unsigned min = instances, max = instances, mask = 0;
    if (c->ng >= CL_MAX_GROUPS)
        return ag_err_set(err, AG_EINVAL, "--contexts: at most %d groups", CL_MAX_GROUPS);
    int rc = eq ? group_count(g, eq + 1, &min, &max, err) : 0;
    if (eq) *eq = 0;
    if (!rc) rc = group_mask(g, &mask, err);
    struct cl_group *grp = &c->g[c->ng];
    memset(grp, 0, sizeof *grp);
    fmt(grp->name, sizeof grp->name, "%s", g);
    grp->min = min;
    grp->max = max;
    for (unsigned k = 1; !rc && k <= max; k++) {
        char name[96];
        struct cl_member *m =
            fmt(name, sizeof name, "%s-%u", g, k) ? add(c, name, CL_INSTANCE) : NULL;
        if (!m) return ag_err_set(err, AG_EINVAL, "--contexts: too many instances or names");
        m->contexts = mask;
        m->gi = (unsigned)c->ng;
        m->parked = k > min;
        fmt(m->group, sizeof m->group, "%s", g);
    }
    if (!rc) c->ng++;
    return rc;
}

static void set_deps(struct cl_cluster *c)
{
    size_t first = 0; /* the seeding instance: after PostgreSQL and NATS; the rest after it */
    for (size_t i = 0; i < c->n; i++) {
        struct cl_member *m = &c->m[i];
        if (m->role == CL_INSTANCE && !first) {
            first = i;
            m->seed = true;
            for (size_t j = 0; j < i; j++) m->deps |= 1ull << j;
        } else if (m->role == CL_INSTANCE || m->role == CL_GATEWAY) {
            m->deps = 1ull << first;
        }
    }
}

int cl_layout(struct cl_cluster *c, const char *spec, unsigned instances, struct ag_err *err)
{
    if (instances < 1 || instances > MAX_INSTANCES)
        return ag_err_set(err, AG_EINVAL, "--instances takes 1..%d", MAX_INSTANCES);
    char buf[512];
    if (!fmt(buf, sizeof buf, "%s", spec) || !*spec)
        return ag_err_set(err, AG_EINVAL, "--contexts: empty or too long");
    c->n = 0;
    c->ng = 0;
    add(c, "postgresql", CL_PG);
    for (int k = 1; k <= CL_NATS_NODES; k++) {
        char name[16];
        fmt(name, sizeof name, "nats-%d", k);
        add(c, name, CL_NATS);
    }
    unsigned served = 0;
    int rc = 0;
    for (char *save = NULL, *g = strtok_r(buf, ",", &save); g && !rc;
         g = strtok_r(NULL, ",", &save)) {
        size_t before = c->n;
        rc = add_group(c, g, instances, err);
        if (!rc) served |= c->m[before].contexts;
    }
    if (rc) return rc;
    for (const char *const *n = ag_platform_context_names(); *n; n++)
        if (!(served & ag_platform_context_bit(*n)))
            return ag_err_set(err, AG_EINVAL, "--contexts: no group serves '%s'", *n);
    if (!add(c, "gateway", CL_GATEWAY))
        return ag_err_set(err, AG_EINVAL, "--contexts: more than %d members", CL_MAX_MEMBERS);
    fmt(c->spec, sizeof c->spec, "%s", spec);
    c->instances = instances;
    set_deps(c);
    return 0;
}

/* ---- ports ---- */

static int bind_loopback(uint16_t port, uint16_t *got)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    if (got) *got = ntohs(a.sin_port);
    return fd;
}

int cl_pick_ports(struct cl_cluster *c, struct ag_err *err)
{
    int fds[CL_MAX_MEMBERS * 3];
    size_t nfd = 0;
    int rc = 0;
    for (size_t i = 0; i < c->n && !rc; i++) {
        struct cl_member *m = &c->m[i];
        uint16_t *want[3] = {NULL, NULL, NULL};
        if (m->role == CL_INSTANCE) want[0] = &m->port;
        if (m->role == CL_NATS) want[0] = &m->port, want[1] = &m->cport, want[2] = &m->mport;
        for (int k = 0; k < 3 && want[k] && !rc; k++) {
            int fd = bind_loopback(0, want[k]);
            if (fd < 0)
                rc = ag_err_set(err, AG_EIO, "no free port on 127.0.0.1: %s", strerror(errno));
            else
                fds[nfd++] = fd;
        }
    }
    while (nfd) close(fds[--nfd]);
    return rc;
}

/* `field` of `what` is in use: the error names the field of cluster.json */
static int port_in_use(const struct cl_cluster *c, const char *field, uint16_t port,
                       struct ag_err *err)
{
    return ag_err_set(err, AG_EIO,
                      "%s/cluster.json: %s: port %u on 127.0.0.1 is in use by another process (a "
                      "second cluster, or a leftover member: stop it, or start over in a new "
                      "directory)",
                      c->dir, field, port);
}

static int listen_free(const struct cl_cluster *c, struct ag_err *err)
{
    char host[64];
    uint16_t port;
    struct ag_err perr;
    if (ag_hostport_parse(c->listen, 0, host, sizeof host, &port, &perr))
        return ag_err_set(err, AG_EINVAL, "--listen: %s", perr.msg);
    if (ag_http_listen_check(host, port, &perr))
        return ag_err_set(err, AG_EIO, "--listen %s: in use by another process (%s)", c->listen,
                          perr.msg);
    return 0;
}

int cl_ports_free(const struct cl_cluster *c, struct ag_err *err)
{
    int fds[CL_MAX_MEMBERS * 3];
    size_t nfd = 0, ni = 0;
    int rc = 0;
    for (size_t i = 0; i < c->n && !rc; i++) {
        const struct cl_member *m = &c->m[i];
        const uint16_t ports[3] = {m->port, m->cport, m->mport};
        static const char *const fields[3] = {"port", "clusterPort", "monitorPort"};
        int np = m->role == CL_NATS ? 3 : m->role == CL_INSTANCE ? 1 : 0;
        for (int k = 0; k < np && !rc; k++) {
            int fd = bind_loopback(ports[k], NULL);
            char field[64];
            fmt(field, sizeof field, "%s[%zu].%s", m->role == CL_NATS ? "nats" : "members",
                m->role == CL_NATS ? i - 1 : ni, fields[k]);
            if (fd < 0)
                rc = port_in_use(c, field, ports[k], err);
            else
                fds[nfd++] = fd;
        }
        if (m->role == CL_INSTANCE) ni++;
    }
    while (nfd) close(fds[--nfd]);
    return rc ? rc : listen_free(c, err);
}

/* ---- cluster.json ---- */

int cl_save(const struct cl_cluster *c, struct ag_err *err)
{
    json_t *nats = json_array(), *members = json_array();
    for (size_t i = 0; i < c->n; i++) {
        const struct cl_member *m = &c->m[i];
        if (m->role == CL_NATS)
            json_array_append_new(nats, json_pack("{s:s, s:i, s:i, s:i}", "name", m->name, "port",
                                                  m->port, "clusterPort", m->cport, "monitorPort",
                                                  m->mport));
        else if (m->role == CL_INSTANCE)
            json_array_append_new(members, json_pack("{s:s, s:s, s:i}", "name", m->name, "group",
                                                     m->group, "port", m->port));
    }
    char now[32];
    ag_time_rfc3339(cl_now_ms() * 1000000u, now);
    json_t *j = json_pack("{s:i, s:s, s:s, s:s, s:i, s:o, s:o}", "agoraCluster", 1, "createdAt",
                          now, "listen", c->listen, "contexts", c->spec, "instances",
                          (int)c->instances, "nats", nats, "members", members);
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    int rc = text ? cl_write_file(c, "cluster.json", text, strlen(text)) : AG_ENOMEM;
    ag_free(text);
    return rc ? ag_err_set(err, rc, "cannot write %s/cluster.json", c->dir) : 0;
}

static int bad_field(const struct cl_cluster *c, const char *field, const char *want,
                     struct ag_err *err)
{
    return ag_err_set(err, AG_ECONFIG, "%s/cluster.json: %s: %s", c->dir, field, want);
}

static int get_port(const struct cl_cluster *c, json_t *o, const char *arr, size_t i,
                    const char *key, uint16_t *out, struct ag_err *err)
{
    json_t *v = json_object_get(o, key);
    char field[64];
    fmt(field, sizeof field, "%s[%zu].%s", arr, i, key);
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
        return bad_field(c, field, "a port number 1..65535 expected", err);
    *out = (uint16_t)json_integer_value(v);
    return 0;
}

/* nats[] and members[]: each entry's ports onto the rebuilt layout, in order */
static int load_ports(struct cl_cluster *c, json_t *j, enum cl_role role, struct ag_err *err)
{
    const char *arr = role == CL_NATS ? "nats" : "members";
    json_t *a = json_object_get(j, arr);
    size_t want = 0, k = 0;
    for (size_t i = 0; i < c->n; i++) want += c->m[i].role == role;
    if (!json_is_array(a) || json_array_size(a) != want) {
        char msg[96];
        fmt(msg, sizeof msg, "an array of %zu entries expected (one per %s)", want,
            role == CL_NATS ? "NATS node" : "instance of `contexts`");
        return bad_field(c, arr, msg, err);
    }
    for (size_t i = 0; i < c->n; i++) {
        struct cl_member *m = &c->m[i];
        if (m->role != role) continue;
        json_t *o = json_array_get(a, k);
        const char *name = json_string_value(json_object_get(o, "name"));
        if (!name || strcmp(name, m->name) != 0) {
            char field[64], msg[160];
            fmt(field, sizeof field, "%s[%zu].name", arr, k);
            fmt(msg, sizeof msg, "'%s' expected (from `contexts`)", m->name);
            return bad_field(c, field, msg, err);
        }
        int rc = get_port(c, o, arr, k, "port", &m->port, err);
        if (!rc && role == CL_NATS) rc = get_port(c, o, arr, k, "clusterPort", &m->cport, err);
        if (!rc && role == CL_NATS) rc = get_port(c, o, arr, k, "monitorPort", &m->mport, err);
        if (rc) return rc;
        k++;
    }
    return 0;
}

int cl_load(struct cl_cluster *c, struct ag_err *err)
{
    char path[PATH_MAX];
    cl_path(c, "cluster.json", path, sizeof path);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) return ag_err_set(err, AG_ECONFIG, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    int rc = 0;
    json_t *ver = json_object_get(j, "agoraCluster"), *spec = json_object_get(j, "contexts");
    json_t *inst = json_object_get(j, "instances");
    if (!json_is_object(j) || json_integer_value(ver) != 1)
        rc = bad_field(c, "agoraCluster", "1 expected (not an agora cluster file?)", err);
    else if (!json_is_string(spec))
        rc = bad_field(c, "contexts", "a --contexts spec (a string) expected", err);
    else if (!json_is_integer(inst) || json_integer_value(inst) < 1 ||
             json_integer_value(inst) > MAX_INSTANCES)
        rc = bad_field(c, "instances", "an integer 1..16 expected", err);
    if (!rc && cl_layout(c, json_string_value(spec), (unsigned)json_integer_value(inst), err)) {
        char msg[300];
        fmt(msg, sizeof msg, "%s", err ? err->msg : "invalid");
        rc = bad_field(c, "contexts", msg, err);
    }
    if (!rc) rc = load_ports(c, j, CL_NATS, err);
    if (!rc) rc = load_ports(c, j, CL_INSTANCE, err);
    const char *listen = json_string_value(json_object_get(j, "listen"));
    if (!rc && !c->listen[0] && listen) fmt(c->listen, sizeof c->listen, "%s", listen);
    json_decref(j);
    return rc;
}

/* ---- secrets ---- */

static int mesh_key(struct cl_cluster *c, struct ag_err *err)
{
    char path[PATH_MAX];
    cl_path(c, "mesh-key", path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, c->mesh, 64);
        close(fd);
        if (n < AG_MESH_KEY_MIN)
            return ag_err_set(err, AG_ECONFIG, "%s: shorter than %d characters", path,
                              AG_MESH_KEY_MIN);
        c->mesh[n] = 0;
        c->mesh[strcspn(c->mesh, "\r\n")] = 0;
        return 0;
    }
    uint8_t raw[32];
    if (errno != ENOENT || getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return ag_err_set(err, AG_EIO, "%s: %s", path, strerror(errno));
    for (int i = 0; i < 32; i++) snprintf(c->mesh + (size_t)2 * i, 3, "%02x", raw[i]);
    if (cl_write_file(c, "mesh-key", c->mesh, 64))
        return ag_err_set(err, AG_EIO, "cannot write %s", path);
    return 0;
}

int cl_secrets(struct cl_cluster *c, struct ag_err *err)
{
    int rc = ag_cli_jwt_secret(c->dir, true, c->jwt, err);
    return rc ? rc : mesh_key(c, err);
}

/* ---- configurations ---- */

void cl_pg_uri(const struct cl_cluster *c, char *out, size_t n)
{
    fmt(out, n, "postgresql:///postgres?host=%s/pg&port=%d&user=postgres", c->dir, CL_PG_PORT);
}

void cl_bus_uri(const struct cl_cluster *c, char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == CL_NATS && len < n)
            len += (size_t)snprintf(out + len, n - len, "%s127.0.0.1:%u", len ? "," : "nats://",
                                    c->m[i].port);
    if (len < n) snprintf(out + len, n - len, "?replicas=%d", CL_NATS_NODES);
}

static int nats_conf(const struct cl_cluster *c, const struct cl_member *m)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_printf(
        &b,
        "# written by `agora cluster up` at every start (DIR/cluster.json has the ports)\n"
        "server_name: %s\nlisten: 127.0.0.1:%u\nhttp: 127.0.0.1:%u\n"
        "jetstream {\n  store_dir: \"%s/nats/%s\"\n}\n"
        "cluster {\n  name: agora\n  listen: 127.0.0.1:%u\n  routes: [\n",
        m->name, m->port, m->mport, c->dir, m->name, m->cport);
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == CL_NATS && &c->m[i] != m)
            ag_buf_printf(&b, "    nats-route://127.0.0.1:%u\n", c->m[i].cport);
    int rc = ag_buf_puts(&b, "  ]\n}\n");
    char rel[128];
    fmt(rel, sizeof rel, "nats/%s.conf", m->name);
    size_t len;
    char *text = rc ? NULL : ag_buf_steal(&b, &len);
    rc = text ? cl_write_file(c, rel, text, len) : AG_ENOMEM;
    ag_free(text);
    ag_buf_free(&b);
    return rc;
}

int cl_write_configs(const struct cl_cluster *c, struct ag_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < c->n && !rc; i++)
        if (c->m[i].role == CL_NATS) rc = nats_conf(c, &c->m[i]);
    char *yaml = rc ? NULL : cl_gateway_yaml(c);
    if (!rc) rc = yaml ? cl_write_file(c, "gateway.yaml", yaml, strlen(yaml)) : AG_ENOMEM;
    ag_free(yaml);
    return rc ? ag_err_set(err, rc, "cannot write the configurations in %s", c->dir) : 0;
}

/* ---- PostgreSQL ---- */

static bool has_initdb(const char *dir)
{
    char p[PATH_MAX];
    return fmt(p, sizeof p, "%s/initdb", dir) && access(p, X_OK) == 0;
}

/* PGBIN, else the newest /usr/lib/postgresql/N/bin, else where `initdb` on PATH points */
static int find_pgbin(struct cl_cluster *c, struct ag_err *err)
{
    const char *env = getenv("PGBIN");
    if (env && *env)
        return fmt(c->pgbin, sizeof c->pgbin, "%s", env) && has_initdb(c->pgbin)
                   ? 0
                   : ag_err_set(err, AG_ENOTFOUND, "PGBIN=%s has no initdb", env);
    int best = 0;
    DIR *d = opendir("/usr/lib/postgresql");
    for (struct dirent *e; d && (e = readdir(d));) {
        char bin[PATH_MAX];
        int v = (int)strtol(e->d_name, NULL, 10);
        if (v > best && fmt(bin, sizeof bin, "/usr/lib/postgresql/%s/bin", e->d_name) &&
            has_initdb(bin))
            best = v, fmt(c->pgbin, sizeof c->pgbin, "%s", bin);
    }
    if (d) closedir(d);
    if (best) return 0;
    const char *path = getenv("PATH");
    char buf[4096];
    fmt(buf, sizeof buf, "%s", path ? path : "/usr/bin:/bin");
    for (char *save = NULL, *p = strtok_r(buf, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
        char exe[PATH_MAX], real[PATH_MAX];
        if (fmt(exe, sizeof exe, "%s/initdb", p) && realpath(exe, real)) {
            *strrchr(real, '/') = 0;
            if (fmt(c->pgbin, sizeof c->pgbin, "%s", real)) return 0;
        }
    }
    return ag_err_set(err, AG_ENOTFOUND,
                      "PostgreSQL is not installed (no initdb; set PGBIN to its bin directory)");
}

/* root: PostgreSQL as `postgres`, which must reach DIR/pg through DIR */
static int pg_user(struct cl_cluster *c, struct ag_err *err)
{
    char pg[PATH_MAX];
    cl_path(c, "pg", pg, sizeof pg);
    if (mkdir(pg, 0700) != 0 && errno != EEXIST)
        return ag_err_set(err, AG_EIO, "%s: %s", pg, strerror(errno));
    if (geteuid() != 0) return 0;
    struct passwd *pw = getpwnam("postgres");
    if (!pw)
        return ag_err_set(err, AG_ENOTFOUND,
                          "running as root, PostgreSQL needs a 'postgres' user to run as (it "
                          "refuses root): create one, or run agora cluster as another user");
    c->pg_other = true;
    c->pg_uid = pw->pw_uid;
    c->pg_gid = pw->pw_gid;
    if (chown(c->dir, 0, pw->pw_gid) != 0 || chmod(c->dir, 0710) != 0 ||
        chown(pg, pw->pw_uid, pw->pw_gid) != 0)
        return ag_err_set(err, AG_EIO, "%s: cannot give PostgreSQL its directory: %s", pg,
                          strerror(errno));
    return 0;
}

static int pg_conf(const struct cl_cluster *c, struct ag_err *err)
{
    char path[PATH_MAX];
    cl_path(c, "pg/data/postgresql.conf", path, sizeof path);
    FILE *f = fopen(path, "a");
    if (!f) return ag_err_set(err, AG_EIO, "%s: %s", path, strerror(errno));
    size_t ninst = 0;
    for (size_t i = 0; i < c->n; i++) ninst += c->m[i].role == CL_INSTANCE;
    fprintf(f,
            "\n# agora cluster: a Unix socket in DIR/pg only, no TCP\n"
            "listen_addresses = ''\nunix_socket_directories = '%s/pg'\nport = %d\n"
            "unix_socket_permissions = 0700\nmax_connections = %zu\n",
            c->dir, CL_PG_PORT, 60 * ninst + 40);
    return fclose(f) == 0 ? 0 : ag_err_set(err, AG_EIO, "%s: %s", path, strerror(errno));
}

int cl_pg_prepare(struct cl_cluster *c, struct ag_err *err)
{
    char data[PATH_MAX], ver[PATH_MAX], initdb[PATH_MAX], sock[PATH_MAX];
    int rc = find_pgbin(c, err);
    if (!rc) rc = pg_user(c, err);
    if (rc) return rc;
    if (!fmt(sock, sizeof sock, "%s/pg/.s.PGSQL.%d", c->dir, CL_PG_PORT) || strlen(sock) >= 108)
        return ag_err_set(err, AG_EINVAL,
                          "%s: too long a path for PostgreSQL's Unix socket (%s): use a shorter "
                          "directory",
                          c->dir, sock);
    cl_path(c, "pg/data", data, sizeof data);
    cl_path(c, "pg/data/PG_VERSION", ver, sizeof ver);
    if (access(ver, F_OK) == 0) return 0;
    fmt(initdb, sizeof initdb, "%s/initdb", c->pgbin);
    char *argv[] = {initdb,  "-D", data,   "-U",          "postgres", "-A",
                    "trust", "-E", "UTF8", "--no-locale", NULL};
    AG_INFO("cluster.initdb", AG_LS("dir", data));
    if (cl_run(c, argv, "initdb.log", true) != 0)
        return ag_err_set(err, AG_EIO, "initdb failed: see %s/logs/initdb.log", c->dir);
    return pg_conf(c, err);
}
