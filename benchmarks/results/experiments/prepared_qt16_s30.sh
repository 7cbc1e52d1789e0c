#!/usr/bin/env bash
# Session 30: the walk's q table in the model's 16-bit dtype (`qt16_s30.patch`, QT16: 8-byte gathers, half the walk's
# shared-memory wavefronts, four conversions an entry) against the tree at the targets' cells (checked first), then
# timing probes beside the tree (unchecked, wrong scores): `noq_s30.patch` (the walk without its q gather) and
# `nomath_s30.patch` (session 29's bound, no SparK math, on the REC_SPREAD tree), split kernels alone and whole steps.
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_qt16_s30.sh   # CPU, on a checkout with git
#   bash benchmarks/results/experiments/prepared_qt16_s30.sh OUT_DIR        # GPU (carry gpu/)
set -euo pipefail
X=benchmarks/results/experiments
source $X/variant_folder.sh
if [[ "${SETUP_ONLY:-0}" == 1 ]]; then
  variant_folder gpu/s30/head
  for v in qt16 noq nomath; do variant_folder gpu/s30/$v $X/${v}_s30.patch; done
  exit 0
fi
mkdir -p "$1"
PYTHONPATH=. python $X/targets_ab_s29.py "$1/qt16_ab_s30_h200.json" head:gpu/s30/head qt16:gpu/s30/qt16
PYTHONPATH=. python $X/lam05_bound_s29.py "$1/walk_probes_s30_h200.json" main:gpu/s30/head noq:gpu/s30/noq \
  nomath:gpu/s30/nomath
