# Exact script of the session-11 device call (run at 71c4ed9 from the repository root; $OUT is the device output folder).
# Session 11 call B: V-only unpadded (no_math=6) vs padded (4) vs warp-tile stream; ncu memory tables of each.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
SPARKV_AUTOTUNE=0 timeout 200 python3 benchmarks/load_pipeline_ab.py --out $OUT/load_pipeline_ab_s11_pad.json 2>&1 | grep -v Warning
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section MemoryWorkloadAnalysis_Chart"
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
for m in 4 6; do
  timeout 120 ncu --clock-control none -k regex:spark_walk -s 2 -c 1 $SEC -o /tmp/nm$m python3 /tmp/one.py $m > /tmp/ncu_nm$m.log 2>&1
  ncu -i /tmp/nm$m.ncu-rep --page details > /tmp/nm${m}_details.txt 2>&1
done
timeout 120 ncu --clock-control none -k regex:stream_warp_tiles -s 2 -c 1 $SEC -o /tmp/wt python3 /tmp/wt.py > /tmp/ncu_wt.log 2>&1
ncu -i /tmp/wt.ncu-rep --page details > /tmp/wt_details.txt 2>&1
for f in nm4 nm6 wt; do echo "=========== $f"; grep -v "^ *-\|^ *$" /tmp/${f}_details.txt; done > $OUT/ncu_details.txt
grep -h -E "^ +(Duration|DRAM Throughput|L2 Hit Rate|Mem Busy|L2 Cache Throughput)" /tmp/nm4_details.txt /tmp/nm6_details.txt /tmp/wt_details.txt
