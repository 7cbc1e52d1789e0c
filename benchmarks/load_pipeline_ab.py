"""Session-10 experiment: the CUDA split kernel's load pipeline alone against the real kernel.

``no_math=1`` (``NO_MATH`` in ``spark_walk.cu``, present only at the commit that added this script) keeps every
load, wait, buffer and the occupancy of the split kernel and replaces the walk, recovery, softmax and P·V by an XOR
of the landed buffers: its output is wrong, so nothing is checked; it times what the kernel's loads alone cost.
Split kernel only (no combine), Llama heads, L2 flushed by a read, CUDA-graph replays (``common.bench_us``); default
launch and 8-warp blocks with one stage (16 warps per multiprocessor at λ = 0.8).

    SPARKV_AUTOTUNE=0 PYTHONPATH=. python benchmarks/load_pipeline_ab.py
    # -> benchmarks/results/experiments/load_pipeline_ab_h200.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, bench_us, environment, write_json  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

SHAPES = [(32768, 8), (131072, 1), (131072, 8), (8192, 1)]  # (context, batch)
LAUNCHES = [{}, {"no_math": 1}, {"warps": 8, "stages": 1}, {"warps": 8, "stages": 1, "no_math": 1}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS / "experiments" / "load_pipeline_ab_h200.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("load_pipeline_ab.py needs a CUDA device")
    rows = []
    for s, b in SHAPES:
        q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b)
        for lam in (0.5, 0.8):
            prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens)
            nbytes = prefix.nbytes() + q.nbytes
            for kw in LAUNCHES:
                plan = cuda.SplitPlan(q, prefix, 128 ** -0.5, **kw)
                o_part, lse_part = plan.partials()
                us = bench_us(lambda plan=plan, o=o_part, lse=lse_part: plan.launch(o, lse), flush="read")
                rows.append(dict(context=s, batch=b, key_ratio=lam, launch=kw, bytes=nbytes, us=us,
                                 tbps=nbytes / us / 1e6, splits=plan.splits,
                                 resident=cuda.LAST_LAUNCH.get("resident_blocks")))
                print(f"{s // 1024}K b{b} λ={lam} {str(kw):45s} {us:8.1f} µs {nbytes / us / 1e6:5.2f} TB/s", flush=True)
    write_json(args.out, {**environment(), "command": "SPARKV_AUTOTUNE=0 PYTHONPATH=. python "
                          "benchmarks/load_pipeline_ab.py", "rows": rows})


if __name__ == "__main__":
    main()
