"""Child process for the multi-process tests (run as a script).

    kv_worker.py lock URL NAME COUNTER N   increment COUNTER N times under lock NAME
    kv_worker.py temp URL KEY              hold a temp key until killed
    kv_worker.py watch URL PREFIX REV N    print N events from REV as lines
    kv_worker.py member URL                just be a raft member

Prints READY once its handle works and DONE when its job is over, then (for
raft members, which the cluster needs to keep its quorum) waits for stdin to
close before closing the handle.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import kvstore


def main() -> None:
    mode, url = sys.argv[1], sys.argv[2]
    kv = kvstore.open(url)
    if hasattr(kv.backend, "wait_ready"):
        kv.backend.wait_ready(60)
    print("READY", flush=True)
    if mode == "lock":
        name, counter, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
        for _ in range(n):
            with kv.lock(name, timeout=120) as lk:
                v = int(kv.get(counter) or b"0")
                kv.put(counter, str(v + 1))
                print(f"TOKEN {lk.fencing_token}", flush=True)
    elif mode == "temp":
        kv.temp_key(sys.argv[3], b"owner-%d" % os.getpid())
        print("HELD", flush=True)
    elif mode == "watch":
        prefix, rev, n = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        with kv.watch_prefix(prefix, start_revision=rev) as w:
            for _ in range(n):
                e = w.get(timeout=120)
                if e is None:
                    break
                print(f"EVENT {e.type.name} {e.revision} {e.key.decode()} "
                      f"{(e.value or b'').decode()}", flush=True)
    print("DONE", flush=True)
    sys.stdin.read()  # parent closes stdin when the cluster may shut down
    # leave without close(): members quitting one by one would lose quorum and
    # make the last closes wait; the session lease simply expires
    os._exit(0)


if __name__ == "__main__":
    main()
