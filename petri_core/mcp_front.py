"""The first answers of `petri mcp` on stdio, given while the MCP SDK is still loading.

Importing the MCP SDK takes over a second (it builds hundreds of pydantic models), and a harness
waits for the server's first answers before its first model turn — once per process, so once per
task under `petri run`. Those answers never change for a given build: `initialize` and
`tools/list` in the handshake era; `server/discover`, the prompt, resource and tool lists, and the
acknowledgement of `subscriptions/listen` in the 2026-07-28 era (Claude Code waits for that one).
So the SDK's own answers are recorded in `mcp_handshake.json` (written by `python -m
petri_core.mcp_front --write`; a test fails when the file no longer matches the SDK) and this
module, which imports nothing but the standard library, serves them from the first milliseconds.

Nothing else is answered on the SDK's behalf, and the SDK still receives every message. A
handshake answered early is replayed to it under a private id, whose reply is dropped, so its
session is initialized exactly as if it had answered; a tool list answered early is asked of it
again under a private id, and a difference is reported on stderr and announced with
`notifications/tools/list_changed`; a listen request acknowledged early reaches the SDK, which
serves its stream, and the SDK's own acknowledgement is dropped. Every other message waits, in
order, for the SDK. When the recorded answers do not belong to this build (another version of
Petri, the SDK or pydantic), or are missing, nothing is answered early.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

SNAPSHOT = Path(__file__).with_name("mcp_handshake.json")
#: The modules whose text decides the tool list and the handshake answer.
SOURCES = ("__init__.py", "mcp_server.py", "models.py", "schema.py")
#: The distributions whose versions decide how the SDK writes them.
DISTRIBUTIONS = ("mcp", "mcp_types", "pydantic", "pydantic_core")
PRIVATE = "petri-front:"  # the prefix of the ids this module gives the SDK


def sources_digest() -> str:
    """A digest of Petri's tool-defining sources (the recorded answers must be written again
    whenever it changes; a test checks it)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return digest.hexdigest()


def distributions() -> list[str]:
    """The installed versions of DISTRIBUTIONS, from their dist-info folders (nothing imported)."""
    found = set()
    for module in DISTRIBUTIONS:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            found.add(f"{module}: missing")
            continue
        site = Path(spec.origin).parent.parent
        found.update(
            entry
            for entry in os.listdir(site)
            if entry.endswith(".dist-info") and entry.split("-")[0].lower() == module
        )
    return sorted(found)


def load_snapshot(path: Path = SNAPSHOT) -> dict[str, Any] | None:
    """The recorded answers, if they were recorded for this very build; else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("sources") != sources_digest():
        return None
    if data.get("distributions") != distributions():
        return None  # another SDK or pydantic than the one recorded: it may answer differently
    return data


ENVELOPE_VERSION = "io.modelcontextprotocol/protocolVersion"
ENVELOPE_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
LISTEN_ACK = "notifications/subscriptions/acknowledged"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
#: The flags of a `subscriptions/listen` filter; with `resourceSubscriptions`, all the SDK knows.
LISTEN_FLAGS = ("toolsListChanged", "promptsListChanged", "resourcesListChanged")


class Front:
    """Stands between the wire and the SDK: answers the handshake early, then relays everything.

    `pump()` reads the wire (run it on a thread); the SDK reads `readline()` and writes `write()`.
    Like the SDK, it lets the client's first request decide the protocol era: a handshake-era
    `initialize` (answered early only when it is that first request), or a 2026-07-28 request
    carrying the per-request envelope (`server/discover` and the prompt, resource and tool lists are
    then answered early; that era keeps no session, so nothing needs replaying). A 2026-07-28
    `subscriptions/listen` is acknowledged early too, and still goes to the SDK, which owns the
    stream from then on; its own acknowledgement is dropped.
    """

    def __init__(self, snapshot: dict[str, Any] | None, wire_in: BinaryIO, wire_out: BinaryIO) -> None:
        self.snapshot = snapshot
        self.wire_in = wire_in
        self.wire_out = wire_out
        self.inbox: queue.Queue[str] = queue.Queue()
        self.sdk_ready = threading.Event()
        self._out_lock = threading.Lock()
        self._era: str | None = None  # "handshake" or "modern", decided by the first request
        self._version: str | None = None  # the version of a handshake answered early
        self._initialized = False  # the client's notifications/initialized went to the SDK
        self._served_tools: Any = None  # the tool list answered early
        self._check: dict[str, Any] | None = None  # the SDK's own tools/list, to send when due
        self._acknowledged: set[Any] = set()  # listen ids acknowledged early: drop the SDK's ack
        self._pending = ""

    # -- the wire side

    def pump(self) -> None:
        """Read the wire until it closes: answer what may be answered early, queue the rest."""
        for raw in self.wire_in:
            line = raw.decode("utf-8", errors="replace")
            self._receive(line if line.endswith("\n") else line + "\n")  # the last may lack one
        self.inbox.put("")  # end of input: the SDK's reader sees EOF

    def _receive(self, line: str) -> None:
        if self.sdk_ready.is_set() and self._check is None:
            self.inbox.put(line)  # nothing left to watch for
            return
        message = _message(line)
        first = False
        if message is not None and "id" in message and self._era is None:
            first = True
            self._era = "modern" if _envelope(message) is not None else "handshake"
        if message is not None and self.snapshot is not None and not self.sdk_ready.is_set():
            try:
                if self._answer_early(message, first):
                    return
            except (KeyError, TypeError, AttributeError) as exc:  # a recording not shaped as expected
                print(f"petri mcp: not answering early ({exc!r}); the SDK will", file=sys.stderr, flush=True)
                self.snapshot = None
        self.inbox.put(line)
        if message is not None and message.get("method") == "notifications/initialized":
            self._initialized = True
            self._send_check()

    def _answer_early(self, message: dict[str, Any], first: bool) -> bool:
        assert self.snapshot is not None
        if "id" not in message:
            return False  # a notification
        method, params = message["method"], message.get("params") or {}
        if not isinstance(params, dict) or params.get("cursor"):
            return False
        if self._era == "modern":
            version = _envelope(message)
            answers = self.snapshot.get("modern", {}).get(version or "", {})
            if not answers or not isinstance(params["_meta"].get(ENVELOPE_CAPABILITIES), dict):
                return False  # not recorded, or an envelope the SDK would refuse: let it say why
            if method == "subscriptions/listen":
                self._acknowledge(message, params.get("notifications"))
                return False  # the SDK serves the stream (it is the request's open response)
            if method not in answers:
                return False
            self._reply(message, answers[method])
            if first:  # the SDK too must see a 2026-07-28 request first, or it would take a handshake
                self._to_sdk({**message, "id": PRIVATE + "era"})
            if method == "tools/list":
                self._expect_tools(answers[method], {**message, "id": PRIVATE + "tools"})
            return True
        if method == "initialize" and first:
            answer = self.snapshot.get("initialize", {}).get(params.get("protocolVersion"))
            if answer is None:
                return False  # a version not recorded: the SDK negotiates it
            self._reply(message, answer)
            self._version = answer["protocolVersion"]
            self._to_sdk({**message, "id": PRIVATE + "initialize"})
            return True
        if method == "tools/list" and self._version is not None and _envelope(message) is None:
            tools = self.snapshot.get("tools", {}).get(self._version)
            if tools is None:
                return False
            self._reply(message, tools)
            self._expect_tools(tools, {"jsonrpc": "2.0", "id": PRIVATE + "tools", "method": "tools/list"})
            return True
        return False

    def _acknowledge(self, request: dict[str, Any], requested: Any) -> None:
        """Acknowledge a listen request as the SDK's `ListenHandler` would: every kind requested is
        honored, and the acknowledgement names the request's id. A filter the SDK might read
        otherwise (an unknown key, a value not strictly a flag or a list of URIs) is left to it."""
        honored = _honored(requested)
        if honored is None or request["id"] in self._acknowledged:
            return
        self._acknowledged.add(request["id"])  # before the request reaches the SDK, which acks too
        params = {"_meta": {SUBSCRIPTION_ID: request["id"]}, "notifications": honored}
        self._send({"jsonrpc": "2.0", "method": LISTEN_ACK, "params": params})

    def _expect_tools(self, served: Any, check: dict[str, Any]) -> None:
        """Remember the tool list answered early; the SDK is asked for its own once it may answer."""
        if self._served_tools is None:
            self._served_tools, self._check = served, check
            self._send_check()

    def _send_check(self) -> None:
        if self._check is not None and (self._era == "modern" or self._initialized):
            self._to_sdk(self._check)
            self._check = None

    def _reply(self, request: dict[str, Any], result: Any) -> None:
        self._send({"jsonrpc": "2.0", "id": request["id"], "result": result})

    def _to_sdk(self, message: dict[str, Any]) -> None:
        self.inbox.put(json.dumps(message, ensure_ascii=False) + "\n")

    def _send(self, message: dict[str, Any]) -> None:
        self._write_line(json.dumps(message, ensure_ascii=False, separators=(",", ":")))

    def _write_line(self, line: str) -> None:
        with self._out_lock:
            self.wire_out.write(line.encode("utf-8") + b"\n")
            self.wire_out.flush()

    # -- the SDK side (a text file for `anyio.wrap_file`)

    def readline(self) -> str:
        self.sdk_ready.set()
        return next_line(self.inbox)

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if PRIVATE in line and self._private_reply(line):
                continue
            if self._acknowledged and LISTEN_ACK in line and self._second_ack(line):
                continue
            self._write_line(line)
        return len(text)

    def flush(self) -> None:
        pass  # every whole line is written and flushed as it completes

    def _private_reply(self, line: str) -> bool:
        """Swallow the SDK's reply to a message this module sent it; check the tool list."""
        try:
            message = json.loads(line)
        except ValueError:
            return False
        ident = message.get("id") if isinstance(message, dict) else None
        if not (isinstance(ident, str) and ident.startswith(PRIVATE)):
            return False
        if ident == PRIVATE + "tools" and message.get("result") != self._served_tools:
            print(
                "petri mcp: the tool list answered at start differs from the SDK's "
                "(regenerate it: python -m petri_core.mcp_front --write)",
                file=sys.stderr,
                flush=True,
            )
            if self._era == "handshake":  # a 2026-07-28 client hears of changes only by subscription
                self._send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        return True

    def _second_ack(self, line: str) -> bool:
        """Swallow the SDK's acknowledgement of a listen request this module acknowledged."""
        try:
            message = json.loads(line)
            ident = message["params"]["_meta"][SUBSCRIPTION_ID]
        except (ValueError, TypeError, KeyError):
            return False
        if message.get("method") != LISTEN_ACK or ident not in self._acknowledged:
            return False
        self._acknowledged.discard(ident)
        return True


def _honored(requested: Any) -> dict[str, Any] | None:
    """The acknowledged filter for a requested one (the SDK's `_honored_subset`: true flags kept,
    others dropped, URIs kept if any), or None for a filter it might read otherwise."""
    if not isinstance(requested, dict) or not requested.keys() <= {*LISTEN_FLAGS, "resourceSubscriptions"}:
        return None
    if not all(isinstance(requested.get(flag), bool | None) for flag in LISTEN_FLAGS):
        return None  # (1 == True, so a membership test would pass 1, which the SDK reads as True)
    uris = requested.get("resourceSubscriptions")
    if uris is not None and not (isinstance(uris, list) and all(isinstance(u, str) for u in uris)):
        return None
    honored: dict[str, Any] = {flag: True for flag in LISTEN_FLAGS if requested.get(flag) is True}
    if uris:
        honored["resourceSubscriptions"] = list(uris)
    return honored


def _envelope(message: dict[str, Any]) -> str | None:
    """The protocol version of a 2026-07-28 per-request envelope, as the SDK tells the eras apart."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if message.get("method") == "initialize" or not isinstance(meta, dict) or ENVELOPE_VERSION not in meta:
        return None
    version = meta[ENVELOPE_VERSION]
    return version if isinstance(version, str) else ""


def next_line(inbox: queue.Queue[str]) -> str:
    """The next queued line for the SDK's reader; '' is the end of input, and stays so for any
    later read (the reader is a thread that may ask again)."""
    line = inbox.get()
    if not line:
        inbox.put(line)
    return line


def _message(line: str) -> dict[str, Any] | None:
    """A JSON-RPC request or notification from a line, or None."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if isinstance(message, dict) and isinstance(message.get("method"), str):
        return message
    return None


def claim_stdio() -> tuple[BinaryIO, BinaryIO]:
    """The wire as private descriptors; fd 0 then reads /dev/null and fd 1 writes to stderr, so a
    stray print or a child process can never write into the protocol (as the SDK's own stdio does)."""
    wire_in = os.fdopen(os.dup(0), "rb")
    wire_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return wire_in, wire_out


def serve_stdio() -> None:
    """`petri mcp` on stdio: start answering now, load the SDK, then hand it the wire."""
    wire_in, wire_out = claim_stdio()
    front = Front(load_snapshot(), wire_in, wire_out)
    threading.Thread(target=front.pump, name="petri-mcp-front", daemon=True).start()
    from .mcp_server import serve_front  # the slow import, while the handshake is being answered

    serve_front(front)


def main(argv: list[str] | None = None) -> int:
    """`python -m petri_core.mcp_front --write`: record the SDK's answers for this build."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--write"]:
        print("usage: python -m petri_core.mcp_front --write", file=sys.stderr)
        return 2
    from .mcp_server import handshake_snapshot

    snapshot = handshake_snapshot()
    SNAPSHOT.write_text(json.dumps(snapshot, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
