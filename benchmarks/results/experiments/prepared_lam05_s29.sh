#!/usr/bin/env bash
# Session 29: the folders of lam05_ab_s29.py (main's kernel files, and those with walk_low_s24.patch and
# nomath_s29.patch), then the A/B. Run the first part on a checkout with git (SETUP_ONLY=1), the rest where the GPU is:
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_lam05_s29.sh      # CPU: makes gpu/s29/{main,low,nomath}
#   bash benchmarks/results/experiments/prepared_lam05_s29.sh OUT.json          # GPU (carry gpu/): lam05_ab_s29.py
#   bash benchmarks/results/experiments/prepared_lam05_s29.sh bound OUT_DIR     # GPU: lam05_bound_s29.py, stream
#   bash benchmarks/results/experiments/prepared_lam05_s29.sh occupancy OUT.json # GPU: its second run (w5x2, w8x1)
#   bash benchmarks/results/experiments/prepared_lam05_s29.sh recfirst OUT.json  # GPU: rec_first_ab_s29.py
#   bash benchmarks/results/experiments/prepared_lam05_s29.sh interleave OUT.json # GPU: the same with rec1, rec3
#   bash benchmarks/results/experiments/prepared_lam05_s29.sh rule OUT.json     # GPU: rec_rule_ab_s29.py
set -euo pipefail
X=benchmarks/results/experiments
if [[ "${SETUP_ONLY:-0}" == 1 ]]; then
  rm -rf gpu/s29 && mkdir -p gpu/s29
  for v in main low nomath w5 rec1 rec2 rec3; do
    mkdir -p gpu/s29/$v && cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} gpu/s29/$v/
  done
  (cd gpu/s29/low && patch -s --no-backup-if-mismatch -p4 < ../../../$X/walk_low_s24.patch)
  (cd gpu/s29/nomath && patch -s --no-backup-if-mismatch -p4 < ../../../$X/nomath_s29.patch)
  sed -i 's/if p\["warps"\] not in (1, 2, 4, 8):/if p["warps"] not in (1, 2, 4, 5, 8):/' gpu/s29/w5/cuda.py
  grep -q '(1, 2, 4, 5, 8)' gpu/s29/w5/cuda.py
  (cd gpu/s29/rec1 && patch -s --no-backup-if-mismatch -p4 < ../../../$X/rec_first_s29.patch)
  (cd gpu/s29/rec2 && patch -s --no-backup-if-mismatch -p4 < ../../../$X/rec_first_s29.patch)
  sed -i 's/^#define REC_FIRST 1$/#define REC_FIRST 2/' gpu/s29/rec2/spark_walk.cu
  grep -q '^#define REC_FIRST 2$' gpu/s29/rec2/spark_walk.cu
  (cd gpu/s29/rec3 && patch -s --no-backup-if-mismatch -p4 < ../../../$X/rec_interleave_s29.patch)
  exit 0
fi
if [[ "${1:-}" == bound ]]; then  # bound OUT_DIR: the decomposition and the stream of the same bytes
  PYTHONPATH=. python $X/lam05_bound_s29.py "$2/lam05_bound_s29_h200.json" main:gpu/s29/main nomath:gpu/s29/nomath
  PYTHONPATH=. python benchmarks/stream_ceiling.py --out "$2/stream_ceiling_h200_s29.json"
  exit 0
fi
if [[ "${1:-}" == recfirst ]]; then  # recfirst OUT.json: rec_first_ab_s29.py
  PYTHONPATH=. python $X/rec_first_ab_s29.py "$2" main:gpu/s29/main rec1:gpu/s29/rec1 rec2:gpu/s29/rec2
  exit 0
fi
if [[ "${1:-}" == interleave ]]; then  # interleave OUT.json: rec_first_ab_s29.py with main, rec1, rec3
  PYTHONPATH=. python $X/rec_first_ab_s29.py "$2" main:gpu/s29/main rec1:gpu/s29/rec1 rec3:gpu/s29/rec3
  exit 0
fi
if [[ "${1:-}" == rule ]]; then  # rule OUT.json: rec_rule_ab_s29.py, main against rec3 over key ratios and heads
  PYTHONPATH=. python $X/rec_rule_ab_s29.py "$2" main:gpu/s29/main rec3:gpu/s29/rec3
  exit 0
fi
if [[ "${1:-}" == occupancy ]]; then  # occupancy OUT.json: the second run of lam05_ab_s29.py
  PYTHONPATH=. python $X/lam05_ab_s29.py "$2" main:gpu/s29/main w5:gpu/s29/w5
  exit 0
fi
PYTHONPATH=. python $X/lam05_ab_s29.py "$1" main:gpu/s29/main low:gpu/s29/low nomath:gpu/s29/nomath
