/*
 * `agora dlq list|show|replay|drop --data DIR`: the dead letters (parked events
 * and messages, see src/services/dlq.c).
 *
 * A dead letter is resolved by the consumer that parked it (a replay runs that
 * consumer's code), so while `agora run` serves DIR the command asks it over
 * DIR/services.sock (owner-only, 0600; the admin identity headers are trusted
 * there, as `agora store scavenge` does): GET /admin/dlq, POST
 * /admin/dlq/{id}/replay, DELETE /admin/dlq/{id}. When nothing runs, `list` and
 * `show` read the projections' lists from the read models (DIR/readmodels, or
 * --readmodels URI) directly; `replay` and `drop` then say that agora must run.
 * The bus workers' parked messages (`bus:<consumer>:<n>`, choreography's) come
 * only from the running server: their lots are store streams it holds open.
 * Output is JSON on stdout; exit 0 on success, 1 on failure, 2 on bad usage.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agora/base.h"
#include "agora/readmodel.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora dlq list|show ID|replay ID|drop ID [--data DIR] [--readmodels URI]\n"
    "\n"
    "Dead letters: events a projection failed on (id projection:<name>:<position>)\n"
    "and bus messages a bus worker parked (id bus:<consumer>:<n>: with --saga-mode\n"
    "choreography, chor-inventory, chor-payments, chor-shipping, chor-ordering).\n"
    "Later events of the same stream (aggregate) wait behind a parked one; other\n"
    "streams flow.\n"
    "\n"
    "  list        the unresolved dead letters (JSON array)\n"
    "  show ID     one of them\n"
    "  replay ID   handle it again (after fixing the fault); the ones waiting behind\n"
    "              it follow in order until one fails\n"
    "  drop ID     resolve it without handling it; the ones behind it follow\n"
    "\n"
    "With agora running on DIR this asks it over DIR/services.sock (both kinds);\n"
    "without, list and show read the projections' from the read models (default\n"
    "DIR/readmodels), replay and drop need agora run. DIR defaults to $AGORA_DATA,\n"
    "else ./data.\n";

/* One request over DIR/services.sock: the status (0: nothing answers), the body. */
static int ask(const char *data, const char *method, const char *path, struct ag_buf *body)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/services.sock", data) >=
        sizeof sa.sun_path)
        return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0) close(fd);
        return 0;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: agora\r\nx-user-id: agora-dlq-cli\r\n"
                     "x-user-roles: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                     method, path);
    struct ag_buf b;
    ag_buf_init(&b);
    bool ok = n > 0 && (size_t)n < sizeof req && write(fd, req, (size_t)n) == n;
    char chunk[4096];
    for (ssize_t k; ok && (k = read(fd, chunk, sizeof chunk)) != 0;) {
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 || ag_buf_append(&b, chunk, (size_t)k)) ok = false;
    }
    close(fd);
    ag_buf_putc(&b, 0);
    const char *text = b.data ? b.data : "";
    const char *sep = strstr(text, "\r\n\r\n");
    int status =
        ok && sep && strncmp(text, "HTTP/1.1 ", 9) == 0 ? (int)strtol(text + 9, NULL, 10) : 0;
    if (status) ag_buf_puts(body, sep + 4);
    ag_buf_free(&b);
    return status;
}

/* The running server's list, or NULL when none answers. */
static json_t *remote_list(const char *data, int *status)
{
    struct ag_buf b;
    ag_buf_init(&b);
    *status = ask(data, "GET", "/admin/dlq", &b);
    json_t *j = *status == 200 ? json_loadb(b.data, b.len, 0, NULL) : NULL;
    ag_buf_free(&b);
    json_t *items = json_incref(json_object_get(j, "items"));
    json_decref(j);
    return items;
}

struct rows {
    json_t *items;
    const char *name;
};

static int row(const struct ag_rm_row *r, void *ud)
{
    struct rows *c = ud;
    char id[320];
    snprintf(id, sizeof id, "projection:%s:%lld", c->name, (long long)ag_rm_int64(r, 0));
    json_array_append_new(c->items,
                          json_pack("{s:s, s:s, s:s, s:I, s:s?, s:s?, s:s?, s:b, s:s?}", "id", id,
                                    "kind", "projection", "projection", c->name, "position",
                                    (json_int_t)ag_rm_int64(r, 0), "stream", ag_rm_text(r, 1),
                                    "type", ag_rm_text(r, 2), "error", ag_rm_text(r, 3), "waiting",
                                    ag_rm_int64(r, 4) != 0, "state", ag_rm_text(r, 5)));
    return 0;
}

/* Without a server: every read model's ag_parked (SQLite files in the directory). */
static json_t *local_list(const char *uri)
{
    const char *path = strncmp(uri, "sqlite:", 7) == 0 ? uri + 7 : uri;
    DIR *d = opendir(path);
    if (!d) return NULL;
    json_t *items = json_array();
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 4 || strcmp(e->d_name + n - 3, ".db") != 0) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n - 3), e->d_name);
        struct ag_rm *rm;
        if (ag_rm_open(uri, name, AG_RM_READONLY, &rm, NULL)) continue;
        struct rows c = {items, name};
        ag_rm_query(rm,
                    "SELECT position, stream, type, error, waiting, state FROM ag_parked"
                    " WHERE state = 'parked' ORDER BY position",
                    NULL, 0, row, &c, NULL); /* older files have no ag_parked: none */
        ag_rm_close(rm);
    }
    closedir(d);
    return items;
}

static int print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (s) puts(s);
    ag_free(s);
    return s ? 0 : 1;
}

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    const char *data = getenv("AGORA_DATA"), *rms = getenv("AGORA_READMODELS"), *sub = NULL,
               *id = NULL;
    if (!data || !*data) data = "./data";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strcmp(argv[i], "--readmodels") == 0 && i + 1 < argc)
            rms = argv[++i];
        else if (argv[i][0] == '-')
            return ag_cli_usage_error("dlq: unknown option '%s' (see 'agora dlq --help')", argv[i]);
        else if (!sub)
            sub = argv[i];
        else if (!id)
            id = argv[i];
        else
            return ag_cli_usage_error("dlq: too many arguments");
    }
    bool list = sub && strcmp(sub, "list") == 0, show = sub && strcmp(sub, "show") == 0,
         replay = sub && strcmp(sub, "replay") == 0, drop = sub && strcmp(sub, "drop") == 0;
    if (!list && !show && !replay && !drop)
        return ag_cli_usage_error("dlq: list, show ID, replay ID or drop ID");
    if (!list && (!id || strlen(id) > 120 || strchr(id, ' ') || strchr(id, '/')))
        return ag_cli_usage_error("dlq %s: which dead letter (an id from 'agora dlq list')", sub);
    if (list && id) return ag_cli_usage_error("dlq list takes no id");

    if (replay || drop) {
        char path[200];
        snprintf(path, sizeof path, replay ? "/admin/dlq/%s/replay" : "/admin/dlq/%s", id);
        struct ag_buf b;
        ag_buf_init(&b);
        int status = ask(data, replay ? "POST" : "DELETE", path, &b);
        if (!status) {
            fprintf(stderr,
                    "agora dlq %s: no agora runs on %s: a dead letter is resolved by the consumer "
                    "that parked it; start agora run and try again\n",
                    sub, data);
            ag_buf_free(&b);
            return 1;
        }
        if (b.len) printf("%.*s\n", (int)b.len, b.data);
        if (status != 200) fprintf(stderr, "agora dlq %s: the server answered %d\n", sub, status);
        ag_buf_free(&b);
        return status == 200 ? 0 : 1;
    }
    int status = 0;
    json_t *items = remote_list(data, &status);
    if (!items && status) {
        fprintf(stderr, "agora dlq %s: the server answered %d\n", sub, status);
        return 1;
    }
    if (!items) {
        char def[1100];
        snprintf(def, sizeof def, "%s/readmodels", data);
        items = local_list(rms && *rms ? rms : def);
    }
    if (!items) {
        fprintf(stderr, "agora dlq %s: no agora runs on %s and it has no read models\n", sub, data);
        return 1;
    }
    int rc = 0;
    if (list) {
        rc = print_json(items);
    } else {
        json_t *found = NULL, *e;
        size_t k;
        json_array_foreach(
            items, k, e) if (strcmp(json_string_value(json_object_get(e, "id")) ?: "", id) == 0)
            found = e;
        if (found)
            rc = print_json(found);
        else
            fprintf(stderr, "agora dlq show: no dead letter %s\n", id), rc = 1;
    }
    json_decref(items);
    return rc;
}

const struct ag_cli_cmd ag_cli_cmd_dlq = {"dlq", "list, show, replay and drop dead letters", run};
