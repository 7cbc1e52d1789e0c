#!/bin/bash
# Session 24, prepared and not run (no device time left): one device call for the next session. It builds variant
# folders from the tree's kernel files and this folder's patches, runs the GPU tiers on the tree (ff2cf2f's new test
# included), then the A/B of the three prepared variants against the tree (bit-equal checks first).
# Run from the repository root on the device (carry nothing: the folders are made here); the three steps fit the
# 600 s a call (about 120 + 55 + 280 s; the A/B writes its JSON after every row):
#   bash benchmarks/results/experiments/prepared_ab_s24.sh          # JSON under $OUT
# SETUP_ONLY=1 builds the folders and stops (no GPU needed).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
K=sparkv/kernels/decode_attn
X=benchmarks/results/experiments
rm -rf /tmp/s24v && mkdir -p /tmp/s24v/base
cp $K/cuda.py $K/spark_walk.cu /tmp/s24v/base/
for v in scale_defer scale_smem v_stages; do
  rm -rf /tmp/s24v/tree && mkdir -p /tmp/s24v/tree/$K && cp $K/cuda.py $K/spark_walk.cu /tmp/s24v/tree/$K/
  (cd /tmp/s24v/tree && git apply "$OLDPWD/$X/${v}_s24.patch") || { echo "patch $v does not apply"; exit 1; }
  mkdir -p /tmp/s24v/$v && cp /tmp/s24v/tree/$K/cuda.py /tmp/s24v/tree/$K/spark_walk.cu /tmp/s24v/$v/
done
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0  # the folders only (checked on the CPU machine)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
SPARKV_AUTOTUNE=0 timeout 200 python -m pytest -q -m gpu -n 4 tests/kernels/test_decode_attn_cuda.py \
  tests/kernels/test_decode_attn.py 2>&1 | tail -3
timeout 90 python -m pytest -q -m gpu -n 4 tests --deselect tests/kernels/test_decode_attn_cuda.py \
  --deselect tests/kernels/test_decode_attn.py 2>&1 | tail -2
timeout 290 python $X/walk_low_ab_s24.py $OUT/prepared_ab_s24.json main:/tmp/s24v/base defer:/tmp/s24v/scale_defer \
  smem:/tmp/s24v/scale_smem vstages:/tmp/s24v/v_stages 2>&1 | grep -v "^check" | tail -16
date -u
