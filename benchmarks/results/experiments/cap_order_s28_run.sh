#!/bin/bash
# Session 28: cap_order_s28.py on the device, from the repository root, with carry ["gpu"] (gpu/s27/base and v4 from
# landed_kmma2_s27_folders.sh).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/s27/landed && cp sparkv/kernels/decode_attn/cuda.py sparkv/kernels/decode_attn/spark_walk.cu /tmp/s27/landed/
date -u
timeout 400 python benchmarks/results/experiments/cap_order_s28.py $OUT/cap_order_s28_h200.json main:gpu/s27/base \
  landed:/tmp/s27/landed v4:gpu/s27/v4 2>&1 | grep -v "^check" | tail -20
date -u
