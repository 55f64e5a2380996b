"""The benchmark suite's code paths at tiny sizes: rows of the right shape, and a race that loses nothing.

Timings are printed by `python -m benchmarks`, never asserted here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from benchmarks.__main__ import main, measure
from benchmarks.common import Row, Sizes

TINY = Sizes(
    quick=True, repeats=1, roundtrips=2, race_runs=1, race_workers=8, dishes=(400,), token_cells=(10,)
)


@pytest.fixture(autouse=True)
def _dish_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PETRI_BENCH_CACHE", str(tmp_path / "cache"))


def well_formed(row: Row) -> bool:
    spread_ok = row.low is None or (row.high is not None and row.low <= row.value <= row.high)
    sign_ok = row.signed or row.value >= 0  # only a difference of medians may dip below zero
    return math.isfinite(row.value) and sign_ok and spread_ok and row.n >= 1 and bool(row.what)


def test_eight_racing_worker_processes_lose_nothing_and_never_share_a_lease() -> None:
    rows = measure(["P2"], sizes=TINY)
    assert all(r.id == "P2" and well_formed(r) for r in rows)
    rate = rows[0]
    assert rate.unit == "/s" and rate.value > 0 and rate.target == "≥ 300/s"
    (race,) = rate.details["races"]
    assert race["tasks"] == race["expected_tasks"] == 27 and race["verify_ok"]
    counters = {r.what.split(",")[0]: r.value for r in rows if r.target == "0"}
    assert counters == {
        "lost tasks or events": 0,
        "double leases": 0,
        "lock errors surfaced": 0,
        "other errors": 0,
    }


def test_every_other_benchmark_yields_well_formed_rows_with_its_targets() -> None:
    rows = measure(["P1", "P3", "P4", "P5", "P6"], sizes=TINY)
    assert {r.id for r in rows} == {"P1", "P3", "P4", "P5", "P6"}
    assert all(well_formed(r) for r in rows), [r for r in rows if not well_formed(r)]
    assert [r.what for r in rows if r.signed] == [
        "submit round trip − no-op round trip − service inside, medians (the SDK's extra for submit)"
    ]
    targeted = {r.id: r for r in rows if r.met is not None}
    assert set(targeted) == {"P1", "P3", "P4", "P5", "P6"}
    ratio = next(r for r in rows if r.what.startswith("submit ÷ no-op tool"))
    assert ratio.unit == "×" and ratio.target == "≤ 1.5×"
    noop = next(r for r in rows if "`petri_noop`" in r.what)  # the floor is a tool that was called
    assert noop.n == TINY.roundtrips and noop.value > 0
    whole = next(r for r in rows if r.what.startswith("in-process `Service.submit`"))
    sql = next(r for r in rows if "inside SQLite" in r.what)  # the clock saw the service's statements
    statements = re.search(r"\((\d+) statements", sql.what)
    assert statements and int(statements.group(1)) >= 10, sql.what
    assert 0 < sql.value < whole.value and sql.n == whole.n
    commit = next(r for r in rows if "the COMMIT" in r.what)  # a share of the SQL, and its pages
    pages = re.search(r"writes (\d+) pages", commit.what)
    assert pages and int(pages.group(1)) >= 7, commit.what  # seven events land in several tables
    assert 0 < commit.value < sql.value
    rested = next(r for r in rows if "ms asleep" in r.what)
    assert rested.n == whole.n and rested.value > 0
    spun = next(r for r in rows if "ms spinning" in r.what)
    assert spun.n == whole.n and spun.value > 0
    plain = [r for r in rows if "plain Python" in r.what or r.what.startswith("… the same, each after")]
    assert [r.n for r in plain[:2]] == [TINY.roundtrips] * 2 and plain[2].unit == "×", plain
    assert all(r.unit == "tokens" and r.value > 0 for r in rows if r.id == "P4")
    packet = next(r for r in rows if r.what.startswith("packet, 10 cells, iteration 3"))
    indented = next(r for r in rows if r.what.startswith("… that packet indented"))
    assert indented.met is None and indented.value > packet.value  # the reply the model reads is compact
    modern = next(r for r in rows if "2026-07-28 start answered" in r.what)
    assert modern.n == TINY.repeats and modern.value > 0
    shown = [r for r in rows if r.id == "P3"]
    assert len(shown) == 2 and all(r.details["events"] >= 400 for r in shown)


def test_the_command_line_rejects_an_unknown_benchmark_id() -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        main(["--only", "P9"])
