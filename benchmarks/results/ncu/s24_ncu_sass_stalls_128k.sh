#!/bin/bash
# Session 24: where main's split kernel (pages, default launch) stalls, per SASS instruction: Nsight Compute's warp
# state sampling (SourceCounters) at 128K·b1 for λ = 0.5 and 0.8, exported per instruction. Run from the repository
# root on the device as `bash benchmarks/results/ncu/s24_ncu_sass_stalls_128k.sh`; $OUT the device's output folder.
# The summary (stall reasons overall and by opcode, and the instructions with excessive sectors or wavefronts) is
# made from the CSVs on any machine with
# `python benchmarks/results/ncu/s24_stalls_summary.py s24_b1_s131072_l05_sass.csv.gz s24_b1_s131072_l08_sass.csv.gz`.
# NCU_LAMBDAS (default "0.5 0.8") and NCU_PREFIX (default s24) pick other key ratios and output names: session 29
# ran `NCU_PREFIX=s29 NCU_LAMBDAS=0.5 bash benchmarks/results/ncu/s24_ncu_sass_stalls_128k.sh` (the tree with REC_SPREAD).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; date -u
PYTHONPATH=benchmarks python -c "import common; print('code', common.code_digest()[:12])"
for lam in ${NCU_LAMBDAS:-0.5 0.8}; do
  set -- 1 131072 $lam; n=b$1_s$2_l${3/./}
  timeout 240 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 --section WarpStateStats --section SourceCounters \
    --import-source no -o /tmp/$n python3 benchmarks/results/ncu/ncu_one_launch.py \
    sparkv/kernels/decode_attn $1 $2 $3 > /tmp/ncu_$n.log 2>&1
  grep plan /tmp/ncu_$n.log; tail -2 /tmp/ncu_$n.log
  ncu -i /tmp/$n.ncu-rep --page source --csv --print-source sass > $OUT/${NCU_PREFIX:-s24}_${n}_sass.csv 2>&1
  ncu -i /tmp/$n.ncu-rep --page details > $OUT/${NCU_PREFIX:-s24}_${n}_details.txt 2>&1
  gzip -9 $OUT/${NCU_PREFIX:-s24}_${n}_sass.csv
  grep -E "Warp Cycles Per Issued|Stall|No Eligible" $OUT/${NCU_PREFIX:-s24}_${n}_details.txt | head -30
done
date -u
