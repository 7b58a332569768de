"""Jepsen's bank workload and checker over the DB-API.

Accounts hold balances; clients transfer amounts between two accounts in one
transaction (refused, changing nothing, when the source would go negative)
and read every balance in one statement. Under snapshot isolation or better:

* every read sees every account, and no other row;
* the balances of every read sum to the initial total (transfers conserve it);
* no balance is negative;
* the last read after healing matches a read on every node (convergence,
  checked by the caller).

    history = History()
    bank_setup(conn, accounts=5, balance=100)
    bank_transfer(conn, history, "c1", rng)        # from many threads, one connection each
    bank_read(conn, history, "c1")
    result = check_bank(history.operations(), accounts=range(5), total=500)
    assert result.ok, result.describe()
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import OK, History, Operation
from .workloads import sql_error_is_definite

__all__ = ["BankResult", "bank_read", "bank_setup", "bank_transfer", "check_bank"]


@dataclass
class BankResult:
    reads: int
    transfers: int
    anomalies: list[tuple[str, int, str]] = field(default_factory=list)  # (kind, op id, detail)

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def describe(self) -> str:
        head = f"bank: {self.reads} reads, {self.transfers} transfers"
        if self.ok:
            return head + ": no anomaly"
        lines = [head + f": {len(self.anomalies)} anomalies"]
        lines += [f"  {kind} in op #{op}: {detail}" for kind, op, detail in self.anomalies[:20]]
        return "\n".join(lines)


def check_bank(
    ops: Sequence[Operation], accounts: Iterable[int], total: int, *, negative_ok: bool = False
) -> BankResult:
    expected = set(accounts)
    reads = [op for op in ops if op.input["f"] == "read" and op.status == OK]
    transfers = [op for op in ops if op.input["f"] == "transfer"]
    result = BankResult(len(reads), len(transfers))
    for op in reads:
        balances = {int(k): v for k, v in dict(op.output).items()}
        if set(balances) != expected:
            missing, extra = sorted(expected - set(balances)), sorted(set(balances) - expected)
            result.anomalies.append(
                ("wrong-accounts", op.id, f"missing {missing}, unexpected {extra}")
            )
        if sum(balances.values()) != total:
            result.anomalies.append(
                ("wrong-total", op.id, f"sum {sum(balances.values())} != {total}: {balances}")
            )
        negative = {k: v for k, v in balances.items() if v < 0}
        if negative and not negative_ok:
            result.anomalies.append(("negative", op.id, f"negative balances {negative}"))
    return result


def bank_setup(conn: Any, accounts: int, balance: int) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS bank (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO bank (id, balance) VALUES (?, ?)", [(i, balance) for i in range(accounts)]
    )


def bank_transfer(
    conn: Any, history: History, client: str, rng: random.Random, accounts: int, max_amount: int = 5
) -> None:
    """One recorded transfer on a non-autocommit connection."""
    a, b = rng.sample(range(accounts), 2)
    amount = rng.randint(1, max_amount)
    op = history.invoke(client, {"f": "transfer", "from": a, "to": b, "amount": amount})
    try:
        row = conn.execute("SELECT balance FROM bank WHERE id = ?", (a,)).fetchone()
        if row is None or row[0] < amount:
            conn.rollback()
            history.fail(op, "insufficient funds")
            return
        conn.execute("UPDATE bank SET balance = balance - ? WHERE id = ?", (amount, a))
        conn.execute("UPDATE bank SET balance = balance + ? WHERE id = ?", (amount, b))
        conn.commit()
    except Exception as exc:  # every failure is recorded, then classified
        _rollback(conn)
        history.fail(op, repr(exc)) if sql_error_is_definite(exc) else history.unknown(
            op, repr(exc)
        )
        return
    history.ok(op)


def bank_read(conn: Any, history: History, client: str) -> None:
    op = history.invoke(client, {"f": "read"})
    try:
        rows = conn.execute("SELECT id, balance FROM bank").fetchall()
        conn.commit()
    except Exception as exc:
        _rollback(conn)
        history.fail(op, repr(exc))
        return
    history.ok(op, {str(k): v for k, v in rows})


def _rollback(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:  # the connection may be gone; the next statement tells
        pass
