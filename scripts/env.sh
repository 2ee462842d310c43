#!/usr/bin/env bash
# Creates or updates the project's virtual environment (.venv) with pinned dependencies.
# Usage: scripts/env.sh EXTRAS   (e.g. "test" or "dev"); prints nothing when up to date.
# SMTO_PYTHON picks the interpreter (default python3); SMTO_VENV the folder (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
venv="${SMTO_VENV:-.venv}"
python="${SMTO_PYTHON:-python3}"
stamp="$venv/.smto-env-stamp"
want="$extras $(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up $venv (extras: $extras) ..." >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# torch first and alone, pinned: an unpinned torch pulls gigabytes of CUDA packages.
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -c requirements/constraints.txt -e ".[$extras]"
# LibMTL (the step benchmark's LibMTL peers, tested with the test extra) without its declared
# torchvision: the weightings need only torch and numpy, and torchvision's PyPI wheels do not
# load against the CPU torch (smto.bench.libmtl_peers).
if [[ "$extras" == *test* || "$extras" == *dev* ]]; then
  "${pip[@]}" install --no-deps -c requirements/constraints.txt LibMTL
fi
echo "$want" > "$stamp"
