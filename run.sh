#!/usr/bin/env bash
# The main job: sets up .venv if needed, then a short Multi-MNIST CL_RR comparison of four
# methods (3 epochs each) that prints their test metrics and mean task weights. Extra
# arguments go to `smto compare` (e.g. --epochs 10 --methods unit_scal cagrad).
# MNIST comes from SMTO_DATA (or --data-dir); without either, this workplace's copy in
# ../shared/data if present, else it is downloaded to the user cache.
set -euo pipefail
cd "$(dirname "$0")"
scripts/env.sh dev
if [ -z "${SMTO_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
  export SMTO_DATA="$(cd ../shared/data && pwd)"
fi
exec .venv/bin/smto compare --problem multi_mnist --tasks CL_RR \
  --methods unit_scal imtl nash_mtl famo --epochs 3 --out runs/main-job "$@"
