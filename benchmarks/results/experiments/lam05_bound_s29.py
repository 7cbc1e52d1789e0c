"""Session 29: where the λ = 0.5 step's time goes at the targets' cells, on one machine in one run: main's whole step
(split kernel + Triton combine) and its split kernel alone, the same for the timing bound without the SparK math
(`nomath_s29.patch`: no kept term, no recovery; every copy, wait, the softmax and P·V stay; wrong outputs, so
unchecked), and torch SDPA's flash and cuDNN backends. main is checked against the fp32 reference first. CUDA graphs,
read flush, medians of five interleaved rounds. The stream of the same bytes is `benchmarks/stream_ceiling.py`, run
in the same device call (`prepared_lam05_s29.sh bound OUT_DIR`).
Command: PYTHONPATH=. python benchmarks/results/experiments/lam05_bound_s29.py OUT.json main:DIR nomath:DIR
Run: one H200, 2026-11-30 14:21 UTC, torch 2.11.0+cu130, triton 3.6.0, code of f491b7b (lam05_bound_s29_h200.json):
128K·b1 λ 0.5 main step 115.7 µs (1.126x cuDNN), nomath step 108.0 (1.207x), split kernels alone 112.9 / 105.2;
32K·b8 λ 0.5 216.7 (1.140x) / 204.5 (1.208x); BENCHMARKS.md "Session 29" item 2.
Session 30 (16:08 UTC, code of 40522b4, walk_probes_s30_h200.json, `prepared_qt16_s30.sh`): main, `noq` (the walk
without its q gather, `noq_s30.patch`) and `nomath` on the REC_SPREAD tree (`nomath_s30.patch`): 128K·b1 λ 0.5 steps
110.8 / 114.0 / 105.9 µs (1.148x / 1.115x / 1.201x cuDNN), 32K·b8 206.6 / 214.5 / 200.1 (1.169x / 1.126x / 1.207x);
BENCHMARKS.md "Session 30".
"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment, rel_err  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402
from folder_ab import load_folders, whole_step  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

CELLS = ((131072, 1, (0.5, 0.8)), (32768, 8, (0.5, 0.8)))
ROUNDS = 5


def split_alone(mod, q, prefix, scale):
    plan = mod.SplitPlan(q, prefix, scale)
    o, lse = plan.partials()
    return lambda: plan.launch(o, lse)


def main(argv):
    out, mods = Path(argv[0]), load_folders(argv[1:])
    rows = []
    for s, b, lams in CELLS:
        q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b + 128)
        scale = 128 ** -0.5
        for lam in lams:
            arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens)
            prefix = SparKPages.from_compressed(arrays)
            ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
            fns = {}
            for n, m in mods.items():
                fns[f"{n}_step"] = whole_step(m, q, prefix, scale)
                fns[f"{n}_split"] = split_alone(m, q, prefix, scale)
            err = rel_err(fns["main_step"](), ref)
            assert err < 1e-2, err
            times = {n: [] for n in fns}
            for _ in range(ROUNDS):
                for n in times:
                    times[n].append(bench_us(fns[n], flush="read"))
            med = {n: statistics.median(t) for n, t in times.items()}
            for name, be in (("sdpa_flash", torch.nn.attention.SDPBackend.FLASH_ATTENTION),
                             ("sdpa_cudnn", torch.nn.attention.SDPBackend.CUDNN_ATTENTION)):
                med[name] = sdpa_us(q, k, v, scale, be, "read")[0]
            best = min(med["sdpa_flash"], med["sdpa_cudnn"])
            rows.append(dict(context=s, batch=b, key_ratio=lam, bytes=prefix.nbytes(), rel_err=err, times=times, us=med,
                             vs_sdpa={n: best / x for n, x in med.items()}))
            print(f"{s // 1024}K b{b} λ{lam}: " + " ".join(f"{n} {x:6.1f} ({best / x:.3f}x)" for n, x in med.items()),
                  flush=True)
            out.write_text(json.dumps(dict(environment(), rows=rows), indent=1))
            del prefix, arrays, fns
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
