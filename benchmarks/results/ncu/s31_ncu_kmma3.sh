#!/bin/bash
# Session 31, second device call: KEPT_MMA 3 (kept_mma3_s31.patch: session 27's mode 2 with each quad's lanes on
# neighbouring nibbles and kept rows padded to an odd number of 16-byte chunks, so that the window reads of a k-step
# spread over the banks) against the tree at the targets' cells (checks, then three interleaved rounds), then Nsight
# Compute's shared-memory and issue counters of KEPT_MMA 3 at 128K·b1, λ = 0.5 (third launch, no clock control).
# Set-up: SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_s31.sh (carry gpu/). Run from the repository
# root on the device: bash benchmarks/results/ncu/s31_ncu_kmma3.sh      ($OUT the device's output folder)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
date -u
PYTHONPATH=. python benchmarks/results/experiments/targets_ab_s29.py $OUT/kmma3_ab_s31_h200.json head:gpu/s31/head kmma3:gpu/s31/kmma3
date -u
MET="--metrics smsp__issue_active.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.avg.pct_of_peak_sustained_elapsed,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,smsp__inst_executed_op_shared_ld.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum,gpu__time_duration.sum"
timeout 200 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $MET python3 benchmarks/results/ncu/ncu_one_launch.py gpu/s31/kmma3 1 131072 0.5 2>&1 | grep -E "plan|__|duration" | sed 's/  */ /g'
date -u
