"""Acceptance: a worker killed with SIGKILL mid-burst leaves a dish that verifies and continues.

A subprocess claims and submits as fast as it can and is killed (from outside after some
submissions, or by itself inside an open write transaction). Then the file must pass
`petri verify` and `PRAGMA integrity_check`, hold exactly what was committed, and a fresh driver
in the test process must finish the run: tasks the dead worker still held come back once their
short lease expires, and no task is ever completed twice.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _proc_worker import CHILDREN, SCRIPT, policy, root_claim, worker_env
from click.testing import CliRunner
from helpers import Clock, Driver, add_article

from petri_core.cli import main
from petri_core.models import StartOut
from petri_core.service import Service

LEASE_S = 30
#: One trial each: (submissions seen, then a pause so the kill lands inside the next transitions).
#: Early (just decomposed), among the leaves, and late (the root's own pipeline).
KILLS = ((1, 0.0), (4, 0.003), (9, 0.006), (16, 0.01), (23, 0.015))


@dataclass
class Killed:
    """What the dead worker reported before it died."""

    submitted: list[str]
    dying_seq: int | None = None


def new_run(dish: Path, k: int) -> tuple[str, StartOut]:
    svc = Service(dish)
    source = add_article(svc)
    run = svc.start(root_claim(k), preset="quick", max_depth=1, child_cap=CHILDREN, lease_seconds=LEASE_S)
    return source.source_id, run


def burst(dish: Path, source_id: str, run_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "burst", str(dish), source_id, run_id, *extra],
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], submissions: int | None) -> Killed:
    """Follow the worker's report: until `submissions` commits, or (None) until it dies."""
    assert proc.stdout is not None
    killed = Killed([])
    while submissions is None or len(killed.submitted) < submissions:
        line = proc.stdout.readline()
        if not line:
            assert submissions is None, f"worker ended early: {proc.communicate()[1]}"
            return killed
        kind, _, arg = line.strip().partition(" ")
        assert kind != "done", "the run completed before the kill"
        if kind == "submitted":
            killed.submitted.append(arg)
        elif kind == "dying":
            killed.dying_seq = int(arg)
    return killed


def kill_after(dish: Path, source_id: str, run_id: str, submissions: int, pause: float) -> Killed:
    """SIGKILL a burst worker `pause` s after its `submissions`-th commit."""
    proc = burst(dish, source_id, run_id)
    try:
        killed = read_until(proc, submissions)
        time.sleep(pause)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return killed


def check_and_continue(dish: Path, source_id: str, run: StartOut, killed: Killed) -> int:
    """Everything the acceptance asks after a kill; returns how many leases the dead worker held."""
    with closing(sqlite3.connect(dish / "petri.db")) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        at_kill = raw.execute("SELECT seq, hash FROM events ORDER BY seq").fetchall()
        held = [r[0] for r in raw.execute("SELECT task_id FROM tasks WHERE status='leased'")]
        status = dict(raw.execute("SELECT task_id, status FROM tasks").fetchall())
    # The file holds exactly what was committed: every reported submission, no uncommitted row.
    assert [seq for seq, _ in at_kill] == list(range(1, len(at_kill) + 1))
    assert all(status[t] == "done" for t in killed.submitted)
    assert not set(held) & set(killed.submitted)
    if killed.dying_seq is not None:
        assert len(at_kill) < killed.dying_seq
    cli = CliRunner(catch_exceptions=False).invoke(main, ["verify"], env={"PETRI_HOME": str(dish)})
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.startswith(f"ok: {len(at_kill)} events")
    assert Service(dish).verify().ok

    # A fresh driver, past the dead worker's lease, continues the run to its end.
    later = Service(dish, Clock(datetime.now(UTC) + timedelta(seconds=LEASE_S + 1)))
    driver = Driver(later, policy(source_id))
    driver.drain(run.run_id)

    with later.open() as st:
        assert st.run(run.run_id).state == "complete"
        assert st.cell(run.root_cell_id).state == "validated"
        assert {t.status for c in st.cells(run.run_id) for t in st.tasks_of_cell(c.cell_id)} == {"done"}
    events = later.log()
    completed = Counter(e["task_id"] for e in events if e["type"] == "task_completed")
    created = Counter(e["task_id"] for e in events if e["type"] == "task_created")
    assert completed == created and set(completed.values()) == {1}
    before = {e["task_id"] for e in events[: len(at_kill)] if e["type"] == "task_completed"}
    assert sorted(driver.submitted) == sorted(set(created) - before)
    expired = {
        e["task_id"]
        for e in events
        if e["type"] == "task_released" and e["payload"]["cause"] == "lease expired"
    }
    assert expired == set(held)
    # The log before the kill is a prefix of the log after it: nothing was rewritten.
    assert [(e["seq"], e["hash"]) for e in events[: len(at_kill)]] == [tuple(r) for r in at_kill]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert later.verify().ok
    return len(held)


def test_a_worker_killed_mid_burst_leaves_a_dish_that_verifies_and_continues(tmp_path: Path) -> None:
    held = 0
    for trial, (submissions, pause) in enumerate(KILLS, 1):
        dish = tmp_path / f"trial{trial}" / ".petri"
        source_id, run = new_run(dish, trial)
        killed = kill_after(dish, source_id, run.run_id, submissions, pause)
        held += check_and_continue(dish, source_id, run, killed)
    assert held > 0, "no trial killed the worker while it held a lease"


@pytest.mark.parametrize("die_at", [3, 41, 80])
def test_a_worker_killed_inside_a_write_transaction_leaves_none_of_it(tmp_path: Path, die_at: int) -> None:
    dish = tmp_path / ".petri"
    source_id, run = new_run(dish, 1)
    proc = burst(dish, source_id, run.run_id, str(die_at))
    killed = read_until(proc, None)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert killed.dying_seq is not None
    check_and_continue(dish, source_id, run, killed)
