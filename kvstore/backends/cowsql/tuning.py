"""The cowsql:// backend's tunables, in one place (tests patch them here)."""

from __future__ import annotations

DEFAULT_TIMEOUT = 30.0
MAX_BATCH = 256                 # ops per group commit
MAX_BATCH_BYTES = 8 << 20       # payload bytes per group commit
GATHER_WAIT = 0.001             # longest wait for a batch to fill up to the recent batch size
GATHER_MEMORY = 4               # ... the largest of this many recent batches
MAX_PARAMS = 250                # the engine takes at most 255 per statement
MAX_STMT_BYTES = 1 << 20        # payload per multi-row INSERT
ROWS_PER_INSERT = 256       # rows per multi-row INSERT
POLL_INTERVAL = 0.025           # watch poll period when idle (other processes' writes)
POLL_BUSY = 0.005               # ... and while events keep arriving
POLL_BUSY_FOR = 1.0             # seconds after the last event
EVENT_WINDOW = 512              # revisions per watch poll query
REAP_INTERVAL = 0.5             # lease reaper period
REAP_LIMIT = 64                 # leases expired per reaper op
LEASE_GAP_MS = 5000             # no reaper pass for this long: extend every lease
REAPED_AT_EVERY_MS = 1000       # how often a reaper pass records itself
COMPACT_WINDOW = 1000           # revisions per physical compaction op
AUTO_COMPACT_INTERVAL = 10.0    # seconds between auto-compaction checks (auto_compact=N)
KNOWN_KEYS = 10_000             # key states kept for one-round-trip puts (see _put_known)
KNOWN_BYTES = 8 << 20           # ... and their values' bytes
