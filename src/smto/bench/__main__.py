"""``python -m smto.bench`` runs the step benchmark (same options as ``smto bench step``)."""

import sys

from smto.bench.cli import main

sys.exit(main(["step", *sys.argv[1:]]))
