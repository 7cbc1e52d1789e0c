"""Where the host time of one eager ``decode_attn`` call goes: cProfile over 300 calls at 8K·b1, Llama heads,
16-token dense tail, SparK λ = 0.8 and dense keys (λ = 0), after 20 warm-up calls. Prints the time per call without
the profiler, the profiled function calls per call, and the top functions by own and cumulative time.

    PYTHONPATH=. python benchmarks/decode_host_profile.py

BENCHMARKS.md "Session 10" quotes its SparK run (as a scratch copy of this loop, printed output only).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_gpu_args, script_parser  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, DenseKeys  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import decode_attn  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

CALLS = 300


def main() -> None:
    parse_gpu_args(script_parser(__doc__), "decode_host_profile.py")
    q, k, v, stat, lens = make_shape(1, 32, 8, 8192, 128, torch.bfloat16, seed=1)
    tk, tv = make_shape(1, 32, 8, 16, 128, torch.bfloat16, seed=7)[1:3]
    prefixes = {"spark λ=0.8": CompressedKV(select_pack_triton(k, stat, kept_channels(128, 0.8)), v, lens),
                "dense": CompressedKV(DenseKeys(k), v, lens)}
    for name, prefix in prefixes.items():
        def call(prefix=prefix):
            return decode_attn(q, prefix, tk, tv, 128 ** -0.5)

        for _ in range(20):
            call()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(CALLS):
            call()
        torch.cuda.synchronize()
        print(f"{name}: {1e6 * (time.perf_counter() - t) / CALLS:.1f} µs/call without the profiler")
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(CALLS):
            call()
        torch.cuda.synchronize()
        profile.disable()
        stats = pstats.Stats(profile)
        print(f"{name}: {stats.total_calls / CALLS:.0f} Python function calls per call (profiled)")
        for key in ("tottime", "cumtime"):
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats(key).print_stats(25)
            print(text.getvalue())


if __name__ == "__main__":
    main()
