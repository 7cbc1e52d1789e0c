#!/usr/bin/env bash
# Session 30: where REC_SPREAD's 32 recovery k-steps go in the walk's 32 steps, after `rsel` (one bit-select fewer,
# 0.97x) showed the step following ptxas's placement of those MMAs (the tree's land at 64-99 % of the walk's SASS, 26 of
# 48 HMMAs inside it): `spread_h1_s30.patch` all in the walk's first half (SASS: 30 inside, at 3-63 %), `spread_q3_s30.patch`
# in its first three quarters, `spread_h2_s30.patch` in its second half; against the tree at the targets' cells
# (checks first, bit-equal expected). `second`: the step's k-steps after its walk entries (`spread_recend_s30.patch`),
# that over the first half (`spread_h1end_s30.patch`), and two k-steps on every even step (`spread_alt_s30.patch`).
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_spread_s30.sh   # CPU, on a checkout with git
#   bash benchmarks/results/experiments/prepared_spread_s30.sh OUT.json [second]  # GPU (carry gpu/)
set -euo pipefail
X=benchmarks/results/experiments
source $X/variant_folder.sh
if [[ "${SETUP_ONLY:-0}" == 1 ]]; then
  variant_folder gpu/s30/head
  for v in h1 q3 h2 recend h1end alt; do variant_folder gpu/s30/$v $X/spread_${v}_s30.patch; done
  exit 0
fi
if [[ "${2:-}" == second ]]; then
  PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s30/head recend:gpu/s30/recend h1end:gpu/s30/h1end alt:gpu/s30/alt
else
  PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s30/head h1:gpu/s30/h1 q3:gpu/s30/q3 h2:gpu/s30/h2
fi
