"""Petri: a micro-orchestrator for agentic research."""

__version__ = "0.1.0"
