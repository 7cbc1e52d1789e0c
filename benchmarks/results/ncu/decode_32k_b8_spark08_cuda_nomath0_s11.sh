# Exact script of the session-11 device call (run at a70078c from the repository root; $OUT is the device output folder).
# Session 11 call A: math-only (no_math=5) vs loads-only vs kernel vs streams; ncu on V-only, warp-tile stream, math-only.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
SPARKV_AUTOTUNE=0 timeout 300 python3 benchmarks/load_pipeline_ab.py --out $OUT/load_pipeline_ab_s11.json 2>&1 | grep -v Warning
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats"
cat > /tmp/one.py <<'PY'
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.select_pack.fused import select_pack_triton
q, k, v, stat, lens = make_shape(8, 32, 8, 32768, 128, torch.bfloat16, seed=1)
prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(128, 0.8)), v, lens)
plan = cuda.SplitPlan(q, prefix, 128 ** -0.5, no_math=int(sys.argv[1]))
o, l = plan.partials()
for _ in range(3): plan.launch(o, l)
torch.cuda.synchronize()
PY
cat > /tmp/wt.py <<'PY'
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import torch, stream_ceiling
kern, threads, smem = stream_ceiling.build("warp tiles", 8192, 1, 16, 4, 1)
buf = torch.randint(0, 255, (8 * 8 * 32768 * 256,), dtype=torch.uint8, device="cuda")
sink = torch.zeros(1, dtype=torch.int32, device="cuda")
grid = 3 * torch.cuda.get_device_properties(0).multi_processor_count
for _ in range(3): stream_ceiling.run(kern, threads, smem, buf, 8192, grid, sink, zero=False)
torch.cuda.synchronize()
PY
for m in 0 2 5; do
  timeout 120 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $SEC -o $OUT/nm$m python3 /tmp/one.py $m > $OUT/ncu_nm$m.log 2>&1
done
timeout 120 ncu --clock-control none -k regex:stream_warp_tiles -s 2 -c 1 $SEC -o $OUT/warptiles python3 /tmp/wt.py > $OUT/ncu_wt.log 2>&1
for f in nm0 nm2 nm5 warptiles; do ncu -i $OUT/$f.ncu-rep --page details > $OUT/${f}_details.txt 2>&1; done
for f in nm0 nm2 nm5 warptiles; do echo "== $f"; grep -h -E "^ +(Duration|DRAM Throughput|Memory Throughput|L2 Hit Rate|L1/TEX Hit|Achieved Occupancy|Issue Slots Busy|No Eligible|Registers Per|One or More Eligible|Active Warps Per Scheduler|Eligible Warps Per|Warp Cycles Per Issued|Compute \(SM\) Throughput|Mem Busy|Max Bandwidth|Executed Ipc A)" $OUT/${f}_details.txt; done
