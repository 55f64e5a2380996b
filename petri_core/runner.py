"""Headless mode (`petri run`): one harness process per ready task, at most N at a time.

Python is the dispatcher. Each child (Claude Code or OpenCode, non-interactive) plays the task's
role agent: it claims the task itself under a worker name the runner gives it and submits through
Petri's MCP server. The runner holds the child's lease (heartbeats), fails what a child leaves
behind (retryable, with backoff; the service's attempt cap parks the cell), pauses dispatching on
a rate limit until its reset, stops at a budget, and records each child's transcript and the
usage measured from it. No workflow rule lives here: every outcome goes through `service`.

Pure parts (tested without processes): the command builders, the transcript parsers, the
rate-limit reader and `decide`, which says what to start and when to stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from .errors import PetriError, Rejected
from .models import TaskOut
from .service import RETRY_MAX_S, Service

TASK_TIMEOUT_S = 900.0
BACKOFF_S = 30.0  # the service's own first retry delay; doubles per attempt
RATE_LIMIT_S = 60.0  # pause when a rate limit carries no reset hint; doubles while it repeats
MAX_PAUSE_S = 24 * 3600.0
KILL_GRACE_S = 5.0
TICK_S = 0.1
POLL_S = 0.5  # how often the queue and unclaimed children are looked up
PROGRESS_EVERY_S = 15.0
EXIT_INTERRUPTED = 130

Say = Callable[[str], None]


class RunnerError(PetriError):
    """`petri run` cannot start (no harness binary, the run is driven elsewhere, …)."""


# ---------------------------------------------------------------- harness commands
#
# One builder per harness. The flags follow HARNESS_NOTES (Claude Code 2.1.x, OpenCode 1.18.x);
# keep them here, and only here, so a flag that moves is a one-line fix.


def claude_command(binary: str, prompt: str, agent: str, pack: Path) -> list[str]:
    """Claude Code, print mode: the plugin from the pack dir, the role agent, stream-json output.

    `--allowedTools` grants the plugin's MCP server (no permission prompt can be answered
    headless) and WebSearch; `--no-session-persistence` leaves no session files behind.
    """
    return [
        binary,
        "-p",
        prompt,
        "--agent",
        f"petri:{agent}",
        "--output-format",
        "stream-json",
        "--verbose",
        "--no-session-persistence",
        "--plugin-dir",
        str(pack),
        "--allowedTools",
        "mcp__plugin_petri_petri",
        "WebSearch",
    ]


def opencode_command(binary: str, prompt: str, agent: str) -> list[str]:
    """OpenCode, `run` mode with JSON events, in a project set up by `petri install opencode`."""
    return [binary, "run", "--agent", agent, "--format", "json", prompt]


def command(harness: str, binary: str, prompt: str, agent: str, pack: Path) -> list[str]:
    if harness == "claude":
        return claude_command(binary, prompt, agent, pack)
    return opencode_command(binary, prompt, agent)


def find_binary(harness: str, environ: Mapping[str, str] | None = None) -> str:
    """The harness executable: PETRI_CLAUDE_BIN / PETRI_OPENCODE_BIN, else `claude` / `opencode` on PATH."""
    env = os.environ if environ is None else environ
    var = f"PETRI_{harness.upper()}_BIN"
    given = env.get(var)
    found = shutil.which(given or harness, path=env.get("PATH"))
    if found is None:
        where = f"{var}={given} is not an executable" if given else f"`{harness}` is not on PATH"
        raise RunnerError(f"cannot run the {harness} harness: {where}; install it or set {var}")
    return found


def skill_pack() -> Path:
    """The pack dir for `--plugin-dir` (see `pack.pack_dir`), or a RunnerError naming the problem."""
    from .pack import pack_dir

    try:
        return pack_dir()
    except FileNotFoundError as exc:
        raise RunnerError(str(exc)) from None


def opencode_project(cwd: Path) -> Path:
    """The OpenCode project `petri run` works in: the current directory, set up by `petri install opencode`."""
    config = cwd / "opencode.json"
    try:
        petri = json.loads(config.read_text(encoding="utf-8")).get("mcp", {}).get("petri")
    except (OSError, ValueError, AttributeError):
        petri = None
    if not petri:
        raise RunnerError(
            f"{cwd} is not set up for OpenCode: {config} has no Petri MCP server; "
            "run `petri install opencode` here first (or cd to the project that has it)"
        )
    return cwd


def prompt_for(task_id: str, worker: str) -> str:
    """The whole prompt a child gets: its agent file says the rest."""
    return f"Task {task_id}. Claim it as worker {worker}."


# ---------------------------------------------------------------- transcripts: usage measured, not reported


@dataclass
class Usage:
    """Tokens, cost and model calls read from one harness process's own output."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    model: str | None = None

    @property
    def tokens(self) -> int:
        """Every token measured, as budgets and `petri status` count them (cache and reasoning too)."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.reasoning_tokens
        )

    def as_payload(self) -> dict[str, Any]:
        # A harness that reports NaN or an infinite cost (JSON allows neither; the log refuses them)
        # is recorded as having reported none.
        cost = round(self.cost_usd, 6) if math.isfinite(self.cost_usd) else 0.0
        return {**dataclasses.asdict(self), "cost_usd": cost}


def json_lines(data: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of a line-delimited stream; other lines are skipped."""
    for raw in data.splitlines():
        line = raw.strip()
        if not line.startswith(b"{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def claude_usage(stdout: bytes) -> Usage:
    """Claude Code stream-json: the final `result` event's `modelUsage` (all models, subagents
    included) or `usage`, and `total_cost_usd`; model calls are distinct assistant message ids.
    A process killed before its `result` falls back to the per-message usage (cost unknown: 0)."""
    usage = Usage()
    messages: dict[str, dict[str, Any]] = {}
    result: dict[str, Any] | None = None
    for event in json_lines(stdout):
        kind = event.get("type")
        if kind == "assistant" and isinstance(event.get("message"), dict):
            message = event["message"]
            key = str(message.get("id") or f"anon-{len(messages)}")
            messages[key] = message
            usage.model = usage.model or message.get("model")
        elif kind == "system" and event.get("subtype") == "init":
            usage.model = usage.model or event.get("model")
        elif kind == "result":
            result = event
    usage.model_calls = len(messages)
    if result is None:
        for message in messages.values():
            u = message.get("usage") or {}
            usage.input_tokens += _int(u.get("input_tokens"))
            usage.output_tokens += _int(u.get("output_tokens"))
            usage.cache_read_tokens += _int(u.get("cache_read_input_tokens"))
            usage.cache_write_tokens += _int(u.get("cache_creation_input_tokens"))
        return usage
    usage.cost_usd = float(result.get("total_cost_usd") or 0.0)
    by_model = result.get("modelUsage")
    if isinstance(by_model, dict) and by_model:
        for name, u in by_model.items():
            usage.model = usage.model or name
            usage.input_tokens += _int(u.get("inputTokens"))
            usage.output_tokens += _int(u.get("outputTokens"))
            usage.cache_read_tokens += _int(u.get("cacheReadInputTokens"))
            usage.cache_write_tokens += _int(u.get("cacheCreationInputTokens"))
    else:
        u = result.get("usage") or {}
        usage.input_tokens = _int(u.get("input_tokens"))
        usage.output_tokens = _int(u.get("output_tokens"))
        usage.cache_read_tokens = _int(u.get("cache_read_input_tokens"))
        usage.cache_write_tokens = _int(u.get("cache_creation_input_tokens"))
    if not messages and result.get("num_turns"):
        usage.model_calls = _int(result.get("num_turns"))
    return usage


def opencode_usage(stdout: bytes) -> Usage:
    """OpenCode `--format json`: every `step_finish` is one model call with `part.tokens` and `part.cost`."""
    usage = Usage()
    for event in json_lines(stdout):
        if event.get("type") != "step_finish" or not isinstance(event.get("part"), dict):
            continue
        part = event["part"]
        tokens = part.get("tokens") or {}
        cache = tokens.get("cache") or {}
        usage.model_calls += 1
        usage.input_tokens += _int(tokens.get("input"))
        usage.output_tokens += _int(tokens.get("output"))
        usage.reasoning_tokens += _int(tokens.get("reasoning"))
        usage.cache_read_tokens += _int(cache.get("read"))
        usage.cache_write_tokens += _int(cache.get("write"))
        usage.cost_usd += float(part.get("cost") or 0.0)
        usage.model = usage.model or part.get("modelID") or part.get("model")
    return usage


def measure(harness: str, stdout: bytes) -> Usage:
    return claude_usage(stdout) if harness == "claude" else opencode_usage(stdout)


def error_texts(harness: str, stdout: bytes, stderr: bytes) -> list[str]:
    """The error messages a process reported (never tool output or page text): Claude Code's
    `result` with `is_error` and events carrying `error`; OpenCode's `error` events; stderr."""
    results, others = [], []
    for event in json_lines(stdout):
        if harness == "claude" and event.get("type") == "result":
            if event.get("is_error") or str(event.get("subtype", "success")) != "success":
                results.append(str(event.get("result") or event.get("subtype")))
        elif event.get("type") == "error" or "error" in event:
            others.append(json.dumps(event.get("error", event), ensure_ascii=False))
    tail = stderr.decode("utf-8", "replace")[-4000:].strip()
    return results + others + ([tail] if tail else [])


# ---------------------------------------------------------------- rate limits

RATE_LIMITED = re.compile(
    r"rate[_ -]?limit|usage limit|limit reached|hit your limit|too many requests|overloaded|\b429\b|\b529\b",
    re.I,
)
_EPOCH = re.compile(r"limit reached\|(\d{9,11})")
_ISO = re.compile(r"resets?(?: at)? (\d{4}-\d{2}-\d{2}[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)", re.I)
_RETRY_AFTER = re.compile(r"retry[-_ ]after\W{0,4}(\d+(?:\.\d+)?)", re.I)
_IN = re.compile(
    r"(?:resets?|try again|retry(?:ing)?) in (\d+(?:\.\d+)?)\s*(hours?|h|minutes?|mins?|m|seconds?|secs?|s)\b",
    re.I,
)
_CLOCK = re.compile(
    r"resets (?:([A-Z][a-z]{2}) (\d{1,2}) at )?(\d{1,2})(?::(\d{2}))?\s*(am|pm)(?: \(([^)]+)\))?", re.I
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


@dataclass(frozen=True)
class RateLimit:
    """A rate limit or overload the harness reported; `wait_s` is None when it gave no reset hint."""

    message: str
    wait_s: float | None


def rate_limit(texts: Sequence[str], now: datetime) -> RateLimit | None:
    """Recognise a rate-limit/overload error and read its reset hint, if any.

    Hints understood: Claude Code's `…usage limit reached|<epoch>`, `resets at <ISO time>`,
    `resets 3pm (Europe/Berlin)` / `resets Apr 23 at 4pm (…)`, `retry-after: <s>` (also as a JSON
    header), and `resets|try again|retrying in <n> s|min|h`.
    """
    hits = [t for t in texts if RATE_LIMITED.search(t)]
    if not hits:
        return None
    text = "\n".join(hits)
    message = " ".join(hits[0].split())[:200]
    return RateLimit(message, _reset_wait(text, now))


def _reset_wait(text: str, now: datetime) -> float | None:
    if m := _EPOCH.search(text):
        return int(m.group(1)) - now.timestamp()
    if m := _ISO.search(text):
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
            return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() - now.timestamp()
    if m := _RETRY_AFTER.search(text):
        return float(m.group(1))
    if m := _IN.search(text):
        unit = m.group(2).lower()[0]
        return float(m.group(1)) * {"h": 3600, "m": 60, "s": 1}[unit]
    if m := _CLOCK.search(text):
        return _clock_wait(m, now)
    return None


def _clock_wait(m: re.Match[str], now: datetime) -> float | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    month, day, hour, minute, half, zone = m.groups()
    try:
        tz = ZoneInfo(zone) if zone else None
    except (ZoneInfoNotFoundError, ValueError):
        tz = None
    local = now.astimezone(tz) if tz else now.astimezone()
    hour_24 = int(hour) % 12 + (12 if half.lower() == "pm" else 0)
    at = local.replace(hour=hour_24, minute=int(minute or 0), second=0, microsecond=0)
    if month and month.lower()[:3] in _MONTHS:
        with contextlib.suppress(ValueError):
            at = at.replace(month=_MONTHS.index(month.lower()[:3]) + 1, day=int(day))
            if at < local:
                at = at.replace(year=at.year + 1)
    elif at <= local:
        at += timedelta(days=1)
    return (at - local).total_seconds()


# ---------------------------------------------------------------- budgets

BUDGET_KEYS = ("tasks", "tokens", "usd")


def parse_budget(items: Iterable[str]) -> dict[str, float | None]:
    """`tasks=20`, `tokens=2000000`, `usd=5` (comma-separated or repeated); `KEY=none` lifts one."""
    out: dict[str, float | None] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in BUDGET_KEYS:
                raise Rejected(
                    f"budget {part!r} is not KEY=VALUE", f"use {', '.join(BUDGET_KEYS)}, e.g. usd=5"
                )
            if value.strip().lower() in ("none", "off", ""):
                out[key] = None
                continue
            try:
                number = float(value)
            except ValueError:
                raise Rejected(
                    f"budget {part!r}: {value!r} is not a number", "e.g. tasks=20 or usd=2.5"
                ) from None
            if number < 0:
                raise Rejected(f"budget {part!r} is negative", "give a positive limit")
            out[key] = number
    return out


@dataclass(frozen=True)
class Spent:
    """What a run has used so far: harness processes, tokens and dollars (from the usage projection)."""

    tasks: int = 0
    tokens: int = 0
    usd: float = 0.0

    @classmethod
    def of(cls, totals: Mapping[str, Any]) -> Spent:
        return cls(int(totals["processes"]), int(totals["tokens"]), float(totals["cost_usd"]))


def budget_left(
    budget: Mapping[str, float | None], spent: Spent, in_flight: int
) -> tuple[int | None, str | None]:
    """How many more processes may start (None: no task limit), or why none may."""
    tokens, usd, tasks = budget.get("tokens"), budget.get("usd"), budget.get("tasks")
    if tokens is not None and spent.tokens >= tokens:
        return 0, f"token budget reached: {spent.tokens:,} of {tokens:,.0f}"
    if usd is not None and spent.usd >= usd:
        return 0, f"cost budget reached: ${spent.usd:.4f} of ${usd:.2f}"
    if tasks is None:
        return None, None
    left = int(tasks) - spent.tasks - in_flight
    if left <= 0:
        return 0, f"task budget reached: {spent.tasks + in_flight} of {int(tasks)} harness processes"
    return left, None


# ---------------------------------------------------------------- the pure dispatch decision


@dataclass(frozen=True)
class View:
    """What the runner knows at one moment: the queue, its children, its pause and the budget."""

    now: float
    run_state: str | None
    done: bool
    ready: Sequence[TaskOut]
    in_flight: frozenset[str]
    jobs: int
    waiting: bool = False
    needs_human: int = 0
    paused_until: float | None = None
    budget: Mapping[str, float | None] = field(default_factory=dict)
    spent: Spent = field(default_factory=Spent)
    interrupted: bool = False


@dataclass(frozen=True)
class Decision:
    """Which tasks to start now; `stop` says why the loop ends (given only once nothing is in flight)."""

    start: tuple[TaskOut, ...] = ()
    stop: str | None = None
    note: str | None = None


def decide(v: View) -> Decision:
    """What to start, whether dispatching pauses, and whether the runner is finished."""
    busy = bool(v.in_flight)

    def hold(reason: str, note: str) -> Decision:
        return Decision(stop=None if busy else reason, note=note)

    if v.interrupted:
        return Decision(stop="interrupted", note="interrupted")
    if v.done:
        return hold("done", "the run is complete")
    if v.run_state == "halted":
        return hold("halted", "the run is halted")
    left, over = budget_left(v.budget, v.spent, len(v.in_flight))
    if over:
        return hold("budget", over)
    if v.paused_until is not None and v.now < v.paused_until:
        return Decision(note=f"paused for a rate limit ({v.paused_until - v.now:.0f} s left)")
    slots = v.jobs - len(v.in_flight)
    if left is not None:
        slots = min(slots, left)
    start = tuple(t for t in v.ready if t.task_id not in v.in_flight)[: max(0, slots)]
    if start or busy or v.waiting:
        return Decision(start=start)
    if any(t.task_id not in v.in_flight for t in v.ready):
        return Decision()
    if v.needs_human:
        return Decision(stop="needs_human", note="the run needs a human")
    return Decision(stop="idle", note="nothing is ready, in flight or waiting")


def backoff(base_s: float, attempt: int) -> float:
    """The retry delay after a failed attempt: base · 2^(attempt−1), capped like the service's."""
    return float(min(base_s * 2 ** max(0, attempt - 1), RETRY_MAX_S))


# ---------------------------------------------------------------- the runner


@dataclass
class Child:
    """One harness process working on one task."""

    task: TaskOut
    worker: str
    proc: subprocess.Popen[bytes]
    out: IO[bytes]
    err: IO[bytes]
    started: float
    deadline: float
    fence0: int
    lease: str | None = None
    beat_at: float = 0.0
    looked_at: float = 0.0
    killed: str | None = None
    term_at: float | None = None


@dataclass
class Settings:
    """How a runner drives its run (the CLI's options)."""

    harness: str = "claude"
    jobs: int = 2
    budget: dict[str, float | None] = field(default_factory=dict)
    task_timeout_s: float = TASK_TIMEOUT_S
    backoff_s: float = BACKOFF_S
    heartbeat_s: float | None = None
    kill_grace_s: float = KILL_GRACE_S


@dataclass
class Tally:
    started: int = 0
    submitted: int = 0
    failed: int = 0
    rate_limits: int = 0


STOP_MESSAGES = {
    "done": "the run is complete",
    "needs_human": "the run needs a human: see `petri status`",
    "budget": "stopped at the budget",
    "halted": "the run is halted: `petri resume {run}` first",
    "interrupted": "interrupted",
    "idle": "nothing left to dispatch",
}


class Runner:
    """Drives one run headless until it is done, needs a human, or is out of budget."""

    def __init__(self, svc: Service, run_id: str, settings: Settings, say: Say = print) -> None:
        self.svc = svc
        self.run_id = run_id
        self.settings = settings
        self.say = say
        self.runner_id = secrets.token_hex(3)
        self.binary = find_binary(settings.harness)
        self.pack = skill_pack() if settings.harness == "claude" else opencode_project(Path.cwd())
        self.children: dict[str, Child] = {}
        self.tally = Tally()
        self.paused_until: float | None = None
        self.pause_streak = 0
        self.interrupted: str | None = None
        self.workers = 0
        self.lease_s = int(svc.run(run_id).settings["lease_seconds"])
        self.tmp = Path(tempfile.mkdtemp(prefix=f"petri-run-{self.runner_id}-"))
        self._lock: IO[str] | None = None
        self._pdeathsig = _pdeathsig()
        self._last_progress = 0.0
        self._last_line = ""

    # -- lifecycle

    def run(self) -> dict[str, Any]:
        """The loop; returns the final summary (also recorded as `runner_stopped`)."""
        self._lock = acquire_lock(self.svc.dish, self.run_id)
        previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._begin()
            reason = self._loop()
            if reason == "interrupted":
                self._stop_children(f"interrupted: petri run received {self.interrupted}")
            summary = self.summary(reason)
            self.svc.runner_stopped(self.run_id, self.runner_id, reason, _brief(summary))
            return summary
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
            for child in list(self.children.values()):  # only after an unexpected error
                _killpg(child.proc, signal.SIGKILL)
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self._lock is not None:
                self._lock.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.interrupted = signal.Signals(signum).name

    def _begin(self) -> None:
        known = self.svc.runners(self.run_id)
        budget = dict(known[-1]["budget"]) if known else {}
        budget.update(self.settings.budget)
        self.settings.budget = {k: v for k, v in budget.items() if v is not None}
        # The lock is ours, so every earlier runner of this run is dead: release what it held.
        for old in known:
            if old["stopped_at"] is None:
                self.svc.runner_stopped(self.run_id, old["runner_id"], "died", {})
        prefixes = tuple(f"run-{old['runner_id']}-" for old in known)
        for task in self.svc.open_tasks(self.run_id):
            if task.status == "leased" and task.lease and task.worker and task.worker.startswith(prefixes):
                with contextlib.suppress(Rejected):
                    self.svc.fail(
                        task.task_id,
                        task.lease,
                        f"runner of worker {task.worker} died; released by runner {self.runner_id}",
                        retryable=True,
                        retry_after=0,
                    )
                self.say(f"released {task.task_id} (its runner died)")
        self.svc.runner_started(
            self.run_id,
            self.runner_id,
            pid=os.getpid(),
            harness=self.settings.harness,
            jobs=self.settings.jobs,
            budget=self.settings.budget,
        )
        limits = ", ".join(f"{k}={v:g}" for k, v in self.settings.budget.items() if v is not None)
        self.say(
            f"runner {self.runner_id} drives {self.run_id} with {self.settings.harness} "
            f"(-j {self.settings.jobs}{', budget ' + limits if limits else ''})"
        )

    def _loop(self) -> str:
        next_poll = 0.0
        while True:
            now = time.monotonic()
            changed = self._tend(now)
            if self.interrupted:
                return "interrupted"
            if changed or now >= next_poll:
                next_poll = now + POLL_S
                decision = self._decide()
                if decision.stop:
                    return decision.stop
                for task in decision.start:
                    self._spawn(task)
                if decision.note and decision.note != self._last_line and "budget" in decision.note:
                    self._last_line = decision.note
                    self.say(f"{decision.note}; waiting for {len(self.children)} in flight")
            if now - self._last_progress >= PROGRESS_EVERY_S:
                self._progress()
            time.sleep(TICK_S)

    def _decide(self) -> Decision:
        nxt = self.svc.next(self.run_id, limit=50)
        open_ = self.svc.open_tasks(self.run_id)
        wall = time.time()
        stamp = self.svc.now()
        waiting = any(
            (t.status == "leased" and t.task_id not in self.children)
            or (t.status == "ready" and t.ready_at > stamp)
            for t in open_
        )
        view = View(
            now=wall,
            run_state=nxt.run_state,
            done=nxt.done,
            ready=nxt.tasks,
            in_flight=frozenset(self.children),
            jobs=self.settings.jobs,
            waiting=waiting,
            needs_human=len(nxt.needs_human),
            paused_until=self.paused_until,
            budget=self.settings.budget,
            spent=Spent.of(self.svc.usage(self.run_id)),
            interrupted=bool(self.interrupted),
        )
        return decide(view)

    # -- children

    def _spawn(self, task: TaskOut) -> None:
        self.workers += 1
        worker = f"run-{self.runner_id}-{self.workers}"
        fence0 = self.svc.task(task.task_id).fence
        argv = command(
            self.settings.harness, self.binary, prompt_for(task.task_id, worker), task.agent, self.pack
        )
        out = (self.tmp / f"{self.workers}.out").open("w+b")
        err = (self.tmp / f"{self.workers}.err").open("w+b")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=self._child_env(),
            start_new_session=True,  # its own process group: Ctrl-C reaches the runner, which stops it
            preexec_fn=self._pdeathsig,
        )
        now = time.monotonic()
        self.children[task.task_id] = Child(
            task, worker, proc, out, err, now, now + self.settings.task_timeout_s, fence0
        )
        self.tally.started += 1
        self.say(f"start {task.task_id} as {worker} (pid {proc.pid})")

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PETRI_HOME"] = str(self.svc.dish)
        if self.settings.harness == "claude":
            # Claude Code connects MCP servers in the background by default; a one-task process
            # whose agent has only Petri's tools would then start its first turn with no tools.
            env.setdefault("MCP_CONNECTION_NONBLOCKING", "0")
        petri = Path(sys.executable).with_name("petri")
        if petri.exists():
            env.setdefault("PETRI_BIN", str(petri))
        return env

    def _tend(self, now: float) -> bool:
        """Poll every child: hold its lease, stop it at its timeout, finish it when it exits."""
        changed = False
        for child in list(self.children.values()):
            if child.proc.poll() is not None:
                self._finish(child)
                changed = True
                continue
            if child.killed is None and now >= child.deadline:
                self._terminate(child, f"timed out after {self.settings.task_timeout_s:g} s")
            if child.term_at is not None and now - child.term_at >= self.settings.kill_grace_s:
                _killpg(child.proc, signal.SIGKILL)
            self._hold(child, now)
        return changed

    def _hold(self, child: Child, now: float) -> None:
        if child.lease is None and now - child.looked_at >= POLL_S:
            child.looked_at = now
            task = self.svc.task(child.task.task_id)
            if task.status == "leased" and task.fence > child.fence0 and self._is_ours(child, task.worker):
                child.lease = task.lease
                child.beat_at = now + self._heartbeat_s()
        elif child.lease is not None and now >= child.beat_at:
            child.beat_at = now + self._heartbeat_s()
            try:
                self.svc.heartbeat(child.task.task_id, child.lease)
            except Rejected:
                child.lease = None  # submitted, given back, or lost: nothing left to hold

    def _heartbeat_s(self) -> float:
        if self.settings.heartbeat_s:
            return self.settings.heartbeat_s
        return float(self.lease_s) / 3

    def _is_ours(self, child: Child, worker: str | None) -> bool:
        """The child's claim: under the name it was told, or (agents default to it) its agent's name."""
        return worker in (child.worker, child.task.agent)

    def _terminate(self, child: Child, why: str) -> None:
        child.killed = why
        child.term_at = time.monotonic()
        _killpg(child.proc, signal.SIGTERM)

    def _stop_children(self, why: str) -> None:
        for child in self.children.values():
            if child.killed is None:
                self._terminate(child, why)
        deadline = time.monotonic() + self.settings.kill_grace_s
        while self.children:
            for child in list(self.children.values()):
                if child.proc.poll() is not None:
                    self._finish(child)
                elif time.monotonic() >= deadline:
                    _killpg(child.proc, signal.SIGKILL)
            time.sleep(TICK_S)

    def _finish(self, child: Child) -> None:
        """A child exited: record its transcript and usage, then give back what it left behind."""
        del self.children[child.task.task_id]
        rc = child.proc.returncode
        duration = time.monotonic() - child.started
        stdout, stderr = _read(child.out), _read(child.err)
        task_id = child.task.task_id
        harness = self.settings.harness
        usage = measure(harness, stdout)
        task = self.svc.task(task_id)
        claimed = task.fence > child.fence0 and self._is_ours(child, task.worker)
        limit = None
        retry_after: float | None = None
        if task.status in ("submitted", "done") and claimed:
            outcome = "submitted"
        else:
            limit = rate_limit(error_texts(harness, stdout, stderr), datetime.now(UTC))
            why, retry_after = self._why(child, rc, stderr, limit, task.attempt)
            if task.status == "leased" and claimed:
                outcome = f"failed: {why}"
            elif task.status == "ready" and task.fence == child.fence0:
                outcome = f"not claimed: {why}"
            elif claimed:
                outcome = f"gave the task back ({task.status})"
            else:
                outcome = f"task is {task.status} (held by {task.worker or 'nobody'})"
        self.svc.record_transcript(
            task_id,
            runner=self.runner_id,
            worker=child.worker,
            harness=harness,
            exit_code=rc,
            duration_s=duration,
            outcome=outcome,
            usage=usage.as_payload(),
            transcript=stdout,
        )
        cost = f" · {usage.tokens:,} tokens · ${usage.cost_usd:.4f}"
        if outcome == "submitted":
            self.tally.submitted += 1
            self.pause_streak = 0
            self.say(f"done  {task_id}: submitted in {duration:.1f} s{cost}")
            return
        self.tally.failed += 1
        self.say(f"fail  {task_id}: {outcome}{cost}")
        if limit is not None:
            self._pause(limit, retry_after or 0.0)
        if outcome.startswith(("failed", "not claimed")):
            reason = outcome.split(": ", 1)[1]
            interrupted = bool(child.killed and child.killed.startswith("interrupted"))
            counts = limit is None and not interrupted  # the task did not fail: it was refused or stopped
            self._give_back(child, reason, task.status == "ready", retry_after, counts=counts)

    def _why(
        self, child: Child, rc: int | None, stderr: bytes, limit: RateLimit | None, attempt: int
    ) -> tuple[str, float]:
        if child.killed and child.killed.startswith("interrupted"):
            return child.killed, 0.0
        if limit is not None:
            self.tally.rate_limits += 1
            self.pause_streak += 1
            wait = limit.wait_s if limit.wait_s is not None else RATE_LIMIT_S * 2 ** (self.pause_streak - 1)
            wait = min(max(wait, 1.0), MAX_PAUSE_S)
            hint = "reset hint" if limit.wait_s is not None else "no reset hint"
            return f"rate limited ({limit.message}); retry in {wait:.0f} s ({hint})", wait
        if child.killed:
            why = f"{child.killed}; the harness was stopped"
        elif rc is not None and rc < 0:
            why = f"the harness died ({signal.Signals(-rc).name})"
        else:
            last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            why = f"the harness exited (code {rc}) without submitting" + (
                f": {last[0][:200]}" if last[0] else ""
            )
        return why, backoff(self.settings.backoff_s, attempt)

    def _pause(self, limit: RateLimit, wait: float) -> None:
        until = time.time() + wait
        if self.paused_until is None or until > self.paused_until:
            self.paused_until = until
            at = datetime.fromtimestamp(until, UTC).astimezone().strftime("%H:%M:%S")
            self.say(f"pause dispatching until {at} ({wait:.0f} s): {limit.message[:120]}")

    def _give_back(
        self, child: Child, why: str, unclaimed: bool, retry_after: float | None, *, counts: bool = True
    ) -> None:
        """Fail the task as retryable so the attempt count, backoff and cap apply (a rate limit
        does not count: the task did not fail, the provider refused); claim it first under the
        child's worker name if the child never did."""
        task_id = child.task.task_id
        try:
            lease = self.svc.claim(task_id, child.worker).lease if unclaimed else child.lease
            if lease is None:
                lease = self.svc.task(task_id).lease
            if lease is None:
                return
            out = self.svc.fail(task_id, lease, why, retryable=True, retry_after=retry_after, counts=counts)
        except Rejected as exc:
            self.say(f"      {task_id}: could not give it back ({exc.problem})")
            return
        if out.task_status == "stalled":
            self.say(f"      {task_id}: parked for a human ({out.hint})")
        else:
            self.say(f"      {task_id}: retry from {out.ready_at}")

    # -- display and summary

    def _progress(self) -> None:
        self._last_progress = time.monotonic()
        status = self.svc.status(self.run_id)["runs"][0]
        cells = ", ".join(f"{k} {v}" for k, v in sorted(status["cells"].items()))
        u = status["usage"]
        self.say(
            f"[{self.run_id}] cells: {cells} · in flight {len(self.children)}/{self.settings.jobs} · "
            f"{u['processes']} processes · {u['tokens']:,} tokens · ${u['cost_usd']:.4f}"
        )

    def summary(self, reason: str) -> dict[str, Any]:
        status = self.svc.status(self.run_id)
        run = status["runs"][0]
        message = STOP_MESSAGES.get(reason, reason).format(run=self.run_id)
        if reason == "budget":
            _, over = budget_left(self.settings.budget, Spent.of(run["usage"]), 0)
            message = (
                f"{over or 'stopped at the budget'}; raise it: petri run --resume {self.run_id} --budget …"
            )
        return {
            "run_id": self.run_id,
            "runner": self.runner_id,
            "harness": self.settings.harness,
            "stopped": reason,
            "message": message,
            "run_state": run["state"],
            "root_state": run["root_state"],
            "cells": run["cells"],
            "tasks": run["tasks"],
            "this_runner": {
                "started": self.tally.started,
                "submitted": self.tally.submitted,
                "failed": self.tally.failed,
                "rate_limits": self.tally.rate_limits,
            },
            "usage": run["usage"],
            "budget": self.settings.budget,
            "needs_human": status["needs_human"],
            "resume": None if reason == "done" else f"petri run --resume {self.run_id}",
        }


def _brief(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {"this_runner": summary["this_runner"], "usage": summary["usage"], "message": summary["message"]}


def _read(handle: IO[bytes]) -> bytes:
    handle.flush()
    handle.seek(0)
    data = handle.read()
    handle.close()
    return data


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _pdeathsig() -> Callable[[], None] | None:
    """On Linux, children get SIGTERM when the runner dies (even by SIGKILL): no orphan keeps working."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_pdeathsig


def acquire_lock(dish: Path, run_id: str) -> IO[str]:
    """One runner per run: an exclusive lock the OS drops when the runner dies, however it dies."""
    import fcntl

    folder = dish / "runners"
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / f"{run_id}.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise RunnerError(
            f"run {run_id} is already driven by another `petri run` (pid {pid}); stop it first or wait"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
