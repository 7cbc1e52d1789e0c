#!/bin/bash
# Session 25: why a second V buffer a warp (v_stages_s24.patch: tile t + 1's V in flight during tile t's walk) made
# the step 0.86-0.91x at λ = 0.8 although V waits were 15 % of the samples: Nsight Compute of main's split kernel and
# that variant's at 128K·b1, λ = 0.8, Llama heads, pages (third launch, no clock control). Run from the repository
# root on the device: `bash benchmarks/results/ncu/s25_ncu_v_stages_128k.sh`; $OUT the output folder.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_ab_s24.sh || exit 1  # /tmp/s24v/{base,v_stages}
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats"
cat > /tmp/one25.py <<'PY'
import importlib.util, sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV, SparKPages
from sparkv.config import kept_channels
from sparkv.kernels.select_pack.fused import select_pack_triton
spec = importlib.util.spec_from_file_location("variant", sys.argv[1] + "/cuda.py")
cuda = importlib.util.module_from_spec(spec); spec.loader.exec_module(cuda)
q, k, v, stat, lens = make_shape(1, 32, 8, 131072, 128, torch.bfloat16, seed=1)
pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(128, 0.8)), v, lens))
plan = cuda.SplitPlan(q, pages, 128 ** -0.5)
print("plan", plan.warps, plan.chunk, plan.splits, plan.smem, plan.defines.get("V_STAGES", 1), flush=True)
o, l = plan.partials()
for _ in range(3): plan.launch(o, l)
torch.cuda.synchronize()
PY
M="Duration|Elapsed Cycles|SM Active Cycles|SM Frequency|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Achieved Occupancy|Issue Slots Busy|No Eligible|Registers Per|Warp Cycles Per Issued|Mem Busy|Max Bandwidth|L2 Hit Rate|Shared Memory Configuration Size|Dynamic Shared Memory Per Block|Memory Throughput"
for n in base v_stages; do
  timeout 150 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $SEC -o /tmp/s25_$n python3 /tmp/one25.py /tmp/s24v/$n > /tmp/ncu25_$n.log 2>&1
  grep plan /tmp/ncu25_$n.log
  ncu -i /tmp/s25_$n.ncu-rep --page details > $OUT/s25_${n}_details.txt 2>&1
  ncu -i /tmp/s25_$n.ncu-rep --page raw --csv > /tmp/s25_${n}_raw.csv 2>&1 && gzip -c /tmp/s25_${n}_raw.csv > $OUT/s25_${n}_raw.csv.gz
  echo "== $n"; grep -h -E "^ +($M)" $OUT/s25_${n}_details.txt | head -30
done
date -u
