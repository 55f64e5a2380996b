"""What every benchmark shares: result rows, timing statistics, and how to run `petri` as a user does."""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    """One measured figure: a median with its spread (timings) or a single value (counts, tokens)."""

    id: str
    what: str
    value: float
    unit: str
    low: float | None = None
    high: float | None = None
    n: int = 1
    target: str = ""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    signed: bool = False  # a difference of medians: on a noisy run it can come out below zero


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark runs: the full suite, or `--quick` for a smoke run."""

    quick: bool
    repeats: int
    roundtrips: int
    race_runs: int
    race_workers: int
    dishes: tuple[int, ...]
    token_cells: tuple[int, ...]

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(True, 2, 4, 1, 8, (400, 800), (10,))
        return cls(False, 7, 100, 12, 8, (10_000, 100_000, 1_000_000), (10, 1000))


class TimedConnection:
    """A connection that adds up the seconds its `execute` calls take, by `step(sql, args)`, and
    counts them; anything else is the connection's own (a store can hold it as its `conn`). A
    statement's time is its first step, where the statements timed here do their work (bulk
    inserts, or reads of a few rows)."""

    def __init__(self, conn: sqlite3.Connection, step: Callable[[str, Any], str]):
        self.conn = conn
        self.step = step
        self.seconds: dict[str, float] = defaultdict(float)
        self.statements = 0

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        start = time.perf_counter()
        try:
            return self.conn.execute(sql, args)
        finally:
            self.seconds[self.step(sql, args)] += time.perf_counter() - start
            self.statements += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(
    id_: str,
    what: str,
    samples: Sequence[float],
    *,
    unit: str = "s",
    target: str = "",
    limit: float | None = None,
    details: dict[str, Any] | None = None,
) -> Row:
    """A timing row: median, min and max of the samples; met when the median is within `limit`."""
    median = statistics.median(samples)
    return Row(
        id_,
        what,
        median,
        unit,
        min(samples),
        max(samples),
        len(samples),
        target,
        None if limit is None else median <= limit,
        details or {},
    )


def petri_command() -> list[str]:
    """The `petri` console script of this interpreter's environment (what a user runs)."""
    script = Path(sys.executable).parent / "petri"
    if script.exists():
        return [str(script)]
    found = shutil.which("petri")
    return [found] if found else [sys.executable, "-m", "petri_core"]


def run_petri(args: Sequence[str], dish: Path | None = None) -> tuple[float, str]:
    """Wall time of one `petri ARGS` process, start to exit, and its standard output."""
    env = {**os.environ}
    if dish is not None:
        env["PETRI_HOME"] = str(dish)
    start = time.perf_counter()
    proc = subprocess.run(
        [*petri_command(), *args], env=env, capture_output=True, text=True, check=False, timeout=600
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"petri {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, proc.stdout


def fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        if abs(value) < 0.001:
            return f"{value * 1e6:,.0f} µs"
        return f"{value * 1000:,.1f} ms" if abs(value) < 1 else f"{value:,.2f} s"
    if unit == "×":
        return f"{value:.2f}×"
    if float(value).is_integer():
        return f"{int(value):,} {unit}".rstrip()
    return f"{value:,.0f} {unit}".rstrip() if value >= 100 else f"{value:,.2f} {unit}".rstrip()


def table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table."""
    lines = ["| id | what | median | min | max | n | target | met |", "|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        low = fmt_value(r.low, r.unit) if r.low is not None else ""
        high = fmt_value(r.high, r.unit) if r.high is not None else ""
        met = {True: "yes", False: "**missed**", None: ""}[r.met]
        lines.append(
            f"| {r.id} | {r.what} | {fmt_value(r.value, r.unit)} | {low} | {high} | {r.n} | {r.target} | {met} |"
        )
    return "\n".join(lines)
