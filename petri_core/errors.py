"""Domain errors: every rejection says what is wrong and what to do instead."""

from __future__ import annotations


class PetriError(Exception):
    """Base class for every error Petri reports to a person or an agent."""


class Rejected(PetriError):
    """A command that the workflow refuses; nothing was changed.

    `problem` says what is wrong, `fix` what the caller may do instead. The MCP
    server prefixes the message with ``rejected:``; the CLI prints ``Error: …``.
    """

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}")


class NotFound(Rejected):
    """A named run, cell, task or source does not exist."""


class DishError(PetriError):
    """The dish (the SQLite workspace) cannot be opened or written."""
