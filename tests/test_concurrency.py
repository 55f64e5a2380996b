"""Acceptance: 4 processes × 2 threads claim and submit on one dish file without losing anything.

No task is held by two workers, no event is lost or duplicated, and no "database is locked"
escapes: the only error a worker may see is a `Rejected` claim for a task another worker took.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

from _proc_worker import CHILDREN, SCRIPT, root_claim, worker_env
from helpers import add_article

from petri_core.service import Service
from petri_core.store import MIGRATION_NAMES, Store, _migrations

PROCESSES = 4
RUNS = 4


def test_four_processes_of_two_threads_share_one_dish_without_double_leases_or_lost_events(
    tmp_path: Path,
) -> None:
    dish = tmp_path / ".petri"
    svc = Service(dish)
    source = add_article(svc)
    run_ids = [
        svc.start(root_claim(k), preset="quick", max_depth=1, child_cap=CHILDREN).run_id
        for k in range(1, RUNS + 1)
    ]
    assert len(set(run_ids)) == RUNS

    start_at = time.time() + 1.5  # every worker imports first, then all start together
    outs = [tmp_path / f"worker{p}.json" for p in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "swarm",
                str(dish),
                source.source_id,
                str(out),
                f"p{p}",
                str(start_at),
                *run_ids,
            ],
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p, out in enumerate(outs)
    ]
    try:
        # Meanwhile, readers see consistent snapshots: every verify during the writes passes.
        verified = 0
        while any(proc.poll() is None for proc in procs):
            report = svc.verify()
            assert report.ok, report.problems
            assert svc.status()["events"] >= report.events
            verified += 1
        assert verified > 0
        for proc in procs:
            _, stderr = proc.communicate(timeout=90)
            assert proc.returncode == 0, stderr
            assert "database is locked" not in stderr
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    records: list[dict[str, Any]] = [json.loads(out.read_text()) for out in outs]

    claims = [c for r in records for c in r["claims"]]
    submits = [s for r in records for s in r["submits"]]
    rejections = [x for r in records for x in r["rejections"]]
    errors = [e for r in records for e in r["errors"]]

    # No worker saw anything but a Rejected claim (in particular no sqlite3.OperationalError).
    assert errors == []
    assert all(
        "is leased by" in x["message"] or "was already submitted" in x["message"] for x in rejections
    ), rejections
    assert any("is leased by" in x["message"] for x in rejections), "the workers never collided"

    # No task was held by two workers: with a 900 s lease each task is claimed successfully once.
    per_task = Counter(c["task_id"] for c in claims)
    assert max(per_task.values()) == 1
    assert len({c["lease"] for c in claims}) == len(claims)
    assert Counter(s["task_id"] for s in submits) == per_task
    assert {(s["task_id"], s["lease"]) for s in submits} == {(c["task_id"], c["lease"]) for c in claims}
    assert len({c["worker"].split("-")[0] for c in claims}) > 1, "only one process did any work"

    # The store agrees with what the workers saw, event for event.
    st = svc.open()
    task_rows = st.conn.execute("SELECT task_id, status FROM tasks").fetchall()
    assert {r["task_id"] for r in task_rows} == set(per_task)
    assert {r["status"] for r in task_rows} == {"done"}
    events = svc.log()
    by_type = Counter(e["type"] for e in events)
    claimed = [(e["task_id"], e["payload"]["lease"]) for e in events if e["type"] == "task_claimed"]
    assert by_type["task_claimed"] == len(claims)
    assert sorted(claimed) == sorted((c["task_id"], c["lease"]) for c in claims)
    completed = Counter(e["task_id"] for e in events if e["type"] == "task_completed")
    created = Counter(e["task_id"] for e in events if e["type"] == "task_created")
    assert completed == created == per_task
    assert len(per_task) == RUNS * (1 + 3 * CHILDREN + 3)  # decomposer; 3 quick roles per cell
    assert all(run.state == "complete" for run in st.runs())
    st.close()

    with closing(sqlite3.connect(dish / "petri.db")) as raw:
        seqs = [r[0] for r in raw.execute("SELECT seq FROM events ORDER BY seq")]
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert seqs == list(range(1, len(events) + 1))
    report = svc.verify()
    assert report.ok, report.problems
    assert report.events == len(events)


def test_processes_opening_an_unmigrated_dish_at_once_migrate_it_exactly_once(tmp_path: Path) -> None:
    dish = tmp_path / ".petri"
    dish.mkdir()
    with closing(sqlite3.connect(dish / "petri.db")) as raw:  # an empty WAL file: nothing migrated yet
        raw.execute("PRAGMA journal_mode = WAL")
    start_at = str(time.time() + 1.0)
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "open", str(dish), start_at],
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2 * PROCESSES)
    ]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        assert stdout == "no runs yet: start one with petri_start(claim)\n"
    with closing(sqlite3.connect(dish / "petri.db")) as raw:
        applied = raw.execute("SELECT name FROM _sqlite_migrations").fetchall()
        assert applied == [
            ("m001_events_and_projections",),
            ("m002_usage_runners_blobs",),
            ("m003_usage_task_index",),
            ("m004_sources_note",),
            ("m005_citations_read_from_the_log",),
            ("m006_citations_by_cell",),
        ]
        # The fast path that skips sqlite_utils must know every migration there is.
        assert tuple(name for (name,) in applied) == MIGRATION_NAMES
        assert [m.name for m in _migrations()._migrations] == list(MIGRATION_NAMES)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert Service(dish).verify().ok


def test_opening_a_new_dish_waits_for_another_connections_write_lock(tmp_path: Path) -> None:
    dish = tmp_path / ".petri"
    dish.mkdir()
    sqlite3.connect(dish / "petri.db").close()  # a new file, still in rollback-journal mode
    held = threading.Event()

    def first_writer() -> None:  # another process's first write, as when two create the dish at once
        with closing(sqlite3.connect(dish / "petri.db", isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(0.3)
            other.execute("COMMIT")

    writer = threading.Thread(target=first_writer)
    writer.start()
    held.wait()
    try:
        with Store(dish) as st:
            assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        writer.join()


def test_a_service_holds_one_idle_connection_so_calls_do_not_checkpoint_the_wal(tmp_path: Path) -> None:
    """Closing the last connection checkpoints and deletes the WAL; the Service's idle connection
    keeps every call's own connection from being the last (benchmarks P1), and holds no lock."""
    dish = tmp_path / ".petri"
    svc = Service(dish)
    svc.start("Heat pumps cut household heating emissions", preset="quick")
    assert (dish / "petri.db-wal").exists()  # still there after the call's own connection closed
    other = Service(dish)
    other.start(
        "Solar panels repay their embodied energy in four years", preset="quick"
    )  # a writer, unblocked
    other.close()
    svc.close()
    with closing(sqlite3.connect(dish / "petri.db")) as last:
        last.execute("SELECT count(*) FROM events").fetchone()
    assert not (dish / "petri.db-wal").exists()  # the last connection closed: checkpointed away
