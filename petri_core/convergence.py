"""Mechanical convergence: short-circuits, the weakest link and the circuit breaker. No LLM, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .roster import ROLES, gating_roles

Outcome = Literal["converged", "short_circuit", "not_converged", "breaker"]
OBJECTION_CHARS = 500


@dataclass(frozen=True)
class LatestVerdict:
    """The latest verdict of one role in the current iteration (a debate revision supersedes)."""

    verdict: str
    summary: str


@dataclass(frozen=True)
class Convergence:
    """What the convergence check decided, and why."""

    outcome: Outcome
    gating: Mapping[str, str | None]
    target: str | None = None
    weakest: str | None = None
    weakest_verdict: str | None = None
    directive: str | None = None
    note: str = ""


def check(
    preset: frozenset[str],
    latest: Mapping[str, LatestVerdict],
    *,
    iteration: int,
    cycle_start: int,
    max_iterations: int,
) -> Convergence:
    """Decide convergence from the latest verdict of every role of the preset.

    Short-circuits come first (investigator CANNOT_DETERMINE → needs_experiment, triage
    LOW_VALUE_DEFER → deferred). Then every gating role's latest verdict must be in its pass set;
    a missing verdict never passes. Otherwise the first failing gating role in roster order is the
    weakest link, and its objection becomes the directive; after `max_iterations` iterations of
    this cycle the circuit breaker parks the cell instead.
    """
    gates = gating_roles(preset)
    gating = {r.name: (latest[r.name].verdict if r.name in latest else None) for r in gates}
    for role in ROLES.values():
        seen = latest.get(role.name)
        if role.name in preset and seen and seen.verdict in role.short_circuits:
            target = role.short_circuits[seen.verdict]
            return Convergence(
                "short_circuit",
                gating,
                target=target,
                weakest=role.name,
                weakest_verdict=seen.verdict,
                note=f"{role.name} said {seen.verdict}: the cell ends {target}",
            )
    failing = [r for r in gates if gating[r.name] not in r.pass_verdicts and not _conceded(r.name, latest)]
    if not failing:
        return Convergence("converged", gating, note="every gating role passed")
    weakest = failing[0]
    seen = latest.get(weakest.name)
    if seen is None:
        directive = f"No valid {weakest.name} verdict was recorded; the {weakest.name} must assess the claim."
    else:
        objection = _clip(seen.summary, OBJECTION_CHARS)
        directive = f"Answer the {weakest.name}'s objection ({seen.verdict}): {objection}"
    rounds = iteration - cycle_start + 1
    failing_names = ", ".join(r.name for r in failing)
    if rounds >= max_iterations:
        return Convergence(
            "breaker",
            gating,
            weakest=weakest.name,
            weakest_verdict=gating[weakest.name],
            directive=directive,
            note=(
                f"no convergence after {rounds} iteration(s) (still failing: {failing_names}); "
                "decomposition audit: the claim may be too broad or mis-stated — consider splitting it"
            ),
        )
    return Convergence(
        "not_converged",
        gating,
        weakest=weakest.name,
        weakest_verdict=gating[weakest.name],
        directive=directive,
        note=f"not converged (failing: {failing_names}); weakest link: {weakest.name}",
    )


def _conceded(role: str, latest: Mapping[str, LatestVerdict]) -> bool:
    """A block verdict that agrees with the evidence (e.g. the champion conceding a refuted claim)."""
    seen = latest.get(role)
    if seen is None:
        return False
    other = ROLES[role].concessions.get(seen.verdict)
    return other is not None and other[0] in latest and latest[other[0]].verdict == other[1]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
