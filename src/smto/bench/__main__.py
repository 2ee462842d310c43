"""``python -m smto.bench`` runs the step benchmark (same options as ``smto bench step``)."""

import sys

from smto.cli import main

sys.exit(main(["bench", "step", *sys.argv[1:]]))
