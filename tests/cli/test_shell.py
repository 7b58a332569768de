"""The cowsql shell against a live cluster: every dot-command, both formats, scripts, REPL."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cowsqlpy.cli import split_statements
from cowsqlpy.testing import Cluster

PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def run(cluster: Cluster, *args: str, stdin: str | None = None, cwd: Path | None = None, fmt: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cowsqlpy", "shell", "-s", ",".join(cluster.addresses)]
    if fmt:
        cmd += ["--format", fmt]
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run([*cmd, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


@pytest.fixture
def shell_cluster(cluster3: Cluster) -> Cluster:
    conn = cluster3.connect("shell", autocommit=True)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
    conn.execute("INSERT INTO t VALUES (1, 'one', NULL), (2, 'two', x'00ff')")
    return cluster3


def test_sql_tabular_select_with_pragma_values_explain(shell_cluster: Cluster) -> None:
    r = run(shell_cluster, "shell", "-c",
            "SELECT id, name, data FROM t ORDER BY id;\n"
            "WITH x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x WHERE n < 3) SELECT sum(n) FROM x;\n"
            "PRAGMA table_info(t);\n"
            "VALUES (7, 'v');\n"
            "EXPLAIN QUERY PLAN SELECT * FROM t WHERE id = 1;")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["1|one|NULL", "2|two|X'00FF'", "6"]
    assert "0|id|INTEGER|0|NULL|1" in lines and "1|name|TEXT|0|NULL|0" in lines
    assert "7|v" in lines
    assert any("SEARCH t USING INTEGER PRIMARY KEY" in line for line in lines)


def test_sql_json(shell_cluster: Cluster) -> None:
    r = run(shell_cluster, "shell", "-c", "SELECT id, name, data FROM t ORDER BY id", fmt="json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        {"id": 1, "name": "one", "data": None},
        {"id": 2, "name": "two", "data": {"base64": "AP8="}},
    ]


def test_bad_statement_then_good_one_goes_on(shell_cluster: Cluster) -> None:
    r = run(shell_cluster, "shell", stdin="SELEC 1;\nSELECT name FROM t WHERE id = 2;\nINSERT INTO t VALUES (1, 'dup', NULL);\nSELECT count(*) FROM t;\n")
    assert r.stdout.splitlines() == ["two", "2"]
    errors = r.stderr.splitlines()
    assert len(errors) == 2 and all(e.startswith("Error: ") for e in errors)
    assert "syntax error" in errors[0] and "UNIQUE" in errors[1]
    assert r.returncode == 1  # a script with errors says so


def test_writes_and_multi_line_statements_from_stdin(shell_cluster: Cluster) -> None:
    script = "CREATE TABLE u (a);\nINSERT INTO u\n  VALUES (1);\nINSERT INTO u VALUES (2); SELECT\n sum(a) FROM u;\n"
    r = run(shell_cluster, "shell", stdin=script)
    assert (r.returncode, r.stdout, r.stderr) == (0, "3\n", "")


@pytest.mark.parametrize("fmt", ["tabular", "json"])
def test_dot_commands(shell_cluster: Cluster, tmp_path: Path, fmt: str) -> None:
    c = shell_cluster
    nodes = c.cluster_nodes()
    leader = c.addresses[c.wait_leader()]
    other = next(a for a in c.addresses if a != leader)
    script = "\n".join([
        ".cluster", ".leader", f".describe {other}", f".weight {other} 7", f".describe {other}",
        f".dump {leader}", f".dump {leader} shell", ".help",
    ])
    r = run(c, "shell", "-c", script, cwd=tmp_path, fmt=fmt)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    if fmt == "tabular":
        lines = out.splitlines()
        assert lines[:3] == [f"{n.id:x}|{n.address}|voter" for n in nodes]
        assert lines[3] == leader
        assert lines[4:6] == [f"{other}|0|0", f"{other}|0|7"]
        assert lines[6:8] == ["OK", "OK"]
    else:
        decoder = json.JSONDecoder()
        docs, pos = [], 0
        while pos < len(out) and (out[pos:].strip()):
            while out[pos].isspace():
                pos += 1
            doc, pos = decoder.raw_decode(out, pos)
            docs.append(doc)
            if len(docs) == 6:
                break
        assert docs[0] == [{"ID": n.id, "Address": n.address, "Role": 0} for n in nodes]
        assert docs[1]["Address"] == leader
        assert docs[2] == {"FailureDomain": 0, "Weight": 0} and docs[3] == {"FailureDomain": 0, "Weight": 7}
        assert {Path(d["Path"]).name for d in docs[4]} == {"shell", "shell-wal"}
    assert ".remove ADDRESS" in out  # .help
    assert (tmp_path / "shell").read_bytes().startswith(b"SQLite format 3")
    assert (tmp_path / "shell-wal").exists()
    c.client().weight(other, 0)


def test_remove_and_usage_errors(shell_cluster: Cluster) -> None:
    c = shell_cluster
    leader = c.wait_leader()
    victim = next(i for i in range(3) if i != leader)
    address = c.addresses[victim]
    c.kill(victim)
    r = run(c, "shell", "-c", f".remove {address}\n.remove\n.remove 127.0.0.1:1\n.weight {address} x\n.nope\n.cluster")
    errors = r.stderr.splitlines()
    assert [e.split(":", 1)[0] for e in errors] == ["Error"] * 4
    assert "should be: .remove <address>" in errors[0]
    assert "no node has address" in errors[1]
    assert "bad weight" in errors[2]
    assert "unknown command .nope" in errors[3]
    assert address not in r.stdout and len(r.stdout.splitlines()) == 2


def test_repl_with_history(shell_cluster: Cluster, tmp_path: Path) -> None:
    import pty

    history = tmp_path / "history"
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, COWSQL_HISTORY=str(history), TERM="dumb")
    proc = subprocess.Popen([sys.executable, "-m", "cowsqlpy", "shell", "-s", ",".join(shell_cluster.addresses), "shell"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    output = b""

    def read_until(token: bytes, timeout: float = 20.0) -> None:
        nonlocal output
        end = time.monotonic() + timeout
        while token not in output:
            ready, _, _ = select.select([master], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {token!r} in {output!r}")
            output += os.read(master, 4096)

    try:
        read_until(b"cowsql> ")
        os.write(master, b"SELECT name FROM t WHERE id IN (1,\n")
        read_until(b"...> ")  # unfinished: continuation
        os.write(master, b"3)\n")  # a line without ';' runs (as in dqlite's shell)
        read_until(b"one")
        os.write(master, b"SELEC;\n")
        read_until(b"Error: ")
        os.write(master, b".leader\n")
        read_until(b"127.0.0.1:")
        os.write(master, b".quit\n")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert "3)" in history.read_text().splitlines()


def test_split_statements_follows_sqlite_rules() -> None:
    assert split_statements("SELECT ';'; SELECT 2;\nSELECT") == (["SELECT ';';", "SELECT 2;"], "\nSELECT")
    assert split_statements("CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END;") == (
        ["CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END;"], "")
