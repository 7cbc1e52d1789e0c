#!/bin/bash
# Session 26: why the first TAIL build (t8) ran 0.87x at 128K·b1, λ = 0.8: Nsight Compute of main's split kernel and
# t8's (third launch, no clock control), the sections below and then per-instruction stall samples (SourceCounters).
# Stored: s26_tail_{base,t8}_details.txt, _raw.csv.gz, _source.csv.gz (10:35-10:36 UTC). That t8 build converted each
# tile's scale next to its load and merged with an exp2 per output and slot; tail_s26.patch is the build after both
# fixes, which this script now profiles (folders from `SETUP_ONLY=1 bash
# benchmarks/results/experiments/tail_s26_runs.sh`). Run from the repository root on the device; $OUT the output folder.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
SETUP_ONLY=1 bash benchmarks/results/experiments/tail_s26_runs.sh || exit 1
SEC="--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section InstructionStats --section LaunchStats --section MemoryWorkloadAnalysis"
cat > /tmp/one26.py <<'PY'
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
print("plan", plan.warps, plan.chunk, plan.splits, plan.smem, plan.defines.get("TAIL", 0), flush=True)
o, l = plan.partials()
for _ in range(3): plan.launch(o, l)
torch.cuda.synchronize()
PY
M="Duration|Elapsed Cycles|SM Frequency|DRAM Throughput|Issue Slots Busy|No Eligible|Registers Per|Warp Cycles Per Issued|Executed Instructions|Executed Ipc|Shared Memory Configuration Size|Achieved Active Warps"
for n in base t8; do
  timeout 150 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $SEC -o /tmp/s26_$n python3 /tmp/one26.py /tmp/s26/$n
  ncu -i /tmp/s26_$n.ncu-rep --page details > $OUT/s26_tail_${n}_details.txt 2>&1
  ncu -i /tmp/s26_$n.ncu-rep --page raw --csv > /tmp/s26_${n}_raw.csv 2>&1 && gzip -c /tmp/s26_${n}_raw.csv > $OUT/s26_tail_${n}_raw.csv.gz
  echo "== $n"; grep -h -E "^ +($M)" $OUT/s26_tail_${n}_details.txt | head -20
  timeout 200 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 --section SourceCounters --section WarpStateStats \
    --import-source no -o /tmp/s26src_$n python3 /tmp/one26.py /tmp/s26/$n
  ncu -i /tmp/s26src_$n.ncu-rep --page source --csv --print-source sass | gzip -c > $OUT/s26_tail_${n}_source.csv.gz
done
date -u
