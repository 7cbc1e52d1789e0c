"""Session 25: the combine kernel as a programmatic dependent launch (PDL) of the split kernel, on the launches of
3008e9e (one 8-warp block a multiprocessor at λ >= 0.75, which leaves 4 of 132 multiprocessors free at 128K·b1).
The split kernel triggers its dependents at entry (`pdl_trigger_s25.patch`: `griddepcontrol.launch_dependents`), the
combine (a copy of `fused.decode_attn_combine_kernel` with `gdc_wait` first) is launched with `launch_pdl=True`, so
its programs can be resident before the split grid ends and start merging once it has. Session 9 measured this on
3-block launches at 0.98-1.00x. Variants: main (tree), trig (trigger only, plain combine: what the trigger costs),
pdl (trigger + PDL combine). Outputs must be bit-equal to main's (same arithmetic). Whole steps (CUDA graph, read
flush, medians of five interleaved rounds), pages.
Command: PYTHONPATH=. python benchmarks/results/experiments/pdl_combine_ab_s25.py OUT.json FOLDER
(FOLDER: cuda.py and spark_walk.cu of the tree with the patch applied).
Run: one H200, 2026-11-30 09:22 UTC, torch 2.11.0+cu130, triton 3.6.0, code of a91e5c0: pdl_combine_ab_s25_h200.json;
bit-equal; pdl 0.941-1.013x, trig 0.996-1.005x; not kept (BENCHMARKS.md "Session 25" item 6)."""
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_wait

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment, rel_err  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.autotune import cdiv, next_power_of_2  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.fused import COMBINE_COLUMNS, combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


@triton.jit(do_not_specialize=["NS"])
def combine_pdl_kernel(o_part, lse_part, o, NS, G: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
                       BNS: tl.constexpr):
    gdc_wait()  # the split grid's partials are complete and visible past this point
    i_bhg = tl.program_id(0).to(tl.int64)
    i_bh, i_g = i_bhg // G, i_bhg % G
    o_j = tl.program_id(1) * BD + tl.arange(0, BD)
    m_j = o_j < D
    b_m = tl.full([1], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([1], dtype=tl.float32)
    b_acc = tl.zeros([BD], dtype=tl.float32)
    for s0 in range(0, NS, BNS):
        o_s = s0 + tl.arange(0, BNS)
        m_s = o_s < NS
        b_lse = tl.load(lse_part + (i_bh * NS + o_s) * G + i_g, mask=m_s, other=float("-inf"))
        p_o = o_part + ((i_bh * NS + o_s[:, None]) * G + i_g) * D + o_j[None, :]
        b_o = tl.load(p_o, mask=m_s[:, None] & m_j[None, :], other=0)
        b_mn = tl.maximum(b_m, tl.max(b_lse, axis=0))
        b_safe = tl.where(b_mn == float("-inf"), 0.0, b_mn)
        b_w = tl.exp2(b_lse - b_safe)
        b_alpha = tl.exp2(b_m - b_safe)
        b_acc = b_acc * b_alpha + tl.sum(b_w[:, None] * b_o, axis=0)
        b_l = b_l * b_alpha + tl.sum(b_w, axis=0)
        b_m = b_mn
    tl.store(o + i_bhg * D + o_j, (b_acc / b_l).to(o.dtype.element_ty), mask=m_j)


def combine_pdl(o_part, lse_part, query):
    b, hq, _, d = query.shape
    ns = o_part.shape[1]
    out = torch.empty(b, hq, 1, d, dtype=query.dtype, device=query.device)
    combine_pdl_kernel[(b * hq, cdiv(d, COMBINE_COLUMNS))](o_part, lse_part, out, ns, G=o_part.shape[2], D=d,
                                                           BD=COMBINE_COLUMNS, BNS=min(256, max(16, next_power_of_2(ns))),
                                                           launch_pdl=True)
    return out


spec = importlib.util.spec_from_file_location("cuda_pdl", Path(sys.argv[2]) / "cuda.py")
cuda_pdl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cuda_pdl)


def step_fn(mod, combine, q, prefix, scale):
    plan = mod.SplitPlan(q, prefix, scale)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine(o, lse, q)
    return step


VARIANTS = {"main": (cuda, combine_partials), "trig": (cuda_pdl, combine_partials), "pdl": (cuda_pdl, combine_pdl)}
SHAPES = ((32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 32768, 8, (0.5, 0.8)), (32, 8, 128, 32768, 1, (0.8,)),
          (32, 8, 128, 8192, 1, (0.8,)), (9, 3, 64, 131072, 1, (0.8,)))
rows = []
for hq, h, d, s, b, lams in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in lams:
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
        prefix = SparKPages.from_compressed(arrays)
        steps = {n: step_fn(m, c, q, prefix, scale) for n, (m, c) in VARIANTS.items()}
        outs = {n: st().clone() for n, st in steps.items()}
        errs = {n: rel_err(o, ref) for n, o in outs.items()}
        same = {n: torch.equal(outs["main"], o) for n, o in outs.items()}
        assert max(errs.values()) < 1e-2 and all(same.values()), (errs, same)
        times = {n: [] for n in steps}
        for _ in range(5):
            for n, st in steps.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append({"q_heads": hq, "kv_heads": h, "head_dim": d, "context": s, "batch": b, "key_ratio": lam,
                     "sdpa_us": sdpa, "rel_err": errs, "bit_equal": same, "times": times, "us": med,
                     "launch": dict(cuda.LAST_LAUNCH), "speedup_vs_main": {n: med["main"] / x for n, x in med.items()}})
        print(f"D{d} {hq}/{h} {s // 1024}K b{b} λ{lam}: sdpa {sdpa:6.1f} " + " ".join(
            f"| {n} {x:6.1f} x{med['main'] / x:.3f} sdpa x{sdpa / x:.3f}" for n, x in med.items()), flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
        del prefix, steps, arrays
    del q, k, v
    torch.cuda.empty_cache()
