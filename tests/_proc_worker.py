"""Subprocess workers for the concurrency and crash tests: they claim and submit through the service.

python tests/_proc_worker.py swarm DISH SOURCE_ID OUT_JSON NAME START_AT RUN_ID...
    two threads race for the runs' tasks; every claim, submission, rejection and error is
    written to OUT_JSON when both threads finish.
python tests/_proc_worker.py burst DISH SOURCE_ID RUN_ID
    one loop claims every ready task, then submits them one by one, printing
    `claimed TASK` / `submitted TASK` after each commit, until the run completes.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

try:
    import petri_core.quotes  # noqa: F401
except ImportError:  # quotes.py not written yet: the stub on PYTHONPATH stands in
    import stubquotes  # noqa: F401

from helpers import passing

from petri_core.errors import Rejected
from petri_core.machine import NewEvent
from petri_core.models import ClaimOut, TaskOut
from petri_core.service import Service
from petri_core.store import Store

CHILDREN = 8
SCRIPT = Path(__file__)
STUB_DIR = "/tmp/smoke"


def worker_env() -> dict[str, str]:
    """The environment for a worker process: the quotes stub on the path only while quotes.py is missing."""
    env = dict(os.environ)
    if not (Path(__file__).parents[1] / "petri_core" / "quotes.py").exists():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (STUB_DIR, env.get("PYTHONPATH")) if p)
    return env


def root_claim(k: int) -> str:
    """The root claim of run number `k` (numbers keep every claim of the dish distinct)."""
    return f"Outcome {k} follows from the factors listed for it"


def policy(source_id: str) -> Any:
    """Decompose a root into CHILDREN atomic children, then pass every role with verified citations."""
    ok = passing(source_id)

    def play(task: TaskOut, claim: ClaimOut) -> dict[str, Any]:
        if task.kind == "decompose":
            k = int(re.findall(r"\d+", claim.context["cell"]["claim"])[0])
            children = [
                {
                    "text": f"Factor {k * 100 + i} contributes to outcome {k}",
                    "relation": "supports",
                    "atomic": True,
                    "bedrock_reason": "a measured fact",
                }
                for i in range(CHILDREN)
            ]
            return {"atomic": False, "children": children}
        return ok[task.role]

    return play


def swarm(dish: Path, source_id: str, out: Path, name: str, start_at: float, run_ids: list[str]) -> None:
    record: dict[str, list[Any]] = {"claims": [], "submits": [], "rejections": [], "errors": []}
    lock = threading.Lock()
    deadline = start_at + 45

    def thread(worker: str) -> None:
        svc = Service(dish)
        play = policy(source_id)
        rng = random.Random(worker)
        try:
            while time.time() < deadline:
                offered: list[TaskOut] = []
                finished = True
                for run_id in rng.sample(run_ids, len(run_ids)):
                    nxt = svc.next(run_id, limit=5)
                    finished = finished and nxt.done
                    if nxt.tasks:
                        offered = nxt.tasks
                        break
                if finished:
                    return
                if not offered:
                    time.sleep(0.005)
                    continue
                task = rng.choice(offered[:2])  # few choices: workers collide on purpose
                try:
                    claim = svc.claim(task.task_id, worker)
                except Rejected as exc:
                    with lock:
                        record["rejections"].append({"task_id": task.task_id, "message": str(exc)})
                    continue
                with lock:
                    record["claims"].append(
                        {"task_id": task.task_id, "lease": claim.lease, "worker": worker, "at": time.time()}
                    )
                svc.submit(task.task_id, claim.lease, play(task, claim))
                with lock:
                    record["submits"].append(
                        {"task_id": task.task_id, "lease": claim.lease, "worker": worker}
                    )
            with lock:
                record["errors"].append(f"{worker}: deadline passed before the runs completed")
        except BaseException as exc:
            with lock:
                record["errors"].append(f"{worker}: {exc!r}\n{traceback.format_exc()}")

    time.sleep(max(0.0, start_at - time.time()))
    threads = [threading.Thread(target=thread, args=(f"{name}-t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.write_text(json.dumps(record))


def die_inside_append(die_at: int) -> None:
    """Make the `die_at`-th `Store.append` of this process kill it before its transaction commits."""
    original = Store.append
    calls = itertools.count(1)

    def append(self: Store, events: Sequence[NewEvent], at: str) -> list[int]:
        seqs = original(self, events, at)
        if next(calls) == die_at:
            print(f"dying {seqs[0]}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return seqs

    Store.append = append  # type: ignore[method-assign]


def burst(dish: Path, source_id: str, run_id: str, die_at: int | None = None) -> None:
    if die_at is not None:
        die_inside_append(die_at)
    svc = Service(dish)
    play = policy(source_id)
    while True:
        nxt = svc.next(run_id, limit=50)
        if nxt.done:
            print("done", flush=True)
            return
        held = []
        for task in nxt.tasks:
            held.append((task, svc.claim(task.task_id, "burst")))
            print(f"claimed {task.task_id}", flush=True)
        for task, claim in held:
            svc.submit(task.task_id, claim.lease, play(task, claim))
            print(f"submitted {task.task_id}", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "swarm":
        swarm(Path(args[0]), args[1], Path(args[2]), args[3], float(args[4]), args[5:])
    elif mode == "open":
        time.sleep(max(0.0, float(args[1]) - time.time()))
        print(Service(Path(args[0])).next().hint)
    elif mode == "burst":
        burst(Path(args[0]), args[1], args[2], int(args[3]) if len(args) > 3 else None)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
