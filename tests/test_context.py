"""The context packet is bounded: its size does not grow with the run or the iterations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner
from helpers import Clock, add_article

from petri_core.cli import main
from petri_core.service import Service

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.dishes import add_source, grow, iterate


def packet_size(svc: Service, task_id: str) -> tuple[int, dict, str]:
    claim = svc.claim(task_id, "petri-investigator")
    size = len(json.dumps(claim.context)) + len(json.dumps(claim.result_schema))
    return size, claim.context, claim.lease


def first_ready(svc: Service, cell_id: str) -> str:
    with svc.open() as st:
        return next(t.task_id for t in st.tasks_of_cell(cell_id) if t.status == "ready")


def test_packet_size_is_the_same_at_10_and_1000_cells_and_bounded_after_3_iterations(tmp_path: Path) -> None:
    sizes = {}
    for cells in (10, 1000):
        svc = Service(tmp_path / str(cells) / ".petri", clock=Clock())
        run_id, leaf = grow(svc, cells)
        assert len(svc.open().cells(run_id)) == cells
        task = first_ready(svc, leaf)
        sizes[cells], _, lease = packet_size(svc, task)
        if cells == 1000:
            source = add_source(svc)
            svc.fail(task, lease, "retry", retry_after=0)
            after3, context, _ = packet_size(svc, iterate(svc, leaf, source, 3))
            assert context["cell"]["iteration"] == 3
            assert len(context["citations"]) == 8  # capped, though the cell has more
            assert after3 < 12_000  # about 3,000 tokens: every list capped, every text clipped
    assert abs(sizes[1000] - sizes[10]) < 0.1 * sizes[10], sizes


def test_the_freshness_checker_sees_measured_dates_and_ages(tmp_path: Path) -> None:
    clock = Clock()
    svc = Service(tmp_path / ".petri", clock=clock)
    source = add_source(svc)
    run = svc.start("A claim about the measured series", preset="standard", max_depth=0)
    task = run.tasks[0].task_id
    lease = svc.claim(task, "petri-investigator").lease
    quotes = [
        "Measurement 1 of the series shows a value of 3 units",
        "Measurement 2 of the series shows a value of 6 units",
    ]
    svc.submit(
        task,
        lease,
        {
            "verdict": "EVIDENCE_SUFFICIENT",
            "summary": "s",
            "citations": [
                {"source_id": source, "quote": q, "stance": "supports", "level": 1, "finding": "f"}
                for q in quotes
            ],
        },
    )
    fresh = svc.next().tasks[0]
    assert fresh.role == "freshness-checker"
    context = svc.claim(fresh.task_id, "petri-freshness-checker").context
    assert {(c["published"], c["age_days"]) for c in context["citations"]} == {("2026-01-15", 290)}


def test_an_elided_quote_reaches_the_next_roles_and_the_report_with_the_words_it_skipped(
    tmp_path: Path,
) -> None:
    """ "did not … cause harm" can say the opposite of its page: every reader is shown the page's own
    words for the whole span, beside the quote."""
    svc = Service(tmp_path / ".petri", clock=Clock())
    text = (
        "The trial found that the drug did not reduce symptoms in the first month and may cause harm "
        "to patients with kidney disease, so the authors advise caution."
    )
    source = add_article(svc, text=text, url="https://example.org/trial").source_id
    run = svc.start("The drug is safe for every patient", preset="standard", max_depth=0)
    task = run.tasks[0].task_id
    elided = "the drug did not … cause harm to patients with kidney disease"
    whole = "the drug did not reduce symptoms in the first month"
    svc.submit(
        task,
        svc.claim(task, "petri-investigator").lease,
        {
            "verdict": "EVIDENCE_SUFFICIENT",
            "summary": "s",
            "citations": [
                {"source_id": source, "quote": q, "stance": "supports", "level": 1, "finding": "f"}
                for q in (elided, whole)
            ],
        },
    )
    fresh = svc.next().tasks[0]
    cited = {c["quote"]: c for c in svc.claim(fresh.task_id, "petri-freshness-checker").context["citations"]}
    assert cited[elided]["source_reads"] == (
        "the drug did not reduce symptoms in the first month and may cause harm to patients with kidney disease"
    )
    assert "source_reads" not in cited[whole]  # a quote without an elision is the page's words already
    shown = {c["quote"]: c for c in svc.show(run.root_cell_id)["citations"]}
    assert shown[elided]["source_reads"].startswith("the drug did not reduce symptoms")
    assert "source_reads" not in shown[whole]
    text = CliRunner().invoke(main, ["show", run.root_cell_id], env={"PETRI_HOME": str(svc.dish)}).stdout
    assert (
        "      the page reads: “the drug did not reduce symptoms in the first month and may cause harm"
        in text
    )
    assert text.count("the page reads") == 1
    report = svc.report(run.run_id)
    assert (
        "(the page reads: “the drug did not reduce symptoms in the first month and may cause harm" in report
    )
    assert "The page reads: <q>the drug did not reduce symptoms" in svc.report(run.run_id, "html")
