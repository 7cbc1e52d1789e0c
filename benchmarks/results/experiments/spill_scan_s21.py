"""Session 21, CPU: which builds of the CUDA SparK kernel spill under the default register cap (200) once kept rows
of DK = 4 mod 8 are 8-byte units (KV_MODE 3, e7a637a). For every DK in 1..D-1, pages (records) and arrays, the
default 4-warp, 2-block launch: ptxas's stack frame for the capped build (sm_90, the pip NVRTC 13.5.37 of the test
extras), the uncapped one where the capped one has a frame, and whether `without_added_spills` keeps the cap.
Result (spill_scan_sm90_s21.txt, 2026-11-30 03:20-03:49 UTC, the 2-core CPU machine): no stack frame in any build for
D = 128 with 4 query heads a KV head (bf16 mean, fp16 mean_linear), 8 (bf16 mean), and D = 64 with 4 (bf16 mean).
Each line: D, DK, layout, KV_MODE, capped stack, uncapped stack (None: not built), keeps / DROPS, seconds.
Command: PYTHONPATH=. python benchmarks/results/experiments/spill_scan_s21.py D DK1,DK2,... G RECOVERY DTYPE
(the run: `128 $(seq -s, 1 127) 4 mean bfloat16`, then 64 ... 4 mean bfloat16, 128 ... 8 mean bfloat16,
128 ... 4 mean_linear float16)."""
import sys, time, torch
from sparkv.kernels.decode_attn import cuda
lib = cuda.pip_nvrtc()
D = int(sys.argv[1]); G = int(sys.argv[3]); MODE = sys.argv[4]; DT = getattr(torch, sys.argv[5])
for dk in [int(x) for x in sys.argv[2].split(",")]:
    for rec in (True, False):
        t = time.time()
        d = cuda.defines(D, dk, G, MODE, DT, 4, 2, 2, 2, records=rec, registers=200)
        if "MAXNREG" not in d:
            print(D, dk, rec, "no cap"); continue
        kept = cuda.without_added_spills(d, "sm_90", lib)
        key = lambda x: (tuple(sorted(x.items())), "sm_90")
        unc = {k: v for k, v in d.items() if k != "MAXNREG"}
        print(D, dk, "pages" if rec else "arrays", d["KV_MODE"], "capped", cuda._STACKS[key(d)], "uncapped", cuda._STACKS.get(key(unc)), "keeps" if "MAXNREG" in kept else "DROPS", f"{time.time()-t:.1f}s", flush=True)
