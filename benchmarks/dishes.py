"""Dishes of a given size, grown through the service (never with raw SQL)."""

from __future__ import annotations

import hashlib
from typing import Any

from petri_core.service import Service

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

    def ready() -> list[Any]:
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
