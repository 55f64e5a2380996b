"""`petri mcp` on stdio with one more tool, `petri_noop`, which does nothing: P1's floor.

P1 compares `petri_submit` with a no-op tool on the same server. Petri's own tools all do work, and
a tool that only a benchmark needs does not belong in every agent's tool list (P4 counts that list),
so this process adds it to the server `petri mcp` builds and serves it the way `petri mcp` does:
behind `mcp_front.Front`, through the SDK's stdio transport, each sync tool on a worker thread,
its reply made by `mcp_server.door` as every Petri tool's is. One difference: the tool list is not
the recorded one, so the front answers nothing early (the handshake, which P1 does not time, waits
for the SDK).

A second extra tool, `bench_service_times`, returns how long each `Service.submit` and
`Service.heartbeat` took inside the server, so P1 can tell the service's share of a round trip
from the protocol's.

Run as `python -m benchmarks.noop_server` with PETRI_HOME set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from petri_core import mcp_front, mcp_server
from petri_core.service import Service
from petri_core.store import default_dish


class NoopOut(BaseModel):
    ok: bool


class ServiceTimes(BaseModel):
    seconds: dict[str, list[float]]


def timing(times: dict[str, list[float]], name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            times.setdefault(name, []).append(time.perf_counter() - start)

    return timed


def main() -> None:
    wire_in, wire_out = mcp_front.claim_stdio()
    front = mcp_front.Front(None, wire_in, wire_out)
    threading.Thread(target=front.pump, name="petri-mcp-front", daemon=True).start()
    svc = Service(default_dish())
    times: dict[str, list[float]] = {}
    for name in ("submit", "heartbeat"):
        setattr(svc, name, timing(times, name, getattr(svc, name)))
    server = mcp_server.build(svc)

    @server.tool(annotations=mcp_server.READ_ONLY, description="Do nothing (the benchmark's floor).")
    @mcp_server.door  # its reply made as every Petri tool's is
    def petri_noop() -> NoopOut:
        return NoopOut(ok=True)

    @server.tool(annotations=mcp_server.READ_ONLY, description="Seconds each service call took here.")
    def bench_service_times() -> ServiceTimes:
        return ServiceTimes(seconds=times)

    mcp_server.run_on(server, front, front)


if __name__ == "__main__":
    main()
