#!/bin/bash
# Session 31: why the kept term on the tensor cores (KEPT_MMA 2) loses to the walk with 4 query heads a KV head at
# λ = 0.5 (session 27: 0.85x at DK = 64; session 26's s26_ncu_kmma.sh was prepared for this and never run). Nsight
# Compute of the tree's split kernel (the walk) and of the same tree with `cuda.kept_mma` forced to 2 at D = 128, at
# 128K·b1, λ = 0.5, pages, default launch (third launch, no clock control): issue, pipes, shared-memory wavefronts and
# bank conflicts, warp states, and per-instruction stall samples. Then the timing A/B of the two at the targets' cells.
# Set-up on a checkout (CPU): SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_s31.sh (the run of
# 2026-11-30 made the same folders by hand; its kmma2 differed only by a comment). Run from the repository root on the
# device (carry gpu/):
#   bash benchmarks/results/ncu/s31_ncu_kmma_g4.sh        # $OUT the device's output folder
# Summary of the stall samples anywhere: python benchmarks/results/ncu/s24_stalls_summary.py s31_*_sass.csv.gz
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; date -u
PYTHONPATH=benchmarks python -c "import common; print('code', common.code_digest()[:12])"
SEC="--section SpeedOfLight --section SchedulerStats --section WarpStateStats --section InstructionStats --section Occupancy --section MemoryWorkloadAnalysis --section SourceCounters"
MET="--metrics smsp__issue_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.avg.pct_of_peak_sustained_elapsed,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,smsp__inst_executed_op_shared_ld.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum"
for n in head kmma2; do
  timeout 240 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $SEC $MET --import-source no -o /tmp/s31_$n \
    python3 benchmarks/results/ncu/ncu_one_launch.py gpu/s31/$n 1 131072 0.5 > /tmp/ncu31_$n.log 2>&1
  grep plan /tmp/ncu31_$n.log; tail -1 /tmp/ncu31_$n.log
  ncu -i /tmp/s31_$n.ncu-rep --page details > $OUT/s31_${n}_l05_details.txt 2>&1
  ncu -i /tmp/s31_$n.ncu-rep --page source --csv --print-source sass > $OUT/s31_${n}_l05_sass.csv 2>&1
  gzip -9 $OUT/s31_${n}_l05_sass.csv
  echo "== $n"; grep -E "^ +(Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|DRAM Throughput|Executed Instructions |Registers Per|Achieved Active Warps)" $OUT/s31_${n}_l05_details.txt | sed 's/  */ /g'
  grep -E "pipe|issue_active|dram__throughput|inst_executed|bank_conflicts|wavefronts" $OUT/s31_${n}_l05_details.txt | sed 's/  */ /g' | head -14
done
python benchmarks/results/ncu/s24_stalls_summary.py $OUT/s31_head_l05_sass.csv.gz $OUT/s31_kmma2_l05_sass.csv.gz 2>&1 | grep -v "^ *[0-9,]* *[0-9,]* *LDG\|^ *[0-9,]* *[0-9,]* *@\|^ *[0-9,]* *[0-9,]* *STS" | head -50
date -u
PYTHONPATH=. python benchmarks/results/experiments/targets_ab_s29.py $OUT/kmma2_ab_s31_h200.json head:gpu/s31/head kmma2:gpu/s31/kmma2
date -u
