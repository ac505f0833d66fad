/*
 * Health checks: named liveness and readiness checks rendered as a JSON document.
 * Checks are kept in registration order in a small array; rendering runs each check
 * of the probe in turn (checks report cached state, so this is cheap and never
 * blocks the loop that serves /health/...).
 */
#include <string.h>

#include "agora/obs.h"

struct check {
    enum ag_obs_probe probe; /* which endpoint runs it */
    char *name;              /* owned */
    ag_obs_check_fn fn;      /* the check */
    void *ud;                /* borrowed user data */
};

struct ag_obs_health {
    struct check *checks; /* owned array */
    size_t n;             /* checks in use */
    size_t cap;           /* checks allocated */
};

int ag_obs_health_new(struct ag_obs_health **out)
{
    *out = ag_calloc(1, sizeof **out);
    return *out ? 0 : AG_ENOMEM;
}

void ag_obs_health_free(struct ag_obs_health *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) ag_free(h->checks[i].name);
    ag_free(h->checks);
    ag_free(h);
}

int ag_obs_health_add(struct ag_obs_health *h, enum ag_obs_probe probe, const char *name,
                      ag_obs_check_fn fn, void *ud)
{
    if (!name || !fn) return AG_EINVAL;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 4;
        struct check *c = ag_realloc(h->checks, cap * sizeof *c);
        if (!c) return AG_ENOMEM;
        h->checks = c;
        h->cap = cap;
    }
    char *copy = ag_strdup(name);
    if (!copy) return AG_ENOMEM;
    h->checks[h->n++] = (struct check){probe, copy, fn, ud};
    return 0;
}

/* Appends one {"name":..,"status":..[,"detail":..]} object; *up cleared on failure. */
static int render_check(const struct check *c, struct ag_buf *out, struct ag_buf *detail, bool *up)
{
    ag_buf_reset(detail);
    int res = c->fn(c->ud, detail);
    if (res != 0) *up = false;
    int rc = ag_buf_puts(out, "{\"name\":");
    if (!rc) rc = ag_buf_json_str(out, c->name, strlen(c->name));
    if (!rc) rc = ag_buf_printf(out, ",\"status\":\"%s\"", res == 0 ? "up" : "down");
    if (!rc && res != 0 && detail->len == 0) rc = ag_buf_puts(detail, ag_strerror(res));
    if (!rc && detail->len) {
        rc = ag_buf_puts(out, ",\"detail\":");
        if (!rc) rc = ag_buf_json_str(out, detail->data, detail->len);
    }
    if (!rc) rc = ag_buf_putc(out, '}');
    return rc;
}

int ag_obs_health_render(struct ag_obs_health *h, enum ag_obs_probe probe, struct ag_buf *out)
{
    struct ag_buf checks, detail;
    ag_buf_init(&checks);
    ag_buf_init(&detail);
    bool up = true, first = true;
    int rc = ag_buf_putc(&checks, '[');
    for (size_t i = 0; h && i < h->n && !rc; i++) {
        if (h->checks[i].probe != probe) continue;
        if (!first) rc = ag_buf_putc(&checks, ',');
        first = false;
        if (!rc) rc = render_check(&h->checks[i], &checks, &detail, &up);
    }
    if (!rc) rc = ag_buf_putc(&checks, ']');
    if (!rc)
        rc = ag_buf_printf(out, "{\"status\":\"%s\",\"checks\":%s}", up ? "up" : "down",
                           checks.data);
    ag_buf_free(&checks);
    ag_buf_free(&detail);
    return rc ? rc : (up ? 1 : 0);
}
