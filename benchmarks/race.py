"""P2: worker processes racing claim/submit on one dish for a fixed count of tasks.

Each worker is a process with one `Service`, playing an agent: `next` for a run it has not seen
finish, claim one of the first two offered tasks (so workers collide on purpose), submit a passing
result. Transitions are the committed claims and submissions. Afterwards the log is checked:
nothing lost, no task leased twice, no lock error surfaced.

`python -m benchmarks.race DISH SOURCE_ID OUT_JSON NAME START_AT RUN_ID...` is one worker.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from petri_core.errors import Rejected
from petri_core.service import Service

from .common import Row, Sizes
from .dishes import QUOTES, add_source, decomposed_run

CHILDREN = 8
TASKS_PER_RUN = CHILDREN * 3 + 3  # quick preset: investigator, skeptic, evaluator per cell; root after
WORKER_TIMEOUT_S = 300


def results(source_id: str) -> dict[str, dict[str, Any]]:
    """A passing result for every role of the quick preset but the decomposer."""
    cites = [
        {"source_id": source_id, "quote": QUOTES[k], "stance": "supports", "level": 2, "finding": "agrees"}
        for k in (2, 3)
    ]
    return {
        "investigator": {
            "verdict": "EVIDENCE_SUFFICIENT",
            "summary": "two readings agree",
            "citations": cites,
        },
        "skeptic": {"verdict": "ARGUMENT_WITHSTANDS_CRITIQUE", "summary": "objections answered"},
        "evaluator": {"verdict": "EVIDENCE_CONFIRMS", "summary": "confirmed"},
    }


def worker(dish: Path, source_id: str, out: Path, name: str, start_at: float, run_ids: list[str]) -> None:
    svc = Service(dish)
    play = results(source_id)
    rng = random.Random(name)
    record: dict[str, Any] = {
        "claims": [],
        "submits": [],
        "rejections": [],
        "errors": [],
        "nexts": 0,
        "late": time.time() > start_at,
    }
    open_runs = list(run_ids)
    time.sleep(max(0.0, start_at - time.time()))
    record["began"] = time.time()
    try:
        while open_runs:
            if time.time() > start_at + WORKER_TIMEOUT_S:
                record["errors"].append("timed out before the runs completed")
                break
            offered = []
            for run_id in rng.sample(open_runs, len(open_runs)):
                nxt = svc.next(run_id, limit=5)
                record["nexts"] += 1
                if nxt.done:
                    open_runs.remove(run_id)
                elif nxt.tasks:
                    offered = nxt.tasks
                    break
            if not offered:
                time.sleep(0.005)
                continue
            task = rng.choice(offered[:2])
            try:
                claim = svc.claim(task.task_id, name)
            except Rejected as exc:
                record["rejections"].append(str(exc))
                continue
            record["claims"].append([task.task_id, claim.lease])
            try:
                svc.submit(task.task_id, claim.lease, play[task.role])
            except Rejected as exc:
                record["errors"].append(f"submit of {task.task_id} rejected: {exc}")
                continue
            record["submits"].append([task.task_id, claim.lease])
    except Exception as exc:
        record["errors"].append(f"{exc!r}\n{traceback.format_exc()}")
    record["finished"] = time.time()
    out.write_text(json.dumps(record))


def seed(svc: Service, runs: int) -> tuple[str, list[str]]:
    """`runs` quick runs whose roots are decomposed into CHILDREN atomic cells; (source_id, run ids)."""
    source_id = add_source(svc)
    run_ids = []
    for k in range(1, runs + 1):

        def factor(i: int, k: int = k) -> str:
            return f"Factor {k * 100 + i} contributes to outcome {k}"

        run = decomposed_run(
            svc, f"Outcome {k} follows from the factors listed for it", factor, CHILDREN, "seed"
        )
        run_ids.append(run.run_id)
    return source_id, run_ids


def race(folder: Path, runs: int, workers: int, warmup_s: float = 0.8) -> dict[str, Any]:
    """One race on a fresh dish; the figures and the correctness counters."""
    dish = folder / ".petri"
    svc = Service(dish)
    source_id, run_ids = seed(svc, runs)
    start_at = time.time() + 1.0 + warmup_s * workers  # every worker imports first, then all start together
    outs = [folder / f"worker{w}.json" for w in range(workers)]
    argv = [sys.executable, "-m", "benchmarks.race", str(dish), source_id]
    procs = [
        subprocess.Popen(
            [*argv, str(out), f"w{w}", str(start_at), *run_ids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[1],
        )
        for w, out in enumerate(outs)
    ]
    stderr = [p.communicate(timeout=WORKER_TIMEOUT_S + 60)[1] for p in procs]
    crashed = [e[-2000:] for p, e in zip(procs, stderr, strict=True) if p.returncode != 0]
    records = [json.loads(out.read_text()) for out in outs if out.exists()]
    # From the first worker's start (the planned instant, or later if every worker was late).
    elapsed = max(r["finished"] for r in records) - min(r["began"] for r in records) if records else math.nan

    claims = [tuple(c) for r in records for c in r["claims"]]
    submits = {tuple(s) for r in records for s in r["submits"]}
    errors = [e for r in records for e in r["errors"]] + crashed
    log = svc.log()
    raced = {t for t, _ in claims}
    claimed_in_log = Counter(
        e["task_id"] for e in log if e["type"] == "task_claimed" and e["task_id"] in raced
    )
    completed = {e["task_id"] for e in log if e["type"] == "task_completed"}
    with svc.open() as st, st.read():
        tasks = [t for run_id in run_ids for t in st.open_tasks(run_id)]
        states = [st.run(run_id).state for run_id in run_ids]
    expected = runs * TASKS_PER_RUN
    lost = (
        sum(1 for t, _ in submits if t not in completed)  # acknowledged, yet not in the log
        + len(tasks)  # still open when every worker had stopped
        + sum(1 for s in states if s != "complete")
        + max(0, expected - len(submits))
    )
    per_task = Counter(t for t, _ in claims)
    double = sum(1 for n in per_task.values() if n > 1) + sum(1 for n in claimed_in_log.values() if n > 1)
    locked = sum(1 for e in [*errors, *stderr] if "locked" in e or "busy" in e)
    return {
        "tasks": len(submits),
        "expected_tasks": expected,
        "seconds": elapsed,
        "transitions": len(claims) + len(submits),
        "rejected_claims": sum(len(r["rejections"]) for r in records),
        "next_calls": sum(r["nexts"] for r in records),
        "lost": lost,
        "double_leases": double,
        "lock_errors": locked,
        "other_errors": len(errors) - locked,
        "errors": errors[:5],
        "late_workers": sum(1 for r in records if r["late"]),
        "verify_ok": svc.verify().ok,
    }


def run(sizes: Sizes) -> list[Row]:
    repeats = 1 if sizes.quick else 3
    races = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="petri-p2-") as tmp:
            races.append(race(Path(tmp), sizes.race_runs, sizes.race_workers, 0.3 if sizes.quick else 0.8))
    rates = [r["transitions"] / r["seconds"] for r in races]
    calls = [(r["transitions"] + r["rejected_claims"] + r["next_calls"]) / r["seconds"] for r in races]
    totals = {k: sum(r[k] for r in races) for k in ("lost", "double_leases", "lock_errors", "other_errors")}
    details = {"races": races}
    w, tasks = sizes.race_workers, races[0]["expected_tasks"]
    rate = statistics.median(rates)
    rows = [
        Row(
            "P2",
            f"{w} processes, {tasks} tasks: transitions/s (claim + submit)",
            rate,
            "/s",
            min(rates),
            max(rates),
            len(rates),
            "≥ 300/s",
            rate >= 300,
            details,
        ),
        Row(
            "P2",
            "all calls/s (+ next, + rejected claims)",
            statistics.median(calls),
            "/s",
            min(calls),
            max(calls),
            len(calls),
        ),
        Row("P2", "rejected claims (collisions), all races", sum(r["rejected_claims"] for r in races), ""),
    ]
    for key, label in (
        ("lost", "lost tasks or events"),
        ("double_leases", "double leases"),
        ("lock_errors", "lock errors surfaced"),
        ("other_errors", "other errors"),
    ):
        rows.append(Row("P2", f"{label}, all races", totals[key], "", target="0", met=totals[key] == 0))
    rows.append(
        Row("P2", "`petri verify` after each race", sum(r["verify_ok"] for r in races), f"of {len(races)} ok")
    )
    if not sizes.quick:
        with tempfile.TemporaryDirectory(prefix="petri-p2-") as tmp:
            alone = race(Path(tmp), sizes.race_runs, 1)
        rows.append(
            Row(
                "P2",
                f"1 process, same {tasks} tasks (no contention): transitions/s",
                alone["transitions"] / alone["seconds"],
                "/s",
                details={"races": [alone]},
            )
        )
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    worker(Path(args[0]), args[1], Path(args[2]), args[3], float(args[4]), args[5:])
