/* agora run: every context of the platform in one process, over the event store
 * --store names (the embedded log in the data directory by default), behind the
 * gateway. */
#include <errno.h>
#include <ftw.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/gateway.h"
#include "agora/http.h"
#include "agora/platform.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora run [--data DIR] [--store URI] [--readmodels URI] [--listen HOST:PORT]\n"
    "                 [--workers N] [--no-seed] [--no-gateway] [--idempotency-ttl DUR]\n"
    "                 [--saga-retention DUR] [--bus URI] [--tls-cert FILE --tls-key FILE]...\n"
    "                 [--http-redirect HOST:PORT] [--saga-mode MODE]\n"
    "                 [--index-memory BYTES] [--cache-memory BYTES] [--cache MODE]\n"
    "                 [--max-sagas-in-flight N] [--admission-target DUR|off]\n"
    "                 [--admission-queue DUR|off]\n"
    "\n"
    "Start the commerce platform in one process: customers, catalog, ordering,\n"
    "inventory, payments and shipping over the event store (--store), their read\n"
    "models, the PlaceOrder saga and the HTTP API, behind the API gateway (the only\n"
    "TCP listener; the services sit on DIR/services.sock). The catalog is public;\n"
    "everything else needs a token: agora token --data DIR --sub ID --role customer.\n"
    "A customer sees and acts on its own customer, account, orders only; restock,\n"
    "dispatch, tiers, /admin/* and /metrics need --role admin. Ctrl-C stops it\n"
    "gracefully; SIGHUP reloads the gateway's configuration.\n"
    "\n"
    "  --data DIR          read models, secrets, the services' socket and, by default,\n"
    "                      the event log (default ./data, env AGORA_DATA)\n"
    "  --store URI         the event store (default file:DIR, env AGORA_STORE): file:PATH\n"
    "                      or a bare PATH is the embedded log in directory PATH;\n"
    "                      postgresql://USER@HOST/DB?schema=S is the PostgreSQL store\n"
    "  --readmodels URI    where the read models live (default: SQLite files in\n"
    "                      DIR/readmodels, env AGORA_READMODELS): sqlite:PATH, or\n"
    "                      postgresql://USER@HOST/DB (a libpq URI; one schema rm_<name>\n"
    "                      per read model). A database that does not answer at start is\n"
    "                      retried with backoff for AGORA_DB_WAIT seconds (60; the store's\n"
    "                      too when --store is postgresql://)\n"
    "  --listen HOST:PORT  where to serve (default 127.0.0.1:8080, env AGORA_LISTEN)\n"
    "  --workers N         HTTP worker loops (default: number of cores)\n"
    "  --bus URI           publish the integration events (docs/events.md) to a message\n"
    "                      bus through the outbox relay (env AGORA_BUS): local: (in the\n"
    "                      event store) or nats://HOST:PORT[,HOST:PORT...][?replicas=N]\n"
    "                      (JetStream; a cluster with N-replica streams); default none\n"
    "  --saga-mode MODE    orchestration (default: the saga engine runs PlaceOrder) or\n"
    "                      choreography (inventory, payments, shipping and ordering\n"
    "                      react to each other's events on the bus; --bus defaults to\n"
    "                      local:), env AGORA_SAGA_MODE\n"
    "  --no-seed           no demo catalog and customers on first start\n"
    "  --no-gateway        serve the services directly on --listen, loopback only, with\n"
    "                      NO authentication (every caller is an admin) and no rate\n"
    "                      limits: for benchmarks and tests of the services alone\n"
    "  --idempotency-ttl DUR  how long an Idempotency-Key record is kept (default 24h,\n"
    "                      env AGORA_IDEMPOTENCY_TTL; e.g. 90m, 3600s, 7d)\n"
    "  --saga-retention DUR   how long an ended saga's stream is kept before a scavenge\n"
    "                      removes it (default 7d, env AGORA_SAGA_RETENTION)\n"
    "  --tls-cert FILE     serve HTTPS at the gateway with this PEM certificate chain\n"
    "                      (env AGORA_TLS_CERT); repeat with --tls-key for more names\n"
    "                      (SNI; the first is the default). TLS 1.2/1.3, HSTS; SIGHUP\n"
    "                      re-reads the files without dropping connections\n"
    "  --tls-key FILE      its PEM private key (env AGORA_TLS_KEY)\n"
    "  --http-redirect HOST:PORT  plain HTTP there answers 308 to the https address\n"
    "  --index-memory BYTES  memory for the log's stream index (default 64M, env\n"
    "                      AGORA_INDEX_MEMORY; K/M/G suffixes): the rest is on disk\n"
    "  --cache-memory BYTES  memory for cached aggregates (default 64M, env\n"
    "                      AGORA_CACHE_MEMORY)\n"
    "  --max-sagas-in-flight N  orders in flight (placed, not yet confirmed or cancelled)\n"
    "                      at most (default 256, env AGORA_MAX_SAGAS_IN_FLIGHT): more\n"
    "                      POST /api/v1/orders are answered 503 with Retry-After: 1\n"
    "  --admission-target DUR  the limit adapts (AIMD, at most N) to keep the p90 of POST\n"
    "                      to confirmed under DUR (default 500ms, env\n"
    "                      AGORA_ADMISSION_TARGET); off: N is a static limit\n"
    "  --admission-queue DUR  over the limit an order waits up to DUR for a slot before\n"
    "                      the 503 (default 1s, env AGORA_ADMISSION_QUEUE; off: at once)\n"
    "  --cache MODE        the read caches (env AGORA_CACHE): local (default: in-process\n"
    "                      LRU caches of catalog and customer reads), off, or\n"
    "                      redis://HOST:PORT[/DB] (the catalog cached in Redis, shared by\n"
    "                      every instance; a Redis outage falls back to the read models).\n"
    "                      AGORA_CACHE_BYTES sizes each in-process cache (16M),\n"
    "                      AGORA_CACHE_TTL bounds an entry's life (60s), AGORA_VIEWS_FLUSH\n"
    "                      how often product views are written to the log (5s)\n"
    "\n"
    "The JWT secret is AGORA_JWT_SECRET when set, else a random one kept in DIR/jwt-secret.\n"
    "AGORA_SAGA_THREADS sets the saga workers (default: number of cores, at least 4).\n"
    "\n"
    "Fault injection for demos: AGORA_FAULT_<STEP>=rate[,latency_ms[,comp_rate]] with\n"
    "STEP one of PLACEORDER, RESERVEINVENTORY, PROCESSPAYMENT, ARRANGESHIPMENT,\n"
    "CONFIRMORDER (e.g. AGORA_FAULT_PROCESSPAYMENT=0.5).\n"
    "\n"
    "Tracing: every request at the gateway, call to a service, saga step and store\n"
    "append is a span, kept in a ring of the newest AGORA_TRACE_BUFFER spans (default\n"
    "32768, about 16 MB; 0 turns spans off) that GET /admin/traces/{traceId} and\n"
    "GET /admin/orders/{id}/trace read. AGORA_OTLP_ENDPOINT=http://HOST:PORT[/PATH]\n"
    "also exports them, batched (512 spans or 1 s), as OTLP/HTTP JSON to\n"
    "PATH/v1/traces from a thread of their own (service.name: OTEL_SERVICE_NAME, default\n"
    "agora); a receiver that is down or slow never slows requests: spans it misses\n"
    "are counted in agora_trace_spans_dropped_total.\n";

/* ---- the data directory: 0700, its files 0600 ---- */

static int loose; /* entries tightened by tighten_one */

static int tighten_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    AG_UNUSED(ftw);
    mode_t want = flag == FTW_D || flag == FTW_DP ? 0700 : 0600;
    if (flag == FTW_SL || (st->st_mode & 0777) == want || S_ISSOCK(st->st_mode)) return 0;
    if ((st->st_mode & 0077) && chmod(path, want) == 0) loose++;
    return 0;
}

/* umask 077 for everything this process creates; an existing data directory with
 * looser permissions (from an older agora, or a copy) is tightened, with a warning. */
static int secure_data_dir(const char *data, struct ag_err *err)
{
    umask(077);
    if (mkdir(data, 0700) != 0 && errno != EEXIST)
        return ag_err_set(err, AG_EIO, "%s: %s", data, strerror(errno));
    loose = 0;
    nftw(data, tighten_one, 16, FTW_PHYS);
    if (loose)
        fprintf(stderr,
                "agora: warning: %d entries under %s were readable by other users; now 0700 "
                "(directories) and 0600 (files)\n",
                loose, data);
    return 0;
}

bool ag_cli_loopback(const char *host)
{
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "localhost");
}

/* DATA/services.sock as an absolute path (the gateway's upstream address), which
 * must fit a Unix socket address (107 bytes). */
static int services_socket(const char *data, char out[1024], struct ag_err *err)
{
    char *abs = realpath(data, NULL);
    if (!abs) return ag_err_set(err, AG_EIO, "%s: %s", data, strerror(errno));
    int n = snprintf(out, 1024, "%s/services.sock", abs);
    free(abs);
    if (n > 107)
        return ag_err_set(err, AG_EINVAL,
                          "the services' socket %s is longer than a Unix socket path may be (107 "
                          "bytes): use a shorter --data",
                          out);
    return 0;
}

static int serve_gateway(struct ag_platform *p, const char *listen, const char *secret, int workers,
                         const char *data, const struct ag_cli_tls *tls)
{
    char upstream[1100];
    snprintf(upstream, sizeof upstream, "unix:%s", ag_platform_socket(p));
    char *yaml = ag_cli_run_gateway_yaml(listen, secret, upstream);
    /* one registry: /metrics at the gateway shows the services' RED metrics too */
    /* and /health/ready at the gateway is down while the store cannot write or a
     * projection has failed: the readiness clients and load balancers see */
    const struct ag_gateway_ready_check checks[] = {
        {"store", ag_platform_store_ready, p},
        {"projections", ag_platform_projections_ready, p},
        {"bus", ag_platform_bus_ready, p}};
    struct ag_gateway_options go = {.config_yaml = yaml,
                                    .listen = listen,
                                    .workers = workers,
                                    .metrics = ag_platform_metrics(p),
                                    .ready_checks = checks,
                                    .nready_checks = AG_ARRAY_SIZE(checks),
                                    .tls_certs = tls->ncert ? tls->certs : NULL,
                                    .ntls_certs = tls->ncert,
                                    .http_redirect = tls->redirect,
                                    .console_dir = data,
                                    .mesh_key = ag_cli_mesh_key()};
    struct ag_gateway *gw = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = yaml ? ag_gateway_start(&go, &gw, &err) : ag_err_set(&err, AG_ENOMEM, "out of memory");
    ag_free(yaml);
    if (rc) {
        fprintf(stderr, "agora run: gateway: %s\n", ag_err_msg(&err, rc));
        ag_platform_stop(p);
        return 1;
    }
    char host[64], self[512] = "agora";
    uint16_t port = 0;
    ag_hostport_parse(listen, AG_HOSTPORT_PORT0, host, sizeof host, &port, NULL); /* checked */
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1); /* the command to suggest */
    if (n > 0) self[n] = 0;
    fprintf(stderr,
            "agora: serving %s://%s:%u through the gateway (services on %s, data in %s)\n"
            "       the catalog is public; everything else needs a token:\n"
            "         %s token --data %s --sub <id> --role customer   (or --role admin)\n"
            "       Ctrl-C to stop\n",
            tls->ncert ? "https" : "http", host, ag_gateway_port(gw), ag_platform_socket(p), data,
            self, data);
    if (ag_gateway_redirect_port(gw))
        fprintf(stderr, "agora: plain http on port %u redirects to https\n",
                ag_gateway_redirect_port(gw));
    ag_gateway_run_until_signal(gw);
    ag_gateway_stop(gw, 5000);
    ag_platform_stop(p);
    fprintf(stderr, "agora: stopped\n");
    return 0;
}

uint64_t ag_cli_duration_ms(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t unit = !*end                    ? 1000
                    : strcmp(end, "ms") == 0 ? 1
                    : strcmp(end, "s") == 0  ? 1000
                    : strcmp(end, "m") == 0  ? 60000
                    : strcmp(end, "h") == 0  ? 3600000
                    : strcmp(end, "d") == 0  ? 86400000
                                             : 0;
    return end == s || v > UINT64_MAX / 86400000 ? 0 : v * unit;
}

/* What `agora run` was asked for: flags over environment over defaults. */
struct run_opts {
    const char *data, *listen, *store, *readmodels, *bus, *saga_mode;
    const char *idem_ttl, *saga_ret, *index_mem, *cache_mem, *read_cache;
    const char *max_sagas, *adm_target, *adm_queue; /* admission control */
    bool seed, gateway;
    int workers;
    struct ag_cli_tls tls;
};

static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Flags into o (its environment defaults already set): 0, or the exit code. */
static int parse_run_args(int argc, char **argv, struct run_opts *o)
{
    static const struct {
        const char *flag;
        size_t off;
    } valued[] = {
        {"--data", offsetof(struct run_opts, data)},
        {"--store", offsetof(struct run_opts, store)},
        {"--readmodels", offsetof(struct run_opts, readmodels)},
        {"--listen", offsetof(struct run_opts, listen)},
        {"--idempotency-ttl", offsetof(struct run_opts, idem_ttl)},
        {"--saga-retention", offsetof(struct run_opts, saga_ret)},
        {"--bus", offsetof(struct run_opts, bus)},
        {"--saga-mode", offsetof(struct run_opts, saga_mode)},
        {"--index-memory", offsetof(struct run_opts, index_mem)},
        {"--cache-memory", offsetof(struct run_opts, cache_mem)},
        {"--max-sagas-in-flight", offsetof(struct run_opts, max_sagas)},
        {"--admission-target", offsetof(struct run_opts, adm_target)},
        {"--admission-queue", offsetof(struct run_opts, adm_queue)},
        {"--cache", offsetof(struct run_opts, read_cache)},
    };
    for (int i = 1; i < argc; i++) {
        int t = ag_cli_tls_arg(argc, argv, &i, &o->tls, "run");
        if (t < 0) return 2;
        if (t > 0) continue;
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0] && !known; k++)
            if (strcmp(argv[i], valued[k].flag) == 0 && i + 1 < argc) {
                *(const char **)(void *)((char *)o + valued[k].off) = argv[++i];
                known = true;
            }
        if (known) continue;
        if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
            o->workers = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-seed") == 0)
            o->seed = false;
        else if (strcmp(argv[i], "--no-gateway") == 0)
            o->gateway = false;
        else
            return ag_cli_usage_error(
                "run: unknown or incomplete option '%s' (see 'agora run --help')", argv[i]);
    }
    struct ag_cli_tls *tls = &o->tls;
    if (!tls->ncert && !tls->nkey && env_or_null("AGORA_TLS_CERT")) {
        tls->certs[0] = (struct ag_tls_cert){getenv("AGORA_TLS_CERT"), getenv("AGORA_TLS_KEY")};
        tls->ncert = 1;
        tls->nkey = env_or_null("AGORA_TLS_KEY") ? 1 : 0;
    }
    if (ag_cli_tls_check(tls, "run")) return 2;
    if (tls->ncert && !o->gateway)
        return ag_cli_usage_error(
            "run: --tls-cert is served by the gateway, not with --no-gateway");
    return 0;
}

/* The read caches: --cache / AGORA_CACHE, AGORA_CACHE_BYTES, AGORA_CACHE_TTL,
 * AGORA_VIEWS_FLUSH. 0, or the exit code. */
static int read_cache_config(const struct run_opts *o, struct ag_platform_config *cfg)
{
    const char *m = o->read_cache;
    if (m && strcmp(m, "local") && strcmp(m, "off") && strncmp(m, "redis://", 8))
        return ag_cli_usage_error(
            "run: --cache (AGORA_CACHE) takes local, off or redis://HOST:PORT, not '%s'", m);
    cfg->read_cache = m;
    uint64_t bytes = 0;
    const char *b = env_or_null("AGORA_CACHE_BYTES");
    if (b && (ag_parse_size(b, &bytes) || bytes < 4096))
        return ag_cli_usage_error("run: AGORA_CACHE_BYTES takes a size of at least 4K, not '%s'",
                                  b);
    cfg->read_cache_bytes = (size_t)bytes;
    const char *t = env_or_null("AGORA_CACHE_TTL"), *f = env_or_null("AGORA_VIEWS_FLUSH");
    if ((t && !ag_cli_duration_ms(t)) || (f && !ag_cli_duration_ms(f)))
        return ag_cli_usage_error(
            "run: AGORA_CACHE_TTL and AGORA_VIEWS_FLUSH take a duration such as 30s or 500ms");
    cfg->read_cache_ttl_ms = t ? ag_cli_duration_ms(t) : 0;
    cfg->views_flush_ms = f ? ag_cli_duration_ms(f) : 0;
    return 0;
}

/* Check the options and fill cfg (host is cfg's storage): 0, or the exit code. */
static int run_config(const struct run_opts *o, char host[64], struct ag_platform_config *cfg)
{
    uint16_t port = 0;
    struct ag_err perr;
    if (ag_hostport_parse(o->listen, AG_HOSTPORT_PORT0, host, 64, &port, &perr))
        return ag_cli_usage_error("run: --listen takes HOST:PORT, e.g. 127.0.0.1:8080: %s",
                                  perr.msg);
    if (o->workers < 0 || o->workers > 256)
        return ag_cli_usage_error("run: --workers takes 1..256");
    if (o->idem_ttl && !ag_cli_duration_ms(o->idem_ttl))
        return ag_cli_usage_error("run: --idempotency-ttl takes a duration such as 24h, 90m, 30s");
    if (o->saga_ret && !ag_cli_duration_ms(o->saga_ret))
        return ag_cli_usage_error("run: --saga-retention takes a duration such as 7d, 24h, 90m");
    bool chor = o->saga_mode && strcmp(o->saga_mode, "choreography") == 0;
    if (o->saga_mode && !chor && strcmp(o->saga_mode, "orchestration") != 0)
        return ag_cli_usage_error("run: --saga-mode (AGORA_SAGA_MODE) takes orchestration or "
                                  "choreography, not '%s'",
                                  o->saga_mode);
    uint64_t index_bytes = 0, cache_bytes = 0;
    if (o->index_mem && (ag_parse_size(o->index_mem, &index_bytes) || index_bytes < (1u << 20)))
        return ag_cli_usage_error("run: --index-memory (AGORA_INDEX_MEMORY) takes a size of at "
                                  "least 1M, e.g. 64M or 1G, not '%s'",
                                  o->index_mem);
    if (o->cache_mem && (ag_parse_size(o->cache_mem, &cache_bytes) || cache_bytes == 0))
        return ag_cli_usage_error("run: --cache-memory (AGORA_CACHE_MEMORY) takes a size, e.g. "
                                  "64M, not '%s'",
                                  o->cache_mem);
    char *mend = NULL;
    long max_sagas = o->max_sagas ? strtol(o->max_sagas, &mend, 10) : 0;
    if (o->max_sagas && (mend == o->max_sagas || *mend || max_sagas < 1 || max_sagas > 1000000))
        return ag_cli_usage_error("run: --max-sagas-in-flight (AGORA_MAX_SAGAS_IN_FLIGHT) takes "
                                  "1..1000000, not '%s'",
                                  o->max_sagas);
    bool adm_static = o->adm_target && strcmp(o->adm_target, "off") == 0;
    if (o->adm_target && !adm_static && !ag_cli_duration_ms(o->adm_target))
        return ag_cli_usage_error("run: --admission-target (AGORA_ADMISSION_TARGET) takes a "
                                  "duration such as 250ms or 1s, or off, not '%s'",
                                  o->adm_target);
    bool adm_noq = o->adm_queue && strcmp(o->adm_queue, "off") == 0;
    if (o->adm_queue && !adm_noq && !ag_cli_duration_ms(o->adm_queue))
        return ag_cli_usage_error("run: --admission-queue (AGORA_ADMISSION_QUEUE) takes a "
                                  "duration such as 500ms or 2s, or off, not '%s'",
                                  o->adm_queue);
    *cfg = (struct ag_platform_config){
        .data_dir = o->data,
        .store_uri = o->store,
        .readmodels_uri = o->readmodels,
        .host = host,
        .port = port,
        .workers = o->workers,
        .seed = o->seed,
        .idempotency_ttl_ms = o->idem_ttl ? ag_cli_duration_ms(o->idem_ttl) : 0,
        .saga_retention_ms = o->saga_ret ? ag_cli_duration_ms(o->saga_ret) : 0,
        .bus_uri = o->bus,
        .choreography = chor,
        .index_memory = index_bytes,
        .cache_bytes = (size_t)cache_bytes,
        .max_sagas_in_flight = (uint32_t)max_sagas,
        .admission_target_ms = adm_static      ? -1
                               : o->adm_target ? (int64_t)ag_cli_duration_ms(o->adm_target)
                                               : 0,
        .admission_queue_ms = adm_noq        ? -1
                              : o->adm_queue ? (int64_t)ag_cli_duration_ms(o->adm_queue)
                                             : 0};
    const char *st = getenv("AGORA_SAGA_THREADS");
    if (st && atoi(st) > 0 && atoi(st) <= 1024) cfg->saga_threads = (unsigned)atoi(st);
    const char *rw = getenv("AGORA_DB_WAIT"); /* the store's and the read models' */
    if (!rw || atoi(rw) <= 0) rw = getenv("AGORA_READMODELS_WAIT"); /* its older name */
    if (rw && atoi(rw) > 0) cfg->readmodels_wait_s = (unsigned)atoi(rw);
    const char *mw = getenv("AGORA_MAX_WAITERS"); /* parked Prefer: wait GETs at once */
    if (mw && atoi(mw) > 0) cfg->max_waiters = (uint32_t)atoi(mw);
    return read_cache_config(o, cfg);
}

/* Spans (ag_span_setup) from AGORA_TRACE_BUFFER and AGORA_OTLP_ENDPOINT. */
static int trace_setup(struct ag_platform *p)
{
    const char *buf = getenv("AGORA_TRACE_BUFFER");
    const char *ep = getenv("AGORA_OTLP_ENDPOINT");
    char *end = NULL;
    unsigned long long cap = buf && *buf ? strtoull(buf, &end, 10) : 32768;
    if ((end && *end) || cap > (1u << 24)) {
        fprintf(stderr, "agora run: AGORA_TRACE_BUFFER takes a number of spans, 0..16777216\n");
        return 2;
    }
    struct ag_span_config sc = {.capacity = (size_t)cap,
                                .service_name = getenv("OTEL_SERVICE_NAME"),
                                .otlp_endpoint = ep && *ep ? ep : NULL,
                                .metrics = ag_platform_metrics(p)};
    if (sc.otlp_endpoint && !cap) {
        fprintf(stderr, "agora run: AGORA_OTLP_ENDPOINT needs spans (AGORA_TRACE_BUFFER > 0)\n");
        return 2;
    }
    int rc = ag_span_setup(&sc);
    if (rc == AG_EINVAL)
        fprintf(stderr, "agora run: AGORA_OTLP_ENDPOINT takes http://HOST:PORT[/PATH]: %s\n", ep);
    else if (rc)
        fprintf(stderr, "agora run: tracing: %s\n", ag_strerror(rc));
    if (!rc && sc.otlp_endpoint)
        fprintf(stderr, "agora: exporting spans to %s (OTLP/HTTP JSON)\n", sc.otlp_endpoint);
    return rc ? 2 : 0;
}

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    struct run_opts o = {.data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data",
                         .listen =
                             getenv("AGORA_LISTEN") ? getenv("AGORA_LISTEN") : "127.0.0.1:8080",
                         .store = env_or_null("AGORA_STORE"),
                         .readmodels = env_or_null("AGORA_READMODELS"),
                         .bus = env_or_null("AGORA_BUS"),
                         .saga_mode = env_or_null("AGORA_SAGA_MODE"),
                         .idem_ttl = env_or_null("AGORA_IDEMPOTENCY_TTL"),
                         .saga_ret = env_or_null("AGORA_SAGA_RETENTION"),
                         .index_mem = env_or_null("AGORA_INDEX_MEMORY"),
                         .cache_mem = env_or_null("AGORA_CACHE_MEMORY"),
                         .max_sagas = env_or_null("AGORA_MAX_SAGAS_IN_FLIGHT"),
                         .adm_target = env_or_null("AGORA_ADMISSION_TARGET"),
                         .adm_queue = env_or_null("AGORA_ADMISSION_QUEUE"),
                         .read_cache = env_or_null("AGORA_CACHE"),
                         .seed = true,
                         .gateway = true};
    int prc = parse_run_args(argc, argv, &o);
    if (prc) return prc;
    /* flags given empty mean "the default", as an empty environment variable does */
    const char **opt[] = {&o.store,     &o.readmodels, &o.bus,       &o.idem_ttl,  &o.saga_ret,
                          &o.index_mem, &o.cache_mem,  &o.saga_mode, &o.read_cache};
    for (size_t k = 0; k < sizeof opt / sizeof opt[0]; k++)
        if (*opt[k] && !**opt[k]) *opt[k] = NULL;
    char host[64];
    struct ag_platform_config cfg;
    if ((prc = run_config(&o, host, &cfg))) return prc;
    /* commands wait on group commit in the threadpool: give it room before libuv starts it */
    setenv("UV_THREADPOOL_SIZE", "64", 0);
    const char *data = o.data;
    bool gateway = o.gateway;
    struct ag_cli_tls tls = o.tls;
    const char *listen = o.listen;
    uint16_t port = cfg.port;
    int workers = o.workers;
    char sock[1024] = "";
    if (gateway) { /* the gateway is the only TCP listener; services sit on a Unix socket */
        cfg.unix_path = sock;
        cfg.behind_gateway = true;
    } else if (!ag_cli_loopback(host)) {
        return ag_cli_usage_error("run: --no-gateway serves without authentication and binds "
                                  "loopback only (127.0.0.1 or ::1), not '%s'",
                                  host);
    }
    struct ag_platform *p;
    struct ag_err err;
    ag_err_clear(&err);
    char secret[65];
    int rc = ag_http_listen_check(host, port, &err); /* before touching the data */
    if (!rc) rc = secure_data_dir(data, &err);
    if (!rc && gateway) rc = services_socket(data, sock, &err);
    if (!rc && gateway) rc = ag_cli_jwt_secret(data, true, secret, &err);
    if (!rc) rc = ag_platform_start(&cfg, &p, &err);
    if (rc) {
        fprintf(stderr, "agora run: %s\n", ag_err_msg(&err, rc));
        return 1;
    }
    if ((prc = trace_setup(p))) {
        ag_platform_stop(p);
        return prc;
    }
    if (!gateway) {
        fprintf(stderr,
                "agora: WARNING: serving http://%s:%u WITHOUT THE GATEWAY: no authentication,\n"
                "       every caller acts as an admin. For benchmarks and tests on this machine\n"
                "       only (data in %s); Ctrl-C to stop\n",
                host, ag_platform_port(p), data);
        ag_platform_run_until_signal(p);
        ag_platform_stop(p);
        ag_span_shutdown();
        fprintf(stderr, "agora: stopped\n");
        return 0;
    }
    prc = serve_gateway(p, listen, secret, workers, data, &tls);
    ag_span_shutdown(); /* the spans still waiting: one last export */
    return prc;
}

const struct ag_cli_cmd ag_cli_cmd_run = {"run",
                                          "start the platform (every context in one process)", run};
