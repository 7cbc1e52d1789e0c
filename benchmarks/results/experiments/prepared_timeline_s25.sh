#!/bin/bash
# Session 25: prepared, then run at 09:46 UTC (timeline_s25_h200.json, BENCHMARKS.md "Session 25" item 9): one device call. It builds the timeline
# variant's folder from the tree's kernel files and timeline_s25.patch, then runs timeline_s25.py (bit-equal check
# against main, the marks' cost, five eager launches per target cell). Run from the repository root on the device:
#   bash benchmarks/results/experiments/prepared_timeline_s25.sh        # JSON under $OUT
# SETUP_ONLY=1 builds the folder and stops (no GPU needed; checked on the CPU machine).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
K=sparkv/kernels/decode_attn
X=benchmarks/results/experiments
rm -rf /tmp/s25tl && mkdir -p /tmp/s25tl
cp $K/cuda.py $K/spark_walk.cu /tmp/s25tl/
(cd /tmp/s25tl && patch -p4 -s < "$OLDPWD/$X/timeline_s25.patch") || { echo "timeline_s25.patch does not apply"; exit 1; }
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
timeout 300 python $X/timeline_s25.py $OUT/timeline_s25_h200.json /tmp/s25tl 2>&1 | tail -40
date -u
