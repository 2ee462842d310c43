"""The sweep commands (``smto sweep run|work|status``)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds the sweep subcommands to the ``smto`` parser."""
