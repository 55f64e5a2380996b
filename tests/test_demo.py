"""`petri demo` runs offline in a clean directory and ends with the root verdict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from petri_core.service import Service


def test_petri_demo_runs_in_a_clean_directory_and_reaches_the_root_verdict(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PETRI_HOME"}
    proc = subprocess.run(
        [sys.executable, "-m", "petri_core", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("Demo dish:") and "SIMULATION" in out
    assert "gave the task back" in out and "[simulated human] petri resolve" in out
    assert "CRITICAL_FLAW_FOUND" in out and "(iteration 2)" in out
    assert "root rs-0-01 = validated" in out and "petri report rs" in out
    svc = Service(tmp_path / "petri-demo" / ".petri")
    cells = {c.cell_id: c.state for c in svc.open().cells("rs")}
    assert cells == {
        "rs-0-01": "validated",
        "rs-1-01": "validated",
        "rs-1-02": "validated",
        "rs-1-03": "disproven",
    }
    assert len(svc.open().citations()) >= 10 and svc.verify().ok
    again = subprocess.run(
        [sys.executable, "-m", "petri_core", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "petri-demo-2" in again.stdout  # never overwrites a dish
