"""Fetching real pages from a local server: extraction, dates, limits, redirects, the cache, feed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import ARTICLE, Clock, Driver, add_article, passing, raw, service
from pdfs import make_pdf
from webserver import serve

from petri_core.cli import main
from petri_core.errors import Rejected
from petri_core.fetch import MAX_PDF_PAGES, FetchPolicy, fetch_url, page_text
from petri_core.machine import NewEvent
from petri_core.service import Service
from petri_core.store import Store

PAGES = Path(__file__).parent.parent / "petri_core" / "demo" / "pages"
HTML = {"Content-Type": "text/html; charset=utf-8"}
LOCAL = FetchPolicy(allow_private=True, timeout=2.0, max_bytes=200_000)
LATIN = (
    "<html><head><meta charset='windows-1252'><title>Caf\xe9 report</title></head><body><article>"
    "<h1>Caf\xe9 report</h1><p>The caf\xe9 on the square serves cr\xe8me br\xfbl\xe9e every day of the "
    "week, and the owner says sales rose by a third.</p><p>"
    + "More text about the caf\xe9. " * 20
    + "</p></article></body></html>"
).encode("cp1252")


def routes() -> dict[str, tuple[int, dict[str, str], bytes, float]]:
    page = (PAGES / "traffic-report.html").read_bytes()
    return {
        "/report": (200, HTML, page, 0.0),
        "/latin": (200, {"Content-Type": "text/html"}, LATIN, 0.0),
        "/plain": (
            200,
            {"Content-Type": "text/plain; charset=utf-8"},
            b"Plain text: 42 units.\n",
            0.0,
        ),
        "/huge": (200, HTML, b"<html><body><p>" + b"x" * 300_000 + b"</p></body></html>", 0.0),
        "/slow": (200, HTML, page, 3.0),
        "/pdf": (200, {"Content-Type": "application/pdf"}, b"%PDF-1.4", 0.0),
        "/image": (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n", 0.0),
        "/gone": (404, HTML, b"gone", 0.0),
        "/broken": (500, HTML, b"oops", 0.0),
        "/hop1": (302, {"Location": "/hop2"}, b"", 0.0),
        "/hop2": (301, {"Location": "/report"}, b"", 0.0),
        "/loop": (302, {"Location": "/loop"}, b"", 0.0),
    }


def test_article_text_and_metadata_are_extracted_without_boilerplate() -> None:
    with serve(routes()) as base:
        page = fetch_url(f"{base}/report", LOCAL)
    assert page.title == "Downtown Traffic Count Report 2025"
    assert page.published == "2025-11-03"
    assert "fell from 41,200 in 2024 to 32,900 in 2025" in page.text
    assert (
        "cookies" not in page.text and "All rights reserved" not in page.text and "Most read" not in page.text
    )
    assert page.status == 200 and page.content_type == "text/html"


def test_a_windows_1252_page_and_a_plain_text_page_decode_right() -> None:
    with serve(routes()) as base:
        latin = fetch_url(f"{base}/latin", LOCAL)
        plain = fetch_url(f"{base}/plain", LOCAL)
    assert "crème brûlée" in latin.text and "café" in latin.text
    assert plain.text == "Plain text: 42 units." and plain.content_type == "text/plain"


def test_redirects_are_followed_and_capped() -> None:
    with serve(routes()) as base:
        page = fetch_url(f"{base}/hop1", LOCAL)
        assert page.final_url == f"{base}/report" and page.requested_url == f"{base}/hop1"
        with pytest.raises(Rejected, match="redirected more than 5 times"):
            fetch_url(f"{base}/loop", LOCAL)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/huge", "larger than 200,000 bytes"),
        ("/slow", "did not answer within 2 s"),
        ("/pdf", r"cannot read the PDF at .*/pdf \("),
        ("/image", "is image/png, not a web page or a PDF"),
        ("/gone", "answered HTTP 404"),
        ("/broken", "answered HTTP 500"),
    ],
)
def test_limits_hold_with_clear_rejections(path: str, message: str) -> None:
    with serve(routes()) as base, pytest.raises(Rejected, match=message):
        fetch_url(f"{base}{path}", LOCAL)


def test_page_text_splits_on_paragraphs_and_names_the_valid_range() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "word " * 200 for i in range(10))
    first, pages = page_text(text, 1, 3000)
    assert pages > 2 and first.startswith("Paragraph 0") and first.endswith("word")
    assert "".join(page_text(text, p, 3000)[0] for p in range(1, pages + 1)).count("Paragraph") == 10
    with pytest.raises(Rejected, match=f"pages run from 1 to {pages}"):
        page_text(text, pages + 1, 3000)


def dated(body: str, head: str = "") -> bytes:
    return (
        f"<html><head><title>Traffic count</title>{head}</head><body><article><h1>Traffic count</h1>"
        f"<p>{body} The city counted downtown car traffic again and found it back at its earlier level, "
        "street by street, over four weeks of the autumn.</p></article></body></html>"
    ).encode()


@pytest.mark.parametrize(
    ("body", "head", "published"),
    [
        ("In 2026 the count rose again.", "", None),  # a bare year: no date (was 2026-01-01)
        ("Published in November 2025.", "", None),  # was 2025-01-01: neither month nor day is this
        ("From 2019 to 2024 the count rose.", "", None),  # was 2019-01-01
        ("Published 3 November 2025.", "", "2025-11-03"),  # a date the text spells out
        ("Updated 1 January 2026.", "", "2026-01-01"),
        ("Counted on January 1, 2026 at noon.", "", "2026-01-01"),
        (
            "No date here.",
            '<meta property="article:published_time" content="2026-01-01T10:00:00Z">',
            "2026-01-01",
        ),
        (
            "In 2024 the count rose.",
            '<meta property="article:published_time" content="2025-06-30">',
            "2025-06-30",
        ),
    ],
)
def test_a_publication_date_is_one_the_page_states_never_a_year_made_into_1_january(
    body: str, head: str, published: str | None
) -> None:
    with serve({"/count": (200, HTML, dated(body, head), 0.0)}) as base:
        page = fetch_url(f"{base}/count", LOCAL)
    assert page.published == published


def test_service_fetch_snapshots_once_and_the_cache_hits(tmp_path: Path) -> None:
    clock = Clock()
    svc = Service(tmp_path / ".petri", clock=clock, fetch_policy=LOCAL)
    with serve(routes()) as base:
        first = svc.fetch(f"{base}/report")
        again = svc.fetch(f"{base}/report")
        other_url = svc.fetch(f"{base}/hop1")  # same content through a redirect: one snapshot
        clock.advance(25 * 3600)
        later = svc.fetch(f"{base}/report")
    assert first.source_id == again.source_id == other_url.source_id == later.source_id
    assert first.untrusted is True and first.published == "2025-11-03"
    st = svc.open()
    assert st.conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 1
    assert [r[0] for r in st.conn.execute("SELECT url FROM fetches ORDER BY fetch_seq")] == [
        f"{base}/report",
        f"{base}/hop1",
        f"{base}/report",
    ]  # the second was a cache hit


def test_feed_reopens_a_validated_cell_with_the_evidence_in_its_packet(tmp_path: Path) -> None:
    svc = Service(tmp_path / ".petri", clock=Clock(), fetch_policy=LOCAL)
    with serve(routes()) as base:
        src = svc.fetch(f"{base}/report").source_id
        run = svc.start("The downtown traffic count fell after the lanes opened", preset="quick")
        task = run.tasks[0].task_id
        svc.submit(
            task,
            svc.claim(task, "w").lease,
            {
                "atomic": False,
                "children": [
                    {
                        "text": "Car trips into downtown fell by a fifth",
                        "atomic": True,
                        "bedrock_reason": "a count",
                    }
                ],
            },
        )
        quotes = [
            "fell from 41,200 in 2024 to 32,900 in 2025",
            "Bicycle trips counted at the same entry points",
        ]
        ok = passing(src) | {
            "investigator": {
                "verdict": "EVIDENCE_SUFFICIENT",
                "summary": "counts",
                "citations": [
                    {"source_id": src, "quote": q, "stance": "supports", "level": 1, "finding": "f"}
                    for q in quotes
                ],
            }
        }
        for _ in range(10):
            for t in svc.next(run.run_id).tasks:
                svc.submit(t.task_id, svc.claim(t.task_id, t.agent).lease, ok[t.role])
        child = (
            "ncs-1-01"
            if svc.open().cells(run.run_id)[1].cell_id == "ncs-1-01"
            else svc.open().cells(run.run_id)[1].cell_id
        )
        assert (
            svc.open().cell(child).state == "validated"
            and svc.open().cell(run.root_cell_id).state == "validated"
        )
        before = len(svc.log(types=["verdict_recorded"]))
        new = svc.fetch(f"{base}/latin").source_id
        out = svc.feed(child, new, note="check the café data")
    assert out.cell_state == "research"
    assert svc.open().cell(run.root_cell_id).flagged == f"{child} was reopened by new evidence"
    assert any(h.cell_id == run.root_cell_id for h in svc.next(run.run_id).needs_human)
    reopened = svc.next(run.run_id)
    assert (reopened.run_state, reopened.done) == ("growing", False)  # its work is dispatched, not orphaned
    task = next(t for t in reopened.tasks if t.cell_id == child)
    claimed = svc.claim(task.task_id, task.agent)
    packet = claimed.context
    assert packet["new_evidence"][0]["source_id"] == new and packet["directive"] == "check the café data"
    assert packet["cell"]["iteration"] == 2
    assert len(svc.log(types=["verdict_recorded"])) == before  # old verdicts stay in the log
    assert json.loads(json.dumps(svc.status()))["needs_human"]
    svc.submit(task.task_id, claimed.lease, ok[task.role])
    for _ in range(10):
        for t in svc.next(run.run_id).tasks:
            svc.submit(t.task_id, svc.claim(t.task_id, t.agent).lease, ok[t.role])
    again = svc.next(run.run_id)
    assert svc.open().cell(child).state == "validated" and (again.run_state, again.done) == ("complete", True)
    assert [e["payload"]["trigger"] for e in svc.log(run.run_id, types=["run_state_changed"])][-2:] == [
        "reopened",
        "root_final",
    ]
    assert [h.cell_id for h in again.needs_human] == [run.root_cell_id]  # the root's flag waits for a human


def test_a_complete_run_with_work_left_is_not_done(tmp_path: Path) -> None:
    """A dish written before a reopened run grew again holds a complete run whose reopened cell has
    a ready task: petri_next offers the task and does not say done, so it is still researched."""
    svc = service(tmp_path, Clock())
    ok = passing(add_article(svc).source_id)
    run = svc.start("The downtown traffic count fell after the lanes opened", preset="quick", max_depth=0)
    Driver(svc, lambda task, claim: ok[task.role]).drain(run.run_id)
    svc.feed(run.root_cell_id, add_article(svc, url="https://example.org/update").source_id)
    st = svc.open()
    with st.write():  # what the older code left: the run still complete
        st.append(
            [
                NewEvent(
                    "run_state_changed",
                    {"from": "growing", "to": "complete", "trigger": "root_final"},
                    run.run_id,
                )
            ],
            svc.now(),
        )
    stuck = svc.next(run.run_id)
    assert stuck.run_state == "complete" and [t.role for t in stuck.tasks] == ["investigator"]
    assert stuck.done is False and stuck.hint.startswith("dispatch every task to its agent")
    Driver(svc, lambda task, claim: ok[task.role]).drain(run.run_id)
    assert svc.next(run.run_id).done is True and svc.open().cell(run.root_cell_id).iteration == 2


def article_pdf() -> bytes:
    """ARTICLE typeset as a two-page PDF: its sentences broken across lines, as a PDF's are."""
    words = ARTICLE.replace("\n\n", " ").split()
    lines = [" ".join(words[i : i + 9]) for i in range(0, len(words), 9)]
    info = {
        "Title": "Open  models\ttrail the frontier",
        "Author": "A. Author",
        "CreationDate": "D:20260901093000Z",
    }
    return make_pdf([lines[:4], lines[4:]], info)


PDF = {"Content-Type": "application/pdf"}


def test_a_pdf_is_fetched_as_its_text_layer_with_its_metadata() -> None:
    with serve({"/paper.pdf": (200, PDF, article_pdf(), 0.0)}) as base:
        page = fetch_url(f"{base}/paper.pdf", LOCAL)
    assert page.content_type == "application/pdf"
    assert page.title == "Open models trail the frontier" and page.author == "A. Author"
    assert page.published == "2026-09-01"
    assert page.text.split() == ARTICLE.split()  # every word, in order, both pages
    assert page.note is None  # nothing left out


def long_pdf() -> bytes:
    """Two pages more than the fetcher reads, each with one sentence naming its page."""
    return make_pdf([[f"Page {n} says the figure is {n * 3} units."] for n in range(1, MAX_PDF_PAGES + 3)])


def test_a_pdf_longer_than_the_page_limit_is_read_up_to_it_and_says_what_it_leaves_out(
    tmp_path: Path,
) -> None:
    """The agent is told, on the first fetch and on every fetch served from the dish, that a quote
    from a later page cannot be verified; the note is part of the snapshot, so a replay keeps it."""
    svc = Service(tmp_path / ".petri", clock=Clock(), fetch_policy=LOCAL)
    with serve({"/long.pdf": (200, PDF, long_pdf(), 0.0), "/plain": routes()["/plain"]}) as base:
        fresh = svc.fetch(f"{base}/long.pdf")
        again = svc.fetch(f"{base}/long.pdf", page=2)  # within the cache TTL: from the dish
        plain = svc.fetch(f"{base}/plain")
        env = {"PETRI_HOME": str(svc.dish), "PETRI_FETCH_ALLOW_PRIVATE": "1"}
        shown = CliRunner().invoke(main, ["fetch", f"{base}/long.pdf"], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"note: this PDF has {MAX_PDF_PAGES + 2} pages" in shown.output
    assert fresh.note == (
        f"this PDF has {MAX_PDF_PAGES + 2} pages and only the text of the first {MAX_PDF_PAGES} was read: "
        "a quote from a later page cannot be verified, so cite another source for it"
    )
    assert again.note == fresh.note and again.source_id == fresh.source_id
    assert plain.note is None
    text = svc.open().source(fresh.source_id).text
    assert f"Page {MAX_PDF_PAGES} says" in text and f"Page {MAX_PDF_PAGES + 1} says" not in text
    stored = {e["payload"]["source_id"]: e["payload"] for e in svc.log(types=["source_stored"])}
    assert stored[fresh.source_id]["note"] == fresh.note
    assert "note" not in stored[plain.source_id]  # a page with nothing left out is stored as before
    report = svc.verify()
    assert report.ok, report.problems  # the projection's note equals a replay's


def test_a_dish_from_before_source_notes_gains_the_column_and_still_verifies(tmp_path: Path) -> None:
    svc = Service(tmp_path / ".petri", clock=Clock(), fetch_policy=LOCAL)
    with serve(routes()) as base:
        svc.fetch(f"{base}/plain")
    svc.close()
    with raw(svc) as conn:
        conn.execute("ALTER TABLE sources DROP COLUMN note")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm004_sources_note'")
    with Store(svc.dish) as st:
        assert "note" in {row[1] for row in st.conn.execute("PRAGMA table_info(sources)")}
        assert st.check_projections() == []


def test_a_run_cites_a_pdf_and_every_quote_is_verified_across_its_line_breaks(tmp_path: Path) -> None:
    svc = Service(tmp_path / ".petri", clock=Clock(), fetch_policy=LOCAL)
    with serve({"/paper.pdf": (200, PDF, article_pdf(), 0.0)}) as base:
        fetched = svc.fetch(f"{base}/paper.pdf")
    assert fetched.untrusted and fetched.title == "Open models trail the frontier"
    run = svc.start("Open-weight models trail the frontier by about six months", preset="quick", max_depth=0)
    ok = passing(fetched.source_id)
    Driver(svc, lambda task, claim: ok[task.role]).drain(run.run_id)
    cell = svc.status(run.run_id)["runs"][0]
    assert cell["state"] == "complete", cell
    conn = svc.open().conn
    text = conn.execute("SELECT text FROM sources WHERE source_id = ?", (fetched.source_id,)).fetchone()[0]
    spans = conn.execute(
        "SELECT match_start, match_end FROM citations WHERE source_id = ?", (fetched.source_id,)
    ).fetchall()
    assert len(spans) >= 2
    assert any("\n" in text[start:end] for start, end in spans)  # a quote ran over a line break
    report = svc.verify()
    assert report.ok and report.citations >= 2, report.problems


def test_an_encrypted_a_scanned_a_broken_and_an_oversized_pdf_are_refused_with_reasons() -> None:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(article_pdf())))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    locked = io.BytesIO()
    writer.write(locked)
    routes = {
        "/locked.pdf": (200, PDF, locked.getvalue(), 0.0),
        "/scan.pdf": (200, PDF, make_pdf([[]]), 0.0),
        "/broken.pdf": (200, PDF, article_pdf()[:300], 0.0),
        "/big.pdf": (200, PDF, article_pdf() + b"%" * 10_000, 0.0),
        "/bomb.pdf": (200, PDF, make_pdf([["x"]], deflate=b"BT " * 40_000_000), 0.0),  # 120 MB inflated
    }
    small = FetchPolicy(allow_private=True, timeout=2.0, max_pdf_bytes=5_000)
    with serve(routes) as base:
        with pytest.raises(Rejected, match="is an encrypted PDF; cite another source"):
            fetch_url(f"{base}/locked.pdf", LOCAL)
        with pytest.raises(Rejected, match="is a PDF without a text layer"):
            fetch_url(f"{base}/scan.pdf", LOCAL)
        with pytest.raises(Rejected, match=r"cannot read the PDF at .*/broken\.pdf"):
            fetch_url(f"{base}/broken.pdf", LOCAL)
        with pytest.raises(Rejected, match=r"cannot read the PDF at .*/bomb\.pdf \(LimitReachedError"):
            fetch_url(f"{base}/bomb.pdf", LOCAL)
        with pytest.raises(Rejected, match="larger than 5,000 bytes"):
            fetch_url(f"{base}/big.pdf", small)
        assert fetch_url(f"{base}/big.pdf", LOCAL).text.split() == ARTICLE.split()  # within 25 MB
