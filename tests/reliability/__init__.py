"""The reliability suite (issue #7): crashes, fuzzing at the MCP door, leases under time, disk and
locks, hostile content. Each trial count has a bounded size (CI, `scripts/check`) and a full size
(`PETRI_RELIABILITY_FULL=1 pytest -m slow tests/reliability`); see docs/reliability.md.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

FULL = os.environ.get("PETRI_RELIABILITY_FULL") == "1"


def sizes(bounded: int, full: int) -> list[Any]:
    """Parameters for a trial count: `bounded` always runs; `full` is `slow` and needs FULL."""
    return [
        pytest.param(bounded, id=f"bounded-{bounded}"),
        pytest.param(
            full,
            id=f"full-{full}",
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(not FULL, reason="full size: set PETRI_RELIABILITY_FULL=1"),
            ],
        ),
    ]
