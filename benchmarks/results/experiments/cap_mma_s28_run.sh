#!/bin/bash
# Session 28: on the device, from the repository root, with carry ["gpu"] (gpu/s28/nocap and gpu/s28/cand built on the
# CPU machine: see cap_mma_ab_s28.py): the register cap with KEPT_MMA, and QA_SMEM at D = 128, against the tree.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/s28/main && cp sparkv/kernels/decode_attn/cuda.py sparkv/kernels/decode_attn/spark_walk.cu /tmp/s28/main/
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
timeout 570 python benchmarks/results/experiments/cap_mma_ab_s28.py $OUT/cap_mma_ab_s28_h200.json main:/tmp/s28/main \
  nocap:gpu/s28/nocap cand:gpu/s28/cand 2>&1 | grep -v "^check" | tail -30
date -u
