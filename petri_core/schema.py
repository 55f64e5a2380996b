"""Lean JSON schemas and readable validation errors, shared by the service and the MCP door."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

ANNOTATIONS = ("title", "$defs")


def lean(schema: dict[str, Any], *, closed: bool = False, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Strip titles (and `drop` keys) and inline `$defs`. With `closed` (input schemas) also collapse
    nullable optionals and refuse unknown properties; output schemas keep `null` where allowed."""
    defs = schema.get("$defs", {})
    strip = (*ANNOTATIONS, *drop)

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: walk(sub) for name, sub in value.items()}  # field names stay
            elif key not in strip:
                out[key] = walk(value)
        any_of = out.get("anyOf")
        if closed and isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
            other = next(x for x in any_of if x != {"type": "null"})
            out.pop("anyOf")
            out = {**other, **out}
        return out

    result: dict[str, Any] = walk(schema)
    if closed and result.get("type") == "object":
        result.setdefault("additionalProperties", False)
    return result


def explain(exc: ValidationError, root: str = "arguments") -> str:
    """A pydantic error in one line: `where: what` for the first few problems (no doc URLs)."""
    parts = []
    for err in exc.errors()[:6]:
        where = ".".join(str(x) for x in err["loc"]) or root
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
