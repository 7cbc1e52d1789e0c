#!/bin/bash
# Session 27, prepared for the next session: main before KEPT_MMA 2 (gpu/s27/base, 86e1e31's kernel files) against the
# landed tree (KEPT_MMA 1 and 2, cuda.kept_mma; b8c8697's kernel files unless changed since) and session 26's v4
# (gpu/s27/v4) in one run, over every branch of the rule (LOW_SHAPES=landed, its 9 check cases): settles whether the
# landed build's schedule costs ~4 % against v4 at DK = 96 (BENCHMARKS.md "Session 27" item 3). In session 27 this call,
# then with 43 check cases, timed out in its checks after 330 s; the short run measured the landed build instead.
# Run in session 28 (13:14-13:17 UTC, one H200, kept_mma_landed_ab_s27_h200.json): the landed build's ~3 % at DK = 96
# was the 200-register cap, kept because NVRTC's cache hid the spill check's report (fixed in 0c1828f; BENCHMARKS.md
# "Session 28" item 2).
# First, on the CPU machine: bash benchmarks/results/experiments/landed_kmma2_s27_folders.sh (builds gpu/s27/*);
# then on the device, from the repository root, with carry ["gpu"]: bash benchmarks/results/experiments/landed_kmma2_s27_run.sh
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/s27/landed && cp sparkv/kernels/decode_attn/cuda.py sparkv/kernels/decode_attn/spark_walk.cu /tmp/s27/landed/
date -u
LOW_SHAPES=landed timeout 540 python benchmarks/results/experiments/kept_mma_low_ab_s27.py $OUT/kept_mma_landed_ab_s27_h200.json main:gpu/s27/base landed:/tmp/s27/landed v4:gpu/s27/v4 2>&1 | grep -v "^check" | tail -18
date -u
