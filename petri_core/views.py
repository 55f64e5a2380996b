"""`status` and `show` as plain data, read from the projections without pydantic.

A person runs these most, each in a new process, and pydantic with the models would be most of
their start-up (benchmarks P3). So they read the store's plain rows, which hold what the models
hold (tests/test_views.py checks the two agree). The service's `status` and `show`, and with them
the MCP tool `petri_status`, answer through these same functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import NotFound
from .quotes import elides
from .store import Store


def status(st: Store, dish: Path, now: str, run_id: str | None = None) -> dict[str, Any]:
    """Runs, cells by state, tasks, leases and the human inbox; call inside `st.read()`."""
    runs = [st.run_row(run_id)] if run_id else st.run_rows()
    out_runs = []
    for run in runs:
        leases = [
            {
                "task_id": t["task_id"],
                "worker": t["worker"],
                "expires_at": t["expires_at"],
                "expired": bool(t["expires_at"] and t["expires_at"] <= now),
            }
            for t in st.open_task_rows(run["run_id"])
            if t["status"] == "leased"
        ]
        out_runs.append(
            {
                "run_id": run["run_id"],
                "claim": run["claim"],
                "preset": run["preset"],
                "state": run["state"],
                "root_cell_id": run["root_cell_id"],
                "root_state": st.cell_row(run["root_cell_id"])["state"],
                "created_at": run["created_at"],
                "cells": st.cell_counts(run["run_id"]),
                "tasks": st.task_counts(run["run_id"]),
                "leases": leases,
                "usage": st.usage_totals(run_id=run["run_id"]),
            }
        )
    return {
        "dish": str(dish),
        "events": st.event_count(),
        "head": st.head(),
        "runs": out_runs,
        "needs_human": [inbox_item(c) for c in st.inbox_rows(run_id)],
    }


def show(st: Store, cell_id: str) -> dict[str, Any]:
    """One cell in full: its claim, edges, tasks, verdicts and citations; call inside `st.read()`."""
    cell = st.cell_row(cell_id)
    return {
        "cell": cell,
        "parents": [
            {"cell_id": p["cell_id"], "text": p["text"], "state": p["state"]} for p in st.parent_rows(cell_id)
        ],
        "children": [
            {"cell_id": c["cell_id"], "text": c["text"], "state": c["state"], "relation": c["relation"]}
            for c in st.child_rows(cell_id)
        ],
        "tasks": [
            {
                **{k: v for k, v in t.items() if k != "outcome"},
                "usage": st.usage_totals(task_id=t["task_id"]),
            }
            for t in st.task_rows_of_cell(cell_id)
        ],
        "usage": st.usage_totals(cell_id=cell_id),
        "verdicts": st.verdict_rows(cell_id),
        "citations": [_with_source_words(st, c) for c in st.citation_rows(cell_id)],
        "evidence": st.evidence(cell_id),
    }


def _with_source_words(st: Store, row: dict[str, Any]) -> dict[str, Any]:
    """A citation row, and for a quote with an elision the page's words over its whole span. A row
    read from a mangled event (no quote, no span, an unknown source) is shown as it is."""
    quote, start, end = row.get("quote"), row.get("match_start"), row.get("match_end")
    if not (isinstance(quote, str) and isinstance(start, int) and isinstance(end, int) and elides(quote)):
        return row
    try:
        text = st.source(str(row.get("source_id"))).text
    except NotFound:
        return row
    return row | {"source_reads": text[start:end]}


def inbox_item(cell: Mapping[str, Any]) -> dict[str, str]:
    """A human-inbox entry for a cell row: why it waits, and the exact command that answers it."""
    cell_id = cell["cell_id"]
    if cell["state"] == "awaiting_approval":
        reason = "a decomposition awaits approval"
        command = f'petri approve {cell_id}  (or: --reject --note "…")'
    elif cell["state"] == "stalled":
        reason = cell["stall_reason"] or "stalled"
        command = (
            f'petri resolve {cell_id} --requeue --guidance "…"  (or --close VERDICT '
            '--reason "…", or --split "…" --split "…")'
        )
    else:
        reason = cell["flagged"] or "flagged"
        command = f"petri resolve {cell_id} --reopen  (or --acknowledge)"
    return {"cell_id": cell_id, "reason": reason, "command": command}
