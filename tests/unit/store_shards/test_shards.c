/* What only the shard router has (src/store/shard): URI checks, routing by
 * aggregate id, $all over shards (positions, cursors, one-off scans), cross-shard
 * units and their completion after a crash, the layout check and adding a shard. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "agora/store_shard.h"

static char dir[64];
static char uri2[256], uri3[256];

static void setup(void)
{
    strcpy(dir, "/tmp/agora-shards-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(uri2, sizeof uri2, "shards:file:%s/s0,file:%s/s1", dir, dir);
    snprintf(uri3, sizeof uri3, "shards:file:%s/s0,file:%s/s1,file:%s/s2", dir, dir, dir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(shards, .init = setup, .fini = teardown);

static struct ag_store *open_uri(const char *uri)
{
    struct ag_store_options o = {.no_sync = true};
    struct ag_store *s = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_open(uri, &o, &s, &err);
    cr_assert_eq(rc, 0, "%s: %s", uri, ag_err_msg(&err, rc));
    return s;
}

static int open_fails(const char *uri, struct ag_err *err)
{
    struct ag_store_options o = {.no_sync = true};
    struct ag_store *s = NULL;
    ag_err_clear(err);
    int rc = ag_store_open(uri, &o, &s, err);
    if (!rc) ag_store_close(s);
    return rc;
}

static void append(struct ag_store *s, const char *stream, int n)
{
    struct ag_event_data e = {.type = "T", .type_len = 1, .data = "{}", .data_len = 2};
    for (int i = 0; i < n; i++)
        cr_assert_eq(ag_store_append(s, stream, strlen(stream), AG_STORE_ANY, &e, 1, NULL, NULL),
                     0);
}

/* A stream name whose aggregate id lands on shard `k` of `s`. */
static void name_on(struct ag_store *s, const char *prefix, size_t k, int from, char *out, size_t n)
{
    for (int i = from;; i++) {
        snprintf(out, n, "%s-%d", prefix, i);
        if (ag_store_shard_of(s, out, strlen(out)) == k) return;
    }
}

Test(shards, bad_uris_say_what_is_wrong)
{
    struct ag_err err;
    char u[512];
    cr_assert_eq(open_fails("shards:", &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "names no shard"), "%s", err.msg);
    snprintf(u, sizeof u, "shards:file:%s/a,,file:%s/b", dir, dir);
    cr_assert_eq(open_fails(u, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "shard 1 is empty"), "%s", err.msg);
    snprintf(u, sizeof u, "shards:file:%s/a,file:%s/a", dir, dir);
    cr_assert_eq(open_fails(u, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "is both shard 0 and shard 1"), "%s", err.msg);
    snprintf(u, sizeof u, "shards:file:%s/a,postgresql://localhost/x", dir);
    cr_assert_eq(open_fails(u, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "one scheme"), "%s", err.msg);
    snprintf(u, sizeof u, "shards:shards:file:%s/a", dir);
    cr_assert_eq(open_fails(u, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "cannot be 'shards:'"), "%s", err.msg);
}

Test(shards, streams_of_one_id_share_a_shard_and_ids_spread)
{
    struct ag_store *s = open_uri(uri2);
    size_t count[2] = {0};
    for (int i = 0; i < 2000; i++) {
        char id[32], a[64], b[64], c[64];
        snprintf(id, sizeof id, "%08x-order", (unsigned)i * 2654435761u);
        snprintf(a, sizeof a, "order-%s", id);
        snprintf(b, sizeof b, "payment-%s", id);
        snprintf(c, sizeof c, "saga-%s", id);
        size_t k = ag_store_shard_of(s, a, strlen(a));
        cr_assert_eq(ag_store_shard_of(s, b, strlen(b)), k);
        cr_assert_eq(ag_store_shard_of(s, c, strlen(c)), k);
        count[k]++;
    }
    cr_assert(count[0] > 850 && count[1] > 850, "spread: %zu / %zu", count[0], count[1]);
    ag_store_close(s);
}

Test(shards, positions_name_the_shard_and_reads_go_there)
{
    struct ag_store *s = open_uri(uri2);
    char a[64], b[64];
    name_on(s, "acc", 0, 0, a, sizeof a);
    name_on(s, "acc", 1, 0, b, sizeof b);
    append(s, a, 3);
    append(s, b, 2);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(s, b, strlen(b), 0, AG_READ_FORWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 2);
    cr_assert_eq(ag_store_pos_shard(p.events[0].position), 1);
    cr_assert_eq(ag_store_pos_local(p.events[1].position),
                 ag_store_pos_local(p.events[0].position) + 1);
    ag_event_page_free(&p);
    /* a one-off scan of $all: shard 0 to its end, then shard 1 */
    size_t seen[2] = {0};
    uint64_t from = 0;
    for (bool end = false; !end;) {
        cr_assert_eq(ag_store_read_all(s, from, AG_READ_FORWARD, 2, &p, NULL), 0);
        for (size_t i = 0; i < p.count; i++)
            if (p.events[i].stream[0] != '_') seen[ag_store_pos_shard(p.events[i].position)]++;
        end = p.end || !p.count;
        from = p.next_position;
        ag_event_page_free(&p);
    }
    cr_assert_eq(seen[0], 3);
    cr_assert_eq(seen[1], 2);
    /* backward from the end starts at the last shard */
    cr_assert_eq(ag_store_read_all(s, UINT64_MAX, AG_READ_BACKWARD, 1, &p, NULL), 0);
    cr_assert_eq(ag_store_pos_shard(p.events[0].position), 1);
    cr_assert(p.events[0].stream_len == strlen(b) && memcmp(p.events[0].stream, b, strlen(b)) == 0);
    ag_event_page_free(&p);
    ag_store_close(s);
}

Test(shards, a_cursor_subscription_sees_every_event_once_in_stream_order)
{
    struct ag_store *s = open_uri(uri2);
    struct ag_store_sub *sub;
    cr_assert_eq(ag_store_subscribe_cursor(s, NULL, &sub, NULL), 0);
    for (int i = 0; i < 40; i++) {
        char st[32];
        snprintf(st, sizeof st, "x-%d", i % 8);
        append(s, st, 1);
    }
    int64_t last[8];
    for (int i = 0; i < 8; i++) last[i] = -1;
    int got = 0;
    while (got < 40) {
        struct ag_event_page p;
        cr_assert_eq(ag_store_sub_next(sub, 7, 2000, &p, NULL), 0);
        for (size_t i = 0; i < p.count; i++) {
            if (p.events[i].stream[0] == '_') continue;
            int k = p.events[i].stream[2] - '0';
            cr_assert_eq(p.events[i].version, last[k] + 1, "stream order kept");
            last[k] = p.events[i].version;
            got++;
        }
        ag_event_page_free(&p);
    }
    struct ag_store_cursor c;
    ag_store_sub_cursor(sub, &c);
    cr_assert_eq(c.n, 2);
    char text[64];
    ag_store_cursor_format(&c, text, sizeof text);
    struct ag_store_cursor back;
    cr_assert_eq(ag_store_cursor_parse(text, &back), 0);
    cr_assert_eq(back.n, 2);
    cr_assert_eq(back.next[1], c.next[1]);
    ag_store_sub_free(sub);
    /* from the saved cursor: nothing again, then the next event (live) */
    cr_assert_eq(ag_store_subscribe_cursor(s, &back, &sub, NULL), 0);
    struct ag_event_page p;
    cr_assert_eq(ag_store_sub_next(sub, 10, 50, &p, NULL), AG_ETIMEDOUT);
    append(s, "x-3", 1);
    cr_assert_eq(ag_store_sub_next(sub, 10, 2000, &p, NULL), 0);
    cr_assert_eq(p.count, 1);
    cr_assert(ag_store_cursor_covers(&back, p.events[0].position) == false);
    ag_event_page_free(&p);
    ag_store_sub_free(sub);
    ag_store_close(s);
}

static struct ag_event_data evid(const char *type, unsigned char id)
{
    struct ag_event_data e = {.type = type, .type_len = strlen(type), .data = "{}", .data_len = 2};
    e.id.b[0] = 0x01;
    e.id.b[15] = id;
    return e;
}

Test(shards, a_unit_over_two_shards_is_written_whole)
{
    struct ag_store *s = open_uri(uri2);
    char a[64], b[64];
    name_on(s, "stock", 0, 0, a, sizeof a);
    name_on(s, "reservation", 1, 0, b, sizeof b);
    struct ag_event_data ea = evid("Held", 1), eb = evid("Made", 2);
    struct ag_append_part p[2] = {{a, strlen(a), AG_STORE_NO_STREAM, &ea, 1},
                                  {b, strlen(b), AG_STORE_NO_STREAM, &eb, 1}};
    struct ag_append_result r[2];
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(s, p, 2, r, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_store_pos_shard(r[0].first_position), 0);
    cr_assert_eq(ag_store_pos_shard(r[1].first_position), 1);
    int64_t v;
    cr_assert_eq(ag_store_stream_version(s, b, strlen(b), &v), 0);
    cr_assert_eq(v, 0);
    /* a conflict on the far shard writes nothing anywhere */
    struct ag_event_data ea2 = evid("Held", 3), eb2 = evid("Made", 4);
    struct ag_append_part q[2] = {{a, strlen(a), 0, &ea2, 1}, {b, strlen(b), 5, &eb2, 1}};
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(s, q, 2, NULL, &err), AG_ECONFLICT);
    cr_assert_eq(err.aux, 0);
    cr_assert_eq(ag_store_stream_version(s, a, strlen(a), &v), 0);
    cr_assert_eq(v, 0, "the coordinator's part was not written");
    /* the same unit again: the original results */
    struct ag_append_result r2[2];
    cr_assert_eq(ag_store_append_multi(s, p, 2, r2, NULL), 0);
    cr_assert_eq(memcmp(r, r2, sizeof r), 0);
    ag_store_close(s);
}

/* The crash between the coordinator's append and the others': the intent is
 * there, the far part is not; the next open completes it. */
Test(shards, an_interrupted_unit_is_completed_at_open)
{
    struct ag_store *s = open_uri(uri2);
    char far[64];
    name_on(s, "reservation", 1, 0, far, sizeof far);
    ag_store_close(s);
    char u0[128];
    snprintf(u0, sizeof u0, "file:%s/s0", dir);
    struct ag_store *m = open_uri(u0);
    char intent[512];
    snprintf(
        intent, sizeof intent,
        "{\"parts\":[{\"shard\":1,\"expected\":-1,\"stream\":\"%s\",\"events\":[{\"id\":"
        "\"01000000-0000-7000-8000-000000000009\",\"type\":\"Made\",\"data\":\"{\\\"q\\\":1}\","
        "\"metadata\":\"\"}]}]}",
        far);
    struct ag_event_data ev = {
        .type = "CrossShardUnit", .type_len = 14, .data = intent, .data_len = strlen(intent)};
    cr_assert_eq(ag_store_append(m, "_xshard-0", 9, AG_STORE_ANY, &ev, 1, NULL, NULL), 0);
    ag_store_close(m);
    s = open_uri(uri2);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(s, far, strlen(far), 0, AG_READ_FORWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 1);
    cr_assert_eq(p.events[0].data_len, 7);
    cr_assert_eq(memcmp(p.events[0].data, "{\"q\":1}", 7), 0, "the exact bytes");
    ag_event_page_free(&p);
    ag_store_close(s);
    /* and only once: a second open finds it done */
    s = open_uri(uri2);
    cr_assert_eq(ag_store_read_stream(s, far, strlen(far), 0, AG_READ_FORWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 1);
    ag_event_page_free(&p);
    ag_store_close(s);
}

struct actx {
    int done, status;
    struct ag_append_result res;
};

static void on_multi(void *ud, int status, const struct ag_append_result *res,
                     const struct ag_err *err)
{
    (void)err;
    struct actx *c = ud;
    c->done++;
    c->status = status;
    if (res) c->res = *res;
}

Test(shards, async_units_complete_on_the_loop_one_shard_or_two)
{
    struct ag_store *s = open_uri(uri2);
    char a[64], b[64], a2[64];
    name_on(s, "stock", 0, 0, a, sizeof a);
    name_on(s, "reservation", 1, 0, b, sizeof b);
    name_on(s, "payment", 1, 0, a2, sizeof a2);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ag_store_loop *l;
    cr_assert_eq(ag_store_loop_init(s, &loop, &l), 0);
    struct ag_event_data e1 = evid("A", 11), e2 = evid("B", 12), e3 = evid("C", 13);
    struct ag_append_part two[2] = {{a, strlen(a), AG_STORE_NO_STREAM, &e1, 1},
                                    {b, strlen(b), AG_STORE_NO_STREAM, &e2, 1}};
    struct ag_event_data e4 = evid("D", 14);
    struct ag_append_part one[2] = {{a2, strlen(a2), AG_STORE_NO_STREAM, &e3, 1},
                                    {b, strlen(b), 0, &e4, 1}};
    struct ag_append_result r1[2], r2[2];
    struct actx c1 = {0}, c2 = {0};
    struct ag_append_multi_req m1 = {
        .parts = two, .nparts = 2, .results = r1, .cb = on_multi, .ud = &c1};
    cr_assert_eq(ag_store_append_multi_async(l, &m1), 0);
    while (!c1.done) uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(c1.status, 0);
    cr_assert_eq(ag_store_pos_shard(r1[1].first_position), 1);
    struct ag_append_multi_req m2 = {
        .parts = one, .nparts = 2, .results = r2, .cb = on_multi, .ud = &c2};
    cr_assert_eq(ag_store_append_multi_async(l, &m2), 0);
    while (!c2.done) uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(c2.status, 0);
    cr_assert_eq(ag_store_pos_shard(r2[0].first_position), 1, "one shard: its positions");
    cr_assert_eq(ag_store_pos_shard(c2.res.first_position), 1);
    ag_store_loop_close(l);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    ag_store_close(s);
}

Test(shards, the_layout_refuses_a_reordered_short_or_grown_list)
{
    struct ag_store *s = open_uri(uri2);
    append(s, "a-1", 1);
    ag_store_close(s);
    struct ag_err err;
    char u[512];
    snprintf(u, sizeof u, "shards:file:%s/s1,file:%s/s0", dir, dir);
    cr_assert_eq(open_fails(u, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "original order"), "%s", err.msg);
    snprintf(u, sizeof u, "shards:file:%s/s0", dir);
    cr_assert_eq(open_fails(u, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "one is missing"), "%s", err.msg);
    cr_assert_eq(open_fails(uri3, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "add-shard"), "%s", err.msg);
}

Test(shards, adding_a_shard_keeps_every_stream_where_it_is)
{
    struct ag_store *s = open_uri(uri2);
    size_t was[300];
    for (int i = 0; i < 300; i++) {
        char st[32];
        snprintf(st, sizeof st, "order-%d", i);
        append(s, st, 1);
        was[i] = ag_store_shard_of(s, st, strlen(st));
    }
    ag_store_close(s);
    char u[512];
    snprintf(u, sizeof u, "file:%s/s2", dir);
    size_t pinned = 0;
    struct ag_err err;
    ag_err_clear(&err);
    struct ag_store_options o = {.no_sync = true};
    int rc = ag_store_shard_add(uri2 + 7, u, &o, &pinned, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert(pinned > 50 && pinned < 150, "about a third pinned: %zu", pinned);
    cr_assert_eq(open_fails(uri2, &err), AG_EINVAL, "the old list is refused now");
    s = open_uri(uri3);
    for (int i = 0; i < 300; i++) {
        char st[32];
        snprintf(st, sizeof st, "order-%d", i);
        cr_assert_eq(ag_store_shard_of(s, st, strlen(st)), was[i], "%s stays", st);
        int64_t v;
        cr_assert_eq(ag_store_stream_version(s, st, strlen(st), &v), 0);
        cr_assert_eq(v, 0, "%s is readable", st);
    }
    size_t on_new = 0;
    for (int i = 300; i < 600; i++) {
        char st[32];
        snprintf(st, sizeof st, "order-%d", i);
        on_new += ag_store_shard_of(s, st, strlen(st)) == 2;
    }
    cr_assert(on_new > 50, "new ids use the new shard: %zu of 300", on_new);
    ag_store_close(s);
    /* adding needs an empty new store */
    ag_err_clear(&err);
    snprintf(u, sizeof u, "file:%s/s1", dir);
    cr_assert_neq(ag_store_shard_add(uri3 + 7, u, &o, NULL, &err), 0);
}
