/*
 * agora backup / agora restore: a consistent copy of a data directory while
 * `agora run` serves it, and bringing one back.
 *
 * Order is what makes the copy consistent. (1) The read models first, each with
 * SQLite's online backup API: one consistent snapshot per database, its
 * projection checkpoint (ag_checkpoint) inside it. (2) The keys and other small
 * files of the directory (jwt-secret, ...). (3) The log, segment by segment:
 * segments are append-only and only the last one grows, so a copy of it is a
 * prefix of the log that may end in a torn record. (4) The copy is opened as a
 * store, whose recovery cuts a torn tail exactly as after a crash, and closed,
 * which writes a fresh index checkpoint (the live index.ckpt is not copied: it
 * may name records past the copied bytes). The copy therefore holds every event
 * committed before the backup started (checked: its head is at least the head a
 * read-only open saw first) and possibly later complete ones, never a torn one;
 * and every read model is at or behind the log, so on start the projections
 * catch up from their checkpoints (no rebuild). (5) The vault's keys (DIR/keys)
 * after the log, so every customer in the copy has its data key (or is erased).
 * The log's compression dictionaries (dict-*.zd) are copied right after its
 * segments: one is durable before any record names it and never deleted, so each
 * compressed record copied finds its dictionary. A scavenge running meanwhile
 * renames whole segment files: the copy reads either the old or the new file.
 *
 * The backup is written to PATH.partial and renamed to PATH when complete, with
 * MANIFEST.json (position, segments, read models and their checkpoints). Restore
 * copies it into an empty data directory (0700, files 0600) and runs the store
 * verification. PostgreSQL stores and read models are out of scope (pg_dump).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agora/store_log.h"
#include "cli/cli.h"

#define MANIFEST "MANIFEST.json"

/* ---- files ---- */

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Copy what src holds now to dst (mode 0600), fsynced. */
static int copy_file(const char *src, const char *dst, struct ag_err *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return ag_err_set(err, AG_EIO, "%s: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        close(in);
        return ag_err_set(err, AG_EIO, "%s: %s", dst, strerror(errno));
    }
    static char buf[1 << 20];
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            rc = ag_err_set(err, AG_EIO, "%s: %s", src, strerror(errno));
            break;
        }
        for (ssize_t o = 0; o < n && !rc;) {
            ssize_t w = write(out, buf + o, (size_t)(n - o));
            if (w < 0) rc = ag_err_set(err, AG_EIO, "%s: %s", dst, strerror(errno));
            o += w > 0 ? w : 0;
        }
        if (rc) break;
    }
    if (!rc && fsync(out) != 0) rc = ag_err_set(err, AG_EIO, "%s: %s", dst, strerror(errno));
    close(in);
    close(out);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct names {
    char **v;
    size_t n;
};

static void names_free(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++) ag_free(ns->v[i]);
    ag_free(ns->v);
}

/* Regular files (or, dirs_only, directories) of dir, sorted. */
static int list_dir(const char *dir, bool dirs_only, struct names *out, struct ag_err *err)
{
    DIR *d = opendir(dir);
    out->v = NULL;
    out->n = 0;
    if (!d) return errno == ENOENT ? 0 : ag_err_set(err, AG_EIO, "%s: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[2048];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (lstat(p, &st) != 0 || (dirs_only ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
            continue;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            char **v = ag_realloc(out->v, cap * sizeof *v);
            if (!v)
                rc = AG_ENOMEM;
            else
                out->v = v;
        }
        if (!rc && !(out->v[out->n++] = ag_strdup(e->d_name))) rc = AG_ENOMEM;
    }
    closedir(d);
    if (rc) {
        names_free(out);
        return ag_err_set(err, rc, "out of memory");
    }
    if (out->n) qsort(out->v, out->n, sizeof *out->v, cmp_str);
    return 0;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static bool is_segment(const char *name)
{
    return strncmp(name, "seg-", 4) == 0 && has_suffix(name, ".log");
}

/* A compression dictionary of the log (dict-<id>.zd, src/store/log/dict.c). */
static bool is_dictionary(const char *name)
{
    return strncmp(name, "dict-", 5) == 0 && has_suffix(name, ".zd");
}

/* ---- read models: SQLite online backup ---- */

static int sqlite_copy(const char *src, const char *dst, long long *position, struct ag_err *err)
{
    sqlite3 *in = NULL, *out = NULL;
    int rc = sqlite3_open_v2(src, &in, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_open_v2(dst, &out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    sqlite3_backup *b = rc == SQLITE_OK ? sqlite3_backup_init(out, "main", in, "main") : NULL;
    if (b) {
        sqlite3_busy_timeout(in, 5000);
        do {
            rc = sqlite3_backup_step(b, -1); /* all pages in one read transaction */
            if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_sleep(10);
        } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
        sqlite3_backup_finish(b);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_errcode(out);
    }
    int ret = 0;
    if (rc != SQLITE_OK)
        ret = ag_err_set(err, AG_EIO, "read model %s: backup failed: %s", src, sqlite3_errstr(rc));
    *position = -1;
    sqlite3_stmt *st = NULL;
    if (!ret &&
        sqlite3_prepare_v2(out, "SELECT MAX(position) FROM ag_checkpoint", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        *position = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(in);
    sqlite3_close(out);
    if (!ret) chmod(dst, 0600);
    return ret;
}

/* ---- backup ---- */

static const char backup_usage[] =
    "usage: agora backup [--data DIR] --to PATH\n"
    "\n"
    "Take a consistent copy of the data directory DIR (default ./data, env AGORA_DATA)\n"
    "into the new directory PATH, while agora run serves DIR or not: the read models\n"
    "(SQLite online backup), the keys (jwt-secret and the other files of DIR), then the\n"
    "event log, whose copy is recovered like after a crash (a torn last record is cut)\n"
    "and gets a fresh index checkpoint. It holds every event committed before the\n"
    "backup started. PATH appears only once complete (written as PATH.partial).\n"
    "Prints a JSON report: position (events in the copy), segments, read models.\n"
    "Restore with 'agora restore --from PATH --data NEWDIR'.\n";

struct backup {
    const char *data;
    const char *to;
    char part[1100];
    struct ag_buf manifest; /* JSON being built */
};

static int backup_readmodels(struct backup *b, struct ag_err *err)
{
    char src[1200], dst[1200];
    snprintf(src, sizeof src, "%s/readmodels", b->data);
    struct names ns;
    int rc = list_dir(src, false, &ns, err);
    if (rc) return rc;
    snprintf(dst, sizeof dst, "%s/readmodels", b->part);
    if (ns.n && mkdir(dst, 0700) != 0) rc = ag_err_set(err, AG_EIO, "%s: %s", dst, strerror(errno));
    ag_buf_puts(&b->manifest, ",\"readmodels\":{");
    size_t k = 0;
    for (size_t i = 0; i < ns.n && !rc; i++) {
        if (!has_suffix(ns.v[i], ".db")) continue; /* -wal, -shm: inside the backup */
        char s[2400], d[2400];
        long long pos;
        snprintf(s, sizeof s, "%s/%s", src, ns.v[i]);
        snprintf(d, sizeof d, "%s/%s", dst, ns.v[i]);
        rc = sqlite_copy(s, d, &pos, err);
        if (!rc) ag_buf_printf(&b->manifest, "%s\"%s\":%lld", k++ ? "," : "", ns.v[i], pos);
    }
    ag_buf_putc(&b->manifest, '}');
    names_free(&ns);
    return rc;
}

/* Keys and other small files of DIR; the log and its lock/checkpoint are not. */
static int backup_files(struct backup *b, struct ag_err *err)
{
    struct names ns;
    int rc = list_dir(b->data, false, &ns, err);
    ag_buf_puts(&b->manifest, ",\"files\":[");
    size_t k = 0;
    for (size_t i = 0; i < ns.n && !rc; i++) {
        const char *n = ns.v[i];
        if (is_segment(n) || is_dictionary(n) || !strcmp(n, "index.ckpt") || !strcmp(n, "LOCK") ||
            has_suffix(n, ".tmp") || has_suffix(n, ".partial") || !strcmp(n, MANIFEST))
            continue;
        char s[2400], d[2400];
        snprintf(s, sizeof s, "%s/%s", b->data, n);
        snprintf(d, sizeof d, "%s/%s", b->part, n);
        rc = copy_file(s, d, err);
        if (!rc) ag_buf_printf(&b->manifest, "%s\"%s\"", k++ ? "," : "", n);
    }
    ag_buf_putc(&b->manifest, ']');
    names_free(&ns);
    return rc;
}

/* The log's compression dictionaries, after its segments: a dictionary is written
 * (and synced) before any record names it and never deleted, so every compressed
 * record copied has its dictionary here. */
static int backup_dicts(struct backup *b, struct ag_err *err)
{
    struct names ns;
    int rc = list_dir(b->data, false, &ns, err);
    for (size_t i = 0; i < ns.n && !rc; i++) {
        if (!is_dictionary(ns.v[i])) continue;
        char s[2400], d[2400];
        snprintf(s, sizeof s, "%s/%s", b->data, ns.v[i]);
        snprintf(d, sizeof d, "%s/%s", b->part, ns.v[i]);
        rc = copy_file(s, d, err);
    }
    names_free(&ns);
    return rc;
}

static int backup_log(struct backup *b, uint64_t committed, struct ag_err *err)
{
    struct names ns;
    int rc = list_dir(b->data, false, &ns, err);
    size_t segs = 0;
    for (size_t i = 0; i < ns.n && !rc; i++) {
        if (!is_segment(ns.v[i])) continue;
        char s[2400], d[2400];
        snprintf(s, sizeof s, "%s/%s", b->data, ns.v[i]);
        snprintf(d, sizeof d, "%s/%s", b->part, ns.v[i]);
        rc = copy_file(s, d, err);
        segs++;
    }
    names_free(&ns);
    if (!rc) rc = backup_dicts(b, err);
    if (rc) return rc;
    /* recover the copy (cuts a torn tail), then close: a fresh index checkpoint */
    struct ag_store *st;
    struct ag_store_options o = {0};
    rc = ag_store_log_open(b->part, &o, &st, err);
    if (rc) return rc;
    struct ag_store_stats ss;
    rc = ag_store_stats(st, &ss);
    ag_store_close(st);
    if (rc) return ag_err_set(err, rc, "the copied log: %s", ag_strerror(rc));
    if (ss.events < committed)
        return ag_err_set(err, AG_ECORRUPT,
                          "the copied log holds %llu events, fewer than the %llu committed when "
                          "the backup started",
                          (unsigned long long)ss.events, (unsigned long long)committed);
    ag_buf_printf(&b->manifest, ",\"position\":%llu,\"committedAtStart\":%llu,\"segments\":%zu",
                  (unsigned long long)ss.events, (unsigned long long)committed, segs);
    return 0;
}

/* The vault's key files (DIR/keys: the wrapped data key of each customer, the
 * erasure tombstones, the wrapped index key that names the email claims and the
 * marker of their migration, the master key file when there is one), after the
 * log: the index key never changes, and data keys
 * are only ever added (a registration writes its key before its events) or
 * destroyed (an erasure), so every customer in the copied log has its key here,
 * or is erased. */
static int backup_keys(struct backup *b, struct ag_err *err)
{
    char src[1200], dst[1200];
    snprintf(src, sizeof src, "%s/keys", b->data);
    snprintf(dst, sizeof dst, "%s/keys", b->part);
    struct names ns;
    int rc = list_dir(src, false, &ns, err);
    if (!rc && ns.n && mkdir(dst, 0700) != 0)
        rc = ag_err_set(err, AG_EIO, "%s: %s", dst, strerror(errno));
    size_t k = 0;
    for (size_t i = 0; i < ns.n && !rc; i++) {
        if (has_suffix(ns.v[i], ".tmp")) continue;
        char s[2400], d[2400];
        snprintf(s, sizeof s, "%s/%s", src, ns.v[i]);
        snprintf(d, sizeof d, "%s/%s", dst, ns.v[i]);
        rc = copy_file(s, d, err);
        if (rc == AG_EIO && access(s, F_OK) != 0)
            rc = 0, ag_err_clear(err); /* erased meanwhile */
        else if (!rc)
            k++;
    }
    names_free(&ns);
    if (!rc && k) fsync_path(dst);
    if (!rc) ag_buf_printf(&b->manifest, ",\"keys\":%zu", k);
    return rc;
}

/* The committed head of the live log (a read-only open works while agora run has it). */
static int live_head(const char *data, uint64_t *out, struct ag_err *err)
{
    struct ag_store *st;
    struct ag_store_options o = {.read_only = true};
    int rc = ag_store_log_open(data, &o, &st, err);
    if (rc) return rc;
    struct ag_store_stats ss;
    rc = ag_store_stats(st, &ss);
    ag_store_close(st);
    *out = ss.events;
    return rc ? ag_err_set(err, rc, "%s: %s", data, ag_strerror(rc)) : 0;
}

static int run_backup(struct backup *b, struct ag_err *err)
{
    struct stat st;
    if (stat(b->to, &st) == 0) return ag_err_set(err, AG_EEXISTS, "%s already exists", b->to);
    snprintf(b->part, sizeof b->part, "%s.partial", b->to);
    uint64_t committed = 0;
    int rc = live_head(b->data, &committed, err);
    if (rc) return rc;
    if (mkdir(b->part, 0700) != 0)
        return ag_err_set(err, AG_EIO, "%s: %s (a .partial left by a failed backup can be removed)",
                          b->part, strerror(errno));
    time_t now = time(NULL);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    ag_buf_printf(&b->manifest, "{\"format\":1,\"created\":\"%s\",\"source\":", ts);
    ag_buf_json_str(&b->manifest, b->data, strlen(b->data));
    rc = backup_readmodels(b, err);
    if (!rc) rc = backup_files(b, err);
    if (!rc) rc = backup_log(b, committed, err);
    if (!rc) rc = backup_keys(b, err);
    if (!rc) rc = ag_buf_puts(&b->manifest, "}");
    char mp[1200];
    snprintf(mp, sizeof mp, "%s/" MANIFEST, b->part);
    FILE *f = rc ? NULL : fopen(mp, "w");
    if (!rc && (!f || fwrite(b->manifest.data, 1, b->manifest.len, f) != b->manifest.len))
        rc = ag_err_set(err, AG_EIO, "%s: %s", mp, strerror(errno));
    if (f && fclose(f) != 0 && !rc) rc = ag_err_set(err, AG_EIO, "%s: %s", mp, strerror(errno));
    if (!rc) fsync_path(b->part);
    if (!rc && rename(b->part, b->to) != 0)
        rc = ag_err_set(err, AG_EIO, "rename %s: %s", b->to, strerror(errno));
    return rc;
}

static int backup_cmd(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(backup_usage, stdout);
        return 0;
    }
    struct backup b = {.data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data"};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            b.data = argv[++i];
        else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            b.to = argv[++i];
        else
            return ag_cli_usage_error("backup: unknown or incomplete option '%s'", argv[i]);
    }
    if (!b.to) return ag_cli_usage_error("backup: --to PATH is required");
    const char *store = getenv("AGORA_STORE");
    if (store && strncmp(store, "shards:", 7) == 0) { /* README "Sharding" */
        fprintf(stderr, "agora backup: AGORA_STORE is a sharded store: back up each shard's "
                        "directory (agora backup --data SHARD_DIR --to PATH_k) and the read "
                        "models of DIR; a restored set completes its cross-shard units at "
                        "its first open\n");
        return 1;
    }
    umask(077);
    ag_buf_init(&b.manifest);
    struct ag_err err;
    ag_err_clear(&err);
    int rc = run_backup(&b, &err);
    if (rc) {
        fprintf(stderr, "agora backup: %s\n", ag_err_msg(&err, rc));
        ag_buf_free(&b.manifest);
        return 1;
    }
    printf("%s\n", b.manifest.data);
    ag_buf_free(&b.manifest);
    return 0;
}

const struct ag_cli_cmd ag_cli_cmd_backup = {
    "backup", "take a consistent copy of a data directory, while it serves", backup_cmd};

/* ---- restore ---- */

static const char restore_usage[] =
    "usage: agora restore --from PATH [--data DIR]\n"
    "\n"
    "Bring back a backup made by 'agora backup' into DIR (default ./data, env\n"
    "AGORA_DATA), which must not exist or be empty; then verify the log (as 'agora\n"
    "store verify'). Start 'agora run --data DIR' on it: the projections catch up\n"
    "from the read models' checkpoints to the backup's position.\n";

static int copy_tree(const char *from, const char *to, struct ag_err *err)
{
    struct names ns;
    int rc = list_dir(from, false, &ns, err);
    for (size_t i = 0; i < ns.n && !rc; i++) {
        char s[2400], d[2400];
        snprintf(s, sizeof s, "%s/%s", from, ns.v[i]);
        snprintf(d, sizeof d, "%s/%s", to, ns.v[i]);
        rc = copy_file(s, d, err);
    }
    names_free(&ns);
    if (rc) return rc;
    rc = list_dir(from, true, &ns, err);
    for (size_t i = 0; i < ns.n && !rc; i++) {
        char s[2400], d[2400];
        snprintf(s, sizeof s, "%s/%s", from, ns.v[i]);
        snprintf(d, sizeof d, "%s/%s", to, ns.v[i]);
        if (mkdir(d, 0700) != 0) rc = ag_err_set(err, AG_EIO, "%s: %s", d, strerror(errno));
        if (!rc) rc = copy_tree(s, d, err);
    }
    names_free(&ns);
    return rc ? rc : (fsync_path(to), 0);
}

static int restore_cmd(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(restore_usage, stdout);
        return 0;
    }
    const char *from = NULL, *data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
            from = argv[++i];
        else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else
            return ag_cli_usage_error("restore: unknown or incomplete option '%s'", argv[i]);
    }
    if (!from) return ag_cli_usage_error("restore: --from PATH is required");
    umask(077);
    struct ag_err err;
    ag_err_clear(&err);
    char mp[1200];
    snprintf(mp, sizeof mp, "%s/" MANIFEST, from);
    char *manifest = NULL;
    size_t mlen;
    int rc = ag_file_read(mp, &manifest, &mlen);
    if (rc) {
        fprintf(stderr, "agora restore: %s: not a complete backup (%s)\n", mp, ag_strerror(rc));
        return 1;
    }
    struct names existing;
    rc = list_dir(data, false, &existing, &err);
    size_t n = existing.n;
    names_free(&existing);
    struct names dirs;
    if (!rc) rc = list_dir(data, true, &dirs, &err);
    if (!rc) {
        n += dirs.n;
        names_free(&dirs);
    }
    if (!rc && n)
        rc = ag_err_set(&err, AG_EEXISTS, "%s is not empty: restore into a new directory", data);
    if (!rc && mkdir(data, 0700) != 0 && errno != EEXIST)
        rc = ag_err_set(&err, AG_EIO, "%s: %s", data, strerror(errno));
    if (!rc) rc = copy_tree(from, data, &err);
    struct ag_log_verify_report r = {0};
    if (!rc) rc = ag_store_log_verify(data, false, &r, &err);
    if (!rc && !r.ok) rc = ag_err_set(&err, AG_ECORRUPT, "verify: %s", r.problem);
    if (rc) {
        fprintf(stderr, "agora restore: %s\n", ag_err_msg(&err, rc));
        ag_free(manifest);
        return 1;
    }
    printf("{\"restored\":true,\"data\":");
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_json_str(&b, data, strlen(data));
    printf("%s,\"verify\":{\"ok\":true,\"segments\":%llu,\"events\":%llu},\"backup\":%.*s}\n",
           b.data, (unsigned long long)r.segments, (unsigned long long)r.events, (int)mlen,
           manifest);
    ag_buf_free(&b);
    ag_free(manifest);
    return 0;
}

const struct ag_cli_cmd ag_cli_cmd_restore = {
    "restore", "bring a backup back into an empty data directory", restore_cmd};
