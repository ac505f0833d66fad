/*
 * `agora store stats --by-type`: what the log's events cost, to measure a change
 * in event shapes or aggregate models rather than guess it.
 *
 * One pass over $all sums, per event type and per stream kind (the stream name up
 * to its first '-': "order", "stock", "saga"...), the events and the bytes their
 * records take in a segment (ag_event.stored_bytes: header, stream name, the body
 * — compressed when its record is — checksum, alignment), with the data and
 * metadata parts apart (raw), and "raw": what the records would take uncompressed
 * (ag_store_log_record_bytes), so the compression ratio shows per type.
 * A second pass over the streams loads each one's latest snapshot (snapshots are
 * records of the log too, and an aggregate that grows with history shows here
 * first). "Per order" divides by the OrderPlaced events seen.
 *
 * Output: JSON lines — a summary, then one line per type ("type"), one per stream
 * kind ("kind"), one per kind with snapshots ("snapshots"); biggest first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/store_log.h"
#include "cli/cli.h"

#define AG_SIZES_ORDER_PLACED "OrderPlaced" /* what counts as one order */
#define SIZES_MAX             128 /* distinct types or kinds reported; the rest go under "other" */

struct tally {
    char name[64];
    uint64_t count, bytes, raw, data, meta, max;
};

struct tallies {
    struct tally v[SIZES_MAX];
    size_t n;
};

static struct tally *tally_of(struct tallies *t, const char *name, size_t len)
{
    if (len >= sizeof t->v[0].name) len = sizeof t->v[0].name - 1;
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->v[i].name) == len && memcmp(t->v[i].name, name, len) == 0) return &t->v[i];
    if (t->n == SIZES_MAX) return &t->v[SIZES_MAX - 1]; /* "other" gathers the rest */
    if (t->n == SIZES_MAX - 1) name = "other", len = 5;
    struct tally *x = &t->v[t->n++];
    memset(x, 0, sizeof *x);
    memcpy(x->name, name, len);
    return x;
}

static void tally_add(struct tally *x, uint64_t bytes, uint64_t raw, uint64_t data, uint64_t meta)
{
    x->count++;
    x->bytes += bytes;
    x->raw += raw;
    x->data += data;
    x->meta += meta;
    if (bytes > x->max) x->max = bytes;
}

static size_t kind_len(const char *stream, size_t len)
{
    const char *dash = memchr(stream, '-', len);
    return dash ? (size_t)(dash - stream) : len;
}

static int by_bytes(const void *a, const void *b)
{
    const struct tally *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : 0;
}

struct sizes {
    struct ag_store *s;
    struct tallies types, kinds, snaps;
    uint64_t events, bytes, raw, orders;
};

static int scan_all(struct sizes *z, struct ag_err *err)
{
    for (uint64_t from = 0;;) {
        struct ag_event_page p;
        int rc = ag_store_read_all(z->s, from, AG_READ_FORWARD, 1024, &p, err);
        if (rc) return rc;
        for (size_t i = 0; i < p.count; i++) {
            const struct ag_event *e = &p.events[i];
            uint64_t raw =
                ag_store_log_record_bytes(e->stream_len, e->type_len, e->metadata_len, e->data_len);
            uint64_t b = e->stored_bytes ? e->stored_bytes : raw;
            tally_add(tally_of(&z->types, e->type, e->type_len), b, raw, e->data_len,
                      e->metadata_len);
            tally_add(tally_of(&z->kinds, e->stream, kind_len(e->stream, e->stream_len)), b, raw,
                      e->data_len, e->metadata_len);
            z->events++;
            z->bytes += b;
            z->raw += raw;
            if (e->type_len == strlen(AG_SIZES_ORDER_PLACED) &&
                memcmp(e->type, AG_SIZES_ORDER_PLACED, e->type_len) == 0)
                z->orders++;
        }
        from = p.next_position;
        bool end = p.end || p.count == 0;
        ag_event_page_free(&p);
        if (end) return 0;
    }
}

static int snap_one(void *ud, const char *name, size_t len, int64_t version)
{
    AG_UNUSED(version);
    struct sizes *z = ud;
    struct ag_snapshot snap;
    if (ag_store_load_snapshot(z->s, name, len, &snap, NULL)) return 0;
    uint64_t b = ag_store_log_record_bytes(len, 0, 0, snap.state_len); /* stored raw */
    tally_add(tally_of(&z->snaps, name, kind_len(name, len)), b, b, snap.state_len, 0);
    ag_snapshot_free(&snap);
    return 0;
}

static double per(uint64_t a, uint64_t b)
{
    return b ? (double)a / (double)b : 0;
}

static void print_tallies(struct tallies *t, const char *key, uint64_t orders)
{
    qsort(t->v, t->n, sizeof t->v[0], by_bytes);
    for (size_t i = 0; i < t->n; i++) {
        const struct tally *x = &t->v[i];
        printf("{\"%s\":\"%s\",\"count\":%llu,\"bytes\":%llu,\"rawBytes\":%llu,\"avgBytes\":%.1f,"
               "\"avgRawBytes\":%.1f,\"avgData\":%.1f,\"avgMetadata\":%.1f,\"maxBytes\":%llu,"
               "\"perOrder\":%.2f,\"bytesPerOrder\":%.1f}\n",
               key, x->name, (unsigned long long)x->count, (unsigned long long)x->bytes,
               (unsigned long long)x->raw, per(x->bytes, x->count), per(x->raw, x->count),
               per(x->data, x->count), per(x->meta, x->count), (unsigned long long)x->max,
               per(x->count, orders), per(x->bytes, orders));
    }
}

int ag_cli_store_sizes(struct ag_store *s, const char *dir)
{
    struct sizes *z = calloc(1, sizeof *z);
    if (!z) return 1;
    z->s = s;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = scan_all(z, &err);
    if (rc) {
        fprintf(stderr, "agora store stats: %s\n", ag_err_msg(&err, rc));
        free(z);
        return 1;
    }
    ag_store_list_streams(s, snap_one, z);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    uint64_t snap_bytes = 0;
    for (size_t i = 0; i < z->snaps.n; i++) snap_bytes += z->snaps.v[i].bytes;
    printf("{\"dir\":\"%s\",\"orders\":%llu,\"events\":%llu,\"streams\":%llu,\"logBytes\":%llu,"
           "\"eventBytes\":%llu,\"eventRawBytes\":%llu,\"compression\":%.2f,"
           "\"latestSnapshotBytes\":%llu,\"eventsPerOrder\":%.2f,\"bytesPerEvent\":%.1f,"
           "\"rawBytesPerEvent\":%.1f,\"eventBytesPerOrder\":%.1f,\"logBytesPerOrder\":%.1f,"
           "\"streamsPerOrder\":%.2f}\n",
           dir, (unsigned long long)z->orders, (unsigned long long)z->events,
           (unsigned long long)st.streams, (unsigned long long)st.bytes,
           (unsigned long long)z->bytes, (unsigned long long)z->raw, per(z->raw, z->bytes),
           (unsigned long long)snap_bytes, per(z->events, z->orders), per(z->bytes, z->events),
           per(z->raw, z->events), per(z->bytes, z->orders), per(st.bytes, z->orders),
           per(st.streams, z->orders));
    print_tallies(&z->types, "type", z->orders);
    print_tallies(&z->kinds, "kind", z->orders);
    print_tallies(&z->snaps, "snapshots", z->orders);
    free(z);
    return ferror(stdout) ? 1 : 0;
}
