"""Session 20 experiment: the split kernel's register cap on pages, across kernel sources. Variants: ``e92fa05``
(main before the pages' 3-block cap: 255 registers), ``ea5d7a2`` (pages capped at 168 by min_blocks=3), the working
tree (the lead-split patch: lead_split_s20.patch) with its default (168) and with min_blocks=2 (255), and the working
tree with ``__maxnreg__(N)`` instead of ``__launch_bounds__`` (MAXNREG=N). The old trees are folders with their
``cuda.py`` and ``spark_walk.cu`` (``git show REV:sparkv/kernels/decode_attn/F``), loaded as modules of their own.
Every variant is checked against the fp32 reference, then timed (kernel + Triton combine, bench_us graph,
flush="read") in 3 interleaved rounds; SDPA best of flash / cuDNN in the same run.
Command: PYTHONPATH=. python benchmarks/results/experiments/regcap_ab_s20.py OUT.json gpu/t_e92 gpu/t_ea5"""
import ctypes
import importlib.util
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
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


def load(folder, name, maxnreg=0):
    spec = importlib.util.spec_from_file_location(name, Path(folder) / "cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if maxnreg:
        orig = mod.defines
        mod.defines = lambda *a, **k: {**orig(*a, **k), "MAXNREG": maxnreg}
    return mod


def num_regs(mod, plan):
    lib = torch.cuda._utils._get_gpu_runtime_library()
    n = ctypes.c_int()
    lib.cuFuncGetAttribute(ctypes.byref(n), 4, plan.kernel.func)  # CU_FUNC_ATTRIBUTE_NUM_REGS
    return n.value


tree = "sparkv/kernels/decode_attn"
VARIANTS = {"e92fa05": (load(sys.argv[2], "m_e92"), {}), "ea5d7a2": (load(sys.argv[3], "m_ea5"), {}),
            "lead_tree": (load(tree, "m_tree"), {}), "lead_tree_minb2": (load(tree, "m_tree2"), dict(min_blocks=2))}
for n in (232, 200, 184, 152):
    VARIANTS[f"maxnreg{n}"] = (load(tree, f"m_r{n}", n), dict(min_blocks=2))
SHAPES = [(32, 8, 128, s, b) for s, b in ((131072, 1), (32768, 8), (32768, 1), (8192, 8))] + \
    [(9, 3, 64, s, b) for s, b in ((131072, 1), (32768, 8))]
rows = []
for hq, h, d, s, b in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.5, 0.8):
        pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens))
        ref = decode_attn_ref(q.float(), pages, None, None, scale, block_size=8192)
        steps, regs = {}, {}
        for n, (mod, kw) in VARIANTS.items():
            plan = mod.SplitPlan(q, pages, scale, **kw)
            o, lse = plan.partials()

            def step(plan=plan, o=o, lse=lse, q=q):
                plan.launch(o, lse)
                return combine_partials(o, lse, q)

            err = ((step().float() - ref).norm() / ref.norm()).item()
            assert err < 1e-2, (n, s, b, lam, err)
            steps[n], regs[n] = step, num_regs(mod, plan)
        times = {n: [] for n in VARIANTS}
        for _ in range(3):
            for n, step in steps.items():
                times[n].append(bench_us(step, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append(dict(head_dim=d, q_heads=hq, kv_heads=h, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa,
                         times=times, registers=regs, **{f"{n}_us": m for n, m in med.items()}))
        print(f"D{d} {s:>6} b{b} λ{lam} sdpa {sdpa:6.1f} | " + " ".join(
            f"{n}:{med[n]:.1f}({regs[n]})" for n in VARIANTS), flush=True)
        del pages, steps
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
