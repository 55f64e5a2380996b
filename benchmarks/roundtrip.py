"""P1: the round trip of `petri_submit` over real stdio, against a no-op tool on the same server.

The server is `petri mcp` with one more tool, `petri_noop`, which does nothing
(`benchmarks/noop_server.py`): the target's no-op, the floor of a tool call. Beside it, on the same
server and in the same loop: an MCP `ping` (no tool at all), `petri_heartbeat` (the cheapest Petri
tool: one event in one write transaction) and `petri_status` for one small run (a read tool). The
storage floor is a raw sqlite3 INSERT+COMMIT in WAL mode in a temp file; the service's own `submit`,
timed in-process, shows the store's share. The same submission after 3 ms asleep, after 3 ms
spinning, and a fixed piece of plain Python after 3 ms asleep show what waiting between calls costs
code on this machine, Petri's or not.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from petri_core.service import Service
from petri_core.store import Store

from .common import Row, Sizes, TimedConnection, spread, timed
from .dishes import QUOTES, add_source, decomposed_run

CHILDREN = 12
IDLE = 0.003  # seconds asleep before each of the "rested" in-process submits


def verdict(source_id: str) -> dict[str, Any]:
    """An investigator's verdict with two verified citations (the submission that P1 times)."""
    return {
        "verdict": "EVIDENCE_SUFFICIENT",
        "summary": "Two measurements of the series agree on the figure.",
        "citations": [
            {
                "source_id": source_id,
                "quote": QUOTES[k],
                "stance": "supports",
                "level": 2,
                "finding": f"measurement {k + 1} gives the figure",
            }
            for k in (0, 1)
        ],
    }


def claimed_investigations(svc: Service, count: int) -> list[tuple[str, str]]:
    """`count` investigator tasks, each claimed: (task_id, lease), ready for a submission."""
    held: list[tuple[str, str]] = []
    run_no = 0
    while len(held) < count:
        run_no += 1

        def factor(i: int, n: int = run_no) -> str:
            return f"Factor {n * 100 + i} raises outcome {n} by {i + 2} units"

        claim = f"Outcome {run_no} of the series follows from its factors"
        run = decomposed_run(svc, claim, factor, CHILDREN, "petri-decomposer")
        for t in svc.next(run.run_id, limit=50).tasks:
            if t.role == "investigator":
                held.append((t.task_id, svc.claim(t.task_id, "petri-investigator").lease))
    return held[:count]


def server(dish: Path) -> StdioServerParameters:
    """`petri mcp` plus the no-op tool (`benchmarks/noop_server.py`)."""
    env = {**os.environ, "PETRI_HOME": str(dish)}
    return StdioServerParameters(command=sys.executable, args=["-m", "benchmarks.noop_server"], env=env)


async def over_stdio(
    dish: Path,
    run_id: str,
    source_id: str,
    tasks: list[tuple[str, str]],
    beat: tuple[str, str],
    warmup: int,
) -> dict[str, list[float]]:
    """Interleave ping, noop, heartbeat, status and submit on one server process; seconds per call,
    and (as "submit inside", "heartbeat inside") the seconds the service took inside the server.

    Each round calls the five in a shuffled order (seeded): in a fixed order each call would always
    follow the same one, and a call after `petri_status` runs on caches that status just filled with
    its own code (a fixed order put submit there and measured its ratio about 0.08 higher)."""
    samples: dict[str, list[float]] = {"ping": [], "noop": [], "heartbeat": [], "status": [], "submit": []}
    result = verdict(source_id)
    order = random.Random(7)

    async def clock(name: str, call: Callable[[], Awaitable[Any]], keep: bool) -> None:
        start = time.perf_counter()
        out = await call()
        elapsed = time.perf_counter() - start
        if getattr(out, "is_error", False):
            raise RuntimeError(f"{name} failed: {out.content[0].text}")
        if keep:
            samples[name].append(elapsed)

    warnings.filterwarnings("ignore", message="ping is removed")
    async with Client(server(dish), mode="legacy") as client:
        for i, (task_id, lease) in enumerate(tasks):
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "ping": client.send_ping,
                "noop": lambda: client.call_tool("petri_noop", {}),
                "heartbeat": lambda: client.call_tool(
                    "petri_heartbeat", {"task_id": beat[0], "lease": beat[1]}
                ),
                "status": lambda: client.call_tool("petri_status", {"run_id": run_id}),
                "submit": lambda t=task_id, le=lease: client.call_tool(  # type: ignore[misc]
                    "petri_submit", {"task_id": t, "lease": le, "result": result}
                ),
            }
            names = list(calls)
            order.shuffle(names)
            for name in names:
                await clock(name, calls[name], i >= warmup)
        inside = await client.call_tool("bench_service_times", {})
    for name, seconds in inside.structured_content["seconds"].items():
        samples[f"{name} inside"] = seconds[warmup:]
    return samples


def bare_commits(folder: Path, n: int, warmup: int, *, reconnect: bool) -> list[float]:
    """A raw INSERT+COMMIT of a 1 KB row in WAL mode (synchronous=NORMAL, as the store sets it)."""
    path = folder / "bare.db"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    setup.close()
    payload = "x" * 1024

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    held = None if reconnect else connect()
    out = []
    for _ in range(n + warmup):
        start = time.perf_counter()
        conn = held or connect()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO events (payload) VALUES (?)", (payload,))
        conn.execute("COMMIT")
        if held is None:
            conn.close()
        out.append(time.perf_counter() - start)
    if held is not None:
        held.close()
    return out[warmup:]


def spin(seconds: float) -> None:
    """Wait without sleeping: the CPU stays busy, so it never idles."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def in_process(
    svc: Service,
    source_id: str,
    tasks: list[tuple[str, str]],
    warmup: int,
    *,
    idle: float = 0.0,
    busy: bool = False,
) -> dict[str, list[float]]:
    """In-process submits, each after `idle` seconds asleep (as a server sits between calls), or
    spinning when `busy`: the seconds of each ("wall"), of it inside SQLite's `execute` ("sql") and
    in its COMMIT ("commit"), and its statement count ("statements")."""
    result = verdict(source_id)
    with svc._store() as st:  # the store this thread's calls use, kept open between them
        clock = TimedConnection(st.conn, lambda sql, args: "commit" if sql == "COMMIT" else "other")
        st.conn = clock  # type: ignore[assignment]
    out: dict[str, list[float]] = {"wall": [], "sql": [], "commit": [], "statements": []}
    try:
        for task_id, lease in tasks:
            if idle:
                (spin if busy else time.sleep)(idle)
            before, commit, count = sum(clock.seconds.values()), clock.seconds["commit"], clock.statements
            out["wall"].append(timed(lambda t=task_id, le=lease: svc.submit(t, le, result)))  # type: ignore[misc]
            out["sql"].append(sum(clock.seconds.values()) - before)
            out["commit"].append(clock.seconds["commit"] - commit)
            out["statements"].append(clock.statements - count)
    finally:
        st.conn = clock.conn
    return {name: samples[warmup:] for name, samples in out.items()}


PLAIN = [{"k": i, "v": "x" * i, "l": list(range(i % 17))} for i in range(300)]


def plain_python() -> None:
    """A fixed piece of plain Python, no Petri in it (JSON both ways, SHA-256, a dict): about as long
    as an in-process submit back to back."""
    text = json.dumps(PLAIN)
    hashlib.sha256(text.encode()).hexdigest()
    {item["k"]: item for item in json.loads(text)}


def plain_after(n: int, warmup: int, idle: float) -> dict[str, list[float]]:
    """`plain_python` back to back ("now") and after `idle` seconds asleep ("rested"), alternating:
    what waiting costs code with no Petri in it."""
    out: dict[str, list[float]] = {"now": [], "rested": []}
    for _ in range(n + warmup):
        out["now"].append(timed(plain_python))
        time.sleep(idle)
        out["rested"].append(timed(plain_python))
    return {name: samples[warmup:] for name, samples in out.items()}


def wal_pages(svc: Service, source_id: str, tasks: list[tuple[str, str]]) -> float:
    """Pages each submit writes to the WAL (a frame per page changed), counted from the WAL file's
    growth with automatic checkpoints paused; they are resumed after."""
    result = verdict(source_id)
    with svc._store() as st:
        conn = st.conn
    wal = Path(f"{st.path}-wal")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    every = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    try:
        start = wal.stat().st_size
        for task_id, lease in tasks:
            svc.submit(task_id, lease, result)
        grown = wal.stat().st_size - start
    finally:
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(every)}")
    header = 32 if start == 0 else 0  # a WAL file begins with a 32-byte header, then frames
    return (grown - header) / (24 + page_size) / len(tasks)  # each frame: 24-byte header + a page


def run(sizes: Sizes) -> list[Row]:
    n, warmup = sizes.roundtrips, 1 if sizes.quick else 3
    w = n + warmup
    with tempfile.TemporaryDirectory(prefix="petri-p1-") as tmp:
        folder = Path(tmp)
        dish = folder / ".petri"
        svc = Service(dish)
        source_id = add_source(svc)
        pages_n = 5 if sizes.quick else 20
        tasks = claimed_investigations(svc, 4 * w + 1 + pages_n)
        beat, mcp_tasks, alone, rested_tasks, busy_tasks, page_tasks = (
            tasks[0],
            tasks[1 : w + 1],
            tasks[w + 1 : 2 * w + 1],
            tasks[2 * w + 1 : 3 * w + 1],
            tasks[3 * w + 1 : 4 * w + 1],
            tasks[4 * w + 1 :],
        )
        run_id = svc.status()["runs"][0]["run_id"]
        wire = anyio.run(over_stdio, dish, run_id, source_id, mcp_tasks, beat, warmup)
        local = in_process(svc, source_id, alone, warmup)
        rested = in_process(svc, source_id, rested_tasks, warmup, idle=IDLE)
        spun = in_process(svc, source_id, busy_tasks, warmup, idle=IDLE, busy=True)
        plain = plain_after(n, warmup, IDLE)
        pages = wal_pages(svc, source_id, page_tasks)
        opens = [timed(lambda: Store(dish).close()) for _ in range(w)][warmup:]
        commit = bare_commits(folder, n, warmup, reconnect=False)
        commit_reconnect = bare_commits(folder, n, warmup, reconnect=True)

    med = {k: statistics.median(v) for k, v in wire.items()}
    ratio = med["submit"] / med["noop"]
    store_share = statistics.median(local["wall"]) / statistics.median(commit)
    return [
        spread("P1", "stdio `petri_submit` (verdict + 2 citations)", wire["submit"]),
        spread("P1", "stdio MCP `ping` (no tool)", wire["ping"]),
        spread("P1", "stdio `petri_noop` (a tool that does nothing: the protocol floor)", wire["noop"]),
        spread("P1", "stdio `petri_heartbeat` (cheapest Petri tool: 1 event)", wire["heartbeat"]),
        spread("P1", "stdio `petri_status` (read tool, one small run)", wire["status"]),
        Row("P1", "submit ÷ no-op tool, medians", ratio, "×", target="≤ 1.5×", met=ratio <= 1.5),
        Row("P1", "submit ÷ heartbeat, medians", med["submit"] / med["heartbeat"], "×"),
        spread("P1", "… of a stdio submit: `Service.submit` inside the server", wire["submit inside"]),
        spread(
            "P1", "… of a stdio heartbeat: `Service.heartbeat` inside the server", wire["heartbeat inside"]
        ),
        Row(
            "P1",
            "submit round trip − no-op round trip − service inside, medians (the SDK's extra for submit)",
            med["submit"] - med["noop"] - med["submit inside"],
            "s",
            signed=True,
        ),
        Row("P1", "submit ÷ status, medians", med["submit"] / med["status"], "×"),
        Row("P1", "submit ÷ ping, medians", med["submit"] / med["ping"], "×"),
        spread("P1", "in-process `Service.submit`, same submission", local["wall"]),
        spread(
            "P1",
            f"… of it inside SQLite's `execute` ({statistics.median(local['statements']):.0f} statements,"
            " COMMIT included)",
            local["sql"],
        ),
        spread("P1", f"… of it the COMMIT (it writes {pages:.0f} pages to the WAL)", local["commit"]),
        spread(
            "P1",
            "… of it in Python (the rest)",
            [w - q for w, q in zip(local["wall"], local["sql"], strict=True)],
        ),
        spread(
            "P1",
            f"in-process `Service.submit`, each after {IDLE * 1000:.0f} ms asleep (as a server waits between calls)",
            rested["wall"],
        ),
        spread("P1", "… of it inside SQLite's `execute`", rested["sql"]),
        Row(
            "P1",
            "after sleeping ÷ back to back, in-process submit medians",
            statistics.median(rested["wall"]) / statistics.median(local["wall"]),
            "×",
        ),
        spread(
            "P1",
            f"in-process `Service.submit`, each after {IDLE * 1000:.0f} ms spinning (busy: the CPU never idles)",
            spun["wall"],
        ),
        spread(
            "P1",
            "a fixed piece of plain Python, no Petri (JSON, SHA-256, a dict), back to back",
            plain["now"],
        ),
        spread("P1", f"… the same, each after {IDLE * 1000:.0f} ms asleep", plain["rested"]),
        Row(
            "P1",
            "after sleeping ÷ back to back, plain Python medians (what waiting costs code with no Petri in it)",
            statistics.median(plain["rested"]) / statistics.median(plain["now"]),
            "×",
        ),
        spread("P1", "`Store(dish)` open + close (what each call paid before connections were kept)", opens),
        spread("P1", "bare sqlite3 INSERT+COMMIT, WAL (storage floor)", commit),
        spread("P1", "bare connect + INSERT+COMMIT + close, WAL", commit_reconnect),
        Row("P1", "store's share: in-process submit ÷ bare commit, medians", store_share, "×"),
    ]
