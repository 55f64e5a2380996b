"""The demo's judgement as data: for a task, the result to submit and the citations it needs.

Pure (no I/O), so two players can execute it: the demo's in-process scripted agent, and the
scripted model server of the harness tests, which turns a plan into real tool calls of Claude
Code or OpenCode (fetch each page, then submit with the fetched quotes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

CLAIM = "Riverton's 2025 bike lanes cut downtown car traffic by a fifth"
COUNTS = "Downtown car counts fell by about a fifth after the lanes opened in 2025"
CAUSE = "The fall in downtown car traffic was caused by the bike lanes rather than other changes"
MOVED = "Car traffic merely moved from downtown to the ring road and neighbouring streets"
GUIDANCE = "Use the city's open-data counts for the ring road and residential streets"
STALL_REASON = "the only source on displaced traffic is a paywalled newspaper archive"


@dataclass(frozen=True)
class Cite:
    """A citation to make: the page to fetch, and the needles that pick the quoted sentence."""

    page: str
    stance: str
    level: int
    needles: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What a worker does with its task: submit `result` (plus `cites`), or fail with `fail`."""

    result: dict[str, Any] = field(default_factory=dict)
    cites: tuple[Cite, ...] = ()
    fail: str | None = None
    lookup: str | None = None  # a claim text to look up with petri_cells before submitting


def sentence(text: str, *needles: str) -> str:
    """The sentence of a fetched page that holds every needle (the agent quotes what it read)."""
    for part in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
        if all(n.lower() in part.lower() for n in needles):
            return part.strip()
    raise LookupError(f"no sentence with {needles!r} in the page")


def citation(cite: Cite, fetched: dict[str, Any]) -> dict[str, Any]:
    """A citation built from a petri_fetch result."""
    quote = sentence(fetched["text"], *cite.needles)
    return {
        "source_id": fetched["source_id"],
        "quote": quote,
        "stance": cite.stance,
        "level": cite.level,
        "finding": f"{fetched['title']}: {quote[:80]}",
    }


def _child(text: str, relation: str, reason: str) -> dict[str, Any]:
    return {"text": text, "relation": relation, "atomic": True, "bedrock_reason": reason}


def plan(
    role: str,
    kind: str,
    text: str,
    iteration: int,
    directive: str | None = None,
    *,
    stall: bool = True,
    children: int = 3,
) -> Plan:
    """The scripted judgement for one task. `stall`: the investigator gives the displacement
    question back for a human at first; `children`: how many premises the decomposer finds."""
    if kind == "decompose":
        premises = [
            _child(COUNTS, "supports", "a measured count, checkable against the city's traffic data"),
            _child(CAUSE, "supports", "a causal question answered by one controlled comparison"),
            _child(MOVED, "rebuts", "a measured count on the surrounding roads"),
        ]
        return Plan({"atomic": False, "children": premises[-children:]}, lookup=COUNTS)
    if kind == "debate":
        return Plan({"response": f"The {role} has weighed the argument; the measured counts still stand."})
    if role == "cell-lead":
        return Plan(
            {
                "summary": f"Iteration {iteration}: the skeptic showed the bridge closure may explain the drop.",
                "directive": directive or "Address the skeptic's objection.",
            }
        )
    return _assess(role, text, iteration, stall)


def _assess(role: str, text: str, iteration: int, stall: bool) -> Plan:
    if role == "investigator":
        if text == MOVED:
            if stall and iteration == 1:
                return Plan(fail=STALL_REASON)
            return Plan(
                {
                    "verdict": "EVIDENCE_CONTRADICTS",
                    "summary": "Counts on the surrounding roads did not rise.",
                },
                (
                    Cite("ring-road-counts", "contradicts", 1, ("ring road averaged",)),
                    Cite("transport-study", "contradicts", 3, ("did not rise",)),
                ),
            )
        if text == CAUSE and iteration >= 2:
            return Plan(
                {
                    "verdict": "EVIDENCE_SUFFICIENT",
                    "summary": "A controlled study isolates the lanes' effect.",
                },
                (
                    Cite("transport-study", "supports", 3, ("After adjusting",)),
                    Cite("transport-study", "supports", 3, ("robust to excluding",)),
                ),
            )
        second = (
            Cite("traffic-report", "supports", 1, ("opened in March",))
            if text in (COUNTS, CLAIM)
            else Cite("transport-study", "supports", 3, ("After adjusting",))
        )
        return Plan(
            {"verdict": "EVIDENCE_SUFFICIENT", "summary": "Primary measurements support the claim."},
            (Cite("traffic-report", "supports", 1, ("fell from 41,200",)), second),
        )
    if role == "freshness-checker":
        return Plan({"verdict": "EVIDENCE_CURRENT", "summary": "Every cited source was published in 2025."})
    if role == "skeptic":
        if text == CAUSE and iteration == 1:
            return Plan(
                {
                    "verdict": "CRITICAL_FLAW_FOUND",
                    "summary": "The Old Mill Bridge closure diverted traffic in the same months; the lanes may "
                    "not be the cause.",
                },
                (Cite("bridge-closure", "contradicts", 4, ("diverting an estimated",)),),
            )
        return Plan(
            {"verdict": "ARGUMENT_WITHSTANDS_CRITIQUE", "summary": "No objection survives the evidence."}
        )
    if role == "champion":
        if text == MOVED:
            return Plan(
                {"verdict": "CANNOT_DEFEND", "summary": "Only an opinion blog supports displacement."}
            )
        return Plan(
            {"verdict": "STRONG_CASE", "summary": "Measured counts and a controlled study agree."},
            (Cite("traffic-report", "supports", 1, ("fell from 41,200",)),),
        )
    if role == "red-team":
        return Plan(
            {
                "verdict": "WEAK_DISPROVAL_CASE",
                "summary": "A driver's blog claims traffic moved to side streets.",
            },
            (Cite("opinion-blog", "contradicts", 6, ("side streets",)),),
        )
    if role == "evaluator":
        return Plan(
            {
                "verdict": "EVIDENCE_REFUTES" if text == MOVED else "EVIDENCE_CONFIRMS",
                "summary": "Weighed the measured counts, the controlled study and the objections.",
            }
        )
    if role in ADVISORY:
        verdict, summary = ADVISORY[role]
        return Plan({"verdict": verdict, "summary": summary})
    raise LookupError(f"the demo script has no part for {role}")


#: The roles only the thorough preset adds: one fixed, passing judgement each.
ADVISORY = {
    "socratic": (
        "CLARIFIED",
        "Terms defined: 'downtown' is the cordon of the 2024 counts; 'a fifth' is 20 % ± 2.",
    ),
    "dependency-auditor": ("DEPENDENCIES_CLEAN", "The claim follows from its premises; no circular support."),
    "pragmatist": ("DIRECTIONALLY_CORRECT", "Other cities saw similar drops after protected lanes."),
    "simplifier": ("APPROPRIATELY_SCOPED", "The claim is as simple as the evidence allows."),
    "triage": ("HIGH_VALUE", "The council's budget vote for more lanes depends on the answer."),
    "impact-assessor": ("CRITICAL_PATH", "The root claim rests on this premise."),
}
