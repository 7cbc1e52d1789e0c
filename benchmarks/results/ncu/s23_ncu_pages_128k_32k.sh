#!/bin/bash
# Session 23: Nsight Compute of main's split kernel on pages (SparKPages, the cache's form on CUDA since session 19;
# the 200-register cap since session 20) at the target cells, its one-8-warp-block launch at 128K·b1, and cuDNN's
# dense decode at both shapes. Run from the repository root on the device as
# `bash benchmarks/results/ncu/s23_ncu_pages_128k_32k.sh`; $OUT the device's output folder.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; date -u; git log --oneline -1 2>/dev/null
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats"
cat > /tmp/one.py <<'PY'
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV, SparKPages
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.select_pack.fused import select_pack_triton
b, s, lam, variant = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=1)
if variant == "cudnn":
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        for _ in range(3): torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
else:
    pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens))
    plan = cuda.SplitPlan(q, pages, 128 ** -0.5, **(dict(warps=8, min_blocks=1) if variant == "w8x1" else {}))
    print("plan", plan.warps, plan.chunk, plan.splits, flush=True)
    o, l = plan.partials()
    for _ in range(3): plan.launch(o, l)
torch.cuda.synchronize()
PY
M="Function Name|Grid Size|Block Size|Duration|Elapsed Cycles|SM Active Cycles|SM Frequency|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|No Eligible|Registers Per|Warp Cycles Per Issued|Mem Busy|Max Bandwidth|Mem Pipes Busy"
for cfg in "1 131072 0.8 default" "1 131072 0.8 w8x1" "1 131072 0.8 cudnn" "8 32768 0.8 default" "8 32768 0.8 cudnn" "1 131072 0.5 default" "1 131072 0.5 w8x1" "8 32768 0.5 default"; do
  set -- $cfg; n=b$1_s$2_l${3/./}_$4
  if [ $4 = cudnn ]; then K="-k regex:sdpa|cudnn|fmha|flash"; else K="-k regex:spark_walk"; fi
  timeout 150 ncu --clock-control none $K -s 2 -c 1 $SEC -o /tmp/$n python3 /tmp/one.py $1 $2 $3 $4 > /tmp/ncu_$n.log 2>&1
  grep plan /tmp/ncu_$n.log
  ncu -i /tmp/$n.ncu-rep --page details > /tmp/${n}_details.txt 2>&1
  { echo "===== $n"; cat /tmp/${n}_details.txt; } >> $OUT/s23_ncu_details.txt
  echo "== $n"; grep -h -E "^ +($M)" /tmp/${n}_details.txt | head -24
done
date -u
