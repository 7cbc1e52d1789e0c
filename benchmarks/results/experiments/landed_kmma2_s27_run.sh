#!/bin/bash
# Session 27, prepared for the next session: main (gpu/s27/base = 86e1e31's cuda.py and spark_walk.cu, `git show
# 86e1e31:sparkv/kernels/decode_attn/<file>`) against the landed tree (KEPT_MMA 1 and 2, cuda.kept_mma) and session 26's
# v4 (gpu/s27/v4: `SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_g4_s26.sh` on 86e1e31's tree builds
# it at /tmp/s26k/v4) in one run, over every branch of the rule (LOW_SHAPES=landed, its 9 check cases). In session 27
# this call (then with 43 check cases) timed out in its checks after 330 s; the short run (6 cells, main and the
# tree) measured the landed build instead. Run from the repository root on the device with carry ["gpu"].
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/s27/landed && cp sparkv/kernels/decode_attn/cuda.py sparkv/kernels/decode_attn/spark_walk.cu /tmp/s27/landed/
date -u
LOW_SHAPES=landed timeout 540 python benchmarks/results/experiments/kept_mma_low_ab_s27.py $OUT/kept_mma_landed_ab_s27_h200.json main:gpu/s27/base landed:/tmp/s27/landed v4:gpu/s27/v4 2>&1 | grep -v "^check" | tail -18
date -u
