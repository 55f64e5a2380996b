"""Shared fixtures: every test gets its own dish, never the developer's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PETRI_HOME", str(tmp_path / "home" / ".petri"))
    monkeypatch.delenv("PETRI_FETCH_ALLOW_PRIVATE", raising=False)
