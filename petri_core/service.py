"""The use cases: each loads state, asks the machine, and appends the events in one transaction.

The MCP server and the CLI are two doors into this class; neither holds a rule of its own.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from . import context, machine, views
from .errors import DishError, NotFound, Rejected
from .machine import Neighbour, NewEvent, SimilarHit, Snapshot, VerifiedCitation
from .models import (
    FINAL_STATES,
    CellsOut,
    ClaimOut,
    DecomposeResult,
    FailOut,
    FetchOut,
    HeartbeatOut,
    HumanItem,
    NextOut,
    ResolveOut,
    Run,
    SearchHit,
    SearchOut,
    SimilarCell,
    Source,
    StartOut,
    SubmitOut,
    Task,
    TaskOut,
)
from .quotes import MIN_QUOTE_CHARS, closest_passage, find_quote, normalize
from .roster import DEFAULT_PRESET, PRESETS, ROLES
from .schema import explain, lean
from .similarity import find_restatement, similarity, words
from .store import Store, VerifyReport, iso

if TYPE_CHECKING:
    from .fetch import FetchPolicy

Clock = Callable[[], datetime]
MAX_CLAIM_CHARS = 1000
#: Caps on a run's clarifications: how many, and the characters of each question and answer.
MAX_CLARIFICATIONS, MAX_QUESTION_CHARS, MAX_ANSWER_CHARS = 20, 600, 4000
RETRY_BASE_S = 30
RETRY_MAX_S = 1800
DEFAULTS: dict[str, Any] = {
    "child_cap": 5,
    "max_depth": 3,
    "max_iterations": 3,
    "attempt_cap": 3,
    "lease_seconds": 900,
}
SETTING_RANGES: dict[str, tuple[int, int]] = {
    "child_cap": (1, 12),
    "max_depth": (0, 6),
    "max_iterations": (1, 10),
    "attempt_cap": (1, 10),
    "lease_seconds": (30, 86400),
}

#: Stores a forked child inherited from its parent's threads: kept referenced, never used or closed
#: (closing would drop locks and checkpoint the WAL under the parent's feet).
_FORKED: list[Store] = []


def utcnow() -> datetime:
    return datetime.now(UTC)


def task_out(task: Task) -> TaskOut:
    return _dispatched(task.task_id, task.cell_id, task.role, task.kind, task.brief)


def _dispatched(task_id: str, cell_id: str, role: str, kind: str, brief: str) -> TaskOut:
    """A task as the main agent dispatches it: to the agent of its role."""
    return TaskOut(
        task_id=task_id, cell_id=cell_id, role=role, kind=kind, agent=ROLES[role].agent, brief=brief
    )


def lean_schema(model: type[BaseModel], role: str | None = None) -> dict[str, Any]:
    """A compact result schema: no titles or descriptions, `$defs` inlined, the role's verdicts as an enum."""
    return copy.deepcopy(_lean_schema(model, role))  # callers may mutate their copy


@functools.lru_cache(maxsize=64)
def _lean_schema(model: type[BaseModel], role: str | None) -> dict[str, Any]:
    schema = lean(model.model_json_schema(), closed=True, drop=("description",))
    if role and "verdict" in schema.get("properties", {}):
        schema["properties"]["verdict"] = {"enum": list(ROLES[role].vocabulary)}
    return schema


def _slug(claim: str, taken: set[str]) -> str:
    initials = "".join(w[0] for w in words(claim)[:3] if w[0].isalpha()) or "run"
    base = re.sub(r"[^a-z]", "", initials)[:4] or "run"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}{n}"
    return candidate


class SourceCache:
    """Recently cited sources, by id. A source never changes once stored (its id is its content's
    hash), so a cited one need not be read again; bounded by the characters of text it holds."""

    def __init__(self, max_chars: int = 16_000_000) -> None:
        self.max_chars = max_chars
        self._kept: dict[str, Source] = {}  # oldest first
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, source_id: str) -> Source | None:
        with self._lock:
            return self._kept.get(source_id)

    def put(self, source: Source) -> Source:
        with self._lock:
            if source.source_id not in self._kept and len(source.text) <= self.max_chars:
                self._kept[source.source_id] = source
                self._chars += len(source.text)
                while self._chars > self.max_chars:
                    self._chars -= len(self._kept.pop(next(iter(self._kept))).text)
        return source


class Service:
    """Petri's use cases over one dish."""

    def __init__(
        self,
        dish: Path,
        clock: Clock = utcnow,
        fetch_policy: FetchPolicy | None = None,
        cache_ttl_s: float = 24 * 3600,
    ) -> None:
        self.dish = dish
        self.clock = clock
        self._fetch_policy = fetch_policy
        self.cache_ttl_s = cache_ttl_s
        self._local = threading.local()
        self._stores: list[Store] = []
        self._stores_lock = threading.Lock()
        self._sources = SourceCache()

    def config(self) -> dict[str, Any]:
        """The dish's settings file (`config.json` beside the database), or empty."""
        path = self.dish / "config.json"
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DishError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise DishError(f"{path} must hold a JSON object")
        return data

    def fetch_policy(self) -> FetchPolicy:
        """The fetch policy: the one given, else the environment (PETRI_FETCH_ALLOW_PRIVATE,
        PETRI_FETCH_PROXY) with the dish config's `fetch` settings over it."""
        from .fetch import FetchPolicy

        if self._fetch_policy is not None:
            return self._fetch_policy
        policy = FetchPolicy.from_env()
        config = self.config().get("fetch", {})
        if config.get("allow_private"):
            policy = dataclasses.replace(policy, allow_private=True)
        if config.get("proxy"):
            policy = dataclasses.replace(policy, proxy=str(config["proxy"]))
        return policy

    def open(self, *, create: bool = True) -> Store:
        """A fresh store connection of the caller's own (it closes it)."""
        return Store(self.dish, create=create)

    @contextlib.contextmanager
    def _store(self, *, create: bool = True) -> Iterator[Store]:
        """This thread's store, kept open from call to call (tools run on worker threads, and a
        connection is used by one thread at a time). Opening one costs about half a millisecond —
        connect, the WAL and migration checks — which a small call would otherwise pay each time;
        and while one stays open the WAL is never checkpointed away between calls (benchmarks P1)."""
        held = getattr(self._local, "held", None)
        if held is None or held[0] != os.getpid():  # none yet, or one inherited across a fork
            if held is not None:
                _FORKED.append(held[1])  # never close (nor use) a parent's connection in a child
            store = Store(self.dish, create=create)
            with self._stores_lock:
                self._stores.append(store)
            held = self._local.held = (os.getpid(), store)
        store = held[1]
        if store.conn.in_transaction:  # a call interrupted mid-transaction (KeyboardInterrupt)
            store.conn.execute("ROLLBACK")
        yield store

    def close(self) -> None:
        """Close every kept connection (tests, and tools that hand a dish to another process)."""
        with self._stores_lock:
            stores, self._stores = self._stores, []
        for store in stores:
            with contextlib.suppress(sqlite3.Error):
                store.close()
        self._local = threading.local()

    def now(self) -> str:
        return iso(self.clock())

    # ---------------------------------------------------------------- helpers inside a transaction

    def _snapshot(self, st: Store, cell_id: str, now: str, *, lineage: bool = True) -> Snapshot:
        """What the machine decides on; without `lineage` (ancestors, next free seqs), which only a
        decomposition reads, two queries fewer (a verdict's submit)."""
        cell = st.cell(cell_id)
        run = st.run(cell.run_id)
        children = [
            Neighbour(c.cell_id, c.text, c.state, c.level, e.relation) for e, c in st.children(cell_id)
        ]
        return Snapshot(
            run=run,
            cell=cell,
            tasks=st.tasks_of_cell(cell_id, cell.iteration),
            verdicts=st.verdicts(cell_id, cell.iteration),
            citations=st.citations(cell_id),
            children=children,
            ancestors=frozenset(st.ancestors(cell_id)) if lineage else None,
            next_seq=st.next_seqs(run.run_id) if lineage else None,
            now=now,
        )

    def _commit(self, st: Store, events: Sequence[NewEvent], now: str) -> list[NewEvent]:
        """Append events, then everything they cause: waking parents, flagging, the run's progress."""
        done: list[NewEvent] = []
        queue = list(events)
        while queue:
            st.append(queue, now)
            done += queue
            follow: list[NewEvent] = []
            finished = [
                e.cell_id
                for e in queue
                if e.type == "cell_state_changed" and e.payload["to"] in FINAL_STATES and e.cell_id
            ]
            for cell_id in dict.fromkeys(finished):
                for parent in st.parents(cell_id):
                    follow += machine.decide_children_final(self._snapshot(st, parent.cell_id, now))
            queue = follow
        for run_id in sorted({e.run_id for e in done if e.run_id and _moves_run(e)}):
            progress = self._run_progress(st, run_id)
            if progress:
                st.append(progress, now)
                done += progress
        return done

    def _run_progress(self, st: Store, run_id: str) -> list[NewEvent]:
        """The run's next state, if its cells moved it. A run is complete while its root and every
        other cell of it are final: a cell reopened under a final root (new evidence) makes the run
        grow again until that cell is final once more, so its work is dispatched, not orphaned."""
        run = st.run(run_id)
        counts = st.cell_counts(run_id)
        root = st.cell(run.root_cell_id)
        pending = any(counts.get(s) for s in PENDING_STATES)
        settled = root.state in FINAL_STATES and all(s in FINAL_STATES for s, n in counts.items() if n)
        trigger = None
        if run.state in ("decomposing", "growing") and settled:
            trigger = "root_final"
        elif run.state == "complete" and not settled:
            trigger = "reopened"
        elif run.state == "decomposing" and not pending:
            trigger = "decomposition_done"
        elif run.state == "growing" and pending:
            trigger = "decomposition_resumed"
        if trigger is None:
            return []
        row = machine.select_run(run.state, trigger)
        return [
            NewEvent("run_state_changed", {"from": run.state, "to": row.target, "trigger": trigger}, run_id)
        ]

    def _reap(self, st: Store, now: str) -> list[NewEvent]:
        """Return expired leases to the queue (attempt+1), or park the task past its attempt cap."""
        done: list[NewEvent] = []
        for task in st.expired_leases(now):
            done += self._release(st, task, now, cause="lease expired", retry_at=now)
        return done

    def _release(
        self, st: Store, task: Task, now: str, *, cause: str, retry_at: str, counts: bool = True
    ) -> list[NewEvent]:
        """Back to the queue as the next attempt, or parked past the attempt cap; a failure that
        does not count (a provider's rate limit, a run stopped by its user) retries as the same attempt."""
        cap = st.run(task.run_id).settings["attempt_cap"]
        if counts and task.attempt + 1 > cap:
            snap = self._snapshot(st, task.cell_id, now)
            events = machine.decide_task_stalled(snap, task, f"{cause}; attempt cap {cap} reached")
        else:
            events = [
                NewEvent(
                    "task_released",
                    {"cause": cause, "attempt": task.attempt + int(counts), "ready_at": retry_at},
                    task.run_id,
                    task.cell_id,
                    task.task_id,
                )
            ]
        return self._commit(st, events, now)

    # ---------------------------------------------------------------- start, next

    def start(
        self,
        claim: str,
        preset: str = DEFAULT_PRESET,
        clarifications: Iterable[dict[str, str]] = (),
        require_approval: bool = False,
        **settings: int,
    ) -> StartOut:
        """Create a run from a claim: its root cell and the first task."""
        claim = " ".join(claim.split())
        if not claim:
            raise Rejected("the claim is empty", "pass the claim to research as one sentence")
        if len(claim) > MAX_CLAIM_CHARS:
            raise Rejected(
                f"the claim is {len(claim)} characters; at most {MAX_CLAIM_CHARS} are allowed",
                "state the claim in one or two sentences; put context into clarifications",
            )
        if preset not in PRESETS:
            raise Rejected(f"unknown preset {preset!r}", f"use one of: {', '.join(PRESETS)}")
        unknown = set(settings) - set(DEFAULTS)
        if unknown:
            raise Rejected(f"unknown settings {sorted(unknown)}", f"allowed: {', '.join(DEFAULTS)}")
        values = {**DEFAULTS, **settings}
        wrong = [
            f"{key} {values[key]!r}"
            for key, (low, high) in SETTING_RANGES.items()
            if type(values[key]) is not int or not low <= values[key] <= high
        ]
        if wrong:
            raise Rejected(
                f"out of range: {', '.join(wrong)}",
                "whole numbers within "
                + ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in SETTING_RANGES.items()),
            )
        clar = _clarifications(clarifications)
        now = self.now()
        with self._store() as st, st.write():
            run_id = _slug(claim, st.run_ids())
            root_id = f"{run_id}-0-01"
            payload = {
                "claim": claim,
                "preset": preset,
                "root_cell_id": root_id,
                "clarifications": clar,
                "settings": {
                    **values,
                    "roles": sorted(PRESETS[preset]),
                    "require_approval": require_approval,
                },
            }
            st.append([NewEvent("run_started", payload, run_id)], now)
            run = st.run(run_id)
            leaf = values["max_depth"] == 0
            root = machine.new_cell(run, root_id, 0, 1, claim, now, leaf_reason="depth cap" if leaf else None)
            st.append(
                [
                    machine.cell_created_event(root),
                    NewEvent(
                        "run_state_changed",
                        {"from": "intake", "to": "decomposing", "trigger": "begin"},
                        run_id,
                    ),
                ],
                now,
            )
            snap = Snapshot(run=st.run(run_id), cell=root, next_seq={0: 2}, now=now)
            self._commit(st, machine.plant(snap, "root claim"), now)
            tasks = [task_out(t) for t in st.open_tasks(run_id)]
        return StartOut(run_id=run_id, root_cell_id=root_id, tasks=tasks)

    def next(self, run_id: str | None = None, limit: int = 10) -> NextOut:
        """Ready tasks to dispatch, the run's counts, and what needs a human."""
        if not 1 <= limit <= 50:
            raise Rejected(f"limit {limit} is out of range", "use a limit from 1 to 50")
        now = self.now()
        with self._store() as st:
            self._reap_if_due(st, now)
            return self._next(st, run_id, limit, now)

    def _reap_if_due(self, st: Store, now: str) -> None:
        """Reap expired leases, taking the write lock only when there is one (reads run in parallel)."""
        with st.read():
            due = bool(st.expired_leases(now))
        if due:
            with st.write():
                self._reap(st, now)

    def _next(self, st: Store, run_id: str | None, limit: int, now: str) -> NextOut:
        with st.read():
            run = st.run(run_id) if run_id else st.latest_run()
            if run is None:
                return NextOut(
                    run_id=None,
                    run_state=None,
                    tasks=[],
                    counts={},
                    needs_human=[],
                    done=False,
                    hint="no runs yet: start one with petri_start(claim)",
                )
            scope = st.subtree(run.root_cell_id)
            tasks = [] if run.state == "halted" else st.ready_tasks(scope, now, limit)
            counts = st.cell_counts(run.run_id)
            inbox = [HumanItem(**views.inbox_item(c)) for c in st.inbox_rows() if c["cell_id"] in scope]
            open_ = st.open_tasks()
            leased = sum(1 for t in open_ if t.status == "leased" and t.cell_id in scope)
            waiting = [t for t in open_ if t.status == "ready" and t.cell_id in scope and t.ready_at > now]
        # Complete and nothing left to dispatch or wait for (a dish from before runs grew again on
        # new evidence can hold a complete run with a reopened cell's tasks: those still run).
        done = run.state == "complete" and not (tasks or leased or waiting)
        if done:
            hint = f"run complete; report with `petri report {run.run_id}`"
        elif run.state == "halted":
            hint = f"run halted by the user; `petri resume {run.run_id}` continues it"
        elif tasks:
            hint = (
                "dispatch every task to its agent, in parallel, passing only the task id; "
                "then call petri_next again"
            )
        elif leased:
            hint = f"{leased} task(s) in progress: wait for their agents, then call petri_next again"
        elif waiting:
            hint = f"{len(waiting)} task(s) wait to be retried from {min(t.ready_at for t in waiting)}"
        elif inbox:
            hint = "the run needs a human: show the user each needs_human item and its command"
        else:
            hint = "nothing to do"
        return NextOut(
            run_id=run.run_id,
            run_state=run.state,
            tasks=[task_out(t) for t in tasks],
            counts=counts,
            needs_human=inbox,
            done=done,
            hint=hint,
        )

    # ---------------------------------------------------------------- claim, heartbeat

    def claim(self, task_id: str, worker: str) -> ClaimOut:
        """Lease a task and return its context packet and result schema."""
        worker = worker.strip()
        if not worker or len(worker) > 120:
            raise Rejected(
                "worker must be a non-empty name (at most 120 characters)",
                "pass your agent name, e.g. petri-skeptic",
            )
        now = self.now()
        with self._store() as st:
            with st.write():
                task, lease, expires = self._lease(st, task_id, worker, now)
            with st.read():  # after the commit: the write lock is not held while the packet is built
                packet = self._packet(st, st.task(task_id), now)
        model = machine.result_model(task)
        return ClaimOut(
            task_id=task_id,
            lease=lease,
            expires_at=expires,
            role=task.role,
            kind=task.kind,
            context=packet,
            result_schema=lean_schema(model, task.role if task.kind != "decompose" else None),
        )

    def _lease(self, st: Store, task_id: str, worker: str, now: str) -> tuple[Task, str, str]:
        """Inside a write: check the task can be claimed by `worker`, lease it; (task, lease, expires_at)."""
        self._reap(st, now)
        task = st.task(task_id)
        run = st.run(task.run_id)
        claimed_role = worker.removeprefix("petri-")
        if worker.startswith("petri-") and claimed_role in ROLES and claimed_role != task.role:
            raise Rejected(
                f"task {task_id} is for petri-{task.role}, not {worker}",
                f"dispatch it to the petri-{task.role} agent",
            )
        if run.state == "halted":
            raise Rejected(f"run {run.run_id} is halted", f"ask the user to run `petri resume {run.run_id}`")
        self._check_claimable(task, now)
        fence = task.fence + 1
        lease = f"{fence}.{secrets.token_hex(8)}"
        expires = iso(datetime.fromisoformat(now) + timedelta(seconds=run.settings["lease_seconds"]))
        claimed = NewEvent(
            "task_claimed",
            {
                "worker": worker,
                "lease": lease,
                "fence": fence,
                "expires_at": expires,
                "attempt": task.attempt,
            },
            task.run_id,
            task.cell_id,
            task.task_id,
            f"worker:{worker}",
        )
        st.append([claimed], now)
        return task, lease, expires

    @staticmethod
    def _check_claimable(task: Task, now: str) -> None:
        if task.status == "ready" and task.ready_at <= now:
            return
        if task.status == "ready":
            raise Rejected(
                f"task {task.task_id} waits for a retry until {task.ready_at}",
                "take another task from petri_next, or claim it after that time",
            )
        reasons = {
            "leased": f"task {task.task_id} is leased by {task.worker} until {task.expires_at}",
            "submitted": f"task {task.task_id} was already submitted",
            "done": f"task {task.task_id} was already submitted",
            "cancelled": f"task {task.task_id} was cancelled: its cell moved on",
            "stalled": f"task {task.task_id} is parked for a human",
        }
        raise Rejected(reasons[task.status], "call petri_next for the tasks that are ready now")

    def _packet(self, st: Store, task: Task, now: str) -> dict[str, Any]:
        cell = st.cell(task.cell_id)
        run = st.run(cell.run_id)
        citations = context.rank_citations(st.citations(cell.cell_id))[: context.MAX_CITATIONS]
        sources = {c.source_id: st.source(c.source_id) for c in citations}
        evidence = [st.source(e["source_id"]) for e in st.evidence(cell.cell_id)[: context.MAX_EVIDENCE]]
        children = [(e.relation, c) for e, c in st.children(cell.cell_id)]
        return context.build(
            task=task,
            cell=cell,
            root_claim=run.claim,
            parents=st.parents(cell.cell_id),
            children=children,
            citations=citations,
            sources=sources,
            verdicts=st.verdicts(cell.cell_id, cell.iteration),
            evidence=evidence,
            now=now,
        )

    @staticmethod
    def _leased(task: Task, lease: str, now: str) -> Task:
        """`task`, if `lease` is its current, unexpired lease; else why not and what to do."""
        task_id = task.task_id
        if task.status != "leased" or task.lease != lease:
            if task.status == "ready" and not task.fence:  # no lease was ever handed out
                raise Rejected(
                    f"task {task_id} is not claimed; lease {lease!r} was never issued for it",
                    f"claim it with petri_claim(task_id={task_id!r}, worker) and use the lease it returns",
                )
            if task.status == "leased":
                problem = f"lease {lease!r} is stale: task {task_id} is now leased to {task.worker}"
            elif task.status == "ready":
                problem = f"lease {lease!r} is stale: task {task_id} was returned to the queue"
            else:
                problem = f"task {task_id} is {task.status}; lease {lease!r} is no longer valid"
            raise Rejected(problem, "stop work on this task and call petri_next for current tasks")
        if task.expires_at is not None and task.expires_at <= now:
            raise Rejected(
                f"your lease on {task_id} expired at {task.expires_at}",
                "the task goes back to the queue; claim it again if petri_next offers it",
            )
        return task

    def heartbeat(self, task_id: str, lease: str) -> HeartbeatOut:
        """Extend a lease that is still valid."""
        now = self.now()
        with self._store() as st, st.write():
            task = self._leased(st.task(task_id), lease, now)
            seconds = st.run(task.run_id).settings["lease_seconds"]
            expires = iso(datetime.fromisoformat(now) + timedelta(seconds=seconds))
            st.append(
                [
                    NewEvent(
                        "lease_renewed",
                        {"lease": lease, "expires_at": expires},
                        task.run_id,
                        task.cell_id,
                        task_id,
                        f"worker:{task.worker}",
                    )
                ],
                now,
            )
        return HeartbeatOut(task_id=task_id, lease=lease, expires_at=expires)

    # ---------------------------------------------------------------- submit, fail

    def submit(self, task_id: str, lease: str, result: Any) -> SubmitOut:
        """Validate a task's result and apply the transitions it causes, in one transaction.

        The result is parsed and its quotes are found in their sources before the write lock is
        taken (sources never change, and other writers wait on that lock); inside it the lease is
        checked again, and the machine decides on the state as it is then. The reads before it need
        no snapshot of their own: the task is read once, and sources never change."""
        now = self.now()
        with self._store() as st:
            task = st.task(task_id)
            again = self._resubmitted(task, lease, result)
            if again is not None:
                return again
            task = self._leased(task, lease, now)
            parsed = self._parse(task, result)
            cites = self._verify_citations(st, getattr(parsed, "citations", []))
            with st.write():
                task = st.task(task_id)
                again = self._resubmitted(task, lease, result)  # a twin submission got there first
                if again is not None:
                    return again
                task = self._leased(task, lease, now)
                return self._apply_submit(st, task, parsed, cites, now)

    def _resubmitted(self, task: Task, lease: str, result: Any) -> SubmitOut | None:
        """The first outcome again, if this lease already submitted this very result; else None
        when it has not submitted (a different result is refused)."""
        if task.status not in ("submitted", "done") or task.lease != lease:
            return None
        if isinstance(result, dict) and task.outcome is not None:
            parsed = self._parse(task, result)
            if machine.result_hash(machine._dump(parsed)) == task.result_hash:
                return SubmitOut(**task.outcome)
        raise Rejected(
            f"task {task.task_id} was already submitted with a different result",
            "a task is submitted once; call petri_next for current tasks",
        )

    def _apply_submit(
        self, st: Store, task: Task, parsed: Any, cites: list[VerifiedCitation], now: str
    ) -> SubmitOut:
        """Inside a write: decide, append every transition, and record the outcome on the task."""
        snap = self._snapshot(st, task.cell_id, now, lineage=isinstance(parsed, DecomposeResult))
        similar: dict[int, SimilarHit | None] = {}
        existing: dict[str, Neighbour] = {}
        if isinstance(parsed, DecomposeResult):
            similar, existing = self._decomposition_lookups(st, snap, parsed)
        events = machine.decide_submit(snap, task, parsed, cites, f"worker:{task.worker}", similar, existing)
        done = self._commit(st, events, now)
        moves = [
            e.payload["to"] for e in done if e.type == "cell_state_changed" and e.cell_id == task.cell_id
        ]
        out = SubmitOut(
            accepted=True,
            cell_id=task.cell_id,
            cell_state=moves[-1] if moves else snap.cell.state,
            changes=describe(done),
            next=ready_created(done),
        )
        completed = NewEvent(
            "task_completed",
            {"outcome": out.model_dump(mode="json")},
            task.run_id,
            task.cell_id,
            task.task_id,
        )
        st.append([completed], now)
        return out

    @staticmethod
    def _parse(task: Task, result: Any) -> Any:
        model = machine.result_model(task)
        if not isinstance(result, dict):
            raise Rejected(
                "result must be a JSON object",
                f"send the object described by result_schema for a {task.role} {task.kind} task",
            )
        try:
            return model.model_validate(result)
        except ValidationError as exc:
            fields = ", ".join(lean_schema(model).get("properties", {}))
            raise Rejected(
                f"result does not match the {task.role} schema: {explain(exc, 'result')}",
                f"send an object with fields {fields} (see result_schema from petri_claim)",
            ) from None

    def _verify_citations(self, st: Store, cites: list[Any]) -> list[VerifiedCitation]:
        verified = []
        for n, cite in enumerate(cites, 1):
            source = self._sources.get(cite.source_id) or self._sources.put(st.source(cite.source_id))
            if len(normalize(cite.quote)) < MIN_QUOTE_CHARS:
                raise Rejected(
                    f"citation {n}: the quote is shorter than {MIN_QUOTE_CHARS} characters",
                    "quote a whole phrase or sentence of the source verbatim",
                )
            match = find_quote(cite.quote, source.text)
            if match is None:
                near = closest_passage(cite.quote, source.text)
                raise Rejected(
                    f"citation {n}: the quote is not in source {cite.source_id} "
                    f"({source.final_url}); the closest passage is: {near!r}",
                    "quote the source verbatim (copy the exact words), or cite another source",
                )
            verified.append(VerifiedCitation(cite, match.start, match.end, match.score))
        return verified

    def _decomposition_lookups(
        self, st: Store, snap: Snapshot, result: DecomposeResult
    ) -> tuple[dict[int, SimilarHit | None], dict[str, Neighbour]]:
        existing: dict[str, Neighbour] = {}
        similar: dict[int, SimilarHit | None] = {}
        if result.atomic:
            return similar, existing
        own = {snap.cell.cell_id, *(c.cell_id for c in snap.children)}
        pool = [(cid, text) for cid, text, _ in st.cell_texts() if cid not in own]
        for i, child in enumerate(result.children):
            if child.existing_cell:
                try:
                    ref = st.cell(child.existing_cell)
                except NotFound:
                    continue
                existing[ref.cell_id] = Neighbour(ref.cell_id, ref.text, ref.state, ref.level)
                continue
            best = find_restatement(child.text, pool)
            similar[i] = SimilarHit(*best) if best else None
        return similar, existing

    def fail(
        self,
        task_id: str,
        lease: str,
        reason: str,
        retryable: bool = True,
        retry_after: float | None = None,
        *,
        counts: bool = True,
    ) -> FailOut:
        """Give a task back: retryable (with backoff) or needing a human (the cell is parked).

        `counts=False` keeps a retryable failure off the attempt cap. Only `petri run` passes it:
        for a rate limit it read from the harness's own output, and for a child it stopped itself
        (Ctrl-C). The MCP door never offers it, so an agent cannot claim a rate limit to retry forever."""
        reason = " ".join(reason.split())[:1000]
        if not reason:
            raise Rejected(
                "a failure needs a reason", "say what went wrong, e.g. 'rate limited' or 'paywall'"
            )
        now = self.now()
        with self._store() as st, st.write():
            task = self._leased(st.task(task_id), lease, now)
            st.append(
                [
                    NewEvent(
                        "task_failed",
                        {"reason": reason, "retryable": retryable, "attempt": task.attempt, "counts": counts},
                        task.run_id,
                        task.cell_id,
                        task_id,
                        f"worker:{task.worker}",
                    )
                ],
                now,
            )
            if retryable:
                wait = (
                    retry_after
                    if retry_after is not None
                    else min(RETRY_BASE_S * 2 ** (task.attempt - 1), RETRY_MAX_S)
                )
                retry_at = iso(datetime.fromisoformat(now) + timedelta(seconds=max(0.0, wait)))
                self._release(st, task, now, cause=f"failed: {reason}", retry_at=retry_at, counts=counts)
            else:
                snap = self._snapshot(st, task.cell_id, now)
                self._commit(st, machine.decide_task_stalled(snap, task, f"needs a human: {reason}"), now)
            after = st.task(task_id)
            cell = st.cell(task.cell_id)
        if after.status == "stalled":
            hint = f"the cell is parked for a human: `petri resolve {cell.cell_id} --requeue`"
        else:
            hint = f"the task will be offered again from {after.ready_at}"
        return FailOut(
            task_id=task_id,
            task_status=after.status,
            cell_id=cell.cell_id,
            cell_state=cell.state,
            attempt=after.attempt,
            ready_at=after.ready_at if after.status == "ready" else None,
            hint=hint,
        )

    # ---------------------------------------------------------------- human decisions (CLI only)

    def resolve(
        self,
        cell_id: str,
        action: str,
        *,
        guidance: str | None = None,
        verdict: str | None = None,
        reason: str | None = None,
        children: list[str] | None = None,
    ) -> ResolveOut:
        """A human's decision on a parked, final or flagged cell."""
        now = self.now()
        with self._store() as st, st.write():
            self._reap(st, now)
            snap = self._snapshot(st, cell_id, now)
            before = snap.cell.state
            events = machine.decide_resolve(
                snap, action, guidance=guidance, verdict=verdict, reason=reason, children=children
            )
            if action == "reopen":
                events += self._flag_dependents(st, cell_id, f"{cell_id} was reopened by a human")
            done = self._commit(st, events, now)
            cell = st.cell(cell_id)
        return ResolveOut(
            cell_id=cell_id,
            cell_state=cell.state,
            changes=describe(done) or [f"{cell_id}: {before} (unchanged)"],
        )

    def approve(self, cell_id: str, approve: bool = True, note: str | None = None) -> ResolveOut:
        """A human approves (or rejects, with a note) a proposed decomposition."""
        now = self.now()
        with self._store() as st, st.write():
            snap = self._snapshot(st, cell_id, now)
            proposal = snap.cell.proposal or {}
            existing = {}
            for child in proposal.get("children", []):
                if child.get("existing_cell"):
                    ref = st.cell(child["existing_cell"])
                    existing[ref.cell_id] = Neighbour(ref.cell_id, ref.text, ref.state, ref.level)
            done = self._commit(st, machine.decide_approval(snap, approve, note, existing), now)
            cell = st.cell(cell_id)
        return ResolveOut(cell_id=cell_id, cell_state=cell.state, changes=describe(done))

    def halt(self, run_id: str, resume: bool = False) -> str:
        """Halt a run (no task is dispatched) or resume it."""
        now = self.now()
        with self._store() as st, st.write():
            run = st.run(run_id)
            counts = st.cell_counts(run_id)
            pending = any(counts.get(s) for s in PENDING_STATES)
            trigger = "resume" if resume else "halt"
            row = machine.select_run(run.state, trigger, pending)
            changed = NewEvent(
                "run_state_changed",
                {"from": run.state, "to": row.target, "trigger": trigger},
                run_id,
                actor="human",
            )
            done = self._commit(st, [changed], now)  # a resumed run whose root went final completes now
        state: str = next(e for e in reversed(done) if e.type == "run_state_changed").payload["to"]
        return state

    # ---------------------------------------------------------------- headless runners and usage

    def runner_started(
        self,
        run_id: str,
        runner: str,
        *,
        pid: int,
        harness: str,
        jobs: int,
        budget: Mapping[str, float | None],
    ) -> None:
        """Record that a headless runner (`petri run`) drives a run; its workers are `run-<runner>-<n>`."""
        payload = {"runner": runner, "pid": pid, "harness": harness, "jobs": jobs, "budget": dict(budget)}
        with self._store() as st, st.write():
            st.run(run_id)
            st.append([NewEvent("runner_started", payload, run_id, actor=f"runner:{runner}")], self.now())

    def runner_stopped(self, run_id: str, runner: str, reason: str, summary: dict[str, Any]) -> None:
        """Record why a runner stopped (done, needs_human, budget, interrupted, or died)."""
        payload = {"runner": runner, "reason": reason, "summary": summary}
        with self._store() as st, st.write():
            st.append([NewEvent("runner_stopped", payload, run_id, actor=f"runner:{runner}")], self.now())

    def runners(self, run_id: str) -> list[dict[str, Any]]:
        with self._store(create=False) as st, st.read():
            return st.runners(run_id)

    def record_transcript(
        self,
        task_id: str,
        *,
        runner: str,
        worker: str,
        harness: str,
        exit_code: int | None,
        duration_s: float,
        outcome: str,
        usage: dict[str, Any],
        transcript: bytes,
    ) -> str:
        """Store a harness process's output (content-addressed) and its measured usage, in one transaction."""
        now = self.now()
        with self._store() as st, st.write():
            task = st.task(task_id)
            digest = st.put_blob(transcript)
            payload = {
                "attempt": task.attempt,
                "runner": runner,
                "worker": worker,
                "harness": harness,
                "exit_code": exit_code,
                "duration_s": round(duration_s, 3),
                "outcome": outcome[:500],
                "usage": usage,
                "transcript_hash": digest,
                "transcript_bytes": len(transcript),
            }
            event = NewEvent(
                "task_transcript", payload, task.run_id, task.cell_id, task_id, actor=f"runner:{runner}"
            )
            st.append([event], now)
        return digest

    def transcript(self, task_id: str, attempt: int | None = None) -> bytes:
        """The stored harness output of a task's latest process (or of one attempt)."""
        with self._store(create=False) as st, st.read():
            every = st.usage_rows(task_id=task_id)
            rows = [r for r in every if attempt is None or r["attempt"] == attempt]
            if not rows:
                st.task(task_id)
                kept = sorted({r["attempt"] for r in every})
                raise NotFound(
                    f"no transcript for task {task_id}" + (f" attempt {attempt}" if attempt else ""),
                    f"its attempts with a transcript: {', '.join(map(str, kept))}"
                    if kept
                    else "transcripts exist for tasks run by `petri run`",
                )
            return st.blob(rows[-1]["transcript_hash"])

    def usage(self, run_id: str) -> dict[str, Any]:
        """A run's measured harness usage: processes, tokens, cost and model calls."""
        with self._store(create=False) as st, st.read():
            st.run(run_id)
            return st.usage_totals(run_id=run_id)

    def task(self, task_id: str) -> Task:
        with self._store(create=False) as st, st.read():
            return st.task(task_id)

    def run(self, run_id: str) -> Run:
        with self._store(create=False) as st, st.read():
            return st.run(run_id)

    def open_tasks(self, run_id: str) -> list[Task]:
        """A run's ready and leased tasks (read-only: no reaping)."""
        with self._store(create=False) as st, st.read():
            return st.open_tasks(run_id)

    # ---------------------------------------------------------------- sources and evidence

    def add_source(
        self,
        *,
        url: str,
        final_url: str,
        status: int,
        content_type: str,
        fetched_at: str,
        content_hash: str,
        title: str | None,
        author: str | None,
        published: str | None,
        text: str,
        note: str | None = None,
    ) -> Source:
        """Store a fetched page's snapshot once per content hash, and record the fetch.

        `note` says what the text leaves out; it is stored only when there is one."""
        now = self.now()
        with self._store() as st, st.write():
            source = st.source_by_hash(content_hash)
            events: list[NewEvent] = []
            source_id = source.source_id if source else f"src-{content_hash[:12]}"
            if source is None:
                events.append(
                    NewEvent(
                        "source_stored",
                        {
                            "source_id": source_id,
                            "url": url,
                            "final_url": final_url,
                            "status": status,
                            "content_type": content_type,
                            "fetched_at": fetched_at,
                            "content_hash": content_hash,
                            "title": title,
                            "author": author,
                            "published": published,
                            "text": text,
                        }
                        | ({"note": note} if note else {}),
                    )
                )
            events.append(
                NewEvent(
                    "source_fetched",
                    {"url": url, "final_url": final_url, "source_id": source_id, "fetched_at": fetched_at},
                )
            )
            st.append(events, now)
            return st.source(source_id)

    def fetch(self, url: str, page: int = 1) -> FetchOut:
        """Fetch a page (or reuse a fetch within the cache TTL), snapshot it, and return one page of text."""
        from .fetch import fetch_url, page_text

        url = url.strip()
        if page < 1:
            raise Rejected(f"page {page} does not exist", "pages start at 1")
        since = iso(self.clock() - timedelta(seconds=self.cache_ttl_s))
        with self._store() as st, st.read():
            source = st.recent_fetch(url, since)
        if source is None:
            got = fetch_url(url, self.fetch_policy())
            chunk, pages = page_text(got.text, page)  # a missing page is rejected before anything is stored
            source = self.add_source(
                url=got.requested_url,
                final_url=got.final_url,
                status=got.status,
                content_type=got.content_type,
                fetched_at=self.now(),
                content_hash=got.content_hash,
                title=got.title,
                author=got.author,
                published=got.published,
                text=got.text,
                note=got.note,
            )
        else:
            chunk, pages = page_text(source.text, page)
        return FetchOut(
            source_id=source.source_id,
            url=url,
            final_url=source.final_url,
            title=source.title,
            published=source.published or "unknown",
            author=source.author,
            page=page,
            pages=pages,
            note=source.note,
            untrusted=True,
            text=chunk,
        )

    def search(self, query: str, limit: int = 8) -> SearchOut:
        """Web search through the configured provider (PETRI_SEARXNG_URL or the dish config)."""
        from .search import provider_from_env

        provider = provider_from_env(config=self.config().get("search", {}))
        results = provider.search(query, limit)
        return SearchOut(
            provider=provider.name,
            results=[SearchHit(title=r.title, url=r.url, snippet=r.snippet) for r in results],
        )

    def feed(self, cell_id: str, source_id: str, note: str | None = None) -> ResolveOut:
        """Attach new evidence to a cell; a final cell reopens as a new iteration, its dependents are flagged."""
        now = self.now()
        with self._store() as st, st.write():
            source = st.source(source_id)
            snap = self._snapshot(st, cell_id, now)
            cell = snap.cell
            if cell.state == "stalled":
                raise Rejected(
                    f"{cell_id} is stalled", f"resolve it first: `petri resolve {cell_id} --requeue`"
                )
            events: list[NewEvent] = []
            if cell.state in FINAL_STATES:
                reason = f"new evidence: {source.title or source.final_url}"
                events += machine.decide_reopen(snap, reason, note or cell.directive)
                events += self._flag_dependents(st, cell_id, f"{cell_id} was reopened by new evidence")
                iteration = cell.iteration + 1
            else:
                iteration = cell.iteration
            fed = NewEvent(
                "evidence_fed",
                {"source_id": source.source_id, "iteration": iteration, "note": note},
                cell.run_id,
                cell_id,
                actor="human",
            )
            done = self._commit(st, [fed, *events], now)
            after = st.cell(cell_id)
        return ResolveOut(cell_id=cell_id, cell_state=after.state, changes=describe(done))

    def _flag_dependents(self, st: Store, cell_id: str, reason: str) -> list[NewEvent]:
        flagged = [p for p in st.parents(cell_id) if p.state != "waiting"]
        return [e for p in flagged for e in machine.decide_flag(p.run_id, [p.cell_id], reason)]

    # ---------------------------------------------------------------- reads

    def cells_like(self, text: str, limit: int = 5) -> CellsOut:
        """Existing cells most similar to a text (shared premises), best first."""
        if not text.strip():
            raise Rejected("text is empty", "pass the sub-claim you want to find")
        if not 1 <= limit <= 20:
            raise Rejected(f"limit {limit} is out of range", "use a limit from 1 to 20")
        with self._store() as st, st.read():
            pool = st.cell_texts()
        states = {cid: state for cid, _, state in pool}
        scored = sorted(((similarity(text, t), cid, t) for cid, t, _ in pool), key=lambda x: (-x[0], x[1]))
        cells = [
            SimilarCell(cell_id=cid, text=t, state=states[cid], score=s)
            for s, cid, t in scored[:limit]
            if s > 0
        ]
        return CellsOut(cells=cells)

    def status(self, run_id: str | None = None) -> dict[str, Any]:
        """Runs, cells by state, tasks, leases and the human inbox, read from the projections."""
        now = self.now()
        with self._store(create=False) as st, st.read():
            return views.status(st, self.dish, now, run_id)

    def show(self, cell_id: str) -> dict[str, Any]:
        """One cell in full: its claim, edges, tasks, verdicts and citations."""
        with self._store(create=False) as st, st.read():
            return views.show(st, cell_id)

    def export(self, run_id: str, target: Path) -> list[Path]:
        """Write the run's events as JSONL and one markdown file per cell, in a stable order."""
        from .report import gather, render_cell
        from .store import canonical

        with self._store(create=False) as st, st.read():
            data = gather(st, run_id, self.now())
            events = st.events(run_id=run_id)
        target.mkdir(parents=True, exist_ok=True)
        (target / "cells").mkdir(exist_ok=True)
        written = [target / "events.jsonl"]
        lines = [canonical(e.model_dump()) for e in events]
        written[0].write_text("\n".join(lines) + "\n", encoding="utf-8")
        for item in data["cells"]:
            path = target / "cells" / f"{item['cell'].cell_id}.md"
            path.write_text(render_cell(item), encoding="utf-8")
            written.append(path)
        return written

    def backup(self, target: Path | None = None) -> Path:
        """A consistent copy of the dish (`VACUUM INTO`), safe while other processes write."""
        stamp = self.clock().strftime("%Y%m%dT%H%M%S%fZ")
        path = target or self.dish / "backups" / f"petri-{stamp}.db"
        if path.exists():
            raise Rejected(f"{path} already exists", "choose another file; backups never overwrite")
        with self._store(create=False) as st:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                st.conn.execute("VACUUM INTO ?", (str(path),))
            except sqlite3.Error as exc:
                raise DishError(f"backup to {path} failed: {exc}") from exc
        return path

    def backups(self) -> list[dict[str, Any]]:
        """The backups in the dish's `backups/` folder, oldest first, with their event counts."""
        out = []
        for path in sorted((self.dish / "backups").glob("*.db")):
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                events = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            except sqlite3.Error:
                events = None
            finally:
                conn.close()
            out.append({"path": str(path), "bytes": path.stat().st_size, "events": events})
        return out

    def report(self, run_id: str, fmt: str = "md") -> str:
        """The run as a markdown or self-contained HTML report."""
        from .report import gather, render

        if fmt not in ("md", "html"):
            raise Rejected(f"unknown report format {fmt!r}", "use md or html")
        with self._store(create=False) as st, st.read():
            data = gather(st, run_id, self.now())
        return render(data, fmt)

    def log(
        self,
        run_id: str | None = None,
        cell_id: str | None = None,
        after: int = 0,
        types: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._store(create=False) as st, st.read():
            return [
                e.model_dump()
                for e in st.events(run_id=run_id, cell_id=cell_id, after=after, types=types, limit=limit)
            ]

    def verify(self) -> VerifyReport:
        """Hash chain intact, triggers present, projections equal a replay, every quote in its source."""
        from concurrent.futures import ThreadPoolExecutor

        with self._store(create=False) as st, st.read(), ThreadPoolExecutor(2) as pool:
            events, head = st.event_count(), st.head()
            triggers, blobs = st.check_triggers(), st.check_blobs()
            # The chain hashes in Python, and the quotes are read from the log, while the replay runs
            # inside SQLite on a connection of its own, letting go of the GIL. From here only the
            # quotes' thread uses this store's connection, inside its read snapshot.
            chain = pool.submit(st.check_chain, events)
            quotes = pool.submit(check_quotes, st)
            projections = st.check_projections()
            checked, quote_problems = quotes.result()
            problems = triggers + chain.result() + projections + blobs + quote_problems
            return VerifyReport(events=events, head=head, citations=checked, problems=problems)


def check_quotes(st: Store) -> tuple[int, list[str]]:
    """Every citation's quote is still in its stored source: (citations checked, problems).

    The span each citation stored is compared first (as is, then normalized); only a span that no
    longer reads as the quote sends the quote searching the whole page, once per (quote, source).
    """
    problems: list[str] = []
    texts: dict[str, str] = dict(st.conn.execute("SELECT source_id, text FROM sources").fetchall())
    rows = st.citation_quotes()
    found: dict[tuple[str, str], bool] = {}
    for citation_id, source_id, quote, start, end in rows:
        text = texts.get(source_id)
        if text is None:
            problems.append(f"citation {citation_id}: source {source_id} is missing")
            continue
        if not isinstance(quote, str):
            problems.append(f"citation {citation_id}: quote no longer found in {source_id}")
            continue
        if isinstance(start, int) and isinstance(end, int):
            span = text[start:end]
            if span == quote or normalize(span) == normalize(quote):
                continue
        key = (quote, source_id)
        if key not in found:
            found[key] = find_quote(quote, str(text)) is not None
        if not found[key]:
            problems.append(f"citation {citation_id}: quote no longer found in {source_id}")
    return len(rows), problems


def _clarifications(given: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    clar = [{"question": str(c["question"]), "answer": str(c["answer"])} for c in given]
    if len(clar) > MAX_CLARIFICATIONS:
        raise Rejected(
            f"{len(clar)} clarifications; at most {MAX_CLARIFICATIONS} are allowed",
            "keep the questions that change what the claim means",
        )
    for n, c in enumerate(clar, 1):
        if len(c["question"]) > MAX_QUESTION_CHARS or len(c["answer"]) > MAX_ANSWER_CHARS:
            raise Rejected(
                f"clarification {n} is too long: a question takes at most {MAX_QUESTION_CHARS} "
                f"characters, an answer at most {MAX_ANSWER_CHARS}",
                "summarize it; cite long material as a source (petri_fetch) instead",
            )
    return clar


#: Cell states that keep a run decomposing (its progress checks count them).
PENDING_STATES = ("new", "decomposing", "awaiting_approval")


def _moves_run(event: NewEvent) -> bool:
    """Whether an event can change what `_run_progress` decides: the run's state, a new cell, or a
    cell entering or leaving a pending or a final state. Every commit settles its runs' progress, so
    a commit without such an event leaves them settled (the check costs three reads per submit)."""
    if event.type in ("run_state_changed", "cell_created"):
        return True
    if event.type != "cell_state_changed":
        return False
    before, after = event.payload["from"], event.payload["to"]
    return (
        before in PENDING_STATES
        or after in PENDING_STATES
        or (before in FINAL_STATES) != (after in FINAL_STATES)
    )


#: The task status each event type leaves (the `tasks` projection's `status`).
TASK_STATUS_AFTER = {
    "task_created": "ready",
    "task_claimed": "leased",
    "task_released": "ready",
    "task_stalled": "stalled",
    "task_cancelled": "cancelled",
    "task_submitted": "submitted",
    "task_completed": "done",
}


def ready_created(events: Sequence[NewEvent]) -> list[TaskOut]:
    """The tasks these events created that they leave ready, read from the events themselves."""
    status = {e.task_id: TASK_STATUS_AFTER[e.type] for e in events if e.type in TASK_STATUS_AFTER}
    return [
        _dispatched(e.task_id, e.cell_id or "", e.payload["role"], e.payload["kind"], e.payload["brief"])
        for e in events
        if e.type == "task_created" and e.task_id and status[e.task_id] == "ready"
    ]


def describe(events: Iterable[NewEvent]) -> list[str]:
    """One line per visible change, for agents and people."""
    lines = []
    for e in events:
        p = e.payload
        if e.type == "cell_state_changed":
            lines.append(f"{e.cell_id}: {p['from']} → {p['to']} ({p['reason']})")
        elif e.type == "cell_created":
            lines.append(f"{e.cell_id}: created ({p['text'][:80]})")
        elif e.type == "task_created":
            lines.append(f"{e.task_id}: ready for petri-{p['role']}")
        elif e.type == "run_state_changed":
            lines.append(f"run {e.run_id}: {p['from']} → {p['to']}")
        elif e.type == "task_stalled":
            lines.append(f"{e.task_id}: parked ({p['reason']})")
        elif e.type == "cell_updated" and p["fields"].get("flagged"):
            lines.append(f"{e.cell_id}: flagged for a human ({p['fields']['flagged']})")
        elif e.type == "cell_updated" and p["fields"] == {"flagged": None}:  # only an acknowledgement
            lines.append(f"{e.cell_id}: flag cleared ({p['reason']})")
    return lines
