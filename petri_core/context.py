"""The bounded context packet a task's agent receives when it claims the task.

Every list is capped and every text clipped, so the packet's size does not grow with the number
of cells, iterations or citations in the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from .models import Cell, Citation, Source, Task, Verdict
from .quotes import source_words
from .roster import ROLES, SOURCE_LEVELS, TERMINAL_MAX_LEVEL

MAX_NEIGHBOURS = 5
MAX_CITATIONS = 8
MAX_VERDICTS = 10
MAX_EVIDENCE = 3
CLAIM_CHARS = 400
SUMMARY_CHARS = 1200
QUOTE_CHARS = 300
NOTE_CHARS = 400


def clip(text: str | None, limit: int) -> str | None:
    """Whitespace-folded text cut to `limit` characters (with an ellipsis)."""
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def age_days(published: str | None, now: str) -> int | None:
    """Days between a publication date and now, or None if the date is unknown or unparsable."""
    if not published:
        return None
    try:
        day = date.fromisoformat(published[:10])
        return (datetime.fromisoformat(now).date() - day).days
    except ValueError:
        return None


def rank_citations(citations: list[Citation]) -> list[Citation]:
    """Best first: lowest level, then the newest iteration, then order of citing."""
    return sorted(citations, key=lambda c: (c.level, -c.iteration, c.citation_id))


def build(
    *,
    task: Task,
    cell: Cell,
    root_claim: str,
    parents: list[Cell],
    children: Sequence[tuple[str, Cell]],
    citations: list[Citation],
    sources: dict[str, Source],
    verdicts: list[Verdict],
    evidence: list[Source],
    now: str,
) -> dict[str, Any]:
    """The packet for one task: the cell, its neighbours, the directive, the best evidence so far."""
    role = ROLES[task.role]
    packet: dict[str, Any] = {
        "role": role.name,
        "task": role.brief if task.kind != "debate" else task.brief,
        "cell": {
            "cell_id": cell.cell_id,
            "claim": clip(cell.text, CLAIM_CHARS),
            "level": cell.level,
            "iteration": cell.iteration,
            "state": cell.state,
        },
    }
    if cell.level > 0:
        packet["root_claim"] = clip(root_claim, CLAIM_CHARS)
    if parents:
        packet["parents"] = [
            {"cell_id": p.cell_id, "claim": clip(p.text, CLAIM_CHARS), "state": p.state}
            for p in parents[:MAX_NEIGHBOURS]
        ]
    if children:
        packet["children"] = [
            {
                "cell_id": c.cell_id,
                "claim": clip(c.text, CLAIM_CHARS),
                "relation": rel,
                "state": c.state,
                **({"why": clip(c.final_reason, NOTE_CHARS)} if c.final_reason else {}),
            }
            for rel, c in children[:MAX_NEIGHBOURS]
        ]
    if cell.summary:
        packet["summary"] = clip(cell.summary, SUMMARY_CHARS)
    if cell.directive:
        packet["directive"] = clip(cell.directive, NOTE_CHARS)
    best = rank_citations(citations)[:MAX_CITATIONS]
    if best:
        packet["citations"] = [_citation(c, sources.get(c.source_id), now) for c in best]
    if evidence:
        packet["new_evidence"] = [
            {
                "source_id": s.source_id,
                "title": clip(s.title, 120),
                "url": s.final_url,
                "published": s.published or "unknown",
                "age_days": age_days(s.published, now),
            }
            for s in evidence[:MAX_EVIDENCE]
        ]
    shown = _verdicts_for(task, verdicts)
    if shown:
        packet["verdicts"] = [
            {"role": v.role, "verdict": v.verdict, "summary": clip(v.summary, NOTE_CHARS)}
            for v in shown[-MAX_VERDICTS:]
        ]
    if task.kind == "debate" and task.opener:
        opener = next((v for v in reversed(verdicts) if v.role == task.opener), None)
        if opener is not None:
            packet["opener"] = {
                "role": opener.role,
                "verdict": opener.verdict,
                "argument": clip(opener.summary, SUMMARY_CHARS),
            }
    if task.kind == "decompose":
        packet["rules"] = (
            "Propose sub-claims that each say something new, or atomic:true with a "
            "bedrock_reason. Search petri_cells first and link shared premises with existing_cell."
        )
    elif task.kind != "synthesize":
        packet["rules"] = _citation_rules(task)
    return packet


def _citation(c: Citation, source: Source | None, now: str) -> dict[str, Any]:
    published = source.published if source else None
    return {
        "source_id": c.source_id,
        "title": clip(source.title, 120) if source else None,
        "url": source.final_url if source else None,
        "published": published or "unknown",
        "age_days": age_days(published, now),
        "level": c.level,
        "stance": c.stance,
        "role": c.role,
        "quote": clip(c.quote, QUOTE_CHARS),
        "finding": clip(c.finding, NOTE_CHARS),
    } | _source_reads(c, source)


def _source_reads(c: Citation, source: Source | None) -> dict[str, str]:
    """For a quote with an elision, what the source says over the whole span it stands for."""
    words = clip(
        source_words(c.quote, source.text, c.match_start, c.match_end) if source else None, QUOTE_CHARS
    )
    return {"source_reads": words} if words else {}


def _verdicts_for(task: Task, verdicts: list[Verdict]) -> list[Verdict]:
    """Who sees the other roles' verdicts: leads, red team, evaluator and debaters see the iteration's."""
    if task.role in ("cell-lead", "evaluator", "red-team", "dependency-auditor") or task.kind == "debate":
        latest: dict[str, Verdict] = {}
        for v in verdicts:
            latest[v.role] = v
        return [v for v in latest.values() if v.role != task.role or task.kind == "debate"]
    return []


def _citation_rules(task: Task) -> str:
    role = ROLES[task.role]
    rules = [f"{'/'.join(sorted(r.verdicts))}: {r.describe()}" for r in role.citation_rules]
    text = (
        f"Verdicts: {', '.join(role.vocabulary)}. Cite only sources fetched with petri_fetch, "
        "quoting them verbatim (at least 20 characters)."
    )
    if rules:
        text += " Needs: " + "; ".join(rules) + "."
    if role.name == "evaluator":
        text += (
            f" validated/disproven need a citation at level ≤ {TERMINAL_MAX_LEVEL} on the deciding side "
            f"(levels: {', '.join(f'{k} {v}' for k, v in SOURCE_LEVELS.items())})."
        )
    return text
