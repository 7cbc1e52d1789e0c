#!/bin/bash
# Session 26, prepared and not run: Nsight Compute of main's split kernel and of the kept term on the tensor cores with
# 4 query heads a KV head (prepared_kmma_g4_s26.sh's v2: A operand from shared memory, cap 200) at 128K·b1, λ = 0.5,
# Llama heads, pages (third launch, no clock control): the sections below, then per-instruction stall samples. Item 1
# of BENCHMARKS.md "Session 26" saw that path 9-23 % slower with 18 % fewer instructions; this says where it waits.
# Run from the repository root on the device: bash benchmarks/results/ncu/s26_ncu_kmma.sh ($OUT the output folder).
# Summary on any machine: python benchmarks/results/ncu/s24_stalls_summary.py s26_kmma_base_source.csv.gz
# s26_kmma_v2_source.csv.gz (it reads session 26's tail profiles the same way).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_g4_s26.sh || exit 1  # /tmp/s26k/{base,v1,v2,v3}
SEC="--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section InstructionStats --section LaunchStats --section MemoryWorkloadAnalysis"
cat > /tmp/one26k.py <<'PY'
import importlib.util, sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV, SparKPages
from sparkv.config import kept_channels
from sparkv.kernels.select_pack.fused import select_pack_triton
spec = importlib.util.spec_from_file_location("variant", sys.argv[1] + "/cuda.py")
cuda = importlib.util.module_from_spec(spec); spec.loader.exec_module(cuda)
q, k, v, stat, lens = make_shape(1, 32, 8, 131072, 128, torch.bfloat16, seed=1)
pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(128, 0.5)), v, lens))
plan = cuda.SplitPlan(q, pages, 128 ** -0.5)
print("plan", plan.warps, plan.chunk, plan.splits, plan.smem, plan.defines.get("KEPT_MMA", 0),
      plan.defines.get("MAXNREG", 0), flush=True)
o, l = plan.partials()
for _ in range(3): plan.launch(o, l)
torch.cuda.synchronize()
PY
M="Duration|Elapsed Cycles|SM Frequency|DRAM Throughput|Issue Slots Busy|No Eligible|Registers Per|Warp Cycles Per Issued|Executed Instructions|Executed Ipc|Shared Memory Configuration Size|Achieved Active Warps"
for n in base v2; do
  timeout 150 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $SEC -o /tmp/s26k_$n python3 /tmp/one26k.py /tmp/s26k/$n
  ncu -i /tmp/s26k_$n.ncu-rep --page details > $OUT/s26_kmma_${n}_details.txt 2>&1
  ncu -i /tmp/s26k_$n.ncu-rep --page raw --csv > /tmp/s26k_${n}_raw.csv 2>&1 && gzip -c /tmp/s26k_${n}_raw.csv > $OUT/s26_kmma_${n}_raw.csv.gz
  echo "== $n"; grep -h -E "^ +($M)" $OUT/s26_kmma_${n}_details.txt | head -20
  timeout 200 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 --section SourceCounters --section WarpStateStats \
    --import-source no -o /tmp/s26ksrc_$n python3 /tmp/one26k.py /tmp/s26k/$n
  ncu -i /tmp/s26ksrc_$n.ncu-rep --page source --csv --print-source sass | gzip -c > $OUT/s26_kmma_${n}_source.csv.gz
done
date -u
