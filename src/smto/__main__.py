"""``python -m smto``: the same command line as ``smto``."""

import sys

from smto.cli import main

sys.exit(main())
