"""`python -m benchmarks [--quick] [--only P1,P3] [--json]`: measure, then print a markdown table (see docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from .common import Row, Sizes, table

Bench = Callable[[Sizes], list[Row]]


def suite() -> dict[str, Bench]:
    from . import race, reads, replay, roundtrip, startup, tokens

    return {
        "P1": roundtrip.run,
        "P2": race.run,
        "P3": reads.run,
        "P4": tokens.run,
        "P5": replay.run,
        "P6": startup.run,
    }


def measure(
    only: Sequence[str] = (),
    quick: bool = False,
    say: Callable[[str], None] | None = None,
    sizes: Sizes | None = None,
) -> list[Row]:
    """Run the chosen benchmarks (all by default) at full, `quick` or the given sizes; return their rows."""
    benches = suite()
    chosen = [b.upper() for b in only] or list(benches)
    unknown = sorted(set(chosen) - set(benches))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(benches)}")
    sizes = sizes or Sizes.of(quick)
    rows: list[Row] = []
    for bench in chosen:
        if say:
            say(f"running {bench} …")
        rows += benches[bench](sizes)
    return rows


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cores": str(os.cpu_count()),
        "platform": platform.platform(),
        "load average before": load(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. P1,P3")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    info = machine()
    rows = measure(only, args.quick, say=lambda line: print(line, file=sys.stderr, flush=True))
    info["load average after"] = load()
    if args.json:
        print(json.dumps({"machine": info, "rows": [dataclasses.asdict(r) for r in rows]}, indent=2))
    else:
        print(" · ".join(f"{k} {v}" for k, v in info.items()) + "\n")
        print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
