"""The roles: phase, gating mode, verdict vocabularies, citation rules, debates and presets.

Structure lives here; the words each agent reads live in `agents/petri-<role>.md`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Phase = Literal[
    "decompose", "socratic", "research", "critique", "debate", "synthesis", "red_team", "evaluation"
]
Gating = Literal["blocking", "conditional", "advisory", "none"]
TaskKind = Literal["decompose", "assess", "debate", "synthesize"]
Stance = Literal["supports", "contradicts"]

#: Hierarchy of source levels; validated/disproven need one at or below TERMINAL_MAX_LEVEL.
SOURCE_LEVELS: Mapping[int, str] = {
    1: "direct measurement",
    2: "authoritative documentation",
    3: "derived calculation",
    4: "corroborated expert consensus",
    5: "single expert opinion",
    6: "community report",
}
TERMINAL_MAX_LEVEL = 4


@dataclass(frozen=True)
class CitationRule:
    """Citations a verdict needs: at least `min_total`, and so many per stance."""

    verdicts: frozenset[str]
    min_total: int = 0
    min_supporting: int = 0
    min_contradicting: int = 0

    def describe(self) -> str:
        parts = []
        if self.min_total:
            parts.append(f"at least {self.min_total} citations")
        if self.min_supporting:
            parts.append(f"at least {self.min_supporting} supporting")
        if self.min_contradicting:
            parts.append(f"at least {self.min_contradicting} contradicting")
        return " and ".join(parts)


@dataclass(frozen=True)
class Role:
    """One agent role of the roster."""

    name: str
    phase: Phase
    gating: Gating
    kind: TaskKind
    brief: str
    pass_verdicts: tuple[str, ...] = ()
    block_verdicts: tuple[str, ...] = ()
    #: A verdict that ends the cell at once in the given final state (checked at convergence).
    short_circuits: Mapping[str, str] = field(default_factory=dict)
    citation_rules: tuple[CitationRule, ...] = ()
    #: A block verdict that counts as a pass when another role's latest verdict agrees with it
    #: (the champion conceding a claim the investigator found contradicted): verdict → (role, verdict).
    concessions: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def agent(self) -> str:
        return f"petri-{self.name}"

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.pass_verdicts + self.block_verdicts

    @property
    def gates(self) -> bool:
        return self.gating in ("blocking", "conditional")

    def blocks(self, verdict: str) -> bool:
        """Whether this verdict holds a cell back (one of the role's block verdicts)."""
        return verdict in self.block_verdicts

    def citation_rule(self, verdict: str) -> CitationRule | None:
        return next((r for r in self.citation_rules if verdict in r.verdicts), None)


def _rule(*verdicts: str, total: int = 0, supporting: int = 0, contradicting: int = 0) -> CitationRule:
    return CitationRule(frozenset(verdicts), total, supporting, contradicting)


_ROLES = (
    Role(
        "decomposer",
        "decompose",
        "none",
        "decompose",
        "Break the claim into first-principle sub-claims, or declare it bedrock with a reason.",
    ),
    Role(
        "socratic",
        "socratic",
        "advisory",
        "assess",
        "Surface hidden assumptions, define terms, and map the evidence needed.",
        pass_verdicts=("CLARIFIED",),
    ),
    Role(
        "investigator",
        "research",
        "blocking",
        "assess",
        "Find primary sources, fetch them and cite verbatim quotes.",
        pass_verdicts=("EVIDENCE_SUFFICIENT", "EVIDENCE_CONTRADICTS"),
        block_verdicts=("NEEDS_MORE_EVIDENCE", "CANNOT_DETERMINE"),
        short_circuits={"CANNOT_DETERMINE": "needs_experiment"},
        citation_rules=(
            _rule("EVIDENCE_SUFFICIENT", total=2),
            _rule("EVIDENCE_CONTRADICTS", total=2, contradicting=1),
        ),
    ),
    Role(
        "freshness-checker",
        "research",
        "blocking",
        "assess",
        "Judge whether the cited evidence is current, from the measured publication dates.",
        pass_verdicts=("EVIDENCE_CURRENT", "STALE_BUT_HOLDS"),
        block_verdicts=("MATERIALLY_STALE",),
    ),
    Role(
        "dependency-auditor",
        "research",
        "blocking",
        "assess",
        "Audit the logical chain: unvalidated dependencies, circularity, hidden premises.",
        pass_verdicts=("DEPENDENCIES_CLEAN",),
        block_verdicts=("UNVALIDATED_DEPS", "CIRCULAR_REASONING"),
    ),
    Role(
        "skeptic",
        "critique",
        "blocking",
        "assess",
        "Build the strongest case against the claim, with contradicting sources.",
        pass_verdicts=("ARGUMENT_WITHSTANDS_CRITIQUE",),
        block_verdicts=("CRITICAL_FLAW_FOUND", "UNADDRESSED_COUNTERARGUMENT"),
        citation_rules=(_rule("CRITICAL_FLAW_FOUND", "UNADDRESSED_COUNTERARGUMENT", contradicting=1),),
    ),
    Role(
        "champion",
        "critique",
        "blocking",
        "assess",
        "Build the strongest case for the claim, with supporting sources.",
        pass_verdicts=("STRONG_CASE", "DEFENSIBLE_WITH_CAVEATS"),
        block_verdicts=("CANNOT_DEFEND",),
        citation_rules=(_rule("STRONG_CASE", "DEFENSIBLE_WITH_CAVEATS", supporting=1),),
        concessions={"CANNOT_DEFEND": ("investigator", "EVIDENCE_CONTRADICTS")},
    ),
    Role(
        "pragmatist",
        "critique",
        "blocking",
        "assess",
        "Judge practical significance from real implementations and failures.",
        pass_verdicts=("PRODUCTION_READY", "DIRECTIONALLY_CORRECT"),
        block_verdicts=("WOULD_NOT_SHIP_THIS",),
    ),
    Role(
        "simplifier",
        "critique",
        "advisory",
        "assess",
        "Check the claim's scope: is it stated as simply as the evidence allows?",
        pass_verdicts=("APPROPRIATELY_SCOPED", "COULD_BE_SIMPLER"),
        block_verdicts=("OVERCOMPLICATED",),
    ),
    Role(
        "triage",
        "critique",
        "conditional",
        "assess",
        "Judge what validating this claim is worth: what decision it informs.",
        pass_verdicts=("HIGH_VALUE", "MODERATE_VALUE"),
        block_verdicts=("LOW_VALUE_DEFER",),
        short_circuits={"LOW_VALUE_DEFER": "deferred"},
    ),
    Role(
        "impact-assessor",
        "critique",
        "advisory",
        "assess",
        "Judge the claim's downstream blast radius in the claim tree.",
        pass_verdicts=("CRITICAL_PATH", "SUPPORTING_NOT_BLOCKING", "ISOLATED_LOW_IMPACT"),
    ),
    Role(
        "cell-lead",
        "synthesis",
        "none",
        "synthesize",
        "Write the bounded cell summary and the next iteration's directive.",
    ),
    Role(
        "red-team",
        "red_team",
        "none",
        "assess",
        "Argue to disprove the claim, independently of the research so far.",
        pass_verdicts=("STRONG_DISPROVAL_CASE", "WEAK_DISPROVAL_CASE", "NO_CONTRADICTING_EVIDENCE"),
        citation_rules=(_rule("STRONG_DISPROVAL_CASE", "WEAK_DISPROVAL_CASE", contradicting=1),),
    ),
    Role(
        "evaluator",
        "evaluation",
        "none",
        "assess",
        "Weigh all the evidence and arguments neutrally and reach the verdict.",
        pass_verdicts=("EVIDENCE_CONFIRMS", "EVIDENCE_REFUTES", "EVIDENCE_INCONCLUSIVE"),
    ),
)

#: Every role, in roster order (the order that picks the weakest link).
ROLES: Mapping[str, Role] = {r.name: r for r in _ROLES}

#: The evaluator's verdict → the cell's final state (before the terminal source rule).
EVALUATION_OUTCOMES: Mapping[str, str] = {
    "EVIDENCE_CONFIRMS": "validated",
    "EVIDENCE_REFUTES": "disproven",
    "EVIDENCE_INCONCLUSIVE": "inconclusive",
}


@dataclass(frozen=True)
class Debate:
    """A real exchange of turns: the responder answers the opener; with `final_word` the opener rebuts."""

    opener: str
    responder: str
    final_word: bool = False


DEBATES: tuple[Debate, ...] = (
    Debate("skeptic", "champion", final_word=True),
    Debate("skeptic", "pragmatist"),
    Debate("simplifier", "impact-assessor"),
    Debate("triage", "impact-assessor"),
)

PresetName = Literal["thorough", "standard", "quick"]
PRESETS: Mapping[str, frozenset[str]] = {
    "thorough": frozenset(ROLES),
    "standard": frozenset(
        {
            "decomposer",
            "investigator",
            "freshness-checker",
            "skeptic",
            "champion",
            "cell-lead",
            "red-team",
            "evaluator",
        }
    ),
    "quick": frozenset({"decomposer", "investigator", "skeptic", "evaluator"}),
}
DEFAULT_PRESET: PresetName = "standard"

#: Within a phase, steps run in order; the roles of one step run in parallel.
PHASE_STEPS: Mapping[Phase, tuple[tuple[str, ...], ...]] = {
    "decompose": (("decomposer",),),
    "socratic": (("socratic",),),
    "research": (("investigator",), ("freshness-checker", "dependency-auditor")),
    "critique": (("skeptic", "champion", "pragmatist", "simplifier", "triage", "impact-assessor"),),
    "synthesis": (("cell-lead",),),
    "red_team": (("red-team",),),
    "evaluation": (("evaluator",),),
}


@dataclass(frozen=True)
class Turn:
    """One task of the debate phase: `role` answers `opener` (or rebuts it, with `rebuttal`)."""

    role: str
    opener: str
    rebuttal: bool = False

    @property
    def key(self) -> str:
        return f"{self.role}-re-{self.opener}"


def disagree(debate: Debate, latest: Mapping[str, str]) -> bool:
    """Whether a pair is in real disagreement: one side's latest verdict blocks, the other's passes.

    Two sides that agree (both pass, or both block) have nothing to debate; a turn would be a
    model call that changes nothing. A side without a verdict cannot be answered either.
    """
    opener, responder = latest.get(debate.opener), latest.get(debate.responder)
    if opener is None or responder is None:
        return False
    return ROLES[debate.opener].blocks(opener) != ROLES[debate.responder].blocks(responder)


def debate_steps(
    preset: frozenset[str], latest: Mapping[str, str] | None = None
) -> tuple[tuple[Turn, ...], ...]:
    """The debate phase for a preset: first every response, then the final-word rebuttals.

    With `latest` (role → latest verdict of this iteration) only the pairs that disagree debate;
    without it, every pair the preset could hold (the docs and the diagram)."""
    active = [
        d
        for d in DEBATES
        if d.opener in preset and d.responder in preset and (latest is None or disagree(d, latest))
    ]
    responses = tuple(Turn(d.responder, d.opener) for d in active)
    rebuttals = tuple(Turn(d.opener, d.responder, rebuttal=True) for d in active if d.final_word)
    return tuple(step for step in (responses, rebuttals) if step)


@functools.cache  # asked on every cell transition (a guard), with a handful of distinct arguments
def phase_steps(phase: Phase, preset: frozenset[str]) -> tuple[tuple[str, ...], ...]:
    """The non-empty steps of a phase for the roles a preset keeps."""
    steps = (tuple(r for r in step if r in preset) for step in PHASE_STEPS.get(phase, ()))
    return tuple(step for step in steps if step)


def gating_roles(preset: frozenset[str]) -> tuple[Role, ...]:
    """The roles whose verdicts decide convergence for a preset, in roster order."""
    return tuple(r for r in ROLES.values() if r.gates and r.name in preset)


def _check_roster() -> None:
    """Fail at import if the roster contradicts itself (cheap, and impossible to forget)."""
    problems = []
    for preset, roles in PRESETS.items():
        for required in ("decomposer", "evaluator"):
            if required not in roles:
                problems.append(f"preset {preset} lacks {required}")
        problems += [f"preset {preset} names unknown role {r}" for r in roles if r not in ROLES]
    for d in DEBATES:
        problems += [f"debate names unknown role {r}" for r in (d.opener, d.responder) if r not in ROLES]
    for role in ROLES.values():
        for verdict, state in role.short_circuits.items():
            if verdict not in role.block_verdicts:
                problems.append(f"{role.name}: short-circuit {verdict} is not a block verdict")
            if state not in ("deferred", "needs_experiment"):
                problems.append(f"{role.name}: short-circuit to non-final state {state}")
        for rule in role.citation_rules:
            problems += [f"{role.name}: rule names {v}" for v in rule.verdicts if v not in role.vocabulary]
    if problems:
        raise AssertionError("; ".join(problems))


_check_roster()
