/*
 * The PostgreSQL store's schema, its versioned migrations, the URI it is opened
 * with and how one session is set up.
 *
 * Every table lives in one schema (default `agora`, `schema=` in the URI) and every
 * session runs with search_path set to it, so the functions below name tables
 * unqualified. `schema_version` records each applied step; a step is a list of
 * statements run in one transaction under an advisory lock, so two processes
 * starting at once migrate once. A step is `safe` when it only adds (tables,
 * functions, indexes built small): those run at open; anything else waits for
 * `agora store migrate`. A database whose version is above what this binary knows
 * is refused: an older binary must not write under a newer layout.
 *
 * Why these functions run in the server (one round trip per append, and the
 * gap-safety argument) is in docs/internals/store.md; in short:
 * - `append` locks every stream it touches with transaction advisory locks in one
 *   fixed (hash) order BEFORE its first write. A transaction id is assigned only at
 *   the first write, so a transaction that waits for a stream gets its id after the
 *   previous writer of that stream has committed: ordering by tx_id keeps every
 *   stream in version order (a FOR UPDATE row lock would assign the id before the
 *   wait and break that for multi-stream appends). All checks (expected versions,
 *   repeated ids) precede all writes, so a refused append writes nothing.
 * - `append3` (v3) does the same for a whole batch of appends on disjoint streams:
 *   the locks, then one set-based statement that checks every part and writes the
 *   parts of the appends that passed.
 * - `sequence` numbers committed events with dense positions (rows of `positions`)
 *   in (tx_id, global_position) order, from the last pair it numbered up to
 *   tx_id < pg_snapshot_xmin(current snapshot): every transaction below that is
 *   finished, so nothing can later commit below an event already numbered. One sequencer at a time
 * (a try-lock: a busy sequencer is waited for by polling, never queued behind).
 * - `resolve4` (v4) is the same numbering run by every append right behind its commit,
 *   queued on the lock instead of giving up, returning all it numbered; `resolve5`
 *   (v5) also looks up the positions the process's other appends wait for.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg/internal.h"

struct step {
    int version;
    bool safe;
    const char *sql;
};

/* the start of settle (v1), resolve (v2) and resolve_ids (v3): h is the head after
 * numbering what can be numbered, or the current head while another sequencer runs */
#define SEQUENCE_OR_HEAD                                                                           \
    "DECLARE h bigint;\n"                                                                          \
    "BEGIN\n"                                                                                      \
    "  h := sequence();\n"                                                                         \
    "  IF h < 0 THEN SELECT next INTO h FROM head; END IF;\n"

/* resolve4 (v4) and resolve5 (v5), written once so the two cannot drift apart:
 * their settings; their body up to the look-up of the caller's own events by id
 * (take the sequencer lock, number what is numberable, return it), which
 * resolve5 follows with its look-up by global position; their end (notify when
 * the head moved). The text is what those steps always ran. */
#define RESOLVE_SETTINGS                                                                           \
    " LANGUAGE plpgsql SET enable_seqscan = off SET jit = off"                                     \
    " SET plan_cache_mode = force_generic_plan AS $f$\n"
#define RESOLVE_NUMBERING                                                                          \
    "#variable_conflict use_column\n"                                                              \
    "DECLARE h bigint; ltx xid8; lgp bigint; nh bigint;\n"                                         \
    "BEGIN\n"                                                                                      \
    "  PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || '$seq', 0));\n"          \
    "  PERFORM set_config('synchronous_commit', 'off', true);\n"                                   \
    "  SELECT head.next, head.last_tx, head.last_gp INTO h, ltx, lgp FROM head;\n"                 \
    "  RETURN QUERY\n"                                                                             \
    "  WITH t AS (SELECT u.tx_id, u.global_position AS g,\n"                                       \
    "                    h + row_number() OVER (ORDER BY u.tx_id, u.global_position) - 1 AS p\n"   \
    "               FROM (SELECT e.tx_id, e.global_position FROM events e\n"                       \
    "                      WHERE (e.tx_id, e.global_position) > (ltx, lgp)\n"                      \
    "                        AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())\n"              \
    "                      ORDER BY e.tx_id, e.global_position LIMIT 100000) u),\n"                \
    "  ins AS (INSERT INTO positions (position, global_position) SELECT t.p, t.g FROM t),\n"       \
    "  up AS (UPDATE head SET next = l.p + 1, last_tx = l.tx_id, last_gp = l.g\n"                  \
    "           FROM (SELECT * FROM t ORDER BY t.p DESC LIMIT 1) l RETURNING head.next)\n"         \
    "  SELECT -1::bigint, coalesce((SELECT up.next FROM up), h)\n"                                 \
    "  UNION ALL SELECT t.g, t.p FROM t\n"                                                         \
    "  UNION ALL SELECT e.global_position, q.position FROM events e\n"                             \
    "    JOIN positions q ON q.global_position = e.global_position\n"                              \
    "   WHERE e.event_id = ANY(p_ids)"
#define RESOLVE_NOTIFY                                                                             \
    "  SELECT head.next INTO nh FROM head;\n"                                                      \
    "  IF nh > h THEN PERFORM pg_notify(current_schema() || '_events', nh::text); END IF;\n"       \
    "END $f$;"

static const struct step steps[] = {
    {1, true,
     "CREATE TABLE streams ("
     "  stream_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
     "  stream_name text NOT NULL UNIQUE,"
     "  version bigint NOT NULL);"
     "CREATE TABLE events ("
     "  global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
     "  tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),"
     "  stream_id bigint NOT NULL REFERENCES streams,"
     "  version bigint NOT NULL,"
     "  event_id uuid NOT NULL UNIQUE,"
     "  type text NOT NULL,"
     "  data json NOT NULL,"
     "  metadata json NOT NULL,"
     "  created_at timestamptz NOT NULL DEFAULT now(),"
     "  UNIQUE (stream_id, version));"
     "CREATE INDEX events_tx ON events (tx_id, global_position);"
     /* $all: position -> event, written by the sequencer only (narrow rows: cheaper
      * than updating the wide, five-times-indexed event rows) */
     "CREATE TABLE positions (position bigint PRIMARY KEY,"
     "  global_position bigint NOT NULL UNIQUE);"
     /* the next position, and the last (tx_id, global_position) numbered */
     "CREATE TABLE head (one bool PRIMARY KEY DEFAULT true CHECK (one), next bigint NOT NULL,"
     "  last_tx xid8 NOT NULL, last_gp bigint NOT NULL);"
     "INSERT INTO head VALUES (true, 0, '0', 0);"
     "CREATE TABLE snapshots ("
     "  stream_id bigint PRIMARY KEY REFERENCES streams,"
     "  version bigint NOT NULL,"
     "  state bytea NOT NULL,"
     "  created_at timestamptz NOT NULL DEFAULT now());"
     "CREATE TABLE checkpoints ("
     "  name text PRIMARY KEY,"
     "  position bigint NOT NULL,"
     "  updated_at timestamptz NOT NULL DEFAULT now());"
     /* append: p_* are the parts' streams, expected versions and event counts, then
      * the events of all parts one after the other. Returns one row per part:
      * status 0 ok (note 'repeat' for a repeated append), 1 conflict (actual
      * version), 2 the ids are taken with other content (note: the message). */
     "CREATE FUNCTION append(p_streams text[], p_expected bigint[], p_counts int[],"
     "  p_ids uuid[], p_types text[], p_data json[], p_meta json[])"
     " RETURNS TABLE(status int, actual bigint, first_version bigint, last_version bigint,"
     "  note text) LANGUAGE plpgsql AS $f$\n"
     "DECLARE\n"
     "  n int := array_length(p_streams, 1); off int := 0; cnt int; xp bigint;\n"
     "  sids bigint[] := '{}'; curs bigint[] := '{}'; rep bool[] := '{}';\n"
     "  sid bigint; cur bigint; v0 bigint; osid bigint; same bigint;\n"
     "BEGIN\n"
     "  PERFORM pg_advisory_xact_lock(l.h) FROM (SELECT DISTINCT\n"
     "    hashtextextended(current_schema() || '.' || s, 0) AS h FROM unnest(p_streams) s\n"
     "    ORDER BY 1) l;\n"
     "  FOR i IN 1..n LOOP\n"
     "    cnt := p_counts[i]; xp := p_expected[i];\n"
     "    SELECT st.stream_id, st.version INTO sid, cur FROM streams st\n"
     "      WHERE st.stream_name = p_streams[i];\n"
     "    IF NOT FOUND THEN sid := NULL; cur := -1; END IF;\n"
     "    SELECT e.stream_id, e.version INTO osid, v0 FROM events e\n"
     "      WHERE e.event_id = p_ids[off + 1];\n"
     "    IF FOUND THEN\n"
     "      IF osid IS DISTINCT FROM sid THEN\n"
     "        RETURN QUERY SELECT 2, cur, 0::bigint, 0::bigint, format(\n"
     "          'event id %s is already in stream ''%s''', p_ids[off + 1],\n"
     "          (SELECT stream_name FROM streams WHERE stream_id = osid));\n"
     "        RETURN;\n"
     "      END IF;\n"
     "      SELECT count(*) INTO same FROM generate_series(0, cnt - 1) k\n"
     "        JOIN events e ON e.stream_id = sid AND e.version = v0 + k\n"
     "       WHERE e.event_id = p_ids[off + 1 + k] AND e.type = p_types[off + 1 + k]\n"
     "         AND e.data::text = p_data[off + 1 + k]::text\n"
     "         AND e.metadata::text = p_meta[off + 1 + k]::text;\n"
     "      IF same <> cnt THEN\n"
     "        RETURN QUERY SELECT 2, cur, 0::bigint, 0::bigint, format(\n"
     "          'event id %s is already in stream ''%s'' with different content',\n"
     "          p_ids[off + 1], p_streams[i]);\n"
     "        RETURN;\n"
     "      END IF;\n"
     "      rep := rep || true; curs := curs || v0;\n"
     "    ELSE\n"
     "      IF (xp = -1 AND cur <> -1) OR (xp = -4 AND cur = -1) OR (xp >= 0 AND cur <> xp) THEN\n"
     "        RETURN QUERY SELECT 1, cur, 0::bigint, 0::bigint, p_streams[i];\n"
     "        RETURN;\n"
     "      END IF;\n"
     "      rep := rep || false; curs := curs || cur;\n"
     "    END IF;\n"
     "    sids := sids || sid; off := off + cnt;\n"
     "  END LOOP;\n"
     "  off := 0;\n"
     "  FOR i IN 1..n LOOP\n"
     "    cnt := p_counts[i];\n"
     "    IF rep[i] THEN\n"
     "      RETURN QUERY SELECT 0, curs[i], curs[i], curs[i] + cnt - 1, 'repeat'::text;\n"
     "    ELSE\n"
     "      sid := sids[i]; cur := curs[i];\n"
     "      IF sid IS NULL THEN\n"
     "        INSERT INTO streams (stream_name, version) VALUES (p_streams[i], cnt - 1)\n"
     "          RETURNING stream_id INTO sid;\n"
     "      ELSE\n"
     "        UPDATE streams SET version = cur + cnt WHERE stream_id = sid;\n"
     "      END IF;\n"
     "      INSERT INTO events (stream_id, version, event_id, type, data, metadata)\n"
     "        SELECT sid, cur + k, p_ids[off + k], p_types[off + k], p_data[off + k],\n"
     "               p_meta[off + k] FROM generate_series(1, cnt) k ORDER BY k;\n"
     "      RETURN QUERY SELECT 0, cur, cur + 1, cur + cnt, NULL::text;\n"
     "    END IF;\n"
     "    off := off + cnt;\n"
     "  END LOOP;\n"

     "END $f$;"
     /* sequence: number what can be numbered; -1 when another sequencer runs */
     "CREATE FUNCTION sequence() RETURNS bigint LANGUAGE plpgsql AS $f$\n"
     "DECLARE h bigint; n bigint; ltx xid8; lgp bigint;\n"
     "BEGIN\n"
     "  IF NOT pg_try_advisory_xact_lock(hashtextextended(current_schema() || '$seq', 0)) THEN\n"
     "    RETURN -1;\n"
     "  END IF;\n"
     "  PERFORM set_config('synchronous_commit', 'off', true);\n"
     "  SELECT next, last_tx, last_gp INTO h, ltx, lgp FROM head;\n"
     "  INSERT INTO positions (position, global_position)\n"
     "    SELECT h + row_number() OVER (ORDER BY t.tx_id, t.global_position) - 1, "
     "t.global_position\n"
     "      FROM (SELECT tx_id, global_position FROM events\n"
     "             WHERE (tx_id, global_position) > (ltx, lgp)\n"
     "               AND tx_id < pg_snapshot_xmin(pg_current_snapshot())\n"
     "             ORDER BY tx_id, global_position LIMIT 100000) t;\n"
     "  GET DIAGNOSTICS n = ROW_COUNT;\n"
     "  IF n > 0 THEN\n"
     "    SELECT e.tx_id, e.global_position INTO ltx, lgp FROM positions p\n"
     "      JOIN events e USING (global_position) WHERE p.position = h + n - 1;\n"
     "    UPDATE head SET next = h + n, last_tx = ltx, last_gp = lgp;\n"
     "    PERFORM pg_notify(current_schema() || '_events', (h + n)::text);\n"
     "  END IF;\n"
     "  RETURN h + n;\n"
     "END $f$;"
     /* settle: order what can be ordered, then each part's positions (NULL while
      * an older transaction is still running) */
     "CREATE FUNCTION settle(p_streams text[], p_first bigint[], p_last bigint[])"
     " RETURNS TABLE(first_pos bigint, last_pos bigint, unordered bigint, hd bigint)"
     " LANGUAGE plpgsql AS $f$\n" SEQUENCE_OR_HEAD
     "  RETURN QUERY SELECT min(q.position), max(q.position), count(*) - count(q.position), h\n"
     "    FROM unnest(p_streams, p_first, p_last) WITH ORDINALITY AS p(s, f, l, o)\n"
     "    JOIN streams st ON st.stream_name = p.s\n"
     "    JOIN events e ON e.stream_id = st.stream_id AND e.version BETWEEN p.f AND p.l\n"
     "    LEFT JOIN positions q ON q.global_position = e.global_position\n"
     "   GROUP BY p.o ORDER BY p.o;\n"
     "END $f$;"},
    /* 2: group commit and one round trip per append. append_batch runs several
     * callers' appends in one transaction: every stream of every append locked
     * first in the one hash order (so two batches cannot deadlock, and the
     * transaction id comes after every lock, as for one append), then each append
     * as `append` does it, with the global positions of each part's first and last
     * event (written, or the originals on a repeat). resolve runs the sequencer
     * once and maps global positions to $all positions, for the process's one
     * sequencer thread that settles every waiting append at once
     * (docs/internals/store.md). */
    {2, true,
     "CREATE FUNCTION append_batch(p_nparts int[], p_streams text[], p_expected bigint[],"
     "  p_counts int[], p_ids uuid[], p_types text[], p_data json[], p_meta json[])"
     " RETURNS TABLE(app int, status int, actual bigint, first_version bigint,"
     "  last_version bigint, note text, first_gp bigint, last_gp bigint)"
     " LANGUAGE plpgsql AS $f$\n"
     "DECLARE r record; p0 int := 1; e0 int := 1; np int; ne int; i int;\n"
     "BEGIN\n"
     "  PERFORM pg_advisory_xact_lock(l.h) FROM (SELECT DISTINCT\n"
     "    hashtextextended(current_schema() || '.' || s, 0) AS h FROM unnest(p_streams) s\n"
     "    ORDER BY 1) l;\n"
     "  FOR a IN 1..array_length(p_nparts, 1) LOOP\n"
     "    np := p_nparts[a];\n"
     "    SELECT sum(c) INTO ne FROM unnest(p_counts[p0:p0 + np - 1]) c;\n"
     "    i := 0;\n"
     "    FOR r IN SELECT * FROM append(p_streams[p0:p0 + np - 1],\n"
     "        p_expected[p0:p0 + np - 1], p_counts[p0:p0 + np - 1], p_ids[e0:e0 + ne - 1],\n"
     "        p_types[e0:e0 + ne - 1], p_data[e0:e0 + ne - 1], p_meta[e0:e0 + ne - 1]) LOOP\n"
     "      i := i + 1;\n"
     "      app := a; status := r.status; actual := r.actual;\n"
     "      first_version := r.first_version; last_version := r.last_version;\n"
     "      note := r.note; first_gp := NULL; last_gp := NULL;\n"
     "      IF r.status = 0 THEN\n"
     "        SELECT min(e.global_position), max(e.global_position) INTO first_gp, last_gp\n"
     "          FROM streams st JOIN events e ON e.stream_id = st.stream_id\n"
     "           AND e.version IN (r.first_version, r.last_version)\n"
     "         WHERE st.stream_name = p_streams[p0 + i - 1];\n"
     "      END IF;\n"
     "      RETURN NEXT;\n"
     "    END LOOP;\n"
     "    p0 := p0 + np; e0 := e0 + ne;\n"
     "  END LOOP;\n"
     "END $f$;"
     /* first row: (-1, head); then (global_position, position) of those numbered */
     "CREATE FUNCTION resolve(p_gps bigint[]) RETURNS TABLE(gp bigint, pos bigint)"
     " LANGUAGE plpgsql AS $f$\n" SEQUENCE_OR_HEAD "  RETURN QUERY SELECT -1::bigint, h;\n"
     "  RETURN QUERY SELECT q.global_position, q.position FROM positions q\n"
     "    WHERE q.global_position = ANY(p_gps);\n"
     "END $f$;"},
    /* 3: the append in plain set-based SQL. append3 takes the same arrays as
     * append_batch, whose appends must touch disjoint streams (the client's batcher
     * guarantees it; a batch that breaks it fails as a whole and is run again one
     * append at a time). After the advisory locks (in the one hash order, before the
     * transaction id, as before) ONE statement checks every part (the stream row, the
     * first event id: repeat, taken elsewhere or with other content, the expected
     * version), writes the parts of the appends that passed (streams by one upsert,
     * events by one INSERT ... SELECT in part order) and returns each part's verdict
     * with its first and last global_position from RETURNING: no nested function,
     * no per-part statements, no look-up of what was just written. The foreign keys
     * to streams go: the stream row is written in the same statement as its events,
     * under the stream's lock, and checking it cost a look-up per event. */
    {3, true,
     "ALTER TABLE events DROP CONSTRAINT IF EXISTS events_stream_id_fkey;"
     "ALTER TABLE snapshots DROP CONSTRAINT IF EXISTS snapshots_stream_id_fkey;"
     "CREATE FUNCTION append3(p_nparts int[], p_streams text[], p_expected bigint[],"
     "  p_counts int[], p_ids uuid[], p_types text[], p_data json[], p_meta json[])"
     " RETURNS TABLE(app int, status int, actual bigint, first_version bigint,"
     "  last_version bigint, note text, first_gp bigint, last_gp bigint)"
     /* one generic plan per session: planning this statement costs more than
      * running it, and custom plans would be made for every call */
     " LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $f$\n"
     "#variable_conflict use_column\n"
     "BEGIN\n"
     "  PERFORM pg_advisory_xact_lock(l.h) FROM (SELECT DISTINCT\n"
     "    hashtextextended(current_schema() || '.' || s, 0) AS h FROM unnest(p_streams) s\n"
     "    ORDER BY 1) l;\n"
     "  RETURN QUERY\n"
     "  WITH a AS (SELECT v.o::int AS app, (sum(v.n) OVER (ORDER BY v.o) - v.n + 1)::int AS lo,\n"
     "                    (sum(v.n) OVER (ORDER BY v.o))::int AS hi\n"
     "               FROM unnest(p_nparts) WITH ORDINALITY AS v(n, o)),\n"
     "  p AS (SELECT u.o::int AS part, u.s, u.x, u.c,\n"
     "               (sum(u.c) OVER (ORDER BY u.o) - u.c)::int AS off\n"
     "          FROM unnest(p_streams, p_expected, p_counts) WITH ORDINALITY AS u(s, x, c, o)),\n"
     "  k AS (SELECT a.app, p.part, p.s, p.x, p.c, p.off, st.stream_id AS sid,\n"
     "               coalesce(st.version, -1) AS cur, e.stream_id AS osid, e.version AS v0,\n"
     "               e.event_id IS NOT NULL AS seen\n"
     "          FROM p JOIN a ON p.part BETWEEN a.lo AND a.hi\n"
     "          LEFT JOIN streams st ON st.stream_name = p.s\n"
     "          LEFT JOIN events e ON e.event_id = p_ids[p.off + 1]),\n"
     "  chk AS (SELECT k.*, CASE\n"
     "      WHEN k.seen AND k.osid IS DISTINCT FROM k.sid THEN 2\n"
     "      WHEN k.seen AND (SELECT count(*) FROM generate_series(0, k.c - 1) j\n"
     "             JOIN events e ON e.stream_id = k.sid AND e.version = k.v0 + j\n"
     "            WHERE e.event_id = p_ids[k.off + 1 + j] AND e.type = p_types[k.off + 1 + j]\n"
     "              AND e.data::text = p_data[k.off + 1 + j]::text\n"
     "              AND e.metadata::text = p_meta[k.off + 1 + j]::text) <> k.c THEN 3\n"
     "      WHEN k.seen THEN 0\n"
     "      WHEN (k.x = -1 AND k.cur <> -1) OR (k.x = -4 AND k.cur = -1)\n"
     "        OR (k.x >= 0 AND k.cur <> k.x) THEN 1\n"
     "      ELSE 0 END AS st\n"
     "    FROM k),\n"
     "  w AS (SELECT * FROM chk WHERE chk.st = 0 AND NOT chk.seen\n"
     "          AND chk.app NOT IN (SELECT b.app FROM chk b WHERE b.st > 0)),\n"
     "  up AS (INSERT INTO streams AS t (stream_name, version)\n"
     "           SELECT w.s, w.cur + w.c FROM w ORDER BY w.part\n"
     "         ON CONFLICT (stream_name) DO UPDATE SET version = EXCLUDED.version\n"
     "         RETURNING t.stream_id, t.stream_name),\n"
     "  ins AS (INSERT INTO events (stream_id, version, event_id, type, data, metadata)\n"
     "           SELECT up.stream_id, w.cur + j, p_ids[w.off + j], p_types[w.off + j],\n"
     "                  p_data[w.off + j], p_meta[w.off + j]\n"
     "             FROM w JOIN up ON up.stream_name = w.s, generate_series(1, w.c) j\n"
     "            ORDER BY w.part, j\n"
     "          RETURNING events.stream_id, events.global_position),\n"
     "  g AS (SELECT ins.stream_id, min(ins.global_position) AS lo,\n"
     "               max(ins.global_position) AS hi FROM ins GROUP BY ins.stream_id)\n"
     "  SELECT chk.app, CASE WHEN chk.st = 3 THEN 2 ELSE chk.st END, chk.cur,\n"
     "    CASE WHEN chk.seen THEN chk.v0 ELSE chk.cur + 1 END,\n"
     "    CASE WHEN chk.seen THEN chk.v0 + chk.c - 1 ELSE chk.cur + chk.c END,\n"
     "    CASE chk.st WHEN 1 THEN chk.s\n"
     "      WHEN 2 THEN format('event id %s is already in stream ''%s''', p_ids[chk.off + 1],\n"
     "        (SELECT o.stream_name FROM streams o WHERE o.stream_id = chk.osid))\n"
     "      WHEN 3 THEN format('event id %s is already in stream ''%s'' with different content',\n"
     "        p_ids[chk.off + 1], chk.s)\n"
     "      ELSE CASE WHEN chk.seen THEN 'repeat' END END,\n"
     "    CASE WHEN NOT chk.seen THEN g.lo WHEN chk.st = 0 THEN (SELECT e.global_position\n"
     "      FROM events e WHERE e.stream_id = chk.sid AND e.version = chk.v0) END,\n"
     "    CASE WHEN NOT chk.seen THEN g.hi WHEN chk.st = 0 THEN (SELECT e.global_position\n"
     "      FROM events e WHERE e.stream_id = chk.sid AND e.version = chk.v0 + chk.c - 1) END\n"
     "  FROM chk LEFT JOIN up ON up.stream_name = chk.s AND NOT chk.seen\n"
     "  LEFT JOIN g ON g.stream_id = up.stream_id\n"
     "  ORDER BY chk.part;\n"
     "END $f$;"
     /* resolve by event ids: sent in the same pipeline as append3, right behind its
      * commit, before the client knows the global positions. First row (-1, head). */
     "CREATE FUNCTION resolve_ids(p_ids uuid[]) RETURNS TABLE(gp bigint, pos bigint)"
     " LANGUAGE plpgsql AS $f$\n" SEQUENCE_OR_HEAD "  RETURN QUERY SELECT -1::bigint, h;\n"
     "  RETURN QUERY SELECT e.global_position, q.position FROM events e\n"
     "    JOIN positions q ON q.global_position = e.global_position\n"
     "   WHERE e.event_id = ANY(p_ids);\n"
     "END $f$;"},
    /* 4: numbering driven by commits, not by polling. resolve4 is what every append
     * runs right behind its commit: it WAITS for the sequencer lock (resolve_ids's
     * sequence() gave up when another session held it, leaving the append to the
     * polling sequencer thread), numbers everything numberable in one statement and
     * returns every (global_position, position) pair it numbered, not only the
     * caller's: of a set of overlapping append transactions the last to commit
     * numbers them all, and its process hands the positions to its own waiting
     * appends at once. The numbering rule is sequence()'s, unchanged (dense
     * positions in (tx_id, global_position) order below the snapshot's xmin, taken
     * after the lock); the sequencer thread only covers transactions that are not
     * appends (another application's, an appender that died).
     * The functions on the append path also get enable_seqscan = off: their plans
     * are cached per session (append3's generic on purpose), and a plan made while
     * the tables were small (a new store, before the first ANALYZE) scanned every
     * event per append for as long as the session lived: every look-up they make
     * is a handful of keys in a large table, an index probe at any size. And
     * jit = off: the tiny `head` table has no other path than the disabled scan,
     * whose cost would otherwise JIT-compile every call (hundreds of ms). The
     * numbering functions plan generically too: planning resolve4's statement
     * for every call cost 5x running it (0.54 ms against 0.1 ms per call). */
    {4, true,
     "ALTER FUNCTION append3(int[], text[], bigint[], int[], uuid[], text[], json[], json[])"
     "  SET enable_seqscan = off SET jit = off;"
     "ALTER FUNCTION sequence() SET enable_seqscan = off SET jit = off"
     "  SET plan_cache_mode = force_generic_plan;"
     "ALTER FUNCTION resolve(bigint[]) SET enable_seqscan = off SET jit = off"
     "  SET plan_cache_mode = force_generic_plan;"
     "CREATE FUNCTION resolve4(p_ids uuid[]) RETURNS TABLE(gp bigint, pos bigint)" RESOLVE_SETTINGS
         RESOLVE_NUMBERING ";\n" RESOLVE_NOTIFY},
    /* 5: resolve5 is resolve4 plus the look-up of the global positions the process's
     * other appends are still waiting for (p_gps): every batch's resolve, right
     * behind its commit, also settles the waits another process's numbering (or an
     * earlier one) has settled meanwhile, so the sequencer thread no longer polls
     * while the process's batches keep resolving (it stays the fallback when they
     * stop). resolve4 stays for an older binary. */
    {5, true,
     "CREATE FUNCTION resolve5(p_ids uuid[], p_gps bigint[]) RETURNS TABLE(gp bigint, pos "
     "bigint)" RESOLVE_SETTINGS RESOLVE_NUMBERING "\n"
     "  UNION ALL SELECT q.global_position, q.position FROM positions q\n"
     "   WHERE q.global_position = ANY(p_gps);\n" RESOLVE_NOTIFY},
};

#define KNOWN AG_STORE_PG_SCHEMA_VERSION

static int exec_ok(PGconn *c, const char *sql, struct ag_err *err)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = ag_err_set(err, PQstatus(c) == CONNECTION_OK ? AG_EFAILED : AG_EUNAVAILABLE,
                        "postgresql: %s", PQerrorMessage(c));
    PQclear(r);
    return rc;
}

/* The highest applied version (0: none), or a negative code. */
static int current_version(PGconn *c, int *v, struct ag_err *err)
{
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = ag_err_set(err, AG_EFAILED, "postgresql: reading schema_version: %s",
                            PQerrorMessage(c));
        PQclear(r);
        return rc;
    }
    *v = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

int ag__pg_migrate(PGconn *c, const char *schema, bool apply, int *from, int *to,
                   struct ag_err *err)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT pg_advisory_lock(hashtextextended('%s$migrate', 0));"
             "CREATE SCHEMA IF NOT EXISTS %s;"
             "CREATE TABLE IF NOT EXISTS schema_version (version int PRIMARY KEY,"
             " applied_at timestamptz NOT NULL DEFAULT now())",
             schema, schema);
    int rc = exec_ok(c, sql, err), v = 0;
    if (!rc) rc = current_version(c, &v, err);
    if (from) *from = v;
    if (!rc && v > KNOWN)
        rc = ag_err_set(err, AG_EUNSUPPORTED,
                        "postgresql: the database schema '%s' is at version %d, newer than this "
                        "agora understands (%d): upgrade agora before using this database",
                        schema, v, KNOWN);
    for (size_t i = 0; !rc && i < AG_ARRAY_SIZE(steps); i++) {
        if (steps[i].version <= v) continue;
        if (!apply && !steps[i].safe) {
            rc = ag_err_set(err, AG_EUNSUPPORTED,
                            "postgresql: schema '%s' needs migration %d, which is not safe while "
                            "running: run 'agora store migrate --store URI' first",
                            schema, steps[i].version);
            break;
        }
        rc = exec_ok(c, "BEGIN", err);
        if (!rc) rc = exec_ok(c, steps[i].sql, err);
        if (!rc) {
            snprintf(sql, sizeof sql, "INSERT INTO schema_version (version) VALUES (%d)",
                     steps[i].version);
            rc = exec_ok(c, sql, err);
        }
        rc = rc ? rc : exec_ok(c, "COMMIT", err);
        if (rc) {
            PQclear(PQexec(c, "ROLLBACK"));
            break;
        }
        v = steps[i].version;
    }
    if (to) *to = v;
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(hashtextextended('%s$migrate', 0))",
             schema);
    PQclear(PQexec(c, sql));
    return rc;
}

/* ---- URI ---- */

static bool ident_ok(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

/* A PostgreSQL interval/duration literal: digits then an optional unit. */
static bool duration_ok(const char *s, size_t n)
{
    if (n == 0 || n > 20 || s[0] < '0' || s[0] > '9') return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z'))) return false;
    return true;
}

static int take_param(struct pg_store *s, const char *k, size_t kn, const char *v, size_t vn,
                      struct ag_err *err)
{
#define IS(name) (kn == strlen(name) && memcmp(k, name, kn) == 0)
    if (IS("pool_size") || IS("append_lanes")) {
        char tmp[16];
        uint64_t n;
        snprintf(tmp, sizeof tmp, "%.*s", (int)(vn < 15 ? vn : 15), v);
        if (ag_parse_u64(tmp, &n) || n < 1 || n > PG_POOL_MAX)
            return ag_err_set(err, AG_EINVAL, "store URI: %.*s must be 1..%d", (int)kn, k,
                              PG_POOL_MAX);
        *(IS("pool_size") ? &s->pool_size : &s->append_lanes) = n;
    } else if (IS("schema")) {
        if (!ident_ok(v, vn))
            return ag_err_set(err, AG_EINVAL,
                              "store URI: schema must be a lower-case identifier (a-z, 0-9, _)");
        snprintf(s->schema, sizeof s->schema, "%.*s", (int)vn, v);
    } else if (IS("append_timeout")) {
        char tmp[24];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(vn < 23 ? vn : 23), v);
        char *end;
        unsigned long long n = strtoull(tmp, &end, 10);
        uint64_t unit = strcmp(end, "s") == 0 ? 1000000000ull : 1000000ull;
        if (end == tmp || (*end && strcmp(end, "s") != 0 && strcmp(end, "ms") != 0) || n == 0 ||
            n > 86400000ull)
            return ag_err_set(err, AG_EINVAL,
                              "store URI: append_timeout must be a duration like 30000, 30000ms or "
                              "30s");
        s->append_timeout_ns = n * unit;
    } else if (IS("statement_timeout") || IS("idle_in_transaction_session_timeout")) {
        if (!duration_ok(v, vn))
            return ag_err_set(err, AG_EINVAL, "store URI: %.*s must be a duration like 5000 or 5s",
                              (int)kn, k);
        char *dst = IS("statement_timeout") ? s->stmt_timeout : s->idle_timeout;
        snprintf(dst, 32, "%.*s", (int)vn, v);
    } else {
        return 1; /* libpq's */
    }
    return 0;
#undef IS
}

int ag__pg_parse_uri(struct pg_store *s, const char *uri, struct ag_err *err)
{
    snprintf(s->schema, sizeof s->schema, "agora");
    snprintf(s->stmt_timeout, sizeof s->stmt_timeout, "30s");
    snprintf(s->idle_timeout, sizeof s->idle_timeout, "10s");
    s->pool_size = 4;
    s->append_lanes = 0; /* default: min(pool_size, PG_APPEND_LANES) */
    s->append_timeout_ns = 30000000000ull;
    const char *q = strchr(uri, '?');
    size_t base = q ? (size_t)(q - uri) : strlen(uri);
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_buf_append(&b, uri, base);
    char sep = '?';
    for (const char *p = q ? q + 1 : NULL; !rc && p && *p;) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (eq) {
            int t = take_param(s, p, (size_t)(eq - p), eq + 1, n - (size_t)(eq - p) - 1, err);
            if (t < 0) rc = t;
            if (t == 1) {
                rc = ag_buf_putc(&b, sep);
                rc = rc ? rc : ag_buf_append(&b, p, n);
                sep = '&';
            }
        }
        p = end ? end + 1 : NULL;
    }
    rc = rc ? rc : ag_buf_putc(&b, 0);
    if (rc) {
        ag_buf_free(&b);
        return rc;
    }
    if (!s->append_lanes)
        s->append_lanes = s->pool_size < PG_APPEND_LANES ? s->pool_size : PG_APPEND_LANES;
    if (s->append_lanes > s->pool_size) s->append_lanes = s->pool_size;
    s->conninfo = ag_buf_steal(&b, NULL);
    snprintf(s->channel, sizeof s->channel, "%s_events", s->schema);
    return s->conninfo ? 0 : ag_err_set(err, AG_ENOMEM, "out of memory");
}

static void quiet(void *arg, const char *message)
{
    (void)arg, (void)message;
}

int ag__pg_connect(const struct pg_store *s, PGconn **out, struct ag_err *err)
{
    PGconn *c = PQconnectdb(s->conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", c ? PQerrorMessage(c) : "out of memory");
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
        PQfinish(c);
        return ag_err_set(err, AG_EUNAVAILABLE, "postgresql unreachable: %s", msg);
    }
    PQsetNoticeProcessor(c, quiet, NULL); /* server notices are not ours to print */
    char sql[320];
    snprintf(sql, sizeof sql,
             "SET search_path = %s; SET statement_timeout = '%s';"
             " SET idle_in_transaction_session_timeout = '%s'; SET client_min_messages = warning",
             s->schema, s->stmt_timeout, s->idle_timeout);
    int rc = exec_ok(c, sql, err);
    if (rc) {
        PQfinish(c);
        return rc;
    }
    *out = c;
    return 0;
}
