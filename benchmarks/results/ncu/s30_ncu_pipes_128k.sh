#!/bin/bash
# Session 30: what the λ = 0.5 split kernel is bound by at 128K·b1 (pages, default launch): Nsight Compute's issue
# slots, pipe utilisation, warp states and memory throughput for the tree's kernel at λ = 0.5 and 0.8 and for the
# timing bound without the SparK math (`nomath_s30.patch`, λ = 0.5). Run from the repository root on the device, after
# `SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_qt16_s30.sh` on a checkout with git (carry gpu/):
#   bash benchmarks/results/ncu/s30_ncu_pipes_128k.sh        # $OUT the device's output folder
# Writes s30_<name>_details.txt and s30_<name>_raw.csv.gz; prints the lines the summary in BENCHMARKS.md quotes. (It
# ran with the launch script inline; ncu_one_launch.py is that script, shared with s24_ncu_sass_stalls_128k.sh.)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; date -u
PYTHONPATH=benchmarks python -c "import common; print('code', common.code_digest()[:12])"
SEC="--section SpeedOfLight --section ComputeWorkloadAnalysis --section SchedulerStats --section WarpStateStats --section InstructionStats --section Occupancy --section MemoryWorkloadAnalysis"
MET="--metrics smsp__issue_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fmaheavy_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum"
for spec in "main:gpu/s30/head:0.5" "main:gpu/s30/head:0.8" "nomath:gpu/s30/nomath:0.5"; do
  IFS=: read name dir lam <<< "$spec"; n=${name}_l${lam/./}
  timeout 200 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $SEC $MET -o /tmp/s30_$n python3 benchmarks/results/ncu/ncu_one_launch.py $dir 1 131072 $lam > /tmp/ncu30_$n.log 2>&1
  grep plan /tmp/ncu30_$n.log; tail -1 /tmp/ncu30_$n.log
  ncu -i /tmp/s30_$n.ncu-rep --page details > $OUT/s30_${n}_details.txt 2>&1
  ncu -i /tmp/s30_$n.ncu-rep --page raw --csv > $OUT/s30_${n}_raw.csv 2>&1; gzip -9 $OUT/s30_${n}_raw.csv
  echo "== $n"; grep -E "^ +(Duration|Issue Slots Busy|Issued Ipc Active|No Eligible|Warp Cycles Per Issued|DRAM Throughput|Executed Instructions |Registers Per|Achieved Active Warps)" $OUT/s30_${n}_details.txt | sed 's/  */ /g'
  grep -E "pipe|issue_active|dram__throughput|inst_executed.sum" $OUT/s30_${n}_details.txt | sed 's/  */ /g' | head -12
done
date -u
