"""SQLAlchemy's dialect compliance suite (sqlalchemy.testing.suite) against a real
3-node cluster, and the same suite on stock SQLite for comparison.

Each runs in a child pytest (SQLAlchemy's plugin takes over a whole session) with
tests/sql/suite/: the plugin, the requirements (what the engine cannot do, each
with its reason) and the suite module. Stock SQLite with the SQLite part of the
requirements must pass whole: that proves those declarations are SQLite's, not
excuses; cowsql must pass whole with its own few more. Counts: docs/sqlalchemy.md.

The stock-SQLite run checks our requirement declarations, not cowsqlpy, so CI leaves it
out to stay in its 20-minute budget; COWSQLPY_SQLA_BASELINE=1 runs it (as before each
change to tests/sql/suite/requirements.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cowsqlpy.testing import Cluster

pytestmark = [pytest.mark.sqla_suite, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SUITE = Path(__file__).resolve().parent / "suite"


def run_suite(tmp_path: Path, url: str, requirements: str) -> dict[str, int]:
    """Run the suite against `url`; the outcome counts of pytest's summary line."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "setup.cfg").write_text(
        f"[sqla_testing]\nrequirement_cls = tests.sql.suite.requirements:{requirements}\n"
        f"profile_file = {tmp_path}/profiles.txt\n[db]\ndefault = {url}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(tmp_path / "pytest.ini"),
        "--rootdir",
        str(tmp_path),
        "--noconftest",
        "-p",
        "no:cacheprovider",
        "-p",
        "tests.sql.suite.plugin",
        "--dburi",
        url,
        "-q",
        "-rfE",
        "--tb=short",
        "-W",
        "ignore::pytest.PytestUnknownMarkWarning",
        str(SUITE / "suite_cowsql.py"),
    ]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=840)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {
        kind: int(n)
        for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", summary)
    }
    counts["errors"] = counts.pop("error", 0) + counts.pop("errors", 0)
    print(f"{url}: {summary}")
    assert counts.get("passed", 0) > 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert counts.get("failed", 0) == 0 and counts["errors"] == 0, proc.stdout[-20000:]
    return counts


def test_compliance_suite_on_a_cowsql_cluster(cluster: Cluster, tmp_path: Path) -> None:
    run_suite(tmp_path, f"cowsql://[{','.join(cluster.addresses)}]/sqla_suite", "Requirements")


@pytest.mark.skipif(
    os.environ.get("COWSQLPY_SQLA_BASELINE") != "1",
    reason="the stock-SQLite baseline runs with COWSQLPY_SQLA_BASELINE=1 (left out of CI's budget)",
)
def test_compliance_suite_on_stock_sqlite(tmp_path: Path) -> None:
    run_suite(tmp_path, f"sqlite:///{tmp_path}/stock.db", "SQLiteRequirements")
