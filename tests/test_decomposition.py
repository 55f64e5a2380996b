"""Decomposition: caps in code, the duplicate guard, shared premises, cycles, approval and splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import Clock, service

from petri_core.errors import Rejected
from petri_core.service import Service

ROOT = "Remote work raises software team productivity"


def decompose(svc: Service, task_id: str, result: dict[str, Any]) -> Any:
    """Submit a decomposition, claiming the task first unless it is already leased (a resubmission)."""
    task = svc.open().task(task_id)
    lease = task.lease if task.status == "leased" else svc.claim(task_id, "petri-decomposer").lease
    assert lease is not None
    return svc.submit(task_id, lease, result)


def child(text: str, **extra: Any) -> dict[str, Any]:
    return {"text": text, "relation": "supports", **extra}


def test_the_per_parent_child_cap_is_enforced(tmp_path: Path) -> None:
    svc = service(tmp_path)
    run = svc.start(ROOT, child_cap=2)
    with pytest.raises(Rejected, match="3 children proposed for rwr-0-01; at most 2 are allowed"):
        decompose(
            svc,
            run.tasks[0].task_id,
            {
                "atomic": False,
                "children": [
                    child("Developers report fewer interruptions at home"),
                    child("Commuting time is returned to the working day"),
                    child("Asynchronous review speeds up merges"),
                ],
            },
        )


def test_a_child_restating_its_parent_or_a_sibling_is_refused(tmp_path: Path) -> None:
    svc = service(tmp_path)
    task = svc.start(ROOT).tasks[0].task_id
    with pytest.raises(Rejected, match="child 1 restates its parent claim"):
        decompose(
            svc,
            task,
            {"atomic": False, "children": [child("Remote work raises the productivity of software teams")]},
        )
    with pytest.raises(Rejected, match="child 2 restates a sibling"):
        decompose(
            svc,
            task,
            {
                "atomic": False,
                "children": [
                    child("Developers report fewer interruptions at home"),
                    child("At home developers report fewer interruptions"),
                ],
            },
        )


def test_a_duplicate_of_an_existing_cell_must_be_linked_instead(tmp_path: Path) -> None:
    svc = service(tmp_path)
    first = svc.start("Remote work lowers office costs for firms")
    decompose(
        svc,
        first.tasks[0].task_id,
        {
            "atomic": False,
            "children": [
                child(
                    "Developers report fewer interruptions at home", atomic=True, bedrock_reason="survey data"
                )
            ],
        },
    )
    shared = svc.open().cells(first.run_id)[1]
    second = svc.start(ROOT)
    with pytest.raises(
        Rejected, match=f"duplicates existing cell {shared.cell_id}.*existing_cell: '{shared.cell_id}'"
    ):
        decompose(
            svc,
            second.tasks[0].task_id,
            {"atomic": False, "children": [child("Developers report fewer interruptions when at home")]},
        )
    found = svc.cells_like("developers have fewer interruptions at home").cells
    assert found[0].cell_id == shared.cell_id and found[0].score > 0.5
    out = decompose(
        svc,
        second.tasks[0].task_id,
        {
            "atomic": False,
            "children": [
                {"text": "Developers report fewer interruptions at home", "existing_cell": shared.cell_id},
                child(
                    "Commuting time is returned to the working day",
                    atomic=True,
                    bedrock_reason="time-use data",
                ),
            ],
        },
    )
    assert out.cell_state == "waiting"
    parents = [p.cell_id for p in svc.open().parents(shared.cell_id)]
    assert parents == [first.root_cell_id, second.root_cell_id]  # a shared premise across runs, not a copy
    assert len(svc.open().cells(second.run_id)) == 2


def test_linking_an_ancestor_would_make_a_cycle(tmp_path: Path) -> None:
    svc = service(tmp_path)
    run = svc.start(ROOT)
    decompose(
        svc,
        run.tasks[0].task_id,
        {"atomic": False, "children": [child("Developers report fewer interruptions at home")]},
    )
    level1 = svc.open().cells(run.run_id)[1]
    task = f"{level1.cell_id}.d1.decomposer"
    with pytest.raises(Rejected, match="would make a cycle"):
        decompose(
            svc, task, {"atomic": False, "children": [{"text": "x", "existing_cell": run.root_cell_id}]}
        )
    with pytest.raises(Rejected, match="existing_cell nope-1-01 does not exist"):
        decompose(svc, task, {"atomic": False, "children": [{"text": "x", "existing_cell": "nope-1-01"}]})


def test_atomic_claims_record_their_bedrock_reason_and_depth_caps_are_recorded_too(tmp_path: Path) -> None:
    svc = service(tmp_path)
    run = svc.start(ROOT, max_depth=1)
    decompose(
        svc,
        run.tasks[0].task_id,
        {
            "atomic": False,
            "children": [
                child(
                    "Developers report fewer interruptions at home",
                    atomic=True,
                    bedrock_reason="a survey result",
                ),
                child("Asynchronous code review speeds up merges"),
            ],
        },
    )
    cells = svc.open().cells(run.run_id)
    assert [(c.leaf_reason, c.bedrock_reason, c.state) for c in cells[1:]] == [
        ("atomic", "a survey result", "research"),
        ("depth cap", None, "research"),
    ]
    with pytest.raises(Rejected, match="needs a bedrock_reason"):
        svc2 = service(tmp_path / "b")
        decompose(svc2, svc2.start(ROOT).tasks[0].task_id, {"atomic": True})


def test_an_atomic_root_goes_straight_to_research(tmp_path: Path) -> None:
    svc = service(tmp_path)
    run = svc.start(ROOT, preset="quick")
    out = decompose(svc, run.tasks[0].task_id, {"atomic": True, "bedrock_reason": "one measurable quantity"})
    assert out.cell_state == "research"
    assert [t.role for t in out.next] == ["investigator"]
    assert svc.status()["runs"][0]["state"] == "growing"


def test_approval_holds_the_decomposition_until_a_human_decides(tmp_path: Path) -> None:
    svc = service(tmp_path, Clock())
    run = svc.start(ROOT, require_approval=True)
    result = {"atomic": False, "children": [child("Developers report fewer interruptions at home")]}
    out = decompose(svc, run.tasks[0].task_id, result)
    assert out.cell_state == "awaiting_approval"
    assert len(svc.open().cells(run.run_id)) == 1  # nothing created before approval
    assert [h.cell_id for h in svc.next().needs_human] == [run.root_cell_id]
    rejected = svc.approve(run.root_cell_id, approve=False, note="split by team size")
    assert rejected.cell_state == "decomposing"
    assert svc.open().cell(run.root_cell_id).directive == "split by team size"
    task2 = svc.next().tasks[0].task_id
    assert task2 == f"{run.root_cell_id}.d2.decomposer"
    decompose(svc, task2, result)
    approved = svc.approve(run.root_cell_id)
    assert approved.cell_state == "waiting"
    assert len(svc.open().cells(run.run_id)) == 2
    with pytest.raises(Rejected, match="has no decomposition awaiting approval"):
        svc.approve(run.root_cell_id)


def test_a_human_split_turns_a_stalled_cell_into_a_parent(tmp_path: Path) -> None:
    svc = service(tmp_path)
    run = svc.start(ROOT, preset="quick")
    task = run.tasks[0].task_id
    lease = svc.claim(task, "petri-decomposer").lease
    svc.fail(task, lease, "claim too vague to decompose", retryable=False)
    with pytest.raises(Rejected, match="at least two sub-claims"):
        svc.resolve(run.root_cell_id, "split", children=["only one"])
    out = svc.resolve(
        run.root_cell_id,
        "split",
        children=["Remote developers ship more pull requests", "Remote teams report higher satisfaction"],
    )
    assert out.cell_state == "waiting"
    kids = svc.open().children(run.root_cell_id)
    assert [c.state for _, c in kids] == ["decomposing", "decomposing"]
    assert any("split" in line or "waiting" in line for line in out.changes)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Remote work raises the productivity of software teams", ROOT, True),
        (
            "At home developers report fewer interruptions",
            "Developers report fewer interruptions at home",
            True,
        ),
        (
            "Developers report fewer interruptions at home",
            "Commuting time is returned to the working day",
            False,
        ),
        ("Training costs fell 10x since 2020", "Training costs fell 10x since 2016", False),
    ],
)
def test_restatement_guard(a: str, b: str, same: bool) -> None:
    from petri_core.similarity import is_restatement

    assert is_restatement(a, b) is same
