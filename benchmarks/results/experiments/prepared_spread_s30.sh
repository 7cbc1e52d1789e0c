#!/usr/bin/env bash
# Session 30: where REC_SPREAD's 32 recovery k-steps go in the walk's 32 steps, after `rsel` (one bit-select fewer,
# 0.97x) showed the step following ptxas's placement of those MMAs (the tree's land at 64-91 % of the walk's SASS, 26 of
# 32 inside it): `spread_h1_s30.patch` all in the walk's first half (SASS: 30 inside, at 3-61 %), `spread_q3_s30.patch`
# in its first three quarters, `spread_h2_s30.patch` in its second half; against the tree at the targets' cells
# (checks first, bit-equal expected). `second`: the step's k-steps after its walk entries (`spread_recend_s30.patch`),
# that over the first half (`spread_h1end_s30.patch`), and two k-steps on every even step (`spread_alt_s30.patch`).
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_spread_s30.sh   # CPU, on a checkout with git
#   bash benchmarks/results/experiments/prepared_spread_s30.sh OUT.json [second]  # GPU (carry gpu/)
set -euo pipefail
X=benchmarks/results/experiments
if [[ "${SETUP_ONLY:-0}" == 1 ]]; then
  for v in head h1 q3 h2 recend h1end alt; do
    rm -rf gpu/s30/$v && mkdir -p gpu/s30/$v && cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} gpu/s30/$v/
  done
  for v in h1 q3 h2 recend h1end alt; do (cd gpu/s30/$v && patch -s --no-backup-if-mismatch -p4 < ../../../$X/spread_${v}_s30.patch); done
  exit 0
fi
if [[ "${2:-}" == second ]]; then
  PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s30/head recend:gpu/s30/recend h1end:gpu/s30/h1end alt:gpu/s30/alt
else
  PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s30/head h1:gpu/s30/h1 q3:gpu/s30/q3 h2:gpu/s30/h2
fi
