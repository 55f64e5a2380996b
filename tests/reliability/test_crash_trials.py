"""Crash trials: SIGKILL a random process of an 8-process claim/submit burst, then check the dish.

Eight long-lived worker processes share one dish per trial: six call the service, two host the
MCP server in-process and work through tool calls. In each trial one of them, chosen at random,
is killed with SIGKILL at a random moment (after a random number of its own commits, plus a random
pause, so the kill lands between transactions as well as inside them); the others work on until
nothing is ready. Then: `PRAGMA integrity_check` and `petri verify` pass (hash chain, triggers,
projections equal a replay); every task is done exactly once or is still ready or leased (only by
the dead process); no task was submitted twice; every submission a worker reported is in the log
with the lease it held. A fresh driver, past the dead worker's lease, finishes every run, and
then every task is completed exactly once. test_crash.py covers single-worker kills at chosen
points; this suite adds the concurrent, randomized trials.
"""

from __future__ import annotations

import json
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from _proc_worker import CHILDREN, policy, root_claim, worker_env
from click.testing import CliRunner
from helpers import Clock, Driver, add_article

from petri_core.cli import main
from petri_core.service import Service

from . import sizes

SCRIPT = Path(__file__).with_name("_crash_worker.py")
WORKERS = 8
MCP_WORKERS = 2
RUNS = 1
LEASE_S = 30
TASKS_PER_RUN = 1 + 3 * CHILDREN + 3  # the decomposer; three quick roles per child and for the root


@dataclass
class Worker:
    """One worker process and the lines it printed."""

    name: str
    mode: str
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    started: bool = False

    def read(self, timeout: float = 60.0) -> str | None:
        """The next line (None once the process has exited)."""
        return self.lines.get(timeout=timeout)


def spawn(name: str, mode: str, logs: Path) -> Worker:
    err: IO[str] = (logs / f"{name}.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, name],
        env=worker_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    err.close()
    worker = Worker(name, mode, proc)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            worker.lines.put(line.strip())
        worker.lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return worker


def ready(worker: Worker) -> Worker:
    line = worker.read(timeout=120)
    assert line == "ready", f"{worker.name} did not start: {line!r}"
    worker.started = True
    return worker


def send(worker: Worker, command: dict[str, Any]) -> None:
    assert worker.proc.stdin is not None
    worker.proc.stdin.write(json.dumps(command) + "\n")
    worker.proc.stdin.flush()


@dataclass
class Trial:
    """What one trial did and saw."""

    victim: str
    victim_mode: str
    reported: list[tuple[str, str, str]] = field(default_factory=list)  # (worker, task, lease)
    held_at_kill: int = 0


def collect(worker: Worker, trial: Trial, until: int | None) -> int:
    """Read `worker`'s lines up to its `until`-th commit, or to `idle`/exit (until=None); count them."""
    seen = 0
    while until is None or seen < until:
        line = worker.read()
        if line is None or line == "idle":
            return seen
        kind, task, lease = line.split(" ")
        seen += 1
        if kind == "submitted":
            trial.reported.append((worker.name, task, lease))
    return seen


def run_trial(k: int, pool: list[Worker], rng: random.Random, tmp: Path) -> Trial:
    dish = tmp / f"trial{k}" / ".petri"
    svc = Service(dish)
    source = add_article(svc).source_id
    run_ids = [
        svc.start(
            root_claim(j), preset="quick", max_depth=1, child_cap=CHILDREN, lease_seconds=LEASE_S
        ).run_id
        for j in range(1, RUNS + 1)
    ]
    command = {"dish": str(dish), "source_id": source, "run_ids": run_ids, "seed": k}
    for worker in pool:
        if not worker.started:
            ready(worker)  # a replacement spawned during the last trial
        send(worker, command)

    # A random victim (an MCP-server process in every third trial), killed at a random moment.
    kinds = [w for w in pool if (w.mode == "mcp") == (k % 3 == 0)]
    victim = rng.choice(kinds)
    trial = Trial(victim.name, victim.mode)
    # Its lines alternate `claimed`, `submitted`: an odd count means it holds a lease right now.
    collect(victim, trial, rng.choice([1, 3, 5] if k % 2 == 0 else [0, 2, 4]))
    time.sleep(rng.uniform(0, 0.003 if k % 2 == 0 else 0.03))
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(timeout=30)
    collect(victim, trial, None)  # what it printed before it died
    pool[pool.index(victim)] = spawn(f"{victim.name}r", victim.mode, tmp / "logs")  # starts meanwhile
    for worker in pool:
        if worker.name != f"{victim.name}r":
            collect(worker, trial, None)
            assert worker.proc.poll() is None, f"{worker.name} died: see its .err file in {tmp}"

    check(dish, source, run_ids, trial)
    return trial


def check(dish: Path, source_id: str, run_ids: list[str], trial: Trial) -> None:
    """The acceptance after one kill, then a fresh driver finishes the runs."""
    with closing(sqlite3.connect(dish / "petri.db")) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tasks = raw.execute("SELECT task_id, status, lease, worker FROM tasks").fetchall()
    cli = CliRunner(catch_exceptions=False).invoke(main, ["verify"], env={"PETRI_HOME": str(dish)})
    assert cli.exit_code == 0, cli.output
    svc = Service(dish)
    events = svc.log()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    submitted = Counter(e["task_id"] for e in events if e["type"] == "task_submitted")
    completed = Counter(e["task_id"] for e in events if e["type"] == "task_completed")
    claimed = {(e["task_id"], e["payload"]["lease"]) for e in events if e["type"] == "task_claimed"}
    assert set(submitted.values()) <= {1} and completed == submitted, "a task was applied twice"
    by_id = {t: (status, lease, worker) for t, status, lease, worker in tasks}
    assert len(by_id) == RUNS * TASKS_PER_RUN or any(s != "done" for s, _, _ in by_id.values())
    for task_id, (status, _lease, worker) in by_id.items():
        if status == "done":
            assert completed[task_id] == 1
        else:  # still claimable: ready, or leased by the dead process (its lease will expire)
            assert status in ("ready", "leased") and submitted[task_id] == 0, (task_id, status)
            if status == "leased":
                assert worker == trial.victim, f"{task_id} is held by {worker}, who is alive and idle"
                trial.held_at_kill += 1
    for name, task_id, lease in trial.reported:  # what a worker saw committed is in the file
        assert (task_id, lease) in claimed and by_id[task_id][:2] == ("done", lease), (name, task_id)

    later = Service(dish, Clock(datetime.now(UTC) + timedelta(seconds=LEASE_S + 1)))
    driver = Driver(later, policy(source_id))
    for run_id in run_ids:
        driver.drain(run_id)
    events = later.log()
    created = Counter(e["task_id"] for e in events if e["type"] == "task_created")
    completed = Counter(e["task_id"] for e in events if e["type"] == "task_completed")
    assert completed == created and set(completed.values()) == {1}
    assert len(created) == RUNS * TASKS_PER_RUN
    assert all(later.status(r)["runs"][0]["state"] == "complete" for r in run_ids)
    report = later.verify()
    assert report.ok, report.problems


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("trials", sizes(5, 100))
def test_sigkill_of_a_random_process_in_an_eight_process_burst_leaves_a_sound_dish(
    trials: int, tmp_path: Path
) -> None:
    rng = random.Random(7)
    logs = tmp_path / "logs"
    logs.mkdir()
    modes = ["mcp"] * MCP_WORKERS + ["service"] * (WORKERS - MCP_WORKERS)
    pool = [spawn(f"w{i}", mode, logs) for i, mode in enumerate(modes)]
    results: list[Trial] = []
    try:
        for worker in pool:
            ready(worker)
        for k in range(trials):
            results.append(run_trial(k, pool, rng, tmp_path))
    finally:
        for worker in pool:
            if worker.proc.poll() is None:
                worker.proc.kill()
            worker.proc.wait(timeout=30)
    assert len(results) == trials
    assert {t.victim_mode for t in results} == {"mcp", "service"}
    assert any(t.held_at_kill for t in results), "no trial killed a worker while it held a lease"
    summary = Counter(t.victim_mode for t in results)
    print(
        f"\n{trials} trials: killed {dict(summary)}; {sum(t.held_at_kill for t in results)} leases orphaned"
    )
