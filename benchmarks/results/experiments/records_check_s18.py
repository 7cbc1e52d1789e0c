# Session 18 (2026-11-29 23:36-23:44 UTC, one lent H200, torch 2.11.0+cu130, triton 3.6.0, CUDA 13.0), run as
# `PYTHONPATH=. python gpu/records_check.py` on branch exp/tile-records-v (this folder's tile_records_s18.patch applied
# to e9b8411): the records / vpair launches of the CUDA split kernel against the fp32 PyTorch reference (ragged
# lengths, several splits, every recovery, bf16 / fp16, D = 64 / 128 / 256); printed 42 cases, worst rel err 2.29e-03.
"""Records variant: ragged lengths, odd S, every recovery, bf16/fp16, against the fp32 reference."""
import torch
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.decode_attn.fused import combine_partials
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.select_pack.fused import select_pack_triton

dev = "cuda"
worst = 0.0
n = 0
for (b, hq, h, s, d, lam, dt, rec) in [
    (3, 32, 8, 1000, 128, 0.8, torch.bfloat16, "mean"), (2, 9, 3, 777, 64, 0.8, torch.float16, "mean"),
    (2, 32, 8, 4133, 128, 0.5, torch.bfloat16, "mean"), (2, 16, 4, 515, 256, 0.8, torch.bfloat16, "mean"),
    (2, 32, 8, 999, 128, 0.8, torch.bfloat16, "zero"), (2, 32, 8, 999, 128, 0.7, torch.bfloat16, "constant"),
    (1, 32, 8, 3000, 128, 0.81, torch.float16, "mean")]:
    g = torch.Generator(device=dev).manual_seed(s)
    q = torch.randn(b, hq, 1, d, device=dev, dtype=dt, generator=g)
    k = torch.randn(b, h, s, d, device=dev, dtype=dt, generator=g)
    v = torch.randn(b, h, s, d, device=dev, dtype=dt, generator=g)
    stat = torch.rand(b, h, d, device=dev, generator=g) + 0.05
    lens = torch.randint(1, s + 1, (b,), device=dev, dtype=torch.int32, generator=g)
    lens[0] = s
    keys = select_pack_triton(k, stat, kept_channels(d, lam), recovery=rec) if rec != "mean" else \
        select_pack_triton(k, stat, kept_channels(d, lam))
    prefix = CompressedKV(keys, v, lens)
    ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5, block_size=8192)
    for chunk, kw in ((None, dict(records=1)), (64, dict(records=1)), (None, dict(vpair=1)), (96, dict(vpair=1)),
                      (None, dict(records=2)), (96, dict(records=2))):
        try:
            plan = cuda.SplitPlan(q, prefix, d ** -0.5, chunk=chunk, **kw)
        except (ValueError, RuntimeError) as e:
            print("skip", kw, str(e)[:100])
            continue
        o, l = plan.partials()
        o.fill_(float("nan"))
        plan.launch(o, l)
        out = combine_partials(o, l, q)
        err = ((out.float() - ref).norm() / ref.norm()).item()
        assert not torch.isnan(out).any()
        worst = max(worst, err)
        n += 1
        print(b, hq, h, s, d, lam, dt, rec, chunk, kw, f"{err:.2e}", plan.defines.get("REC_BYTES"))
        assert err < 1e-2, err
print(f"records check: {n} cases, worst rel err {worst:.2e}")
