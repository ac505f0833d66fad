/* ag_es_execute_multi: one decision over several aggregates, appended whole with
 * each stream's exact version; conflicts re-decided on fresh state; racing with
 * single-aggregate commands and with multi commands in the other order (no
 * deadlock, exact totals); extra parts (ag_es_execute_multi_extra) in the same
 * append. A tiny counter aggregate stands in for the domain. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/es.h"
#include "agora/store_log.h"

#include "es_fixture.h"

struct mcount {
    long long total;
};

static void m_init(void *s)
{
    memset(s, 0, sizeof(struct mcount));
}
static void m_free(void *s)
{
    AG_UNUSED(s);
}
static int m_evolve(void *s, const char *type, const json_t *d)
{
    if (strcmp(type, "Added") == 0)
        ((struct mcount *)s)->total += json_integer_value(json_object_get(d, "n"));
    return 0;
}
static json_t *m_snapshot(const void *s)
{
    return json_pack("{s:I}", "total", (json_int_t)((const struct mcount *)s)->total);
}
static int m_restore(void *s, const json_t *j)
{
    ((struct mcount *)s)->total = json_integer_value(json_object_get(j, "total"));
    return 0;
}
static const struct ag_es_type mcount_type = {
    "mc", sizeof(struct mcount), m_init, m_free, m_evolve, m_snapshot, m_restore};

static struct es_fx fx; /* a temporary log store and a repository over it */

static void setup(void)
{
    es_fx_open(&fx, "esm", (struct ag_es_repo_config){.snapshot_every = 10});
}

static void teardown(void)
{
    es_fx_close(&fx);
}

TestSuite(multi, .init = setup, .fini = teardown);

/* Add n[i] to part i (0: nothing); refuse when part 0 would pass `limit`. */
struct madd {
    int n[4];
    long long limit;
    int calls;
    int sneak; /* append this to part 0 behind the repository's back, once */
};

static int decide_madd(void *const *states, const int64_t *versions, void *ud,
                       struct ag_es_batch *outs, struct ag_err *err)
{
    AG_UNUSED(versions);
    struct madd *a = ud;
    a->calls++;
    if (a->sneak) {
        struct ag_event_data ev = {
            .type = "Added", .type_len = 5, .data = "{\"n\":100}", .data_len = 9};
        cr_assert_eq(ag_store_append(fx.store, "mc-a", 4, AG_STORE_ANY, &ev, 1, NULL, NULL), 0);
        a->sneak = 0;
    }
    const struct mcount *c0 = states[0];
    if (a->limit && c0->total + a->n[0] > a->limit)
        return ag_err_set(err, AG_EDOMAIN, "limit %lld reached", a->limit);
    for (int i = 0; i < 4; i++)
        if (a->n[i] && ag_es_batch_push(&outs[i], "Added", json_pack("{s:i}", "n", a->n[i])))
            return ag_err_set(err, AG_ENOMEM, "out of memory");
    return 0;
}

static int64_t version_of(const char *s)
{
    int64_t v;
    ag_store_stream_version(fx.store, s, strlen(s), &v);
    return v;
}

static void view_total(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    *(long long *)ud = ((const struct mcount *)state)->total;
}

static long long total_of(const char *s)
{
    long long t = -1;
    cr_assert_eq(ag_es_read(fx.repo, &mcount_type, s, view_total, &t, NULL), 0);
    return t;
}

Test(multi, appends_every_part_together)
{
    const struct ag_es_part parts[] = {{&mcount_type, "mc-b"}, {&mcount_type, "mc-a"}};
    struct madd a = {{2, 3}, 0, 0, 0};
    struct ag_es_multi_cmd c = {parts, 2, decide_madd, &a, "{\"actor\":\"t\"}"};
    struct ag_es_result res;
    for (int i = 0; i < 12; i++) cr_assert_eq(ag_es_execute_multi(fx.repo, &c, &res, NULL), 0);
    cr_assert_eq(res.appended, 2);
    cr_assert_eq(version_of("mc-b"), 11);
    cr_assert_eq(version_of("mc-a"), 11);
    cr_assert_eq(total_of("mc-b"), 24);
    cr_assert_eq(total_of("mc-a"), 36);
    /* the two events of a command are consecutive in $all, in part order */
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(fx.store, 0, AG_READ_FORWARD, 2, &p, NULL), 0);
    cr_assert_eq(p.count, 2);
    cr_assert_eq(memcmp(p.events[0].stream, "mc-b", 4), 0);
    cr_assert_eq(memcmp(p.events[1].stream, "mc-a", 4), 0);
    cr_assert_eq(memcmp(p.events[1].metadata, "{\"actor\":\"t\"}", p.events[1].metadata_len), 0);
    ag_event_page_free(&p);
    struct ag_snapshot snap;
    cr_assert_eq(ag_store_load_snapshot(fx.store, "mc-a", 4, &snap, NULL), 0, "snapshot every 10");
    ag_snapshot_free(&snap);
}

Test(multi, nothing_or_a_refusal_appends_nothing)
{
    const struct ag_es_part parts[] = {{&mcount_type, "mc-a"}, {&mcount_type, "mc-b"}};
    struct madd none = {{0, 0}, 0, 0, 0};
    struct ag_es_multi_cmd c = {parts, 2, decide_madd, &none, NULL};
    cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, NULL), 0);
    struct madd refused = {{5, 1}, 4, 0, 0};
    c.ud = &refused;
    struct ag_err err;
    cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, &err), AG_EDOMAIN);
    cr_assert(strstr(err.msg, "limit 4"));
    cr_assert_eq(version_of("mc-a"), -1);
    cr_assert_eq(version_of("mc-b"), -1);
    /* one part with events: only it is appended */
    struct madd one = {{0, 7}, 0, 0, 0};
    c.ud = &one;
    cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, NULL), 0);
    cr_assert_eq(version_of("mc-a"), -1);
    cr_assert_eq(total_of("mc-b"), 7);
    const struct ag_es_part twice[] = {{&mcount_type, "mc-a"}, {&mcount_type, "mc-a"}};
    c.parts = twice;
    cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, &err), AG_EINVAL);
}

Test(multi, conflict_is_decided_again_on_fresh_state)
{
    const struct ag_es_part parts[] = {{&mcount_type, "mc-a"}, {&mcount_type, "mc-b"}};
    struct madd a = {{1, 1}, 0, 0, 0};
    struct ag_es_multi_cmd c = {parts, 2, decide_madd, &a, NULL};
    cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, NULL), 0); /* loads both */
    /* another writer appends to mc-a after the state was read: the first append
     * conflicts and nothing of it lands; the second decision sees 101 */
    struct madd b = {{1, 1}, 101, 0, 1};
    c.ud = &b;
    struct ag_err err;
    cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, &err), AG_EDOMAIN, "%s", err.msg);
    cr_assert_eq(b.calls, 2);
    cr_assert_eq(total_of("mc-a"), 101);
    cr_assert_eq(total_of("mc-b"), 1, "mc-b got nothing from the conflicted command");
    struct madd d = {{1, 1}, 0, 0, 1};
    c.ud = &d;
    cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, NULL), 0);
    cr_assert_eq(d.calls, 2);
    cr_assert_eq(total_of("mc-a"), 202);
    cr_assert_eq(total_of("mc-b"), 2);
}

static int decide_one(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                      struct ag_err *err)
{
    AG_UNUSED(state), AG_UNUSED(version), AG_UNUSED(ud), AG_UNUSED(err);
    return ag_es_batch_push(out, "Added", json_pack("{s:i}", "n", 1));
}

/* Threads racing: multi (a, b), multi (b, a), and on a single-aggregate commands
 * (batched by the entry's leader) and one-part multi commands. */
#define ROUNDS 150
static void *racer(void *arg)
{
    int kind = (int)(intptr_t)arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (kind == 2 && i % 2) {
            struct ag_es_cmd c = {&mcount_type, "mc-a", decide_one, NULL, NULL, NULL, NULL};
            cr_assert_eq(ag_es_execute(fx.repo, &c, NULL, NULL), 0);
            continue;
        }
        if (kind == 2) {
            struct ag_es_part one[] = {{&mcount_type, "mc-a"}};
            struct madd a = {{1}, 0, 0, 0};
            struct ag_es_multi_cmd c = {one, 1, decide_madd, &a, NULL};
            cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, NULL), 0);
            continue;
        }
        struct ag_es_part ab[] = {{&mcount_type, kind ? "mc-b" : "mc-a"},
                                  {&mcount_type, kind ? "mc-a" : "mc-b"}};
        struct madd a = {{kind ? 10 : 1, kind ? 1 : 10}, 0, 0, 0};
        struct ag_es_multi_cmd c = {ab, 2, decide_madd, &a, NULL};
        cr_assert_eq(ag_es_execute_multi(fx.repo, &c, NULL, NULL), 0);
    }
    return NULL;
}

Test(multi, racing_commands_neither_deadlock_nor_lose_updates)
{
    pthread_t t[6];
    for (int i = 0; i < 6; i++) pthread_create(&t[i], NULL, racer, (void *)(intptr_t)(i % 3));
    for (int i = 0; i < 6; i++) pthread_join(t[i], NULL);
    /* a: 2 threads x ROUNDS x (1 + 1 + 1); b: 2 x ROUNDS x (10 + 10) */
    cr_assert_eq(total_of("mc-a"), 2LL * ROUNDS * 3);
    cr_assert_eq(total_of("mc-b"), 2LL * ROUNDS * 20);
    cr_assert_eq(version_of("mc-a"), 2 * ROUNDS * 3 - 1);
}

Test(multi, extra_parts_commit_in_the_same_append)
{
    const struct ag_es_part parts[] = {{&mcount_type, "mc-a"}, {&mcount_type, "mc-b"}};
    struct madd a = {{1, 2}, 0, 0, 0};
    struct ag_es_multi_cmd c = {parts, 2, decide_madd, &a, NULL};
    struct ag_event_data ev = {.type = "Claimed", .type_len = 7, .data = "{}", .data_len = 2};
    struct ag_append_part claim = {"claim-x", 7, AG_STORE_NO_STREAM, &ev, 1};
    struct ag_es_result res;
    cr_assert_eq(ag_es_execute_multi_extra(fx.repo, &c, &claim, 1, &res, NULL), 0);
    cr_assert_eq(res.appended, 2, "the aggregates' events");
    cr_assert_eq(version_of("claim-x"), 0);
    /* the three parts are one unit: consecutive in $all, in part order */
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(fx.store, 0, AG_READ_FORWARD, 3, &p, NULL), 0);
    cr_assert_eq(p.count, 3);
    cr_assert_eq(memcmp(p.events[0].stream, "mc-a", 4), 0);
    cr_assert_eq(memcmp(p.events[2].stream, "claim-x", 7), 0);
    ag_event_page_free(&p);
    /* a conflict on the extra part: AG_ECONFLICT, decided once, nothing written */
    a.calls = 0;
    struct ag_err err;
    cr_assert_eq(ag_es_execute_multi_extra(fx.repo, &c, &claim, 1, NULL, &err), AG_ECONFLICT);
    cr_assert_eq(a.calls, 1, "not retried: the part is not the aggregates'");
    cr_assert(strstr(err.msg, "claim-x"), "%s", err.msg);
    cr_assert_eq(version_of("mc-a"), 0);
    cr_assert_eq(version_of("mc-b"), 0);
    cr_assert_eq(total_of("mc-b"), 2);
    /* nothing decided: the extra part alone */
    struct madd none = {{0, 0}, 0, 0, 0};
    c.ud = &none;
    claim.expected_version = 0;
    cr_assert_eq(ag_es_execute_multi_extra(fx.repo, &c, &claim, 1, NULL, NULL), 0);
    cr_assert_eq(version_of("claim-x"), 1);
    cr_assert_eq(version_of("mc-a"), 0);
}
