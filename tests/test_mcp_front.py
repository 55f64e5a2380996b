"""`petri mcp` answers the handshake before the MCP SDK has loaded, with the SDK's own answers.

The recorded answers are checked against the SDK itself; over a real stdio process every early
answer must equal what the SDK gives for the same message, the SDK must still serve everything
else (including calls sent before it loaded), and its replies to the replayed handshake must
never reach the wire. A stale recording is caught at start (not used) or, failing that, announced.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from petri_core import mcp_front
from petri_core.mcp_front import Front, load_snapshot
from petri_core.mcp_server import _Script, build, handshake_snapshot, run_on
from petri_core.service import Service

VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")


def initialize(ident: Any, version: str, **capabilities: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": ident,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": capabilities,
            "clientInfo": {"name": "front-test", "version": "9"},
        },
    }


INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
MODERN = "2026-07-28"


def enveloped(ident: Any, method: str, **params: Any) -> dict[str, Any]:
    """A 2026-07-28 request, its envelope shaped as Claude Code 2.1.330 sends it."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {
            "name": "claude-code",
            "title": "Claude Code",
            "version": "2.1.330",
        },
        "io.modelcontextprotocol/clientCapabilities": {"roots": {}, "elicitation": {}},
    }
    return {"jsonrpc": "2.0", "id": ident, "method": method, "params": {**params, "_meta": meta}}


def sdk_replies(tmp_path: Path, lines: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """What the SDK itself answers to these lines (in process, no front)."""
    script = _Script(lines)
    run_on(build(Service(tmp_path / "sdk" / ".petri")), script, script)
    return script.replies


class Wire:
    """`petri mcp` as a real process, spoken to in raw newline-delimited JSON-RPC."""

    def __init__(self, dish: Path) -> None:
        env = {**os.environ, "PETRI_HOME": str(dish)}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "petri_core", "mcp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.seen: list[dict[str, Any]] = []

    def send(self, *messages: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        for message in messages:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def reply(self, ident: Any) -> dict[str, Any]:
        """The reply to request `ident` (replies may come in any order)."""
        assert self.proc.stdout is not None
        while not [m for m in self.seen if m.get("id") == ident]:
            line = self.proc.stdout.readline()
            assert line, f"the server closed the wire before answering {ident!r}"
            self.seen.append(json.loads(line))
        return next(m for m in self.seen if m.get("id") == ident)

    def close(self) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.seen += [json.loads(line) for line in self.proc.stdout.read().splitlines()]
        assert self.proc.wait(30) == 0
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()


@pytest.fixture
def dish(tmp_path: Path) -> Path:
    svc = Service(tmp_path / ".petri")
    svc.start("Heat pumps cut household heating emissions", preset="quick")
    svc.close()
    return svc.dish


def test_the_recorded_answers_are_the_sdks_own_for_this_build() -> None:
    recorded = json.loads(mcp_front.SNAPSHOT.read_text(encoding="utf-8"))
    now = handshake_snapshot()
    hint = "the tools or the SDK changed: run `python -m petri_core.mcp_front --write` and commit the file"
    assert recorded["sources"] == now["sources"], hint
    assert recorded["initialize"] == now["initialize"], hint
    assert recorded["tools"] == now["tools"], hint
    assert recorded["modern"] == now["modern"], hint
    assert set(recorded["initialize"]) == set(VERSIONS) and set(recorded["modern"]) == {MODERN}


def test_a_recording_for_other_sources_or_another_sdk_is_not_used(tmp_path: Path) -> None:
    recorded = json.loads(mcp_front.SNAPSHOT.read_text(encoding="utf-8"))
    if recorded["distributions"] != mcp_front.distributions():
        pytest.skip("the installed SDK is not the recorded one: the fast path is off here")
    path = tmp_path / "handshake.json"
    path.write_text(json.dumps(recorded))
    assert load_snapshot(path) == recorded
    path.write_text(json.dumps({**recorded, "sources": "0" * 64}))
    assert load_snapshot(path) is None
    path.write_text(json.dumps({**recorded, "distributions": ["mcp-9.9.9.dist-info"]}))
    assert load_snapshot(path) is None
    path.write_text("{not json")
    assert load_snapshot(path) is None
    assert load_snapshot(tmp_path / "missing.json") is None


@pytest.mark.parametrize("version", VERSIONS)
def test_the_early_answers_equal_the_sdks_and_the_sdk_serves_the_rest(
    dish: Path, tmp_path: Path, version: str
) -> None:
    hello = initialize(7, version, roots={"listChanged": True}, sampling={})
    listing = {"jsonrpc": "2.0", "id": 8, "method": "tools/list"}
    expected = sdk_replies(tmp_path, [hello, INITIALIZED, listing])
    wire = Wire(dish)
    wire.send(hello)
    assert wire.reply(7) == expected[7]
    wire.send(INITIALIZED, listing)
    assert wire.reply(8) == expected[8]
    # sent at once, before the SDK can have loaded: queued, then served by the SDK in order
    status = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "petri_status"}}
    status["params"]["arguments"] = {}
    wire.send(status, {**listing, "id": 10})
    answer = wire.reply(9)["result"]
    assert not answer.get("isError"), answer
    assert answer["structuredContent"]["runs"][0]["claim"].startswith("Heat pumps")
    assert wire.reply(10) == {**expected[8], "id": 10}
    stderr = wire.close()
    assert not [m for m in wire.seen if str(m.get("id", "")).startswith(mcp_front.PRIVATE)]
    assert "differs" not in stderr, stderr


def test_the_2026_era_discovery_and_tool_list_are_answered_early_as_the_sdk_would(
    dish: Path, tmp_path: Path
) -> None:
    discover = enveloped("server-discover-probe-1", "server/discover")
    listing = enveloped(3, "tools/list")
    expected = sdk_replies(tmp_path, [discover, listing])
    wire = Wire(dish)
    wire.send(discover, listing)
    assert wire.reply("server-discover-probe-1") == expected["server-discover-probe-1"]
    assert wire.reply(3) == expected[3]
    wire.send(enveloped(4, "tools/call", name="petri_status", arguments={}), enveloped(5, "prompts/list"))
    answer = wire.reply(4)["result"]
    assert not answer.get("isError"), answer
    assert answer["structuredContent"]["runs"][0]["claim"].startswith("Heat pumps")
    assert wire.reply(5)["result"]["prompts"] == []
    stderr = wire.close()
    assert not [m for m in wire.seen if str(m.get("id", "")).startswith(mcp_front.PRIVATE)]
    assert "differs" not in stderr, stderr


LISTEN = "listen:0"
LISTEN_ACK = "notifications/subscriptions/acknowledged"  # the protocol's names, not the module's
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"


def listen(ident: Any = LISTEN, **flags: Any) -> dict[str, Any]:
    """A `subscriptions/listen` as Claude Code 2.1.330 opens it (or with other `flags`)."""
    wanted = flags or {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}
    return enveloped(ident, "subscriptions/listen", notifications=wanted)


def is_ack(message: dict[str, Any], ident: Any = LISTEN) -> bool:
    return message.get("method") == LISTEN_ACK and message["params"]["_meta"] == {SUBSCRIPTION_ID: ident}


class Listening(_Script):
    """`_Script` with a listen stream open: it also keeps every line the SDK writes, in order, and
    ends input only once each listen request is acknowledged (its stream then ends with the input)."""

    def __init__(self, lines: list[dict[str, Any]], listen_ids: set[Any]) -> None:
        super().__init__(lines)
        self.waiting = self.waiting - listen_ids | {("ack", i) for i in listen_ids}
        self.out: list[dict[str, Any]] = []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            message = json.loads(line)
            self.out.append(message)
            if message.get("method") == LISTEN_ACK:
                self.waiting.discard(("ack", message["params"]["_meta"][SUBSCRIPTION_ID]))
        return super().write(text)


def sdk_output(tmp_path: Path, lines: list[dict[str, Any]], listen_ids: set[Any]) -> list[dict[str, Any]]:
    script = Listening(lines, listen_ids)
    run_on(build(Service(tmp_path / "sdk" / ".petri")), script, script)
    return script.out


class Lines:
    """JSON lines from a pipe, each awaited at most `timeout` seconds (a missing answer fails the
    test rather than hanging it)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def next(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no line within {timeout} s (got so far: {self.buffer[:200]!r})"
            chunk = os.read(self.fd, 65536)
            assert chunk, "the pipe closed"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def rest(self) -> list[dict[str, Any]]:
        """Every line still to come, up to the end of the pipe."""
        while chunk := os.read(self.fd, 65536):
            self.buffer += chunk
        return [json.loads(line) for line in self.buffer.splitlines()]


def test_a_2026_era_start_is_answered_whole_before_the_sdk_loads_as_the_sdk_would(
    dish: Path, tmp_path: Path
) -> None:
    """Claude Code's start: a discovery probe, a listen stream (it waits for the acknowledgement),
    then discovery and the three lists at once. The front answers all of it with no SDK running,
    each answer equal to the SDK's; the SDK then serves the stream and the calls, and its own
    acknowledgement of the stream never reaches the wire."""
    opening = [
        enveloped("probe", "server/discover"),
        listen(),
        enveloped(0, "server/discover"),
        enveloped(1, "prompts/list"),
        enveloped(2, "resources/list"),
        enveloped(3, "tools/list"),
    ]
    expected = sdk_output(tmp_path, opening, {LISTEN})
    wire_in_r, wire_in_w = os.pipe()
    wire_out_r, wire_out_w = os.pipe()
    front = Front(load_snapshot(), os.fdopen(wire_in_r, "rb"), os.fdopen(wire_out_w, "wb"))
    if front.snapshot is None:
        pytest.skip("the installed SDK is not the recorded one: the fast path is off here")
    threading.Thread(target=front.pump, daemon=True).start()
    to_server = os.fdopen(wire_in_w, "wb")
    to_server.write("".join(json.dumps(m) + "\n" for m in opening).encode())
    to_server.flush()
    replies = Lines(wire_out_r)
    early = [replies.next() for _ in opening]  # no SDK is running yet
    assert not front.sdk_ready.is_set()
    assert [m.get("id") for m in early] == ["probe", None, 0, 1, 2, 3]
    assert early[1] == next(m for m in expected if is_ack(m))
    for message in early[2:] + early[:1]:
        assert message == next(m for m in expected if m.get("id") == message["id"])

    server = threading.Thread(target=run_on, args=(build(Service(dish)), front, front), daemon=True)
    server.start()
    to_server.write(
        (json.dumps(enveloped(4, "tools/call", name="petri_status", arguments={})) + "\n").encode()
    )
    to_server.flush()
    later = [replies.next()]
    while later[-1].get("id") != 4:
        later.append(replies.next())
    assert not later[-1]["result"].get("isError"), later[-1]
    to_server.close()
    server.join(30)
    front.wire_out.close()  # the SDK has stopped: read the rest of what reached the wire
    later += replies.rest()
    assert LISTEN not in front._acknowledged  # the SDK acknowledged the stream too …
    assert not [m for m in later if is_ack(m)]  # … and that went nowhere
    assert not [m for m in later if str(m.get("id", "")).startswith(mcp_front.PRIVATE)]


@pytest.mark.parametrize(
    "flags",
    [
        {"toolsListChanged": True},
        {"toolsListChanged": False, "promptsListChanged": True},
        {"resourceSubscriptions": ["petri://runs"], "resourcesListChanged": None},
        {},
    ],
)
def test_a_listen_filter_is_acknowledged_as_the_sdk_acknowledges_it(tmp_path: Path, flags: Any) -> None:
    request = enveloped(LISTEN, "subscriptions/listen", notifications=flags)
    sdk_ack = next(m for m in sdk_output(tmp_path, [request], {LISTEN}) if is_ack(m))
    assert sdk_ack["params"]["notifications"] == mcp_front._honored(flags)


@pytest.mark.parametrize(
    "flags",
    [
        {"toolsListChanged": "yes"},
        {"toolsListChanged": 1},
        {"somethingElse": True},
        {"resourceSubscriptions": "petri://x"},
        [],
    ],
)
def test_a_listen_filter_the_front_does_not_know_is_left_to_the_sdk(flags: Any) -> None:
    assert mcp_front._honored(flags) is None


def test_a_listen_over_a_real_process_is_acknowledged_once(dish: Path, tmp_path: Path) -> None:
    wire = Wire(dish)
    wire.send(enveloped("probe", "server/discover"), listen(), enveloped(3, "tools/list"))
    assert wire.reply(3)["result"]["tools"]
    wire.send(enveloped(4, "tools/call", name="petri_status", arguments={}))
    assert not wire.reply(4)["result"].get("isError")
    wire.close()
    assert len([m for m in wire.seen if is_ack(m)]) == 1


def test_an_initialize_after_a_2026_era_request_is_left_to_the_sdk(dish: Path, tmp_path: Path) -> None:
    """The first request decides the era (as in the SDK): a handshake after a 2026-era request
    is not answered early, so the client hears what the SDK says of it."""
    opening = enveloped("p", "prompts/list")  # not answered early: it goes to the SDK first
    hello = initialize("h", "2025-11-25")
    expected = sdk_replies(tmp_path, [opening, hello])
    wire = Wire(dish)
    wire.send(opening, hello)
    assert wire.reply("h") == expected["h"]
    assert "error" in expected["h"]  # the SDK refuses a handshake on a 2026-era connection
    wire.close()


def test_a_protocol_version_not_recorded_is_negotiated_by_the_sdk(dish: Path, tmp_path: Path) -> None:
    hello = initialize("a", "2099-01-01")
    expected = sdk_replies(tmp_path, [hello])
    wire = Wire(dish)
    wire.send(hello)
    assert wire.reply("a") == expected["a"]
    wire.close()


def test_a_stale_tool_list_is_announced_as_changed(tmp_path: Path) -> None:
    """Were a wrong list ever served early, the client is told to list again, and stderr says why."""
    snapshot = json.loads(mcp_front.SNAPSHOT.read_text(encoding="utf-8"))
    stale = snapshot["tools"]["2025-11-25"]
    snapshot["tools"]["2025-11-25"] = {**stale, "tools": stale["tools"][:-1]}
    wire_in_r, wire_in_w = os.pipe()
    wire_out_r, wire_out_w = os.pipe()
    front = Front(snapshot, os.fdopen(wire_in_r, "rb"), os.fdopen(wire_out_w, "wb"))
    threading.Thread(target=front.pump, daemon=True).start()
    to_server = os.fdopen(wire_in_w, "wb")
    for message in (
        initialize(1, "2025-11-25"),
        INITIALIZED,
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ):
        to_server.write((json.dumps(message) + "\n").encode())
    to_server.flush()
    replies = os.fdopen(wire_out_r, "rb")
    seen = [json.loads(replies.readline()) for _ in range(2)]  # answered before the SDK starts
    server = threading.Thread(
        target=run_on, args=(build(Service(tmp_path / ".petri")), front, front), daemon=True
    )
    server.start()
    seen.append(json.loads(replies.readline()))
    to_server.close()
    server.join(30)
    assert seen[0]["id"] == 1 and seen[1]["id"] == 2
    assert len(seen[1]["result"]["tools"]) == len(stale["tools"]) - 1  # what was served early
    assert seen[2] == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


def test_stray_output_to_fd_1_goes_to_stderr_not_onto_the_wire() -> None:
    code = (
        "from petri_core.mcp_front import claim_stdio\n"
        "wire_in, wire_out = claim_stdio()\n"
        "print('stray', flush=True)\n"
        "import os; os.system('echo child')\n"
        "wire_out.write(b'wire\\n'); wire_out.flush()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "wire\n"
    assert "stray" in done.stderr and "child" in done.stderr


def test_a_recording_of_the_wrong_shape_leaves_everything_to_the_sdk(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    wire_in_r, wire_in_w = os.pipe()
    wire_out_r, wire_out_w = os.pipe()
    front = Front(
        {"initialize": ["not", "a", "mapping"]}, os.fdopen(wire_in_r, "rb"), os.fdopen(wire_out_w, "wb")
    )
    threading.Thread(target=front.pump, daemon=True).start()
    to_server = os.fdopen(wire_in_w, "wb")
    to_server.write((json.dumps(initialize(1, "2025-11-25")) + "\n").encode())
    to_server.flush()
    deadline = time.monotonic() + 30
    while front.snapshot is not None and time.monotonic() < deadline:  # the front gave up on it
        time.sleep(0.01)
    assert front.snapshot is None
    server = threading.Thread(
        target=run_on, args=(build(Service(tmp_path / ".petri")), front, front), daemon=True
    )
    server.start()
    reply = json.loads(os.fdopen(wire_out_r, "rb").readline())
    to_server.close()
    server.join(30)
    assert reply["id"] == 1 and reply["result"]["protocolVersion"] == "2025-11-25"  # the SDK's answer
    assert "not answering early" in capfd.readouterr().err
