"""``cowsql://`` backend: a durable, replicated etcd-style store in the SQL engine.

URL: ``cowsql://HOST:PORT[,HOST:PORT...]/DATABASE[?session_ttl=S&timeout=S&private=1&auto_compact=N&read=R]``
(add ``&cert=PEM&key=PEM[&ca=PEM&server_name=NAME]`` for mutual TLS with a cluster whose
nodes run with ``tls=``: go-cowsql's scheme, see :mod:`cowsqlpy.tls`)

The state is a kine-style revision log in SQL tables (see
:mod:`kvstore.backends.cowsql.schema`) with etcd's full semantics: create/mod
revision, version and lease per key, reads at past revisions until compacted,
general txn, leases, compaction, watches from a revision.

How it works (one :class:`CowsqlCore` per event loop, cluster and database,
shared by every handle that names them; asyncio on that loop):

* **Group commit.** Every write (put, delete, txn, lease grant/revoke/keepalive,
  expiry, compaction) is an *op* queued to one committer. The committer takes all
  queued ops as a batch, opens one engine write transaction (``BEGIN
  IMMEDIATE``) and reads the meta row and every key/lease the batch names in the
  same round trip, evaluates the ops *in order in Python* against that state
  plus the batch's own earlier changes (each op is all-or-nothing: every check
  happens before it changes anything), then sends the resulting log rows, lease
  rows, the new meta row and COMMIT as one request (the engine stops it at the
  first failing statement, so a batch never commits in part). Each op that
  changes keys gets the next revision, in queue order, so revisions stay
  strictly increasing and gap-free; an op whose compare fails or that deletes
  nothing takes none (as etcd). Each op is acknowledged on its own, only after
  COMMIT returned. The committer waits up to GATHER_WAIT for a wave of returning
  clients (see ``_gather``); reads the backend repeats run as prepared statements.
* **Failures.** Not-leader, lost connection or BUSY before COMMIT: nothing was
  applied; the batch is re-read and re-evaluated on the (new) leader. Leadership
  or connection lost *during* COMMIT: the driver's commit marker resolves it on
  the new leader (`cowsqlpy.database.Database.commit`): committed, and the saved
  results are delivered; or certainly not committed (TransactionLostError), and
  the batch is evaluated again. If no leader can say within the retry deadline,
  every op of the batch fails with :class:`~kvstore.errors.OutcomeUnknownError`: never a false ack,
  never a blind retry.
* **Reads** are single SQL statements on the leader (one snapshot: the meta row
  and the rows together), so a range is consistent with the revision it
  reports. They are linearizable (``read=linearizable``, the default, as etcd's
  Range): each runs after a read barrier, a Raft entry committed after the read
  began, on the node that committed it; concurrent reads share barriers
  (`cowsqlpy.database.Database.read_barrier`). ``read=serializable`` skips the
  barrier: faster, but a deposed leader that does not know it yet can serve a
  stale read (docs/kvstore.md, docs/consistency.md).
* **Watches** poll the log: one poller per core reads new revisions in windows
  (every ``POLL_INTERVAL`` s when idle, ``POLL_BUSY`` s while events flow, at once after a
  local commit), in ``(rev, sub)``
  order, whole revisions at a time; a watch from an old revision is backfilled
  from the log first. A start revision below the compact revision fails with
  :class:`CompactedError`.
* **Leases** live in ``kv_lease`` with their expiry on the *leader's* clock
  (``julianday('now')`` runs on the leader). Every live core runs a reaper op
  every ``REAP_INTERVAL`` s when a plain read shows it work (a lease due, or the
  pass record ``reaped_at`` a second old); the expiry decision happens inside the serialised
  write transaction, so reapers in several processes cannot double-expire. When
  the leader changed since the last reaper pass, or no reaper ran for
  ``LEASE_GAP_MS`` (cluster down, clock jump), every lease is first extended to
  at least its full TTL (etcd's promotion rule), so a new leader's clock or an
  outage never expires a lease early.
* **Compaction** sets ``compact_revision`` at once (reads/watches below it then
  fail) and removes superseded rows afterwards in windows of
  ``COMPACT_WINDOW`` revisions, each its own small op between other writers'
  batches.

Modules, one job each: `schema` (tables, views, migrations), `batch` (one batch's state
read, op evaluation and SQL), `core` (`CowsqlCore`: committer and key cache, reads,
watch poller, lease reaper and compactor; the backend), `url` (the URL and the
sharing of cores), `errors` (engine errors as kvstore errors), `tuning` (the tunables).
"""

from __future__ import annotations

from .batch import OpKind
from .core import CowsqlCore
from .url import open_backend

__all__ = ["CowsqlCore", "OpKind", "open_backend"]
