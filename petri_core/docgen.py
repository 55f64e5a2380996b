"""Regenerate the docs pages that are derived from code: `python -m petri_core.docgen`."""

from __future__ import annotations

from pathlib import Path

from .machine import CELL_TABLE, RUN_TABLE, mermaid
from .roster import DEBATES, PRESETS, ROLES, Role

DOCS = Path(__file__).resolve().parent.parent / "docs"


def state_machine_page() -> str:
    """docs/state-machine.md: the transition tables as Mermaid diagrams and tables."""
    rows = "\n".join(
        f"| `{t.source}` | {t.trigger} | {t.guard or ''} | `{t.target}` | {t.effect or ''} |"
        for t in CELL_TABLE
    )
    roles = "\n".join(
        f"| {r.name} | {r.phase} | {r.gating} | {', '.join(r.pass_verdicts) or '–'} | "
        f"{', '.join(r.block_verdicts) or '–'} | {_rules(r)} |"
        for r in ROLES.values()
    )
    presets = "\n".join(f"| {name} | {', '.join(sorted(roles))} |" for name, roles in PRESETS.items())
    debates = "\n".join(
        f"| {d.opener} | {d.responder} | {'yes' if d.final_word else 'no'} |" for d in DEBATES
    )
    return f"""# The state machine

Generated from `petri_core/machine.py` and `petri_core/roster.py` by `python -m petri_core.docgen`;
a test fails when this page drifts from the code. Do not edit by hand.

## Cell lifecycle

```mermaid
{mermaid()}```

| from | trigger | guard | to | effect |
|---|---|---|---|---|
{rows}

Effects: `new_cycle` starts a new iteration and restarts the circuit breaker's count;
`next_iteration` starts a new iteration within the cycle. `converging` is transient: the
convergence check runs in the same transaction as the submission that completes the last phase.

## Run lifecycle

```mermaid
{mermaid(RUN_TABLE, "intake")}```

A run is `complete` while its root and every other cell of the run are final (`root_final`). A
cell reopened under a final root (new evidence from `petri feed`) makes the run grow again
(`reopened`), so its tasks are dispatched, until it is final once more; the root's flag waits for
a human either way.

## Roles

| role | phase | gating | pass | block | citations needed |
|---|---|---|---|---|---|
{roles}

## Presets

| preset | roles |
|---|---|
{presets}

## Debates

A pair debates only when it disagrees in the current iteration: one side's latest verdict is a
block verdict and the other's is not (`roster.disagree`; the `has_debate` guard). Two sides that
agree, or a side with no verdict, hold no debate: a turn would be a model call that changes
nothing. The responder answers first; with the final word the opener rebuts.

| opener | responder | opener gets the final word |
|---|---|---|
{debates}
"""


def _rules(role: Role) -> str:
    return "; ".join("/".join(sorted(c.verdicts)) + ": " + c.describe() for c in role.citation_rules) or "–"


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "state-machine.md").write_text(state_machine_page())


if __name__ == "__main__":
    main()
