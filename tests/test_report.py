"""Reports, export, backup and the live log."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from helpers import Clock, Driver, add_article, service
from test_scenario import ROOT, scenario_policy

from petri_core.service import Service

GOLDEN = Path(__file__).parent / "golden" / "scenario-report.md"


def finished_scenario(tmp_path: Path) -> tuple[Service, str]:
    svc = service(tmp_path, Clock())
    source = add_article(svc)
    run = svc.start(ROOT)
    driver = Driver(svc, scenario_policy(source.source_id))
    driver.drain(run.run_id)
    stalled = next(c for c in svc.open().cells(run.run_id) if c.state == "stalled")
    svc.resolve(stalled.cell_id, "requeue", guidance="look for public funding rounds")
    driver.drain(run.run_id)
    return svc, run.run_id


def mask(text: str) -> str:
    """The chain head hashes lease tokens, which are random by design; everything else is stable."""
    return re.sub(r"chain head `[0-9a-f]{64}`", "chain head `<head>`", text)


def test_markdown_report_of_a_finished_scenario_matches_the_golden_file(tmp_path: Path) -> None:
    svc, run_id = finished_scenario(tmp_path)
    text = mask(svc.report(run_id, "md"))
    if os.environ.get("PETRI_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "report changed: review it, then PETRI_UPDATE_GOLDEN=1 pytest"


def test_a_verdict_whose_premise_was_reopened_is_reported_under_review(tmp_path: Path) -> None:
    svc, run_id = finished_scenario(tmp_path)
    root = svc.open().run(run_id).root_cell_id
    assert "Under review" not in svc.report(run_id)
    child = next(c.cell_id for c in svc.open().cells(run_id) if c.cell_id != root and c.state == "validated")
    svc.feed(child, add_article(svc, url="https://example.org/<b>update</b>").source_id)
    md, html = svc.report(run_id), svc.report(run_id, "html")
    verdict = md.split("\n\n")[1]
    assert verdict.startswith("**Verdict: validated**")
    assert md.split("\n\n")[2] == (
        f"**Under review:** {child} was reopened by new evidence; this verdict stands until a human "
        'reopens or acknowledges it (see "Waiting for a human").'
    )
    assert f'<p class="review"><strong>Under review:</strong> {child} was reopened by new evidence;' in html


def test_html_report_escapes_script_planted_in_a_title_a_quote_and_a_summary(tmp_path: Path) -> None:
    svc = service(tmp_path, Clock())
    evil = "<script>alert('x')</script>"
    text = f"The study found a large effect {evil} in every district we measured."
    page = svc.add_source(
        url="https://example.org/e",
        final_url="https://example.org/e",
        status=200,
        content_type="text/html",
        fetched_at=svc.now(),
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        title=f"Title {evil}",
        author=None,
        published="2026-01-01",
        text=text,
    )
    run = svc.start(f"A claim {evil} about districts", preset="quick", max_depth=0)
    task = run.tasks[0].task_id
    lease = svc.claim(task, "petri-investigator").lease
    quote = f"a large effect {evil} in every district"
    svc.submit(
        task,
        lease,
        {
            "verdict": "NEEDS_MORE_EVIDENCE",
            "summary": f"Summary {evil}",
            "citations": [
                {
                    "source_id": page.source_id,
                    "quote": quote,
                    "stance": "supports",
                    "level": 2,
                    "finding": evil,
                }
            ],
        },
    )
    html = svc.report(run.run_id, "html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("&lt;script&gt;") >= 3  # the claim, the title, the quote (and more)
    assert 'http-equiv="Content-Security-Policy"' in html and "<link" not in html and "src=" not in html
    markdown = svc.report(run.run_id, "md")
    assert "<script>" not in markdown


def test_export_is_byte_identical_across_two_exports(tmp_path: Path) -> None:
    svc, run_id = finished_scenario(tmp_path)
    first = svc.export(run_id, tmp_path / "a")
    second = svc.export(run_id, tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    lines = (tmp_path / "a" / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(svc.log(run_id))
    assert len(list((tmp_path / "a" / "cells").glob("*.md"))) == 5


def test_backup_taken_while_another_process_writes_is_intact(tmp_path: Path) -> None:
    home = tmp_path / ".petri"
    svc = Service(home)
    svc.start("Warm-up claim so the dish exists")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from pathlib import Path; from petri_core.service import Service\n"
                "svc = Service(Path(sys.argv[1]))\n"
                "for i in range(60): svc.start(f'Claim number {i} about thing {i}')\n"
            ),
            str(home),
        ]
    )
    backups = []
    try:
        for _ in range(5):
            backups.append(svc.backup())
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    for path in backups:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        copy = tmp_path / f"verify-{path.stem}"
        copy.mkdir()
        (copy / "petri.db").write_bytes(path.read_bytes())
        assert Service(copy).verify().ok
    assert [b["path"] for b in svc.backups()] == [str(p) for p in backups]


def test_log_follow_sees_events_appended_by_another_process_in_order(tmp_path: Path) -> None:
    home = tmp_path / ".petri"
    Service(home).start("First claim to create the dish")
    env = {**os.environ, "PETRI_HOME": str(home)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "petri_core", "log", "--follow", "--json", "--idle-exit", "3"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )

    def write() -> None:
        svc = Service(home)
        for i in range(15):
            svc.start(f"Claim {i} written while the log is followed")

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    out, _ = follower.communicate(timeout=60)
    seqs = [int(re.search(r'"seq": (\d+)', line).group(1)) for line in out.splitlines()]  # type: ignore[union-attr]
    total = Service(home).open().event_count()
    assert seqs == list(range(1, total + 1)), "every event once, in order"
