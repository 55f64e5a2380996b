"""Every rejection names the fix, and a rejected command changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Clock, add_article, cite, passing, service

from petri_core.errors import Rejected
from petri_core.service import Service


def snapshot(svc: Service) -> tuple[Any, ...]:
    st = svc.open()
    tables = ("events", "tasks", "cells", "verdicts", "citations", "runs", "edges")
    return tuple(tuple(tuple(r) for r in st.conn.execute(f"SELECT * FROM {t} ORDER BY 1")) for t in tables)


@pytest.fixture
def ready(tmp_path: Path) -> tuple[Service, str, str, str]:
    """A quick run whose investigator task is claimed; returns (svc, task_id, lease, source_id)."""
    svc = service(tmp_path, Clock())
    source = add_article(svc)
    run = svc.start("Heat pumps cut household heating emissions", preset="quick", max_depth=0)
    task_id = run.tasks[0].task_id
    claim = svc.claim(task_id, "petri-investigator")
    return svc, task_id, claim.lease, source.source_id


def rejected(svc: Service, call: Callable[[], Any], *fragments: str) -> str:
    before = snapshot(svc)
    with pytest.raises(Rejected) as err:
        call()
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "; " in message, "a rejection says what is wrong; then what to do instead"
    assert snapshot(svc) == before, "a rejected command changed the dish"
    return message


def test_verdict_outside_the_roles_vocabulary(ready: tuple[Service, str, str, str]) -> None:
    svc, task, lease, _ = ready
    rejected(
        svc,
        lambda: svc.submit(task, lease, {"verdict": "STRONG_CASE", "summary": "x"}),
        "verdict STRONG_CASE is not in the investigator's vocabulary",
        "use one of: EVIDENCE_SUFFICIENT, EVIDENCE_CONTRADICTS, NEEDS_MORE_EVIDENCE, CANNOT_DETERMINE",
    )


def test_a_pass_without_the_citations_it_needs(ready: tuple[Service, str, str, str]) -> None:
    svc, task, lease, src = ready
    rejected(
        svc,
        lambda: svc.submit(
            task,
            lease,
            {"verdict": "EVIDENCE_SUFFICIENT", "summary": "trust me", "citations": [cite(src, "trail")]},
        ),
        "needs at least 2 citations (got 1",
        "fetch sources with petri_fetch",
    )


def test_a_quote_that_is_not_in_the_source_comes_back_with_the_closest_passage(
    ready: tuple[Service, str, str, str],
) -> None:
    svc, task, lease, src = ready
    bad = {**cite(src, "trail"), "quote": "open-weight models lead the best proprietary models by a year"}
    message = rejected(
        svc,
        lambda: svc.submit(
            task,
            lease,
            {"verdict": "EVIDENCE_SUFFICIENT", "summary": "s", "citations": [bad, cite(src, "labs")]},
        ),
        "citation 1: the quote is not in source",
        "the closest passage is",
        "quote the source verbatim",
    )
    assert "trail the best proprietary models" in message


def test_a_citation_of_a_source_never_fetched(ready: tuple[Service, str, str, str]) -> None:
    svc, task, lease, src = ready
    fake = {**cite(src, "trail"), "source_id": "src-made-up"}
    rejected(
        svc,
        lambda: svc.submit(
            task,
            lease,
            {"verdict": "EVIDENCE_SUFFICIENT", "summary": "s", "citations": [fake, cite(src, "labs")]},
        ),
        "no source 'src-made-up': only fetched pages can be cited",
        "petri_fetch",
    )


def test_a_too_short_quote(ready: tuple[Service, str, str, str]) -> None:
    svc, task, lease, src = ready
    short = {**cite(src, "trail"), "quote": "six months"}
    rejected(
        svc,
        lambda: svc.submit(
            task,
            lease,
            {"verdict": "EVIDENCE_SUFFICIENT", "summary": "s", "citations": [short, cite(src, "labs")]},
        ),
        "shorter than 20 characters",
    )


def test_a_malformed_result_names_the_expected_fields(ready: tuple[Service, str, str, str]) -> None:
    svc, task, lease, _ = ready
    rejected(
        svc,
        lambda: svc.submit(task, lease, {"verdict": "EVIDENCE_SUFFICIENT"}),
        "result does not match the investigator schema",
        "summary",
        "fields verdict, summary, citations",
    )
    rejected(
        svc,
        lambda: svc.submit(task, lease, {"verdict": "X", "summary": "s", "confidence": 0.9}),
        "confidence: Extra inputs are not permitted",
    )
    rejected(svc, lambda: svc.submit(task, lease, "EVIDENCE_SUFFICIENT"), "result must be a JSON object")


def test_a_stale_lease(ready: tuple[Service, str, str, str]) -> None:
    svc, task, _, src = ready
    rejected(
        svc,
        lambda: svc.submit(task, "1.0000", passing(src)["investigator"]),
        "lease '1.0000' is stale",
        "call petri_next",
    )


def test_a_submission_or_heartbeat_before_any_claim_says_to_claim_first(tmp_path: Path) -> None:
    clock = Clock()
    svc = service(tmp_path, clock)
    source = add_article(svc)
    task = (
        svc.start("Heat pumps cut household heating emissions", preset="quick", max_depth=0).tasks[0].task_id
    )
    for call in (
        lambda: svc.submit(task, "1.made-up", passing(source.source_id)["investigator"]),
        lambda: svc.heartbeat(task, "1.made-up"),
    ):
        rejected(
            svc,
            call,
            f"task {task} is not claimed; lease '1.made-up' was never issued for it",
            f"claim it with petri_claim(task_id='{task}', worker) and use the lease it returns",
        )
    lease = svc.claim(task, "petri-investigator").lease
    clock.advance(3600)
    svc.next()  # reaps the expired lease: the task is ready again, and was claimed once
    message = rejected(svc, lambda: svc.heartbeat(task, lease), f"lease '{lease}' is stale")
    assert "was returned to the queue" in message


def test_an_unknown_task(ready: tuple[Service, str, str, str]) -> None:
    svc, _, lease, src = ready
    rejected(
        svc,
        lambda: svc.submit("nope.i1.skeptic", lease, passing(src)["skeptic"]),
        "no task 'nope.i1.skeptic'",
        "take task ids from petri_next",
    )
    rejected(svc, lambda: svc.claim("nope.i1.skeptic", "w"), "no task")


def test_a_task_dispatched_to_the_wrong_agent(tmp_path: Path) -> None:
    svc = service(tmp_path)
    run = svc.start("Heat pumps cut household heating emissions", preset="quick", max_depth=0)
    rejected(
        svc,
        lambda: svc.claim(run.tasks[0].task_id, "petri-skeptic"),
        "is for petri-investigator, not petri-skeptic",
        "dispatch it to the petri-investigator agent",
    )


def test_claiming_a_task_already_leased(ready: tuple[Service, str, str, str]) -> None:
    svc, task, _, _ = ready
    rejected(svc, lambda: svc.claim(task, "petri-investigator"), "is leased by petri-investigator until")


def test_submitting_a_task_whose_cell_moved_on(tmp_path: Path) -> None:
    clock = Clock()
    svc = service(tmp_path, clock)
    source = add_article(svc)
    run = svc.start("Heat pumps cut household heating emissions", preset="quick", max_depth=0, attempt_cap=5)
    investigate = run.tasks[0].task_id
    claim = svc.claim(investigate, "petri-investigator")
    svc.submit(investigate, claim.lease, passing(source.source_id)["investigator"])
    skeptic = svc.next().tasks[0].task_id
    lease = svc.claim(skeptic, "petri-skeptic").lease
    cell = svc.open().task(skeptic).cell_id
    # A human stalls nothing here; a needs-human failure of another task would. Close the cell instead:
    svc.fail(skeptic, lease, "cannot reach any source", retryable=False)
    svc.resolve(cell, "close", verdict="inconclusive", reason="no time")
    rejected(
        svc,
        lambda: svc.submit(skeptic, lease, passing(source.source_id)["skeptic"]),
        f"task {skeptic} is stalled",
        "call petri_next",
    )


def test_start_rejects_bad_input(tmp_path: Path) -> None:
    svc = service(tmp_path)
    with pytest.raises(Rejected, match="the claim is empty"):
        svc.start("   ")
    with pytest.raises(Rejected, match="unknown preset 'fast'; use one of: thorough, standard, quick"):
        svc.start("A claim", preset="fast")
    with pytest.raises(Rejected, match="at most 1000 are allowed"):
        svc.start("x " * 600)
    with pytest.raises(Rejected, match="unknown settings"):
        svc.start("A claim", child_caps=3)
    with pytest.raises(Rejected) as wrong:
        svc.start("A claim", max_depth=-3, lease_seconds=10, child_cap=True)  # type: ignore[arg-type]
    assert str(wrong.value) == (
        "out of range: child_cap True, max_depth -3, lease_seconds 10; whole numbers within child_cap 1-12, "
        "max_depth 0-6, max_iterations 1-10, attempt_cap 1-10, lease_seconds 30-86400"
    )
    started = svc.start("A claim", max_depth=0, lease_seconds=30).run_id
    assert [run["run_id"] for run in svc.status()["runs"]] == [started]  # the refused ones left nothing


def test_resolve_in_the_wrong_state_names_the_allowed_moves(ready: tuple[Service, str, str, str]) -> None:
    svc, task, _, _ = ready
    cell = svc.open().task(task).cell_id
    rejected(
        svc,
        lambda: svc.resolve(cell, "requeue"),
        "cannot requeue a cell in state `research`",
        "nothing a human can do while agents work on it",
    )
    rejected(svc, lambda: svc.resolve(cell, "split", children=["a", "b"]), "split only a stalled cell")
    rejected(svc, lambda: svc.resolve(cell, "acknowledge"), "is not flagged")
