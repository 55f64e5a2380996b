"""Reports of a run (markdown and a self-contained HTML page), rendered with jinja2. Read-only."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .context import age_days, clip
from .models import FINAL_STATES, Cell
from .quotes import source_words
from .store import Store

ROLE_ORDER = (
    "investigator",
    "freshness-checker",
    "dependency-auditor",
    "skeptic",
    "champion",
    "pragmatist",
    "simplifier",
    "triage",
    "impact-assessor",
    "socratic",
    "red-team",
    "evaluator",
)


def gather(st: Store, run_id: str, now: str) -> dict[str, Any]:
    """Everything a report shows, from the projections and the log (no writes)."""
    run = st.run(run_id)
    cells = st.cells(run_id)
    ids = st.subtree(run.root_cell_id)
    linked = [st.cell(cid) for cid in sorted(ids - {c.cell_id for c in cells})]
    by_id = {c.cell_id: c for c in [*cells, *linked]}
    events = st.events(run_id=run_id)
    cell_events: dict[str, list[Any]] = {}
    for e in events:
        if e.cell_id:
            cell_events.setdefault(e.cell_id, []).append(e)
    sources: dict[str, Any] = {}
    out_cells: list[dict[str, Any]] = []
    for cell in [*cells, *linked]:
        citations = st.citations(cell.cell_id)
        for c in citations:
            if c.source_id not in sources:
                sources[c.source_id] = st.source(c.source_id)
        verdicts = st.verdicts(cell.cell_id)
        last = {v.role: v for v in verdicts if v.iteration == cell.iteration}
        history = [e.payload for e in cell_events.get(cell.cell_id, []) if e.type == "convergence_checked"]
        debates = [v for v in verdicts if v.kind == "debate"]
        debate_tasks = [
            t for t in st.tasks_of_cell(cell.cell_id) if t.kind == "debate" and t.status == "done"
        ]
        socratic = [
            e.payload["result"]
            for e in cell_events.get(cell.cell_id, [])
            if e.type == "task_submitted" and e.task_id and e.task_id.endswith(".socratic")
        ]

        def cite_view(c: Any) -> dict[str, Any]:
            src = sources[c.source_id]
            return {
                "title": src.title or src.final_url,
                "url": src.final_url,
                "published": src.published or "unknown",
                "age_days": age_days(src.published, now),
                "level": c.level,
                "quote": c.quote,
                "reads": source_words(c.quote, src.text, c.match_start, c.match_end),
                "finding": c.finding,
                "role": c.role,
                "iteration": c.iteration,
                "stance": c.stance,
            }

        ranked, seen_quotes = [], set()
        for c in sorted(citations, key=lambda c: (c.level, -c.iteration, c.citation_id)):
            if (c.source_id, c.quote, c.stance) not in seen_quotes:
                seen_quotes.add((c.source_id, c.quote, c.stance))
                ranked.append(c)
        out_cells.append(
            {
                "cell": cell,
                "parents": [p.cell_id for p in st.parents(cell.cell_id)],
                "children": [(e.relation, c.cell_id) for e, c in st.children(cell.cell_id)],
                "for": [cite_view(c) for c in ranked if c.stance == "supports"][:5],
                "against": [cite_view(c) for c in ranked if c.stance == "contradicts"][:5],
                "verdicts": [last[r] for r in ROLE_ORDER if r in last],
                "iterations": history,
                "debates": [
                    {
                        "task": t.task_id,
                        "role": t.role,
                        "opener": t.opener,
                        "response": _response(cell_events.get(cell.cell_id, []), t.task_id),
                    }
                    for t in debate_tasks
                ],
                "debate_verdicts": debates,
                "red_team": last.get("red-team"),
                "questions": [q for r in socratic for q in r.get("questions", [])],
            }
        )
    tree = _tree(run.root_cell_id, by_id, st)
    inbox = [c for c in cells if c.state in ("stalled", "awaiting_approval") or c.flagged]
    open_questions: list[tuple[str, str]] = [
        (c.cell_id, c.final_reason or "inconclusive") for c in cells if c.state == "inconclusive"
    ]
    for view in out_cells:
        open_questions += [(view["cell"].cell_id, str(q)) for q in view["questions"]]
    tasks = Counter(t.role for c in cells for t in st.tasks_of_cell(c.cell_id) if t.status == "done")
    return {
        "run": run,
        "root": by_id[run.root_cell_id],
        "tree": tree,
        "cells": out_cells,
        "inbox": inbox,
        "open_questions": open_questions,
        "tasks_by_role": sorted(tasks.items()),
        "tasks_total": sum(tasks.values()),
        "event_counts": sorted(Counter(e.type for e in events).items()),
        "events_total": len(events),
        "head": st.head(),
        "now": now,
        "final_states": FINAL_STATES,
    }


def _response(events: list[Any], task_id: str) -> str:
    for e in events:
        if e.type == "task_submitted" and e.task_id == task_id:
            return str(e.payload["result"].get("response", ""))
    return ""


def _tree(root: str, by_id: dict[str, Cell], st: Store) -> list[dict[str, Any]]:
    """The claim tree, depth first, with each cell's depth and relation to its parent."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(cell_id: str, depth: int, relation: str | None) -> None:
        cell = by_id.get(cell_id) or st.cell(cell_id)
        rows.append({"cell": cell, "depth": depth, "relation": relation, "repeat": cell_id in seen})
        if cell_id in seen:
            return
        seen.add(cell_id)
        for edge, child in st.children(cell_id):
            walk(child.cell_id, depth + 1, edge.relation)

    walk(root, 0, None)
    return rows


def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("petri_core", "templates"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["clip"] = lambda text, n=300: clip(text, n) or ""
    env.filters["mdsafe"] = _md_safe
    return env


def render(data: dict[str, Any], fmt: str) -> str:
    """Render gathered data with the packaged template (`md` or `html`)."""
    return str(_env().get_template(f"report.{fmt}.j2").render(**data))


def render_cell(item: dict[str, Any]) -> str:
    """One cell's section as a markdown file (for `petri export`)."""
    return str(_env().get_template("cell.md.j2").render(item=item))


def _md_safe(text: Any) -> str:
    """Text for markdown: one line, no HTML, no link or emphasis injection."""
    value = " ".join(str(text or "").split())
    for ch, rep in (
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("|", "\\|"),
        ("[", "\\["),
        ("]", "\\]"),
        ("*", "\\*"),
        ("`", "\\`"),
    ):
        value = value.replace(ch, rep)
    return value
