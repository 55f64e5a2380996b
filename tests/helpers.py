"""Test helpers: a controllable clock, fixture sources, and a driver that plays roles by policy."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from petri_core.models import ClaimOut, Source, TaskOut
from petri_core.service import Service
from petri_core.store import EVENTS_DDL

ARTICLE = (
    "Independent benchmark runs show that open-weight models trail the best proprietary models by about "
    "six months on standard reasoning suites.\n\n"
    "The cost of training a model of fixed capability has fallen roughly tenfold every two years since 2020.\n\n"
    "Several labs released open weights for models within 3 points of the frontier on the MMLU benchmark.\n\n"
    "Critics note that benchmark contamination makes some of these comparisons unreliable."
)
QUOTES = {
    "trail": "open-weight models trail the best proprietary models by about six months",
    "cost": "has fallen roughly tenfold every two years since 2020",
    "labs": "Several labs released open weights for models within 3 points of the frontier",
    "critics": "benchmark contamination makes some of these comparisons unreliable",
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def service(tmp_path: Path, clock: Clock | None = None) -> Service:
    return Service(tmp_path / ".petri", clock=clock or Clock())


def add_article(
    svc: Service,
    text: str = ARTICLE,
    url: str = "https://example.org/report",
    published: str | None = "2026-09-01",
) -> Source:
    import hashlib

    return svc.add_source(
        url=url,
        final_url=url,
        status=200,
        content_type="text/html",
        fetched_at=svc.now(),
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        title="A report",
        author="A. Author",
        published=published,
        text=text,
    )


def cite(source_id: str, key: str, stance: str = "supports", level: int = 2) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "quote": QUOTES[key],
        "stance": stance,
        "level": level,
        "finding": f"finding about {key}",
    }


Policy = Callable[[TaskOut, ClaimOut], dict[str, Any]]


@dataclass
class Driver:
    """Plays every task the run offers, through the service, until none is ready."""

    svc: Service
    policy: Policy
    submitted: list[str] = field(default_factory=list)

    def drain(self, run_id: str, max_rounds: int = 200) -> None:
        for _ in range(max_rounds):
            nxt = self.svc.next(run_id, limit=50)
            if not nxt.tasks:
                return
            for task in nxt.tasks:
                claim = self.svc.claim(task.task_id, task.agent)
                self.svc.submit(task.task_id, claim.lease, self.policy(task, claim))
                self.submitted.append(task.task_id)
        raise AssertionError("run did not settle")


def passing(source_id: str) -> dict[str, dict[str, Any]]:
    """A result per role that passes convergence with verified level-2 citations."""
    return {
        "socratic": {"verdict": "CLARIFIED", "summary": "terms defined", "questions": ["what is frontier?"]},
        "investigator": {
            "verdict": "EVIDENCE_SUFFICIENT",
            "summary": "two primary sources agree",
            "citations": [cite(source_id, "trail"), cite(source_id, "labs")],
        },
        "freshness-checker": {"verdict": "EVIDENCE_CURRENT", "summary": "sources from 2026"},
        "dependency-auditor": {"verdict": "DEPENDENCIES_CLEAN", "summary": "no circularity"},
        "skeptic": {"verdict": "ARGUMENT_WITHSTANDS_CRITIQUE", "summary": "objections answered"},
        "champion": {"verdict": "STRONG_CASE", "summary": "strong", "citations": [cite(source_id, "labs")]},
        "pragmatist": {"verdict": "DIRECTIONALLY_CORRECT", "summary": "matters in practice"},
        "simplifier": {"verdict": "APPROPRIATELY_SCOPED", "summary": "scoped"},
        "triage": {"verdict": "HIGH_VALUE", "summary": "informs a decision"},
        "impact-assessor": {"verdict": "CRITICAL_PATH", "summary": "load-bearing"},
        "cell-lead": {"summary": "summary of the iteration", "directive": "address the weakest link"},
        "red-team": {
            "verdict": "WEAK_DISPROVAL_CASE",
            "summary": "contamination caveat",
            "citations": [cite(source_id, "critics", "contradicts", 4)],
        },
        "evaluator": {"verdict": "EVIDENCE_CONFIRMS", "summary": "confirmed"},
    }


def debate_turn(task: TaskOut) -> dict[str, Any]:
    return {"response": f"{task.role} answers the argument"}


#: The triggers that keep the event log append-only.
APPEND_ONLY_TRIGGERS = ("events_no_update", "events_no_delete")


@contextmanager
def raw(svc: Service) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the dish file, bypassing Petri entirely (autocommit)."""
    with closing(sqlite3.connect(svc.dish / "petri.db", isolation_level=None)) as conn:
        yield conn


@contextmanager
def without_triggers(svc: Service) -> Iterator[sqlite3.Connection]:
    """Drop the append-only triggers, let the caller tamper, then put the triggers back."""
    with raw(svc) as conn:
        for name in APPEND_ONLY_TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        yield conn
        for ddl in EVENTS_DDL:
            if "CREATE TRIGGER" in ddl:
                conn.execute(ddl)


def free_port() -> int:
    """A loopback port nothing listens on (bound and released; for a server to start, or to be refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
