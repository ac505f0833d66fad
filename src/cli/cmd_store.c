/*
 * agora store: inspect and operate the embedded event log of a data directory.
 * Reads open the store read-only, so they work while `agora run` owns the
 * directory; `append` and `verify --repair` need it to themselves.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/store_log.h"
#include "cli/cli.h"

struct store_args {
    const char *data;     /* --data DIR */
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
};

static const char usage_text[] =
    "usage: agora store <command> [--data DIR] [options]\n"
    "\n"
    "Inspect and operate the embedded event store in DIR (default ./data).\n"
    "\n"
    "commands:\n"
    "  stats                       events, streams, bytes, segments, index memory\n"
    "  streams                     every stream with its version, one JSON object per line\n"
    "  read STREAM [--from V] [--limit N] [--backward]\n"
    "                              a stream's events, one JSON object per line\n"
    "  all [--from P] [--limit N] [--backward]\n"
    "                              every event in commit order ($all)\n"
    "  tail [-f] [--from P]        the last events of $all; -f follows new ones live\n"
    "  append STREAM --type T --payload JSON [--metadata JSON] [--id UUID]\n"
    "         [--expected-version V]\n"
    "                              append one event; V is a number, any, no-stream or exists\n"
    "  verify [--repair]           check every record; --repair cuts the log at the first\n"
    "                              bad record, keeping the cut bytes beside the segment\n"
    "\n"
    "Events print as "
    "{\"stream\",\"version\",\"position\",\"id\",\"type\",\"time\",\"data\",\"metadata\"}.\n"
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
    static const char *const names[] = {"--data",     "--type", "--payload",
                                        "--metadata", "--id",   "--expected-version",
                                        "--from",     "--limit"};
    const char **slots[] = {&a->data, &a->type,     &a->payload, &a->metadata,
                            &a->id,   &a->expected, &a->from,    &a->limit};
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
    int rc = ag_store_log_open(a->data, &o, s, &err);
    if (rc == AG_ENOTFOUND) {
        fprintf(stderr, "agora store %s: no store at %s (use --data DIR)\n", a->sub, a->data);
        return 1;
    }
    return rc ? fail(a->sub, rc, &err) : 0;
}

static int print_page(const struct ag_event_page *p)
{
    struct ag_buf b;
    ag_buf_init(&b);
    for (size_t i = 0; i < p->count; i++) {
        ag_event_to_json(&p->events[i], &b);
        ag_buf_putc(&b, '\n');
    }
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
        int prc = print_page(&p);
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
        print_page(&p);
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
    printf("{\"dir\":\"%s\",\"events\":%llu,\"streams\":%llu,\"bytes\":%llu,\"segments\":%llu,"
           "\"indexBytes\":%llu,\"indexTables\":%llu,\"indexTableEntries\":%llu,"
           "\"indexTableBytes\":%llu,\"indexMemoryStreams\":%llu}\n",
           a->data, (unsigned long long)st.events, (unsigned long long)st.streams,
           (unsigned long long)st.bytes, (unsigned long long)st.segments,
           (unsigned long long)st.index_bytes, (unsigned long long)st.index_tables,
           (unsigned long long)st.index_entries, (unsigned long long)st.index_table_bytes,
           (unsigned long long)st.index_mem_streams);
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

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    struct store_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if (strcmp(a.sub, "verify") == 0) return cmd_verify(&a);
    static const char *const known[] = {"stats", "streams", "read", "all", "tail", "append"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= strcmp(a.sub, known[i]) == 0;
    if (!ok)
        return ag_cli_usage_error("store: unknown command '%s' (see 'agora store --help')", a.sub);
    bool writable = strcmp(a.sub, "append") == 0;
    struct ag_store *s;
    if ((rc = open_store(&a, writable, &s))) return rc;
    if (strcmp(a.sub, "stats") == 0)
        rc = cmd_stats(&a, s);
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
