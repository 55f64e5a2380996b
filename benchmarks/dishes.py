"""Dishes of a given size, grown through the service (never with raw SQL)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petri_core.models import Task
from petri_core.service import Service
from petri_core.store import DB_NAME

ARTICLE = " ".join(
    f"Measurement {n} of the series shows a value of {n * 3} units in year {2000 + n % 26}."
    for n in range(1, 60)
)


def add_source(svc: Service, text: str = ARTICLE) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return svc.add_source(
        url=f"https://example.org/{digest[:8]}",
        final_url=f"https://example.org/{digest[:8]}",
        status=200,
        content_type="text/html",
        fetched_at=svc.now(),
        content_hash=digest,
        title="Series",
        author=None,
        published="2026-01-15",
        text=text,
    ).source_id


def grow(svc: Service, cells: int, *, fanout: int = 10) -> tuple[str, str]:
    """A run with about `cells` cells (breadth-first decompositions); returns (run_id, a leaf cell id)."""
    depth = 1
    while sum(fanout**k for k in range(depth + 1)) < cells:
        depth += 1
    run = svc.start(
        f"Root claim about growth of {cells} cells", preset="standard", child_cap=fanout, max_depth=depth
    )
    made, counter = 1, 0
    while True:
        tasks = [t for t in svc.next(run.run_id, limit=50).tasks if t.kind == "decompose"]
        if not tasks:
            break
        for task in tasks:
            lease = svc.claim(task.task_id, "grower").lease
            room = max(0, min(fanout, cells - made))
            if room == 0:
                result: dict[str, Any] = {"atomic": True, "bedrock_reason": "size reached"}
            else:
                children = []
                for _ in range(room):
                    counter += 1
                    children.append(
                        {
                            "text": f"Premise {counter}: factor {counter * 7} exceeds {counter * 13} units",
                            "atomic": False,
                        }
                    )
                result = {"atomic": False, "children": children}
                made += room
            svc.submit(task.task_id, lease, result)
    leaf = next(t.cell_id for t in svc.next(run.run_id, limit=1).tasks)
    return run.run_id, leaf


def iterate(svc: Service, cell_id: str, source_id: str, iterations: int) -> str:
    """Drive one cell through `iterations - 1` failed iterations; returns the ready investigator task of the last."""
    quotes = [f"Measurement {n} of the series shows a value of {n * 3} units" for n in range(1, 40)]
    q = iter(quotes)

    def cites(k: int, stance: str = "supports") -> list[dict[str, Any]]:
        return [
            {
                "source_id": source_id,
                "quote": next(q),
                "stance": stance,
                "level": 2,
                "finding": "a finding " * 10,
            }
            for _ in range(k)
        ]

    def ready() -> list[Task]:
        with svc.open() as st:
            return [t for t in st.tasks_of_cell(cell_id) if t.status == "ready"]

    blocking = {
        "skeptic": {
            "verdict": "CRITICAL_FLAW_FOUND",
            "summary": "a long objection " * 30,
            "citations": cites(2, "contradicts"),
        }
    }
    for _ in range(iterations - 1):
        while True:
            tasks = ready()
            if not tasks:
                break
            for task in tasks:
                lease = svc.claim(task.task_id, f"petri-{task.role}").lease
                if task.kind == "debate":
                    result: dict[str, Any] = {"response": "a response " * 40}
                elif task.role == "cell-lead":
                    result = {"summary": "a summary " * 100, "directive": "a directive " * 40}
                elif task.role in blocking:
                    result = blocking[task.role]
                    blocking[task.role] = {**result, "citations": cites(2, "contradicts")}
                elif task.role == "investigator":
                    result = {
                        "verdict": "EVIDENCE_SUFFICIENT",
                        "summary": "sufficient " * 40,
                        "citations": cites(3),
                    }
                elif task.role == "champion":
                    result = {"verdict": "STRONG_CASE", "summary": "strong " * 40, "citations": cites(2)}
                else:
                    result = {"verdict": "EVIDENCE_CURRENT", "summary": "current " * 40}
                svc.submit(task.task_id, lease, result)
            if any(t.role == "investigator" for t in ready()):
                break
    return next(t.task_id for t in ready())


# ---------------------------------------------------------------- dishes of a given event count (P3, P5)

#: Bump when `fill` changes what it writes, so cached dishes are rebuilt.
FILL_VERSION = 1
QUOTES = [f"Measurement {n} of the series shows a value of {n * 3} units" for n in range(1, 60)]


@dataclass(frozen=True)
class Filled:
    """What `fill` made: the dish's event count and shape, and a cell to `petri show`."""

    events: int
    runs: int
    cells: int
    show_cell: str
    seconds: float


def _citations(source_id: str, k: int, stance: str, offset: int) -> list[dict[str, Any]]:
    return [
        {
            "source_id": source_id,
            "quote": QUOTES[(offset + i) % len(QUOTES)],
            "stance": stance,
            "level": 2,
            "finding": f"finding {offset + i} about the series",
        }
        for i in range(k)
    ]


def fill(
    svc: Service,
    events: int,
    *,
    fanout: int = 10,
    depth: int = 2,
    iterations: int = 4,
    citations: int = 20,
) -> Filled:
    """Grow runs through the service until the dish holds at least `events` events.

    Each run (quick preset) decomposes `depth` levels of `fanout` children; every cell then fails
    `iterations - 1` iterations on a blocking skeptic and validates in the last, each cited verdict
    carrying `citations` verified quotes. Runs complete, so the human inbox stays empty.
    """
    started = time.perf_counter()
    source_id = add_source(svc)
    # A connection of its own that reads the event count as the dish grows.
    keeper = sqlite3.connect(svc.dish / DB_NAME)
    made_runs, counter, n = 0, 0, 0
    show_cell: str | None = None
    total = 0
    while total < events:
        made_runs += 1
        run = svc.start(
            f"Outcome {made_runs} of the series follows from its listed factors",
            preset="quick",
            child_cap=fanout,
            max_depth=depth,
            max_iterations=iterations + 1,
        )
        while total < events:
            with svc.open() as st, st.read():
                ready = [t for t in st.open_tasks(run.run_id) if t.status == "ready"]
            if not ready:
                break
            for task in ready:
                claim = svc.claim(task.task_id, f"petri-{task.role}")
                n += 1
                result: dict[str, Any]
                if task.kind == "decompose":
                    level = int(claim.context["cell"]["cell_id"].split("-")[-2])
                    if level >= depth:
                        result = {"atomic": True, "bedrock_reason": "a measured fact"}
                    else:
                        children = []
                        for _ in range(fanout):
                            counter += 1
                            children.append(
                                {
                                    "text": f"Premise {counter}: factor {counter * 7} exceeds {counter * 13} units",
                                    "atomic": level + 1 >= depth,
                                    **({"bedrock_reason": "a measured fact"} if level + 1 >= depth else {}),
                                }
                            )
                        result = {"atomic": False, "children": children}
                else:
                    final = task.iteration >= iterations
                    if show_cell is None:
                        show_cell = task.cell_id
                    if task.role == "investigator":
                        result = {
                            "verdict": "EVIDENCE_SUFFICIENT",
                            "summary": "the series supports it " * 8,
                            "citations": _citations(source_id, citations, "supports", n),
                        }
                    elif task.role == "skeptic" and not final:
                        result = {
                            "verdict": "CRITICAL_FLAW_FOUND",
                            "summary": "the series contradicts it " * 8,
                            "citations": _citations(source_id, citations, "contradicts", n),
                        }
                    elif task.role == "skeptic":
                        result = {"verdict": "ARGUMENT_WITHSTANDS_CRITIQUE", "summary": "objections answered"}
                    else:
                        result = {"verdict": "EVIDENCE_CONFIRMS", "summary": "confirmed by the series " * 4}
                svc.submit(task.task_id, claim.lease, result)
            total = int(keeper.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
    keeper.close()
    with svc.open() as st, st.read():
        cells = len(st.cells())
    return Filled(total, made_runs, cells, show_cell or "", time.perf_counter() - started)


def cache_root() -> Path:
    """Where generated dishes are kept between runs: PETRI_BENCH_CACHE, else a folder in the temp dir."""
    return Path(os.environ.get("PETRI_BENCH_CACHE") or Path(tempfile.gettempdir()) / "petri-bench-cache")


def cached(events: int, root: Path | None = None) -> tuple[Path, Filled]:
    """A dish of at least `events` events from the cache, generated with `fill` on first use."""
    folder = (root or cache_root()) / f"fill{FILL_VERSION}-{events}"
    meta = folder / "fill.json"
    if meta.exists():
        return folder / ".petri", Filled(**json.loads(meta.read_text()))
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    filled = fill(Service(building / ".petri"), events, fanout=10 if events >= 10_000 else 3)
    (building / "fill.json").write_text(json.dumps(dataclasses.asdict(filled)))
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)
    return folder / ".petri", filled


def decomposed_run(svc: Service, claim: str, child: Callable[[int], str], count: int, worker: str) -> Any:
    """Start a quick run and decompose its root into `count` atomic cells whose texts `child(i)` gives."""
    run = svc.start(claim, preset="quick", max_depth=1, child_cap=count)
    task = run.tasks[0].task_id
    children = [{"text": child(i), "atomic": True, "bedrock_reason": "a measured fact"} for i in range(count)]
    svc.submit(task, svc.claim(task, worker).lease, {"atomic": False, "children": children})
    return run
