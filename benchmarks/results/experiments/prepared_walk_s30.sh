#!/usr/bin/env bash
# Session 30: two cheaper walk steps against the tree at the targets' cells (checks first, bit-equal expected):
# `imadq_s30.patch` (IMADQ: the walk's word queue moved on by multiply-adds of an all-ones-or-zero mask, FMA pipe,
# instead of SELs, ALU pipe; where a walk reaches 2-3 words) and `revbot_s30.patch` (REVBOT: the bottom walk over
# bit-reversed words, one FLO a step and no BREV); then (second call) IMADQ with its sign error fixed and
# `imadq2_s30.patch` (IMADQ on REVBOT, the mask as (int)(left - 1) >> 31 instead of a compare and a select).
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_walk_s30.sh   # CPU, on a checkout with git
#   bash benchmarks/results/experiments/prepared_walk_s30.sh OUT.json [second]  # GPU (carry gpu/)
set -euo pipefail
X=benchmarks/results/experiments
source $X/variant_folder.sh
if [[ "${SETUP_ONLY:-0}" == 1 ]]; then
  variant_folder gpu/s30/head
  for v in imadq revbot imadq2; do variant_folder gpu/s30/$v $X/${v}_s30.patch; done
  exit 0
fi
if [[ "${2:-}" == second ]]; then
  PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s30/head imadq:gpu/s30/imadq imadq2:gpu/s30/imadq2
else
  PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s30/head imadq:gpu/s30/imadq revbot:gpu/s30/revbot
fi
