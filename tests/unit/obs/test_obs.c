/* Metrics registry, Prometheus exposition, trace context, request ids, health. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/obs.h"

Test(metrics, counter_gauge_histogram_values)
{
    struct ag_obs_registry *r;
    cr_assert_eq(ag_obs_registry_new(&r), 0);
    struct ag_obs_family *c, *g, *h, *again;
    const char *labels[] = {"route"};
    const double bounds[] = {0.1, 1};
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_COUNTER, "t_total", "help", 1, labels, NULL, 0, &c),
                 0);
    cr_assert_eq(
        ag_obs_family_new(r, AG_OBS_COUNTER, "t_total", "help", 1, labels, NULL, 0, &again), 0);
    cr_assert_eq(c, again, "same name and shape returns the family");
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_GAUGE, "t_total", "h", 0, NULL, NULL, 0, &again),
                 AG_EEXISTS);
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_GAUGE, "t_g", "h", 0, NULL, NULL, 0, &g), 0);
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_HISTOGRAM, "t_h", "h", 0, NULL, bounds, 2, &h), 0);
    struct ag_obs_series *s1, *s2, *sg, *sh;
    const char *a[] = {"/a"}, *b[] = {"/b"};
    ag_obs_series_get(c, a, &s1);
    ag_obs_series_get(c, b, &s2);
    ag_obs_series_get(g, NULL, &sg);
    ag_obs_series_get(h, NULL, &sh);
    ag_obs_counter_add(s1, 3);
    ag_obs_counter_inc(s2);
    ag_obs_gauge_add(sg, 2.5);
    ag_obs_gauge_add(sg, -1);
    ag_obs_histogram_observe(sh, 0.05);
    ag_obs_histogram_observe(sh, 0.5);
    ag_obs_histogram_observe(sh, 7);
    cr_assert_eq(ag_obs_counter_value(s1), 3);
    cr_assert_float_eq(ag_obs_gauge_value(sg), 1.5, 1e-9);
    uint64_t cum[3], n;
    double sum;
    ag_obs_histogram_value(sh, cum, &sum, &n);
    cr_assert(cum[0] == 1 && cum[1] == 2 && cum[2] == 3 && n == 3);
    cr_assert_float_eq(sum, 7.55, 1e-9);
    ag_obs_gauge_set(sg, 10);
    cr_assert_float_eq(ag_obs_gauge_value(sg), 10, 1e-9);
    ag_obs_registry_free(r);
}

Test(metrics, invalid_names_refused)
{
    struct ag_obs_registry *r;
    ag_obs_registry_new(&r);
    struct ag_obs_family *f;
    const char *bad[] = {"__x"}, *le[] = {"le"};
    const double unsorted[] = {1, 0.5};
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_COUNTER, "9bad", "", 0, NULL, NULL, 0, &f), AG_EINVAL);
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_COUNTER, "ok", "", 1, bad, NULL, 0, &f), AG_EINVAL);
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_HISTOGRAM, "h", "", 1, le, NULL, 0, &f), AG_EINVAL);
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_HISTOGRAM, "h", "", 0, NULL, unsorted, 2, &f),
                 AG_EINVAL);
    ag_obs_registry_free(r);
}

struct hammer {
    struct ag_obs_series *s;
    struct ag_obs_series *h;
};

static void *hammer_thread(void *arg)
{
    struct hammer *hm = arg;
    for (int i = 0; i < 100000; i++) {
        ag_obs_counter_inc(hm->s);
        ag_obs_histogram_observe(hm->h, 0.001);
    }
    return NULL;
}

Test(metrics, shards_merge_exactly_across_threads)
{
    struct ag_obs_registry *r;
    ag_obs_registry_new(&r);
    struct ag_obs_family *c, *h;
    ag_obs_family_new(r, AG_OBS_COUNTER, "x_total", "", 0, NULL, NULL, 0, &c);
    ag_obs_family_new(r, AG_OBS_HISTOGRAM, "x_seconds", "", 0, NULL, NULL, 0, &h);
    struct hammer hm;
    ag_obs_series_get(c, NULL, &hm.s);
    ag_obs_series_get(h, NULL, &hm.h);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer_thread, &hm);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    cr_assert_eq(ag_obs_counter_value(hm.s), 400000);
    uint64_t n;
    ag_obs_histogram_value(hm.h, NULL, NULL, &n);
    cr_assert_eq(n, 400000);
    ag_obs_registry_free(r);
}

static struct ag_buf render_sample(void)
{
    struct ag_obs_registry *r;
    ag_obs_registry_new(&r);
    struct ag_obs_family *c, *h;
    const char *labels[] = {"path"};
    ag_obs_family_new(r, AG_OBS_COUNTER, "demo_requests_total", "Requests with \\ and\nnewline.", 1,
                      labels, NULL, 0, &c);
    ag_obs_family_new(r, AG_OBS_HISTOGRAM, "demo_duration_seconds", "Durations.", 1, labels, NULL,
                      0, &h);
    struct ag_obs_series *s;
    const char *v[] = {"a\"b\\c\nd"};
    ag_obs_series_get(c, v, &s);
    ag_obs_counter_add(s, 5);
    ag_obs_series_get(h, v, &s);
    ag_obs_histogram_observe(s, 0.003);
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_obs_registry_render(r, &b), 0);
    ag_obs_registry_free(r);
    return b;
}

/* A collector: copies a plain value into a gauge (it defines the family itself). */
static void collect_demo(void *ud)
{
    struct ag_obs_registry *r = ((void **)ud)[0];
    int *source = ((void **)ud)[1];
    struct ag_obs_family *f;
    struct ag_obs_series *s;
    cr_assert_eq(ag_obs_family_new(r, AG_OBS_GAUGE, "demo_writable", "Demo.", 0, NULL, NULL, 0, &f),
                 0);
    cr_assert_eq(ag_obs_series_get(f, NULL, &s), 0);
    ag_obs_gauge_set(s, *source);
}

Test(metrics, collectors_run_before_each_render)
{
    struct ag_obs_registry *r;
    cr_assert_eq(ag_obs_registry_new(&r), 0);
    int source = 1;
    void *ud[] = {r, &source};
    cr_assert_eq(ag_obs_registry_collector(r, collect_demo, ud), 0);
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_obs_registry_render(r, &b), 0);
    cr_assert(strstr(b.data, "demo_writable 1\n"), "%s", b.data);
    source = 0;
    ag_buf_reset(&b);
    cr_assert_eq(ag_obs_registry_render(r, &b), 0);
    cr_assert(strstr(b.data, "demo_writable 0\n"), "%s", b.data);
    ag_buf_free(&b);
    ag_obs_registry_free(r);
}

Test(metrics, exposition_text_format)
{
    struct ag_buf b = render_sample();
    cr_assert(strstr(b.data, "# HELP demo_requests_total Requests with \\\\ and\\nnewline.\n"),
              "%s", b.data);
    cr_assert(strstr(b.data, "# TYPE demo_requests_total counter\n"));
    cr_assert(strstr(b.data, "demo_requests_total{path=\"a\\\"b\\\\c\\nd\"} 5\n"));
    cr_assert(
        strstr(b.data, "demo_duration_seconds_bucket{path=\"a\\\"b\\\\c\\nd\",le=\"0.0025\"} 0\n"));
    cr_assert(
        strstr(b.data, "demo_duration_seconds_bucket{path=\"a\\\"b\\\\c\\nd\",le=\"0.005\"} 1\n"));
    cr_assert(
        strstr(b.data, "demo_duration_seconds_bucket{path=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 1\n"));
    cr_assert(strstr(b.data, "demo_duration_seconds_count{path=\"a\\\"b\\\\c\\nd\"} 1\n"));
    ag_buf_free(&b);
}

Test(metrics, promtool_accepts_exposition)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) cr_skip_test("promtool not installed");
    struct ag_buf b = render_sample();
    char path[] = "/tmp/ag_obs_prom_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, b.data, b.len), (ssize_t)b.len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    ag_buf_free(&b);
    cr_assert_eq(rc, 0, "promtool check metrics failed");
}

Test(trace, parse_and_format)
{
    struct ag_obs_trace t;
    const char *tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    cr_assert_eq(ag_obs_trace_parse(tp, strlen(tp), &t), 0);
    cr_assert_eq(t.trace_id[0], 0x0a);
    cr_assert_eq(t.span_id[7], 0x31);
    cr_assert_eq(t.flags, 1);
    char out[AG_OBS_TRACEPARENT_LEN + 1];
    ag_obs_trace_format(&t, out);
    cr_assert_str_eq(out, tp);
    const char *future = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-ever";
    cr_assert_eq(ag_obs_trace_parse(future, strlen(future), &t), 0);
}

Test(trace, rejects_invalid)
{
    struct ag_obs_trace t;
    const char *bad[] = {
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",   /* version ff */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",   /* zero trace id */
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",   /* zero parent */
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",   /* upper case */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x", /* 00 with extra */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",    /* short */
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",   /* separator */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(ag_obs_trace_parse(bad[i], strlen(bad[i]), &t), AG_EINVAL, "%s", bad[i]);
}

Test(trace, child_keeps_trace_new_span)
{
    struct ag_xoshiro x;
    ag_xoshiro_seed(&x, 42);
    struct ag_obs_trace root, child;
    ag_obs_trace_new(&root, &x.rng);
    ag_obs_trace_child(&root, &child, &x.rng);
    cr_assert_eq(memcmp(root.trace_id, child.trace_id, 16), 0);
    cr_assert_neq(memcmp(root.span_id, child.span_id, 8), 0);
    cr_assert_eq(child.flags, 1);
}

Test(request_id, validity_and_generation)
{
    cr_assert(ag_obs_request_id_valid("abc-123", 7));
    cr_assert_not(ag_obs_request_id_valid("", 0));
    cr_assert_not(ag_obs_request_id_valid("a b", 3));
    cr_assert_not(ag_obs_request_id_valid("a\"b", 3));
    char big[200];
    memset(big, 'a', sizeof big);
    cr_assert_not(ag_obs_request_id_valid(big, sizeof big));
    char id[AG_UUID_STRLEN + 1];
    ag_obs_request_id_new(id);
    cr_assert_eq(strlen(id), 36);
    cr_assert_eq(id[14], '7', "a UUIDv7");
}

static int check_ok(void *ud, struct ag_buf *d)
{
    (void)ud, (void)d;
    return 0;
}

static int check_down(void *ud, struct ag_buf *d)
{
    (void)ud, (void)d;
    return AG_ETIMEDOUT;
}

Test(health, render_reports_each_check)
{
    struct ag_obs_health *h;
    ag_obs_health_new(&h);
    ag_obs_health_add(h, AG_OBS_LIVE, "loop", check_ok, NULL);
    ag_obs_health_add(h, AG_OBS_READY, "db", check_ok, NULL);
    ag_obs_health_add(h, AG_OBS_READY, "bus", check_down, NULL);
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_obs_health_render(h, AG_OBS_LIVE, &b), 1);
    cr_assert_str_eq(b.data,
                     "{\"status\":\"up\",\"checks\":[{\"name\":\"loop\",\"status\":\"up\"}]}");
    ag_buf_reset(&b);
    cr_assert_eq(ag_obs_health_render(h, AG_OBS_READY, &b), 0);
    cr_assert_str_eq(b.data, "{\"status\":\"down\",\"checks\":[{\"name\":\"db\",\"status\":\"up\"},"
                             "{\"name\":\"bus\",\"status\":\"down\",\"detail\":\"timed out\"}]}");
    ag_buf_free(&b);
    ag_obs_health_free(h);
}
