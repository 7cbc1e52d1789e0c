"""Session 31: RS_SMEM (a tile's scales copied with its small arrays where the tensor cores take the kept term, landed
in spark_walk.cu) against the tree before it, on the rule's KEPT_MMA branches and two walk controls; then, for 64
query heads a KV head at DK = 64, whose larger stage makes the launcher take one 8-warp block instead of two 4-warp
blocks, the old kernel with that launch forced, to tell the scale's gain from the launch's.
Checks first (benchmarks/folder_ab.py: the fp32 reference and the first folder, twice each, ragged rows, pages and
arrays), then whole steps, three interleaved rounds.
Command (device; gpu/s31/head: the kernel files before RS_SMEM, gpu/s31/rsk: after):
  PYTHONPATH=. python benchmarks/results/experiments/rs_smem_ab_s31.py OUT.json head:gpu/s31/head rsk:gpu/s31/rsk
The folders: SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_s31.sh (a checkout with git, CPU).
"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us  # noqa: E402
from decode_attention import make_shape  # noqa: E402
from folder_ab import load_folders, run, whole_step  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

CASES = [(32, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {}),
         (32, 8, 128, 96, torch.bfloat16, {}), (32, 8, 128, 77, torch.float16, {}), (64, 8, 128, 64, torch.bfloat16, {}),
         (64, 8, 128, 52, torch.bfloat16, {}), (48, 8, 128, 64, torch.float16, {}), (16, 8, 256, 192, torch.bfloat16, {}),
         (32, 8, 128, 81, torch.bfloat16, {"seq": 1300})]
CELLS = [(32, 8, 128, 131072, 1, (0.25, 0.4, 0.5)), (32, 8, 128, 32768, 8, (0.25, 0.4, 0.5)),
         (64, 8, 128, 32768, 1, (0.5, 0.6)), (64, 8, 128, 131072, 1, (0.5,)), (16, 8, 256, 32768, 1, (0.25,))]


def launch_probe(out: Path, specs: list[str]) -> None:
    """64 query heads a KV head at DK = 64: each folder's default launch and the first folder with 8 warps x 1."""
    mods = load_folders(specs)
    base = next(iter(mods))
    rows = []
    for s in (32768, 131072):
        q, k, v, stat, lens = make_shape(1, 64, 8, s, 128, torch.bfloat16, seed=s + 129)
        prefix = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(128, 0.5)), v, lens))
        steps = {n: whole_step(m, q, prefix, 128 ** -0.5) for n, m in mods.items()}
        steps[f"{base}_w8x1"] = whole_step(mods[base], q, prefix, 128 ** -0.5, warps=8, min_blocks=1)
        times = {n: [] for n in steps}
        for st in steps.values():
            st()
        for _ in range(3):
            for n, st in steps.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append(dict(context=s, times=times, us=med))
        print(f"64/8 {s} b1 λ0.5: " + " ".join(f"{n} {x:7.1f} (x{med[base] / x:.3f})" for n, x in med.items()),
              flush=True)
    data = json.loads(out.read_text())
    out.write_text(json.dumps(dict(data, launch_probe=rows), indent=1))


if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
    launch_probe(Path(sys.argv[1]), sys.argv[2:])
