/*
 * agora store: inspect and operate the embedded event log of a data directory.
 * Reads open the store read-only, so they work while `agora run` owns the
 * directory; `append` and `verify --repair` need it to themselves. `scavenge`
 * runs in this process when the directory is free, else asks the running agora
 * (its admin endpoint, over the services' Unix socket in the directory).
 * `--store URI` names any store instead (e.g. postgresql://...); `migrate` brings a
 * PostgreSQL store's schema to this binary's version.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agora/platform.h"
#include "agora/saga.h"
#include "agora/store_log.h"
#include "agora/store_pg.h"
#include "agora/store_shard.h"
#include "cli/cli.h"

struct store_args {
    const char *data;     /* --data DIR */
    const char *store;    /* --store URI (instead of --data) */
    const char *sub;      /* subcommand */
    const char *stream;   /* positional STREAM */
    const char *type;     /* --type */
    const char *payload;  /* --payload */
    const char *metadata; /* --metadata */
    const char *id;       /* --id */
    const char *expected; /* --expected-version */
    const char *from;     /* --from */
    const char *limit;    /* --limit */
    bool backward;        /* --backward */
    bool follow;          /* -f / --follow */
    bool repair;          /* --repair */
    const char *idem_ttl; /* --idempotency-ttl */
    const char *saga_ret; /* --saga-retention */
    const char *shard;    /* add-shard --new URI */
    bool by_type;         /* stats --by-type */
    bool raw;             /* read/all/tail --raw: metadata as stored */
};

static const char usage_text[] =
    "usage: agora store <command> [--data DIR | --store URI] [options]\n"
    "\n"
    "Inspect and operate the embedded event store in DIR (default ./data), or the\n"
    "store URI names (file:PATH, postgresql://...).\n"
    "\n"
    "commands:\n"
    "  stats                       events, streams, bytes, segments, index memory\n"
    "  stats --by-type             events and bytes per order, per event type, per stream\n"
    "                              kind, and the latest snapshots (one JSON object a line)\n"
    "  streams                     every stream with its version, one JSON object per line\n"
    "  read STREAM [--from V] [--limit N] [--backward]\n"
    "                              a stream's events, one JSON object per line\n"
    "  all [--from P] [--limit N] [--backward]\n"
    "                              every event in commit order ($all)\n"
    "  tail [-f] [--from P]        the last events of $all; -f follows new ones live\n"
    "  append STREAM --type T --payload JSON [--metadata JSON] [--id UUID]\n"
    "         [--expected-version V]\n"
    "                              append one event; V is a number, any, no-stream or exists\n"
    "  migrate --store URI         bring a PostgreSQL store's schema to this agora's version\n"
    "                              (each shard's, for shards:URI,URI,...)\n"
    "  add-shard --store shards:URI,... --new URI\n"
    "                              add the empty store URI as the next shard (offline: stop\n"
    "                              every agora first); existing streams stay where they are\n"
    "  verify [--repair]           check every record; --repair cuts the log at the first\n"
    "                              bad record, keeping the cut bytes beside the segment\n"
    "  scavenge [--idempotency-ttl DUR] [--saga-retention DUR]\n"
    "                              rewrite sealed segments without deleted events (expired\n"
    "                              Idempotency-Key records, default 24h; ended sagas, default\n"
    "                              7d; tombstoned streams; released email claims, whose\n"
    "                              names must leave the log): progress on stderr, a report on\n"
    "                              stdout. While agora run serves DIR it asks the server\n"
    "                              (POST /admin/store/scavenge on DIR/services.sock), which\n"
    "                              applies its own retention settings\n"
    "\n"
    "Events print as "
    "{\"stream\",\"version\",\"position\",\"id\",\"type\",\"time\",\"data\",\"metadata\"};\n"
    "a saga's events with their whole metadata (stored once, on SagaStarted), or as\n"
    "stored with --raw.\n"
    "Exit status: 0 ok, 1 error or bad input, 2 usage, 3 wrong expected version.\n";

static int take_value(int argc, char **argv, int *i, const char *name, const char **out)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=') {
        *out = argv[*i] + n + 1;
        return 1;
    }
    if (strcmp(argv[*i], name) != 0) return 0;
    if (*i + 1 >= argc) return -1;
    *out = argv[++*i];
    return 1;
}

static int parse_args(int argc, char **argv, struct store_args *a)
{
    static const char *const names[] = {"--data",           "--type",  "--payload",
                                        "--metadata",       "--id",    "--expected-version",
                                        "--from",           "--limit", "--idempotency-ttl",
                                        "--saga-retention", "--store", "--new"};
    const char **slots[] = {&a->data,     &a->type,     &a->payload, &a->metadata,
                            &a->id,       &a->expected, &a->from,    &a->limit,
                            &a->idem_ttl, &a->saga_ret, &a->store,   &a->shard};
    for (int i = 1; i < argc; i++) {
        int hit = 0;
        for (size_t k = 0; k < sizeof names / sizeof names[0] && !hit; k++) {
            hit = take_value(argc, argv, &i, names[k], slots[k]);
            if (hit < 0) return ag_cli_usage_error("store: %s needs a value", names[k]);
        }
        if (hit) continue;
        if (strcmp(argv[i], "--backward") == 0)
            a->backward = true;
        else if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0)
            a->follow = true;
        else if (strcmp(argv[i], "--repair") == 0)
            a->repair = true;
        else if (strcmp(argv[i], "--by-type") == 0)
            a->by_type = true;
        else if (strcmp(argv[i], "--raw") == 0)
            a->raw = true;
        else if (argv[i][0] == '-')
            return ag_cli_usage_error("store: unknown option '%s'", argv[i]);
        else if (!a->sub)
            a->sub = argv[i];
        else if (!a->stream)
            a->stream = argv[i];
        else
            return ag_cli_usage_error("store: unexpected argument '%s'", argv[i]);
    }
    if (!a->data) a->data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data";
    if (!a->sub) return ag_cli_usage_error("store: which command? (see 'agora store --help')");
    return 0;
}

static int fail(const char *what, int rc, const struct ag_err *err)
{
    fprintf(stderr, "agora store %s: %s\n", what, ag_err_msg(err, rc));
    return rc == AG_ECONFLICT ? 3 : 1;
}

static int open_store(const struct store_args *a, bool writable, struct ag_store **s)
{
    struct ag_store_options o = {.read_only = !writable};
    struct ag_err err;
    ag_err_clear(&err);
    int rc =
        a->store ? ag_store_open(a->store, &o, s, &err) : ag_store_log_open(a->data, &o, s, &err);
    if (rc == AG_ENOTFOUND) {
        fprintf(stderr, "agora store %s: no store at %s (use --data DIR)\n", a->sub, a->data);
        return 1;
    }
    return rc ? fail(a->sub, rc, &err) : 0;
}

/* One event as JSON; a saga event, or one that stores its metadata as the next
 * event's (src/es/meta.c), with its whole metadata unless `raw`. */
static void print_event(struct ag_store *s, const struct ag_event *ev, bool raw, struct ag_buf *b)
{
    json_t *m = NULL;
    char *text = NULL;
    bool whole =
        (ev->stream_len > 5 && memcmp(ev->stream, "saga-", 5) == 0) || ag_es_meta_is_next(ev);
    if (!raw && whole && ag_saga_event_meta_read(s, ev, &m, NULL) == 0 && json_object_size(m))
        text = json_dumps(m, JSON_COMPACT);
    struct ag_event e = *ev;
    if (text) e.metadata = text, e.metadata_len = strlen(text);
    ag_event_to_json(&e, b);
    ag_buf_putc(b, '\n');
    ag_free(text);
    json_decref(m);
}

static int print_page(struct ag_store *s, const struct ag_event_page *p, bool raw)
{
    struct ag_buf b;
    ag_buf_init(&b);
    for (size_t i = 0; i < p->count; i++) print_event(s, &p->events[i], raw, &b);
    if (b.len) fwrite(b.data, 1, b.len, stdout);
    ag_buf_free(&b);
    return ferror(stdout) ? 1 : 0;
}

static int parse_limit(const char *s, uint64_t *out)
{
    *out = UINT64_MAX;
    return s && (ag_parse_u64(s, out) || *out == 0) ? AG_EINVAL : 0;
}

static int cmd_read(const struct store_args *a, struct ag_store *s, bool all)
{
    uint64_t limit, from_u = a->backward ? UINT64_MAX : 0;
    int64_t from_v = a->backward ? -1 : 0;
    if (parse_limit(a->limit, &limit))
        return ag_cli_usage_error("store: --limit takes a positive number");
    if (a->from && (all ? ag_parse_u64(a->from, &from_u) : ag_parse_i64(a->from, &from_v)))
        return ag_cli_usage_error("store: --from takes a number");
    if (!all && !a->stream) return ag_cli_usage_error("store read: which STREAM?");
    enum ag_read_dir dir = a->backward ? AG_READ_BACKWARD : AG_READ_FORWARD;
    for (uint64_t done = 0; done < limit;) {
        struct ag_event_page p;
        struct ag_err err;
        ag_err_clear(&err);
        size_t max = (size_t)AG_MIN(limit - done, 1024);
        int rc =
            all ? ag_store_read_all(s, from_u, dir, max, &p, &err)
                : ag_store_read_stream(s, a->stream, strlen(a->stream), from_v, dir, max, &p, &err);
        if (rc) return fail(a->sub, rc, &err);
        int prc = print_page(s, &p, a->raw);
        done += p.count;
        from_u = p.next_position, from_v = p.next_version;
        bool end = p.end || p.count == 0;
        ag_event_page_free(&p);
        if (prc) return prc;
        if (end) break;
    }
    return 0;
}

static volatile sig_atomic_t stop_follow;
static void on_sigint(int sig)
{
    (void)sig;
    stop_follow = 1;
}

static int cmd_tail(const struct store_args *a, struct ag_store *s)
{
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    uint64_t from = st.events > 10 ? st.events - 10 : 0;
    if (a->from && ag_parse_u64(a->from, &from))
        return ag_cli_usage_error("store: --from takes a number");
    if (!a->follow) {
        struct store_args b = *a;
        char buf[32];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)from);
        b.from = buf;
        return cmd_read(&b, s, true);
    }
    struct ag_store_sub *sub;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_subscribe(s, NULL, 0, from, &sub, &err);
    if (rc) return fail("tail", rc, &err);
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    while (!stop_follow) {
        struct ag_event_page p;
        rc = ag_store_sub_next(sub, 256, 200, &p, &err);
        if (rc == AG_ETIMEDOUT) continue;
        if (rc) break;
        print_page(s, &p, a->raw);
        fflush(stdout);
        ag_event_page_free(&p);
    }
    ag_store_sub_free(sub);
    return rc && rc != AG_ETIMEDOUT && rc != AG_ECLOSED ? fail("tail", rc, &err) : 0;
}

static int cmd_append(const struct store_args *a, struct ag_store *s)
{
    if (!a->stream) return ag_cli_usage_error("store append: which STREAM?");
    if (!a->type) return ag_cli_usage_error("store append: --type is required");
    if (!a->payload) return ag_cli_usage_error("store append: --payload is required");
    int64_t expected = AG_STORE_ANY;
    if (a->expected && ag_store_parse_expected(a->expected, &expected))
        return ag_cli_usage_error(
            "store append: --expected-version takes a number, any, no-stream or exists");
    struct ag_event_data ev = {.type = a->type,
                               .type_len = strlen(a->type),
                               .data = a->payload,
                               .data_len = strlen(a->payload)};
    if (a->metadata) ev.metadata = a->metadata, ev.metadata_len = strlen(a->metadata);
    if (a->id && ag_uuid_parse(a->id, strlen(a->id), &ev.id))
        return ag_cli_usage_error("store append: --id is not a UUID");
    struct ag_append_result res;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_append(s, a->stream, strlen(a->stream), expected, &ev, 1, &res, &err);
    if (rc) return fail("append", rc, &err);
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_puts(&b, "{\"stream\":");
    ag_buf_json_str(&b, a->stream, strlen(a->stream));
    ag_buf_printf(&b, ",\"version\":%lld,\"position\":%llu}\n", (long long)res.last_version,
                  (unsigned long long)res.last_position);
    fwrite(b.data, 1, b.len, stdout);
    ag_buf_free(&b);
    return 0;
}

static int print_stream(void *ud, const char *name, size_t len, int64_t version)
{
    struct ag_buf *b = ud;
    ag_buf_puts(b, "{\"stream\":");
    ag_buf_json_str(b, name, len);
    ag_buf_printf(b, ",\"version\":%lld}\n", (long long)version);
    return 0;
}

static int cmd_streams(struct ag_store *s)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_store_list_streams(s, print_stream, &b);
    if (b.len) fwrite(b.data, 1, b.len, stdout);
    ag_buf_free(&b);
    return 0;
}

static int cmd_stats(const struct store_args *a, struct ag_store *s)
{
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    struct ag_buf where;
    ag_buf_init(&where);
    if (a->store) /* no URI echoed: it may carry a password */
        ag_buf_puts(&where, "\"store\":\"uri\"");
    else
        ag_buf_puts(&where, "\"dir\":"), ag_buf_json_str(&where, a->data, strlen(a->data));
    printf("{%s,\"events\":%llu,\"streams\":%llu,\"bytes\":%llu,\"segments\":%llu,"
           "\"indexBytes\":%llu,\"indexTables\":%llu,\"indexTableEntries\":%llu,"
           "\"indexTableBytes\":%llu,\"indexMemoryStreams\":%llu}\n",
           where.data ? where.data : "", (unsigned long long)st.events,
           (unsigned long long)st.streams, (unsigned long long)st.bytes,
           (unsigned long long)st.segments, (unsigned long long)st.index_bytes,
           (unsigned long long)st.index_tables, (unsigned long long)st.index_entries,
           (unsigned long long)st.index_table_bytes, (unsigned long long)st.index_mem_streams);
    ag_buf_free(&where);
    return 0;
}

static int cmd_verify(const struct store_args *a)
{
    struct ag_log_verify_report r;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_log_verify(a->data, a->repair, &r, &err);
    if (rc) return fail("verify", rc, &err);
    printf("{\"dir\":\"%s\",\"ok\":%s,\"repaired\":%s,\"segments\":%llu,\"records\":%llu,"
           "\"events\":%llu,\"bytes\":%llu",
           a->data, r.ok ? "true" : "false", r.repaired ? "true" : "false",
           (unsigned long long)r.segments, (unsigned long long)r.records,
           (unsigned long long)r.events, (unsigned long long)r.bytes);
    if (r.problem[0]) {
        struct ag_buf b;
        ag_buf_init(&b);
        ag_buf_json_str(&b, r.problem, strlen(r.problem));
        printf(",\"problem\":%s", b.data);
        ag_buf_free(&b);
    }
    printf("}\n");
    if (!r.ok && !r.repaired)
        fprintf(stderr,
                "agora store verify: %s\n  run 'agora store verify --repair --data %s' to cut "
                "the log there (the cut bytes are kept beside the segment)\n",
                r.problem, a->data);
    return r.ok || r.repaired ? 0 : 1;
}

static int cmd_migrate(const struct store_args *a);

static int migrate_shards(const char *list)
{
    int rc = 0;
    for (const char *p = list; *p && !rc;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        char *uri = ag_strndup(p, n);
        struct store_args one = {.store = uri};
        rc = uri ? cmd_migrate(&one) : 1;
        ag_free(uri);
        p = c ? c + 1 : p + n;
    }
    return rc;
}

static int cmd_migrate(const struct store_args *a)
{
    if (a->store && strncmp(a->store, "shards:", 7) == 0) return migrate_shards(a->store + 7);
    if (!a->store ||
        (strncmp(a->store, "postgresql:", 11) != 0 && strncmp(a->store, "postgres:", 9) != 0)) {
        printf("{\"migrated\":false,\"why\":\"only PostgreSQL stores have a schema\"}\n");
        return 0;
    }
    struct ag_err err;
    ag_err_clear(&err);
    int from = 0, to = 0;
    int rc = ag_store_pg_migrate(a->store, &from, &to, &err);
    if (rc) return fail("migrate", rc, &err);
    printf("{\"migrated\":%s,\"from\":%d,\"to\":%d}\n", from != to ? "true" : "false", from, to);
    return 0;
}

/* ---- add-shard ---- */

static int cmd_add_shard(const struct store_args *a)
{
    if (!a->store || strncmp(a->store, "shards:", 7) != 0 || !a->shard)
        return ag_cli_usage_error("store add-shard: needs --store shards:URI,... and --new URI");
    struct ag_store_options o = {0};
    struct ag_err err;
    ag_err_clear(&err);
    size_t pinned = 0;
    int rc = ag_store_shard_add(a->store + 7, a->shard, &o, &pinned, &err);
    if (rc) return fail("add-shard", rc, &err);
    printf("{\"added\":true,\"pinned\":%zu}\n", pinned);
    fprintf(stderr, "agora store add-shard: done; from now on list the new shard last in "
                    "--store (no URI echoed: it may carry a password)\n");
    return 0;
}

/* ---- scavenge ---- */

static void scavenge_progress(void *ud, uint64_t segno, const struct ag_log_scavenge_report *r)
{
    AG_UNUSED(ud);
    fprintf(stderr,
            "agora store scavenge: segment %llu done: %llu of %llu segments rewritten, "
            "%llu events kept, %llu dropped, %llu bytes reclaimed\n",
            (unsigned long long)segno, (unsigned long long)r->rewritten,
            (unsigned long long)r->segments, (unsigned long long)r->events_kept,
            (unsigned long long)r->events_dropped,
            (unsigned long long)(r->bytes_before - r->bytes_after));
}

/* agora run holds the store: ask it over its services socket (owner-only, 0600;
 * the services trust the identity headers sent there, as the gateway's). */
static int scavenge_remote(const struct store_args *a)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/services.sock", a->data) >=
        sizeof sa.sun_path) {
        fprintf(stderr, "agora store scavenge: the data directory's path is too long\n");
        return 1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr,
                "agora store scavenge: the store is locked by a running agora, and its socket "
                "%s does not answer: %s\n",
                sa.sun_path, strerror(errno));
        if (fd >= 0) close(fd);
        return 1;
    }
    fprintf(stderr,
            "agora store scavenge: agora run serves %s: asking it (progress goes to "
            "its log)\n",
            a->data);
    static const char req[] = "POST /admin/store/scavenge HTTP/1.1\r\nHost: agora\r\n"
                              "x-user-id: agora-store-cli\r\nx-user-roles: admin\r\n"
                              "Content-Length: 0\r\nConnection: close\r\n\r\n";
    struct ag_buf b;
    ag_buf_init(&b);
    bool ok = write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1);
    char chunk[4096];
    for (ssize_t n; ok && (n = read(fd, chunk, sizeof chunk)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || ag_buf_append(&b, chunk, (size_t)n)) ok = false;
    }
    close(fd);
    ag_buf_putc(&b, 0);
    const char *text = b.data ? b.data : "";
    const char *body = strstr(text, "\r\n\r\n");
    int status = strncmp(text, "HTTP/1.1 ", 9) == 0 ? (int)strtol(text + 9, NULL, 10) : 0;
    ok = ok && status && body;
    if (ok) printf("%s\n", body + 4);
    if (!ok || status != 200)
        fprintf(stderr, "agora store scavenge: the server answered %d\n", status);
    ag_buf_free(&b);
    return ok && status == 200 ? 0 : 1;
}

static int cmd_scavenge(const struct store_args *a)
{
    const char *it = a->idem_ttl ? a->idem_ttl : getenv("AGORA_IDEMPOTENCY_TTL");
    const char *sr = a->saga_ret ? a->saga_ret : getenv("AGORA_SAGA_RETENTION");
    uint64_t it_ms = it && *it ? ag_cli_duration_ms(it) : 24ull * 3600 * 1000;
    uint64_t sr_ms = sr && *sr ? ag_cli_duration_ms(sr) : 7ull * 24 * 3600 * 1000;
    if (!it_ms || !sr_ms)
        return ag_cli_usage_error("store scavenge: durations look like 24h, 90m, 30s, 7d");
    struct ag_store_options o = {0};
    struct ag_store *s;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_log_open(a->data, &o, &s, &err);
    if (rc == AG_ELOCKED) return scavenge_remote(a);
    if (rc) return fail("scavenge", rc, &err);
    struct ag_log_retention ret = {.idempotency_ns = it_ms * 1000000ull,
                                   .saga_ns = sr_ms * 1000000ull,
                                   .released_prefix = AG_EMAIL_CLAIM_PREFIX,
                                   .released_type = AG_CLAIM_RELEASED};
    struct ag_log_scavenge_report r;
    rc = ag_store_log_scavenge(s, &ret, scavenge_progress, NULL, &r, &err);
    ag_store_close(s);
    if (rc) return fail("scavenge", rc, &err);
    printf("{\"dir\":\"%s\",\"segments\":%llu,\"rewritten\":%llu,\"eventsKept\":%llu,"
           "\"eventsDropped\":%llu,\"streamsDeleted\":%llu,\"bytesBefore\":%llu,"
           "\"bytesAfter\":%llu,\"bytesReclaimed\":%llu}\n",
           a->data, (unsigned long long)r.segments, (unsigned long long)r.rewritten,
           (unsigned long long)r.events_kept, (unsigned long long)r.events_dropped,
           (unsigned long long)r.streams_deleted, (unsigned long long)r.bytes_before,
           (unsigned long long)r.bytes_after, (unsigned long long)(r.bytes_before - r.bytes_after));
    return 0;
}

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    struct store_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if (a.store && strncmp(a.store, "shards:", 7) == 0 &&
        (strcmp(a.sub, "verify") == 0 || strcmp(a.sub, "scavenge") == 0)) {
        fprintf(stderr,
                "agora store %s: a sharded store is checked shard by shard: run it with "
                "--data on each shard's directory (or --store on each shard's URI)\n",
                a.sub);
        return 1;
    }
    if (strcmp(a.sub, "add-shard") == 0) return cmd_add_shard(&a);
    if (strcmp(a.sub, "verify") == 0) return cmd_verify(&a);
    if (strcmp(a.sub, "migrate") == 0) return cmd_migrate(&a);
    if (strcmp(a.sub, "scavenge") == 0) return cmd_scavenge(&a);
    static const char *const known[] = {"stats", "streams", "read", "all", "tail", "append"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= strcmp(a.sub, known[i]) == 0;
    if (!ok)
        return ag_cli_usage_error("store: unknown command '%s' (see 'agora store --help')", a.sub);
    bool writable = strcmp(a.sub, "append") == 0;
    struct ag_store *s;
    if ((rc = open_store(&a, writable, &s))) return rc;
    if (strcmp(a.sub, "stats") == 0)
        rc = a.by_type ? ag_cli_store_sizes(s, a.data) : cmd_stats(&a, s);
    else if (strcmp(a.sub, "streams") == 0)
        rc = cmd_streams(s);
    else if (strcmp(a.sub, "read") == 0)
        rc = cmd_read(&a, s, false);
    else if (strcmp(a.sub, "all") == 0)
        rc = cmd_read(&a, s, true);
    else if (strcmp(a.sub, "tail") == 0)
        rc = cmd_tail(&a, s);
    else
        rc = cmd_append(&a, s);
    ag_store_close(s);
    return rc;
}

const struct ag_cli_cmd ag_cli_cmd_store = {"store", "inspect and operate the event store", run};
