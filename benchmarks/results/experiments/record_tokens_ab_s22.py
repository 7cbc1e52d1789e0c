"""Session 22: SparKPages records of 64 tokens (two of the kernel's 32-token tiles; record_tokens_s22.patch, on
31277ed, makes the record size a parameter of SparKPages with 64 as default) against records of 32 (main), and 128. A 32-token record of even DK carries 64 bytes of zeros to reach a
128-byte line (0.58 % of its bytes at D = 128, DK = 26; 0.48 % at DK = 64; 0.94 % at D = 64, DK = 32); two tiles'
fields fill whole lines. The kernel reads a tile's fields at the record of token t0 plus (t0 % REC_TOKENS) rows.
First ragged cases against the fp32 reference, bit-equal across record sizes and to the arrays (same kernel, same
split), then whole steps (split kernel + Triton combine, bench_us graph, flush="read"), medians of 5 interleaved
rounds, with the best SDPA backend of the same run: the target cells (32 query / 8 KV heads, D = 128) and SmolLM2's
heads (9 / 3, D = 64).
Result (H200, 2026-11-30 05:30 UTC, record_tokens_ab_s22_h200.json): bit-equal on 5 ragged cases; 64-token records
0.988-0.993x of 32-token ones at λ = 0.8 on the target cells and 0.990-1.003x elsewhere, 128 the same as 64: the
0.5-0.9 % fewer bytes do not make the step faster, so main keeps 32-token records.
Command: `git apply benchmarks/results/experiments/record_tokens_s22.patch`, then
PYTHONPATH=. python benchmarks/results/experiments/record_tokens_ab_s22.py OUT.json"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

SIZES = (32, 64, 128)


def step_fn(q, prefix, scale, chunk=None):
    plan = cuda.SplitPlan(q, prefix, scale, chunk)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step, plan.chunk


checks = []
for hq, h, d, dk, dtype in ((32, 8, 128, 26, torch.bfloat16), (32, 8, 128, 64, torch.bfloat16),
                            (16, 8, 256, 51, torch.float16), (9, 3, 64, 32, torch.bfloat16),
                            (8, 8, 128, 25, torch.float16)):
    q, k, v, stat, _ = make_shape(3, hq, h, 3000, d, dtype, seed=dk)
    lens = torch.tensor([3000, 1237, 33], dtype=torch.int32, device="cuda")
    arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
    ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
    st, chunk = step_fn(q, arrays, d ** -0.5)
    outs = {"arrays": st()}
    for n in SIZES:
        outs[n] = step_fn(q, SparKPages.from_compressed(arrays, record_tokens=n), d ** -0.5, chunk)[0]()
    err = {str(n): ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
    same = all(torch.equal(outs["arrays"], o) for o in outs.values())
    checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), rel_err=err, bit_equal=same))
    print(f"check D{d} G{hq // h} DK{dk} {str(dtype)[6:]}: {err} bit-equal {same}", flush=True)
    assert max(err.values()) < 1e-2 and same
rows = []
for hq, h, d, s, b in ((32, 8, 128, 131072, 1), (32, 8, 128, 32768, 8), (9, 3, 64, 131072, 1),
                       (9, 3, 64, 32768, 8)):
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.5, 0.8):
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        pages = {n: SparKPages.from_compressed(arrays, record_tokens=n) for n in SIZES}
        del arrays
        steps, chunks = {}, {}
        for n, p in pages.items():
            steps[n], chunks[n] = step_fn(q, p, scale)
        times = {n: [] for n in steps}
        for _ in range(5):
            for n, st in steps.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        nbytes = {n: p.nbytes() for n, p in pages.items()}
        rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa,
                         times={str(n): t for n, t in times.items()}, us={str(n): x for n, x in med.items()},
                         bytes={str(n): x for n, x in nbytes.items()}, chunks={str(n): x for n, x in chunks.items()},
                         speedup_64_vs_32=med[32] / med[64]))
        print(f"D{d} {hq}/{h} {s} b{b} λ{lam}: sdpa {sdpa:7.1f} | " + " ".join(
            f"r{n} {med[n]:7.1f} ({sdpa / med[n]:.3f}x, {nbytes[n] / 1e6:.1f} MB)" for n in SIZES)
            + f" | 64 vs 32 x{med[32] / med[64]:.4f}", flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
        del pages, steps
    del q, k, v
    torch.cuda.empty_cache()
