"""One decode step for Nsight Compute: 32K context x batch 8, Llama-3.1-8B heads (32 query / 8 KV, D = 128), bf16,
SparK keys at λ (default 0.5) or dense keys, each with the first autotune candidate (the default config).

    ncu --clock-control none --kernel-name regex:decode_attn_fwd --launch-skip 2 --launch-count 1 --set full \\
        -o spark05 python benchmarks/profile_decode.py spark 0.5
    ncu ... -o dense python benchmarks/profile_decode.py dense
    ncu -i spark05.ncu-rep --page details --print-details all > spark05_details.txt
    ncu -i spark05.ncu-rep --page source --csv --print-source sass > spark05_sass.csv

``--kernel cuda`` profiles the CUDA C++ SparK split kernel instead (its default launch parameters), e.g.

    ncu --clock-control none -k regex:spark_walk -s 2 -c 1 --section SpeedOfLight --section Occupancy \
        --section LaunchStats --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis \
        python benchmarks/profile_decode.py spark 0.8 --kernel cuda

Results and their reading: ``benchmarks/results/ncu/`` and BENCHMARKS.md.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, DenseKeys  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn.fused import DENSE_CONFIGS, SPARK_CONFIGS, decode_attn_triton  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("keys", choices=["spark", "dense"])
    p.add_argument("key_ratio", type=float, nargs="?", default=0.5)
    p.add_argument("--kernel", choices=["triton", "cuda"], default="triton", help="split kernel for SparK keys")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_decode.py needs a CUDA device")
    d = 128
    q, k, v, stat, lens = make_shape(8, 32, 8, 32768, d, torch.bfloat16, seed=1)  # the benchmark's 32K·b8 data
    if args.keys == "dense":
        prefix, c = CompressedKV(DenseKeys(k), v, lens), DENSE_CONFIGS[0]
    else:
        prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, args.key_ratio)), v, lens)
        c = SPARK_CONFIGS[0]
    cfg = dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages, maxnreg=c.maxnreg)
    if args.kernel == "cuda":
        cfg = None  # the CUDA kernel's defaults (sparkv.kernels.decode_attn.cuda.DEFAULTS)
    for _ in range(3):  # ncu skips the first two launches (compilation, warm-up) and profiles the third
        out = decode_attn_triton(q, prefix, None, None, d ** -0.5, config=cfg, spark_kernel=args.kernel)
    torch.cuda.synchronize()
    print(args.keys, args.key_ratio, cfg, "bytes", prefix.nbytes(), "mean |out|", out.float().abs().mean().item())


if __name__ == "__main__":
    main()
