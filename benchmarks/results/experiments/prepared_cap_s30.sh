#!/usr/bin/env bash
# Session 30: the register cap as a schedule knob at λ = 0.5 (session 20 chose 200 over 255 for the schedule ptxas made
# of that source; item 3 of "Session 30" found equivalent sources 3-5 % apart): the tree's kernel with its default cap
# (cuda.DEFAULTS registers) at 208, 216, 224, 232 and 255 instead of 200, against the tree at the targets' cells
# (checks first, bit-equal expected). At D = 128, DK = 64 every cap compiles without a stack frame and uses it all
# (250 at 255; 2-core CPU machine, NVRTC 13.5.37).
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_cap_s30.sh   # CPU
#   bash benchmarks/results/experiments/prepared_cap_s30.sh OUT.json       # GPU (carry gpu/)
set -euo pipefail
X=benchmarks/results/experiments
source $X/variant_folder.sh
CAPS="208 216 224 232 255"
if [[ "${SETUP_ONLY:-0}" == 1 ]]; then
  variant_folder gpu/s30/head
  for c in $CAPS; do
    variant_folder gpu/s30/cap$c
    sed -i "s/^\(DEFAULTS = dict(.*\)registers=200)$/\1registers=$c)/" gpu/s30/cap$c/cuda.py
    grep -q "registers=$c)$" gpu/s30/cap$c/cuda.py
  done
  exit 0
fi
PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s30/head $(for c in $CAPS; do echo cap$c:gpu/s30/cap$c; done)
