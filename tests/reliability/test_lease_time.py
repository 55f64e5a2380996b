"""Leases under time: leases that expire mid-work, on the controllable clock.

test_leases.py proves the single rules (expiry returns the task, a stale or expired lease is
refused, heartbeats extend). Here many tasks are in flight while the clock jumps: some workers
heartbeat, some finish in time, some are late. Every late submission is rejected with a message
that says what happened and what to do (also at the MCP door), changes nothing, and every task is
done exactly once, by the worker whose lease was current (or, past the attempt cap, parked for a
human, who requeues the cell).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from helpers import Clock, add_article, passing, service
from mcp import Client

from petri_core.errors import Rejected
from petri_core.mcp_server import build
from petri_core.service import Service

from . import sizes

LEASE_S = 60


def leaf_run(svc: Service, k: int) -> str:
    """A research-stage root (max_depth 0) whose quick roles run in parallel waves."""
    run = svc.start(
        f"Claim number {k} about measured outcomes holds",
        preset="quick",
        max_depth=0,
        lease_seconds=LEASE_S,
        attempt_cap=10,
    )
    return run.run_id


def test_a_submission_at_the_exact_expiry_is_late_and_a_microsecond_before_is_in_time(
    tmp_path: Path,
) -> None:
    clock = Clock()
    svc = service(tmp_path, clock)
    ok = passing(add_article(svc).source_id)
    run = leaf_run(svc, 1)
    task = svc.next(run).tasks[0]
    claim = svc.claim(task.task_id, "w1")
    clock.advance(LEASE_S)  # exactly at expires_at: the lease is over
    before = svc.log()
    with pytest.raises(
        Rejected, match=r"your lease on .* expired at .*claim it again if petri_next offers it"
    ):
        svc.submit(task.task_id, claim.lease, ok[task.role])
    assert svc.log() == before
    again = svc.claim(task.task_id, "w2")
    clock.advance(LEASE_S - 0.000001)
    assert svc.submit(task.task_id, again.lease, ok[task.role]).accepted


def test_a_heartbeat_after_expiry_is_refused_and_the_task_is_redone_once(tmp_path: Path) -> None:
    clock = Clock()
    svc = service(tmp_path, clock)
    ok = passing(add_article(svc).source_id)
    run = leaf_run(svc, 1)
    task = svc.next(run).tasks[0]
    first = svc.claim(task.task_id, "slow")
    clock.advance(LEASE_S + 1)
    with pytest.raises(Rejected, match="expired at"):
        svc.heartbeat(task.task_id, first.lease)
    assert [t.task_id for t in svc.next(run).tasks] == [task.task_id]  # reaped: attempt 2
    with pytest.raises(Rejected, match="was returned to the queue; stop work on this task"):
        svc.heartbeat(task.task_id, first.lease)
    second = svc.claim(task.task_id, "fast")
    with pytest.raises(Rejected, match=r"is stale: task .* is now leased to fast"):
        svc.submit(task.task_id, first.lease, ok[task.role])
    svc.submit(task.task_id, second.lease, ok[task.role])
    with pytest.raises(Rejected, match="no longer valid"):
        svc.submit(task.task_id, first.lease, ok[task.role])
    submitted = [e for e in svc.log(types=["task_submitted"]) if e["task_id"] == task.task_id]
    assert len(submitted) == 1 and submitted[0]["actor"] == "worker:fast"
    assert svc.open().task(task.task_id).attempt == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_late_submission_through_the_mcp_door_is_rejected_with_the_fix(tmp_path: Path) -> None:
    clock = Clock()
    svc = service(tmp_path, clock)
    ok = passing(add_article(svc).source_id)
    run = leaf_run(svc, 1)
    async with Client(build(svc), mode="legacy") as client:
        task = (await client.call_tool("petri_next", {"run_id": run})).structured_content["tasks"][0]  # type: ignore[index]
        claim = await client.call_tool("petri_claim", {"task_id": task["task_id"], "worker": task["agent"]})
        lease = claim.structured_content["lease"]  # type: ignore[index]
        clock.advance(LEASE_S + 5)
        before = svc.log()
        late = await client.call_tool(
            "petri_submit", {"task_id": task["task_id"], "lease": lease, "result": ok[task["role"]]}
        )
    assert late.is_error
    text = late.content[0].text  # type: ignore[union-attr]
    assert text.startswith(f"rejected: your lease on {task['task_id']} expired at "), text
    assert "claim it again if petri_next offers it" in text
    assert svc.log() == before


def schedule(
    svc: Service, clock: Clock, ok: dict[str, dict[str, object]], rng: random.Random, runs: list[str]
) -> int:
    """Claim every ready task, then let time pass in random jumps while workers act at random.

    Returns how many late submissions or heartbeats were refused. Each worker either heartbeats, submits, or
    stalls; a stalled worker comes back later and tries to submit with its old lease.
    """
    late = 0
    held: dict[str, tuple[str, str, str]] = {}  # task -> (lease, worker, role)
    stale: list[tuple[str, str, str]] = []  # (task, lease, role) of workers that went quiet
    for step in range(200):
        for task in [t for run in runs for t in svc.next(run, limit=50).tasks]:
            worker = f"w{step}-{task.task_id}"
            held[task.task_id] = (svc.claim(task.task_id, worker).lease, worker, task.role)
        if not held and not stale:
            parked = [h.cell_id for run in runs for h in svc.next(run).needs_human]
            if not parked:
                return late
            for cell_id in parked:  # the attempt cap parked a task: the human sends the cell back
                svc.resolve(cell_id, "requeue", guidance="try again")
        clock.advance(rng.choice([5, 20, 40, LEASE_S + 1]))
        for task_id, (lease, _worker, role) in list(held.items()):
            action = rng.choice(["submit", "heartbeat", "quiet"])
            try:
                if action == "submit":
                    svc.submit(task_id, lease, ok[role])
                    del held[task_id]
                elif action == "heartbeat":
                    svc.heartbeat(task_id, lease)
                else:
                    stale.append((task_id, lease, role))
                    del held[task_id]
            except Rejected as exc:  # the lease ran out before the worker acted
                assert (
                    "expired at" in str(exc) or "is stale" in str(exc) or "returned to the queue" in str(exc)
                )
                late += 1
                del held[task_id]
        if stale and rng.random() < 0.5:  # a quiet worker wakes up and submits, far too late
            task_id, lease, role = stale.pop(rng.randrange(len(stale)))
            before = svc.open().event_count()
            try:
                svc.submit(task_id, lease, ok[role])
            except Rejected as exc:
                assert "lease" in str(exc) and ("petri_next" in str(exc) or "claim it again" in str(exc))
                assert svc.open().event_count() == before
                late += 1
    raise AssertionError("the runs did not settle")


@pytest.mark.parametrize("trials", sizes(3, 40))
def test_leases_expiring_mid_work_redo_each_task_exactly_once(trials: int, tmp_path: Path) -> None:
    late = released = 0
    for trial in range(trials):
        clock = Clock()
        svc = Service(tmp_path / f"t{trial}" / ".petri", clock=clock)
        ok = passing(add_article(svc).source_id)
        runs = [leaf_run(svc, k) for k in range(1, 4)]
        late += schedule(svc, clock, ok, random.Random(trial), runs)
        events = svc.log()
        created = Counter(e["task_id"] for e in events if e["type"] == "task_created")
        submitted = Counter(e["task_id"] for e in events if e["type"] == "task_submitted")
        completed = Counter(e["task_id"] for e in events if e["type"] == "task_completed")
        parked = {
            t.task_id for r in runs for t in svc.open().tasks_of_cell(f"{r}-0-01") if t.status == "stalled"
        }
        assert submitted == completed and set(completed.values()) == {1}
        assert set(created) == set(completed) | parked and not parked & set(completed)
        # Each submission came from the lease that was current: the last claim of that task.
        last_claim = {e["task_id"]: e["actor"] for e in events if e["type"] == "task_claimed"}
        assert all(e["actor"] == last_claim[e["task_id"]] for e in events if e["type"] == "task_submitted")
        released += sum(e["type"] == "task_released" for e in events)
        assert all(svc.status(r)["runs"][0]["state"] == "complete" for r in runs)
        assert svc.verify().ok
    assert late > 0 and released > 0
