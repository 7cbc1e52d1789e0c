"""Session 25 (run on one H200, 2026-11-30 09:46 UTC, code of 6f09a42: timeline_s25_h200.json; BENCHMARKS.md "Session 25"
item 9): where the fixed part of a step goes at the target cells,
from inside the kernel. A diagnostic build (`timeline_s25.patch`: `TIMELINE=1` when `SPARKV_TIMELINE=1`) has every
warp record the global timer at its block's entry, once its set-up is done (just before its first V copies), when its
first tile's V has landed, at its loop's end and once its block's partial is written, and its multiprocessor, into
a buffer the launcher passes in the in-kernel merge's counters slot (that merge is off). Session 12 did this on
3-block launches (set-up 5.9-8.6 µs then; blocks ending up to 15.6 µs apart); this asks it of today's launches (one
8-warp block a multiprocessor at λ = 0.8, two 4-warp blocks at λ = 0.5) on pages.
First the build is checked against main's (bit-equal whole steps) and timed beside it (CUDA graphs, read flush, three
interleaved rounds: what the marks cost); then five eager launches of each cell, each after a read flush of a
256 MB buffer, and the marks relative to the earliest entry of that launch, in µs.
Command: PYTHONPATH=. python benchmarks/results/experiments/timeline_s25.py OUT.json TIMELINE_FOLDER
(TIMELINE_FOLDER: cuda.py and spark_walk.cu of main with the patch applied, e.g. `mkdir -p gpu/tl && cp
sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} gpu/tl/ && (cd gpu/tl && patch -p4 <
../../benchmarks/results/experiments/timeline_s25.patch)`)."""
import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment, rel_err  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

MARKS = ("entry", "setup_done", "first_v", "loop_end", "partial_written")


def summarize(raw: torch.Tensor, warps: int) -> dict:
    """``raw``: [blocks * warps, 8] int64 (ns marks 0-4, multiprocessor 5, split 6). Marks relative to the earliest
    entry, in µs: percentiles over warps, the span, and per multiprocessor the last write of a partial."""
    t = raw[:, :5].double()
    t0 = t[:, 0].min()
    rel = (t - t0) / 1000.0
    q = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    out = {m: dict(zip(("min", "p10", "p50", "p90", "max"), torch.quantile(rel[:, k], q).tolist()))
           for k, m in enumerate(MARKS)}
    block_end = rel[:, 4].view(-1, warps).max(dim=1).values
    sm = raw[:, 5].view(-1, warps)[:, 0]
    per_sm = {}
    for s, e in zip(sm.tolist(), block_end.tolist()):
        per_sm[s] = max(per_sm.get(s, 0.0), e)
    ends = torch.tensor(sorted(per_sm.values()), dtype=torch.float64)
    out["span_us"] = float(rel[:, 4].max())
    out["sm_last_end"] = dict(zip(("min", "p10", "p50", "p90", "max"), torch.quantile(ends, q).tolist()))
    out["multiprocessors"] = len(per_sm)
    out["blocks"] = int(block_end.numel())
    return out


def load_variant(folder: str):
    spec = importlib.util.spec_from_file_location("cuda_timeline", Path(folder) / "cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    os.environ["SPARKV_TIMELINE"] = "1"  # read by the variant's defines() only
    tl = load_variant(sys.argv[2])
    flush = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.float32, device="cuda").uniform_()
    rows = []
    for s, b, lam in ((131072, 1, 0.8), (131072, 1, 0.5), (32768, 8, 0.8), (32768, 8, 0.5)):
        q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b + 128)
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens)
        ref = decode_attn_ref(q.float(), arrays, None, None, 128 ** -0.5, block_size=8192)
        pages = SparKPages.from_compressed(arrays)
        plans = {"main": cuda.SplitPlan(q, pages, 128 ** -0.5), "timeline": tl.SplitPlan(q, pages, 128 ** -0.5)}
        assert plans["timeline"].defines.get("TIMELINE") == 1 and "TIMELINE" not in plans["main"].defines
        bufs = {n: p.partials() for n, p in plans.items()}

        def step(n):
            plans[n].launch(*bufs[n])
            return combine_partials(*bufs[n], q)

        outs = {n: step(n).clone() for n in plans}
        assert torch.equal(outs["main"], outs["timeline"]) and rel_err(outs["main"], ref) < 1e-2
        times = {n: [] for n in plans}
        for _ in range(3):
            for n in plans:
                times[n].append(bench_us(lambda n=n: step(n), flush="read"))
        med = {n: statistics.median(x) for n, x in times.items()}
        runs = []
        plan = plans["timeline"]
        for _ in range(5):
            flush.max()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            plan.launch(*bufs["timeline"])
            end.record()
            torch.cuda.synchronize()
            raw = plan.timeline.view(-1, 8).cpu()
            runs.append(dict(event_us=start.elapsed_time(end) * 1000.0, **summarize(raw, plan.warps)))
        row = {"context": s, "batch": b, "key_ratio": lam, "warps": plan.warps, "splits": plan.splits,
               "chunk": plan.chunk, "step_us": med, "times": times, "runs": runs,
               "last_raw": plan.timeline.view(-1, 8).cpu().tolist()}
        rows.append(row)
        r = runs[-1]
        print(f"{s // 1024}K b{b} λ{lam} ({plan.warps} warps, {plan.splits} splits): step main {med['main']:.1f} "
              f"timeline build {med['timeline']:.1f} µs; eager launch {r['event_us']:.1f} µs, span {r['span_us']:.1f}",
              flush=True)
        for m in MARKS:
            print(f"   {m:<16} " + " ".join(f"{kq} {statistics.median(x[m][kq] for x in runs):6.1f}"
                                           for kq in ("min", "p10", "p50", "p90", "max")), flush=True)
        print("   last partial per multiprocessor " + " ".join(
            f"{kq} {statistics.median(x['sm_last_end'][kq] for x in runs):6.1f}" for kq in ("min", "p50", "max")),
            flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), marks=MARKS, rows=rows)))
        del pages, arrays, plans, bufs
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
