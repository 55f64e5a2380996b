"""The `petri` command line: a thin door over the service (no rules live here)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from . import __version__
from .errors import PetriError

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


def domain_errors(fn: F) -> F:
    """Turn a Petri error into one `Error: …` line and exit status 1 (tracebacks are bugs)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PetriError as exc:
            raise click.ClickException(safe(exc)) from None

    return wrapper  # type: ignore[return-value]


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    data = _service().status(run_id)
    if as_json:
        emit_json(data)
        return
    click.echo(f"dish {data['dish']}  ·  {data['events']} events  ·  head {data['head'][:12]}")
    if not data["runs"]:
        click.echo("no runs yet")
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


@main.command()
@click.argument("cell_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def show(cell_id: str, as_json: bool) -> None:
    """One cell: claim, state, edges, tasks, verdicts and citations."""
    data = _service().show(cell_id)
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
            click.echo(safe(f"    {t['task_id']}  {t['status']}  attempt {t['attempt']}"))
    if data["verdicts"]:
        click.echo("  verdicts:")
        for v in data["verdicts"]:
            click.echo(safe(f"    i{v['iteration']} {v['role']}: {v['verdict']} — {v['summary'][:160]}"))
    if data["citations"]:
        click.echo("  citations:")
        for c in data["citations"]:
            click.echo(safe(f"    [{c['stance']} L{c['level']}] {c['source_id']}: “{c['quote'][:160]}”"))


@main.command()
@click.argument("run_id", required=False)
@click.option("--cell", "cell_id", help="Only this cell's events.")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--after", default=0, show_default=True, help="Only events after this sequence number.")
@click.option("--limit", type=int, help="At most this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@domain_errors
def log(
    run_id: str | None,
    cell_id: str | None,
    types: tuple[str, ...],
    after: int,
    limit: int | None,
    as_json: bool,
) -> None:
    """The event log, oldest first."""
    for event in _service().log(run_id, cell_id, after, types, limit):
        if as_json:
            click.echo(json.dumps(event, ensure_ascii=False))
            continue
        where = event["task_id"] or event["cell_id"] or event["run_id"] or "-"
        detail = _event_detail(event)
        click.echo(safe(f"{event['seq']:>6}  {event['at'][:19]}  {event['type']:<20} {where}  {detail}"))


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
@click.option("--requeue", "action", flag_value="requeue", help="Run the cell again (new iteration).")
@click.option(
    "--close",
    "close_as",
    type=click.Choice(["validated", "disproven", "inconclusive", "deferred", "needs_experiment"]),
    help="Close with this verdict.",
)
@click.option("--split", "splits", multiple=True, help="Split into this sub-claim (give it twice or more).")
@click.option("--reopen", "action", flag_value="reopen", help="Reopen a final cell (new iteration).")
@click.option("--acknowledge", "action", flag_value="acknowledge", help="Clear a flag without reopening.")
@click.option("--guidance", help="Guidance for the next iteration (becomes its directive).")
@click.option("--reason", help="Why (recorded with the decision).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def resolve(
    cell_id: str,
    action: str | None,
    close_as: str | None,
    splits: tuple[str, ...],
    guidance: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """A human's decision on a stalled, final or flagged cell."""
    chosen = [a for a in (action, "close" if close_as else None, "split" if splits else None) if a]
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
@click.option("--note", help="What to change (with --reject).")
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
def diagram() -> None:
    """Print the cell state machine as a Mermaid diagram (generated from the transition table)."""
    from .machine import mermaid

    click.echo(mermaid(), nl=False)


@main.command()
@click.option("--http", "port", type=int, default=None, help="Serve streamable HTTP on 127.0.0.1:PORT.")
def mcp(port: int | None) -> None:
    """Run Petri's MCP server (stdio by default)."""
    from .mcp_server import serve

    serve(http_port=port)
