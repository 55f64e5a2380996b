"""Acceptance: a whole run driven through the service with scripted role results."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from helpers import Clock, Driver, add_article, cite, debate_turn, passing, service

from petri_core import service as service_module
from petri_core.models import ClaimOut, TaskOut

ROOT = "Open-weight AI models will match frontier labs within a year"
A = "Open-weight models close the capability gap quickly"
A1 = "Benchmark gaps between open and closed models are measured in months"
A2 = "Training costs for fixed capability fall fast enough to let open labs catch up"
B = "Open labs can fund frontier-scale training runs"


def scenario_policy(source_id: str) -> Any:
    ok = passing(source_id)

    def policy(task: TaskOut, claim: ClaimOut) -> dict[str, Any]:
        cell = claim.context["cell"]
        text, iteration = cell["claim"], cell["iteration"]
        if task.kind == "decompose":
            if text == ROOT:
                return {
                    "atomic": False,
                    "children": [
                        {"text": A, "relation": "supports"},
                        {
                            "text": B,
                            "relation": "supports",
                            "atomic": True,
                            "bedrock_reason": "a funding fact",
                        },
                    ],
                }
            return {
                "atomic": False,
                "children": [
                    {"text": A1, "atomic": True, "bedrock_reason": "a measurement"},
                    {"text": A2, "relation": "assumes", "atomic": True, "bedrock_reason": "a cost series"},
                ],
            }
        if task.kind == "debate":
            return debate_turn(task)
        if text == A2 and task.role == "skeptic" and iteration == 1:
            return {
                "verdict": "CRITICAL_FLAW_FOUND",
                "summary": "contamination undermines the cost series",
                "citations": [cite(source_id, "critics", "contradicts", 4)],
            }
        if text == B and task.role == "investigator" and iteration < 4:
            return {"verdict": "NEEDS_MORE_EVIDENCE", "summary": "no funding data found"}
        if text == A and task.role == "investigator":
            return {
                "verdict": "EVIDENCE_SUFFICIENT",
                "summary": "weak sources only",
                "citations": [cite(source_id, "trail", level=5), cite(source_id, "cost", level=6)],
            }
        if text == A and task.role == "champion":
            return {
                "verdict": "STRONG_CASE",
                "summary": "blog posts agree",
                "citations": [cite(source_id, "labs", level=5)],
            }
        if text == A and task.role == "red-team":
            return {"verdict": "NO_CONTRADICTING_EVIDENCE", "summary": "nothing against"}
        return ok[task.role]

    return policy


def states_of(svc: Any, cell_id: str) -> list[str]:
    return [e["payload"]["to"] for e in svc.log(cell_id=cell_id, types=["cell_state_changed"])]


def test_whole_run_reaches_a_root_verdict_through_iteration_breaker_and_human_requeue(tmp_path: Path) -> None:
    svc = service(tmp_path, Clock())
    source = add_article(svc)
    start = svc.start(ROOT, preset="standard")
    assert start.run_id == "owa"
    assert [t.task_id for t in start.tasks] == ["owa-0-01.d1.decomposer"]
    driver = Driver(svc, scenario_policy(source.source_id))

    driver.drain(start.run_id)

    by_text = {c.text: c for c in svc.open().cells(start.run_id)}
    root, a, a1, a2, b = (by_text[t] for t in (ROOT, A, A1, A2, B))
    assert (root.cell_id, a.cell_id, b.cell_id, a1.cell_id, a2.cell_id) == (
        "owa-0-01",
        "owa-1-01",
        "owa-1-02",
        "owa-2-01",
        "owa-2-02",
    )
    # B hit the circuit breaker and waits for a human; the rest of the tree cannot finish above it.
    assert b.state == "stalled" and b.iteration == 3
    assert "no convergence after 3 iteration(s)" in (b.stall_reason or "")
    assert "decomposition audit" in (b.stall_reason or "")
    assert a1.state == "validated" and a1.iteration == 1
    assert a2.state == "validated" and a2.iteration == 2
    assert a.state == "inconclusive"
    assert "terminal source rule" in (a.final_reason or "") and "level 5" in (a.final_reason or "")
    assert root.state == "waiting"
    nxt = svc.next(start.run_id)
    assert nxt.tasks == [] and not nxt.done
    assert [h.cell_id for h in nxt.needs_human] == [b.cell_id]
    assert f"petri resolve {b.cell_id} --requeue" in nxt.needs_human[0].command

    # The weakest link's objection became A2's directive for iteration 2.
    a2_converge = svc.log(cell_id=a2.cell_id, types=["convergence_checked"])
    assert [e["payload"]["outcome"] for e in a2_converge] == ["not_converged", "converged"]
    assert a2_converge[0]["payload"]["weakest"] == "skeptic"
    assert "contamination undermines" in a2_converge[0]["payload"]["directive"]
    assert states_of(svc, a2.cell_id) == [
        "research",
        "critique",
        "debate",
        "converging",
        "synthesis",
        "research",
        "critique",
        "converging",  # skeptic and champion now agree: no debate to hold
        "red_team",
        "evaluation",
        "validated",
    ]

    out = svc.resolve(b.cell_id, "requeue", guidance="look for public funding rounds")
    assert out.cell_state == "research"
    driver.drain(start.run_id)

    final = {c.cell_id: c for c in svc.open().cells(start.run_id)}
    assert final[b.cell_id].state == "validated" and final[b.cell_id].iteration == 4
    assert final[b.cell_id].cycle_start == 4
    assert final[root.cell_id].state == "validated"
    assert states_of(svc, b.cell_id) == (  # skeptic and champion agree throughout: no debates
        ["research", "critique", "converging", "synthesis"] * 2
        + ["research", "critique", "converging", "stalled"]
        + ["research", "critique", "converging", "red_team", "evaluation", "validated"]
    )
    # Parents became eligible only once their children were final.
    log = svc.log()
    seq_of = {
        (e["cell_id"], e["payload"].get("to")): e["seq"] for e in log if e["type"] == "cell_state_changed"
    }
    assert seq_of[(a.cell_id, "research")] > max(
        seq_of[(a1.cell_id, "validated")], seq_of[(a2.cell_id, "validated")]
    )
    assert seq_of[(root.cell_id, "research")] > seq_of[(b.cell_id, "validated")]
    assert seq_of[(root.cell_id, "research")] > seq_of[(a.cell_id, "inconclusive")]

    status = svc.status(start.run_id)["runs"][0]
    assert status["state"] == "complete" and status["root_state"] == "validated"
    assert status["cells"] == {"validated": 4, "inconclusive": 1}
    types = Counter(e["type"] for e in log)
    assert types["run_started"] == 1 and types["cell_created"] == 5 and types["edge_added"] == 4
    assert types["human_decided"] == 1 and types["task_stalled"] == 0
    assert types["task_created"] == types["task_completed"] == len(driver.submitted)
    assert [e["payload"]["to"] for e in log if e["type"] == "run_state_changed"] == [
        "decomposing",
        "growing",
        "complete",
    ]
    assert svc.verify().ok


def scenario_log(tmp_path: Path) -> list[tuple[Any, ...]]:
    """The scenario's whole run (with the human requeue and a halt and resume), as its log reads
    without the parts chosen at random (leases)."""
    svc = service(tmp_path, Clock())
    source = add_article(svc)
    run_id = svc.start(ROOT, preset="standard").run_id
    driver = Driver(svc, scenario_policy(source.source_id))
    driver.drain(run_id)
    svc.halt(run_id)
    svc.halt(run_id, resume=True)
    stalled = [c.cell_id for c in svc.open().cells(run_id) if c.state == "stalled"]
    svc.resolve(stalled[0], "requeue", guidance="look for public funding rounds")
    driver.drain(run_id)
    random_parts = {"lease"}
    return [
        (
            e["type"],
            e["cell_id"],
            e["task_id"],
            {k: v for k, v in e["payload"].items() if k not in random_parts},
        )
        for e in svc.log()
    ]


def test_a_run_checked_for_progress_after_every_commit_writes_the_same_log(
    tmp_path: Path, monkeypatch: Any
) -> None:
    # A commit checks its run's progress only when an event can change it (`_moves_run`);
    # checking after every commit must find nothing more.
    skipping = scenario_log(tmp_path / "skipping")
    monkeypatch.setattr(service_module, "_moves_run", lambda event: True)
    checking = scenario_log(tmp_path / "checking")
    assert skipping == checking
    assert [p["to"] for t, _, _, p in skipping if t == "run_state_changed"] == [
        "decomposing",
        "growing",
        "halted",
        "growing",
        "complete",
    ]
