"""``sparkv`` command line: generate, demo, memory, and the eval suite (``sparkv eval ...``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparkv.config import parse_press

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
MODEL_HELP = "smollm2 | qwen2.5-coder-1.5b | qwen2.5-coder-0.5b | path to a .gguf file | local folder | hub id"
console = Console(stderr=True)


def _version(show: bool) -> None:
    if show:
        import sparkv

        typer.echo(f"sparkv {sparkv.__version__}")
        raise typer.Exit()


@app.callback()
def _main(show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                            help="Print the installed version and exit.")) -> None:
    """``sparkv`` command line: generate, demo, memory, and the eval suite (``sparkv eval ...``)."""


try:  # the eval harness lives in its own module; mount it when present
    from sparkv.eval.cli import eval_app

    app.add_typer(eval_app, name="eval", help="Accuracy suites: RULER (offline), needle grid, LongBench (local).")
except ImportError:  # pragma: no cover - only while the harness is absent
    pass


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def _press_from_options(press: str, key_ratio: float, budget: int | None, token_ratio: float | None, recovery: str,
                        saliency: str, backend: str):
    try:
        return parse_press(press, key_ratio=key_ratio, budget=budget, token_ratio=token_ratio, recovery=recovery,
                           saliency=saliency, backend=backend)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err


def _warn_unused_options(ctx: typer.Context, press: str, cfg) -> None:
    """Say which options given on the command line the press does not use: they change nothing, and a run that
    silently ignored ``--key-ratio 0.8`` would be mistaken for one that pruned."""
    from sparkv.config import SparKConfig

    def given(name: str) -> bool:  # by name: typer >= 0.22 vendors click, with an enum of its own
        source = ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    unused = []
    if cfg.eviction is None:
        unused += [flag for flag, name in (("--budget", "budget"), ("--token-ratio", "token_ratio")) if given(name)]
    if cfg.channels is None and given("key_ratio"):
        unused.append("--key-ratio")
    if not isinstance(cfg.channels, SparKConfig):
        unused += [flag for flag, name in (("--recovery", "recovery"), ("--saliency", "saliency")) if given(name)]
    if unused:
        console.print(f"[yellow]warning:[/yellow] press {escape(press)!r} does not use {', '.join(unused)}, so "
                      f"{'it changes' if len(unused) == 1 else 'they change'} nothing")


def _load(model: str, dtype: str | None, device: str | None):
    """``sparkv.load_model`` with each bad option reported as a usage error naming it (no traceback)."""
    from sparkv.models import LoadOptionError, load_model_naming_the_option

    try:
        return load_model_naming_the_option(model, dtype, device)
    except LoadOptionError as err:
        hint = {"device": "--device", "dtype": "--dtype"}.get(err.option, "--model (or SPARKV_CACHE)")
        raise typer.BadParameter(str(err), param_hint=hint) from err


def _memory_fields(memory) -> dict:
    return {
        "dense_kv_bytes": memory.dense_kv_bytes,
        "compressed_kv_bytes": memory.compressed_kv_bytes,
        "allocated_kv_bytes": memory.allocated_kv_bytes,
        "nominal_kv_bytes": memory.nominal_kv_bytes,
    }


def _memory_line(memory) -> str:
    dense = memory.dense_kv_bytes
    ratio = lambda n: f"{100 * n / dense:.1f}%" if dense else "-"  # noqa: E731
    return (f"KV cache: dense {_fmt_bytes(dense)} | compressed (exact) {_fmt_bytes(memory.compressed_kv_bytes)} "
            f"({ratio(memory.compressed_kv_bytes)}) | allocated {_fmt_bytes(memory.allocated_kv_bytes)} | "
            f"nominal (paper-style) {_fmt_bytes(memory.nominal_kv_bytes)} ({ratio(memory.nominal_kv_bytes)})")


@app.command()
def generate(
    ctx: typer.Context,
    context_file: Path = typer.Option(..., "--context-file", exists=True, dir_okay=False, help="Text file."),
    question: str = typer.Option(..., "--question", help="Question asked after the context."),
    model: str = typer.Option("smollm2", "--model", help=MODEL_HELP),
    press: str = typer.Option("snapkv+spark", "--press", help="full | snapkv | pyramidkv | streamingllm | think | "
                              "spark | eviction+channel, e.g. snapkv+spark"),
    key_ratio: float = typer.Option(0.5, "--key-ratio", help="λ, key channels pruned per token, in [0, 1)."),
    budget: int | None = typer.Option(None, "--budget", help="Tokens kept by eviction (window included)."),
    token_ratio: float | None = typer.Option(None, "--token-ratio", help="Fraction of tokens evicted, in [0, 1)."),
    recovery: str = typer.Option("mean", "--recovery", help="mean | mean_linear | zero | constant | gaussian | "
                                 "exponential"),
    saliency: str = typer.Option("code", "--saliency", help="code (a·K²) | paper (a·|K|)"),
    backend: str = typer.Option("auto", "--backend", help="auto | torch | triton"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    num_beams: int = typer.Option(1, "--num-beams", min=1, help="Beam search with this many beams (1: greedy); "
                                  "the cache holds one compressed copy of the prompt per beam."),
    prefill_chunk_size: int | None = typer.Option(None, "--prefill-chunk-size", min=1, help="Prefill the prompt in "
                                                  "chunks of this many tokens (less activation memory; the cache "
                                                  "compresses after the last chunk, as after one prefill)."),
    prompt_lookup: int | None = typer.Option(None, "--prompt-lookup", min=1, help="Prompt lookup decoding: each "
                                             "step verifies up to this many tokens copied from the prompt (the same "
                                             "answer as greedy decoding, in fewer steps where it quotes the text)."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16"),
    device: str | None = typer.Option(None, "--device"),
    max_context: int | None = typer.Option(None, "--max-context", min=1, help="Refuse prompt + generation longer "
                                           "than this (default: the model's max_position_embeddings)."),
    chat_template: bool = typer.Option(True, "--chat-template/--no-chat-template"),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="Replay each decode step from one CUDA graph (one "
                                    "CUDA device; full-attention models; greedy or sampled, not with beams)."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
) -> None:
    """Answer QUESTION about the text in CONTEXT_FILE through a compressed KV cache."""
    import sparkv

    if budget is None and token_ratio is None and any(p in press for p in ("snapkv", "pyramidkv", "streamingllm")):
        budget = 512
    press_cfg = _press_from_options(press, key_ratio, budget, token_ratio, recovery, saliency, backend)
    _warn_unused_options(ctx, press, press_cfg)
    if prompt_lookup is not None and num_beams > 1:
        raise typer.BadParameter("prompt lookup needs greedy decoding (--num-beams 1): under beam search transformers "
                                 "drops it", param_hint="--prompt-lookup / --num-beams")
    try:
        context = context_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise typer.BadParameter(f"{context_file} is not UTF-8 text ({err.reason} at byte {err.start}); convert it "
                                 "first, e.g. `iconv -f latin1 -t utf-8`", param_hint="--context-file") from err
    if not context.strip():
        raise typer.BadParameter(f"--context-file {context_file} is empty")
    lm, tokenizer = _load(model, dtype, device)
    try:
        result = sparkv.generate(lm, tokenizer, context, question, press_cfg, max_new_tokens=max_new_tokens,
                                 chat_template=chat_template, max_context=max_context, cuda_graph=cuda_graph,
                                 num_beams=num_beams, prefill_chunk_size=prefill_chunk_size,
                                 **({"prompt_lookup_num_tokens": prompt_lookup} if prompt_lookup else {}))
    except ValueError as err:  # short context, unsupported model or option: say so without a traceback
        console.print(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(2) from err
    channels = press_cfg.channels
    record = {
        "answer": result.answer,
        "model": model,
        "press": press_cfg.name,
        "key_ratio": channels.channel_prune_ratio if channels is not None else 0.0,
        "recovery": getattr(channels, "recovery", None),
        "budget": press_cfg.eviction.token_budget if press_cfg.eviction is not None else None,
        "token_ratio": press_cfg.eviction.token_ratio if press_cfg.eviction is not None else None,
        "context_tokens": result.context_tokens,
        "num_beams": num_beams,
        "prefill_chunk_size": prefill_chunk_size,
        "prompt_lookup": prompt_lookup,
        **_memory_fields(result.memory),
    }
    if as_json:
        sys.stdout.write(json.dumps(record) + "\n")
        return
    print(result.answer)
    console.print(_memory_line(result.memory))


DEMO_NEEDLE = "The secret ingredient of the best pizza in Lisbon is {value}."
DEMO_QUESTION = "What is the secret ingredient of the best pizza in Lisbon? Answer in a few words."


@app.command()
def demo(
    model: str = typer.Option("smollm2", "--model", help=MODEL_HELP),
    context_tokens: int = typer.Option(2000, "--context-tokens", min=200),
    depth: float = typer.Option(0.5, "--depth", min=0.0, max=1.0, help="Needle position, 0 = start, 1 = end."),
    value: str = typer.Option("smoked paprika", "--value", help="The fact hidden in the default needle."),
    haystack: list[Path] | None = typer.Option(
        None, "--haystack", help="Text file or folder of *.txt (repeat for several). Default: Paul Graham essays."),
    needle: str | None = typer.Option(None, "--needle", help=f"Sentence hidden in the haystack. Default: "
                                      f"{DEMO_NEEDLE!r} with --value."),
    question: str = typer.Option(DEMO_QUESTION, "--question", help="Question asked after the context."),
    answer: str | None = typer.Option(None, "--answer", help="Found = this text in the reply (ignoring case); "
                                      "must occur in --needle. Default: --value."),
    key_ratio: float = typer.Option(0.5, "--key-ratio"),
    budget: int = typer.Option(512, "--budget"),
    backend: str = typer.Option("auto", "--backend"),
    max_new_tokens: int = typer.Option(24, "--max-new-tokens", min=1),
    dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16"),
    device: str | None = typer.Option(None, "--device"),
    max_context: int | None = typer.Option(None, "--max-context", min=1, help="Refuse prompt + generation longer "
                                           "than this (default: the model's max_position_embeddings)."),
) -> None:
    """Needle in a haystack on the embedded default: full cache vs SnapKV vs SnapKV+SparK vs SparK alone."""
    import sparkv
    from sparkv.data import read_haystack
    from sparkv.eval.tasks.common import PromptFormat
    from sparkv.eval.tasks.niah import HaystackTokens, check_needle_test, fit_context

    if answer is None and not value.strip():
        raise typer.BadParameter("must not be empty (it is the answer looked for)", param_hint="--value")
    needle = DEMO_NEEDLE.format(value=value) if needle is None else needle
    answer = (value if answer is None else answer).strip()
    if not needle.strip():
        raise typer.BadParameter("must not be empty", param_hint="--needle")
    if not answer:
        raise typer.BadParameter("must not be empty (every reply would contain it)", param_hint="--answer")
    if not question.strip():
        raise typer.BadParameter("must not be empty (the reply answers it)", param_hint="--question")
    try:
        text = read_haystack(haystack)
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="--haystack") from err
    try:  # the answer in the needle, and nowhere else the model sees
        check_needle_test(needle, question, answer, text)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--answer") from err
    presses = {name: _press_from_options(name, key_ratio, budget, None, "mean", "code", backend)
               for name in ("full", "snapkv", "snapkv+spark", "spark")}
    lm, tokenizer = _load(model, dtype, device)
    try:
        hay = HaystackTokens(PromptFormat(tokenizer), text)
        haystack_tokens = len(hay.ids)  # before fit_context repeats a short haystack to the length asked for
        # The needle goes in at a sentence boundary, so its depth and the context's length are the nearest a cut of
        # this text allows: the title reports those.
        context, actual_depth, actual_tokens = fit_context(hay, needle, depth, context_tokens)
    except ValueError as err:  # e.g. a needle longer than the context
        raise typer.BadParameter(str(err), param_hint="--needle / --context-tokens") from err
    try:
        results = sparkv.generate_many(lm, tokenizer, context, question, list(presses.values()),
                                       max_new_tokens=max_new_tokens, max_context=max_context)
    except ValueError as err:  # too long for the model, budget not above the window...: no traceback
        console.print(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(2) from err
    source = "Paul Graham" if not haystack else ", ".join(Path(h).name for h in haystack)
    if haystack_tokens < context_tokens:  # the text repeats: a fact in it appears more than once
        source += f", its {haystack_tokens} tokens repeated to fill"
    placed = f"depth {actual_depth:.0%}" + (f" (asked {depth:.0%})" if round(100 * actual_depth) != round(100 * depth)
                                             else "")
    length = f"{actual_tokens}-token" + (f" (asked {context_tokens})" if actual_tokens != context_tokens else "")
    title = f"{model}: needle at {placed} of a {length} haystack ({source}); λ={key_ratio}, budget={budget}"
    table = Table(title=escape(title))
    for col in ("press", "found", "answer", "KV exact", "KV allocated", "vs dense", "nominal (paper)"):
        table.add_column(col, no_wrap=True, max_width=72 if col == "answer" else None)
    for name, res in zip(presses, results):
        mem = res.memory
        found = answer.lower() in res.answer.lower()
        table.add_row(name, "yes" if found else "no", escape(res.answer.strip().replace("\n", " ")[:72]),
                      _fmt_bytes(mem.compressed_kv_bytes), _fmt_bytes(mem.allocated_kv_bytes),
                      f"{100 * mem.compressed_kv_bytes / mem.dense_kv_bytes:.1f}%", _fmt_bytes(mem.nominal_kv_bytes))
    table.caption = ("KV exact: every byte of the layouts, metadata and the decode tail's reserved slots included "
                     "(so the full cache shows a little over 100 %); allocated: the storages measured; nominal: the "
                     "paper's accounting ((1 − λ/2) of the surviving KV, metadata ignored).")
    Console(width=160).print(table)


@app.command()
def memory(
    model: str = typer.Option("smollm2", "--model", help=MODEL_HELP),
    context_tokens: int = typer.Option(4096, "--context-tokens", min=64),
    key_ratios: str = typer.Option("0.5,0.8", "--key-ratios"),
    budget: int = typer.Option(512, "--budget"),
    backend: str = typer.Option("auto", "--backend"),
    dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16"),
    device: str | None = typer.Option(None, "--device"),
    as_json: bool = typer.Option(False, "--json"),
    max_context: int | None = typer.Option(None, "--max-context", min=1,
                                              help="Refuse prompts longer than this (default: the model's "
                                                   "max_position_embeddings)."),
) -> None:
    """Memory table: SparK at each λ, with and without SnapKV, on a real prompt (bytes counted three ways)."""
    import sparkv
    from sparkv.data import paul_graham_essays
    from sparkv.eval.tasks.niah import build_context

    try:
        ratios = [float(r) for r in key_ratios.split(",")]
    except ValueError as err:
        raise typer.BadParameter(f"expected comma-separated numbers in [0, 1), got {key_ratios!r}",
                                 param_hint="--key-ratios") from err
    names = ["full", "snapkv"]
    presses = [_press_from_options("full", 0.0, None, None, "mean", "code", backend),
               _press_from_options("snapkv", 0.0, budget, None, "mean", "code", backend)]
    for ratio in ratios:  # every press is checked before the model loads
        for base in ("spark", "snapkv+spark"):
            names.append(f"{base} λ={ratio}")
            presses.append(_press_from_options(base, ratio, budget, None, "mean", "code", backend))
    lm, tokenizer = _load(model, dtype, device)
    context = build_context(tokenizer, paul_graham_essays(), "", context_tokens, 0.5)
    try:
        results = sparkv.generate_many(lm, tokenizer, context, "Summarise the text in one sentence.", presses,
                                       max_new_tokens=1, max_context=max_context)
    except ValueError as err:  # e.g. a context longer than the model takes: no traceback
        console.print(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(2) from err
    rows = [{"press": n, "context_tokens": r.context_tokens, **_memory_fields(r.memory)}
            for n, r in zip(names, results)]
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    print(f"{model}, {lm.dtype}, {rows[0]['context_tokens']} prompt tokens, budget {budget}; bytes of K and V, "
          "all layers")
    print("| press | dense (plain cache) | exact (all metadata) | allocated (measured) | nominal (paper-style) "
          "| exact / dense | nominal / dense |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        dense = r["dense_kv_bytes"]
        print(f"| {r['press']} | {dense:,} | {r['compressed_kv_bytes']:,} | {r['allocated_kv_bytes']:,} | "
              f"{r['nominal_kv_bytes']:,} | {100 * r['compressed_kv_bytes'] / dense:.1f}% | "
              f"{100 * r['nominal_kv_bytes'] / dense:.1f}% |")


if __name__ == "__main__":  # pragma: no cover
    app()
