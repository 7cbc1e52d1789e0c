#!/usr/bin/env bash
# Session 30: the recovery's B operand with one bit-select for both of a k-step's registers (`rsel_s30.patch`: b0 and
# b1 read disjoint bits of the same select, 5 instructions a k-step instead of 6; 1830 SASS instructions a tile against
# 1867 at D = 128, DK = 64) against the tree at the targets' cells (checks first, bit-equal expected); then the Nsight
# Compute launch script on the tree and on a variant folder, without Nsight (a smoke run at 8K·b1).
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_rsel_s30.sh   # CPU, on a checkout with git
#   bash benchmarks/results/experiments/prepared_rsel_s30.sh OUT.json       # GPU (carry gpu/)
set -euo pipefail
X=benchmarks/results/experiments
source $X/variant_folder.sh
if [[ "${SETUP_ONLY:-0}" == 1 ]]; then
  variant_folder gpu/s30/head
  variant_folder gpu/s30/rsel $X/rsel_s30.patch
  exit 0
fi
PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s30/head rsel:gpu/s30/rsel
python benchmarks/results/ncu/ncu_one_launch.py sparkv/kernels/decode_attn 1 8192 0.5
python benchmarks/results/ncu/ncu_one_launch.py gpu/s30/rsel 1 8192 0.8
