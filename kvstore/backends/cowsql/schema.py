"""SQL schema and statements of the ``cowsql://`` backend (a kine-style revision log
with etcd's full per-key metadata).

Tables (all created idempotently in one write transaction, so several processes
may open the same database at once):

``kv_meta``   one row: compact revision, next lease id, the lease-clock
              bookkeeping (which leader last ran lease expiry, when), and the
              revision as of the row's last write. The current revision is the
              larger of that and the log's newest row (``CURRENT_REVISION``): a
              batch of plain puts and deletes leaves the row alone, one page
              less per commit (schema 3).
``kv_log``    the revision log: one row per key change. ``(rev, sub)`` orders the
              events (``sub`` = position inside the revision); a delete is a
              tombstone row (``deleted = 1``); ``prev_rev`` is the mod revision of
              the key's previous live version (for ``prev_kv`` in events, reads
              at past revisions and compaction); ``token`` is set on a batch's
              first row only: the batch's random token, which tells whether a
              commit whose reply was lost happened (instead of the driver's
              commit-marker row: one page less per commit). Serves reads at past revisions
              and watches. No index by key: each batch would dirty one more
              random page per key (the most expensive part of a write; see
              ``AT_REVISION_SELECT`` and ``COMPACT_CHUNK`` for how the log is
              read without one).
``kv_live``   the current version of every live key: its metadata and where its
              value is in the log (``mod_rev, mod_sub``); maintained from
              ``kv_log`` by a trigger, so each change is sent to the engine once.
              Values are stored once, in the log (schema 1 copied them here
              too): rows stay small, so a batch of random keys dirties fewer
              ``kv_live`` pages (a batch of 32 puts over 1,000 keys commits in
              3.0 ms instead of 5.2), and a large value is written once.
``kv_current`` view: ``kv_live`` joined with each key's value from the log.
``kv_lease``  leases: granted TTL and expiry on the leader's clock (ms).
(A commit whose reply is lost is resolved by its log token; a batch that
writes no log row, by the driver's commit marker, see ``cowsqlpy.database``.
The first version's ``kv_batch`` table and trigger, made for the same purpose,
are dropped by the migration to schema 2.)

Every table is ``WITHOUT ROWID`` with as few indexes as the reads need: a commit
replicates whole 4 KiB pages, so pages touched per batch is what a write costs.

The engine runs each statement on the leader and replicates the resulting WAL
pages, so ``julianday('now')`` in SQL is evaluated once, on the leader: lease
deadlines are on the leader's clock.
"""

from __future__ import annotations

SCHEMA_VERSION = 3

#: leader wall clock in ms, evaluated inside the engine
NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"

LIVE_TABLE = """CREATE TABLE {name} (
        key BLOB PRIMARY KEY,
        create_rev INTEGER NOT NULL,
        mod_rev INTEGER NOT NULL,
        mod_sub INTEGER NOT NULL,
        version INTEGER NOT NULL,
        lease INTEGER NOT NULL) WITHOUT ROWID"""
LIVE_LEASE_INDEX = "CREATE INDEX IF NOT EXISTS kv_live_lease ON kv_live (lease) WHERE lease != 0"
APPLY_TRIGGER = """CREATE TRIGGER IF NOT EXISTS kv_log_apply AFTER INSERT ON kv_log BEGIN
        DELETE FROM kv_live WHERE key = NEW.key AND NEW.deleted;
        INSERT OR REPLACE INTO kv_live
            SELECT NEW.key, NEW.create_rev, NEW.rev, NEW.sub, NEW.version, NEW.lease
            WHERE NOT NEW.deleted;
    END"""

#: run in one write transaction; then the version is read: MIGRATIONS / refusal
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kv_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        schema_version INTEGER NOT NULL,
        revision INTEGER NOT NULL,
        compact_revision INTEGER NOT NULL,
        next_lease INTEGER NOT NULL,
        lease_epoch TEXT NOT NULL,
        reaped_at INTEGER NOT NULL,
        batch_token BLOB)""",
    f"INSERT OR IGNORE INTO kv_meta VALUES (1, {SCHEMA_VERSION}, 1, 0, 1, '', 0, NULL)",
    """CREATE TABLE IF NOT EXISTS kv_log (
        rev INTEGER NOT NULL,
        sub INTEGER NOT NULL,
        key BLOB NOT NULL,
        value BLOB NOT NULL,
        create_rev INTEGER NOT NULL,
        version INTEGER NOT NULL,
        lease INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        prev_rev INTEGER NOT NULL,
        token INTEGER,
        PRIMARY KEY (rev, sub)) WITHOUT ROWID""",
    "DROP INDEX IF EXISTS kv_log_key",  # made by earlier versions; only slowed writes
    LIVE_TABLE.format(name="IF NOT EXISTS kv_live"),
    LIVE_LEASE_INDEX,
    APPLY_TRIGGER,
    """CREATE TABLE IF NOT EXISTS kv_lease (
        id INTEGER PRIMARY KEY,
        ttl INTEGER NOT NULL,
        expiry INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS kv_lease_expiry ON kv_lease (expiry)",
]

#: from schema version N to N + 1, in the same transaction as SCHEMA
MIGRATIONS: dict[int, list[str]] = {
    # 1 -> 2: kv_live without the value, pointing at the log row that holds it
    # (the live version's row is never compacted; within one revision a key's
    # last row is its version)
    1: [
        LIVE_TABLE.format(name="kv_live_v2"),
        """INSERT INTO kv_live_v2 SELECT l.key, l.create_rev, l.mod_rev,
            (SELECT max(g.sub) FROM kv_log g WHERE g.rev = l.mod_rev AND g.key = l.key),
            l.version, l.lease FROM kv_live l""",
        "DROP TRIGGER kv_log_apply",
        "DROP TABLE kv_live",
        "ALTER TABLE kv_live_v2 RENAME TO kv_live",
        LIVE_LEASE_INDEX,
        APPLY_TRIGGER,
        # the first version's batch tokens, unused since the driver's commit markers
        "DROP TRIGGER IF EXISTS kv_meta_token",
        "DROP TABLE IF EXISTS kv_batch",
        "UPDATE kv_meta SET schema_version = 2",
    ],
    # 2 -> 3: batch tokens in the log; kv_meta.revision no longer follows every batch
    2: [
        "ALTER TABLE kv_log ADD COLUMN token INTEGER",
        "UPDATE kv_meta SET schema_version = 3",
    ],
}

#: after SCHEMA and MIGRATIONS (a view is checked against the tables it names)
VIEWS = [
    """CREATE VIEW IF NOT EXISTS kv_current AS
        SELECT l.key AS key, g.value AS value, l.create_rev AS create_rev,
               l.mod_rev AS mod_rev, l.version AS version, l.lease AS lease
        FROM kv_live l JOIN kv_log g ON g.rev = l.mod_rev AND g.sub = l.mod_sub""",
]

LOG_COLUMNS = "rev, sub, key, value, create_rev, version, lease, deleted, prev_rev, token"

#: the store's revision, in a statement on kv_meta (a max() seek on the log's key)
CURRENT_REVISION = "max(revision, coalesce((SELECT max(rev) FROM kv_log), 0))"

#: one log row (LOG_COLUMNS' values, then a revision), inserted only if the store is
#: still at that revision: a put computed from known key states, in autocommit
PUT_KNOWN = (f"INSERT INTO kv_log ({LOG_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
             f"FROM kv_meta WHERE {CURRENT_REVISION} = ?")

#: whether the batch whose first log row is (rev, sub) with this token committed,
#: and the compact revision (a compaction may have removed that row since)
TOKEN_SELECT = ("SELECT EXISTS (SELECT 1 FROM kv_log WHERE rev = ? AND sub = ? AND token = ?), "
                "compact_revision FROM kv_meta")

#: meta row first (kind 0), then the rows asked for; one statement = one snapshot
META_SELECT = (f"SELECT 0, NULL, {CURRENT_REVISION}, compact_revision, next_lease, {NOW_MS}, "
               "lease_epoch, reaped_at FROM kv_meta")
LIVE_COLUMNS = "key, value, create_rev, mod_rev, version, lease"

#: whether a lease reaper pass has work: a lease past its deadline, or the pass
#: record (``reaped_at``) older than the param (ms) or ahead of the clock
REAP_DUE_SELECT = (f"SELECT (SELECT min(expiry) FROM kv_lease) <= {NOW_MS} "
                   f"OR abs({NOW_MS} - reaped_at) >= ? FROM kv_meta")

#: compaction at C, one window [lo, hi) of *successor* revisions (hi <= C + 1):
#: a version is superseded at or before C exactly when the key's next change n
#: (the row whose ``prev_rev`` points at it) has n.rev <= C, so each window
#: deletes the versions its rows supersede, then its tombstones older than C
#: (in that order: the tombstones are successors too). Windows from the oldest
#: row up to C find every superseded version. (Formatted with integers.)
COMPACT_CHUNK = (
    """DELETE FROM kv_log WHERE (rev, key) IN (SELECT prev_rev, key FROM kv_log
        WHERE rev >= {lo} AND rev < {hi} AND rev <= {c} AND prev_rev > 0)""",
    "DELETE FROM kv_log WHERE rev >= {lo} AND rev < {hi} AND rev < {c} AND deleted",
)

#: the keys in range as they were at revision R: live keys not changed since R,
#: plus, for each key changed after R, the version its first later change
#: replaced (that change's ``prev_rev`` is <= R; later changes point above R, or
#: at 0 after a delete). Costs one scan of the log after R.
#: Params: cond..., R, R, R, ncond... (``{ncond}`` is ``{cond}`` on ``n.key``; ``{live}``
#: is kv_current, or kv_live when no value is read).
AT_REVISION_SELECT = """SELECT 1, key, {val}, create_rev, mod_rev, version, lease, 0
    FROM {live} WHERE {cond} AND mod_rev <= ?
UNION ALL
SELECT 1, p.key, {pval}, p.create_rev, p.rev, p.version, p.lease, 0
    FROM kv_log n JOIN kv_log p ON p.rev = n.prev_rev AND p.key = n.key
    WHERE n.rev > ? AND n.prev_rev > 0 AND n.prev_rev <= ? AND {ncond}"""

#: events with revision in [lo, hi], with the previous version of each key, plus
#: the meta row (sorted first) for the compaction / revision check
EVENTS_SELECT = f"""SELECT -1, 0, NULL, NULL, compact_revision, {CURRENT_REVISION}, 0, 0, NULL,
    0, 0, 0, 0 FROM kv_meta
UNION ALL
SELECT l.rev, l.sub, l.key, l.value, l.create_rev, l.version, l.lease, l.deleted,
       p.value, p.create_rev, p.version, p.lease, p.rev
    FROM kv_log l LEFT JOIN kv_log p ON l.prev_rev > 0 AND p.key = l.key AND p.rev = l.prev_rev
    WHERE l.rev >= ? AND l.rev <= ?{{range}}
ORDER BY 1, 2"""
