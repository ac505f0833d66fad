/*
 * The read-model port's conformance suite: statements with typed parameters,
 * rows through the accessors, transactions, the checkpoint in the rows'
 * transaction, the error mapping, and (SQLite) damage found at open and at run
 * time.
 *
 * It runs against the SQLite adapter (a temporary directory) and, unchanged,
 * against PostgreSQL when AGORA_TEST_PG_URI names one (CTest's unit.readmodel.pg
 * starts a throwaway server with tests/lib/pgtmp.sh and runs this binary with
 * --jobs=1: the tests share the schema of read model "t"). The few tests about
 * files (damage, paths) are skipped there, and the engine messages asserted are
 * the words both engines use.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agora/readmodel.h"
#include "lib/pgtest.h"

static char dir[64];
static const char *uri; /* the read models' URI: AGORA_TEST_PG_URI, else dir */
static bool on_pg;      /* uri is a PostgreSQL database */
static struct ag_rm *rw;

#define SQLITE_ONLY(why)                                                                           \
    do {                                                                                           \
        if (on_pg) cr_skip_test("SQLite only: %s", why);                                           \
    } while (0)

static void setup(void)
{
    strcpy(dir, "/tmp/agora-rm-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    const char *env = ag_test_pg_conninfo();
    on_pg = env != NULL;
    uri = on_pg ? env : dir;
    struct ag_err err;
    ag_err_clear(&err);
    if (on_pg) cr_assert_eq(ag_rm_drop(uri, "t", &err), 0, "%s", err.msg); /* a fresh schema */
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &rw, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_rm_script(rw,
                              "CREATE TABLE kv(k TEXT PRIMARY KEY, n INTEGER, note TEXT);"
                              "CREATE TABLE blobs(b BLOB);",
                              NULL),
                 0);
}

static void teardown(void)
{
    ag_rm_close(rw);
    rw = NULL;
    if (on_pg) ag_rm_drop(uri, "t", NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(readmodel, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static int put(struct ag_rm *rm, const char *k, long long n, const char *note)
{
    struct ag_rm_arg args[] = {AG_RM_TEXT(k), AG_RM_INT(n), AG_RM_TEXT(note)};
    return ag_rm_exec(rm, "INSERT INTO kv VALUES(?1, ?2, ?3)", args, 3, NULL);
}

struct got {
    int rows;
    char k[32];
    long long n;
    bool note_null;
    char n_text[32];
    int ncols;
};

static int got_row(const struct ag_rm_row *r, void *ud)
{
    struct got *g = ud;
    g->rows++;
    snprintf(g->k, sizeof g->k, "%s", ag_rm_text(r, 0));
    g->ncols = ag_rm_ncols(r);
    if (g->ncols < 3) return 0;
    g->n = ag_rm_int64(r, 1);
    snprintf(g->n_text, sizeof g->n_text, "%s", ag_rm_text(r, 1));
    g->note_null = ag_rm_is_null(r, 2);
    return 0;
}

static struct got get(struct ag_rm *rm, const char *k)
{
    struct got g = {0};
    struct ag_rm_arg arg = AG_RM_TEXT(k);
    cr_assert_eq(
        ag_rm_query(rm, "SELECT k, n, note FROM kv WHERE k=?1", &arg, 1, got_row, &g, NULL), 0);
    return g;
}

static int count_row(const struct ag_rm_row *r, void *ud)
{
    (void)r;
    ++*(int *)ud;
    return 0;
}

static int count(struct ag_rm *rm)
{
    int n = 0;
    cr_assert_eq(ag_rm_query(rm, "SELECT k FROM kv", NULL, 0, count_row, &n, NULL), 0);
    return n;
}

/* ---- statements and parameters ---- */

Test(readmodel, exec_and_query_bind_text_int64_and_null)
{
    cr_assert_eq(put(rw, "a", 9007199254740993LL, "first"), 0);
    cr_assert_eq(put(rw, "b", -5, NULL), 0, "a NULL text binds NULL");
    struct got g = get(rw, "a");
    cr_assert_eq(g.rows, 1);
    cr_assert_str_eq(g.k, "a");
    cr_assert_eq(g.n, 9007199254740993LL, "64-bit integers round-trip");
    cr_assert_str_eq(g.n_text, "9007199254740993", "an integer read as text");
    cr_assert(!g.note_null);
    cr_assert_eq(g.ncols, 3);
    g = get(rw, "b");
    cr_assert_eq(g.n, -5);
    cr_assert(g.note_null);
    struct ag_rm_arg null_arg = AG_RM_NULL;
    int n = 0;
    cr_assert_eq(
        ag_rm_query(rw, "SELECT k FROM kv WHERE ?1 IS NULL", &null_arg, 1, count_row, &n, NULL), 0);
    cr_assert_eq(n, 2, "AG_RM_NULL binds NULL");
    cr_assert_eq(get(rw, "missing").rows, 0);
}

Test(readmodel, arguments_past_the_statements_placeholders_are_ignored)
{
    struct ag_rm_arg args[] = {AG_RM_TEXT("a"), AG_RM_INT(1), AG_RM_TEXT("x"), AG_RM_TEXT("extra")};
    cr_assert_eq(ag_rm_exec(rw, "INSERT INTO kv VALUES(?1, ?2, ?3)", args, 4, NULL), 0);
    cr_assert_eq(ag_rm_exec(rw, "UPDATE kv SET n=?2 + 1 WHERE k=?1", args, 4, NULL), 0);
    cr_assert_eq(get(rw, "a").n, 2);
    /* a gap: ?2 unused, ?3 bound */
    cr_assert_eq(ag_rm_exec(rw, "UPDATE kv SET note=?3 || '!' WHERE k=?1", args, 4, NULL), 0);
    struct got g = get(rw, "a");
    cr_assert(!g.note_null);
}

Test(readmodel, blobs_bind_their_bytes)
{
    const unsigned char b[4] = {0, 1, 0, 2};
    struct ag_rm_arg arg = AG_RM_BLOB(b, 4);
    cr_assert_eq(ag_rm_exec(rw, "INSERT INTO blobs VALUES(?1)", &arg, 1, NULL), 0);
    int n = 0;
    struct ag_rm_arg q = AG_RM_BLOB(b, 4);
    cr_assert_eq(
        ag_rm_query(rw, "SELECT length(b) FROM blobs WHERE b=?1", &q, 1, count_row, &n, NULL), 0);
    cr_assert_eq(n, 1, "found by the same 4 bytes (embedded NULs included)");
}

static int blob_row(const struct ag_rm_row *r, void *ud)
{
    unsigned char b[8] = {0};
    size_t n = 99;
    cr_assert(ag_rm_blob(r, 0, b, 2, &n), "the BLOB column is one");
    cr_assert_eq(n, 4, "its whole length, whatever was copied");
    cr_assert(b[1] == 1 && b[2] == 0, "two bytes copied, no more");
    cr_assert(!ag_rm_blob(r, 1, b, sizeof b, &n), "an integer is no BLOB");
    cr_assert(!ag_rm_blob(r, 2, b, sizeof b, &n), "text is no BLOB");
    cr_assert(!ag_rm_blob(r, 3, b, sizeof b, &n), "NULL is no BLOB");
    ++*(int *)ud;
    return 0;
}

Test(readmodel, the_blob_accessor_reads_blobs_only)
{
    const unsigned char b[4] = {0, 1, 0, 2};
    struct ag_rm_arg arg = AG_RM_BLOB(b, 4);
    cr_assert_eq(ag_rm_exec(rw, "INSERT INTO blobs VALUES(?1)", &arg, 1, NULL), 0);
    int n = 0;
    cr_assert_eq(
        ag_rm_query(rw, "SELECT b, 7, 'text', NULL FROM blobs", NULL, 0, blob_row, &n, NULL), 0);
    cr_assert_eq(n, 1);
}

struct ids_seen {
    char id[8][40];
    int64_t len[8];
    int n;
};

static int id_row(const struct ag_rm_row *r, void *ud)
{
    struct ids_seen *s = ud;
    char buf[AG_RM_ID_MAX];
    const char *id = ag_rm_id(r, 0, buf);
    cr_assert_lt(s->n, 8);
    snprintf(s->id[s->n], sizeof s->id[s->n], "%s", id ? id : "(null)");
    s->len[s->n++] = ag_rm_int64(r, 1);
    return 0;
}

static struct ids_seen ids_after(const char *cursor)
{
    struct ids_seen s = {.n = 0};
    uint8_t cb[16];
    struct ag_rm_arg arg = ag_rm_id_arg(cursor, cb);
    cr_assert_eq(ag_rm_query(rw, "SELECT id, length(id) FROM ids WHERE id > ?1 ORDER BY id", &arg,
                             1, id_row, &s, NULL),
                 0);
    return s;
}

/* Issue 19: UUIDs stored as 16 bytes, read back as their text; ordered, and paged
 * by a cursor, as their text would be; any other id kept as it was given. */
Test(readmodel, uuid_ids_are_16_byte_blobs_read_back_as_text)
{
    static const char *const ids[] = {"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                                      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c",
                                      "f190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"};
    cr_assert_eq(ag_rm_script(rw, "CREATE TABLE ids(id BLOB PRIMARY KEY, note TEXT);", NULL), 0);
    for (int i = 2; i >= 0; i--) {
        uint8_t b[16];
        struct ag_rm_arg a = ag_rm_id_arg(ids[i], b);
        cr_assert_eq(a.kind, AG_RM_KIND_BLOB);
        cr_assert_eq(ag_rm_exec(rw, "INSERT INTO ids(id) VALUES(?1)", &a, 1, NULL), 0);
    }
    struct ids_seen s = ids_after("");
    cr_assert_eq(s.n, 3, "an empty cursor: every id");
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(s.id[i], ids[i], "in the order of their text");
        cr_assert_eq(s.len[i], 16, "16 bytes stored, not 36");
    }
    s = ids_after(ids[0]);
    cr_assert_eq(s.n, 2, "a cursor compares bytes with bytes");
    cr_assert_str_eq(s.id[0], ids[1]);
    s = ids_after(ids[2]);
    cr_assert_eq(s.n, 0);

    uint8_t b[16];
    cr_assert_eq(ag_rm_id_arg("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", b).kind, AG_RM_KIND_TEXT,
                 "upper case is not the stored form: text, which matches no BLOB");
    cr_assert_eq(ag_rm_id_arg(NULL, b).kind, AG_RM_KIND_TEXT, "NULL binds NULL");
    cr_assert_null(ag_rm_id_arg(NULL, b).p);
    struct ag_rm_arg other = ag_rm_id_arg("order-1", b);
    cr_assert_eq(other.kind, AG_RM_KIND_TEXT, "not a UUID: text");
    cr_assert_eq(ag_rm_exec(rw, "DELETE FROM ids", NULL, 0, NULL), 0);
    cr_assert_eq(ag_rm_exec(rw, "INSERT INTO ids(id) VALUES(?1)", &other, 1, NULL), 0);
    s = ids_after("");
    cr_assert_eq(s.n, 1);
    cr_assert_str_eq(s.id[0], "order-1", "read back as it was given");
}

static int stop_at_first(const struct ag_rm_row *r, void *ud)
{
    (void)r;
    ++*(int *)ud;
    return 1;
}

static int fail_row(const struct ag_rm_row *r, void *ud)
{
    (void)r, (void)ud;
    return AG_EJSON;
}

Test(readmodel, a_row_callback_stops_early_or_with_its_error)
{
    for (int i = 0; i < 5; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        cr_assert_eq(put(rw, k, i, NULL), 0);
    }
    int n = 0;
    cr_assert_eq(ag_rm_query(rw, "SELECT k FROM kv", NULL, 0, stop_at_first, &n, NULL), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(ag_rm_query(rw, "SELECT k FROM kv", NULL, 0, fail_row, NULL, NULL), AG_EJSON);
    cr_assert_eq(ag_rm_last_error(rw), 0, "the callback's error is not the database's");
    cr_assert_eq(count(rw), 5, "the cached statement is usable again");
}

struct nested {
    struct ag_rm *rm;
    int inner;
};

static int nested_row(const struct ag_rm_row *r, void *ud)
{
    (void)r;
    struct nested *x = ud;
    x->inner += count(x->rm); /* the same SQL while its cached statement is in use */
    return 0;
}

Test(readmodel, the_same_sql_can_run_inside_its_own_row_callback)
{
    cr_assert_eq(put(rw, "a", 1, NULL), 0);
    cr_assert_eq(put(rw, "b", 2, NULL), 0);
    struct nested x = {rw, 0};
    cr_assert_eq(ag_rm_query(rw, "SELECT k FROM kv", NULL, 0, nested_row, &x, NULL), 0);
    cr_assert_eq(x.inner, 4);
    for (int i = 0; i < 200; i++) cr_assert_eq(count(rw), 2); /* cached: no leak, no growth */
}

Test(readmodel, many_distinct_statements_outgrow_the_cache)
{
    cr_assert_eq(put(rw, "a", 1, NULL), 0);
    for (int i = 0; i < 300; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT k FROM kv WHERE n < %d", i + 2);
        int n = 0;
        cr_assert_eq(ag_rm_query(rw, sql, NULL, 0, count_row, &n, NULL), 0);
        cr_assert_eq(n, 1);
    }
}

/* ---- errors ---- */

Test(readmodel, errors_carry_the_engines_message_and_are_remembered)
{
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_exec(rw, "INSERT INTO nope VALUES(1)", NULL, 0, &err), AG_EIO);
    cr_assert(strstr(err.msg, "nope"), "%s", err.msg); /* "no such table: nope" */
    cr_assert_eq(ag_rm_last_error(rw), AG_EIO);
    cr_assert(strstr(ag_rm_last_message(rw), "nope"));
    cr_assert_eq(put(rw, "a", 1, NULL), 0);
    cr_assert_eq(ag_rm_last_error(rw), 0, "a success clears it");
    cr_assert_str_eq(ag_rm_last_message(rw), "");
    ag_err_clear(&err);
    cr_assert_eq(put(rw, "a", 1, NULL), AG_EIO, "a constraint is AG_EIO");
    cr_assert_eq(ag_rm_script(rw, "CREATE TABLE kv(x TEXT);", &err), AG_EIO);
    cr_assert(strstr(err.msg, "already exists"), "%s", err.msg);
}

Test(readmodel, a_read_only_handle_reads_but_never_writes)
{
    cr_assert_eq(put(rw, "a", 7, NULL), 0);
    struct ag_rm *ro;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READONLY, &ro, NULL), 0);
    cr_assert_eq(get(ro, "a").n, 7);
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_exec(ro, "DELETE FROM kv", NULL, 0, &err), AG_EIO);
    cr_assert(strstr(err.msg, "readonly") || strstr(err.msg, "read-only"), "%s", err.msg);
    cr_assert_eq(ag_rm_last_error(ro), 0, "a shared handle keeps no per-call state");
    ag_rm_close(ro);
    cr_assert_neq(ag_rm_open(uri, "absent", AG_RM_READONLY, &ro, NULL), 0,
                  "read-only never creates");
    cr_assert_null(ro);
}

Test(readmodel, uris_choose_the_adapter_by_scheme)
{
    SQLITE_ONLY("paths of files");
    char suri[128];
    snprintf(suri, sizeof suri, "sqlite:%s", dir);
    struct ag_rm *ro;
    cr_assert_eq(put(rw, "a", 1, NULL), 0);
    cr_assert_eq(ag_rm_open(suri, "t", AG_RM_READONLY, &ro, NULL), 0);
    cr_assert_eq(count(ro), 1);
    ag_rm_close(ro);
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_open("mysql://db/x", "t", AG_RM_READONLY, &ro, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "unknown read-model scheme"), "%s", err.msg);
    char where[256], want[256];
    ag_rm_locate(suri, "t", where, sizeof where);
    snprintf(want, sizeof want, "%s/t.db", dir);
    cr_assert_str_eq(where, want);
    /* read-write creates the directory and the database */
    char sub[128];
    snprintf(sub, sizeof sub, "sqlite:%s/new", dir);
    struct ag_rm *fresh;
    cr_assert_eq(ag_rm_open(sub, "n", AG_RM_READWRITE, &fresh, NULL), 0);
    ag_rm_close(fresh);
    cr_assert_eq(ag_rm_drop(sub, "n", NULL), 0);
    snprintf(want, sizeof want, "%s/new/n.db", dir);
    cr_assert_neq(access(want, F_OK), 0, "dropped");
}

/* ---- transactions and checkpoints ---- */

static uint64_t checkpoint(struct ag_rm *rm)
{
    uint64_t pos = 99;
    cr_assert_eq(ag_rm_checkpoint_get(rm, "p", &pos, NULL), 0);
    return pos;
}

Test(readmodel, rows_and_the_checkpoint_commit_together)
{
    cr_assert_eq(checkpoint(rw), 0, "no checkpoint yet is 0");
    cr_assert_eq(ag_rm_begin(rw, NULL), 0);
    cr_assert_eq(put(rw, "a", 1, NULL), 0);
    cr_assert_eq(ag_rm_checkpoint_set(rw, "p", 42, NULL), 0);
    cr_assert_eq(ag_rm_commit(rw, NULL), 0);
    struct ag_rm *ro;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READONLY, &ro, NULL), 0);
    cr_assert_eq(checkpoint(ro), 42, "another connection sees both");
    cr_assert_eq(count(ro), 1);
    ag_rm_close(ro);
    /* moving it again replaces the position */
    cr_assert_eq(ag_rm_checkpoint_set(rw, "p", 43, NULL), 0);
    cr_assert_eq(checkpoint(rw), 43);
}

Test(readmodel, a_rollback_undoes_the_rows_and_the_checkpoint)
{
    cr_assert_eq(ag_rm_checkpoint_set(rw, "p", 10, NULL), 0);
    cr_assert_eq(ag_rm_begin(rw, NULL), 0);
    cr_assert_eq(put(rw, "a", 1, NULL), 0);
    cr_assert_eq(put(rw, "b", 2, NULL), 0);
    cr_assert_eq(ag_rm_checkpoint_set(rw, "p", 20, NULL), 0);
    /* a failing statement in the page: reported by its own call, or (a pipelined
     * statement, PostgreSQL) by the next call of the transaction, the commit at
     * the latest */
    int rc = put(rw, "a", 3, NULL);
    if (!rc) rc = ag_rm_commit(rw, NULL);
    cr_assert_eq(rc, AG_EIO);
    ag_rm_rollback(rw);
    cr_assert_eq(count(rw), 0);
    cr_assert_eq(checkpoint(rw), 10, "the checkpoint did not move without its rows");
    ag_rm_rollback(rw); /* without a transaction: a no-op */
    cr_assert_eq(put(rw, "c", 1, NULL), 0, "autocommit again");
}

Test(readmodel, the_checkpoint_survives_a_reopen)
{
    cr_assert_eq(ag_rm_checkpoint_set(rw, "p", 7, NULL), 0);
    ag_rm_close(rw);
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &rw, NULL), 0);
    cr_assert_eq(checkpoint(rw), 7);
}

/* ---- damage ---- */

static void fill(struct ag_rm *rm, int n)
{
    cr_assert_eq(ag_rm_begin(rm, NULL), 0);
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "key-%06d", i);
        cr_assert_eq(put(rm, k, i, "some words to fill the pages of the table with"), 0);
    }
    cr_assert_eq(ag_rm_commit(rm, NULL), 0);
}

/* Overwrite every page of t.db past the first (the header stays intact). */
static void scribble(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/t.db", dir);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    cr_assert_gt(size, 4 * 4096L);
    srand(7);
    for (long off = 4096; off < size; off++) {
        fseek(f, off, SEEK_SET);
        fputc(rand() & 0xff, f);
    }
    fclose(f);
}

Test(readmodel, damage_is_found_at_open_and_the_file_is_set_aside)
{
    SQLITE_ONLY("scribbles over the file");
    fill(rw, 2000);
    ag_rm_close(rw); /* checkpoints the WAL into t.db */
    rw = NULL;
    scribble();
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &rw, &err), AG_ECORRUPT);
    cr_assert_null(rw);
    cr_assert(strstr(err.msg, "t.db: quick_check: "), "%s", err.msg);
    char kept[256];
    cr_assert_eq(ag_rm_set_aside(dir, "t", kept, sizeof kept, NULL), 0);
    cr_assert(strstr(kept, "/t.db.corrupt-"), "%s", kept);
    cr_assert_eq(access(kept, F_OK), 0, "kept, not deleted");
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &rw, &err), 0, "%s", err.msg);
    cr_assert_eq(checkpoint(rw), 0, "a new, empty read model");
}

Test(readmodel, a_file_that_is_not_a_database_is_damage)
{
    SQLITE_ONLY("writes garbage over the file");
    ag_rm_close(rw);
    rw = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/t.db", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("this is not a database, it is garbage written over the read model file....", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/t.db-wal", dir);
    remove(path);
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &rw, NULL), AG_ECORRUPT);
    struct ag_rm *ro;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READONLY, &ro, NULL), 0, "read-only opens lazily");
    struct ag_err err;
    ag_err_clear(&err);
    int n = 0;
    cr_assert_eq(ag_rm_query(ro, "SELECT k FROM kv", NULL, 0, count_row, &n, &err), AG_ECORRUPT,
                 "%s", err.msg);
    ag_rm_close(ro);
}

Test(readmodel, damage_at_run_time_is_ag_ecorrupt_and_check_finds_it)
{
    SQLITE_ONLY("scribbles over the file");
    fill(rw, 2000);
    cr_assert_eq(ag_rm_check(rw, NULL), 0, "sound");
    ag_rm_close(rw);
    rw = NULL;
    struct ag_rm *ro;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READONLY, &ro, NULL), 0);
    scribble(); /* before the handle has read a page: its reads come from the file */
    struct ag_err err;
    ag_err_clear(&err);
    int n = 0;
    int rc = ag_rm_query(ro, "SELECT k, n, note FROM kv ORDER BY n", NULL, 0, count_row, &n, &err);
    cr_assert_eq(rc, AG_ECORRUPT, "%s (%d rows)", err.msg, n);
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_check(ro, &err), AG_ECORRUPT);
    cr_assert(strstr(err.msg, "quick_check"), "%s", err.msg);
    ag_rm_close(ro);
}

Test(readmodel, a_lock_held_past_the_busy_timeout_is_ag_eunavailable)
{
    struct ag_rm *other;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &other, NULL), 0);
    cr_assert_eq(ag_rm_begin(rw, NULL), 0, "rw holds the write lock");
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_begin(other, &err), AG_EUNAVAILABLE, "%s", err.msg);
    cr_assert(strstr(err.msg, "locked"), "%s", err.msg);
    cr_assert_eq(ag_rm_last_error(other), AG_EUNAVAILABLE, "what the projector retries");
    ag_rm_rollback(rw);
    cr_assert_eq(ag_rm_begin(other, NULL), 0, "free again");
    ag_rm_rollback(other);
    ag_rm_close(other);
}

static int pid_row(const struct ag_rm_row *r, void *ud)
{
    *(int64_t *)ud = ag_rm_int64(r, 0);
    return 0;
}

/* Host loss, as the holder sees it: the server ended its session (what it does to
 * a silent client after lease_timeout) while another instance took the lease. The
 * old holder must read the lease as lost at its next check (within a second), not
 * go on, and take it again normally once it is free. */
Test(readmodel, a_holder_whose_session_ended_loses_the_lease_and_takes_it_again_later)
{
    if (!on_pg) cr_skip_test("PostgreSQL only: session advisory locks");
    struct ag_err err;
    ag_err_clear(&err);
    bool held = false, taken = false;
    cr_assert_eq(ag_rm_lease(rw, "projection", &held, &taken, &err), 0, "%s", err.msg);
    cr_assert(held && taken);
    int64_t pid = 0; /* the holder's backend */
    cr_assert_eq(ag_rm_query(rw, "SELECT pg_backend_pid()", NULL, 0, pid_row, &pid, &err), 0, "%s",
                 err.msg);
    struct ag_rm *killer, *other;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &killer, &err), 0, "%s", err.msg);
    struct ag_rm_arg a = AG_RM_INT(pid);
    cr_assert_eq(ag_rm_exec(killer, "SELECT pg_terminate_backend(?1::int)", &a, 1, &err), 0, "%s",
                 err.msg);
    ag_rm_close(killer);
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &other, &err), 0, "%s", err.msg);
    held = false;
    for (int i = 0; i < 250 && !held; i++) {
        cr_assert_eq(ag_rm_lease(other, "projection", &held, &taken, &err), 0, "%s", err.msg);
        if (!held) nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    cr_assert(held && taken, "the other writer takes the freed lease");
    nanosleep(&(struct timespec){1, 100000000}, NULL); /* past the holder's 1 s re-check */
    ag_rm_lease(rw, "projection", &held, &taken, &err);
    cr_assert(!held && !taken, "the old holder's session ended: the lease is not held there");
    ag_rm_close(other);
    held = false;
    for (int i = 0; i < 250 && !held; i++) {
        ag_rm_lease(rw, "projection", &held, &taken, &err);
        if (!held) nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    cr_assert(held && taken, "taken again, anew, once free");
}

Test(readmodel, postgresql_takes_lease_timeout_from_the_uri)
{
    if (!on_pg) cr_skip_test("PostgreSQL only: URI parameters");
    char u[1200];
    struct ag_rm *h;
    struct ag_err err;
    ag_err_clear(&err);
    const char *good[] = {"lease_timeout=5s", "lease_timeout=30", "lease_timeout=0"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(u, sizeof u, "%s%c%s", uri, strchr(uri, '?') ? '&' : '?', good[i]);
        cr_assert_eq(ag_rm_open(u, "t", AG_RM_READWRITE, &h, &err), 0, "%s: %s", good[i], err.msg);
        ag_rm_close(h);
    }
    const char *bad[] = {"lease_timeout=soon", "lease_timeout=-1", "lease_timeout=10m",
                         "lease_timeout=99999"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(u, sizeof u, "%s%c%s", uri, strchr(uri, '?') ? '&' : '?', bad[i]);
        cr_assert_eq(ag_rm_open(u, "t", AG_RM_READWRITE, &h, &err), AG_EINVAL, "%s", bad[i]);
        cr_assert(strstr(err.msg, "lease_timeout"), "%s", err.msg);
    }
}

Test(readmodel, postgresql_takes_pool_size_and_lock_timeout_from_the_uri)
{
    if (!on_pg) cr_skip_test("PostgreSQL only: URI parameters");
    char u[1200];
    snprintf(u, sizeof u, "%s%clock_timeout=200ms&pool_size=2", uri, strchr(uri, '?') ? '&' : '?');
    struct ag_rm *other, *ro;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_open(u, "t", AG_RM_READWRITE, &other, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_rm_open(u, "t", AG_RM_READONLY, &ro, &err), 0, "%s", err.msg);
    int n = 0;
    cr_assert_eq(ag_rm_query(ro, "SELECT k FROM kv", NULL, 0, count_row, &n, &err), 0, "%s",
                 err.msg);
    ag_rm_close(ro);
    cr_assert_eq(ag_rm_begin(rw, NULL), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(ag_rm_begin(other, &err), AG_EUNAVAILABLE, "%s", err.msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert(waited < 3.0, "lock_timeout=200ms, not the default 5 s: waited %.2f s", waited);
    ag_rm_rollback(rw);
    ag_rm_close(other);
    snprintf(u, sizeof u, "%s%cpool_size=0", uri, strchr(uri, '?') ? '&' : '?');
    cr_assert_eq(ag_rm_open(u, "t", AG_RM_READONLY, &ro, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "pool_size"), "%s", err.msg);
}

/* ---- what every adapter does alike ---- */

Test(readmodel, drop_deletes_and_a_set_aside_read_model_is_kept)
{
    cr_assert_eq(put(rw, "a", 1, NULL), 0);
    ag_rm_close(rw);
    rw = NULL;
    char kept[256];
    cr_assert_eq(ag_rm_set_aside(uri, "t", kept, sizeof kept, NULL), 0);
    cr_assert_gt(strlen(kept), 0);
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &rw, NULL), 0);
    cr_assert_eq(
        ag_rm_script(rw, "CREATE TABLE kv(k TEXT PRIMARY KEY, n INTEGER, note TEXT);", NULL), 0,
        "a new, empty read model");
    cr_assert_eq(count(rw), 0);
    cr_assert_eq(ag_rm_ping(rw, NULL), 0, "reachable");
    cr_assert_eq(ag_rm_drop(uri, "t", NULL), 0);
    cr_assert_eq(ag_rm_drop(uri, "t", NULL), 0, "missing is not an error");
    struct ag_rm *ro;
    cr_assert_neq(ag_rm_open(uri, "t", AG_RM_READONLY, &ro, NULL), 0, "dropped");
}

Test(readmodel, a_postgresql_read_model_is_a_schema_named_for_it)
{
    if (!on_pg) cr_skip_test("PostgreSQL only");
    char where[512];
    ag_rm_locate("postgresql://agora:s3cret@db.example/shop", "Orders", where, sizeof where);
    cr_assert_str_eq(where, "postgresql://agora@db.example/shop schema rm_orders",
                     "named without the password");
    struct ag_rm *bad;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_open(uri, "x;drop", AG_RM_READWRITE, &bad, &err), AG_EINVAL, "%s", err.msg);
    /* schemas speak PostgreSQL once translated: 64-bit INTEGER, BLOB, WITHOUT ROWID */
    cr_assert_eq(
        ag_rm_script(rw, "CREATE TABLE w(k TEXT PRIMARY KEY, b BLOB) WITHOUT ROWID;", &err), 0,
        "%s", err.msg);
    /* a server that cannot be reached is a failure that can pass */
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_open("postgresql://postgres@/postgres?host=/nonexistent", "t",
                            AG_RM_READWRITE, &bad, &err),
                 AG_EUNAVAILABLE, "%s", err.msg);
}

Test(readmodel, an_optional_filter_binds_null_or_a_value)
{
    cr_assert_eq(put(rw, "a", 1, NULL), 0);
    cr_assert_eq(put(rw, "b", 2, NULL), 0);
    struct ag_rm *ro;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READONLY, &ro, NULL), 0);
    const char *sql = "SELECT k FROM kv WHERE k=?1 AND (?2 IS NULL OR k=?2)";
    for (int round = 0; round < 2; round++) { /* prepared, then cached */
        struct ag_rm *h = round ? ro : rw;
        for (int i = 0; i < 3; i++) {
            struct ag_rm_arg any[] = {AG_RM_TEXT("a"), AG_RM_TEXT(NULL)};
            struct ag_rm_arg same[] = {AG_RM_TEXT("a"), AG_RM_TEXT("a")};
            struct ag_rm_arg other[] = {AG_RM_TEXT("a"), AG_RM_TEXT("b")};
            int n = 0;
            struct ag_err err;
            ag_err_clear(&err);
            cr_assert_eq(ag_rm_query(h, sql, any, 2, count_row, &n, &err), 0, "%s", err.msg);
            cr_assert_eq(n, 1, "no filter");
            cr_assert_eq(ag_rm_query(h, sql, same, 2, count_row, &n, &err), 0, "%s", err.msg);
            cr_assert_eq(n, 2, "the filter matches");
            cr_assert_eq(ag_rm_query(h, sql, other, 2, count_row, &n, &err), 0, "%s", err.msg);
            cr_assert_eq(n, 2, "the filter excludes");
        }
    }
    /* a page as the services ask for one: every argument text, the limit too; an
     * integer column compared with text is compared as an integer. (On
     * PostgreSQL a placeholder first seen in "IS NULL" is text: filter text
     * columns that way, as the services do.) */
    const char *page =
        "SELECT k FROM kv WHERE (?1 IS NULL OR k=?1) AND n >= ?2 ORDER BY k LIMIT ?3";
    struct ag_rm_arg args[] = {AG_RM_TEXT(NULL), AG_RM_TEXT("2"), AG_RM_TEXT("1")};
    struct got g = {0};
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_rm_query(ro, page, args, 3, got_row, &g, &err), 0, "%s", err.msg);
    cr_assert_eq(g.rows, 1);
    cr_assert_str_eq(g.k, "b", "n >= \"2\"");
    args[0] = AG_RM_TEXT("a"), args[1] = AG_RM_TEXT("0"), args[2] = AG_RM_TEXT("5");
    g = (struct got){0};
    cr_assert_eq(ag_rm_query(ro, page, args, 3, got_row, &g, &err), 0, "%s", err.msg);
    cr_assert_eq(g.rows, 1);
    cr_assert_str_eq(g.k, "a");
    ag_rm_close(ro);
}

/* ---- one read-only handle, many threads ---- */

struct reader {
    struct ag_rm *ro;
    int ok; /* queries that saw every row */
};

static void *read_many(void *arg)
{
    struct reader *r = arg;
    for (int i = 0; i < 100; i++) {
        int n = 0;
        struct nested x = {r->ro, 0};
        if (ag_rm_query(r->ro, "SELECT k FROM kv", NULL, 0, count_row, &n, NULL) == 0 && n == 20)
            r->ok++;
        if (i % 10 == 0) /* a query inside a row callback, while the others run too */
            ag_rm_query(r->ro, "SELECT k FROM kv WHERE k='key-000001'", NULL, 0, nested_row, &x,
                        NULL);
    }
    return NULL;
}

Test(readmodel, a_read_only_handle_serves_many_threads_at_once)
{
    fill(rw, 20);
    struct ag_rm *ro;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READONLY, &ro, NULL), 0);
    pthread_t t[8];
    struct reader r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (struct reader){ro, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, read_many, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(r[i].ok, 100, "thread %d: %d of 100 queries saw the 20 rows", i, r[i].ok);
    }
    ag_rm_close(ro);
}

Test(readmodel, a_transaction_reads_its_own_writes_and_holds_many)
{
    cr_assert_eq(put(rw, "warm", 0, NULL), 0); /* the statement is prepared */
    cr_assert_eq(ag_rm_begin(rw, NULL), 0);
    for (int i = 0; i < 1000; i++) { /* more than a pipeline holds at once */
        char k[16];
        snprintf(k, sizeof k, "k%04d", i);
        cr_assert_eq(put(rw, k, i, NULL), 0);
        if (i == 500) cr_assert_eq(count(rw), 502, "a read inside sees every write before it");
    }
    cr_assert_eq(ag_rm_checkpoint_set(rw, "p", 1000, NULL), 0);
    cr_assert_eq(ag_rm_commit(rw, NULL), 0);
    cr_assert_eq(count(rw), 1001);
    cr_assert_eq(checkpoint(rw), 1000);
    /* a failure in the middle: the next read of the transaction reports it */
    cr_assert_eq(ag_rm_begin(rw, NULL), 0);
    cr_assert_eq(put(rw, "new", 1, NULL), 0);
    int rc = put(rw, "k0001", 1, NULL); /* already there */
    int n = 0;
    if (!rc) rc = ag_rm_query(rw, "SELECT k FROM kv", NULL, 0, count_row, &n, NULL);
    cr_assert_eq(rc, AG_EIO);
    cr_assert_eq(ag_rm_last_error(rw), AG_EIO, "what the projector looks at");
    ag_rm_rollback(rw); /* as the projector does with a failed page */
    cr_assert_eq(count(rw), 1001, "nothing of it stayed");
    cr_assert_eq(put(rw, "after", 1, NULL), 0, "the handle works again");
}

/* ---- leases (agora serve: one instance per projection) ---- */

Test(readmodel, a_lease_is_held_by_one_writer_and_passes_on_when_it_closes)
{
    struct ag_err err;
    ag_err_clear(&err);
    bool held = false, taken = false;
    cr_assert_eq(ag_rm_lease(rw, "projection", &held, &taken, &err), 0, "%s", err.msg);
    cr_assert(held);
    cr_assert_eq(taken, on_pg, "taken by this call on PostgreSQL; SQLite: always held");
    cr_assert_eq(ag_rm_lease(rw, "projection", &held, &taken, &err), 0, "%s", err.msg);
    cr_assert(held && !taken, "asked again: still held, not taken anew");
    if (!on_pg) return;
    struct ag_rm *other;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &other, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_rm_lease(other, "projection", &held, &taken, &err), 0, "%s", err.msg);
    cr_assert(!held && !taken, "another writer of the same read model waits");
    struct ag_rm *third;
    cr_assert_eq(ag_rm_open(uri, "t", AG_RM_READWRITE, &third, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_rm_lease(third, "relay", &held, &taken, &err), 0, "%s", err.msg);
    cr_assert(held && taken, "another key is another lease");
    cr_assert_eq(ag_rm_lease(third, "projection", &held, &taken, &err), AG_EINVAL,
                 "one lease per handle");
    ag_rm_close(third);
    ag_rm_close(rw); /* the holder goes, its session with it (the server ends it soon after) */
    rw = other;      /* teardown closes it */
    held = false;
    for (int i = 0; i < 250 && !held; i++) {
        cr_assert_eq(ag_rm_lease(other, "projection", &held, &taken, &err), 0, "%s", err.msg);
        if (!held) nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    cr_assert(held && taken, "taken over once the holder's connection closed");
}
