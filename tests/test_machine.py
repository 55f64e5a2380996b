"""The transition table, the guards, convergence and the roster, tested without a database."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from petri_core import convergence
from petri_core.convergence import LatestVerdict
from petri_core.docgen import state_machine_page
from petri_core.errors import Rejected
from petri_core.machine import (
    CELL_TABLE,
    GUARDS,
    RUN_TABLE,
    Ctx,
    cell_states,
    mermaid,
    select,
    terminal_outcome,
)
from petri_core.models import FINAL_STATES, Citation
from petri_core.roster import DEBATES, PRESETS, ROLES, debate_steps, gating_roles, phase_steps

DOCS = Path(__file__).parent.parent / "docs" / "state-machine.md"


def reachable(table: tuple, start: str) -> set[str]:
    graph = defaultdict(set)
    for t in table:
        graph[t.source].add(t.target)
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_cell_state_is_reachable_from_new() -> None:
    assert reachable(CELL_TABLE, "new") == set(cell_states())


def test_every_non_final_cell_state_has_an_exit() -> None:
    sources = {t.source for t in CELL_TABLE}
    for state in cell_states():
        if state not in FINAL_STATES:
            assert state in sources, f"{state} has no way out"


def test_every_final_and_parked_state_has_a_tested_way_out() -> None:
    exits = {(t.source, t.trigger) for t in CELL_TABLE}
    for final in FINAL_STATES:
        assert (final, "reopen") in exits
    assert {("stalled", "requeue"), ("stalled", "close"), ("stalled", "split")} <= exits


def test_every_run_state_is_reachable_and_complete_can_reopen() -> None:
    states = {t.source for t in RUN_TABLE} | {t.target for t in RUN_TABLE}
    assert reachable(RUN_TABLE, "intake") == states
    assert {t.source for t in RUN_TABLE} == states  # even `complete` has an exit (reopened)


def test_every_guard_named_in_the_table_exists() -> None:
    assert {t.guard for t in CELL_TABLE if t.guard} <= set(GUARDS)


def test_each_state_trigger_pair_ends_in_an_unguarded_fallback_or_exclusive_guards() -> None:
    groups = defaultdict(list)
    for t in CELL_TABLE:
        groups[(t.source, t.trigger)].append(t)
    for (source, trigger), rows in groups.items():
        if trigger in ("close", "short_circuit"):
            continue  # exclusive guards on an explicit outcome
        assert rows[-1].guard is None, f"{source} --{trigger}--> has no fallback row"


def test_select_names_the_allowed_triggers_when_a_trigger_is_illegal() -> None:
    ctx = Ctx(preset=PRESETS["standard"])
    with pytest.raises(Rejected) as err:
        select(CELL_TABLE, "research", "evaluated", ctx)
    assert (
        str(err.value) == "cannot evaluated a cell in state `research`; allowed now: phase_done, task_stalled"
    )
    # A human's refused action names only what a human can do, as the CLI spells it.
    with pytest.raises(Rejected) as err:
        select(CELL_TABLE, "research", "approved", ctx)
    assert str(err.value).startswith("cannot approve a cell in state `research`; nothing a human can do")
    with pytest.raises(Rejected) as err:
        select(CELL_TABLE, "awaiting_approval", "requeue", ctx)
    assert str(err.value).endswith("; allowed now: approve, approve --reject")
    with pytest.raises(Rejected) as err:
        select(CELL_TABLE, "validated", "close", ctx)
    assert str(err.value).endswith("; allowed now: reopen")


def test_guards_route_by_preset() -> None:
    quick, thorough = PRESETS["quick"], PRESETS["thorough"]
    assert select(CELL_TABLE, "new", "plant", Ctx(preset=thorough, leaf=True)).target == "socratic"
    assert select(CELL_TABLE, "new", "plant", Ctx(preset=quick, leaf=True)).target == "research"
    assert select(CELL_TABLE, "new", "plant", Ctx(preset=quick)).target == "decomposing"
    assert select(CELL_TABLE, "critique", "phase_done", Ctx(preset=quick)).target == "converging"
    clash = {"skeptic": "CRITICAL_FLAW_FOUND", "champion": "STRONG_CASE"}
    agree = {"skeptic": "ARGUMENT_WITHSTANDS_CRITIQUE", "champion": "STRONG_CASE"}
    assert select(CELL_TABLE, "critique", "phase_done", Ctx(preset=thorough, latest=clash)).target == "debate"
    assert (
        select(CELL_TABLE, "critique", "phase_done", Ctx(preset=thorough, latest=agree)).target
        == "converging"
    )
    assert select(CELL_TABLE, "converging", "converged", Ctx(preset=quick)).target == "evaluation"
    assert select(CELL_TABLE, "converging", "not_converged", Ctx(preset=quick)).target == "research"
    assert select(CELL_TABLE, "converging", "not_converged", Ctx(preset=thorough)).target == "synthesis"
    requeue = Ctx(preset=quick, stalled_from="decomposing")
    assert select(CELL_TABLE, "stalled", "requeue", requeue).target == "decomposing"


def test_mermaid_diagram_lists_every_transition() -> None:
    diagram = mermaid()
    assert diagram.startswith("stateDiagram-v2\n")
    for t in CELL_TABLE:
        assert f"{t.source} --> {t.target}: {t.trigger}" in diagram


def test_docs_state_machine_page_is_generated_from_the_table() -> None:
    assert DOCS.read_text() == state_machine_page(), "regenerate it: python -m petri_core.docgen"


# ---------------------------------------------------------------- convergence


def latest(**verdicts: str) -> dict[str, LatestVerdict]:
    return {role.replace("_", "-"): LatestVerdict(v, f"{role} says {v}") for role, v in verdicts.items()}


STANDARD_PASS = dict(
    investigator="EVIDENCE_SUFFICIENT",
    freshness_checker="EVIDENCE_CURRENT",
    skeptic="ARGUMENT_WITHSTANDS_CRITIQUE",
    champion="STRONG_CASE",
)


def check(preset: str, got: dict[str, LatestVerdict], iteration: int = 1) -> convergence.Convergence:
    return convergence.check(PRESETS[preset], got, iteration=iteration, cycle_start=1, max_iterations=3)


def test_convergence_passes_when_every_gating_role_passes() -> None:
    assert check("standard", latest(**STANDARD_PASS)).outcome == "converged"


def test_a_missing_verdict_never_passes() -> None:
    partial = {k: v for k, v in STANDARD_PASS.items() if k != "champion"}
    result = check("standard", latest(**partial))
    assert result.outcome == "not_converged" and result.weakest == "champion"
    assert result.gating["champion"] is None
    assert "No valid champion verdict" in (result.directive or "")


def test_the_weakest_link_is_the_first_failing_role_in_roster_order() -> None:
    got = latest(**{**STANDARD_PASS, "champion": "CANNOT_DEFEND", "freshness_checker": "MATERIALLY_STALE"})
    result = check("standard", got)
    assert result.weakest == "freshness-checker" and result.weakest_verdict == "MATERIALLY_STALE"
    assert (
        result.directive == "Answer the freshness-checker's objection (MATERIALLY_STALE): "
        "freshness_checker says MATERIALLY_STALE"
    )


def test_advisory_roles_never_gate() -> None:
    got = latest(**STANDARD_PASS, simplifier="OVERCOMPLICATED", impact_assessor="ISOLATED_LOW_IMPACT")
    assert check("standard", got).outcome == "converged"
    assert {r.name for r in gating_roles(PRESETS["thorough"])} == {
        "investigator",
        "freshness-checker",
        "dependency-auditor",
        "skeptic",
        "champion",
        "pragmatist",
        "triage",
    }


def test_short_circuits_end_the_cell_before_convergence() -> None:
    deferred = check("thorough", latest(triage="LOW_VALUE_DEFER"))
    assert (deferred.outcome, deferred.target) == ("short_circuit", "deferred")
    experiment = check(
        "quick", latest(investigator="CANNOT_DETERMINE", skeptic="ARGUMENT_WITHSTANDS_CRITIQUE")
    )
    assert (experiment.outcome, experiment.target) == ("short_circuit", "needs_experiment")


def test_a_short_circuit_role_outside_the_preset_is_ignored() -> None:
    result = check("standard", latest(**STANDARD_PASS, triage="LOW_VALUE_DEFER"))
    assert result.outcome == "converged"


def test_the_circuit_breaker_fires_after_max_iterations_of_the_current_cycle() -> None:
    failing = latest(**{**STANDARD_PASS, "skeptic": "CRITICAL_FLAW_FOUND"})
    assert check("standard", failing, iteration=2).outcome == "not_converged"
    result = check("standard", failing, iteration=3)
    assert result.outcome == "breaker" and "decomposition audit" in result.note
    relative = convergence.check(PRESETS["standard"], failing, iteration=5, cycle_start=4, max_iterations=3)
    assert relative.outcome == "not_converged"


# ---------------------------------------------------------------- terminal source rule


def citation(stance: str, level: int) -> Citation:
    return Citation(
        citation_id="t#1",
        cell_id="c",
        task_id="t",
        role="investigator",
        iteration=1,
        source_id="s",
        quote="q" * 30,
        stance=stance,
        level=level,
        finding="",  # type: ignore[arg-type]
        match_start=0,
        match_end=30,
        match_score=1.0,
    )


@pytest.mark.parametrize(
    ("verdict", "cites", "outcome"),
    [
        ("EVIDENCE_CONFIRMS", [citation("supports", 2)], "validated"),
        ("EVIDENCE_CONFIRMS", [citation("supports", 4)], "validated"),
        ("EVIDENCE_CONFIRMS", [citation("supports", 5), citation("contradicts", 1)], "inconclusive"),
        ("EVIDENCE_CONFIRMS", [], "inconclusive"),
        ("EVIDENCE_REFUTES", [citation("contradicts", 3)], "disproven"),
        ("EVIDENCE_REFUTES", [citation("supports", 1), citation("contradicts", 6)], "inconclusive"),
        ("EVIDENCE_INCONCLUSIVE", [citation("supports", 1)], "inconclusive"),
    ],
)
def test_terminal_source_rule(verdict: str, cites: list[Citation], outcome: str) -> None:
    got, reason = terminal_outcome(verdict, cites)
    assert got == outcome
    if outcome == "inconclusive" and verdict != "EVIDENCE_INCONCLUSIVE":
        assert reason.startswith("terminal source rule")


# ---------------------------------------------------------------- roster


def test_roster_has_the_fourteen_roles_with_their_vocabularies() -> None:
    assert len(ROLES) == 14
    assert ROLES["investigator"].short_circuits == {"CANNOT_DETERMINE": "needs_experiment"}
    assert ROLES["triage"].gating == "conditional"
    assert ROLES["evaluator"].vocabulary == ("EVIDENCE_CONFIRMS", "EVIDENCE_REFUTES", "EVIDENCE_INCONCLUSIVE")
    assert all(r.agent == f"petri-{r.name}" for r in ROLES.values())


def test_presets_keep_the_roles_the_design_names() -> None:
    assert PRESETS["quick"] == {"decomposer", "investigator", "skeptic", "evaluator"}
    assert PRESETS["thorough"] == set(ROLES)
    assert phase_steps("research", PRESETS["standard"]) == (("investigator",), ("freshness-checker",))
    assert phase_steps("critique", PRESETS["quick"]) == (("skeptic",),)


def test_debates_are_turns_with_the_skeptic_getting_the_final_word() -> None:
    assert len(DEBATES) == 4
    steps = debate_steps(PRESETS["thorough"])
    assert [t.key for t in steps[0]] == [
        "champion-re-skeptic",
        "pragmatist-re-skeptic",
        "impact-assessor-re-simplifier",
        "impact-assessor-re-triage",
    ]
    assert [t.key for t in steps[1]] == ["skeptic-re-champion"]
    assert [[t.key for t in s] for s in debate_steps(PRESETS["standard"])] == [
        ["champion-re-skeptic"],
        ["skeptic-re-champion"],
    ]
    assert debate_steps(PRESETS["quick"]) == ()


def test_only_pairs_that_disagree_debate() -> None:
    standard, thorough = PRESETS["standard"], PRESETS["thorough"]
    objection = {"skeptic": "CRITICAL_FLAW_FOUND", "champion": "STRONG_CASE"}
    assert [[t.key for t in s] for s in debate_steps(standard, objection)] == [
        ["champion-re-skeptic"],
        ["skeptic-re-champion"],
    ]
    # Both pass, or both block (the champion concedes the skeptic's point): nothing to argue.
    assert (
        debate_steps(standard, {"skeptic": "ARGUMENT_WITHSTANDS_CRITIQUE", "champion": "STRONG_CASE"}) == ()
    )
    assert debate_steps(standard, {"skeptic": "CRITICAL_FLAW_FOUND", "champion": "CANNOT_DEFEND"}) == ()
    # The champion cannot defend what the skeptic let stand: that is a disagreement too.
    assert debate_steps(standard, {"skeptic": "ARGUMENT_WITHSTANDS_CRITIQUE", "champion": "CANNOT_DEFEND"})
    # A side without a verdict (it failed, or was skipped) cannot be answered.
    assert debate_steps(standard, {"skeptic": "CRITICAL_FLAW_FOUND"}) == ()
    # An advisory role never blocks, so its pair debates only when the other side objects.
    triage_objects = {
        "triage": "LOW_VALUE_DEFER",
        "impact-assessor": "CRITICAL_PATH",
        "simplifier": "APPROPRIATELY_SCOPED",
        "skeptic": "ARGUMENT_WITHSTANDS_CRITIQUE",
        "champion": "STRONG_CASE",
        "pragmatist": "PRODUCTION_READY",
    }
    assert [[t.key for t in s] for s in debate_steps(thorough, triage_objects)] == [
        ["impact-assessor-re-triage"]
    ]


def test_citation_rules_per_role() -> None:
    inv = ROLES["investigator"].citation_rule("EVIDENCE_SUFFICIENT")
    assert inv is not None and inv.min_total == 2
    assert ROLES["skeptic"].citation_rule("CRITICAL_FLAW_FOUND").min_contradicting == 1  # type: ignore[union-attr]
    assert ROLES["red-team"].citation_rule("NO_CONTRADICTING_EVIDENCE") is None
    assert ROLES["champion"].citation_rule("STRONG_CASE").min_supporting == 1  # type: ignore[union-attr]


def test_a_champion_conceding_a_contradicted_claim_does_not_block_convergence() -> None:
    refuted = latest(
        investigator="EVIDENCE_CONTRADICTS",
        skeptic="ARGUMENT_WITHSTANDS_CRITIQUE",
        champion="CANNOT_DEFEND",
        freshness_checker="EVIDENCE_CURRENT",
    )
    assert check("standard", refuted).outcome == "converged"
    unfounded = latest(**{**STANDARD_PASS, "champion": "CANNOT_DEFEND"})
    assert check("standard", unfounded).weakest == "champion"
