#!/usr/bin/env bash
# Session 29, prepared; run in session 30 (16:00 UTC, pipe_early_ab_s30_h200.json: none kept): PIPE with the previous tile's P·V in the first quarter of the walk
# (`pipe_early_s29.patch`, PIPE_SPAN 0 = a quarter; `pipe_span1`: all pairs at the walk's second step) against the
# tree and session 29's PIPE (`pipe_s29.patch`, 0.92x at λ = 0.5: its P·V ran to the walk's last step, so the next V
# tile's copies went out a whole walk later than on main); and session 24's lowest-bit walk (`walk_low_s24.patch`) on
# the tree with REC_SPREAD (`low`). Checks first (bit-equal expected), then the targets' cells.
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_pipe_early_s29.sh   # CPU, on a checkout with git
#   bash benchmarks/results/experiments/prepared_pipe_early_s29.sh OUT.json      # GPU (carry gpu/)
set -euo pipefail
X=benchmarks/results/experiments
if [[ "${SETUP_ONLY:-0}" == 1 ]]; then
  rm -rf gpu/s29p && mkdir -p gpu/s29p
  for v in head pipe pipe_early pipe_span1 low; do
    mkdir -p gpu/s29p/$v && cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} gpu/s29p/$v/
  done
  (cd gpu/s29p/pipe && patch -s --no-backup-if-mismatch -p4 < ../../../$X/pipe_s29.patch)
  (cd gpu/s29p/pipe_early && patch -s --no-backup-if-mismatch -p4 < ../../../$X/pipe_early_s29.patch)
  (cd gpu/s29p/pipe_span1 && patch -s --no-backup-if-mismatch -p4 < ../../../$X/pipe_early_s29.patch)
  sed -i 's/^#define PIPE_SPAN 0$/#define PIPE_SPAN 1/' gpu/s29p/pipe_span1/spark_walk.cu
  grep -q '^#define PIPE_SPAN 1$' gpu/s29p/pipe_span1/spark_walk.cu
  (cd gpu/s29p/low && patch -s --no-backup-if-mismatch -p4 < ../../../$X/walk_low_s24.patch)
  exit 0
fi
PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s29p/head pipe:gpu/s29p/pipe pipe_early:gpu/s29p/pipe_early \
  pipe_span1:gpu/s29p/pipe_span1 low:gpu/s29p/low
