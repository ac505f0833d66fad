/*
 * Line numbers for configuration errors found after loading.
 *
 * libcyaml reports syntax and schema errors itself; errors found while
 * compiling (an unknown destination host, a bad duration, weights that do not
 * add up) need the line of the offending key. This walks the document once with
 * libyaml's event parser, keeping a stack of the current path ("a.b[2].c"), and
 * records the line of every mapping value and sequence item.
 */
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "gateway/internal.h"

#define MAX_DEPTH 32

struct entry {
    char *path;    /* owned */
    unsigned line; /* 1-based */
};

struct ag__yamlpos {
    struct entry *v;
    size_t n, cap;
};

struct frame {
    bool seq;        /* sequence (else mapping) */
    size_t index;    /* next item index (sequence) */
    bool want_key;   /* mapping: next scalar is a key */
    size_t path_len; /* path length at this frame's start */
};

struct walker {
    struct ag__yamlpos *p;
    struct frame st[MAX_DEPTH];
    int depth;
    char path[1024];
    size_t len;
};

static int add(struct ag__yamlpos *p, const char *path, unsigned line)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 64;
        struct entry *nv = ag_realloc(p->v, nc * sizeof *nv);
        if (!nv) return AG_ENOMEM;
        p->v = nv;
        p->cap = nc;
    }
    if (!(p->v[p->n].path = ag_strdup(path))) return AG_ENOMEM;
    p->v[p->n++].line = line;
    return 0;
}

/* A node starts at `line`: extend the path with its key/index and record it. */
static int node_begin(struct walker *w, unsigned line)
{
    if (w->depth == 0) return 0;
    struct frame *f = &w->st[w->depth - 1];
    if (f->seq) {
        int n = snprintf(w->path + f->path_len, sizeof w->path - f->path_len, "[%zu]", f->index++);
        if (n < 0 || (size_t)n >= sizeof w->path - f->path_len) return AG_EINVAL;
        w->len = f->path_len + (size_t)n;
        return add(w->p, w->path, line);
    }
    f->want_key = true; /* this node was the value; next scalar is a key again */
    return 0;
}

static int on_key(struct walker *w, const char *key, unsigned line)
{
    struct frame *f = &w->st[w->depth - 1];
    int n = snprintf(w->path + f->path_len, sizeof w->path - f->path_len, "%s%s",
                     f->path_len ? "." : "", key);
    if (n < 0 || (size_t)n >= sizeof w->path - f->path_len) return AG_EINVAL;
    w->len = f->path_len + (size_t)n;
    f->want_key = false;
    return add(w->p, w->path, line);
}

static int push(struct walker *w, bool seq, unsigned line)
{
    int rc = node_begin(w, line);
    if (rc || w->depth == MAX_DEPTH) return rc ? rc : AG_EINVAL;
    size_t path_len = w->depth ? w->len : 0;
    w->st[w->depth] = (struct frame){seq, 0, true, path_len};
    w->depth++;
    return 0;
}

static int handle(struct walker *w, const yaml_event_t *ev)
{
    unsigned line = (unsigned)ev->start_mark.line + 1;
    switch (ev->type) {
    case YAML_MAPPING_START_EVENT:
        return push(w, false, line);
    case YAML_SEQUENCE_START_EVENT:
        return push(w, true, line);
    case YAML_MAPPING_END_EVENT:
    case YAML_SEQUENCE_END_EVENT:
        if (w->depth > 0) w->depth--;
        if (w->depth > 0 && !w->st[w->depth - 1].seq) w->st[w->depth - 1].want_key = true;
        return 0;
    case YAML_SCALAR_EVENT:
        if (w->depth > 0 && !w->st[w->depth - 1].seq && w->st[w->depth - 1].want_key)
            return on_key(w, (const char *)ev->data.scalar.value, line);
        return node_begin(w, line);
    case YAML_ALIAS_EVENT:
        return node_begin(w, line);
    default:
        return 0;
    }
}

struct ag__yamlpos *ag__yamlpos_new(const char *text, size_t len)
{
    struct ag__yamlpos *p = ag_calloc(1, sizeof *p);
    struct walker *w = ag_calloc(1, sizeof *w);
    yaml_parser_t parser;
    if (!p || !w || !yaml_parser_initialize(&parser)) goto out_fail;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    w->p = p;
    bool done = false, ok = true;
    while (!done && ok) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            ok = false;
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        ok = handle(w, &ev) == 0;
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    ag_free(w);
    if (ok) return p;
    ag__yamlpos_free(p);
    return NULL;
out_fail:
    ag_free(w);
    ag_free(p);
    return NULL;
}

unsigned ag__yamlpos_line(const struct ag__yamlpos *p, const char *path)
{
    if (!p) return 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (;;) {
        for (size_t i = 0; i < p->n; i++)
            if (strcmp(p->v[i].path, buf) == 0) return p->v[i].line;
        char *cut = strrchr(buf, '.');
        char *br = strrchr(buf, '[');
        if (br && (!cut || br > cut)) cut = br;
        if (!cut) return 0;
        *cut = '\0';
    }
}

void ag__yamlpos_free(struct ag__yamlpos *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) ag_free(p->v[i].path);
    ag_free(p->v);
    ag_free(p);
}
