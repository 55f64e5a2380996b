"""Model calls per cell, per preset, counted from `petri run` transcripts (not self-reported).

Runs `petri run --harness claude` on the demo claim once per preset against the scripted model of
the harness tests (tests/harness/fake_model.py, on 127.0.0.1) with the pinned Claude Code binary
(`npm install` in tests/harness first), then reads the stored transcripts' usage:

- harness processes per cell: one per task, fixed by the workflow (the roles a preset enables,
  debates, iterations) — the number a preset's budget controls;
- model requests per cell: from the transcripts; with the scripted model this is a floor (claim,
  fetch, submit, reply), a real model reasons in more turns.

    python -m benchmarks.model_calls [--json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "tests" / "harness" / "node_modules" / ".bin"
TARGETS = {"quick": 4, "standard": 10, "thorough": 20}


def measure(preset: str, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from harness.fake_model import FakeModel  # type: ignore[import-not-found]  # tests/ is on sys.path here

    from petri_core.demo import serve_pages
    from petri_core.demo.script import CLAIM
    from petri_core.service import Service

    root = work / preset
    (root / "home").mkdir(parents=True)
    dish = root / "dish"
    with serve_pages() as pages, FakeModel(root / "requests.jsonl", pages_url=pages, children=2) as model:
        env = {
            "PATH": f"{Path(sys.executable).parent}:{BIN}:/usr/bin:/bin",
            "HOME": str(root / "home"),
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": "sk-ant-fake",
            "PETRI_HOME": str(dish),
            "PETRI_FETCH_ALLOW_PRIVATE": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        argv = ["petri", "run", CLAIM, "--harness", "claude", "-j", "2", "--preset", preset, "--json"]
        out = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"petri run ({preset}) failed: {out.stderr[-2000:]}")
    summary = json.loads(out.stdout)
    svc = Service(dish)
    st = svc.open(create=False)
    cells = st.cells(summary["run_id"])
    rows = st.usage_rows(run_id=summary["run_id"])
    st.close()
    calls = sum(r["model_calls"] for r in rows)
    return {
        "preset": preset,
        "stopped": summary["stopped"],
        "cells": len(cells),
        "processes": len(rows),
        "processes_per_cell": round(len(rows) / len(cells), 1),
        "model_requests_per_cell": round(calls / len(cells), 1),
        "iterations": sum(c.iteration for c in cells),
        "target": TARGETS[preset],
    }


def main() -> None:
    if not (BIN / "claude").exists():
        raise SystemExit("the pinned Claude Code is missing: run `npm install` in tests/harness")
    os.environ.pop("PETRI_HOME", None)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(preset, Path(tmp)) for preset in TARGETS]
    if "--json" in sys.argv:
        print(json.dumps(results, indent=2))
        return
    print("| preset | cells | iterations | harness processes | per cell | target | model requests per cell |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['preset']} | {r['cells']} | {r['iterations']} | {r['processes']} | "
            f"{r['processes_per_cell']} | ≤ {r['target']} | {r['model_requests_per_cell']} |"
        )


if __name__ == "__main__":
    main()
