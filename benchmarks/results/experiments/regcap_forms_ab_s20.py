"""Session 20 experiment: a register cap through ``__maxnreg__(N)`` (MAXNREG=N) instead of ``__launch_bounds__``'s
blocks-per-multiprocessor, on pages and on arrays, over the cases that use more than ~168 registers: λ = 0.3 / 0.5
with D = 128, D = 256 (16 query / 8 KV heads), 8 query heads a KV head (64 / 8), fp16, and λ = 0.8 as a control.
Variants: ``bounds`` (main: pages min_blocks=3, i.e. 168 registers where two blocks fit, arrays min_blocks=2, 255),
``minb2`` (255 everywhere) and MAXNREG = 224, 208, 200, 192, 184 (min_blocks=2 for the shared-memory choices).
Source: main at ea5d7a2 plus the MAXNREG macro. Every variant is checked against the fp32 reference, then timed
(kernel + Triton combine, bench_us graph, flush="read") in 3 interleaved rounds; SDPA best of flash / cuDNN.
Command: PYTHONPATH=. python benchmarks/results/experiments/regcap_forms_ab_s20.py OUT.json"""
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


def load(name, maxnreg=0):
    spec = importlib.util.spec_from_file_location(name, Path("sparkv/kernels/decode_attn/cuda.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if maxnreg:
        orig = mod.defines
        mod.defines = lambda *a, **k: {**orig(*a, **k), "MAXNREG": maxnreg}
    return mod


def num_regs(plan):
    lib = torch.cuda._utils._get_gpu_runtime_library()
    n = ctypes.c_int()
    lib.cuFuncGetAttribute(ctypes.byref(n), 4, plan.kernel.func)  # CU_FUNC_ATTRIBUTE_NUM_REGS
    return n.value


VARIANTS = {"bounds": (load("m_bounds"), {}), "minb2": (load("m_minb2"), dict(min_blocks=2))}
for n in (224, 208, 200, 192, 184):
    VARIANTS[f"r{n}"] = (load(f"m_r{n}", n), dict(min_blocks=2))
# (q heads, KV heads, D, context, batch, λ values, dtype)
BF, FP = torch.bfloat16, torch.float16
SHAPES = [(32, 8, 128, 131072, 1, (0.3, 0.5, 0.8), BF), (32, 8, 128, 32768, 8, (0.3, 0.5, 0.8), BF),
          (32, 8, 128, 8192, 1, (0.5,), BF), (32, 8, 128, 131072, 8, (0.5,), BF), (32, 8, 128, 32768, 8, (0.5,), FP),
          (16, 8, 256, 32768, 1, (0.5, 0.8), BF), (16, 8, 256, 32768, 8, (0.5, 0.8), BF),
          (64, 8, 128, 131072, 1, (0.5, 0.8), BF), (64, 8, 128, 32768, 8, (0.5,), BF)]
rows = []
for hq, h, d, s, b, lams, dtype in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, dtype, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in lams:
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
        for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
            steps, regs, warps = {}, {}, {}
            for n, (mod, kw) in VARIANTS.items():
                plan = mod.SplitPlan(q, prefix, scale, **kw)
                o, lse = plan.partials()

                def step(plan=plan, o=o, lse=lse, q=q):
                    plan.launch(o, lse)
                    return combine_partials(o, lse, q)

                err = ((step().float() - ref).norm() / ref.norm()).item()
                assert err < 1e-2, (n, s, b, lam, err)
                steps[n], regs[n], warps[n] = step, num_regs(plan), plan.warps
            times = {n: [] for n in VARIANTS}
            for _ in range(3):
                for n, step in steps.items():
                    times[n].append(bench_us(step, flush="read"))
            med = {n: statistics.median(t) for n, t in times.items()}
            rows.append(dict(head_dim=d, q_heads=hq, kv_heads=h, context=s, batch=b, key_ratio=lam,
                             dtype=str(dtype), form=form, sdpa_us=sdpa, times=times, registers=regs, warps=warps,
                             **{f"{n}_us": m for n, m in med.items()}))
            print(f"D{d} G{hq // h} {s:>6} b{b} λ{lam} {str(dtype)[6:]} {form:6} sdpa {sdpa:6.1f} | " + " ".join(
                f"{n}:{med[n]:.1f}({regs[n]})" for n in VARIANTS), flush=True)
            del steps
        del arrays, prefix
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
