"""Session 29: kernel folders against the tree's at the targets' cells (Llama heads, 128K·b1 and 32K·b8, λ = 0.5 and
0.8): checks first (`benchmarks/folder_ab.py`: the fp32 reference and the first folder, twice each, on ragged rows,
pages and arrays, D = 64 and 128, bf16 and fp16), then whole steps, three interleaved rounds.
Command: PYTHONPATH=. python benchmarks/results/experiments/targets_ab_s29.py OUT.json head:DIR NAME:DIR [...]
Runs (one H200, 2026-11-30, torch 2.11.0+cu130, triton 3.6.0, code of 796d895 + each patch; 8 checks each, all
bit-equal to the tree's; BENCHMARKS.md "Session 29"):
- 15:19 UTC, `defer:` the tree + session 24's `scale_defer_s24.patch` (the next tile's scale kept as its 16 loaded
  bits and converted when its tile starts: Nsight Compute had 5.2 % of the λ = 0.5 samples waiting on that
  conversion, `../ncu/s29_b1_s131072_l05_*`), scale_defer_ab_s29_h200.json: 0.997x / 0.996x at 128K·b1 / 32K·b8
  λ = 0.5, 0.992x / 0.997x at λ = 0.8; not kept (item 7);
- 15:29 UTC, `pipe:` the tree + `pipe_s29.patch` (PIPE: tile t's softmax and P·V inside tile t + 1's walk, spread over
  its steps; the V buffer zeroed at the start, the rescale unconditional), pipe_ab_s29_h200.json: 0.920x / 0.921x at
  λ = 0.5, 0.967x / 0.980x at λ = 0.8; not kept (item 8);
- 16:00 UTC (session 30, code of 40522b4 + each patch), `prepared_pipe_early_s29.sh`, pipe_early_ab_s30_h200.json:
  128K·b1 / 32K·b8 at λ = 0.5: `pipe` 0.910x / 0.920x, `pipe_early` 0.927x / 0.934x, `pipe_span1` 0.952x / 0.960x,
  `low` (session 24's lowest-bit walk on REC_SPREAD) 0.970x / 0.971x; at λ = 0.8 0.951-0.999x; none kept;
- 16:08 UTC (session 30), `prepared_qt16_s30.sh`, qt16_ab_s30_h200.json: `qt16` (the walk's q table in 16 bits)
  0.916x / 0.912x at λ = 0.5, 0.996x / 0.998x at λ = 0.8; not kept;
- 16:13 UTC (session 30), `prepared_walk_s30.sh`, walk_ab_s30_h200.json: `revbot` 0.990x / 0.993x at λ = 0.5,
  0.996x / 0.998x at λ = 0.8; that run's `imadq` had two deltas with the wrong sign and failed its checks (rel err
  0.17, left out of the timing);
- 16:16 UTC (session 30), `prepared_walk_s30.sh OUT second`, walk2_ab_s30_h200.json, the fixed `imadq` (8 checks
  bit-equal) 0.975x / 0.971x at λ = 0.5, 1.000x / 0.999x at λ = 0.8; `imadq2` 0.994x / 0.973x, 0.996x / 0.995x; not
  kept (BENCHMARKS.md "Session 30");
- 16:24 UTC (session 30), `prepared_rsel_s30.sh`, rsel_ab_s30_h200.json: `rsel` (one bit-select for both recovery B
  registers of a k-step) 0.968x / 0.965x at λ = 0.5, 0.998x / 0.999x at λ = 0.8; not kept;
- 16:27 UTC (session 30), `prepared_spread_s30.sh`, spread_ab_s30_h200.json: the recovery k-steps over the walk's first
  half / first three quarters / second half: 1.006x / 0.998x, 1.003x / 0.996x, 0.968x / 0.962x at λ = 0.5; not kept;
- 16:29 UTC (session 30), `prepared_spread_s30.sh OUT second`, spread2_ab_s30_h200.json: after each step's entries /
  that over the first half / two on every even step: 0.959x / 0.963x, 0.959x / 0.959x, 0.953x / 0.956x; not kept;
- 16:32 UTC (session 30), `prepared_cap_s30.sh`, cap_ab_s30_h200.json: register caps 208-255 instead of 200,
  0.967-0.996x at λ = 0.5; 200 stays.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {}),
         (32, 8, 128, 84, torch.bfloat16, {})]
CELLS = [(32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 32768, 8, (0.5, 0.8))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
