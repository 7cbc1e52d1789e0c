#!/bin/bash
# Session 25, prepared and not run (device time spent): one device call for the next session, from the kernel
# timeline's finding that the first V tiles land 4-6 µs after a 3-4 µs set-up (BENCHMARKS.md "Session 25" item 9).
# It builds three folders from the tree's kernel files: base (as is), ev (early_v_ev_s25.patch: the first tile's V
# issued with its small arrays at entry, u's set-up buffer moved into the warps' kept-score buffers) and evq
# (early_v_evq_s25.patch: the same, with q's and u's loads issued before the first tile's copies), then runs
# walk_low_ab_s24.py on them: bit-equality on 28 cases first (pages and arrays, bf16 / fp16, D = 64-256, 2-8 query
# heads a KV head, other launches), then whole steps at 13 cells. Run from the repository root on the device:
#   bash benchmarks/results/experiments/prepared_early_v_s25.sh        # JSON under $OUT
# SETUP_ONLY=1 builds the folders and stops (no GPU needed; checked on the CPU machine, whose NVRTC built both
# variants for sm_90 with no stack frame).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
K=sparkv/kernels/decode_attn
X=benchmarks/results/experiments
rm -rf /tmp/s25ev && mkdir -p /tmp/s25ev/base
cp $K/cuda.py $K/spark_walk.cu /tmp/s25ev/base/
for v in ev evq; do
  mkdir -p /tmp/s25ev/$v && cp $K/cuda.py $K/spark_walk.cu /tmp/s25ev/$v/
  (cd /tmp/s25ev/$v && patch -p4 -s < "$OLDPWD/$X/early_v_${v}_s25.patch") || { echo "early_v_${v}_s25.patch does not apply"; exit 1; }
done
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
timeout 500 python $X/walk_low_ab_s24.py $OUT/early_v_ab_s25_h200.json main:/tmp/s25ev/base ev:/tmp/s25ev/ev \
  evq:/tmp/s25ev/evq 2>&1 | grep -v "^check" | tail -16
date -u
