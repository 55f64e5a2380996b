#!/usr/bin/env python3
"""A stand-in for the `claude` and `opencode` binaries in the runner tests (`PETRI_*_BIN`).

It parses the argv `petri run` builds (`-p PROMPT … --agent petri:petri-ROLE …` for Claude Code,
`run --agent petri-ROLE --format json PROMPT` for OpenCode), reads the task id and worker name
from the prompt, plays the task through `Service` on the dish named by PETRI_HOME (as the real
harness's MCP server would), and prints realistic stream-json / OpenCode JSON events with usage
and cost.

Behaviour per process, chosen by FAKE_PLAN (JSON): `{"<task id>|<role>|*": ["ok", "hang", …]}`;
the n-th process matching a key (task id first, then role) plays the n-th entry, then `ok`.

    ok           claim, submit, exit 0
    slow:S       claim, sleep S seconds, submit
    noclaim      exit 0 without claiming
    nosubmit     claim, exit 0 without submitting
    hang         claim, then sleep (until killed)
    crash        claim, then die by SIGKILL
    ratelimit:S  report a usage limit that resets in S seconds, exit 1 (no claim). Format, as Claude
                 Code prints it: a `result` event with `is_error: true` and the text
                 `Claude AI usage limit reached|<epoch of the reset>`; OpenCode: an `error` event
                 with `statusCode: 429` and a `retry-after` header of S.

Every process appends `{"event": "start", pid, task, worker, behaviour, …}` to FAKE_STATE/log.jsonl
as it starts (before its imports) and `{"event": "end", …}` when it exits on its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).parent))

if TYPE_CHECKING:
    from petri_core.models import TaskOut
    from petri_core.service import Service

CHILDREN = (
    "Heat pumps keep a coefficient of performance above 2 at minus 15 degrees",
    "Grid electricity in cold regions emits less per kWh than gas boilers",
)
MODEL = "claude-fake-1"
CALL = {"input": 1200, "output": 80, "reasoning": 20, "cache_read": 3000, "cache_write": 500}
CLAUDE_COST = 0.0123
OPENCODE_COST_PER_CALL = 0.0041


def parse(argv: list[str]) -> tuple[str, str, str]:
    """(harness, agent, prompt) from the command line petri run builds."""
    if argv[:1] == ["-p"]:
        agent = argv[argv.index("--agent") + 1].split(":")[-1]
        return "claude", agent, argv[1]
    if argv[:1] == ["run"]:
        return "opencode", argv[argv.index("--agent") + 1], argv[-1]
    raise SystemExit(f"fake harness: unexpected arguments {argv}")


def behaviour(state: Path, task_id: str, role: str) -> tuple[str, int]:
    plan: dict[str, list[str]] = json.loads(os.environ.get("FAKE_PLAN", "{}"))
    key = next((k for k in (task_id, role, "*") if k in plan), None)
    if key is None:
        return "ok", 1
    with (state / "counters.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = state / f"count-{key}"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
    steps = plan[key]
    return (steps[n - 1] if n <= len(steps) else "ok"), n


def log(state: Path, **fields: Any) -> None:
    with (state / "log.jsonl").open("a") as f:
        f.write(json.dumps({**fields, "pid": os.getpid(), "t": time.time()}) + "\n")


def result_for(svc: Service, task: TaskOut, context: dict[str, Any]) -> dict[str, Any]:
    from helpers import add_article, debate_turn, passing

    source_id = add_article(svc).source_id
    if task.kind == "decompose":
        return {
            "atomic": False,
            "children": [
                {"text": text, "relation": "supports", "atomic": True, "bedrock_reason": "a measurement"}
                for text in CHILDREN
            ],
        }
    if task.kind == "debate":
        return debate_turn(task)
    return passing(source_id)[task.role]


class Out:
    """The harness's own output stream: Claude Code stream-json or OpenCode JSON events."""

    def __init__(self, harness: str, task_id: str) -> None:
        self.harness = harness
        self.task_id = task_id
        self.calls = 0

    def emit(self, event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def start(self) -> None:
        if self.harness == "claude":
            self.emit(
                {
                    "type": "system",
                    "subtype": "init",
                    "session_id": f"fake-{os.getpid()}",
                    "model": MODEL,
                    "tools": [
                        "mcp__plugin_petri_petri__petri_claim",
                        "mcp__plugin_petri_petri__petri_submit",
                    ],
                    "mcp_servers": [{"name": "plugin:petri:petri", "status": "connected"}],
                }
            )

    def call(self, tool: str, args: dict[str, Any], answer: str) -> None:
        """One model call that uses a tool, and the tool's result."""
        self.calls += 1
        if self.harness == "claude":
            self.assistant(
                {"type": "tool_use", "id": f"tu_{self.calls}", "name": tool, "input": args},
                cache_read_input_tokens=CALL["cache_read"],
                cache_creation_input_tokens=CALL["cache_write"],
            )
            self.emit(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": f"tu_{self.calls}", "content": answer}
                        ],
                    },
                }
            )
        else:
            self.emit({"type": "step_start", "part": {"type": "step-start"}})
            self.emit(
                {
                    "type": "tool_use",
                    "part": {"tool": tool, "state": {"status": "completed", "input": args, "output": answer}},
                }
            )
            self.step_finish("tool-calls")

    def assistant(self, content: dict[str, Any], **cache_usage: int) -> None:
        """A Claude Code assistant message of this model call: one content block and its usage."""
        usage = {"input_tokens": CALL["input"], "output_tokens": CALL["output"], **cache_usage}
        message = {"id": f"msg_{self.calls}", "model": MODEL, "role": "assistant", "content": [content]}
        self.emit({"type": "assistant", "message": {**message, "usage": usage}})

    def step_finish(self, reason: str) -> None:
        self.emit(
            {
                "type": "step_finish",
                "part": {
                    "type": "step-finish",
                    "reason": reason,
                    "cost": OPENCODE_COST_PER_CALL,
                    "tokens": {
                        "input": CALL["input"],
                        "output": CALL["output"],
                        "reasoning": CALL["reasoning"],
                        "cache": {"read": CALL["cache_read"], "write": CALL["cache_write"]},
                    },
                },
            }
        )

    def finish(self, text: str) -> None:
        self.calls += 1
        if self.harness == "claude":
            self.assistant({"type": "text", "text": text})
            n = self.calls
            self.emit(
                {
                    "type": "result",
                    "subtype": "success",
                    "is_error": False,
                    "num_turns": n,
                    "result": text,
                    "total_cost_usd": CLAUDE_COST,
                    "usage": {
                        "input_tokens": CALL["input"] * n,
                        "output_tokens": CALL["output"] * n,
                        "cache_read_input_tokens": CALL["cache_read"] * n,
                        "cache_creation_input_tokens": CALL["cache_write"] * n,
                    },
                    "modelUsage": {
                        MODEL: {
                            "inputTokens": CALL["input"] * n,
                            "outputTokens": CALL["output"] * n,
                            "cacheReadInputTokens": CALL["cache_read"] * n,
                            "cacheCreationInputTokens": CALL["cache_write"] * n,
                            "costUSD": CLAUDE_COST,
                        }
                    },
                    "permission_denials": [],
                }
            )
        else:
            self.emit({"type": "text", "part": {"type": "text", "text": text}})
            self.step_finish("stop")

    def rate_limited(self, seconds: float) -> None:
        reset = int(time.time() + seconds + 0.999)
        if self.harness == "claude":
            text = f"Claude AI usage limit reached|{reset}"
            self.emit(
                {
                    "type": "assistant",
                    "message": {
                        "id": "msg_err",
                        "model": "<synthetic>",
                        "content": [{"type": "text", "text": text}],
                    },
                    "error": "rate_limit",
                }
            )
            self.emit(
                {
                    "type": "result",
                    "subtype": "success",
                    "is_error": True,
                    "num_turns": 1,
                    "result": text,
                    "total_cost_usd": 0,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }
            )
        else:
            self.emit(
                {
                    "type": "error",
                    "error": {
                        "name": "APIError",
                        "data": {
                            "message": "Rate limit exceeded",
                            "statusCode": 429,
                            "isRetryable": True,
                            "responseHeaders": {"retry-after": str(int(seconds))},
                        },
                    },
                }
            )


def main() -> int:
    harness, agent, prompt = parse(sys.argv[1:])
    match = re.fullmatch(r"Task (\S+)\. Claim it as worker (\S+)\.", prompt)
    if not match:
        raise SystemExit(f"fake harness: unexpected prompt {prompt!r}")
    task_id, worker = match.groups()
    state = Path(os.environ["FAKE_STATE"])
    role = agent.removeprefix("petri-")
    todo, n = behaviour(state, task_id, role)
    # Logged before the heavy imports, so the log's order is the order the processes ran in.
    log(state, event="start", task=task_id, worker=worker, role=role, behaviour=todo, n=n, harness=harness)
    from petri_core.models import TaskOut
    from petri_core.service import Service

    svc = Service(Path(os.environ["PETRI_HOME"]))
    out = Out(harness, task_id)
    out.start()
    kind, _, arg = todo.partition(":")
    if kind == "noclaim":
        out.finish("I could not start.")
        log(state, event="end", task=task_id, worker=worker)
        return 0
    if kind == "ratelimit":
        out.rate_limited(float(arg))
        log(state, event="end", task=task_id, worker=worker)
        return 1
    claim = svc.claim(task_id, worker)
    out.call("mcp__plugin_petri_petri__petri_claim", {"task_id": task_id, "worker": worker}, claim.lease)
    if kind == "nosubmit":
        out.finish("I am done (but forgot to submit).")
        log(state, event="end", task=task_id, worker=worker)
        return 0
    if kind == "hang":
        time.sleep(3600)
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "slow":
        time.sleep(float(arg))
    task = next(t for t in [svc.task(task_id)])
    task_out = TaskOut(
        task_id=task.task_id,
        cell_id=task.cell_id,
        role=task.role,
        kind=task.kind,
        agent=agent,
        brief=task.brief,
    )
    result = result_for(svc, task_out, claim.context)
    submitted = svc.submit(task_id, claim.lease, result)
    out.call("mcp__plugin_petri_petri__petri_submit", {"task_id": task_id, "lease": claim.lease}, "accepted")
    out.finish(f"{task_id}: {result.get('verdict', 'submitted')}")
    log(state, event="end", task=task_id, worker=worker, cell_state=submitted.cell_state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
