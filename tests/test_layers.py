"""Packages meet only through public APIs: no import of another package's private
modules (cowsqlpy._*, kvstore.backends.* internals) from the packages built on them
or from the benchmarks. (Tests and bench/probe_* scripts are white-box on purpose.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package (or script folder) -> the prefixes it must not import
RULES = {
    "kvstore": ("cowsqlpy._",),
    "demo": ("cowsqlpy._", "kvstore.backends"),
    "fusefs": ("cowsqlpy._", "kvstore.backends"),
    "bench": ("cowsqlpy._", "kvstore.backends"),
}


def imported_modules(path: Path) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def offences(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return [mod for mod in imported_modules(path)
            if any(mod == p or mod.startswith(p + ("" if p.endswith("_") else "."))
                   for p in prefixes)]


@pytest.mark.parametrize("package", sorted(RULES))
def test_no_back_doors(package: str) -> None:
    found = [f"{path.relative_to(ROOT)}: {mod}"
             for path in sorted((ROOT / package).rglob("*.py"))
             if not (package == "bench" and path.name.startswith("probe_"))
             for mod in offences(path, RULES[package])]
    assert found == []


def test_the_check_sees_an_offence(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import cowsqlpy\nfrom cowsqlpy.runtime import run_sync\n"
                   "from kvstore.backends.cowsql import CowsqlCore\nimport cowsqlpy._loop\n")
    assert offences(bad, RULES["demo"]) == [
        "kvstore.backends.cowsql", "kvstore.backends.cowsql.CowsqlCore", "cowsqlpy._loop"]
