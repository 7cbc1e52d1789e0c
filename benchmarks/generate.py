"""End to end on the GPU: KV bytes, peak memory and decode-step time of ``model.generate`` under each press.

A randomly initialised model with Llama-3.1-8B's attention layout (32 query / 8 KV heads, D = 128, hidden 4096,
intermediate 14336) costs exactly what the trained one costs; ``--layers`` trims the depth to fit the lease (KV
bytes scale linearly with it). Before anything is timed, the first-step logits of the full press and of SparK at
λ = 0 are checked against plain transformers generation (DynamicCache, sdpa): relative error < 1e-2. Greedy tokens
are not compared there: on a random model (near-uniform logits) bf16 rounding differences between attention kernels
legitimately flip them (``tokens_equal_plain`` reports it per row).

    PYTHONPATH=. python benchmarks/generate.py --context 32768 --batch 4 --layers 8 --new-tokens 32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import torch
from tqdm import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from benchmarks.common import RESULTS, environment

PRESSES = ["full", "spark@0.5", "spark@0.8", "snapkv+spark@0.8"]


def build_model(layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=4096, num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=14336, vocab_size=128256, rope_theta=500000.0,
                         max_position_embeddings=131072, attn_implementation="sdpa")
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    return model


class StepClock(LogitsProcessor):
    """A logits processor that only records when each generated token's forward pass has finished on the GPU
    (synchronised: what a streaming user waits for), so that decode steps are timed one by one, apart from the
    prefill."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        return scores

    def step_ms(self) -> list[float]:
        return [1e3 * (b - a) for a, b in zip(self.times, self.times[1:])]


def timed_generate(model, ids, mask, new_tokens: int, press=None):
    """One prefill + ``new_tokens`` greedy steps; returns (tokens, prefill s, decode-step ms (every step), cache,
    peak bytes of the prefill-only call).

    A short untimed run first compiles and autotunes every kernel the press uses (prefill and decode shapes), so
    the timings are steady-state. Peak memory counts the timed run only. Decode steps are timed one by one
    (:class:`StepClock`): the difference of two whole-run timings would carry the prefill's variance into them.
    """
    import sparkv

    clock = StepClock()
    kwargs = dict(attention_mask=mask, do_sample=False, pad_token_id=0, eos_token_id=None)
    p = sparkv.Press(press) if press is not None else None
    with p(model) if p is not None else contextlib.nullcontext():
        model.generate(ids, max_new_tokens=3, **kwargs)  # warm-up
        if p is not None:
            p.last_cache = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, **kwargs)
        torch.cuda.synchronize()
        prefill = time.perf_counter() - t0
        prefill_peak = torch.cuda.max_memory_allocated()
        if p is not None:
            p.last_cache = None
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        out = model.generate(ids, max_new_tokens=new_tokens, logits_processor=LogitsProcessorList([clock]), **kwargs)
        torch.cuda.synchronize()
    cache = p.last_cache if p is not None else None
    return out[:, ids.shape[1]:], prefill, clock.step_ms(), cache, prefill_peak


def step_stats(steps: list[float]) -> dict:
    """Median and spread of the decode-step times (ms)."""
    import statistics

    q = statistics.quantiles(steps, n=10) if len(steps) > 1 else steps * 9
    return {"decode_step_ms": statistics.median(steps), "decode_step_ms_p10": q[0], "decode_step_ms_p90": q[-1],
            "decode_steps_ms": steps}


def first_step_logits(model, ids, mask, press=None) -> torch.Tensor:
    """Logits of the first generated token (prefill through the press's attention), float32."""
    import sparkv

    p = sparkv.Press(press) if press is not None else None
    with p(model) if p is not None else contextlib.nullcontext():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False, pad_token_id=0,
                             eos_token_id=None, output_logits=True, return_dict_in_generate=True)
    return out.logits[0].float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--budget", type=int, default=2048)
    ap.add_argument("--out", default=str(RESULTS / "generate_h200.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("generate.py times decoding on a CUDA device; it needs CUDA")

    import sparkv
    from sparkv.kernels.decode_attn.fused import LAST_LAUNCH
    from sparkv.memory import memory_report

    torch.manual_seed(0)
    model = build_model(args.layers)
    ids = torch.randint(1, 128000, (args.batch, args.context), device="cuda")
    mask = torch.ones_like(ids)

    plain, plain_prefill, plain_steps, _, plain_prefill_peak = timed_generate(model, ids, mask, args.new_tokens)
    plain_peak = torch.cuda.max_memory_allocated()
    rows = [{"press": "plain DynamicCache", "prefill_s": plain_prefill, **step_stats(plain_steps),
             "peak_gpu_bytes": plain_peak, "prefill_peak_gpu_bytes": plain_prefill_peak}]
    # Gate: the sparkv cache path must reproduce plain transformers before anything is timed. Greedy tokens of a
    # random model (near-uniform logits) flip on bf16 rounding, so the check is on the first step's logits.
    ref = first_step_logits(model, ids, mask)
    for spec in ("full", "spark@0.0"):
        name, _, ratio = spec.partition("@")
        got = first_step_logits(model, ids, mask, sparkv.parse_press(name, key_ratio=float(ratio or 0.0)))
        err = ((got - ref).norm() / ref.norm()).item()
        print(f"gate: {spec} first-step logits rel err vs plain = {err:.2e}")
        if not err < 1e-2:
            raise SystemExit(f"{spec} press diverged from plain generation (rel err {err:.2e}): no timing counts")
    for spec in tqdm(PRESSES, desc="presses"):
        name, _, ratio = spec.partition("@")
        press = sparkv.parse_press(name, key_ratio=float(ratio or 0.0), budget=args.budget)
        tokens, prefill, steps, cache, prefill_peak = timed_generate(model, ids, mask, args.new_tokens, press)
        report = memory_report(cache)
        row = {"press": spec, "prefill_s": prefill, **step_stats(steps),
               "peak_gpu_bytes": torch.cuda.max_memory_allocated(), "prefill_peak_gpu_bytes": prefill_peak,
               **report.to_dict()}
        row["tokens_equal_plain"] = bool(torch.equal(tokens, plain))
        # Which split kernel took the compressed prefix on the last decode step, and which merged the splits.
        row["decode_kernels"] = {"prefix": LAST_LAUNCH.get("spark_kernel", "triton"),
                                 "combine": LAST_LAUNCH.get("combine")}
        rows.append(row)
        del cache  # else it stays allocated through the next press's run and inflates that peak

    result = {**environment(), "args": vars(args), "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nLlama-3.1-8B attention layout, {args.layers} layers, context {args.context}, batch {args.batch}, bf16, "
          f"{args.new_tokens} new tokens, budget {args.budget}")
    print("| press | KV exact | KV allocated | KV nominal | exact / dense | peak GPU (prefill only) "
          "| peak GPU (prefill + decode) | prefill s | decode ms/step, median (p10-p90) |")
    print("|---|---|---|---|---|---|---|---|---|")
    gib = 2**30
    for r in rows:
        exact = r.get("compressed_kv_bytes")
        dense = r.get("dense_kv_bytes")
        fmt = lambda n: f"{n / gib:.2f} GiB" if n is not None else "-"  # noqa: E731
        share = f"{100 * exact / dense:.1f}%" if exact and dense else "-"
        print(f"| {r['press']} | {fmt(exact)} | {fmt(r.get('allocated_kv_bytes'))} | {fmt(r.get('nominal_kv_bytes'))} "
              f"| {share} | {fmt(r['prefill_peak_gpu_bytes'])} | {fmt(r['peak_gpu_bytes'])} | {r['prefill_s']:.2f} "
              f"| {r['decode_step_ms']:.1f} ({r['decode_step_ms_p10']:.1f}-{r['decode_step_ms_p90']:.1f}) |")


if __name__ == "__main__":
    main()
