# Exact script of session-15 call C (run 2026-11-29 20:23-20:24 UTC on a one-H200 machine, at e9aa9b2 on branch exp/warp-specialized, from the repository root; $OUT is the device output folder). Four of the six details files came back (the call returned at most eight files): s15_*_details.txt; s15_ncu_summary.md has the printed metrics of all six.
#!/bin/bash
# Session 15 call C: Nsight Compute of the split kernel (main's launch and producer=1) and cuDNN's dense decode at 128K·b1 and 32K·b8, λ = 0.8.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; date -u
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --section InstructionStats --section LaunchStats"
cat > /tmp/one.py <<'PY'
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.select_pack.fused import select_pack_triton
b, s, prod = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=1)
if prod < 0:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        for _ in range(3): torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
else:
    prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(128, 0.8)), v, lens)
    plan = cuda.SplitPlan(q, prefix, 128 ** -0.5, **({"producer": 1} if prod else {}))
    o, l = plan.partials()
    for _ in range(3): plan.launch(o, l)
torch.cuda.synchronize()
PY
for cfg in "1 131072 0" "1 131072 1" "8 32768 0" "8 32768 1" "1 131072 -1" "8 32768 -1"; do
  set -- $cfg; n=b$1_s$2_p$3; n=${n/-/m}
  if [ $3 -lt 0 ]; then K="-k regex:sdpa|cudnn|fmha|flash"; else K="-k regex:spark_walk"; fi
  timeout 150 ncu --clock-control none $K -s 2 -c 1 $SEC -o $OUT/$n python3 /tmp/one.py $1 $2 $3 > $OUT/ncu_$n.log 2>&1
  ncu -i $OUT/$n.ncu-rep --page details > $OUT/${n}_details.txt 2>&1
  echo "== $n"; grep -h -E "^ +(Function Name|Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|L2 Hit Rate|Achieved Occupancy|Issue Slots Busy|No Eligible|Registers Per|Warp Cycles Per Issued|Mem Busy|Max Bandwidth|Executed Ipc A|Mem Pipes Busy)" $OUT/${n}_details.txt | head -20
  date -u
done
