"""`status` and `show` read plain rows, without pydantic; those rows must say what the models say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import Clock, Driver, add_article, service
from test_scenario import ROOT, scenario_policy

from petri_core import views
from petri_core.models import Cell, Citation, HumanItem, Run, Task, Verdict
from petri_core.service import Service


def stalled_run(tmp_path: Path) -> tuple[Service, str]:
    """The scenario run up to its stall (a cell in the human inbox), plus one task left leased."""
    svc = service(tmp_path, Clock())
    source = add_article(svc)
    run_id = svc.start(ROOT, preset="standard").run_id
    Driver(svc, scenario_policy(source.source_id)).drain(run_id)
    other = svc.start("A second claim that stays open", preset="standard")
    svc.claim(other.tasks[0].task_id, "worker-7")
    return svc, run_id


def test_every_row_a_view_shows_equals_its_models_dump(tmp_path: Path) -> None:
    svc, _ = stalled_run(tmp_path)
    st = svc.open()
    with st.read():
        cells = [st.cell_row(c.cell_id) for c in st.cells()]
        tasks = [t for c in cells for t in st.task_rows_of_cell(c["cell_id"])]
        verdicts = [v for c in cells for v in st.verdict_rows(c["cell_id"])]
        citations = st.citation_rows()
        runs = st.run_rows()
    assert len(runs) == 2 and len(cells) == 6 and verdicts and citations
    assert {type(c["atomic"]) for c in cells} == {bool}  # stored as 0/1, shown as the models show it
    assert any(t["outcome"] for t in tasks) and isinstance(runs[0]["settings"], dict)  # JSON decoded
    for model, rows in ((Cell, cells), (Task, tasks), (Verdict, verdicts), (Citation, citations)):
        for row in rows:  # `show` prints these rows whole
            assert model(**row).model_dump() == row
    for row in runs:  # `status` takes some of a run's columns; the model holds all but one of them
        assert Run(**row).model_dump() == {k: v for k, v in row.items() if k != "clarifications"}


def test_status_and_show_answer_with_leases_the_inbox_commands_and_the_cells_rows(tmp_path: Path) -> None:
    svc, run_id = stalled_run(tmp_path)
    data = svc.status()
    assert data["runs"][0]["run_id"] == run_id and len(data["runs"]) == 2
    [item] = data["needs_human"]
    assert HumanItem(**item).model_dump() == item
    stalled = svc.open().cell(item["cell_id"])
    assert stalled.state == "stalled" and item["reason"] == stalled.stall_reason
    assert item["command"].startswith(f'petri resolve {stalled.cell_id} --requeue --guidance "…"')
    [lease] = [lease for run in data["runs"] for lease in run["leases"]]
    assert lease["worker"] == "worker-7" and lease["expired"] is False

    shown = svc.show(stalled.cell_id)
    assert shown["cell"] == Cell(**shown["cell"]).model_dump()
    assert [p["cell_id"] for p in shown["parents"]] == [
        c.cell_id for c in svc.open().parents(stalled.cell_id)
    ]
    assert all("outcome" not in t and t["usage"]["processes"] == 0 for t in shown["tasks"])
    assert len(shown["verdicts"]) == len(svc.open().verdicts(stalled.cell_id)) > 0


def test_the_inbox_item_names_the_command_for_each_kind_of_wait() -> None:
    base = {"cell_id": "c-1-01", "stall_reason": None, "flagged": None}
    approval = views.inbox_item({**base, "state": "awaiting_approval"})
    assert approval["command"].startswith("petri approve c-1-01")
    stalled = views.inbox_item({**base, "state": "stalled"})
    assert stalled["reason"] == "stalled" and "--requeue" in stalled["command"]
    flagged = views.inbox_item({**base, "state": "validated", "flagged": "a child was reopened"})
    assert flagged == {
        "cell_id": "c-1-01",
        "reason": "a child was reopened",
        "command": "petri resolve c-1-01 --reopen  (or --acknowledge)",
    }


def test_petri_status_and_show_never_import_pydantic(tmp_path: Path) -> None:
    """Their speed rests on it (benchmarks P3): pydantic and the models are most of a start-up."""
    svc, run_id = stalled_run(tmp_path)
    root = svc.open().run(run_id).root_cell_id
    svc.close()
    probe = (
        "import sys\n"
        "from petri_core.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], prog_name='petri')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'"
        " or m == 'petri_core.models')))\n"
    )
    for args in (["status", "--json"], ["status"], ["show", root], ["show", root, "--json"]):
        out = subprocess.run(
            [sys.executable, "-c", "import json\n" + probe, *args],
            env={**os.environ, "PETRI_HOME": str(svc.dish)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out.splitlines()[-1]) == [], args
        assert root in out
