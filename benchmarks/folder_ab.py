"""Several versions of the CUDA SparK split kernel in one run, each a folder holding a tree's ``cuda.py`` and
``spark_walk.cu`` (a variant = main's files with a patch applied): checks, then whole decode steps.

The experiments' A/B scripts (``results/experiments/*_ab_s26.py``) call :func:`run` with their cases and cells:

- **checks**: every folder against the fp32 PyTorch reference and against the first folder (to rounding), each twice
  (the two outputs must be bit-equal), on ragged rows in both forms (pages, separate arrays). A folder that fails a
  check is reported under ``failed`` and left out of the timing; the first folder failing stops the run.
- **whole steps**: the split kernel plus the Triton combine kernel, captured in a CUDA graph, L2 flushed by a read
  (``common.bench_us``), medians of interleaved rounds, on pages, beside the best torch SDPA backend of the same run.

``OUT.json`` holds the environment, the checks, the failures and one row per cell, written after every cell.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_us, environment  # noqa: E402
from decode_attention import best_sdpa_us, make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

# Reference error every folder must stay under, and distance to the first folder's output (as a share of the
# reference's norm) a folder that changes the order of a sum may have.
MAX_REL_ERR = 1e-2
MAX_DIFF_VS_BASE = 1e-3
CHECK_LENGTHS = (1237, 33)  # the ragged rows after the first, whose length a case gives (default 3000)


def load_module(folder: Path, name: str = "sparkv_cuda_folder"):
    """``folder/cuda.py`` as a module of its own named ``name`` (it reads ``spark_walk.cu`` beside it)."""
    folder = Path(folder)
    for f in ("cuda.py", "spark_walk.cu"):
        if not (folder / f).is_file():
            raise SystemExit(f"a kernel folder must hold cuda.py and spark_walk.cu; {folder / f} is missing")
    spec = importlib.util.spec_from_file_location(name, folder / "cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_folders(specs: list[str]) -> dict:
    """``["main:/tmp/base", "v1:/tmp/v1"]`` -> ``{"main": module, "v1": module}``, the first one the baseline."""
    mods = {}
    for spec in specs:
        name, sep, folder = spec.partition(":")
        if not sep or not name or name in mods:
            raise SystemExit(f"expected distinct NAME:FOLDER pairs, got {spec!r}")
        mods[name] = load_module(Path(folder), f"sparkv_cuda_{name}")
    if not mods:
        raise SystemExit("give at least one NAME:FOLDER (the first is the baseline)")
    return mods


def whole_step(mod, q, prefix, scale, **kw):
    """A function running one decode step with ``mod``'s split kernel and the Triton combine kernel."""
    plan = mod.SplitPlan(q, prefix, scale, **kw)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step


def check_folders(mods: dict, cases) -> tuple[list[dict], dict[str, list]]:
    """``cases``: ``(q heads, KV heads, head_dim, kept, dtype, kw)``; ``kw`` goes to ``SplitPlan`` (``chunk``, launch
    parameters) but for ``seq``, the first row's length (default 3000). Returns ``(checks, failed)``, ``failed``
    mapping a folder to the checks it failed; a case a launch does not admit is skipped and said so."""
    base = next(iter(mods))
    checks, failed = [], {}
    for hq, h, d, dk, dtype, kw in cases:
        kw = dict(kw)
        seq = kw.pop("seq", 3000)
        q, k, v, stat, _ = make_shape(1 + len(CHECK_LENGTHS), hq, h, seq, d, dtype, seed=dk + hq)
        lens = torch.tensor([seq, *CHECK_LENGTHS], dtype=torch.int32, device=q.device)
        arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
        ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
        for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
            label = f"D{d} G{hq // h} DK{dk} {str(dtype)[6:]} {kw} {form}"
            try:
                steps = {n: whole_step(m, q, prefix, d ** -0.5, **kw) for n, m in mods.items()}
                outs = {n: st() for n, st in steps.items()}
                again = {n: st() for n, st in steps.items()}
            except ValueError as e:  # a launch this case does not admit
                print(f"check {label}: skipped ({e})"[:200], flush=True)
                continue
            err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
            same = {n: torch.equal(outs[base], o) for n, o in outs.items()}
            repeat = {n: torch.equal(outs[n], again[n]) for n in outs}
            diff = {n: ((o.float() - outs[base].float()).norm() / ref.norm()).item() for n, o in outs.items()}
            checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), launch=kw, form=form,
                               rel_err=err, bit_equal=same, repeat_bit_equal=repeat, rel_diff_vs_base=diff))
            print(f"check {label}: err {err} same {same} repeat {repeat}", flush=True)
            if not (err[base] < MAX_REL_ERR and repeat[base]):
                raise SystemExit(f"the baseline {base!r} fails its own check at {label}")
            for n in outs:
                if not (err[n] < MAX_REL_ERR and (same[n] or diff[n] < MAX_DIFF_VS_BASE) and repeat[n]):
                    failed.setdefault(n, []).append(checks[-1])
                    print(f"FAILED check: {n} at {label}", flush=True)
    return checks, failed


def time_folders(mods: dict, cells, out: Path, record: dict, rounds: int = 3) -> list[dict]:
    """``cells``: ``(q heads, KV heads, head_dim, context, batch, key ratios)``, bf16, every row at full length.
    Writes ``record`` plus the rows so far to ``out`` after every cell."""
    base = next(iter(mods))
    rows = []
    for hq, h, d, s, b, lams in cells:
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
        scale = d ** -0.5
        sdpa = best_sdpa_us(q, k, v, scale)
        for lam in lams:
            keys = select_pack_triton(k, stat, kept_channels(d, lam))
            prefix = SparKPages.from_compressed(CompressedKV(keys, v, lens))
            steps = {n: whole_step(m, q, prefix, scale) for n, m in mods.items()}
            launch = {}
            for n, st in steps.items():
                st()
                launch[n] = {key: x for key, x in getattr(mods[n], "LAST_LAUNCH", {}).items()
                             if isinstance(x, (int, float, str))}
            times = {n: [] for n in steps}
            for _ in range(rounds):
                for n, st in steps.items():
                    times[n].append(bench_us(st, flush="read"))
            med = {n: statistics.median(t) for n, t in times.items()}
            rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa,
                             launch=launch, times=times, **{f"{n}_us": x for n, x in med.items()},
                             speedup_vs_base={n: med[base] / x for n, x in med.items()}))
            print(f"D{d} {hq}/{h} {s} b{b} λ{lam}: sdpa {sdpa:7.1f} " + " ".join(
                f"{n} {x:7.1f} (x{med[base] / x:.3f}, sdpa x{sdpa / x:.3f})" for n, x in med.items()), flush=True)
            out.write_text(json.dumps(dict(record, rows=rows), indent=1))
            del prefix, steps
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def run(argv: list[str], cases, cells, rounds: int = 3) -> None:
    """``argv``: ``OUT.json NAME:FOLDER [NAME:FOLDER ...]`` (the first folder is the baseline): the checks, then the
    timing of the folders that passed them (medians of ``rounds`` interleaved rounds)."""
    if len(argv) < 2:
        raise SystemExit("usage: OUT.json NAME:FOLDER [NAME:FOLDER ...] (the first folder is the baseline)")
    out, mods = Path(argv[0]), load_folders(argv[1:])  # the folders are checked first, on any machine
    if not torch.cuda.is_available():
        raise SystemExit("folder A/B needs a CUDA device")
    checks, failed = check_folders(mods, cases)
    for n in failed:
        mods.pop(n)
    record = dict(environment(), checks=checks, failed=failed)
    out.write_text(json.dumps(dict(record, rows=[]), indent=1))
    time_folders(mods, cells, out, record, rounds)
