"""Steps of several new tokens (assisted decoding's candidates, a continuation) over a compressed prompt: the
one-token kernels once per token (``decode_attn_per_query``) against the blockwise PyTorch path (``decode_attn_ref``,
all the tokens in one pass). Sets ``sparkv.kernels.decode_attn.PER_QUERY_KERNEL_MAX``.

    PYTHONPATH=. python benchmarks/multi_token_steps.py     # -> benchmarks/results/multi_token_steps_h200.json

One attention call of one layer as a decode step makes it, eagerly (host time included: that is what an eager
verification step pays), wall-clock medians after warm-up, the device synchronised after every call. Prefixes as a
sparkv cache keeps them (``decode_storage``: pages where the CUDA kernel takes the case), bf16, batch 1, a 64-token
tail whose last Q tokens are the queries'. Both paths are checked against the fp32 reference first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEVICE,
    default_out,
    environment,
    fmt_ctx,
    markdown_table,
    parse_gpu_args,
    rel_err,
    script_parser,
    wall_clock_us,
    write_json,
)

from sparkv.cache.layout import CompressedKV  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import decode_attn_per_query, decode_storage  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

MODELS = [{"model": "llama-3.1-8b", "q_heads": 32, "kv_heads": 8, "head_dim": 128},
          {"model": "smollm2", "q_heads": 9, "kv_heads": 3, "head_dim": 64}]
TOKENS = (1, 2, 4, 8, 16, 32)
TAIL = 64
TOL = 1e-2


def synchronised(fn):
    def call():
        fn()
        torch.cuda.synchronize()
    return call


def main() -> None:
    parser = script_parser(__doc__, default_out("multi_token_steps"))
    parser.add_argument("--contexts", default="8192,32768", help="prompt tokens, comma-separated")
    parser.add_argument("--key-ratio", type=float, default=0.5)
    args = parse_gpu_args(parser, "multi_token_steps.py")
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
        tail_k, tail_v = (torch.randn(1, h, TAIL, d, device=DEVICE, dtype=torch.bfloat16, generator=gen)
                          for _ in range(2))
        for q_len in TOKENS:
            q = torch.randn(1, hq, q_len, d, device=DEVICE, dtype=torch.bfloat16, generator=gen)
            scaling = d ** -0.5
            want = decode_attn_ref(q.float(), arrays, tail_k, tail_v, scaling)
            row = dict(m, context=s, batch=1, key_ratio=args.key_ratio, tokens=q_len, layout=type(prefix).__name__)
            row["per_query_rel_err"] = rel_err(decode_attn_per_query(q, prefix, tail_k, tail_v, scaling), want)
            row["blockwise_rel_err"] = rel_err(decode_attn_ref(q, prefix, tail_k, tail_v, scaling), want)
            if max(row["per_query_rel_err"], row["blockwise_rel_err"]) > TOL:
                row["error"] = "a path is off the fp32 reference"
                tqdm.write(f"FAILED check: {row}")
            else:
                row["per_query_us"] = wall_clock_us(synchronised(
                    lambda: decode_attn_per_query(q, prefix, tail_k, tail_v, scaling)), warmup=3, rep=15)
                row["blockwise_us"] = wall_clock_us(synchronised(
                    lambda: decode_attn_ref(q, prefix, tail_k, tail_v, scaling)), warmup=2, rep=7)
                row["per_query_speedup"] = row["blockwise_us"] / row["per_query_us"]
            rows.append(row)
    columns = [("model", "heads", ""), ("context", "context", ""), ("tokens", "new tokens", ""),
               ("per_query_us", "per token (µs)", ".1f"), ("blockwise_us", "blockwise (µs)", ".1f"),
               ("per_query_speedup", "per token / blockwise", ".2f"), ("per_query_rel_err", "err", ".1e")]
    for row in rows:
        row["context"] = fmt_ctx(row["context"])
    write_json(args.out, {**environment(), "command": "PYTHONPATH=. python benchmarks/multi_token_steps.py",
                          "rows": rows})
    print(markdown_table(rows, columns))
    print(f"(JSON: {args.out})")


if __name__ == "__main__":
    main()
