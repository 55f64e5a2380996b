"""The `petri` command line: a thin door over the service (no rules live here)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .errors import PetriError

if TYPE_CHECKING:
    from .store import Store

F = TypeVar("F", bound=Callable[..., Any])
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def safe(text: object) -> str:
    """Text fit for a terminal: escape sequences and control characters removed."""
    return _CONTROL.sub("", str(text))


def _service() -> Any:
    from .service import Service
    from .store import default_dish

    return Service(default_dish())


@contextmanager
def _reading() -> Iterator[tuple[Store, Path]]:
    """The dish for `status` and `show`, read without the service, and so without importing
    pydantic: most of these commands' time would be that import (benchmarks P3)."""
    from .store import Store, default_dish

    dish = default_dish()
    with Store(dish, create=False) as st, st.read():
        yield st, dish


def domain_errors(fn: F) -> F:
    """Turn a Petri error into one `Error: …` line and exit status 1 (tracebacks are bugs)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PetriError as exc:
            raise click.ClickException(safe(exc)) from None

    return wrapper  # type: ignore[return-value]


_C1 = re.compile("[\x80-\x9f]")


def emit_json(value: Any, indent: int | None = 2) -> None:
    """JSON for programs, and still safe on a terminal: `json.dumps` escapes the C0 controls (ESC
    among them), and C1 controls (U+009B is a CSI on some terminals), which can only sit inside
    strings, are escaped here; the JSON means the same."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=str)
    click.echo(_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


class PetriGroup(click.Group):
    """The command group; refuses arguments that are not text before any command sees them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for n, arg in enumerate(args, 1):
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                raise click.UsageError(
                    f"argument {n} holds bytes that are not UTF-8 text ({safe(ascii(arg))[:80]}); "
                    "pass it as UTF-8",
                    ctx,
                ) from None
        return super().parse_args(ctx, args)


@click.group(cls=PetriGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="petri")
def main() -> None:
    """Petri: research a claim with agents; Python enforces the workflow.

    The dish (one SQLite file) is `.petri/petri.db` in this directory or the nearest parent;
    PETRI_HOME overrides it.
    """


@main.command()
@domain_errors
def init() -> None:
    """Create the dish here (or at PETRI_HOME); harmless if it exists."""
    svc = _service()
    with svc.open():
        pass
    click.echo(f"Petri dish ready at {svc.dish}")


@main.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def status(run_id: str | None, as_json: bool) -> None:
    """Runs, cells by state, tasks, leases and the human inbox."""
    from . import views
    from .store import iso

    with _reading() as (st, dish):
        data = views.status(st, dish, iso(datetime.now(UTC)), run_id)
    if as_json:
        emit_json(data)
        return
    _print_status(data)


def _print_status(data: dict[str, Any]) -> None:
    click.echo(f"dish {data['dish']}  ·  {data['events']} events  ·  head {data['head'][:12]}")
    if not data["runs"]:
        click.echo('no runs yet: start one with `petri run "CLAIM"`, or from an agent with petri_start')
    for run in data["runs"]:
        click.echo("")
        click.echo(
            safe(
                f"{run['run_id']}  [{run['state']}]  preset {run['preset']}  root {run['root_cell_id']}"
                f" = {run['root_state']}"
            )
        )
        click.echo(safe(f"  claim: {run['claim']}"))
        cells = ", ".join(f"{k} {v}" for k, v in sorted(run["cells"].items()))
        tasks = ", ".join(f"{k} {v}" for k, v in sorted(run["tasks"].items()))
        click.echo(f"  cells: {cells or 'none'}")
        click.echo(f"  tasks: {tasks or 'none'}")
        if run.get("usage", {}).get("processes"):
            click.echo(f"  usage: {_usage_line(run['usage'])}")
        for lease in run["leases"]:
            flag = " (expired)" if lease["expired"] else ""
            click.echo(
                safe(
                    f"  lease: {lease['task_id']} held by {lease['worker']} until {lease['expires_at']}{flag}"
                )
            )
    if data["needs_human"]:
        click.echo("\nneeds a human:")
        for item in data["needs_human"]:
            click.echo(safe(f"  {item['cell_id']}: {item['reason']}"))
            click.echo(safe(f"    → {item['command']}"))


def _usage_line(u: dict[str, Any]) -> str:
    """Measured harness usage in one line: processes, tokens (with the split), model calls, cost."""
    split = f"in {u['input_tokens']:,} / out {u['output_tokens']:,}"
    cache = u["cache_read_tokens"] + u["cache_write_tokens"]
    if cache:
        split += f" / cache {cache:,}"
    if u["reasoning_tokens"]:
        split += f" / reasoning {u['reasoning_tokens']:,}"
    return (
        f"{u['processes']} harness process{'es' if u['processes'] != 1 else ''} · {u['tokens']:,} tokens "
        f"({split}) · {u['model_calls']} model calls · ${u['cost_usd']:.4f}"
    )


@main.command()
@click.argument("cell_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def show(cell_id: str, as_json: bool) -> None:
    """One cell: claim, state, edges, tasks, verdicts and citations."""
    from . import views

    with _reading() as (st, _):
        data = views.show(st, cell_id)
    if as_json:
        emit_json(data)
        return
    cell = data["cell"]
    click.echo(
        safe(f"{cell['cell_id']}  [{cell['state']}]  level {cell['level']}  iteration {cell['iteration']}")
    )
    click.echo(safe(f"  claim: {cell['text']}"))
    for key in (
        "bedrock_reason",
        "leaf_reason",
        "directive",
        "summary",
        "stall_reason",
        "flagged",
        "final_reason",
    ):
        if cell.get(key):
            click.echo(safe(f"  {key.replace('_', ' ')}: {cell[key]}"))
    for p in data["parents"]:
        click.echo(safe(f"  parent {p['cell_id']} [{p['state']}]: {p['text']}"))
    for c in data["children"]:
        click.echo(safe(f"  child {c['cell_id']} ({c['relation']}) [{c['state']}]: {c['text']}"))
    if data["tasks"]:
        click.echo("  tasks:")
        for t in data["tasks"]:
            used = t.get("usage", {})
            cost = (
                f"  · {used['tokens']:,} tokens · {used['model_calls']} calls · ${used['cost_usd']:.4f}"
                if used.get("processes")
                else ""
            )
            click.echo(safe(f"    {t['task_id']}  {t['status']}  attempt {t['attempt']}{cost}"))
    if data.get("usage", {}).get("processes"):
        click.echo(f"  usage: {_usage_line(data['usage'])}")
    if data["verdicts"]:
        click.echo("  verdicts:")
        for v in data["verdicts"]:
            click.echo(safe(f"    i{v['iteration']} {v['role']}: {v['verdict']} — {v['summary'][:160]}"))
    if data["citations"]:
        click.echo("  citations:")
        for c in data["citations"]:
            who = f"i{c['iteration']} {c['role']}"  # roles may cite one passage each: say whose this is
            click.echo(
                safe(f"    {who} [{c['stance']} L{c['level']}] {c['source_id']}: “{c['quote'][:160]}”")
            )
            if c.get("source_reads"):
                click.echo(safe(f"      the page reads: “{' '.join(c['source_reads'].split())[:400]}”"))


@main.command()
@click.argument("task_id")
@click.option("--attempt", type=click.IntRange(min=1), help="That attempt's process (default: the latest).")
@click.option("--raw", is_flag=True, help="The stored bytes exactly as the harness wrote them (for a file).")
@domain_errors
def transcript(task_id: str, attempt: int | None, raw: bool) -> None:
    """A task's harness transcript as `petri run` stored it (the process's stdout: JSON lines)."""
    data = _service().transcript(task_id, attempt)
    if raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    for line in data.decode("utf-8", errors="replace").splitlines():
        click.echo(safe(line))  # the model's words, tool output: never escape sequences to a terminal


@main.command()
@click.argument("run_id", required=False)
@click.option("--cell", "cell_id", help="Only this cell's events.")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--after", default=0, show_default=True, help="Only events after this sequence number.")
@click.option("--limit", type=int, help="At most this many events.")
@click.option("--role", help="Only events of this role's tasks.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are appended.")
@click.option("--idle-exit", type=float, help="With --follow: stop after this many seconds without events.")
@domain_errors
def log(
    run_id: str | None,
    cell_id: str | None,
    types: tuple[str, ...],
    after: int,
    limit: int | None,
    role: str | None,
    as_json: bool,
    follow: bool,
    idle_exit: float | None,
) -> None:
    """The event log, oldest first (by sequence number); --follow tails it (Ctrl-C ends it)."""
    import time

    from .store import APPLY

    unknown = sorted(set(types) - APPLY.keys())
    if unknown:
        raise click.BadParameter(
            f"unknown event type {', '.join(unknown)}; the types are {', '.join(sorted(APPLY))}",
            param_hint="--type",
        )
    svc = _service()
    with svc.open(create=False) as st, st.read():  # an unknown run or cell is an error, not an empty log
        if run_id:
            st.run(run_id)
        if cell_id:
            st.cell(cell_id)
    try:
        last, idle_since = after, time.monotonic()
        while True:
            events = svc.log(run_id, cell_id, last, types, None if (follow or role) else limit)
            shown = 0
            for event in events:
                last = event["seq"]
                if role and not _has_role(event, role):
                    continue
                if limit is not None and not follow and shown >= limit:
                    break
                shown += 1
                if as_json:
                    emit_json(event, indent=None)  # one event per line
                else:
                    where = event["task_id"] or event["cell_id"] or event["run_id"] or "-"
                    click.echo(
                        safe(
                            f"{event['seq']:>6}  {event['at'][:19]}  {event['type']:<20} {where}  {_event_detail(event)}"
                        )
                    )
            if not follow:
                return
            sys.stdout.flush()
            now = time.monotonic()
            if events:
                idle_since = now
            elif idle_exit is not None and now - idle_since >= idle_exit:
                return
            time.sleep(0.2)
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # as `tail -f` ends: quietly


def _has_role(event: dict[str, Any], role: str) -> bool:
    task = event.get("task_id") or ""
    key = task.rsplit(".", 1)[-1] if task else ""
    return event["payload"].get("role") == role or key == role or key.startswith(f"{role}-re-")


def _event_detail(event: dict[str, Any]) -> str:
    p = event["payload"]
    if "from" in p and "to" in p:
        return f"{p['from']} → {p['to']}"
    if event["type"] == "verdict_recorded":
        return f"{p['role']}: {p['verdict']}"
    if event["type"] == "task_claimed":
        return f"by {p['worker']}"
    return ""


@main.command()
@click.argument("cell_id")
@click.option("--requeue", is_flag=True, help="Run the cell again (new iteration).")
@click.option(
    "--close",
    "close_as",
    type=click.Choice(["validated", "disproven", "inconclusive", "deferred", "needs_experiment"]),
    help="Close with this verdict.",
)
@click.option("--split", "splits", multiple=True, help="Split into this sub-claim (give it twice or more).")
@click.option("--reopen", is_flag=True, help="Reopen a final cell (new iteration).")
@click.option("--acknowledge", is_flag=True, help="Clear a flag without reopening.")
@click.option("--guidance", help="Guidance for the next iteration (becomes its directive).")
@click.option("--reason", help="Why (recorded with the decision).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def resolve(
    cell_id: str,
    requeue: bool,
    close_as: str | None,
    splits: tuple[str, ...],
    reopen: bool,
    acknowledge: bool,
    guidance: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """A human's decision on a stalled, final or flagged cell."""
    given = {
        "requeue": requeue,
        "close": bool(close_as),
        "split": bool(splits),
        "reopen": reopen,
        "acknowledge": acknowledge,
    }
    chosen = [name for name, on in given.items() if on]
    if len(chosen) != 1:
        raise click.UsageError("choose exactly one of --requeue, --close, --split, --reopen, --acknowledge")
    out = _service().resolve(
        cell_id, chosen[0], guidance=guidance, verdict=close_as, reason=reason, children=list(splits)
    )
    _print_resolution(out, as_json)


def _print_resolution(out: Any, as_json: bool) -> None:
    if as_json:
        emit_json(out.model_dump())
        return
    click.echo(f"{out.cell_id}: {out.cell_state}")
    for line in out.changes:
        click.echo(safe(f"  {line}"))


@main.command()
@click.argument("cell_id")
@click.option("--reject", is_flag=True, help="Reject the decomposition; the decomposer tries again.")
@click.option("--note", help="What to change (required with --reject: the decomposer works from it).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def approve(cell_id: str, reject: bool, note: str | None, as_json: bool) -> None:
    """Approve (or reject) a decomposition that awaits a human."""
    _print_resolution(_service().approve(cell_id, not reject, note), as_json)


@main.command()
@click.argument("run_id")
@domain_errors
def halt(run_id: str) -> None:
    """Stop dispatching a run's tasks (work in flight may still submit)."""
    click.echo(f"{run_id}: {_service().halt(run_id)}")


@main.command()
@click.argument("run_id")
@domain_errors
def resume(run_id: str) -> None:
    """Resume a halted run."""
    click.echo(f"{run_id}: {_service().halt(run_id, resume=True)}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def verify(as_json: bool) -> None:
    """Check the hash chain, the projections against a replay, and every citation's quote."""
    report = _service().verify()
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "events": report.events,
                "head": report.head,
                "citations": report.citations,
                "problems": report.problems,
            }
        )
    elif report.ok:
        click.echo(
            f"ok: {report.events} events, chain head {report.head[:12]}, {report.citations} citations "
            "verified, projections equal a replay"
        )
    else:
        for problem in report.problems:
            click.echo(safe(f"problem: {problem}"), err=True)
    if not report.ok:
        sys.exit(1)


@main.command()
@click.argument("url")
@click.option("--page", default=1, show_default=True, help="Which page of the extracted text to print.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def fetch(url: str, page: int, as_json: bool) -> None:
    """Fetch a page, snapshot it in the dish, and print its extracted text.

    \b
    Private and loopback addresses are refused unless PETRI_FETCH_ALLOW_PRIVATE=1.
    HTTPS_PROXY and the like are ignored; PETRI_FETCH_PROXY=URL fetches through a proxy.
    Both can also be set in the dish's config.json (docs/sources.md)."""
    out = _service().fetch(url, page)
    if as_json:
        emit_json(out.model_dump())
        return
    click.echo(safe(f"{out.source_id}  {out.title or '(no title)'}  published {out.published}"))
    click.echo(safe(f"{out.final_url}  page {out.page}/{out.pages}"))
    if out.note:
        click.echo(safe(f"note: {out.note}"))
    click.echo("")
    click.echo(safe(out.text))


@main.command()
@click.argument("url")
@click.option("--cell", "cell_id", required=True, help="The cell the evidence concerns.")
@click.option("--note", help="What the evidence changes (becomes the new iteration's directive).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def feed(url: str, cell_id: str, note: str | None, as_json: bool) -> None:
    """Feed new evidence to a cell: a final cell reopens as a new iteration; dependents are flagged."""
    svc = _service()
    source = svc.fetch(url)
    _print_resolution(svc.feed(cell_id, source.source_id, note), as_json)


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("petri-demo"),
    show_default=True,
    help="Where the demo's dish is kept (a new folder DIR-2, DIR-3… if DIR has one already).",
)
@domain_errors
def demo(directory: Path) -> None:
    """Run the whole workflow offline with a scripted agent (a simulation) on a bundled claim."""
    from .demo import run_demo
    from .service import Service

    base, n = directory.resolve(), 1
    while (directory.resolve() / ".petri" / "petri.db").exists():
        n += 1
        directory = base.with_name(f"{base.name}-{n}")
    dish = directory.resolve() / ".petri"
    click.echo(f"Demo dish: {dish}")
    run_id = run_demo(dish, say=lambda line: click.echo(safe(line)))
    click.echo("")
    _print_status(Service(dish).status(run_id))
    click.echo("")
    click.echo("Read the report, and inspect it yourself:")
    click.echo(f"  PETRI_HOME={dish} petri report {run_id} --format html -o {directory}/report.html")
    click.echo(f"  PETRI_HOME={dish} petri show {run_id}-0-01")
    click.echo(f"  PETRI_HOME={dish} petri log {run_id}")
    click.echo(f"  PETRI_HOME={dish} petri verify")


@main.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE.")
@domain_errors
def report(run_id: str, fmt: str, output: Path | None) -> None:
    """A run's report: claim tree, cases for and against, iterations, debates, audit trail."""
    text = _service().report(run_id, fmt)
    if output is None:
        click.echo(safe(text), nl=False)  # to a terminal: no escape sequences from the run's content
        return
    output.write_text(text)
    click.echo(f"wrote {output}")


@main.command()
@click.argument("run_id")
@click.option(
    "--to", "target", type=click.Path(file_okay=False, path_type=Path), help="Folder (default: RUN-export)."
)
@domain_errors
def export(run_id: str, target: Path | None) -> None:
    """Events as JSONL plus one markdown file per cell, stable for diffs and pull requests."""
    written = _service().export(run_id, target or Path(f"{run_id}-export"))
    click.echo(f"wrote {len(written)} files to {written[0].parent}")


@main.command()
@click.option("--to", "target", type=click.Path(dir_okay=False, path_type=Path), help="Backup file.")
@click.option("--list", "listing", is_flag=True, help="List the dish's backups.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def backup(target: Path | None, listing: bool, as_json: bool) -> None:
    """A consistent snapshot of the dish (VACUUM INTO), safe while agents are writing."""
    svc = _service()
    if listing:
        rows = svc.backups()
        if as_json:
            emit_json(rows)
        elif not rows:
            click.echo(f"no backups in {svc.dish / 'backups'}; make one with `petri backup`")
        for row in [] if as_json else rows:
            events = "unreadable" if row["events"] is None else f"{row['events']} events"
            click.echo(f"{row['path']}  {row['bytes']:,} bytes  {events}")
        return
    path = svc.backup(target)
    emit_json({"backup": str(path)}) if as_json else click.echo(f"backup written to {path}")


@main.group()
def otel() -> None:
    """OpenTelemetry export (needs the `otel` extra)."""


@otel.command("export")
@click.argument("run_id")
@click.option("--endpoint", help="OTLP/HTTP base URL (default: OTEL_EXPORTER_OTLP_ENDPOINT).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the collector, retries included, per batch of 512 spans.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def otel_export(run_id: str, endpoint: str | None, timeout: float, as_json: bool) -> None:
    """Send a run as one trace: spans per cell, task and tool call.

    Fails (exit 1) with the reason when the collector does not take every span."""
    from .otel import export, plan, shown, traces_url

    svc = _service()
    with svc.open(create=False) as st, st.read():
        run = st.run(run_id).model_dump()
        events = st.events(run_id=run_id)
    sent, url = export(plan(run, events), endpoint, timeout), shown(traces_url(endpoint))
    if as_json:
        emit_json({"run_id": run_id, "spans": sent, "endpoint": url})
    else:
        click.echo(f"sent {sent} spans for run {run_id} to {url}")


@main.command()
@click.argument("claim", required=False)
@click.option(
    "--resume", "resume_run", metavar="RUN", help="Continue this run (after a stop, a budget or a crash)."
)
@click.option(
    "--harness",
    type=click.Choice(["claude", "opencode"]),
    help="The harness that plays the agents [default: claude; on --resume the last runner's].",
)
@click.option(
    "-j", "--jobs", default=2, show_default=True, type=click.IntRange(1, 64), help="Tasks at a time."
)
@click.option(
    "--preset", default="standard", show_default=True, help="quick, standard or thorough (new runs)."
)
@click.option("--max-depth", type=int, help="How deep the claim may be decomposed (new runs).")
@click.option("--attempt-cap", type=int, help="Attempts per task before its cell is parked (new runs).")
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Stop dispatching at tasks=N (harness processes), tokens=N or usd=X, over the whole run; "
    "repeatable; a resumed run keeps its budget unless given again (KEY=none lifts one).",
)
@click.option("--task-timeout", default=900.0, show_default=True, help="Seconds before a child is stopped.")
@click.option(
    "--backoff", default=30.0, show_default=True, help="Seconds before a failed task is retried (doubles)."
)
@click.option(
    "--heartbeat", type=float, help="Seconds between lease renewals [default: a third of the lease]."
)
@click.option(
    "--json", "as_json", is_flag=True, help="A machine-readable summary at the end (progress on stderr)."
)
@domain_errors
def run(
    claim: str | None,
    resume_run: str | None,
    harness: str | None,
    jobs: int,
    preset: str,
    max_depth: int | None,
    attempt_cap: int | None,
    budgets: tuple[str, ...],
    task_timeout: float,
    backoff: float,
    heartbeat: float | None,
    as_json: bool,
) -> None:
    """Research a claim headless: one harness process per ready task, until done, a human or the budget.

    Each task runs as `claude -p` (or `opencode run`) with the role's agent. Leases are held for
    the children; a child that crashes, hangs or exits without submitting has its task retried
    with backoff; rate limits pause dispatching until their reset. Ctrl-C stops cleanly, and
    `petri run --resume RUN` continues where the log says.
    """
    import time

    from .runner import EXIT_INTERRUPTED, Runner, Settings, find_binary, opencode_project, parse_budget

    if bool(claim) == bool(resume_run):
        raise click.UsageError("give a CLAIM to start a run, or --resume RUN (not both)")
    svc = _service()
    budget = parse_budget(budgets)
    if resume_run:
        run_id = svc.run(resume_run).run_id
        known = svc.runners(run_id)
        harness = harness or (known[-1]["harness"] if known else "claude")
    else:
        harness = harness or "claude"
    find_binary(harness)  # before a run is started, so a missing harness creates nothing
    if harness == "opencode":
        opencode_project(Path.cwd())  # likewise: the project must have Petri's OpenCode setup
    if claim:
        settings = {
            k: v for k, v in (("max_depth", max_depth), ("attempt_cap", attempt_cap)) if v is not None
        }
        run_id = svc.start(claim, preset=preset, **settings).run_id

    def say(line: str) -> None:
        click.echo(safe(f"{time.strftime('%H:%M:%S')} {line}"), err=as_json)

    runner = Runner(
        svc,
        run_id,
        Settings(
            harness=harness,
            jobs=jobs,
            budget=budget,
            task_timeout_s=task_timeout,
            backoff_s=backoff,
            heartbeat_s=heartbeat,
        ),
        say,
    )
    summary = runner.run()
    if as_json:
        emit_json(summary)
    else:
        say(f"stopped: {summary['message']}")
        _print_status(svc.status(run_id))
        if summary["resume"]:
            click.echo(f"\ncontinue with: {summary['resume']}")
    if summary["stopped"] == "interrupted":
        sys.exit(EXIT_INTERRUPTED)


@main.command()
def diagram() -> None:
    """Print the cell state machine as a Mermaid diagram (generated from the transition table)."""
    from .machine import mermaid

    click.echo(mermaid(), nl=False)


@main.command()
@click.option(
    "--http",
    "port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve streamable HTTP on 127.0.0.1:PORT.",
)
@domain_errors
def mcp(port: int | None) -> None:
    """Run Petri's MCP server (stdio by default)."""
    if port is None:
        from .mcp_front import serve_stdio

        serve_stdio()
        return
    from .mcp_server import serve_http

    serve_http(port)


@main.group()
def install() -> None:
    """Set a harness up to use Petri (Claude Code installs the plugin itself; see the README)."""


@install.command("opencode")
@click.option(
    "--dir",
    "project",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The OpenCode project to set up.",
)
@click.option(
    "--local-model",
    metavar="URL/NAME",
    help="An OpenAI-compatible endpoint and model, e.g. http://127.0.0.1:11434/v1/qwen3:8b (Ollama).",
)
@click.option("--force", is_flag=True, help="Replace files that are not Petri's (after a backup).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def install_opencode_cmd(project: Path, local_model: str | None, force: bool, as_json: bool) -> None:
    """Write opencode.json (Petri's MCP server and skills) and one OpenCode agent per role.

    Idempotent: running it again changes nothing; Petri's own generated files are refreshed, and
    a file you wrote is kept unless --force (which backs it up first).
    """
    from .install import install_opencode

    written = install_opencode(project, local_model=local_model, force=force)
    if as_json:
        emit_json([{"path": str(w.path), "action": w.action} for w in written])
        return
    for w in written:
        click.echo(f"{w.action:<10} {safe(w.path)}" if " " not in w.action else f"{safe(w.path)}: {w.action}")
    if any(w.action.startswith("kept") for w in written):
        click.echo("Some files were kept as they are; see above.", err=True)
    click.echo("Next: run `opencode` in the project and ask it to research a claim with Petri.")
