"""A scripted model on 127.0.0.1 that plays Petri's agents inside the real Claude Code and OpenCode.

It speaks the Anthropic Messages API (`POST /v1/messages`) and OpenAI chat completions
(`POST /v1/chat/completions`), streaming (SSE) or not, and is stateless: every reply is chosen
from the conversation in the request. Task ids and lease tokens exist only at run time, so the
"script" is a policy that reads the previous tool results and picks the next call, following
Petri's skills the way a model would:

- the main agent (prompt marked `[[petri:main]]`): load the `petri` skill, `petri_start`, then
  loop `petri_next` → dispatch one subagent per task (all in one turn) → `petri_next` … and end
  with a final line once the run is done;
- a worker (prompt marked `[[petri:worker]]`, its role read from its system prompt, i.e. from
  the agent file the harness loaded): `petri_claim`, fetch the pages its plan cites, and
  `petri_submit` the plan's result (the demo's scripted judgement, `petri_core.demo.script`).

It always answers 200 (harnesses retry errors with backoff), and logs every request as JSONL.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from petri_core.demo.script import citation, plan

MAIN, WORKER = "[[petri:main]]", "[[petri:worker]]"
MAX_MAIN_STEPS = 400
TASK = re.compile(r"\b(?:Petri task|Task) ([A-Za-z0-9][\w.-]*?)\.?(?=\s|$)")
ROLE = re.compile(r"You are Petri's ([a-z-]+)\.")


@dataclass(frozen=True)
class Dialect:
    """How one harness names the tools the policy uses."""

    skill: str
    agent: str
    petri_prefix: str

    def skill_input(self) -> dict[str, Any]:
        if self.skill == "Skill":
            return {"skill": "petri:petri"}
        return {"name": "petri"}

    def agent_input(self, task: dict[str, Any]) -> dict[str, Any]:
        prompt = f"{WORKER} Petri task {task['task_id']}"
        if self.agent == "Agent":
            return {
                "description": f"Petri {task['role']} task",
                "prompt": prompt,
                "subagent_type": f"petri:{task['agent']}",
                "run_in_background": False,
            }
        return {"description": f"Petri {task['role']} task", "prompt": prompt, "subagent_type": task["agent"]}


CLAUDE = Dialect("Skill", "Agent", "mcp__plugin_petri_petri__")
OPENCODE = Dialect("skill", "task", "petri_")


@dataclass
class Call:
    id: str
    name: str
    input: dict[str, Any]
    result: str | None = None


@dataclass
class Conversation:
    """A request reduced to what the policy reads."""

    system: str
    prompt: str
    turns: list[list[Call]] = field(default_factory=list)  # the assistant's tool calls, per turn
    tools: list[str] = field(default_factory=list)

    def calls(self) -> Iterator[Call]:
        for turn in self.turns:
            yield from turn


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            _text(part.get("text", part.get("content", ""))) for part in content if isinstance(part, dict)
        )
    return ""


def parse_anthropic(body: dict[str, Any]) -> Conversation:
    conv = Conversation(
        system=_text(body.get("system", "")), prompt="", tools=[t["name"] for t in body.get("tools", [])]
    )
    by_id: dict[str, Call] = {}
    for message in body.get("messages", []):
        role, content = message["role"], message["content"]
        if role == "system":
            conv.system += "\n" + _text(content)
        elif role == "user":
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            for block in blocks:
                if block.get("type") == "tool_result" and block.get("tool_use_id") in by_id:
                    by_id[block["tool_use_id"]].result = _text(block.get("content", ""))
                elif block.get("type") == "text" and not conv.turns:
                    conv.prompt += block["text"] + "\n"
        elif role == "assistant":
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            turn = [
                Call(b["id"], b["name"], b.get("input") or {}) for b in blocks if b.get("type") == "tool_use"
            ]
            by_id.update({c.id: c for c in turn})
            conv.turns.append(turn)
    return conv


def parse_openai(body: dict[str, Any]) -> Conversation:
    tools = [t["function"]["name"] for t in body.get("tools", []) if "function" in t]
    conv = Conversation(system="", prompt="", tools=tools)
    by_id: dict[str, Call] = {}
    for message in body.get("messages", []):
        role = message["role"]
        if role == "system":
            conv.system += "\n" + _text(message.get("content"))
        elif role == "user" and not conv.turns:
            conv.prompt += _text(message.get("content")) + "\n"
        elif role == "assistant":
            turn = []
            for tc in message.get("tool_calls") or []:
                args = tc["function"].get("arguments") or "{}"
                turn.append(Call(tc["id"], tc["function"]["name"], json.loads(args)))
            by_id.update({c.id: c for c in turn})
            conv.turns.append(turn)
        elif role == "tool" and message.get("tool_call_id") in by_id:
            by_id[message["tool_call_id"]].result = _text(message.get("content"))
    return conv


def _json(result: str | None) -> dict[str, Any]:
    """A Petri tool result as data (the harness passes the tool's JSON text through)."""
    if not result:
        return {}
    start = result.find("{")
    try:
        data = json.loads(result[start:]) if start >= 0 else {}
    except ValueError:
        try:
            data, _ = json.JSONDecoder().raw_decode(result[start:])
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def _rejected(result: str | None) -> bool:
    return bool(result) and "rejected:" in (result or "")[:200]


@dataclass(frozen=True)
class Reply:
    """Either tool calls or a final text."""

    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    text: str = ""


def decide(conv: Conversation, options: dict[str, Any]) -> Reply:
    """The next move of whichever agent this conversation belongs to."""
    headless = MAIN not in conv.prompt and ROLE.search(conv.system) and TASK.search(conv.prompt)
    if WORKER in conv.prompt or headless:  # a dispatched subagent, or `petri run`'s one-task process
        return worker(conv, options)
    if MAIN in conv.prompt:
        return main(conv, options)
    return Reply(text=options.get("default_text", "ok"))


def _dialect(conv: Conversation) -> Dialect:
    if (
        "Agent" in conv.tools
        or "Skill" in conv.tools
        or any(t.startswith(CLAUDE.petri_prefix) for t in conv.tools)
    ):
        return CLAUDE
    return OPENCODE


def main(conv: Conversation, options: dict[str, Any]) -> Reply:
    d = _dialect(conv)
    calls = list(conv.calls())
    if len(conv.turns) > MAX_MAIN_STEPS:
        return Reply(text="PETRI-E2E-GAVE-UP: too many steps")
    if not any(c.name == d.skill for c in calls):
        return Reply(((d.skill, d.skill_input()),))
    waiting = "WaitForMcpServers" in conv.tools and not any(t.startswith(d.petri_prefix) for t in conv.tools)
    if waiting and not any(c.name == "WaitForMcpServers" for c in calls):
        return Reply((("WaitForMcpServers", {}),))  # Claude Code: the MCP server is still starting
    start = next((c for c in calls if c.name == d.petri_prefix + "petri_start"), None)
    if start is None:
        claim = conv.prompt.split("claim:", 1)[-1].strip().splitlines()[0].strip()
        return Reply(
            ((d.petri_prefix + "petri_start", {"claim": claim, "preset": options.get("preset", "quick")}),)
        )
    run_id = _json(start.result).get("run_id")
    if not run_id:
        return Reply(text=f"PETRI-E2E-FAILED: petri_start gave {start.result!r}")
    last = conv.turns[-1]
    if last and last[0].name == d.petri_prefix + "petri_next":
        nxt = _json(last[0].result)
        if nxt.get("done"):
            return Reply(text=f"PETRI-E2E-DONE run {run_id}")
        if nxt.get("tasks"):
            return Reply(tuple((d.agent, d.agent_input(t)) for t in nxt["tasks"]))
        if nxt.get("needs_human"):
            return Reply(text=f"PETRI-E2E-NEEDS-HUMAN {nxt['needs_human']}")
        if not nxt:
            return Reply(text=f"PETRI-E2E-FAILED: petri_next gave {last[0].result!r}")
    return Reply(((d.petri_prefix + "petri_next", {"run_id": run_id, "limit": 8}),))


def worker(conv: Conversation, options: dict[str, Any]) -> Reply:
    prefix = next((t[: -len("petri_claim")] for t in conv.tools if t.endswith("petri_claim")), None)
    if prefix is None:
        return Reply(text="PETRI-E2E-FAILED: no petri_claim tool offered to the worker")
    task = TASK.search(conv.prompt)
    role = ROLE.search(conv.system)
    if not task or not role:
        return Reply(text="PETRI-E2E-FAILED: no task id in the prompt or no role in the system prompt")
    task_id = task.group(1)
    named = re.search(r"as worker ([\w:-]+(?:\.[\w:-]+)*)", conv.prompt)
    calls = {c.name.removeprefix(prefix): c for c in conv.calls()}
    if "petri_claim" not in calls:
        name = named.group(1) if named else f"petri-{role.group(1)}"
        return Reply(((prefix + "petri_claim", {"task_id": task_id, "worker": name}),))
    claim = _json(calls["petri_claim"].result)
    if not claim.get("lease"):
        return Reply(text=f"{task_id}: PETRI-E2E-FAILED claim {calls['petri_claim'].result!r}")
    cell = claim["context"]["cell"]
    todo = plan(
        claim["role"],
        claim["kind"],
        cell["claim"],
        cell["iteration"],
        claim["context"].get("directive"),
        stall=False,
        children=options.get("children", 2),
    )
    if "petri_submit" in calls or "petri_fail" in calls:
        done = calls.get("petri_submit") or calls["petri_fail"]
        if _rejected(done.result) or not _json(done.result):
            return Reply(text=f"{task_id}: PETRI-E2E-REJECTED {done.result!r}")
        return Reply(text=f"{task_id}: {todo.result.get('verdict', 'submitted')}")
    if todo.fail:
        args = {"task_id": task_id, "lease": claim["lease"], "reason": todo.fail, "retryable": False}
        return Reply(((prefix + "petri_fail", args),))
    fetched = {c.input.get("url"): _json(c.result) for c in conv.calls() if c.name == prefix + "petri_fetch"}
    base = options["pages_url"]
    missing = sorted({f"{base}/{c.page}.html" for c in todo.cites} - fetched.keys())
    if missing:
        return Reply(tuple((prefix + "petri_fetch", {"url": url}) for url in missing))
    result = dict(todo.result)
    if todo.cites:
        result["citations"] = [citation(c, fetched[f"{base}/{c.page}.html"]) for c in todo.cites]
    return Reply(
        ((prefix + "petri_submit", {"task_id": task_id, "lease": claim["lease"], "result": result}),)
    )


# --- wire formats -------------------------------------------------------------------------------


def _sse(events: list[tuple[str | None, dict[str, Any]]]) -> bytes:
    out = []
    for name, data in events:
        if name:
            out.append(f"event: {name}\n")
        out.append(f"data: {json.dumps(data)}\n\n")
    return "".join(out).encode()


def anthropic_reply(reply: Reply, body: dict[str, Any]) -> tuple[bytes, str]:
    msg_id = f"msg_{uuid.uuid4().hex[:20]}"
    blocks: list[dict[str, Any]] = []
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    for name, args in reply.calls:
        blocks.append(
            {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name, "input": args}
        )
    stop = "tool_use" if reply.calls else "end_turn"
    usage = {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return json.dumps(message).encode(), "application/json"
    events: list[tuple[str | None, dict[str, Any]]] = [
        (
            "message_start",
            {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}},
        )
    ]
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            ("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}),
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": i}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 20},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _sse(events), "text/event-stream"


def openai_reply(reply: Reply, body: dict[str, Any]) -> tuple[bytes, str]:
    chat_id = f"chatcmpl-{uuid.uuid4().hex[:20]}"
    tool_calls = [
        {
            "index": i,
            "id": f"call_{uuid.uuid4().hex[:20]}",
            "type": "function",
            "function": {"name": n, "arguments": json.dumps(a)},
        }
        for i, (n, a) in enumerate(reply.calls)
    ]
    finish = "tool_calls" if tool_calls else "stop"
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    model = body.get("model", "fake")
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if tool_calls:
            message["tool_calls"] = [{k: v for k, v in tc.items() if k != "index"} for tc in tool_calls]
        data = {
            "id": chat_id,
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        return json.dumps(data).encode(), "application/json"

    def chunk(
        delta: dict[str, Any], finish_reason: str | None = None, **extra: Any
    ) -> tuple[None, dict[str, Any]]:
        return None, {
            "id": chat_id,
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }

    events = [chunk({"role": "assistant", "content": ""})]
    if reply.text:
        events.append(chunk({"content": reply.text}))
    if tool_calls:
        events.append(chunk({"tool_calls": tool_calls}))
    events.append(chunk({}, finish, usage=usage))
    return _sse(events) + b"data: [DONE]\n\n", "text/event-stream"


class FakeModel:
    """The server: `with FakeModel(log, pages_url=...) as model:` gives `model.url`."""

    def __init__(self, log: Path, **options: Any) -> None:
        self.log = log
        self.options = options
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeModel:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def _record(self, entry: dict[str, Any]) -> None:
        with self.lock, self.log.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the JSONL log is the record."""

            def do_CONNECT(self) -> None:  # an outbound-traffic tripwire when used as HTTPS_PROXY
                model._record({"method": "CONNECT", "path": self.path})
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                model._record({"method": "GET", "path": self.path})
                self._send(b'{"data": []}', "application/json")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                path = self.path.split("?")[0]
                entry: dict[str, Any] = {"method": "POST", "path": self.path, "body": body}
                try:
                    if path.endswith("/chat/completions"):
                        conv = parse_openai(body)
                        reply = decide(conv, model.options) if conv.tools else Reply(text="Petri run")
                        payload, ctype = openai_reply(reply, body)
                    elif path.endswith("/messages"):
                        conv = parse_anthropic(body)
                        reply = decide(conv, model.options) if conv.tools else Reply(text="ok")
                        payload, ctype = anthropic_reply(reply, body)
                    else:
                        reply = Reply(text="unknown endpoint")
                        payload, ctype = b"{}", "application/json"
                    entry["reply"] = {"calls": [list(c) for c in reply.calls], "text": reply.text}
                except Exception as exc:  # never an HTTP error: harnesses retry those for minutes
                    reply = Reply(text=f"PETRI-E2E-FAILED: fake model error {exc!r}")
                    entry["error"] = repr(exc)
                    payload, ctype = (
                        openai_reply(reply, body)
                        if path.endswith("/chat/completions")
                        else anthropic_reply(reply, body)
                    )
                model._record(entry)
                self._send(payload, ctype)

            def _send(self, payload: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
