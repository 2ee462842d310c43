"""The evaluation commands (``smto report``, ``smto fixed-weights``)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds the evaluation subcommands to the ``smto`` parser."""
