"""Where graph_decode.py's peak GPU bytes go, per press: weights, cache (sparkv's accounting), other bytes held
before the graph loop, and what the 64-step graph loop allocates on top, grouped by the allocating frame.

    python benchmarks/results/experiments/peak_probe_s35.py TREE OUT.json   # TREE: holds sparkv/ and benchmarks/

Session 35 (one lent H200, 2026-11-30 22:01-22:05 UTC, torch 2.11.0+cu130, transformers 5.17.0), 128K·b1, 8 layers,
the presses of graph_decode.py in its order, one greedy_decode of 64 steps each:
- HEAD 14f7d91 (``peak_probe_s35_head_h200.json``) and session 14's tree 6f74e0c (``_6f74e0c_h200.json``): the bytes
  held before each press's loop grew by 32 MiB (33,554,432 B) a press after the first, in both trees: a cuBLAS
  workspace for every new warm-up stream (``graphs._warm_up_stream``). Caches: HEAD's pages 16 MiB above the arrays
  at both ratios (each 32-token record padded by 64 B to 128-byte alignment).
- With the fix (``_fixed_h200.json``, 22:05 UTC): the held bytes stay at 101.7 MB from the second press on, and the
  loop adds 4.7 MB instead of 38.3 MB.
"""
import collections
import json
import sys
import time

import os

tree, out = os.path.abspath(sys.argv[1]), sys.argv[2]
sys.path.insert(0, tree)

import torch  # noqa: E402

import sparkv  # noqa: E402
from benchmarks.generate import build_model  # noqa: E402
from benchmarks.graph_decode import graph_steps, prefilled  # noqa: E402
from sparkv.memory import memory_report  # noqa: E402

assert os.path.abspath(sparkv.__file__).startswith(tree + "/sparkv"), sparkv.__file__


def frame_key(frames):
    for f in frames:
        name = f.get("filename", "")
        if ("sparkv" in name or "benchmarks" in name or "transformers" in name) and "peak_probe" not in name:
            return f"{name.split('/')[-1]}:{f.get('line')}:{f.get('name')}"
    return "?"


def live_at_peak(snap):
    events = snap["device_traces"][0]
    live, cur, best, best_live = {}, 0, 0, {}
    for e in events:
        a = e["action"]
        if a == "alloc":
            live[e["addr"]] = e
            cur += e["size"]
        elif a == "free_completed" and e["addr"] in live:
            cur -= live.pop(e["addr"])["size"]
        if cur > best:
            best, best_live = cur, dict(live)
    groups = collections.Counter()
    counts = collections.Counter()
    for e in best_live.values():
        k = frame_key(e.get("frames", []))
        groups[k] += e["size"]
        counts[k] += 1
    return best, [(k, v, counts[k]) for k, v in groups.most_common(12)], len(events)


model = build_model(8)
weights = sum(p.numel() * p.element_size() for p in model.parameters())
torch.manual_seed(0)
ids = torch.randint(1, 128000, (1, 131072), device="cuda")
rows = []
for spec in ["full", "spark@0.5", "spark@0.8", "snapkv+spark@0.8"]:
    name, _, ratio = spec.partition("@")
    config = sparkv.parse_press(name, key_ratio=float(ratio or 0.0), budget=2048)
    torch.cuda.empty_cache()
    press, cache, first = prefilled(model, ids, config)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    rep = memory_report(cache)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=400000)
    t0 = time.time()
    _, times, _ = graph_steps(model, press, cache, first, 64, capture=True)
    peak = torch.cuda.max_memory_allocated()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    on_top, groups, n_events = live_at_peak(snap)
    row = dict(press=spec, peak=peak, base=base, weights=weights, ids=ids.numel() * 8,
               cache_allocated=rep.allocated_kv_bytes, cache_nominal=rep.nominal_kv_bytes,
               cache_compressed=rep.compressed_kv_bytes, tail_reserved=rep.tail_reserved_bytes,
               other_base=base - weights - rep.allocated_kv_bytes - ids.numel() * 8,
               loop_on_top_traced=on_top, loop_on_top=peak - base, groups=groups, events=n_events,
               median_step_ms=sorted(times)[len(times) // 2], seconds=time.time() - t0)
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "groups"}), flush=True)
    for g in groups:
        print("   ", g, flush=True)
    del cache, press, first
    torch.cuda.empty_cache()
json.dump(dict(tree=tree, torch=torch.__version__, rows=rows), open(out, "w"), indent=1)
