/* agora serve: some of the platform's contexts in one process, as one of several
 * instances over a shared PostgreSQL store and read models and a NATS bus, on a
 * network address behind `agora gateway` (issue 14). The work the instances share
 * is split by leases (ag_platform_config.shared); the contexts not named here are
 * served by other instances. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/http.h"
#include "agora/platform.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora serve <context>... --store URI --readmodels URI [--bus URI]\n"
    "                   [--listen HOST:PORT] [--data DIR] [--saga-mode MODE] [--workers N]\n"
    "                   [--seed] [--advertise HOST:PORT]\n"
    "                   [--tls-cert FILE --tls-key FILE --tls-ca FILE]\n"
    "                   [--insecure-plaintext]\n"
    "\n"
    "Serve some contexts of the platform as one of several instances (agora run is the\n"
    "one-process shape). Contexts: customers, catalog, ordering, inventory, payments,\n"
    "shipping, sagas, or all. Any number of instances of a context may run at once over\n"
    "the same store, read models and bus: commands are checked by expected versions,\n"
    "each projection and the outbox relay run in one instance at a time under a lease\n"
    "(a PostgreSQL advisory lock on the read models' database: when its holder dies,\n"
    "another instance takes it over within about a second), the orchestrated sagas\n"
    "belong to the instance holding the saga starter's lease and are resumed by the\n"
    "next one, and the choreography's bus consumers are shared JetStream consumers.\n"
    "Put `agora gateway` in front (deploy/serve/gateway.yaml): the instances believe its\n"
    "x-user-id / x-user-roles headers only with its signature (x-user-sig, HMAC-SHA256\n"
    "under AGORA_MESH_KEY, at most 60 s old): set env AGORA_MESH_KEY, 32+ characters,\n"
    "to the same secret in every instance and in `agora gateway` (required here).\n"
    "\n"
    "  --store URI         postgresql://USER@HOST/DB?schema=S (env AGORA_STORE)\n"
    "  --readmodels URI    postgresql://USER@HOST/DB (env AGORA_READMODELS)\n"
    "  --bus URI           nats://HOST:PORT[,...] (env AGORA_BUS); needed for\n"
    "                      --saga-mode choreography and for publishing integration events\n"
    "  --listen HOST:PORT  where to serve HTTP (default 127.0.0.1:8081, env AGORA_LISTEN)\n"
    "  --data DIR          the personal data's keys (DIR/keys), shared by the instances\n"
    "                      of one machine (default ./data, env AGORA_DATA)\n"
    "  --saga-mode MODE    orchestration (default) or choreography (env AGORA_SAGA_MODE)\n"
    "  --workers N         HTTP worker loops (default: number of cores)\n"
    "  --advertise HOST:PORT  the address the others reach this instance at, as it\n"
    "                      registers in the registry (rm_registry.members in the read\n"
    "                      models' database; default the listen address)\n"
    "  --seed              the demo catalog and customers when the store is empty (start\n"
    "                      one instance with it, alone, before the others)\n"
    "  --tls-cert FILE     mTLS: serve HTTPS with this member certificate (agora certs\n"
    "                      issue; env AGORA_TLS_CERT) and\n"
    "  --tls-key FILE      its key (env AGORA_TLS_KEY), and require every client (the\n"
    "  --tls-ca FILE       gateway, other instances) to present a certificate from this\n"
    "                      CA (the cluster's ca.pem; env AGORA_TLS_CA): a handshake\n"
    "                      without one is refused. The three go together. The files are\n"
    "                      re-read at SIGHUP and when they change on disk (rotation:\n"
    "                      open connections keep the old certificate)\n"
    "  --insecure-plaintext  serve plain HTTP on a non-loopback address. Without TLS\n"
    "                      material agora serve refuses such an address (anyone on the\n"
    "                      network could call it); loopback stays plain HTTP\n"
    "\n"
    "file: stores, sqlite: read models and the local: bus belong to one process and\n"
    "are refused here: use agora run for them.\n";

struct serve_opts {
    const char *listen, *store, *readmodels, *bus, *data, *saga_mode, *advertise;
    const char *tls_cert, *tls_key, *tls_ca; /* mTLS material, or NULL */
    unsigned contexts;
    int workers;
    bool seed;
    bool insecure_plaintext; /* plain HTTP on a non-loopback address, on purpose */
};

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

const char *ag_cli_mesh_key(void)
{
    return env_or("AGORA_MESH_KEY", NULL);
}

/* The instances listen on TCP: identity headers count only signed with the key. */
static int check_mesh_key(const char **key)
{
    *key = ag_cli_mesh_key();
    if (!*key)
        return ag_cli_usage_error(
            "serve: set AGORA_MESH_KEY (a secret of %d+ characters, e.g. `openssl rand -hex "
            "32`) here and the same key in `agora gateway`: the instances believe identity "
            "headers only when the gateway signed them with it",
            AG_MESH_KEY_MIN);
    if (strlen(*key) < AG_MESH_KEY_MIN)
        return ag_cli_usage_error("serve: AGORA_MESH_KEY is %zu characters: it needs %d at least",
                                  strlen(*key), AG_MESH_KEY_MIN);
    return 0;
}

static int context_arg(const char *a, unsigned *mask)
{
    unsigned bit = ag_platform_context_bit(a);
    if (strcmp(a, "all") == 0) {
        for (const char *const *n = ag_platform_context_names(); *n; n++)
            *mask |= ag_platform_context_bit(*n);
        return 0;
    }
    if (bit) {
        *mask |= bit;
        return 0;
    }
    return ag_cli_usage_error("serve: unknown context '%s': one of customers, catalog, ordering, "
                              "inventory, payments, shipping, sagas or all",
                              a);
}

static int parse(int argc, char **argv, struct serve_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **val = strcmp(a, "--listen") == 0       ? &o->listen
                           : strcmp(a, "--store") == 0      ? &o->store
                           : strcmp(a, "--readmodels") == 0 ? &o->readmodels
                           : strcmp(a, "--bus") == 0        ? &o->bus
                           : strcmp(a, "--data") == 0       ? &o->data
                           : strcmp(a, "--saga-mode") == 0  ? &o->saga_mode
                           : strcmp(a, "--advertise") == 0  ? &o->advertise
                           : strcmp(a, "--tls-cert") == 0   ? &o->tls_cert
                           : strcmp(a, "--tls-key") == 0    ? &o->tls_key
                           : strcmp(a, "--tls-ca") == 0     ? &o->tls_ca
                                                            : NULL;
        if (val && i + 1 < argc) {
            *val = argv[++i];
        } else if (strcmp(a, "--workers") == 0 && i + 1 < argc) {
            o->workers = (int)strtol(argv[++i], NULL, 10);
        } else if (strcmp(a, "--seed") == 0) {
            o->seed = true;
        } else if (strcmp(a, "--insecure-plaintext") == 0) {
            o->insecure_plaintext = true;
        } else if (a[0] != '-') {
            if (context_arg(a, &o->contexts)) return 2;
        } else {
            return ag_cli_usage_error(
                "serve: unknown or incomplete option '%s' (see 'agora serve --help')", a);
        }
    }
    return 0;
}

/* The shared adapters only: one process's log, files or in-store bus would make
 * a second instance see other data, or double its work. */
static int check_shared(const struct serve_opts *o)
{
    if (!o->contexts)
        return ag_cli_usage_error("serve: name the contexts to serve, e.g. 'agora serve "
                                  "customers catalog ...' or 'agora serve all'");
    if (!o->store || strncmp(o->store, "postgresql://", 13) != 0)
        return ag_cli_usage_error(
            "serve: --store (AGORA_STORE) must be postgresql://...: the instances share the "
            "event store, and %s is one process's (use 'agora run' for it)",
            o->store ? o->store : "the default file: log");
    if (!o->readmodels || strncmp(o->readmodels, "postgresql://", 13) != 0)
        return ag_cli_usage_error(
            "serve: --readmodels (AGORA_READMODELS) must be postgresql://...: the instances "
            "share the read models and their leases, and %s is one process's files (use "
            "'agora run' for them)",
            o->readmodels ? o->readmodels : "the default sqlite:");
    if (o->bus && strncmp(o->bus, "nats://", 7) != 0)
        return ag_cli_usage_error("serve: --bus (AGORA_BUS) must be nats://...: '%s' is one "
                                  "process's bus (use 'agora run' for it)",
                                  o->bus);
    bool chor = o->saga_mode && strcmp(o->saga_mode, "choreography") == 0;
    if (o->saga_mode && !chor && strcmp(o->saga_mode, "orchestration") != 0)
        return ag_cli_usage_error(
            "serve: --saga-mode takes orchestration or choreography, not '%s'", o->saga_mode);
    if (chor && !o->bus)
        return ag_cli_usage_error(
            "serve: --saga-mode choreography needs --bus nats://...: the contexts react to "
            "each other's events there");
    if (o->workers < 0 || o->workers > 256)
        return ag_cli_usage_error("serve: --workers takes 1..256");
    return 0;
}

/* mTLS material complete or absent; plain HTTP off loopback only when asked. */
static int check_tls(const struct serve_opts *o, const char *host)
{
    int n = !!o->tls_cert + !!o->tls_key + !!o->tls_ca;
    if (n && n < 3)
        return ag_cli_usage_error("serve: --tls-cert, --tls-key and --tls-ca go together (env "
                                  "AGORA_TLS_CERT, AGORA_TLS_KEY, AGORA_TLS_CA): the instance "
                                  "serves with its certificate and requires the gateway's, "
                                  "from the cluster CA (see 'agora certs --help')");
    if (!n && !o->insecure_plaintext && !ag_cli_loopback(host))
        return ag_cli_usage_error(
            "serve: %s is not loopback and there is no TLS material: give --tls-cert, --tls-key "
            "and --tls-ca (mTLS with the cluster CA, 'agora certs'), or --insecure-plaintext to "
            "serve plain HTTP there on purpose",
            host);
    return 0;
}

/* The server side (client certificates required) and the client side (the
 * mesh's calls to other instances) from the same member files. */
static int open_tls(const struct serve_opts *o, struct ag_tls_server **srv,
                    struct ag_tls_client **cli, struct ag_err *err)
{
    if (!o->tls_cert) return 0;
    struct ag_tls_cert pair = {o->tls_cert, o->tls_key};
    struct ag_tls_server_config sc = {&pair, 1, o->tls_ca};
    int rc = ag_tls_server_new(&sc, srv, err);
    struct ag_tls_client_config cc = {
        .ca_file = o->tls_ca, .cert_file = o->tls_cert, .key_file = o->tls_key};
    if (!rc) rc = ag_tls_client_new(&cc, cli, err);
    return rc;
}

static void contexts_text(unsigned mask, char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (const char *const *c = ag_platform_context_names(); *c; c++)
        if ((mask & ag_platform_context_bit(*c)) && len < n)
            len += (size_t)snprintf(out + len, n - len, "%s%s", len ? " " : "", *c);
}

static int serve(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    struct serve_opts o = {.listen = env_or("AGORA_LISTEN", "127.0.0.1:8081"),
                           .store = env_or("AGORA_STORE", NULL),
                           .readmodels = env_or("AGORA_READMODELS", NULL),
                           .bus = env_or("AGORA_BUS", NULL),
                           .data = env_or("AGORA_DATA", "./data"),
                           .saga_mode = env_or("AGORA_SAGA_MODE", NULL),
                           .tls_cert = env_or("AGORA_TLS_CERT", NULL),
                           .tls_key = env_or("AGORA_TLS_KEY", NULL),
                           .tls_ca = env_or("AGORA_TLS_CA", NULL)};
    const char *mesh_key = NULL;
    int prc = parse(argc, argv, &o);
    if (!prc) prc = check_shared(&o);
    if (!prc) prc = check_mesh_key(&mesh_key);
    if (prc) return prc;
    char host[64];
    uint16_t port = 0;
    struct ag_err err;
    ag_err_clear(&err);
    if (ag_hostport_parse(o.listen, AG_HOSTPORT_PORT0, host, sizeof host, &port, &err))
        return ag_cli_usage_error("serve: --listen takes HOST:PORT, e.g. 127.0.0.1:8081: %s",
                                  err.msg);
    char ahost[64];
    uint16_t aport = 0;
    if (o.advertise && ag_hostport_parse(o.advertise, 0, ahost, sizeof ahost, &aport, &err))
        return ag_cli_usage_error("serve: --advertise takes HOST:PORT (a numeric address): %s",
                                  err.msg);
    if (check_tls(&o, host)) return 2;
    struct ag_tls_server *tls = NULL;
    struct ag_tls_client *mesh_tls = NULL;
    if (open_tls(&o, &tls, &mesh_tls, &err)) {
        fprintf(stderr, "agora serve: %s\n", err.msg);
        ag_tls_server_free(tls);
        return 1;
    }
    struct ag_platform_config cfg = {.data_dir = o.data,
                                     .store_uri = o.store,
                                     .readmodels_uri = o.readmodels,
                                     .host = host,
                                     .port = port,
                                     .workers = o.workers,
                                     .seed = o.seed,
                                     .behind_gateway = true,
                                     .bus_uri = o.bus,
                                     .choreography =
                                         o.saga_mode && strcmp(o.saga_mode, "choreography") == 0,
                                     .contexts = o.contexts,
                                     .shared = true,
                                     .mesh_key = mesh_key,
                                     /* every instance is in the registry (discovery) */
                                     .advertise = o.advertise ? o.advertise : "",
                                     .tls = tls,
                                     .mesh_tls = mesh_tls};
    long rw = getenv("AGORA_DB_WAIT") ? strtol(getenv("AGORA_DB_WAIT"), NULL, 10) : 0;
    if (rw > 0 && rw <= 86400) cfg.readmodels_wait_s = (unsigned)rw;
    long st = getenv("AGORA_SAGA_THREADS") ? strtol(getenv("AGORA_SAGA_THREADS"), NULL, 10) : 0;
    if (st > 0 && st <= 1024) cfg.saga_threads = (unsigned)st;
    setenv("UV_THREADPOOL_SIZE", "64", 0); /* before libuv starts its pool */
    umask(077);
    if (!tls && !ag_cli_loopback(host))
        fprintf(stderr,
                "agora serve: warning: %s is not loopback and --insecure-plaintext serves "
                "plain HTTP there: keep it on a private network\n",
                host);
    struct ag_platform *p = NULL;
    int rc = ag_http_listen_check(host, port, &err);
    if (!rc && mkdir(o.data, 0700) != 0 && errno != EEXIST)
        rc = ag_err_set(&err, AG_EIO, "%s: %s", o.data, strerror(errno));
    if (!rc) rc = ag_platform_start(&cfg, &p, &err);
    if (rc) {
        fprintf(stderr, "agora serve: %s\n", ag_err_msg(&err, rc));
        ag_tls_client_free(mesh_tls);
        ag_tls_server_free(tls);
        return 1;
    }
    char names[128];
    contexts_text(o.contexts, names, sizeof names);
    fprintf(stderr, "agora: serving %s on %s://%s:%u (instance pid %ld%s); Ctrl-C to stop\n", names,
            tls ? "https" : "http", host, ag_platform_port(p), (long)getpid(),
            tls ? ", mTLS: client certificates required, SIGHUP re-reads them" : "");
    ag_platform_run_until_signal(p);
    ag_platform_stop(p);
    ag_tls_client_free(mesh_tls);
    ag_tls_server_free(tls);
    fprintf(stderr, "agora: stopped\n");
    return 0;
}

const struct ag_cli_cmd ag_cli_cmd_serve = {
    "serve", "serve some contexts as one of several instances (shared PostgreSQL + NATS)", serve};
