# Exact script of a session-18 device call (2026-11-29 23:52-23:54 UTC, one H200, driver 580.159.04, torch 2.11.0+cu130), run from the repository root on branch exp/tile-records-v (benchmarks/results/experiments/tile_records_s18.patch on e9b8411) as `bash gpu/ncu_records.sh`; $OUT the device's output folder. Its six details pages are s18_b1_s131072_r{0,1,2}_l{08,05}_details.txt beside this file.
#!/bin/bash
# Session 18: Nsight Compute of the split kernel with main's layout (records=0), records with V (1) and without (2),
# 128K·b1, λ = 0.8 and 0.5 (branch exp/tile-records-v).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; date -u
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats"
cat > /tmp/one.py <<'PY'
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.select_pack.fused import select_pack_triton
b, s, rec, lam = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=1)
prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens)
plan = cuda.SplitPlan(q, prefix, 128 ** -0.5, records=rec)
o, l = plan.partials()
for _ in range(3): plan.launch(o, l)
torch.cuda.synchronize()
PY
for cfg in "1 131072 0 0.8" "1 131072 1 0.8" "1 131072 2 0.8" "1 131072 0 0.5" "1 131072 1 0.5" "1 131072 2 0.5"; do
  set -- $cfg; n=b$1_s$2_r$3_l${4/./}
  timeout 150 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $SEC -o /tmp/$n python3 /tmp/one.py $1 $2 $3 $4 > /tmp/ncu_$n.log 2>&1
  ncu -i /tmp/$n.ncu-rep --page details > $OUT/s18_${n}_details.txt 2>&1
  echo "== $n"; grep -h -E "^ +(Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|L2 Hit Rate|Achieved Occupancy|Issue Slots Busy|No Eligible|Registers Per|Warp Cycles Per Issued|Mem Busy|Max Bandwidth|Mem Pipes Busy|Stall Long Scoreboard|SM Frequency|DRAM Frequency)" $OUT/s18_${n}_details.txt | head -20
done
date -u
