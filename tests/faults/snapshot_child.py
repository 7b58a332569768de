"""Child process of test_register_kill_during_snapshot_heavy_load: the engines run in
this process, so an engine crash fails that one test (with the signal and the
faulthandler dump) instead of killing the whole test run.

    python -m tests.faults.snapshot_child SEED SAVE_DIR   # exit 0: clean, 1: anomaly
"""

from __future__ import annotations

import faulthandler
import logging
import sys

from cowsqlpy.testing import Cluster, Nemesis
from cowsqlpy.testing.scenarios import sql_register
from cowsqlpy.testing.workloads import sql_register_apply


def main(seed: int, save_dir: str) -> int:
    faulthandler.enable()
    # nemesis steps on stderr as they happen: the last one before a crash is evidence
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(created).3f %(name)s %(message)s"))
    nemesis_log = logging.getLogger("cowsqlpy.testing.nemesis")
    nemesis_log.addHandler(handler)
    nemesis_log.setLevel(logging.INFO)
    with Cluster(3, snapshot_params=(64, 128)) as cluster:
        nemesis = Nemesis(cluster, seed, faults=["kill", "restart", "stop"])
        report = sql_register(cluster, seed, duration=8.0, interval=1.0, nemesis=nemesis, save_dir=save_dir)
        print(report.summary())
        print(nemesis.format_log())
        if not report.ok or report.stats["ok"] < 200:  # enough entries for several snapshots
            return 1
        before = {o.input["key"]: o.output for o in report.history if o.client == "final"}
        cluster.restart_all(graceful=False)
        conn = cluster.connect(f"reg{seed}", autocommit=True)
        after = {k: sql_register_apply(conn, {"f": "read", "key": k}) for k in before}
        print(f"final reads before the whole-cluster restart {before}, after {after}")
        return 0 if after == before else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2]))
