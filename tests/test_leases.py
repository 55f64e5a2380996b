"""Leases: expiry, fencing, the attempt cap, heartbeats, failures, idempotent resubmission."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Clock, add_article, passing, service

from petri_core.errors import Rejected
from petri_core.service import Service


def started(tmp_path: Path, **settings: int) -> tuple[Service, Clock, str]:
    clock = Clock()
    svc = service(tmp_path, clock)
    run = svc.start(
        "Solar panels pay back their embodied energy within four years",
        preset="quick",
        max_depth=0,
        lease_seconds=60,
        **settings,
    )
    return svc, clock, run.tasks[0].task_id


def test_a_leaf_root_starts_at_research_without_a_decomposer(tmp_path: Path) -> None:
    svc, _, task_id = started(tmp_path)
    assert task_id == "spp-0-01.i1.investigator"
    assert svc.open().cell(svc.open().task(task_id).cell_id).leaf_reason == "depth cap"


def test_expired_lease_returns_the_task_with_attempt_plus_one(tmp_path: Path) -> None:
    svc, clock, task_id = started(tmp_path)
    svc.claim(task_id, "w1")
    clock.advance(61)
    nxt = svc.next()
    assert [t.task_id for t in nxt.tasks] == [task_id]
    task = svc.open().task(task_id)
    assert (task.status, task.attempt, task.lease) == ("ready", 2, None)
    released = svc.log(types=["task_released"])
    assert released[-1]["payload"]["cause"] == "lease expired"


def test_a_stale_lease_is_rejected_after_the_task_is_leased_again(tmp_path: Path) -> None:
    svc, clock, task_id = started(tmp_path)
    source = add_article(svc)
    first = svc.claim(task_id, "w1")
    clock.advance(61)
    second = svc.claim(task_id, "w2")
    assert second.lease.split(".")[0] == "2"  # the fencing token grew
    before = len(svc.log())
    with pytest.raises(Rejected, match=r"is stale: task .* is now leased to w2"):
        svc.submit(task_id, first.lease, passing(source.source_id)["investigator"])
    assert len(svc.log()) == before
    out = svc.submit(task_id, second.lease, passing(source.source_id)["investigator"])
    assert out.accepted


def test_a_late_submission_after_expiry_is_rejected_and_changes_nothing(tmp_path: Path) -> None:
    svc, clock, task_id = started(tmp_path)
    source = add_article(svc)
    claim = svc.claim(task_id, "w1")
    clock.advance(61)
    before = svc.log()
    with pytest.raises(Rejected, match="expired at"):
        svc.submit(task_id, claim.lease, passing(source.source_id)["investigator"])
    assert svc.log() == before


def test_the_attempt_cap_parks_the_task_and_its_cell_for_a_human(tmp_path: Path) -> None:
    svc, clock, task_id = started(tmp_path, attempt_cap=2)
    svc.claim(task_id, "w1")
    clock.advance(61)
    svc.claim(task_id, "w2")
    clock.advance(61)
    nxt = svc.next()
    task = svc.open().task(task_id)
    assert task.status == "stalled"
    cell = svc.open().cell(task.cell_id)
    assert cell.state == "stalled" and cell.stalled_from == "research"
    assert "attempt cap 2 reached" in (cell.stall_reason or "")
    assert [h.cell_id for h in nxt.needs_human] == [cell.cell_id]
    out = svc.resolve(cell.cell_id, "requeue", guidance="try the IEA report")
    assert out.cell_state == "research"
    assert svc.open().cell(cell.cell_id).directive == "try the IEA report"
    assert [t.task_id for t in svc.next().tasks] == [f"{cell.cell_id}.i2.investigator"]


def test_resubmitting_the_same_result_returns_the_original_outcome_without_writing(tmp_path: Path) -> None:
    svc, _, task_id = started(tmp_path)
    source = add_article(svc)
    claim = svc.claim(task_id, "w1")
    result = passing(source.source_id)["investigator"]
    first = svc.submit(task_id, claim.lease, result)
    events = len(svc.log())
    again = svc.submit(task_id, claim.lease, dict(result))
    assert again == first
    assert len(svc.log()) == events
    with pytest.raises(Rejected, match="already submitted with a different result"):
        svc.submit(task_id, claim.lease, {**result, "summary": "changed my mind"})
    assert len(svc.log()) == events


def test_heartbeat_extends_a_valid_lease_and_refuses_a_stale_one(tmp_path: Path) -> None:
    svc, clock, task_id = started(tmp_path)
    claim = svc.claim(task_id, "w1")
    clock.advance(50)
    beat = svc.heartbeat(task_id, claim.lease)
    assert beat.expires_at > claim.expires_at
    clock.advance(50)
    assert svc.next().tasks == []  # still leased thanks to the heartbeat
    with pytest.raises(Rejected, match="stale"):
        svc.heartbeat(task_id, "1.deadbeef")


def test_a_retryable_failure_backs_off_then_offers_the_task_again(tmp_path: Path) -> None:
    svc, clock, task_id = started(tmp_path)
    claim = svc.claim(task_id, "w1")
    out = svc.fail(task_id, claim.lease, "rate limited", retryable=True, retry_after=120)
    assert (out.task_status, out.attempt) == ("ready", 2)
    assert svc.next().tasks == []
    assert "wait to be retried" in svc.next().hint
    with pytest.raises(Rejected, match="waits for a retry"):
        svc.claim(task_id, "w2")
    clock.advance(121)
    assert [t.task_id for t in svc.next().tasks] == [task_id]


def test_default_backoff_grows_with_the_attempt(tmp_path: Path) -> None:
    svc, clock, task_id = started(tmp_path, attempt_cap=5)
    waits = []
    for _ in range(3):
        claim = svc.claim(task_id, "w")
        out = svc.fail(task_id, claim.lease, "timeout")
        assert out.ready_at is not None
        waits.append(out.ready_at)
        clock.now = clock.now.fromisoformat(out.ready_at)
    assert waits == sorted(waits) and len(set(waits)) == 3


def test_a_needs_human_failure_parks_the_cell_at_once(tmp_path: Path) -> None:
    svc, _, task_id = started(tmp_path)
    claim = svc.claim(task_id, "w1")
    out = svc.fail(task_id, claim.lease, "the only source is behind a paywall", retryable=False)
    assert (out.task_status, out.cell_state) == ("stalled", "stalled")
    assert "petri resolve" in out.hint


def test_a_halted_run_offers_no_tasks_until_resumed(tmp_path: Path) -> None:
    svc, _, task_id = started(tmp_path)
    run_id = svc.open().task(task_id).run_id
    assert svc.halt(run_id) == "halted"
    assert svc.next().tasks == []
    with pytest.raises(Rejected, match="halted"):
        svc.claim(task_id, "w1")
    with pytest.raises(Rejected, match="cannot halt a run in state `halted`"):
        svc.halt(run_id)
    assert svc.halt(run_id, resume=True) == "growing"
    assert [t.task_id for t in svc.next().tasks] == [task_id]
