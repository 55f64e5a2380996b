"""Disk and locks: a read-only dish, a full disk, a held write lock, a long-running reader.

Each failure must reach a person as one `Error: …` line and an agent as a `rejected:` tool error
that names the cause and the fix (never a traceback), change nothing, and leave a dish that
verifies once the cause is gone. Tests run as root, where chmod does not stop writes, so the
read-only dish is a read-only bind mount and the full disk a 2 MB tmpfs (both skip where mounting
is not permitted); the full disk is also simulated everywhere with a tiny `max_page_count`.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from _proc_worker import CHILDREN, SCRIPT, root_claim, worker_env
from click.testing import CliRunner, Result
from helpers import Clock, add_article
from mcp import Client
from webserver import serve

from petri_core import store
from petri_core.cli import main
from petri_core.errors import DishError
from petri_core.mcp_server import build
from petri_core.service import Service

CLAIM = "Heat pumps cut household heating emissions"


def petri(dish: Path, *args: str) -> Result:
    return CliRunner(catch_exceptions=False).invoke(main, list(args), env={"PETRI_HOME": str(dish)})


def one_error_line(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def rejected(svc: Service, tool: str, args: dict[str, Any]) -> str:
    async def call() -> str:
        async with Client(build(svc), mode="legacy") as client:
            result = await client.call_tool(tool, args)
        assert result.is_error
        return str(result.content[0].text)  # type: ignore[union-attr]

    return anyio.run(call)


def counts(dish: Path) -> tuple[int, str]:
    with closing(sqlite3.connect(dish / "petri.db")) as raw:
        row = raw.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return int(row[0]), str(row[1])


@contextmanager
def mounted(*args: str) -> Iterator[None]:
    """`mount ARGS…` for the duration, or skip the test where mounting is not permitted."""
    target = args[-1]
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", target], check=True)


# ---------------------------------------------------------------- read-only


@contextmanager
def read_only_view(tmp_path: Path, home: Path) -> Iterator[Path]:
    """`home` seen through a read-only bind mount (skips where mounting is not permitted)."""
    view = tmp_path / "view"
    view.mkdir()
    with mounted("--bind", str(home), str(view)):
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield view


def test_a_read_only_dish_can_be_read_and_a_write_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dish = home / ".petri"
    svc = Service(dish, clock=Clock())
    run = svc.start(CLAIM, preset="quick")
    svc.close()  # no connection left open: the WAL is checkpointed away, the file is the dish
    before = counts(dish)
    with read_only_view(tmp_path, home) as view:
        ro = view / ".petri"
        assert not (ro / "petri.db-wal").exists()
        status = petri(ro, "status", "--json")
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["runs"][0]["run_id"] == run.run_id
        shown = petri(ro, "show", run.root_cell_id)
        assert shown.exit_code == 0 and CLAIM in shown.output, shown.output
        checked = petri(ro, "verify")
        assert checked.exit_code == 0 and "ok" in checked.output, checked.output
        assert petri(ro, "log").exit_code == 0
        text = rejected(Service(ro, clock=Clock()), "petri_start", {"claim": "Remote work raises output"})
        assert text.startswith("rejected: cannot open the dish") and "read-only" in text, text
        with pytest.raises(DishError, match="read-only"):
            Service(ro).next()
        assert sorted(p.name for p in ro.iterdir()) == ["petri.db"]  # nothing written beside it
    assert counts(dish) == before
    assert svc.verify().ok


def test_a_read_only_view_of_a_dish_in_use_reads_it_as_it_is_now(tmp_path: Path) -> None:
    home = tmp_path / "home"
    svc = Service(home / ".petri", clock=Clock())
    svc.start(CLAIM, preset="quick")  # the service keeps its connection: -wal and -shm stay
    with read_only_view(tmp_path, home) as view:
        first = json.loads(petri(view / ".petri", "status", "--json").output)["events"]
        svc.start("Remote work raises output", preset="quick")
        assert json.loads(petri(view / ".petri", "status", "--json").output)["events"] > first
    svc.close()


def test_a_read_only_dish_left_with_changes_in_its_wal_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dish = home / ".petri"
    svc = Service(dish, clock=Clock())
    svc.start(CLAIM, preset="quick")
    # While the service holds its connection its changes sit in petri.db-wal: copy the dish as a
    # crash would leave it, without the -shm index SQLite would have to rebuild (and cannot, read-only).
    copy = tmp_path / "copy" / ".petri"
    copy.mkdir(parents=True)
    for name in ("petri.db", "petri.db-wal"):
        shutil.copy(dish / name, copy / name)
    svc.close()
    assert (copy / "petri.db-wal").stat().st_size > 0
    with read_only_view(tmp_path, copy.parent) as view:
        ro = view / ".petri"
        for args in (["status"], ["verify"], ["show", "hpc-0-01"]):
            one_error_line(
                petri(ro, *args),
                f"cannot open the dish {ro}",
                "it is read-only",
                "petri.db-wal holds changes not yet in the database file",
            )
    assert Service(copy).verify().ok  # writable again, SQLite recovers the WAL: nothing was lost


# ---------------------------------------------------------------- full disk


def fill_and_write(svc: Service, make_room: Any) -> None:
    """Write until the disk is full; every failure is clear and harmless; then make room and go on."""
    dish = svc.dish
    failures = []
    for i in range(40):
        before = counts(dish)
        try:
            add_article(svc, text=f"page {i} " + "y" * 60_000, url=f"https://example.org/{i}")
        except DishError as exc:
            failures.append(str(exc))
            assert counts(dish) == before
    assert failures, "the disk never filled"
    assert all("the disk is full" in f and "free some space" in f for f in failures), failures[0]
    big = [{"question": f"context {n}?", "answer": "z" * 4000} for n in range(20)]  # the caps
    text = rejected(svc, "petri_start", {"claim": "Battery prices halve", "clarifications": big})
    assert text.startswith("rejected: cannot write the dish") and "the disk is full" in text, text
    report = svc.verify()
    assert report.ok, report.problems
    make_room()
    add_article(svc, text="after " + "z" * 60_000, url="https://example.org/after")
    svc.start("Battery prices halve every five years", preset="quick")
    assert svc.verify().ok


def test_a_full_tmpfs_is_a_clear_error_and_writes_resume_after_space_is_freed(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)):
        svc = Service(disk / ".petri", clock=Clock())
        svc.start(CLAIM, preset="quick")
        stat = os.statvfs(disk)
        filler = disk / "filler"
        filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 400_000))
        fill_and_write(svc, filler.unlink)


def test_a_full_database_is_a_clear_error_at_the_cli_and_the_mcp_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = store._connect
    room = {"pages": 60}

    def capped(path: Path) -> sqlite3.Connection:
        conn = connect(path)
        used = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(used, room['pages'])}")
        return conn

    monkeypatch.setattr(store, "_connect", capped)
    svc = Service(tmp_path / ".petri", clock=Clock())
    svc.start(CLAIM, preset="quick")
    monkeypatch.setenv("PETRI_HOME", str(svc.dish))
    # the cap is set when a connection opens: close the service's kept ones so the next call sees it
    fill_and_write(svc, lambda: (room.update(pages=100_000), svc.close()))
    room["pages"] = 0
    before = counts(svc.dish)
    monkeypatch.setenv("PETRI_FETCH_ALLOW_PRIVATE", "1")
    page = b"A long page about battery prices. " * 10_000
    with serve({"/big": (200, {"Content-Type": "text/plain"}, page, 0.0)}) as base:
        one_error_line(petri(svc.dish, "fetch", f"{base}/big"), "the disk is full", "free some space")
    assert counts(svc.dish) == before
    assert svc.verify().ok


# ---------------------------------------------------------------- locks


def test_a_write_lock_held_too_long_is_a_clear_error_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Service(tmp_path / ".petri", clock=Clock())
    run = svc.start(CLAIM, preset="quick")
    before = counts(svc.dish)
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.3)
    with closing(sqlite3.connect(svc.dish / "petri.db", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        with pytest.raises(
            DishError, match=r"stayed locked .* another process holds a write lock — retry later"
        ):
            svc.claim(run.tasks[0].task_id, "w1")
        one_error_line(petri(svc.dish, "halt", run.run_id), "stayed locked", "retry later")
        assert svc.status()["events"] == before[0]  # readers are not blocked by a writer
        other.execute("ROLLBACK")
    assert counts(svc.dish) == before
    svc.claim(run.tasks[0].task_id, "w1")
    assert svc.verify().ok


def test_a_long_running_reader_keeps_its_snapshot_while_writers_finish_a_run(tmp_path: Path) -> None:
    dish = tmp_path / ".petri"
    svc = Service(dish)
    source = add_article(svc).source_id
    run = svc.start(root_claim(1), preset="quick", max_depth=1, child_cap=CHILDREN)
    writer = subprocess.Popen(
        [sys.executable, str(SCRIPT), "burst", str(dish), source, run.run_id],
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    snapshots: list[tuple[int, str, list[str]]] = []
    with store.Store(dish) as st, st.read():  # one read transaction for the whole burst
        at_start = (st.event_count(), st.head())
        while writer.poll() is None:
            snapshots.append((st.event_count(), st.head(), st.check_chain() + st.check_projections()))
            time.sleep(0.05)
        # The writers committed a whole run meanwhile; this snapshot still sees the old dish, intact.
        assert {(n, h) for n, h, _ in snapshots} == {at_start}
        assert all(problems == [] for _, _, problems in snapshots)
    stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0 and stdout.endswith("done\n"), stderr
    assert svc.status(run.run_id)["runs"][0]["state"] == "complete"
    assert svc.open().event_count() > at_start[0]
    with closing(sqlite3.connect(dish / "petri.db")) as raw:  # the WAL can be folded back now
        busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert svc.verify().ok


def test_verify_and_backup_run_while_another_thread_writes(tmp_path: Path) -> None:
    svc = Service(tmp_path / ".petri", clock=Clock())
    svc.start(CLAIM, preset="quick")
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            k = 0
            while not stop.is_set():
                k += 1
                add_article(svc, text=f"article {k} " + "w" * 5000, url=f"https://example.org/{k}")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for i in range(5):
            assert svc.verify().ok
            copy = svc.backup(tmp_path / f"copy{i}.db")
            with closing(sqlite3.connect(copy)) as raw:
                assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert svc.verify().ok
