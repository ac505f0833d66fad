/* `agora cluster` (cmd_cluster.c, cluster_conf.c, cluster_proc.c): the distributed
 * shape on one machine, supervised. A cluster is a directory:
 *
 *   DIR/cluster.json     the layout, made once: the members, their ports (chosen free
 *                        at the first start and kept, so restarts reuse them)
 *   DIR/jwt-secret       the gateway's HS256 key (0600; `agora token --data DIR`)
 *   DIR/mesh-key         AGORA_MESH_KEY of the instances and the gateway (0600)
 *   DIR/pg/              PostgreSQL: data/ (initdb at the first start), its Unix
 *                        socket (no TCP)
 *   DIR/nats/            nats-N.conf and nats-N/ (JetStream), a 3-node cluster
 *   DIR/data/            the instances' --data (the personal data's keys)
 *   DIR/certs/           mTLS (cluster_tls.c): the cluster CA (ca.pem, ca.key), a
 *                        certificate per member (NAME.pem + NAME.key, 0600): each
 *                        instance (serves and calls), the gateway and the
 *                        supervisor (clients); none with --insecure-plaintext
 *   DIR/gateway.yaml     the gateway's configuration (written at every start)
 *   DIR/logs/            one log per member (stdout and stderr, appended)
 *   DIR/status.json      the members as the supervisor sees them, each second
 *   DIR/supervisor.lock  held (flock) by the running supervisor; holds its pid
 *
 * Members are kept in start order: PostgreSQL, the NATS nodes, the instances, the
 * gateway; they stop in the reverse order of their kinds. */
#ifndef AGORA_CLI_CLUSTER_H
#define AGORA_CLI_CLUSTER_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agora/base.h"

#define CL_MAX_MEMBERS 64
#define CL_MAX_GROUPS  16
#define CL_NATS_NODES  3
#define CL_PG_PORT     5432 /* names the socket only: PostgreSQL listens on no TCP port */

enum cl_role { CL_PG, CL_NATS, CL_INSTANCE, CL_GATEWAY };
enum cl_state { CL_DOWN, CL_UP, CL_STOPPED };

struct cl_member {
    /* ---- the layout (cluster.json) ---- */
    char name[96];     /* "postgresql", "nats-2", "ordering-1", "gateway" */
    enum cl_role role; /* what it is (the stop order) */
    unsigned contexts; /* instance: ag_platform_context_bit()s it serves */
    char group[80];    /* instance: its group in the --contexts spec ("customers+catalog") */
    uint16_t port;     /* instance, gateway: HTTP; nats: client port */
    uint16_t cport;    /* nats: cluster (route) port */
    uint16_t mport;    /* nats: monitoring port (/healthz) */
    bool seed;         /* instance: started with --seed (the first one) */
    uint64_t deps;     /* members (bits by index) that must have been ready once first */
    unsigned gi;       /* instance: its group (c->g) */
    /* ---- the run (status.json) ---- */
    pid_t pid;              /* 0 when not running */
    enum cl_state state;    /* down (waiting or backing off), up, stopped (at the end) */
    bool ready;             /* the last health check passed */
    bool ever_ready;        /* ready at least once since the supervisor started */
    unsigned restarts;      /* starts after the first one */
    unsigned failures;      /* consecutive exits (the backoff's exponent) */
    uint64_t started_ms;    /* when the current process started (0: none) */
    uint64_t ready_since;   /* when it last became ready (0: not ready) */
    uint64_t next_start_ms; /* a down member starts at this time (backoff) */
    uint64_t backoff_ms;    /* the delay chosen at its last exit */
    char last_exit[48];     /* "exit 1", "signal 9" or "" */
    /* ---- autoscaling (cluster_scale.c) ---- */
    bool parked;       /* an instance slot not in use (the group is at fewer than max) */
    bool draining;     /* out of the gateway's endpoints, stopped at drain_ms */
    uint64_t drain_ms; /* when a draining instance gets SIGTERM */
    double inflight;   /* instance: requests in flight at the last scrape; -1 unknown */
};

/* A group of the --contexts spec: its instances scale between min and max. */
struct cl_group {
    char name[80];       /* "customers+catalog" */
    unsigned min, max;   /* instances; min == max: a fixed count */
    double load;         /* in-flight requests on its instances, smoothed (EWMA 1/2 per s) */
    uint64_t changed_ms; /* its last scale decision (the cooldown counts from it) */
    unsigned ups, downs; /* decisions taken since the supervisor started */
    double util;         /* load / (active instances * target), at the last scrape */
    char last[200];      /* the last decision, for status.json */
};

struct cl_cluster {
    char dir[PATH_MAX - 64]; /* absolute */
    char listen[96];         /* the gateway's HOST:PORT */
    char spec[512];          /* the --contexts spec, as recorded */
    unsigned instances;      /* --instances, as recorded */
    struct cl_member m[CL_MAX_MEMBERS];
    size_t n; /* members in m */
    struct cl_group g[CL_MAX_GROUPS];
    size_t ng;                 /* groups in g */
    double target;             /* autoscaling: in-flight requests per instance wanted */
    uint64_t cooldown_ms;      /* autoscaling: at least this long between a group's decisions */
    bool gw_reload;            /* gateway.yaml changed while the gateway was not ready */
    bool tls;                  /* mTLS between the members (not --insecure-plaintext) */
    void *tls_ctx;             /* the supervisor's client SSL_CTX (cluster_tls.c), or NULL */
    uint64_t certs_checked_ms; /* the certificates' last expiry check */
    char jwt[65], mesh[65];    /* the secrets */
    char agora[PATH_MAX];      /* this binary */
    char pgbin[PATH_MAX - 32]; /* PostgreSQL's bin directory */
    bool pg_other;             /* root: PostgreSQL runs as the postgres user ... */
    uid_t pg_uid;              /* ... this one */
    gid_t pg_gid;
    uint64_t started_ms; /* the supervisor's start */
    const char *state;   /* "starting", "running", "stopping", "stopped" */
};

/* ---- cluster_conf.c: the directory and its files ---- */

/* Parse a --contexts SPEC with `instances` per group into c->m (after the fixed
 * members); 0, or AG_EINVAL naming the bad part. */
int cl_layout(struct cl_cluster *c, const char *spec, unsigned instances, struct ag_err *err);
/* Pick free loopback ports for every member (at the first start). */
int cl_pick_ports(struct cl_cluster *c, struct ag_err *err);
/* Write / read DIR/cluster.json. Read errors name the line (syntax) or the field. */
int cl_save(const struct cl_cluster *c, struct ag_err *err);
int cl_load(struct cl_cluster *c, struct ag_err *err);
/* Every member's ports and --listen still free (a restart must reuse them). */
int cl_ports_free(const struct cl_cluster *c, struct ag_err *err);
/* The secrets (made when missing), the NATS configurations, the gateway's. */
int cl_secrets(struct cl_cluster *c, struct ag_err *err);
int cl_write_configs(const struct cl_cluster *c, struct ag_err *err);
/* The gateway configuration for this cluster (owned, ag_free). */
char *cl_gateway_yaml(const struct cl_cluster *c);
/* PostgreSQL's binaries, the user it runs as, and initdb when DIR/pg/data is missing. */
int cl_pg_prepare(struct cl_cluster *c, struct ag_err *err);
/* "postgresql:///postgres?host=DIR/pg&port=5432&user=postgres" into out. */
void cl_pg_uri(const struct cl_cluster *c, char *out, size_t n);
/* "nats://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3?replicas=3" into out. */
void cl_bus_uri(const struct cl_cluster *c, char *out, size_t n);
/* DIR/<rel> into out; false when it does not fit. */
bool cl_path(const struct cl_cluster *c, const char *rel, char *out, size_t n);
/* Write `text` to DIR/<rel> (0600) through a temporary file and a rename. */
int cl_write_file(const struct cl_cluster *c, const char *rel, const char *text, size_t len);
/* The role's name in status.json. */
const char *cl_role_name(enum cl_role r);

/* ---- cluster_scale.c: autoscaling ---- */

/* Once a second: every group's load from its instances' /metrics (in status.json),
 * and for an autoscaled group a decision (start a parked instance, or drain one)
 * when it is due. */
void cl_autoscale(struct cl_cluster *c, uint64_t now_ms);
/* Draining instances whose time has come get SIGTERM. */
void cl_drain_due(struct cl_cluster *c, uint64_t now_ms);
/* Rewrite DIR/gateway.yaml from the endpoints in rotation and SIGHUP the gateway. */
void cl_gateway_reload(struct cl_cluster *c);

/* ---- cluster_stale.c: a previous supervisor's leftovers ---- */

/* With DIR locked: stop the members of DIR a dead supervisor left running (found in
 * /proc by their command lines; SIGTERM / PostgreSQL SIGINT, SIGKILL after 15 s) and
 * remove a postmaster.pid whose pid now belongs to another program. */
void cl_stale_reap(const struct cl_cluster *c);

/* ---- cluster_tls.c: the certificates (mTLS) ---- */

/* The CA in DIR/certs (made at the first start) and every member's certificate:
 * issued when missing, not valid, or expiring within CL_CERT_RENEW_DAYS (logged
 * cluster.cert_issued with the reason); the supervisor's client context. */
#define CL_CERT_RENEW_DAYS 10
int cl_certs_prepare(struct cl_cluster *c, struct ag_err *err);
/* While running: the same check every CL_CERT_CHECK_MS; a renewed certificate is
 * picked up by its process from the file (no restart). */
#define CL_CERT_CHECK_MS 5000u
void cl_certs_check(struct cl_cluster *c, uint64_t now_ms);
/* The supervisor's client context's end. */
void cl_certs_close(struct cl_cluster *c);
/* DIR/certs/<stem of member m (NULL: the CA)>.<ext> ("pem", "key") into out. */
bool cl_cert_path(const struct cl_cluster *c, const struct cl_member *m, const char *ext, char *out,
                  size_t n);
/* GET path from instance m over mTLS as cl_http_get does over plain HTTP. */
int cl_tls_get(const struct cl_cluster *c, const struct cl_member *m, const char *path,
               const char *headers, char *out, size_t cap);

/* ---- cluster_proc.c: processes and health ---- */

/* Start member i now (fork + exec, its output appended to DIR/logs/<name>.log). */
int cl_spawn(struct cl_cluster *c, size_t i, uint64_t now_ms);
/* Whether member i answers its health check (a blocking check of <= ~0.5 s). */
bool cl_healthy(const struct cl_cluster *c, size_t i);
/* Run a program (argv) to its end with its output to DIR/logs/<log>; its exit status
 * (0 success), or -1 when it could not start. As_pg: as PostgreSQL's user. */
int cl_run(const struct cl_cluster *c, char *const argv[], const char *log, bool as_pg);
/* status.json's text for the cluster now (owned, ag_free). */
char *cl_status_json(const struct cl_cluster *c, uint64_t now_ms);
/* GET path from 127.0.0.1:port with `headers` ("Name: value\r\n"..., or NULL): the
 * status (0: no answer) and up to cap - 1 bytes of the answer (head and body) in
 * out, NUL-terminated. Blocking, short timeouts (see cluster_proc.c). */
int cl_http_get(const char *host, uint16_t port, const char *path, const char *headers, char *out,
                size_t cap);
/* GET path from instance or gateway m as cl_http_get, over mTLS to an instance of a
 * cluster with TLS. */
int cl_member_get(const struct cl_cluster *c, const struct cl_member *m, const char *path,
                  const char *headers, char *out, size_t cap);
/* The request's exchange on a connected socket (plain), as cl_http_get. */
int cl_http_exchange(int fd, void *ssl, const char *host, const char *path, const char *headers,
                     char *out, size_t cap);
/* A connected socket to host:port (numeric) within 250 ms, or -1. */
int cl_dial(const char *host, uint16_t port);
/* Milliseconds since the epoch. */
uint64_t cl_now_ms(void);

#endif
