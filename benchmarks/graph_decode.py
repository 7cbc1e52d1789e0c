"""End to end on the GPU: decode ms/step of ``sparkv.generate`` eager vs from a CUDA graph, under each press.

Eager decoding is bound by the host (``BENCHMARKS.md``, "Session 8"): each sparkv attention call costs 0.2-0.5 ms
of Python and launches, so an 8-layer step takes 11-19 ms whatever the KV bytes. Graph decoding
(``sparkv.integration.graphs``) replays the whole step from one CUDA graph, so the step's GPU time, and with it the
bytes the compressed cache saves, is what a user waits for.

Model: randomly initialised, Llama-3.1-8B's layout (32 query / 8 KV heads, D = 128, hidden 4096, intermediate 14336,
vocabulary 128256; ``--layers`` sets the depth), bf16, as ``benchmarks/generate.py``. Per press: one prefill and first
token through ``model.generate``, then (1) eager: the next ``--new-tokens`` steps of ``model.generate``, each timed
to its end on the GPU (a logits processor that synchronises); (2) graph: the same number of steps by
``greedy_decode``, the host-free loop, timed the same way (a step callback that synchronises), the first two steps
(eager build, capture) left out; (3) ``model.generate`` again with its one-token steps replayed
(``replay_decode_steps``, what ``sparkv.generate(..., cuda_graph=True)`` runs: transformers' loop between replays),
timed as (1), the first step (build, capture) left out; it must have replayed every later step. Gate before any
timing counts (``gate``): 8 captured steps equal, bit for bit (tokens and logits), the very same static step run
eagerly (``capture=False``, same kernels) from the same cache state, for every press.

    PYTHONPATH=. python benchmarks/graph_decode.py --context 131072 --batch 1 --layers 8 --new-tokens 64
    PYTHONPATH=. python benchmarks/graph_decode.py --replot RUN.json [RUN.json ...] --png PLOT.png   # no GPU
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import LogitsProcessorList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, environment, plot_after_run, script_parser  # noqa: E402
from benchmarks.generate import StepClock, build_model, step_stats, timed_generate  # noqa: E402

PRESSES = ["full", "spark@0.5", "spark@0.8", "snapkv+spark@0.8"]
COLORS = {"decode_step_ms": "tab:blue", "replayed_generate_step_ms": "tab:orange", "graph_step_ms": "tab:green"}


def prefilled(model, ids, press):
    """A fresh sparkv cache after prefill, and the first token (``model.generate(max_new_tokens=1)``)."""
    import sparkv
    from sparkv.integration.transformers import cache_kwarg

    p = sparkv.Press(press)
    with p(model):
        cache = p.make_cache(model)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                             pad_token_id=0, eos_token_id=None, **{cache_kwarg(model): cache})
    return p, cache, out[:, ids.shape[1]:]


@contextlib.contextmanager
def combine_kernel_always():
    """Eager steps merge the CUDA kernel's splits in its last block, captured ones with the Triton combine kernel
    (``SplitPlan.merges_itself``): two float32 reduction orders, whose bf16 outputs differ by rounding. For the gate,
    eager steps take the captured steps' merge too, so that both run the very same kernels."""
    from sparkv.kernels.decode_attn import cuda

    saved = cuda.SplitPlan.merges_itself
    cuda.SplitPlan.merges_itself = lambda self, slots: False
    try:
        yield
    finally:
        cuda.SplitPlan.merges_itself = saved


def graph_steps(model, press, cache, first, steps: int, capture: bool, keep_logits: bool = False
                ) -> tuple[torch.Tensor, list[float], list[torch.Tensor]]:
    """``greedy_decode`` over ``cache`` (consumed); returns tokens, the ms of every step after the second and, with
    ``keep_logits``, every step's logits."""
    from sparkv.integration.graphs import greedy_decode

    stamps: dict[int, float] = {}
    kept: list[torch.Tensor] = []

    def clock(n: int, logits: torch.Tensor) -> None:
        torch.cuda.synchronize()
        stamps[n] = time.perf_counter()
        if keep_logits:
            kept.append(logits.clone())

    positions = torch.full((first.shape[0],), cache.layers[0].prompt_len, device=first.device)
    with press(model):
        tokens = greedy_decode(model, cache, first, positions, steps, capture=capture, on_step=clock)
    times = [1e3 * (stamps[n] - stamps[n - 1]) for n in sorted(stamps) if n > 2]
    return tokens, times, kept


def replayed_generate_steps(model, ids, config, new_tokens: int) -> list[float]:
    """``model.generate`` with its one-token steps replayed (``replay_decode_steps``, what
    ``sparkv.generate(..., cuda_graph=True)`` does), each step timed to its end on the GPU (``StepClock``); the first
    step (eager build and capture) left out."""
    import sparkv
    from sparkv.integration.graphs import replay_decode_steps
    from sparkv.integration.transformers import cache_kwarg

    clock = StepClock()
    p = sparkv.Press(config)
    with p(model):
        cache = p.make_cache(model)
        with replay_decode_steps(model, cache, new_tokens - 1) as stats:
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=0, eos_token_id=None, logits_processor=LogitsProcessorList([clock]),
                           **{cache_kwarg(model): cache})
    if stats.replays != new_tokens - 2:
        raise SystemExit(f"replay_decode_steps replayed {stats.replays} of {new_tokens - 2} steps")
    return clock.step_ms()[1:]


def gate(spec: str, graph: tuple, eager: tuple) -> None:
    """The captured graph against the same static step run eagerly with the same kernels (``combine_kernel_always``)
    from the same cache state: every step's tokens and logits must be bit for bit equal."""
    (g_tokens, _, g_logits), (e_tokens, _, e_logits) = graph, eager
    for n, (a, b) in enumerate(zip(g_logits, e_logits)):
        if not torch.equal(a, b):
            err = ((a - b).norm() / b.norm()).item()
            raise SystemExit(f"{spec}: step {n + 1} logits of the graph differ from the eager static step's "
                             f"(rel err {err:.2e}): no timing counts")
    if not torch.equal(g_tokens, e_tokens):
        raise SystemExit(f"{spec}: the graph's tokens differ from the eager static step's: no timing counts")


def plot(results: list[dict], path: Path) -> None:
    """One column per run (JSON of this script): eager and graph decode ms/step per press (medians with p10-p90)
    above, the graph run's peak GPU memory per press below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 6.0), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for ax, mem, res in zip(axes[0], axes[1], results):
        rows, a = res["rows"], res["args"]
        x = range(len(rows))
        eager, loop = "eager (model.generate)", "CUDA graph, host-free loop"
        bars = [(-0.2, "decode_step_ms", eager), (0.2, "graph_step_ms", loop)]
        if "replayed_generate_step_ms" in rows[0]:  # runs since the generate(cuda_graph=True) column
            bars = [(-0.27, "decode_step_ms", eager), (0.0, "replayed_generate_step_ms", "generate(cuda_graph=True)"),
                    (0.27, "graph_step_ms", loop)]
        width = 0.8 / len(bars)
        for dx, key, label in bars:
            med = [r[key] for r in rows]
            err = [[m - r[key + "_p10"] for m, r in zip(med, rows)], [r[key + "_p90"] - m for m, r in zip(med, rows)]]
            ax.bar([i + dx for i in x], med, width=width, yerr=err, capsize=2, label=label, color=COLORS[key])
        for i, r in enumerate(rows):
            ax.annotate(f"{r['graph_step_ms']:.1f}", (i + bars[-1][0], r["graph_step_ms"]), ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(list(x), [])
        ax.set_title(f"{int(a['context']) // 1024}K x b{a['batch']}, {a['layers']} layers", fontsize=9)
        ax.set_ylabel("ms per decode step")
        peaks = [r["graph_peak_gpu_bytes"] / 2**30 for r in rows]
        mem.bar(list(x), peaks, width=0.5, color="tab:gray")
        for i, gib in enumerate(peaks):
            mem.annotate(f"{gib:.2f}", (i, gib), ha="center", va="bottom", fontsize=7)
        mem.set_ylim(0, 1.15 * max(peaks))
        mem.set_xticks(list(x), [r["press"] for r in rows], rotation=20, fontsize=8)
        mem.set_ylabel("peak GPU GiB (graph run)")
    panel = max(range(len(results)), key=lambda i: len(axes[0][i].patches))  # the one with every kind of bar
    fig.legend(*axes[0][panel].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(f"Llama-3.1-8B layout (random weights), bf16, {results[0]['device']}, {results[0]['date'][:10]}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=130)
    print(f"wrote {path}")


def main() -> None:
    p = script_parser(__doc__, RESULTS / "graph_decode_h200.json")
    p.add_argument("--context", type=int, default=131072)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--budget", type=int, default=2048)
    p.add_argument("--presses", default=",".join(PRESSES))
    p.add_argument("--replot", type=Path, nargs="+", metavar="JSON",
                   help="no GPU: draw the PNG (--png) from runs of this script already written, then exit")
    p.add_argument("--png", type=Path, default=None, help="plot path (default: --out with .png)")
    args = p.parse_args()
    if args.replot:
        plot([json.loads(f.read_text()) for f in args.replot], args.png or args.replot[0].with_suffix(".png"))
        return
    if not torch.cuda.is_available():
        sys.exit("graph_decode.py needs a CUDA device")
    import sparkv
    from sparkv.kernels.decode_attn.fused import LAST_LAUNCH

    torch.manual_seed(0)
    model = build_model(args.layers)
    ids = torch.randint(1, 128000, (args.batch, args.context), device="cuda")
    rows = []
    for spec in tqdm(args.presses.split(","), desc="presses"):
        name, _, ratio = spec.partition("@")
        config = sparkv.parse_press(name, key_ratio=float(ratio or 0.0), budget=args.budget)
        _, _, eager_steps, _, _ = timed_generate(model, ids, torch.ones_like(ids), args.new_tokens, config)
        torch.cuda.empty_cache()
        press, cache, first = prefilled(model, ids, config)
        with combine_kernel_always():  # both runs: the graph's first step is an eager one
            eager_run = graph_steps(model, press, copy.deepcopy(cache), first, 8, capture=False, keep_logits=True)
            graph_run = graph_steps(model, press, copy.deepcopy(cache), first, 8, capture=True, keep_logits=True)
        gate(spec, graph_run, eager_run)
        tqdm.write(f"gate: {spec}: 8 graph steps equal the eager static steps bit for bit (tokens and logits)")
        del graph_run, eager_run
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        _, times, _ = graph_steps(model, press, cache, first, args.new_tokens, capture=True)
        graph = {k.replace("decode_step", "graph_step"): v for k, v in step_stats(times).items()}
        peak = torch.cuda.max_memory_allocated()
        del cache
        torch.cuda.empty_cache()
        replayed = {k.replace("decode_step", "replayed_generate_step"): v for k, v in
                    step_stats(replayed_generate_steps(model, ids, config, args.new_tokens)).items()}
        eager = step_stats(eager_steps)
        rows.append({"press": spec, **eager, **graph, **replayed, "graph_peak_gpu_bytes": peak,
                     "speedup_graph_vs_eager": eager["decode_step_ms"] / graph["graph_step_ms"],
                     "prefix_kernel": LAST_LAUNCH.get("spark_kernel", "triton"), "gate": "8 steps bit-exact"})
        torch.cuda.empty_cache()
    for r in rows:
        r["graph_vs_full"] = rows[0]["graph_step_ms"] / r["graph_step_ms"] if rows[0]["press"] == "full" else None
    result = {**environment(), "command": "PYTHONPATH=. python benchmarks/graph_decode.py " + " ".join(sys.argv[1:]),
              "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot_after_run(plot, [result], args.png or args.out.with_suffix(".png"), args.out)
    print(f"\nLlama-3.1-8B layout, {args.layers} layers, context {args.context}, batch {args.batch}, bf16, "
          f"{args.new_tokens} steps")
    print("| press | eager ms/step, median (p10-p90) | generate(cuda_graph=True) ms/step | host-free graph loop "
          "ms/step | graph vs eager | graph: full / this |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        vs_full = f"{r['graph_vs_full']:.2f}x" if r["graph_vs_full"] is not None else "-"
        print(f"| {r['press']} | {r['decode_step_ms']:.2f} "
              f"({r['decode_step_ms_p10']:.2f}-{r['decode_step_ms_p90']:.2f}) "
              f"| {r['replayed_generate_step_ms']:.3f} "
              f"({r['replayed_generate_step_ms_p10']:.3f}-{r['replayed_generate_step_ms_p90']:.3f}) "
              f"| {r['graph_step_ms']:.3f} ({r['graph_step_ms_p10']:.3f}-{r['graph_step_ms_p90']:.3f}) "
              f"| {r['speedup_graph_vs_eager']:.1f}x | {vs_full} |")


if __name__ == "__main__":
    main()
