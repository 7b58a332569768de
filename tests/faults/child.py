"""Runs one scenario on an in-process cluster in a child process, so an engine crash
(a SIGSEGV in libraft 0.22.1 after kill/restart cycles under snapshots, see
docs/consistency.md) fails that test alone, with its evidence, instead of the run.

    python -m tests.faults.child '{"scenario": "sql_register", "seed": 11, ...}' OUT.json
"""

from __future__ import annotations

import faulthandler
import json
import logging
import sys
from typing import Any

import kvstore
from cowsqlpy.testing import Cluster, Nemesis, scenarios


def cowsql_opener(cluster: Cluster, database: str) -> Any:
    def open_client(i: int) -> kvstore.KV:
        addresses = cluster.addresses
        k = i % len(addresses)
        rotated = addresses[k:] + addresses[:k]  # clients start their leader search at different nodes
        return kvstore.open(f"cowsql://{','.join(rotated)}/{database}?private=1&timeout=6")

    return open_client


def main(spec: dict[str, Any], out_path: str) -> int:
    faulthandler.enable()
    handler = logging.StreamHandler()  # nemesis steps as they happen: evidence if we crash
    handler.setFormatter(logging.Formatter("%(created).3f %(name)s %(message)s"))
    logging.getLogger("cowsqlpy.testing.nemesis").addHandler(handler)
    logging.getLogger("cowsqlpy.testing.nemesis").setLevel(logging.INFO)
    seed = spec["seed"]
    with Cluster(3, fault_proxies=True) as cluster:
        nemesis = Nemesis(cluster, seed, faults=spec.get("faults"))
        kw = {"duration": spec.get("duration", 6.0), "nemesis": nemesis, "save_dir": spec.get("save_dir")}
        if spec["scenario"] == "kv_workload":
            report = scenarios.kv_workload(cowsql_opener(cluster, f"kv{seed}"), seed, name="kv-cowsql", **kw)
        else:
            report = getattr(scenarios, spec["scenario"])(cluster, seed, **kw)
    print(report.summary(), flush=True)
    with open(out_path, "w") as f:
        json.dump({"ok": report.ok, "failed": report.failed, "checks": report.checks, "stats": report.stats,
                   "summary": report.summary(), "read_anomaly_only": scenarios.read_anomaly_only(report)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1]), sys.argv[2]))
