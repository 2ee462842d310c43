#!/usr/bin/env bash
# The main job, a miniature of the study: sets up .venv if needed, then on Multi-MNIST CL_RR
# trains the single-task references and five methods (3 seeds, 3 epochs on 5,000 images; a
# few minutes on a CPU) as a resumable sweep, and reports the per-task gains, Delta_m, mean
# rank and statistics with figures. Extra arguments go to `smto sweep run` (e.g. --root DIR).
# MNIST comes from SMTO_DATA (or --data-dir); without either, this workplace's copy in
# ../shared/data if present, else it is downloaded to the user cache.
set -euo pipefail
cd "$(dirname "$0")"
scripts/env.sh dev
if [ -z "${SMTO_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
  export SMTO_DATA="$(cd ../shared/data && pwd)"
fi
root="runs/main-job"
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = "--root" ]; then next=$((i + 1)); root="${!next}"; fi
done
.venv/bin/smto sweep run sweeps/main-job.toml "$@"
.venv/bin/smto report "$root" --problem multi_mnist --tasks CL_RR --out "$root/report"
cat <<TEXT

These are 3 epochs on 5,000 of the 50,000 training images, 3 seeds: a miniature that shows
the pipeline, not the study's numbers. The study's protocol (100 epochs, the full grid,
5 + 5 seeds) is: .venv/bin/smto sweep run sweeps/multi_mnist-CL_RR.toml
TEXT
