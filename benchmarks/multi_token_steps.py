"""Steps of several new tokens (assisted decoding's candidates, a continuation) over a compressed prompt, five ways:
- ``folded``: what the dispatcher runs for 2..``PER_QUERY_KERNEL_MAX`` tokens, ``decode_attn_triton`` with ``Q``
  queries: ``F`` new tokens folded into each query row's head group (2 with the CUDA kernel at these heads), so the
  prefix is read ``ceil(Q / F)`` times;
- ``folded_triton``: the same with the Triton kernel on the prefix (``spark_kernel="triton"``), whose rows take up to
  32 query heads (``F`` = 8 at these heads): the prefix read fewer times, by a slower kernel;
- ``rows``: one launch with one query row per token (``fold=False``, session 39's path): the prefix read ``Q`` times;
- ``per_token``: the one-token kernels called once per token (session 38's path);
- ``blockwise``: the blockwise PyTorch path (``decode_attn_ref``, all the tokens in one pass).

    PYTHONPATH=. python benchmarks/multi_token_steps.py     # -> benchmarks/results/multi_token_steps_h200.json + .png
    PYTHONPATH=. python benchmarks/multi_token_steps.py --replot RUN.json [--png P]  # the figure again, no GPU

One attention call of one layer as a decode step makes it, timed twice: eagerly (host time included: that is what an
eager verification step pays), wall-clock medians after warm-up, the device synchronised after every call; and, for
the GPU paths, as GPU time (``*_gpu_us``: CUDA-graph replays timed by events, L2 flushed by a read before each,
``common.bench_us``), which is what the kernels themselves cost and what a captured step would pay. Prefixes as a
sparkv cache keeps them (``decode_storage``: pages where the CUDA kernel takes the case), bf16, batch 1, a 96-token
tail whose last Q tokens are the queries'. Every path is checked against the fp32 reference first.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEVICE,
    bench_us,
    default_out,
    environment,
    fmt_ctx,
    markdown_table,
    plot_after_run,
    rel_err,
    script_parser,
    wall_clock_us,
    write_json,
)

from sparkv.cache.layout import CompressedKV  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import decode_storage, fused  # noqa: E402
from sparkv.kernels.decode_attn.fused import decode_attn_triton  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

MODELS = [{"model": "llama-3.1-8b", "q_heads": 32, "kv_heads": 8, "head_dim": 128},
          {"model": "smollm2", "q_heads": 9, "kv_heads": 3, "head_dim": 64}]
TOKENS = (1, 2, 4, 8, 16, 32, 64)
TAIL = 96
TOL = 1e-2
PATHS = {"folded": "tokens folded into head groups (dispatched)", "folded_triton": "folded, Triton kernel",
         "rows": "one launch, a row per token", "per_token": "one-token kernels once per token",
         "blockwise": "blockwise PyTorch"}


def per_token(q, prefix, tail_k, tail_v, scaling):
    """Session 38's path: query i through the one-token kernels over the tail up to its own token."""
    seen = tail_k.shape[2] - q.shape[2]
    return torch.cat([decode_attn_triton(q[:, :, i:i + 1], prefix, tail_k[:, :, :seen + i + 1],
                                         tail_v[:, :, :seen + i + 1], scaling) for i in range(q.shape[2])], 2)


GPU_PATHS = ("folded", "folded_triton", "rows", "per_token")  # also timed as GPU time
FUNCTIONS = {"folded": decode_attn_triton,
             "folded_triton": functools.partial(decode_attn_triton, spark_kernel="triton"),
             "rows": functools.partial(decode_attn_triton, fold=False), "per_token": per_token,
             "blockwise": decode_attn_ref}


def synchronised(fn):
    def call():
        fn()
        torch.cuda.synchronize()
    return call


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys((r["model"], r["context"]) for r in result["rows"]))  # in the run's order
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes), 3.6), squeeze=False)
    for ax, (model, context) in zip(axes[0], shapes):
        rows = [r for r in result["rows"] if (r["model"], r["context"]) == (model, context) and "error" not in r]
        for key, label in result["paths"].items():  # a run's own paths (earlier runs measured fewer)
            # GPU time where the run has it (session 40 on), else the eager wall clock
            field, what = (f"{key}_gpu_us", "GPU") if f"{key}_gpu_us" in rows[0] else (f"{key}_us", "host incl.")
            ax.plot([r["tokens"] for r in rows], [r[field] / 1e3 for r in rows], marker="o", label=f"{label} ({what})")
        ax.set(xscale="log", yscale="log", title=f"{model}, {context}", xlabel="new tokens a step",
               ylabel="ms per layer")
        ax.set_xticks([r["tokens"] for r in rows], [str(r["tokens"]) for r in rows])
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['device']}, {result['date']}, λ = {result['rows'][0]['key_ratio']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    print(f"wrote {png}")


def main() -> None:
    parser = script_parser(__doc__, default_out("multi_token_steps"))
    parser.add_argument("--contexts", default="8192,32768", help="prompt tokens, comma-separated")
    parser.add_argument("--key-ratio", type=float, default=0.5)
    parser.add_argument("--replot", type=Path, metavar="JSON", help="draw the figure of a run's JSON, then exit")
    parser.add_argument("--png", type=Path, default=None, help="plot path (default: the JSON's, with .png)")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.png or args.replot.with_suffix(".png"))
        return
    if not torch.cuda.is_available():
        sys.exit("multi_token_steps.py needs a CUDA device")
    contexts = [int(c) for c in args.contexts.split(",")]
    rows = []
    for m, s in tqdm([(m, s) for m in MODELS for s in contexts], desc="shapes"):
        hq, h, d = m["q_heads"], m["kv_heads"], m["head_dim"]
        gen = torch.Generator(device=DEVICE).manual_seed(s + d)
        k, v = (torch.randn(1, h, s, d, device=DEVICE, dtype=torch.bfloat16, generator=gen) for _ in range(2))
        stat = torch.rand(1, h, d, device=DEVICE, generator=gen) + 0.05
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, args.key_ratio)), v,
                              torch.full((1,), s, dtype=torch.int32, device=DEVICE))
        prefix = decode_storage(arrays, hq)
        # The Triton kernel reads arrays (given pages it would unpack them every call)
        forms = {key: arrays if key == "folded_triton" else prefix for key in FUNCTIONS}
        tail_k, tail_v = (torch.randn(1, h, TAIL, d, device=DEVICE, dtype=torch.bfloat16, generator=gen)
                          for _ in range(2))
        for q_len in TOKENS:
            q = torch.randn(1, hq, q_len, d, device=DEVICE, dtype=torch.bfloat16, generator=gen)
            scaling = d ** -0.5
            want = decode_attn_ref(q.float(), arrays, tail_k, tail_v, scaling)
            row = dict(m, context=s, batch=1, key_ratio=args.key_ratio, tokens=q_len, layout=type(prefix).__name__)
            for key, fn in FUNCTIONS.items():
                row[f"{key}_rel_err"] = rel_err(fn(q, forms[key], tail_k, tail_v, scaling), want)
                if key.startswith("folded"):
                    row[f"{key}_fold"] = fused.LAST_LAUNCH["fold"]
            if max(row[f"{key}_rel_err"] for key in FUNCTIONS) > TOL:
                row["error"] = "a path is off the fp32 reference"
                tqdm.write(f"FAILED check: {row}")
            else:
                calls = {key: functools.partial(fn, q, forms[key], tail_k, tail_v, scaling)
                         for key, fn in FUNCTIONS.items()}
                for key, call in calls.items():
                    slow = key == "blockwise"
                    row[f"{key}_us"] = wall_clock_us(synchronised(call), warmup=2 if slow else 3, rep=7 if slow else 15)
                for key in ("folded_triton", "rows", "per_token", "blockwise"):
                    row[f"folded_vs_{key}"] = row[f"{key}_us"] / row["folded_us"]
                for key in GPU_PATHS:
                    row[f"{key}_gpu_us"] = bench_us(calls[key], flush="read")
                for key in ("folded_triton", "rows", "per_token"):
                    row[f"folded_vs_{key}_gpu"] = row[f"{key}_gpu_us"] / row["folded_gpu_us"]
            rows.append(row)
    columns = [("model", "heads", ""), ("context", "context", ""), ("tokens", "new tokens", ""),
               ("folded_fold", "F", ""), ("folded_us", "folded (µs)", ".1f"),
               ("folded_triton_fold", "F Triton", ""), ("folded_triton_us", "folded Triton (µs)", ".1f"),
               ("rows_us", "a row per token (µs)", ".1f"), ("per_token_us", "per token (µs)", ".1f"),
               ("blockwise_us", "blockwise (µs)", ".1f"), ("folded_vs_rows", "vs a row per token", ".2f"),
               ("folded_vs_blockwise", "vs blockwise", ".2f"), ("folded_gpu_us", "folded GPU (µs)", ".1f"),
               ("folded_triton_gpu_us", "folded Triton GPU (µs)", ".1f"), ("rows_gpu_us", "a row per token GPU (µs)",
                                                                             ".1f"),
               ("per_token_gpu_us", "per token GPU (µs)", ".1f"), ("folded_vs_rows_gpu", "GPU vs a row per token",
                                                                     ".2f"), ("folded_rel_err", "err", ".1e")]
    for row in rows:
        row["context"] = fmt_ctx(row["context"])
    result = {**environment(), "command": "PYTHONPATH=. python benchmarks/multi_token_steps.py", "paths": PATHS,
              "rows": rows}
    write_json(args.out, result)
    print(markdown_table(rows, columns))
    print(f"(JSON: {args.out})")
    plot_after_run(plot, result, args.png or args.out.with_suffix(".png"), args.out)


if __name__ == "__main__":
    main()
