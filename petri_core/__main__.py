"""`python -m petri_core` runs the CLI."""

from .cli import main

main()
