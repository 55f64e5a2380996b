"""The state machine: one declarative transition table, named guards, and pure decisions.

`decide_*` functions take a snapshot of the state (typed rows loaded by the service) and return
the events to append. They never touch the database; the service appends what they return in
the same transaction that loaded the snapshot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import convergence
from .errors import Rejected
from .models import (
    FINAL_STATES,
    Cell,
    ChildIn,
    Citation,
    CitationIn,
    DebateResult,
    DecomposeResult,
    Run,
    SocraticResult,
    SynthesisResult,
    Task,
    Verdict,
    VerdictResult,
)
from .roster import (
    EVALUATION_OUTCOMES,
    ROLES,
    TERMINAL_MAX_LEVEL,
    Phase,
    Role,
    Turn,
    debate_steps,
    phase_steps,
)
from .similarity import is_restatement

# ---------------------------------------------------------------- the transition table


@dataclass(frozen=True)
class Ctx:
    """What guards may look at when a trigger fires."""

    preset: frozenset[str]
    iteration: int = 0
    leaf: bool = False
    require_approval: bool = False
    outcome: str | None = None
    stalled_from: str | None = None
    #: role → latest verdict of this iteration (debates run only between pairs that disagree)
    latest: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    """One row: in `source`, on `trigger`, if `guard` holds, go to `target` (with `effect`)."""

    source: str
    trigger: str
    target: str
    guard: str | None = None
    #: "new_cycle": iteration+1 and the breaker restarts; "next_iteration": iteration+1.
    effect: str | None = None


def _has(role: str) -> Callable[[Ctx], bool]:
    return lambda c: role in c.preset


GUARDS: Mapping[str, Callable[[Ctx], bool]] = {
    "approval_required": lambda c: c.require_approval,
    "needs_decomposition": lambda c: not c.leaf,
    "socratic_first": lambda c: "socratic" in c.preset and c.iteration == 0,
    "has_critique": lambda c: bool(phase_steps("critique", c.preset)),
    "has_debate": lambda c: bool(debate_steps(c.preset, c.latest)),
    "has_cell_lead": _has("cell-lead"),
    "has_red_team": _has("red-team"),
    "outcome_validated": lambda c: c.outcome == "validated",
    "outcome_disproven": lambda c: c.outcome == "disproven",
    "outcome_inconclusive": lambda c: c.outcome == "inconclusive",
    "outcome_deferred": lambda c: c.outcome == "deferred",
    "outcome_needs_experiment": lambda c: c.outcome == "needs_experiment",
    "stalled_in_decomposition": lambda c: c.stalled_from in ("decomposing", "awaiting_approval"),
}

#: States in which the cell is being worked on (tasks may be open).
ACTIVE_STATES = (
    "decomposing",
    "awaiting_approval",
    "waiting",
    "socratic",
    "research",
    "critique",
    "debate",
    "synthesis",
    "red_team",
    "evaluation",
)
FINALS = ("validated", "disproven", "inconclusive", "deferred", "needs_experiment")
_T = Transition

CELL_TABLE: tuple[Transition, ...] = (
    _T("new", "plant", "decomposing", "needs_decomposition"),
    _T("new", "plant", "socratic", "socratic_first", "new_cycle"),
    _T("new", "plant", "research", None, "new_cycle"),
    _T("decomposing", "decomposed", "awaiting_approval", "approval_required"),
    _T("decomposing", "decomposed", "waiting"),
    _T("decomposing", "atomic", "socratic", "socratic_first", "new_cycle"),
    _T("decomposing", "atomic", "research", None, "new_cycle"),
    _T("awaiting_approval", "approved", "waiting"),
    _T("awaiting_approval", "rejected", "decomposing"),
    _T("waiting", "children_final", "socratic", "socratic_first", "new_cycle"),
    _T("waiting", "children_final", "research", None, "new_cycle"),
    _T("socratic", "phase_done", "research"),
    _T("research", "phase_done", "critique", "has_critique"),
    _T("research", "phase_done", "debate", "has_debate"),
    _T("research", "phase_done", "converging"),
    _T("critique", "phase_done", "debate", "has_debate"),
    _T("critique", "phase_done", "converging"),
    _T("debate", "phase_done", "converging"),
    _T("converging", "converged", "red_team", "has_red_team"),
    _T("converging", "converged", "evaluation"),
    _T("converging", "short_circuit", "deferred", "outcome_deferred"),
    _T("converging", "short_circuit", "needs_experiment", "outcome_needs_experiment"),
    _T("converging", "not_converged", "synthesis", "has_cell_lead"),
    _T("converging", "not_converged", "research", None, "next_iteration"),
    _T("converging", "breaker", "stalled"),
    _T("synthesis", "phase_done", "research", None, "next_iteration"),
    _T("red_team", "phase_done", "evaluation"),
    _T("evaluation", "evaluated", "validated", "outcome_validated"),
    _T("evaluation", "evaluated", "disproven", "outcome_disproven"),
    _T("evaluation", "evaluated", "inconclusive"),
    *(_T(s, "task_stalled", "stalled") for s in ACTIVE_STATES),
    _T("stalled", "requeue", "decomposing", "stalled_in_decomposition"),
    _T("stalled", "requeue", "research", None, "new_cycle"),
    *(_T("stalled", "close", f, f"outcome_{f}") for f in FINALS),
    _T("stalled", "split", "waiting"),
    *(_T(f, "reopen", "research", None, "new_cycle") for f in FINALS),
)

RUN_TABLE: tuple[Transition, ...] = (
    _T("intake", "begin", "decomposing"),
    _T("decomposing", "decomposition_done", "growing"),
    _T("growing", "decomposition_resumed", "decomposing"),
    _T("decomposing", "root_final", "complete"),
    _T("growing", "root_final", "complete"),
    _T("complete", "reopened", "growing"),
    _T("decomposing", "halt", "halted"),
    _T("growing", "halt", "halted"),
    _T("halted", "resume", "decomposing", "decomposition_pending"),
    _T("halted", "resume", "growing"),
)
RUN_GUARDS: Mapping[str, Callable[[bool], bool]] = {"decomposition_pending": lambda pending: pending}

PHASE_OF_STATE: Mapping[str, Phase] = {
    "decomposing": "decompose",
    "socratic": "socratic",
    "research": "research",
    "critique": "critique",
    "debate": "debate",
    "synthesis": "synthesis",
    "red_team": "red_team",
    "evaluation": "evaluation",
}


#: Triggers a person fires (`petri resolve`, `petri approve`, `petri halt`/`resume`), as the CLI
#: names them. A refused human action lists only these: the others are the machine's own moves.
HUMAN_CELL_ACTIONS: Mapping[str, str] = {
    "requeue": "requeue",
    "close": "close",
    "split": "split",
    "reopen": "reopen",
    "approved": "approve",
    "rejected": "approve --reject",
}
HUMAN_RUN_ACTIONS: Mapping[str, str] = {"halt": "halt", "resume": "resume"}


def _allowed(rows: Iterable[Transition], trigger: str, human: Mapping[str, str], none: str) -> str:
    """What may happen now, for the refusal of `trigger`: a human's refused action lists the actions
    a human has (or why there are none); any other lists every trigger of the state."""
    triggers = sorted({t.trigger for t in rows})
    if trigger in human:
        triggers = [human[t] for t in triggers if t in human]
    return f"allowed now: {', '.join(triggers)}" if triggers else none


def select(table: Iterable[Transition], state: str, trigger: str, ctx: Ctx) -> Transition:
    """The first row for (state, trigger) whose guard holds; a Rejected names the allowed triggers."""
    rows = [t for t in table if t.source == state]
    for row in rows:
        if row.trigger == trigger and (row.guard is None or GUARDS[row.guard](ctx)):
            return row
    none = (
        "nothing a human can do while agents work on it: wait until it is final or stalled, "
        "or `petri halt` its run"
        if rows
        else "none: the state is final"
    )
    raise Rejected(
        f"cannot {HUMAN_CELL_ACTIONS.get(trigger, trigger)} a cell in state `{state}`",
        _allowed(rows, trigger, HUMAN_CELL_ACTIONS, none),
    )


def select_run(state: str, trigger: str, decomposition_pending: bool = False) -> Transition:
    """The run table's row for (state, trigger)."""
    rows = [t for t in RUN_TABLE if t.source == state]
    for row in rows:
        if row.trigger == trigger and (row.guard is None or RUN_GUARDS[row.guard](decomposition_pending)):
            return row
    none = (
        "none: the run is complete; reopen a cell (`petri resolve CELL --reopen`, or `petri feed`) to continue it"
        if state == "complete"
        else "none"
    )
    raise Rejected(
        f"cannot {trigger} a run in state `{state}`", _allowed(rows, trigger, HUMAN_RUN_ACTIONS, none)
    )


def cell_states() -> list[str]:
    """Every cell state the table knows, in first-seen order."""
    seen: dict[str, None] = {}
    for t in CELL_TABLE:
        seen.setdefault(t.source, None)
        seen.setdefault(t.target, None)
    return list(seen)


def mermaid(table: Iterable[Transition] = CELL_TABLE, initial: str = "new") -> str:
    """The table as a Mermaid state diagram (generated into docs/state-machine.md)."""
    lines = ["stateDiagram-v2", f"    [*] --> {initial}"]
    for t in table:
        label = t.trigger + (f" [{t.guard}]" if t.guard else "")
        lines.append(f"    {t.source} --> {t.target}: {label}")
    finals = sorted({t.target for t in table} & FINAL_STATES)
    lines += [f"    {f} --> [*]" for f in finals]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- events and snapshots


@dataclass(frozen=True)
class NewEvent:
    """An event the machine wants appended."""

    type: str
    payload: dict[str, Any]
    run_id: str | None = None
    cell_id: str | None = None
    task_id: str | None = None
    actor: str = "petri"


@dataclass(frozen=True)
class Settings:
    """A run's frozen settings."""

    preset: frozenset[str]
    child_cap: int = 5
    max_depth: int = 3
    max_iterations: int = 3
    attempt_cap: int = 3
    lease_seconds: int = 900
    require_approval: bool = False

    @classmethod
    def of(cls, run: Run) -> Settings:
        s = run.settings
        return cls(
            preset=frozenset(s["roles"]),
            child_cap=s["child_cap"],
            max_depth=s["max_depth"],
            max_iterations=s["max_iterations"],
            attempt_cap=s["attempt_cap"],
            lease_seconds=s["lease_seconds"],
            require_approval=s["require_approval"],
        )


@dataclass(frozen=True)
class Neighbour:
    """A cell related to the one deciding: its id, text, state, and (for children) the relation."""

    cell_id: str
    text: str
    state: str
    level: int = 0
    relation: str | None = None


@dataclass
class Snapshot:
    """Everything the machine needs about one cell, loaded in the deciding transaction."""

    run: Run
    cell: Cell
    tasks: list[Task] = field(default_factory=list)  # the cell's open tasks and this round's tasks
    verdicts: list[Verdict] = field(default_factory=list)  # this iteration, oldest first
    citations: list[Citation] = field(default_factory=list)  # the whole cell
    children: list[Neighbour] = field(default_factory=list)
    #: The lineage, which only a decomposition reads (None: not loaded, as for a verdict's submit).
    ancestors: frozenset[str] | None = None
    next_seq: dict[int, int] | None = None  # level → next free seq in the run
    now: str = ""

    def lineage(self) -> tuple[frozenset[str], dict[int, int]]:
        """The ancestors and next free seqs, which a decomposition needs loaded."""
        if self.ancestors is None or self.next_seq is None:
            raise RuntimeError(f"the snapshot of {self.cell.cell_id} was taken without its lineage")
        return self.ancestors, self.next_seq


@dataclass(frozen=True)
class SimilarHit:
    """The most similar existing cell to a proposed child (for the duplicate guard)."""

    cell_id: str
    text: str
    score: float


# ---------------------------------------------------------------- the working copy


class _Work:
    """The machine's working copy of one cell while it decides; collects the events."""

    def __init__(self, snap: Snapshot, events: list[NewEvent]) -> None:
        self.snap = snap
        self.run = snap.run
        self.settings = Settings.of(snap.run)
        # Never changed in place: each change makes a new model (model_copy with an update).
        self.cell = snap.cell
        self.tasks = {t.task_id: t for t in snap.tasks}
        self.verdicts = list(snap.verdicts)
        self.citations = list(snap.citations)
        self.events = events
        self.now = snap.now

    def emit(
        self, type_: str, payload: dict[str, Any], task_id: str | None = None, actor: str = "petri"
    ) -> None:
        self.events.append(NewEvent(type_, payload, self.run.run_id, self.cell.cell_id, task_id, actor))

    def ctx(self, **extra: Any) -> Ctx:
        return Ctx(
            preset=self.settings.preset,
            iteration=self.cell.iteration,
            leaf=self.cell.atomic or self.cell.leaf_reason is not None,
            require_approval=self.settings.require_approval,
            stalled_from=self.cell.stalled_from,
            latest={role: v.verdict for role, v in self.latest().items()},
            **extra,
        )

    # -- state changes

    def fire(self, trigger: str, reason: str, fields: dict[str, Any] | None = None, **ctx: Any) -> None:
        row = select(CELL_TABLE, self.cell.state, trigger, self.ctx(**ctx))
        updates = dict(fields or {})
        if row.effect in ("new_cycle", "next_iteration"):
            updates["iteration"] = self.cell.iteration + 1
            updates["step"] = 0
            if row.effect == "new_cycle":
                updates["cycle_start"] = self.cell.iteration + 1
        if row.target in PHASE_OF_STATE:
            updates.setdefault("step", 0)
        if row.target == "decomposing":
            updates["decomposition_round"] = self.cell.decomposition_round + 1
        self._cancel_open_tasks(f"cell left `{self.cell.state}` for `{row.target}`")
        self.emit(
            "cell_state_changed",
            {
                "from": self.cell.state,
                "to": row.target,
                "trigger": trigger,
                "reason": reason,
                "fields": updates,
            },
        )
        self.cell = self.cell.model_copy(update={"state": row.target, **updates})
        self._enter()

    def update(self, reason: str, **fields: Any) -> None:
        self.emit("cell_updated", {"reason": reason, "fields": fields})
        self.cell = self.cell.model_copy(update=fields)

    def _cancel_open_tasks(self, reason: str) -> None:
        for task in list(self.tasks.values()):
            if task.status in ("ready", "leased"):
                self.emit("task_cancelled", {"reason": reason}, task_id=task.task_id)
                self.tasks[task.task_id] = task.model_copy(update={"status": "cancelled"})

    def _enter(self) -> None:
        state = self.cell.state
        if state == "decomposing":
            rnd = self.cell.decomposition_round
            self._create_task("decomposer", "decompose", "decompose", 0, task_id=self._decompose_id(rnd))
        elif state in PHASE_OF_STATE:
            self._start_step(PHASE_OF_STATE[state], 0)
        elif state == "converging":
            self._converge()
        elif (
            state == "waiting"
            and self.snap.children
            and all(c.state in FINAL_STATES for c in self.snap.children)
        ):
            self.fire("children_final", "every child is already final")

    # -- tasks

    def _decompose_id(self, rnd: int) -> str:
        return f"{self.cell.cell_id}.d{rnd}.decomposer"

    def _task_id(self, key: str) -> str:
        return f"{self.cell.cell_id}.i{self.cell.iteration}.{key}"

    def _create_task(
        self, role: str, kind: str, phase: str, step: int, *, task_id: str, opener: str | None = None
    ) -> None:
        brief = ROLES[role].brief
        if opener:
            brief = f"Answer the {opener}'s argument; you may revise your own verdict."
        payload = {
            "role": role,
            "kind": kind,
            "iteration": self.cell.iteration,
            "phase": phase,
            "step": step,
            "opener": opener,
            "brief": brief,
            "ready_at": self.now,
        }
        self.emit("task_created", payload, task_id=task_id)
        self.tasks[task_id] = Task(
            task_id=task_id,
            run_id=self.run.run_id,
            cell_id=self.cell.cell_id,
            role=role,
            kind=kind,
            iteration=self.cell.iteration,
            phase=phase,
            step=step,
            opener=opener,
            status="ready",
            attempt=1,
            ready_at=self.now,
            lease=None,
            fence=0,
            worker=None,
            expires_at=None,
            brief=brief,
            result_hash=None,
            outcome=None,
            created_at=self.now,
            updated_at=self.now,
        )

    def _steps(self, phase: str) -> tuple[tuple[Any, ...], ...]:
        if phase == "debate":
            return debate_steps(self.settings.preset, {role: v.verdict for role, v in self.latest().items()})
        return phase_steps(phase, self.settings.preset)  # type: ignore[arg-type]

    def _start_step(self, phase: str, step: int) -> None:
        steps = self._steps(phase)
        if step >= len(steps):
            self.fire("phase_done", f"{phase} finished")
            return
        if step:
            self.update(f"{phase} step {step + 1}", step=step)
        for member in steps[step]:
            if isinstance(member, Turn):
                self._create_task(
                    member.role,
                    "debate",
                    phase,
                    step,
                    task_id=self._task_id(member.key),
                    opener=member.opener,
                )
            else:
                kind = ROLES[member].kind
                self._create_task(member, kind, phase, step, task_id=self._task_id(member))

    def step_finished(self, phase: str, step: int) -> bool:
        return all(
            t.status in ("done", "submitted")
            for t in self.tasks.values()
            if t.phase == phase
            and t.step == step
            and t.iteration == self.cell.iteration
            and t.status != "cancelled"
        )

    def advance_after(self, task: Task) -> None:
        """Called once `task` is done: move to the next step, phase or decision when its step is complete."""
        phase = PHASE_OF_STATE.get(self.cell.state)
        if phase is None or phase != task.phase or task.kind == "decompose":
            return
        if not self.step_finished(task.phase, task.step):
            return
        if self.cell.state == "evaluation":
            self._evaluate()
            return
        self._start_step(task.phase, task.step + 1)

    # -- decisions

    def latest(self) -> dict[str, convergence.LatestVerdict]:
        latest: dict[str, convergence.LatestVerdict] = {}
        for v in self.verdicts:
            if v.iteration == self.cell.iteration:
                latest[v.role] = convergence.LatestVerdict(v.verdict, v.summary)
        return latest

    def _converge(self) -> None:
        result = convergence.check(
            self.settings.preset,
            self.latest(),
            iteration=self.cell.iteration,
            cycle_start=self.cell.cycle_start,
            max_iterations=self.settings.max_iterations,
        )
        self.emit(
            "convergence_checked",
            {
                "iteration": self.cell.iteration,
                "outcome": result.outcome,
                "gating": dict(result.gating),
                "weakest": result.weakest,
                "weakest_verdict": result.weakest_verdict,
                "directive": result.directive,
                "note": result.note,
            },
        )
        if result.outcome == "short_circuit":
            self.fire("short_circuit", result.note, {"final_reason": result.note}, outcome=result.target)
        elif result.outcome == "converged":
            self.fire("converged", result.note)
        elif result.outcome == "breaker":
            self.fire(
                "breaker",
                result.note,
                {"stalled_from": "converging", "stall_reason": result.note, "directive": result.directive},
            )
        else:
            self.fire("not_converged", result.note, {"directive": result.directive})

    def _evaluate(self) -> None:
        verdict = next(
            (
                v
                for v in reversed(self.verdicts)
                if v.role == "evaluator" and v.iteration == self.cell.iteration
            ),
            None,
        )
        if verdict is None:  # cannot happen: the evaluator's task is done only with a verdict
            raise Rejected("no evaluator verdict recorded", "submit the evaluator's verdict")
        outcome, reason = terminal_outcome(verdict.verdict, self.citations)
        self.fire("evaluated", reason, {"final_reason": reason}, outcome=outcome)


def terminal_outcome(verdict: str, citations: Iterable[Citation]) -> tuple[str, str]:
    """The terminal source rule: validated/disproven need a verified level ≤ 4 citation on that side."""
    outcome = EVALUATION_OUTCOMES[verdict]
    if outcome == "inconclusive":
        return outcome, "the evaluator found the evidence inconclusive"
    side = "supports" if outcome == "validated" else "contradicts"
    levels = sorted(c.level for c in citations if c.stance == side)
    if levels and levels[0] <= TERMINAL_MAX_LEVEL:
        return outcome, f"{verdict} with a verified {side} citation at level {levels[0]}"
    best = f"the best {side} citation is level {levels[0]}" if levels else f"there is no {side} citation"
    return "inconclusive", (
        f"terminal source rule: {verdict} needs a verified {side} citation at level ≤ "
        f"{TERMINAL_MAX_LEVEL}, but {best}"
    )


# ---------------------------------------------------------------- public decisions


def plant(snap: Snapshot, reason: str) -> list[NewEvent]:
    """A `new` cell enters the workflow: decomposition, or the pipeline if it is a leaf."""
    events: list[NewEvent] = []
    _Work(snap, events).fire("plant", reason)
    return events


def new_cell(
    run: Run,
    cell_id: str,
    level: int,
    seq: int,
    text: str,
    now: str,
    *,
    atomic: bool = False,
    bedrock_reason: str | None = None,
    leaf_reason: str | None = None,
) -> Cell:
    """A cell row in state `new` (the projection of a `cell_created` event)."""
    return Cell(
        cell_id=cell_id,
        run_id=run.run_id,
        level=level,
        seq=seq,
        text=text,
        state="new",
        iteration=0,
        cycle_start=0,
        step=0,
        decomposition_round=0,
        atomic=atomic,
        leaf_reason=leaf_reason,
        bedrock_reason=bedrock_reason,
        directive=None,
        summary=None,
        stalled_from=None,
        stall_reason=None,
        flagged=None,
        final_reason=None,
        proposal=None,
        created_at=now,
        updated_at=now,
    )


def cell_created_event(cell: Cell) -> NewEvent:
    return NewEvent(
        "cell_created",
        {
            "level": cell.level,
            "seq": cell.seq,
            "text": cell.text,
            "atomic": cell.atomic,
            "bedrock_reason": cell.bedrock_reason,
            "leaf_reason": cell.leaf_reason,
        },
        cell.run_id,
        cell.cell_id,
    )


def result_hash(result: Mapping[str, Any]) -> str:
    """A stable hash of a submitted payload (for idempotent resubmission)."""
    return hashlib.sha256(json.dumps(result, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class VerifiedCitation:
    """A citation whose quote the service found in the source text."""

    cite: CitationIn
    start: int
    end: int
    score: float


ResultModel = (
    type[DecomposeResult]
    | type[SocraticResult]
    | type[VerdictResult]
    | type[DebateResult]
    | type[SynthesisResult]
)


def result_model(task: Task) -> ResultModel:
    """The pydantic model a task's result must satisfy."""
    if task.kind == "decompose":
        return DecomposeResult
    if task.kind == "debate":
        return DebateResult
    if task.kind == "synthesize":
        return SynthesisResult
    if task.role == "socratic":
        return SocraticResult
    return VerdictResult


def check_verdict(role: Role, verdict: str, citations: Iterable[CitationIn | Citation]) -> None:
    """Reject a verdict outside the role's vocabulary, or one without the citations it needs."""
    if verdict not in role.vocabulary:
        raise Rejected(
            f"verdict {verdict} is not in the {role.name}'s vocabulary",
            f"use one of: {', '.join(role.vocabulary)}",
        )
    rule = role.citation_rule(verdict)
    if rule is None:
        return
    cites = list(citations)
    supporting = sum(1 for c in cites if c.stance == "supports")
    contradicting = len(cites) - supporting
    if (
        len(cites) < rule.min_total
        or supporting < rule.min_supporting
        or contradicting < (rule.min_contradicting)
    ):
        raise Rejected(
            f"{role.name} verdict {verdict} needs {rule.describe()} "
            f"(got {len(cites)}: {supporting} supporting, {contradicting} contradicting)",
            "fetch sources with petri_fetch and cite verbatim quotes, or submit the verdict the evidence "
            "supports",
        )


def decide_submit(
    snap: Snapshot,
    task: Task,
    result: Any,
    cites: list[VerifiedCitation],
    actor: str,
    similar: Mapping[int, SimilarHit | None] | None = None,
    existing: Mapping[str, Neighbour] | None = None,
) -> list[NewEvent]:
    """The events of one accepted submission: the result, its verdict and citations, and what follows."""
    events: list[NewEvent] = []
    w = _Work(snap, events)
    role = ROLES[task.role]
    w.emit(
        "task_submitted",
        {"result": _dump(result), "result_hash": result_hash(_dump(result)), "lease": task.lease},
        task_id=task.task_id,
        actor=actor,
    )
    w.tasks[task.task_id] = task.model_copy(update={"status": "submitted"})
    if isinstance(result, DecomposeResult):
        _decide_decomposition(w, result, similar or {}, existing or {})
        return events
    if isinstance(result, SynthesisResult):
        w.update("cell-lead synthesis", summary=result.summary, directive=result.directive)
        w.advance_after(w.tasks[task.task_id])
        return events
    verdict: str | None
    summary: str
    if isinstance(result, DebateResult):
        verdict, summary = result.verdict, result.response
        earlier = [c for c in w.citations if c.role == role.name and c.iteration == task.iteration]
        if verdict is not None:
            check_verdict(role, verdict, [*earlier, *result.citations])
    else:
        assert isinstance(result, SocraticResult | VerdictResult)
        verdict, summary = result.verdict, result.summary
        check_verdict(role, verdict, result.citations if isinstance(result, VerdictResult) else [])
    for n, vc in enumerate(cites, 1):
        payload: dict[str, Any] = {
            "citation_id": f"{task.task_id}#{n}",
            "role": task.role,
            "iteration": task.iteration,
            "source_id": vc.cite.source_id,
            "quote": vc.cite.quote,
            "stance": vc.cite.stance,
            "level": vc.cite.level,
            "finding": vc.cite.finding,
            "match_start": vc.start,
            "match_end": vc.end,
            "match_score": vc.score,
        }
        w.emit("citation_recorded", payload, task_id=task.task_id)
        w.citations.append(Citation(cell_id=w.cell.cell_id, task_id=task.task_id, **payload))
    if verdict is not None:
        w.emit(
            "verdict_recorded",
            {
                "role": task.role,
                "iteration": task.iteration,
                "kind": task.kind,
                "verdict": verdict,
                "summary": summary,
            },
            task_id=task.task_id,
        )
        w.verdicts.append(
            Verdict(
                task_id=task.task_id,
                cell_id=w.cell.cell_id,
                role=role.name,
                iteration=task.iteration,
                kind=task.kind,
                verdict=verdict,
                summary=summary,
                at=w.now,
            )
        )
    w.advance_after(w.tasks[task.task_id])
    return events


def _dump(result: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = result.model_dump(mode="json", exclude_none=True)
    return dumped


def check_decomposition(
    snap: Snapshot,
    result: DecomposeResult,
    similar: Mapping[int, SimilarHit | None],
    existing: Mapping[str, Neighbour],
) -> None:
    """Reject a decomposition that breaks a cap, restates a claim, or would make a cycle."""
    settings = Settings.of(snap.run)
    cell = snap.cell
    if result.atomic:
        return
    children = result.children
    if len(children) > settings.child_cap:
        raise Rejected(
            f"{len(children)} children proposed for {cell.cell_id}; at most {settings.child_cap} are allowed",
            "keep only the load-bearing premises, or mark the claim atomic with a bedrock_reason",
        )
    ancestors, _ = snap.lineage()
    problems: list[str] = []
    new_texts: list[str] = []
    current = {c.cell_id for c in snap.children}
    for i, child in enumerate(children):
        label = f"child {i + 1}"
        if child.existing_cell:
            ref = existing.get(child.existing_cell)
            if ref is None:
                problems.append(f"{label}: existing_cell {child.existing_cell} does not exist")
            elif ref.cell_id == cell.cell_id or ref.cell_id in ancestors:
                problems.append(
                    f"{label}: linking {ref.cell_id} would make a cycle (it is this cell "
                    "or one of its ancestors)"
                )
            elif ref.cell_id in current:
                problems.append(f"{label}: {ref.cell_id} is already a child of {cell.cell_id}")
            continue
        if is_restatement(child.text, cell.text):
            problems.append(f"{label} restates its parent claim")
            continue
        twin = next((t for t in new_texts if is_restatement(child.text, t)), None)
        if twin is not None:
            problems.append(f"{label} restates a sibling ({twin[:60]!r})")
            continue
        sibling = next((c for c in snap.children if is_restatement(child.text, c.text)), None)
        if sibling is not None:
            problems.append(f"{label} restates existing child {sibling.cell_id}")
            continue
        hit = similar.get(i)
        if hit is not None:
            if hit.cell_id in ancestors:
                problems.append(f"{label} restates ancestor {hit.cell_id}: that would be circular")
            else:
                problems.append(
                    f"{label} duplicates existing cell {hit.cell_id} ({hit.text[:60]!r}); "
                    f"link it with existing_cell: {hit.cell_id!r}"
                )
            continue
        new_texts.append(child.text)
    if problems:
        raise Rejected(
            "decomposition refused: " + "; ".join(problems),
            "send sub-claims that each say something new, or link existing cells with existing_cell",
        )


def _decide_decomposition(
    w: _Work,
    result: DecomposeResult,
    similar: Mapping[int, SimilarHit | None],
    existing: Mapping[str, Neighbour],
) -> None:
    check_decomposition(w.snap, result, similar, existing)
    if result.atomic:
        w.update("declared atomic", atomic=True, bedrock_reason=result.bedrock_reason)
        w.fire("atomic", f"bedrock: {result.bedrock_reason}")
        return
    proposal = {
        "round": w.cell.decomposition_round,
        "children": [c.model_dump(mode="json", exclude_none=True) for c in result.children],
    }
    if w.settings.require_approval:
        w.update("decomposition proposed", proposal=proposal)
        w.fire("decomposed", "decomposition awaits approval")
        return
    apply_decomposition(w, result.children, existing)


def apply_decomposition(
    w: _Work, children: list[ChildIn], existing: Mapping[str, Neighbour], reason: str = "decomposed"
) -> None:
    """Create the children (or link existing cells) and put the parent to wait for them."""
    level = w.cell.level + 1
    _, next_seq = w.snap.lineage()
    linked: list[Neighbour] = list(w.snap.children)
    for child in children:
        if child.existing_cell:
            ref = existing[child.existing_cell]
            w.events.append(
                NewEvent(
                    "edge_added",
                    {"child_id": ref.cell_id, "parent_id": w.cell.cell_id, "relation": child.relation},
                    w.run.run_id,
                    ref.cell_id,
                )
            )
            linked.append(ref)
            continue
        seq = next_seq.get(level, 1)
        next_seq[level] = seq + 1
        cell_id = f"{w.run.run_id}-{level}-{seq:02d}"
        at_cap = level >= w.settings.max_depth
        leaf_reason = "atomic" if child.atomic else ("depth cap" if at_cap else None)
        cell = new_cell(
            w.run,
            cell_id,
            level,
            seq,
            child.text,
            w.now,
            atomic=child.atomic,
            bedrock_reason=child.bedrock_reason,
            leaf_reason=leaf_reason,
        )
        w.events.append(cell_created_event(cell))
        w.events.append(
            NewEvent(
                "edge_added",
                {"child_id": cell_id, "parent_id": w.cell.cell_id, "relation": child.relation},
                w.run.run_id,
                cell_id,
            )
        )
        child_snap = Snapshot(run=w.run, cell=cell, next_seq=next_seq, now=w.now)
        _Work(child_snap, w.events).fire("plant", f"child of {w.cell.cell_id}")
        linked.append(Neighbour(cell_id, child.text, "planted", level, child.relation))
    w.snap.children = linked
    w.fire(
        reason if reason in ("decomposed", "approved", "split") else "decomposed",
        f"{len(children)} sub-claim(s)",
    )


def decide_approval(
    snap: Snapshot, approve: bool, note: str | None, existing: Mapping[str, Neighbour]
) -> list[NewEvent]:
    """A human approves the proposed decomposition (children are created) or rejects it (redo)."""
    events: list[NewEvent] = []
    w = _Work(snap, events)
    if w.cell.state != "awaiting_approval" or not w.cell.proposal:
        raise Rejected(
            f"{w.cell.cell_id} has no decomposition awaiting approval (state `{w.cell.state}`)",
            "approve only cells listed as awaiting approval in `petri status`",
        )
    if not approve and not (note or "").strip():
        raise Rejected(
            "a rejection needs a note: the decomposer redoes the decomposition from it",
            f'say what to change: petri approve {w.cell.cell_id} --reject --note "…"',
        )
    w.emit("human_decided", {"action": "approve" if approve else "reject", "note": note}, actor="human")
    if approve:
        children = [ChildIn(**c) for c in w.cell.proposal["children"]]
        w.update("decomposition approved", proposal=None)
        apply_decomposition(w, children, existing, reason="approved")
    else:
        w.update("decomposition rejected", proposal=None, directive=note)
        w.fire("rejected", f"a human rejected the decomposition: {note}")
    return events


def decide_children_final(snap: Snapshot) -> list[NewEvent]:
    """A waiting parent whose children are all final enters the pipeline."""
    if snap.cell.state != "waiting" or not all(c.state in FINAL_STATES for c in snap.children):
        return []
    events: list[NewEvent] = []
    _Work(snap, events).fire("children_final", "every child is final")
    return events


def decide_task_stalled(snap: Snapshot, task: Task, reason: str) -> list[NewEvent]:
    """A task past its attempt cap (or given back as needs-human) parks its cell for a human."""
    events: list[NewEvent] = []
    w = _Work(snap, events)
    w.emit("task_stalled", {"reason": reason}, task_id=task.task_id)
    w.tasks[task.task_id] = task.model_copy(update={"status": "stalled"})
    if w.cell.state in ACTIVE_STATES:
        w.fire(
            "task_stalled",
            reason,
            {"stalled_from": w.cell.state, "stall_reason": f"task {task.task_id}: {reason}"},
        )
    return events


def decide_resolve(
    snap: Snapshot,
    action: str,
    *,
    guidance: str | None = None,
    verdict: str | None = None,
    reason: str | None = None,
    children: list[str] | None = None,
) -> list[NewEvent]:
    """A human's way out of a parked or final cell: requeue, close, split, reopen or acknowledge."""
    events: list[NewEvent] = []
    w = _Work(snap, events)
    state = w.cell.state
    w.emit(
        "human_decided",
        {"action": action, "guidance": guidance, "verdict": verdict, "reason": reason, "children": children},
        actor="human",
    )
    if action == "requeue":
        w.fire(
            "requeue",
            f"requeued by a human: {guidance or 'no guidance'}",
            {"directive": guidance or w.cell.directive, "stall_reason": None, "flagged": None},
        )
    elif action == "close":
        if verdict not in FINALS:
            raise Rejected(f"cannot close with `{verdict}`", f"close with one of: {', '.join(FINALS)}")
        why = f"closed by a human: {reason or 'no reason given'}"
        w.fire("close", why, {"final_reason": why, "flagged": None}, outcome=verdict)
    elif action == "split":
        texts = [t.strip() for t in children or [] if t.strip()]
        if state != "stalled":
            raise Rejected(
                f"cannot split {w.cell.cell_id} in state `{state}`",
                "split only a stalled cell; reopen a final one instead",
            )
        if len(texts) < 2:
            raise Rejected("a split needs at least two sub-claims", "give --split TEXT at least twice")
        if w.cell.level + 1 > w.settings.max_depth:
            raise Rejected(
                f"{w.cell.cell_id} is at the maximum depth {w.settings.max_depth}",
                "requeue it with guidance, or close it with a verdict",
            )
        result = DecomposeResult(atomic=False, children=[ChildIn(text=t) for t in texts])
        check_decomposition(w.snap, result, {}, {})
        w.update("split by a human", stall_reason=None, flagged=None)
        apply_decomposition(w, result.children, {}, reason="split")
    elif action == "reopen":
        w.fire(
            "reopen",
            f"reopened by a human: {guidance or reason or 'no reason given'}",
            {"directive": guidance or w.cell.directive, "flagged": None, "final_reason": None},
        )
    elif action == "acknowledge":
        if not w.cell.flagged:
            raise Rejected(f"{w.cell.cell_id} is not flagged", "nothing to acknowledge")
        w.update("flag acknowledged by a human", flagged=None)
    else:
        raise Rejected(f"unknown resolution `{action}`", "use requeue, close, split, reopen or acknowledge")
    return events


def decide_reopen(snap: Snapshot, reason: str, directive: str | None) -> list[NewEvent]:
    """New evidence reopens a final cell as a new iteration (history kept)."""
    events: list[NewEvent] = []
    w = _Work(snap, events)
    w.fire(
        "reopen", reason, {"directive": directive or w.cell.directive, "flagged": None, "final_reason": None}
    )
    return events


def decide_flag(run_id: str, cell_ids: Iterable[str], reason: str) -> list[NewEvent]:
    """Flag dependents for a human (never silently requeued)."""
    return [
        NewEvent("cell_updated", {"reason": reason, "fields": {"flagged": reason}}, run_id, cid)
        for cid in cell_ids
    ]
