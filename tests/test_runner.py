"""Acceptance: `petri run`, the headless runner, with real subprocesses on a real dish.

`tests/fake_harness.py` stands in for `claude` / `opencode` (through PETRI_*_BIN): it claims and
submits through the service and prints stream-json / OpenCode JSON with usage; FAKE_PLAN makes
it hang, crash, exit without submitting or hit a rate limit. Every assertion is on the event
log, the projections or the fake's own process log, never on how long something took.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import Clock, add_article, passing, service

from petri_core import runner as rn
from petri_core.cli import main
from petri_core.errors import Rejected
from petri_core.models import TaskOut
from petri_core.service import Service
from petri_core.store import Store

FAKE = Path(__file__).with_name("fake_harness.py")
HEAT = "Heat pumps cut household heating emissions in cold climates"
SOLAR = "Solar panels pay back their embodied energy within four years"
TREE = ("--preset", "quick", "--max-depth", "1")  # a root and two atomic children: 10 tasks
LEAF = ("--preset", "quick", "--max-depth", "0")  # one cell: investigator, skeptic, evaluator
#: Per fake process (fake_harness.CALL, three model calls, Claude's modelUsage).
CLAUDE_TOKENS = 3 * (1200 + 80 + 3000 + 500)
CLAUDE_COST = 0.0123


@dataclass
class Bench:
    """A dish, the fake harness behind PETRI_CLAUDE_BIN/PETRI_OPENCODE_BIN, and its process log."""

    dish: Path
    state: Path
    env: dict[str, str]
    cwd: Path  # an OpenCode project (opencode.json names the Petri server), as `petri run` needs

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "petri_core", "run", *args]

    def environ(self, plan: dict[str, list[str]] | None) -> dict[str, str]:
        return {**self.env, "FAKE_PLAN": json.dumps(plan or {})}

    def run(
        self,
        *args: str,
        plan: dict[str, list[str]] | None = None,
        code: int = 0,
        progress: list[str] | None = None,
    ) -> dict[str, Any]:
        """`petri run … --json` to its end; returns the summary (and the progress lines, if asked)."""
        proc = subprocess.run(
            self.argv(*args, "--json"),
            env=self.environ(plan),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == code, proc.stderr
        if progress is not None:
            progress.extend(proc.stderr.splitlines())
        summary: dict[str, Any] = json.loads(proc.stdout)
        return summary

    def spawn(self, *args: str, plan: dict[str, list[str]] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args, "--json"),
            env=self.environ(plan),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def processes(self) -> list[dict[str, Any]]:
        path = self.state / "log.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def svc(self) -> Service:
        return Service(self.dish)

    def events(self, *types: str) -> list[dict[str, Any]]:
        return self.svc().log(types=types)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.dish / "petri.db")) as conn:
            return list(conn.execute(sql).fetchall())

    def tasks(self, where: str) -> int:
        """How many tasks match, 0 while the dish is still being created (for polling)."""
        try:
            return int(self.query(f"SELECT COUNT(*) FROM tasks WHERE {where}")[0][0])
        except sqlite3.OperationalError:
            return 0


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    dish = Path(os.environ["PETRI_HOME"])
    state = tmp_path / "fake"
    state.mkdir()
    env = {**os.environ, "FAKE_STATE": str(state), "PYTHONPATH": str(Path(__file__).parent.parent)}
    for name in ("claude", "opencode"):
        wrapper = tmp_path / "bin" / name
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        wrapper.chmod(0o755)
        env[f"PETRI_{name.upper()}_BIN"] = str(wrapper)
    project = tmp_path / "project"
    project.mkdir()
    (project / "opencode.json").write_text(
        json.dumps({"mcp": {"petri": {"type": "local", "command": ["petri"]}}})
    )
    return Bench(dish, state, env, project)


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def wait_for(condition: Any, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def max_overlap(processes: list[dict[str, Any]]) -> int:
    """The most fake processes alive at once, from the order of their start/end lines."""
    live, most = set(), 0
    for p in processes:
        (live.add if p["event"] == "start" else live.discard)(p["pid"])
        most = max(most, len(live))
    return most


# ---------------------------------------------------------------- (a) a whole claim, two at a time


def test_petri_run_completes_a_multi_cell_claim_two_at_a_time_one_process_per_task(bench: Bench) -> None:
    lines: list[str] = []
    summary = bench.run(HEAT, *TREE, "-j", "2", "--harness", "claude", progress=lines)
    assert (summary["stopped"], summary["run_state"], summary["root_state"]) == (
        "done",
        "complete",
        "validated",
    )
    assert summary["cells"] == {"validated": 3} and summary["resume"] is None
    run_id = summary["run_id"]

    tasks = {e["task_id"] for e in bench.events("task_created")}
    claims = bench.events("task_claimed")
    submitted = bench.events("task_submitted")
    assert len(tasks) == 10 and {e["task_id"] for e in submitted} == tasks
    # One process per task: distinct pids and worker names, each the one that claimed and submitted.
    starts = [p for p in bench.processes() if p["event"] == "start"]
    assert len(starts) == len({p["pid"] for p in starts}) == len({p["worker"] for p in starts}) == 10
    assert {(e["task_id"], e["payload"]["worker"]) for e in claims} == {
        (p["task"], p["worker"]) for p in starts
    }
    assert all(p["worker"].startswith(f"run-{summary['runner']}-") for p in starts)
    assert {e["actor"] for e in submitted} == {f"worker:{p['worker']}" for p in starts}
    assert max_overlap(bench.processes()) == 2

    # Transcripts and usage, measured from the harness output, per task, cell and run.
    transcripts = bench.events("task_transcript")
    assert len(transcripts) == 10 and {e["payload"]["outcome"] for e in transcripts} == {"submitted"}
    first = transcripts[0]["payload"]
    assert (first["harness"], first["exit_code"], first["usage"]["model_calls"]) == ("claude", 0, 3)
    svc = bench.svc()
    text = svc.transcript(transcripts[0]["task_id"]).decode()
    assert hashlib_of(text.encode()) == first["transcript_hash"] and len(text) == first["transcript_bytes"]
    assert '"type": "result"' in text and '"total_cost_usd": 0.0123' in text
    usage = summary["usage"]
    assert (usage["processes"], usage["tokens"], usage["model_calls"]) == (10, 10 * CLAUDE_TOKENS, 30)
    assert usage["cost_usd"] == pytest.approx(10 * CLAUDE_COST)
    # Each task's progress line counts tokens as the totals do (cache included), so they add up.
    done = [line for line in lines if " done  " in line]
    assert len(done) == 10 and all(f" · {CLAUDE_TOKENS:,} tokens · $0.0123" in line for line in done)

    status = json.loads(cli(bench, "status", run_id, "--json"))["runs"][0]
    assert status["usage"] == usage
    assert f"usage: 10 harness processes · {10 * CLAUDE_TOKENS:,} tokens" in cli(bench, "status", run_id)
    shown = json.loads(cli(bench, "show", f"{run_id}-1-01", "--json"))
    assert shown["usage"]["processes"] == 3 and shown["usage"]["tokens"] == 3 * CLAUDE_TOKENS
    assert [t["usage"]["model_calls"] for t in shown["tasks"]] == [3, 3, 3]
    text_show = cli(bench, "show", f"{run_id}-1-01")
    assert (
        f"{run_id}-1-01.i1.investigator  done  attempt 1  · {CLAUDE_TOKENS:,} tokens · 3 calls" in text_show
    )
    runners = svc.runners(run_id)
    assert [(r["harness"], r["jobs"], r["stop_reason"]) for r in runners] == [("claude", 2, "done")]
    assert svc.verify().ok


def hashlib_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def cli(bench: Bench, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "petri_core", *args], env=bench.env, capture_output=True, text=True, check=True
    )
    return out.stdout


def test_petri_run_drives_opencode_and_reads_usage_from_its_step_finish_events(bench: Bench) -> None:
    summary = bench.run(SOLAR, *LEAF, "--harness", "opencode", "-j", "1")
    assert summary["stopped"] == "done" and summary["harness"] == "opencode"
    per_call = 1200 + 80 + 20 + 3000 + 500
    assert summary["usage"]["processes"] == 3
    assert (
        summary["usage"]["tokens"] == 3 * 3 * per_call and summary["usage"]["reasoning_tokens"] == 3 * 3 * 20
    )
    assert summary["usage"]["cost_usd"] == pytest.approx(9 * 0.0041)
    assert {p["harness"] for p in bench.processes() if p["event"] == "start"} == {"opencode"}


# ---------------------------------------------------------------- (b) children that fail, and rate limits


def test_children_that_hang_exit_without_submitting_or_crash_are_retried_with_backoff_then_parked(
    bench: Bench,
) -> None:
    plan = {"investigator": ["hang"], "skeptic": ["nosubmit"], "evaluator": ["noclaim", "crash", "crash"]}
    args = (*LEAF, "--backoff", "0.2", "--task-timeout", "10", "-j", "1")  # roomy: a loaded CI machine
    summary = bench.run(SOLAR, *args, plan=plan)
    run_id = summary["run_id"]
    assert summary["stopped"] == "needs_human" and summary["cells"] == {"stalled": 1}
    assert summary["resume"] == f"petri run --resume {run_id}"
    failed = {
        (e["task_id"].rsplit(".", 1)[1], e["payload"]["attempt"]): e for e in bench.events("task_failed")
    }
    reasons = {key: e["payload"]["reason"] for key, e in failed.items()}
    assert all(e["payload"]["retryable"] for e in failed.values())
    assert reasons == {
        # A hung child is stopped at its timeout.
        ("investigator", 1): "timed out after 10 s; the harness was stopped",
        # Exit 0 without submitting: the child held the lease, so it is failed under its name…
        ("skeptic", 1): "the harness exited (code 0) without submitting",
        # …or it never claimed: the runner claims under the child's worker name, then fails it.
        ("evaluator", 1): "the harness exited (code 0) without submitting",
        # A crash, twice more: the attempt cap (3) parks the cell for a human.
        ("evaluator", 2): "the harness died (SIGKILL)",
        ("evaluator", 3): "the harness died (SIGKILL)",
    }
    starts = [p for p in bench.processes() if p["event"] == "start"]
    assert [p["behaviour"] for p in starts] == ["hang", "ok", "nosubmit", "ok", "noclaim", "crash", "crash"]
    evaluator = [p["worker"] for p in starts if p["role"] == "evaluator"]
    claims = [
        e["payload"]["worker"] for e in bench.events("task_claimed") if e["task_id"].endswith("evaluator")
    ]
    assert claims == evaluator  # the first one by the runner, in the child's name
    # Retried with backoff: 0.2 s after a first attempt, doubled after a second; never before.
    released = [e for e in bench.events("task_released")]
    assert [at(e["payload"]["ready_at"]) - at(e["at"]) for e in released] == pytest.approx(
        [0.2, 0.2, 0.2, 0.4], abs=1e-3
    )
    for event in released:
        again = [e for e in bench.events("task_claimed") if e["task_id"] == event["task_id"]]
        assert at(again[event["payload"]["attempt"] - 1]["at"]) >= at(event["payload"]["ready_at"])
    stalled = bench.events("task_stalled")
    assert [e["task_id"] for e in stalled] == [f"{run_id}-0-01.i1.evaluator"]
    assert "attempt cap 3 reached" in stalled[0]["payload"]["reason"]
    outcomes = [e["payload"]["outcome"] for e in bench.events("task_transcript")]
    assert len(outcomes) == 7 and outcomes.count("submitted") == 2
    assert outcomes[4] == "not claimed: the harness exited (code 0) without submitting"
    assert bench.svc().verify().ok


def test_a_rate_limit_pauses_all_dispatching_until_its_reset_hint(bench: Bench) -> None:
    # -j 1, two investigator tasks ready at once; the first hits a limit that resets in 3 s.
    plan = {"investigator": ["ratelimit:3"]}
    summary = bench.run(HEAT, *TREE, "-j", "1", "--budget", "tasks=4", plan=plan)
    assert summary["stopped"] == "budget" and summary["this_runner"]["rate_limits"] == 1
    (fail,) = bench.events("task_failed")
    assert fail["payload"]["reason"].startswith("rate limited (Claude AI usage limit reached|")
    assert "(reset hint)" in fail["payload"]["reason"]
    (release,) = bench.events("task_released")
    wait = at(release["payload"]["ready_at"]) - at(release["at"])
    assert 2 < wait <= 4  # the reset epoch is a whole second
    # The other investigator was ready all along, yet nothing was dispatched during the pause:
    # the next claim of any task comes after the reset (the pause ends a few ms before ready_at).
    later = [e for e in bench.events("task_claimed") if e["seq"] > fail["seq"]]
    assert {e["task_id"] for e in later} == {fail["task_id"], fail["task_id"].replace("-1-01", "-1-02")} or {
        e["task_id"] for e in later
    } == {fail["task_id"], fail["task_id"].replace("-1-02", "-1-01")}
    assert at(later[0]["at"]) >= at(release["payload"]["ready_at"]) - 0.1
    transcript = next(e for e in bench.events("task_transcript") if e["task_id"] == fail["task_id"])
    assert transcript["payload"]["exit_code"] == 1
    assert transcript["payload"]["outcome"].startswith("not claimed: rate limited")


def test_rate_limits_retry_as_the_same_attempt_and_never_reach_the_attempt_cap(bench: Bench) -> None:
    """Two rate limits with a cap of 2 attempts: counted, the second would park the cell."""
    plan = {"investigator": ["ratelimit:1", "ratelimit:1"]}
    summary = bench.run(SOLAR, *LEAF, "-j", "1", "--attempt-cap", "2", plan=plan)
    assert summary["stopped"] == "done" and summary["this_runner"]["rate_limits"] == 2
    fails = bench.events("task_failed")
    assert [(f["payload"]["attempt"], f["payload"]["counts"]) for f in fails] == [(1, False), (1, False)]
    assert [e["payload"]["attempt"] for e in bench.events("task_released")] == [1, 1]
    assert not bench.events("task_stalled")
    assert bench.svc().verify().ok


# ---------------------------------------------------------------- (c) SIGKILL, then --resume


def test_a_sigkilled_runner_resumes_and_never_runs_a_submitted_task_again(bench: Bench) -> None:
    plan = {"skeptic": ["slow:30", "slow:30"]}  # the leaves' skeptics are mid-task at the kill
    proc = bench.spawn(HEAT, *TREE, "-j", "2", plan=plan)
    try:

        def mid_run() -> bool:
            return (
                bench.tasks("status='done'") >= 3 and bench.tasks("status='leased' AND role='skeptic'") == 2
            )

        wait_for(mid_run, "three tasks done and both skeptics leased")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    before = bench.processes()
    done_before = {r[0] for r in bench.query("SELECT task_id FROM tasks WHERE status='done'")}
    held = {r[0]: r[1] for r in bench.query("SELECT task_id, worker FROM tasks WHERE status='leased'")}
    assert len(held) == 2
    # The dead runner's children die with it (Linux: PR_SET_PDEATHSIG), instead of working on.
    wait_for(lambda: not any(alive(p["pid"]) for p in before), "the orphaned children to exit", 10)
    first_runner = bench.query("SELECT runner_id FROM runners")[0][0]
    seq_at_kill = bench.svc().verify().events

    summary = bench.run("--resume", summary_run_id(bench))
    assert summary["stopped"] == "done" and summary["root_state"] == "validated"
    # The log: the dead runner is recorded as died, its leases released at once, no task twice.
    stops = [(e["payload"]["runner"], e["payload"]["reason"]) for e in bench.events("runner_stopped")]
    assert stops == [(first_runner, "died"), (summary["runner"], "done")]
    released = [e for e in bench.events("task_failed") if e["seq"] > seq_at_kill]
    assert {e["task_id"] for e in released} == set(held)
    assert all("died; released by runner" in e["payload"]["reason"] for e in released)
    submitted = Counter(e["task_id"] for e in bench.events("task_submitted"))
    assert set(submitted.values()) == {1} and len(submitted) == 10
    for event in bench.events("task_claimed"):
        assert event["task_id"] not in done_before or event["seq"] < seq_at_kill
    after = [p for p in bench.processes()[len(before) :] if p["event"] == "start"]
    assert not {p["task"] for p in after} & done_before
    assert all(p["worker"].startswith(f"run-{summary['runner']}-") for p in after)
    assert cli(bench, "verify").startswith("ok: ")


def summary_run_id(bench: Bench) -> str:
    return str(bench.query("SELECT run_id FROM runs")[0][0])


# ---------------------------------------------------------------- (d) budgets


def test_a_budget_stops_dispatching_and_a_raised_budget_resumes_the_run(bench: Bench) -> None:
    first = bench.run(SOLAR, *LEAF, "--budget", "tasks=1", "-j", "2")
    run_id = first["run_id"]
    assert first["stopped"] == "budget" and first["this_runner"]["started"] == 1
    assert first["message"].startswith("task budget reached: 1 of 1 harness processes; raise it:")
    assert first["resume"] == f"petri run --resume {run_id}" and first["run_state"] != "complete"
    # Resumed without a new budget: the run keeps its own, so nothing starts.
    again = bench.run("--resume", run_id)
    assert again["stopped"] == "budget" and again["this_runner"]["started"] == 0
    # Raised: it completes; the token budget is checked too but not reached.
    last = bench.run("--resume", run_id, "--budget", "tasks=5,tokens=1e9")
    assert last["stopped"] == "done" and last["this_runner"]["started"] == 2
    budgets = [e["payload"]["budget"] for e in bench.events("runner_started")]
    assert budgets == [{"tasks": 1}, {"tasks": 1}, {"tasks": 5, "tokens": 1e9}]
    assert last["usage"]["processes"] == 3


def test_new_evidence_on_a_complete_run_is_researched_by_a_resumed_runner(bench: Bench) -> None:
    """`petri feed` reopens a cell under a final root: the run grows again, so `petri run --resume`
    dispatches the reopened cell's tasks instead of stopping at once as "complete"."""
    first = bench.run(SOLAR, *TREE, "-j", "2")
    run_id, child = first["run_id"], f"{first['run_id']}-1-01"
    assert (first["stopped"], first["run_state"]) == ("done", "complete")
    svc = bench.svc()
    update = add_article(svc, url="https://example.org/update").source_id
    svc.feed(child, update, note="check the newer count")
    assert svc.next(run_id).done is False
    again = bench.run("--resume", run_id)
    assert (again["stopped"], again["run_state"], again["root_state"]) == ("done", "complete", "validated")
    reopened = [
        e for e in bench.events("task_created") if e["cell_id"] == child and e["payload"]["iteration"] == 2
    ]
    assert reopened and again["this_runner"]["started"] == len(reopened)
    assert bench.svc().open().cell(child).state == "validated"
    assert [h.cell_id for h in bench.svc().next(run_id).needs_human] == [f"{run_id}-0-01"]  # the root's flag


# ---------------------------------------------------------------- (e) Ctrl-C


def test_sigint_terminates_the_children_and_releases_their_leases(bench: Bench) -> None:
    proc = bench.spawn(HEAT, *TREE, "-j", "2", plan={"investigator": ["hang", "hang"]})
    try:
        wait_for(lambda: bench.tasks("status='leased'") == 2, "both investigators to hold leases")
        children = [p["pid"] for p in bench.processes() if p.get("behaviour") == "hang"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == rn.EXIT_INTERRUPTED, err
    summary = json.loads(out)
    assert summary["stopped"] == "interrupted"
    assert not any(alive(pid) for pid in children)
    assert bench.tasks("status='leased'") == 0
    failed = bench.events("task_failed")
    assert len(failed) == 2
    assert {e["payload"]["reason"] for e in failed} == {"interrupted: petri run received SIGINT"}
    for event in bench.events("task_released"):
        assert event["payload"]["ready_at"] == event["at"]  # ready again at once for --resume
    assert [e["payload"]["reason"] for e in bench.events("runner_stopped")] == ["interrupted"]


# ---------------------------------------------------------------- refusals


def test_petri_run_without_the_harness_binary_is_one_error_line_and_starts_nothing(bench: Bench) -> None:
    env = {**bench.env, "PETRI_CLAUDE_BIN": str(bench.state / "missing")}
    proc = subprocess.run(bench.argv(SOLAR), env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: cannot run the claude harness: PETRI_CLAUDE_BIN=")
    assert not (bench.dish / "petri.db").exists() or not bench.events("run_started")


def test_one_runner_per_run_the_lock_refuses_a_second(tmp_path: Path) -> None:
    first = rn.acquire_lock(tmp_path, "abc")
    with pytest.raises(
        rn.RunnerError, match=rf"run abc is already driven by another `petri run` \(pid {os.getpid()}\)"
    ):
        rn.acquire_lock(tmp_path, "abc")
    first.close()
    rn.acquire_lock(tmp_path, "abc").close()


# ---------------------------------------------------------------- the pure parts


def task(n: int) -> TaskOut:
    return TaskOut(
        task_id=f"t{n}", cell_id="c", role="skeptic", kind="assess", agent="petri-skeptic", brief="b"
    )


def view(**kw: Any) -> rn.View:
    base: dict[str, Any] = {
        "now": 100.0,
        "run_state": "growing",
        "done": False,
        "ready": [task(1), task(2), task(3)],
        "in_flight": frozenset(),
        "jobs": 2,
    }
    return rn.View(**{**base, **kw})


@pytest.mark.parametrize(
    ("kw", "start", "stop"),
    [
        ({}, ["t1", "t2"], None),
        ({"in_flight": frozenset({"t1"})}, ["t2"], None),
        ({"in_flight": frozenset({"t1", "t9"})}, [], None),
        ({"paused_until": 160.0}, [], None),
        ({"paused_until": 99.0}, ["t1", "t2"], None),
        ({"budget": {"tasks": 3}, "spent": rn.Spent(tasks=2)}, ["t1"], None),
        ({"budget": {"tasks": 3}, "spent": rn.Spent(tasks=3)}, [], "budget"),
        ({"budget": {"tasks": 3}, "spent": rn.Spent(tasks=2), "in_flight": frozenset({"t9"})}, [], None),
        ({"budget": {"usd": 1.0}, "spent": rn.Spent(usd=1.0)}, [], "budget"),
        ({"budget": {"tokens": 10}, "spent": rn.Spent(tokens=9)}, ["t1", "t2"], None),
        ({"done": True}, [], "done"),
        ({"done": True, "in_flight": frozenset({"t9"})}, [], None),
        ({"run_state": "halted"}, [], "halted"),
        ({"interrupted": True, "in_flight": frozenset({"t9"})}, [], "interrupted"),
        ({"ready": [], "needs_human": 1}, [], "needs_human"),
        ({"ready": [], "needs_human": 1, "waiting": True}, [], None),
        ({"ready": [], "in_flight": frozenset({"t9"}), "needs_human": 1}, [], None),
        ({"ready": []}, [], "idle"),
    ],
)
def test_decide_starts_up_to_the_free_slots_and_stops_only_when_nothing_is_in_flight(
    kw: dict[str, Any], start: list[str], stop: str | None
) -> None:
    decision = rn.decide(view(**kw))
    assert ([t.task_id for t in decision.start], decision.stop) == (start, stop)


NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "wait"),
    [
        (f"Claude AI usage limit reached|{int(NOW.timestamp()) + 600}", 600),
        ('API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"x"}}', None),
        ("You've hit your limit · resets 3pm (UTC)", 3 * 3600),
        ("You've hit your limit · resets 11am (UTC)", 23 * 3600),
        ("You've hit your limit · resets 1:30pm (Europe/Berlin)", 30 * 60),
        ("5-hour limit reached · resets at 2026-11-01T12:05:00Z", 300),
        ('{"statusCode":429,"responseHeaders":{"retry-after":"17"}}', 17),
        ("API Error (529 overloaded_error) · Retrying in 2 minutes", 120),
        ("Too Many Requests: try again in 45s", 45),
    ],
)
def test_rate_limit_recognises_the_error_and_reads_the_reset_hint(text: str, wait: float | None) -> None:
    found = rn.rate_limit([text], NOW)
    assert found is not None and found.wait_s == (pytest.approx(wait) if wait is not None else None)


def test_rate_limit_ignores_other_errors() -> None:
    assert rn.rate_limit(["Error: permission denied for petri_submit"], NOW) is None
    assert rn.rate_limit([], NOW) is None


def test_error_texts_never_read_tool_output_or_page_text() -> None:
    stdout = b"\n".join(
        json.dumps(e).encode()
        for e in [
            {
                "type": "user",
                "message": {"content": [{"type": "tool_result", "content": "rate limit 429 page"}]},
            },
            {"type": "result", "subtype": "success", "is_error": False, "result": "about rate limits"},
        ]
    )
    assert rn.error_texts("claude", stdout, b"") == []
    assert rn.rate_limit(rn.error_texts("claude", stdout, b"boom: 429 Too Many Requests"), NOW) is not None


def test_claude_usage_prefers_model_usage_and_counts_distinct_messages() -> None:
    lines = [
        {"type": "system", "subtype": "init", "model": "m1"},
        {"type": "assistant", "message": {"id": "a", "model": "m1", "usage": {"input_tokens": 5}}},
        {"type": "assistant", "message": {"id": "a", "model": "m1", "usage": {"input_tokens": 5}}},
        {"type": "assistant", "message": {"id": "b", "model": "m2", "usage": {"input_tokens": 7}}},
        {
            "type": "result",
            "total_cost_usd": 0.5,
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "modelUsage": {
                "m1": {
                    "inputTokens": 10,
                    "outputTokens": 2,
                    "cacheReadInputTokens": 3,
                    "cacheCreationInputTokens": 4,
                },
                "m2": {"inputTokens": 20, "outputTokens": 1},
            },
        },
    ]
    usage = rn.claude_usage(b"noise\n" + b"\n".join(json.dumps(x).encode() for x in lines))
    assert usage.as_payload() == {
        "input_tokens": 30,
        "output_tokens": 3,
        "cache_read_tokens": 3,
        "cache_write_tokens": 4,
        "reasoning_tokens": 0,
        "cost_usd": 0.5,
        "model_calls": 2,
        "model": "m1",
    }
    killed = rn.claude_usage(b"\n".join(json.dumps(x).encode() for x in lines[:4]))
    assert (killed.input_tokens, killed.cost_usd, killed.model_calls) == (12, 0.0, 2)


def test_opencode_usage_sums_step_finish_events() -> None:
    step = {
        "type": "step_finish",
        "part": {
            "cost": 0.25,
            "tokens": {"input": 3, "output": 2, "reasoning": 1, "cache": {"read": 4, "write": 5}},
        },
    }
    data = b"\n".join(json.dumps(x).encode() for x in [{"type": "step_start"}, step, step])
    usage = rn.opencode_usage(data)
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens) == (6, 4, 2)
    assert (usage.cache_read_tokens, usage.cache_write_tokens, usage.cost_usd, usage.model_calls) == (
        8,
        10,
        0.5,
        2,
    )


def test_parse_budget_reads_keys_and_rejects_nonsense() -> None:
    assert rn.parse_budget(["tasks=20,usd=2.5", "tokens=1e6", "usd=none"]) == {
        "tasks": 20,
        "usd": None,
        "tokens": 1e6,
    }
    for bad in ("cost=5", "tasks", "usd=lots", "tasks=-1"):
        with pytest.raises(Rejected):
            rn.parse_budget([bad])


def test_harness_commands_are_the_documented_flags() -> None:
    prompt = rn.prompt_for("abc-0-01.i1.skeptic", "run-a1b2c3-4")
    assert prompt == "Task abc-0-01.i1.skeptic. Claim it as worker run-a1b2c3-4."
    assert rn.claude_command("claude", prompt, "petri-skeptic", Path("/pack")) == [
        "claude",
        "-p",
        prompt,
        "--agent",
        "petri:petri-skeptic",
        "--output-format",
        "stream-json",
        "--verbose",
        "--no-session-persistence",
        "--plugin-dir",
        "/pack",
        "--allowedTools",
        "mcp__plugin_petri_petri",
        "WebSearch",
    ]
    assert rn.opencode_command("opencode", prompt, "petri-skeptic") == [
        "opencode",
        "run",
        "--agent",
        "petri-skeptic",
        "--format",
        "json",
        prompt,
    ]
    assert (rn.skill_pack() / ".claude-plugin" / "plugin.json").is_file()


def test_backoff_doubles_and_is_capped() -> None:
    assert [rn.backoff(30, a) for a in (1, 2, 3)] == [30, 60, 120]
    assert rn.backoff(30, 20) == 1800


# ---------------------------------------------------------------- the log is the truth: replay, blobs, migration


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[Service, str]]:
    svc = service(tmp_path, Clock())
    ok = passing(add_article(svc).source_id)
    run = svc.start(SOLAR, preset="quick", max_depth=0)
    task_id = run.tasks[0].task_id
    svc.runner_started(run.run_id, "abc123", pid=42, harness="claude", jobs=2, budget={"usd": 5.0})
    lease = svc.claim(task_id, "run-abc123-1").lease
    svc.submit(task_id, lease, ok["investigator"])
    big = b"".join(json.dumps({"type": "assistant", "n": i}).encode() + b"\n" for i in range(500))
    usage = rn.Usage(100, 20, 300, 40, 5, 0.0125, 3, "m").as_payload()
    for data in (b'{"type":"result"}\n', big):
        svc.record_transcript(
            task_id,
            runner="abc123",
            worker="run-abc123-1",
            harness="claude",
            exit_code=0,
            duration_s=1.23456,
            outcome="submitted",
            usage=usage,
            transcript=data,
        )
    svc.runner_stopped(run.run_id, "abc123", "done", {})
    yield svc, task_id


def test_transcript_and_runner_events_replay_into_the_usage_and_runners_projections(
    recorded: tuple[Service, str],
) -> None:
    svc, task_id = recorded
    assert svc.verify().ok
    with svc.open() as st:
        fresh = st.replay()
        for table in ("usage", "runners"):
            live = st.conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            again = fresh.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            assert [tuple(r) for r in live] == [tuple(r) for r in again] and live
        fresh.close()
        assert st.usage_totals(task_id=task_id) == {
            "processes": 2,
            "input_tokens": 200,
            "output_tokens": 40,
            "cache_read_tokens": 600,
            "cache_write_tokens": 80,
            "reasoning_tokens": 10,
            "cost_usd": 0.025,
            "model_calls": 6,
            "tokens": 930,
        }
        runner = st.runners(task_id.split("-")[0])[0]
        assert (runner["budget"], runner["stop_reason"]) == ({"usd": 5.0}, "done")
        encodings = dict(st.conn.execute("SELECT size, encoding FROM blobs").fetchall())
    assert sorted(encodings.values()) == ["raw", "zlib"]
    assert svc.transcript(task_id).count(b"\n") == 500
    assert svc.transcript(task_id, attempt=1).startswith(b'{"type": "assistant"')


def test_an_edited_usage_row_or_transcript_is_reported_by_verify(recorded: tuple[Service, str]) -> None:
    svc, _ = recorded
    with closing(sqlite3.connect(svc.dish / "petri.db", isolation_level=None)) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="blobs are immutable"):
            conn.execute("UPDATE blobs SET data = x'00'")
        conn.execute("UPDATE usage SET cost_usd = 0 WHERE seq = (SELECT MIN(seq) FROM usage)")
        conn.execute("DROP TRIGGER blobs_no_update")
        conn.execute("UPDATE blobs SET data = CAST('{}' AS BLOB) WHERE encoding = 'raw'")
    problems = svc.verify().problems
    assert problems[0] == "append-only trigger blobs_no_update is missing"
    assert problems[1] == "projection usage differs from a replay of the events (2 rows)"
    assert problems[2].endswith("does not match its hash (tampered)")


def test_an_older_dish_gains_the_usage_runners_and_blob_tables(tmp_path: Path) -> None:
    dish = tmp_path / ".petri"
    Store(dish).close()
    with closing(sqlite3.connect(dish / "petri.db", isolation_level=None)) as conn:
        for table in ("usage", "runners", "blobs"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_usage_runners_blobs'")
    with Store(dish) as st:
        names = {r[0] for r in st.conn.execute("SELECT name FROM sqlite_master")}
        assert {"usage", "runners", "blobs", "blobs_no_update", "usage_run"} <= names
        assert st.check_triggers() == [] and st.check_projections() == []


def test_petri_run_with_opencode_needs_an_installed_project(bench: Bench, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        bench.argv(SOLAR, "--harness", "opencode"),
        env=bench.environ(None),
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "run `petri install opencode` here first" in proc.stderr
    assert not (bench.dish / "petri.db").exists()  # refused before anything was written


@pytest.mark.parametrize("cost", [float("nan"), float("inf"), float("-inf")])
def test_a_cost_json_cannot_hold_is_recorded_as_none_reported(cost: float) -> None:
    assert rn.Usage(1, 2, cost_usd=cost).as_payload()["cost_usd"] == 0.0


def test_petri_transcript_prints_the_stored_output_safely_and_raw_exactly(
    recorded: tuple[Service, str],
) -> None:
    svc, task_id = recorded
    hostile = b'{"type":"assistant","text":"\x1b[31mred\x1b[0m \xe2\x9c\x93"}\n'
    svc.record_transcript(
        task_id,
        runner="abc123",
        worker="run-abc123-2",
        harness="claude",
        exit_code=0,
        duration_s=1.0,
        outcome="submitted",
        usage=rn.Usage().as_payload(),
        transcript=hostile,
    )
    env = {"PETRI_HOME": str(svc.dish)}
    shown = CliRunner().invoke(main, ["transcript", task_id], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.output == '{"type":"assistant","text":"red \u2713"}\n'  # escapes stripped
    raw = CliRunner().invoke(main, ["transcript", task_id, "--raw"], env=env)
    assert raw.stdout_bytes == hostile
    missing = CliRunner().invoke(main, ["transcript", task_id, "--attempt", "2"], env=env)
    assert missing.exit_code == 1 and missing.stderr == (
        f"Error: no transcript for task {task_id} attempt 2; its attempts with a transcript: 1\n"
    )
    unknown = CliRunner().invoke(main, ["transcript", "no-such-task"], env=env)
    assert unknown.exit_code == 1 and unknown.output.startswith("Error: ")


def test_a_dish_from_before_the_usage_task_index_gains_it_and_show_uses_it(
    recorded: tuple[Service, str],
) -> None:
    svc, task_id = recorded
    svc.close()
    with closing(sqlite3.connect(svc.dish / "petri.db", isolation_level=None)) as conn:
        conn.execute("DROP INDEX usage_task")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm003_usage_task_index'")
    with Store(svc.dish) as st:
        plan = st.conn.execute("EXPLAIN QUERY PLAN SELECT * FROM usage WHERE task_id = ?", (task_id,))
        assert "USING INDEX usage_task" in " ".join(str(row[-1]) for row in plan)
        assert st.check_projections() == []
