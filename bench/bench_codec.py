"""Codec benchmark: the Cython codec against its pure-Python twin.

    .venv/bin/python bench/bench_codec.py [--quick]

Prints a markdown table of operations per second for each implementation and the ratio.
Bodies are built with the pure module's server-side helpers, shaped like what libdqlite
1.11.1 sends: ROWS pages cut near 4 KiB, plus one big single-response result.
"""

from __future__ import annotations

import argparse
import platform
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cowsqlpy import codec
from cowsqlpy import protocol as P
from cowsqlpy.protocol import pure as py

COLUMNS = ["id", "name", "score", "payload", "note"]


def mixed_row(i: int) -> tuple[object, ...]:
    return (i, f"user-{i:06d}", i * 0.5, bytes(range(i % 7, i % 7 + 16)), None if i % 3 else "x")


def page_of_rows(page_size: int = 4096) -> tuple[bytes, int]:
    """A ROWS body filled up to the server's page size, as one PART batch."""
    rows: list[tuple[object, ...]] = []
    while len(py.encode_rows(COLUMNS, [*rows, mixed_row(len(rows))], False)) <= page_size:
        rows.append(mixed_row(len(rows)))
    return py.encode_rows(COLUMNS, rows, False), len(rows)


def big_rows(n: int) -> tuple[bytes, int]:
    return py.encode_rows(COLUMNS, [mixed_row(i) for i in range(n)], True), n


def best_rates(fns: list[Callable[[], object]], min_time: float, repeat: int = 7) -> list[float]:
    """Calls per second of each function, best of `repeat` rounds.

    The functions are timed in turn within each round, so a burst of load from other
    processes on the machine hits them alike and the ratios stay meaningful.
    """
    timers = [timeit.Timer(fn) for fn in fns]
    numbers = []
    for timer in timers:
        number, elapsed = timer.autorange()
        numbers.append(max(1, int(number * min_time / max(elapsed, 1e-9))))
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, (timer, number) in enumerate(zip(timers, numbers, strict=True)):
            best[i] = min(best[i], timer.timeit(number) / number)
    return [1 / t for t in best]


def cases(impl: ModuleType) -> dict[str, tuple[Callable[[], object], int]]:
    """name -> (callable, units per call)."""
    page, page_rows = page_of_rows()
    big, big_n = big_rows(50_000)
    params = [123456, "some text value", 3.25, b"\x00\x01" * 16, None, True]
    sql = "INSERT INTO t (a, b, c, d, e, f) VALUES (?, ?, ?, ?, ?, ?)"
    frame = py.encode_response(P.RESULT, (1, 1))
    stream = frame * 1000
    body = bytes(10 << 20)
    big_frame = py.encode_response(P.FILES, [("db", body)])
    chunks = [big_frame[i : i + 65536] for i in range(0, len(big_frame), 65536)]

    def small_frames() -> None:
        reader = impl.FrameReader()
        reader.feed(stream)
        while reader.next_frame() is not None:
            pass

    def big_frame_in_chunks() -> None:
        reader = impl.FrameReader()
        for chunk in chunks:
            reader.feed(chunk)
            reader.next_frame()

    return {
        f"decode_rows, 4 KiB page ({page_rows} rows), rows/s": (
            lambda: impl.decode_rows(page),
            page_rows,
        ),
        f"decode_rows, {big_n} rows ({len(big) >> 20} MiB), rows/s": (
            lambda: impl.decode_rows(big),
            big_n,
        ),
        "encode_request EXEC_SQL + 6 params, req/s": (
            lambda: impl.encode_request(P.EXEC_SQL, 0, sql, params),
            1,
        ),
        "decode_response RESULT, resp/s": (lambda: impl.decode_response(P.RESULT, frame[8:]), 1),
        "FrameReader, 1000 small frames in one feed, frames/s": (small_frames, 1000),
        "FrameReader, 10 MiB frame in 64 KiB chunks, MiB/s": (big_frame_in_chunks, 10),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    args = parser.parse_args()
    min_time = 0.05 if args.quick else 0.3
    pure, fast = cases(codec.load("python")), cases(codec.load("cython"))
    print(f"Python {platform.python_version()} on {platform.machine()} ({platform.platform()})\n")
    print("| case | pure Python | Cython | ratio |")
    print("|---|---:|---:|---:|")
    for case, (pure_fn, units) in pure.items():
        slow, quick = best_rates([pure_fn, fast[case][0]], min_time)
        print(
            f"| {case} | {slow * units:,.0f} | {quick * units:,.0f} | {quick / slow:.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
