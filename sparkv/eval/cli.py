"""``sparkv eval``: RULER (generated offline), a needle grid, LongBench (local files), and reports.

Every run command takes the same press options and writes ``OUT/config.json``, ``OUT/predictions.jsonl`` (resumable)
and ``OUT/metrics.json``. Options given on the command line override ``--config FILE.yaml``, which overrides the
defaults. List options take commas and may be repeated: ``--press full --press snapkv,snapkv+spark``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from sparkv.eval.config import EvalConfig, EvalError

eval_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
_err = Console(stderr=True, soft_wrap=True)

# --- shared options ------------------------------------------------------------------------------------------------
Model = Annotated[Optional[str], typer.Option(
    "--model", help="smollm2 (default) | qwen2.5-coder-1.5b | qwen2.5-coder-0.5b | path to a .gguf file | local folder "
    "| hub id.")]
Press = Annotated[Optional[list[str]], typer.Option(
    "--press", help="full | snapkv | pyramidkv | streamingllm | spark | think | eviction+channel (snapkv+spark). "
    "Repeat or comma-separate for several; one prefill serves them all. Default: full.")]
KeyRatio = Annotated[Optional[list[str]], typer.Option(
    "--key-ratio", help="λ in [0,1): key channels pruned per token (SparK / ThinK). Several: 0.3,0.5,0.8.")]
Budget = Annotated[Optional[list[str]], typer.Option(
    "--budget", help="Tokens kept by eviction, window included (default 512). Several allowed.")]
TokenRatio = Annotated[Optional[float], typer.Option("--token-ratio", help="Evict this fraction of tokens instead.")]
Recovery = Annotated[Optional[list[str]], typer.Option(
    "--recovery",
    help="SparK recovery: mean | mean_linear | zero | constant | gaussian | exponential. Several allowed.")]
Saliency = Annotated[Optional[str], typer.Option("--saliency", help="SparK saliency: code (a·K², default) | paper.")]
RecoveryConstant = Annotated[Optional[float],
                             typer.Option("--recovery-constant", help="Magnitude for recovery=constant.")]
Backend = Annotated[Optional[str], typer.Option("--backend", help="auto | torch | triton.")]
Limit = Annotated[Optional[int],
                  typer.Option("--limit", help="Samples per task (RULER: per task and length, default 100).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Seed of generated data and sampled recoveries (42).")]
MaxContext = Annotated[Optional[int], typer.Option(
    "--max-context",
    help="Refuse prompts + generation longer than this (default: the model's max_position_embeddings).")]
MaxNewTokens = Annotated[Optional[int],
                         typer.Option("--max-new-tokens", help="Override each task's generation length.")]
ChatTemplate = Annotated[Optional[bool], typer.Option("--chat-template/--no-chat-template",
                                                      help="Wrap prompts in the tokenizer's chat template.")]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="float32 | bfloat16 | float16.")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu | cuda | cuda:1 ...")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (CLI wins).")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/<benchmark>).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Discard earlier predictions in --out.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", help="I/N: this process generates every N-th sample from the I-th; N processes share --out.")]
Haystack = Annotated[Optional[list[Path]], typer.Option(
    "--haystack", help="Haystack text file or folder of *.txt (repeat for several). Default: Paul Graham essays.")]
Lengths = Annotated[Optional[list[str]], typer.Option("--lengths", help="Lengths in model tokens, e.g. 4096,8192.")]


def _common(**kw: Any) -> dict[str, Any]:
    mapping = {"press": "presses", "key_ratio": "key_ratios", "budget": "budgets", "recovery": "recoveries"}
    out = {mapping.get(k, k): v for k, v in kw.items()}
    if out.get("out") is not None:
        out["out"] = str(out["out"])
    if out.get("haystack") is not None:
        out["haystack"] = [str(h) for h in out["haystack"]]
    if out.get("data_dir") is not None:
        out["data_dir"] = str(out["data_dir"])
    return out


def _run(benchmark: str, config: Path | None, overwrite: bool, quiet: bool, cli: dict[str, Any]) -> None:
    from sparkv.eval.runner import run_eval

    try:
        cfg = EvalConfig.resolve(benchmark, config, cli)
        metrics = run_eval(cfg, overwrite=overwrite, progress=not quiet)
    except (EvalError, FileNotFoundError) as exc:
        _err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    _print_summary(metrics, cfg.out)


def _print_summary(metrics: dict[str, Any], out: str) -> None:
    from rich.table import Table

    labels = list(metrics.get("presses", {}))
    table = Table(title=escape(f"{metrics.get('benchmark')} — {out}"))
    table.add_column("task")
    for label in labels:
        table.add_column(label, justify="right")
    for task, cells in metrics.get("scores", {}).items():
        table.add_row(task, *[f"{cells[label]:.2f}" if label in cells else "–" for label in labels])
    table.add_row("average", *[f"{metrics['average'].get(label, float('nan')):.2f}" for label in labels])
    Console().print(table)


@eval_app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    """Accuracy suites for compressed KV caches."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@eval_app.command()
def ruler(
    tasks: Annotated[Optional[list[str]], typer.Option(
        "--tasks", help="niah_single_1..3, niah_multikey_1..3, niah_multivalue, niah_multiquery, vt, cwe, fwe "
        "(default: all).")] = None,
    lengths: Lengths = None,
    haystack: Haystack = None,
    model: Model = None, press: Press = None, key_ratio: KeyRatio = None, budget: Budget = None,
    token_ratio: TokenRatio = None, recovery: Recovery = None, saliency: Saliency = None,
    recovery_constant: RecoveryConstant = None, backend: Backend = None, limit: Limit = None, seed: Seed = None,
    max_context: MaxContext = None, max_new_tokens: MaxNewTokens = None, chat_template: ChatTemplate = None,
    dtype: Dtype = None, device: Device = None, config: ConfigFile = None, out: Out = None, shard: Shard = None,
    overwrite: Overwrite = False, quiet: Quiet = False,
) -> None:
    """RULER's synthetic tasks, generated offline at exact token lengths (default 4096) for the model's tokenizer."""
    cli = _common(tasks=tasks, lengths=lengths, haystack=haystack, model=model, press=press, key_ratio=key_ratio,
                  budget=budget, token_ratio=token_ratio, recovery=recovery, saliency=saliency,
                  recovery_constant=recovery_constant, backend=backend, limit=limit, seed=seed,
                  max_context=max_context, max_new_tokens=max_new_tokens, chat_template=chat_template, dtype=dtype,
                  device=device, out=out, shard=shard)
    _run("ruler", config, overwrite, quiet, cli)


@eval_app.command()
def niah(
    haystack: Haystack = None,
    needle: Annotated[Optional[str], typer.Option("--needle", help="Sentence hidden in the haystack.")] = None,
    question: Annotated[Optional[str], typer.Option("--question", help="Question about the needle.")] = None,
    answer: Annotated[Optional[str], typer.Option("--answer", help="Expected answer (found = case-insensitive "
                                                  "substring of the reply).")] = None,
    lengths: Lengths = None,
    depths: Annotated[Optional[list[str]], typer.Option(
        "--depths", help="Needle depths as fractions, e.g. 0,0.25,0.5,0.75,1.")] = None,
    model: Model = None, press: Press = None, key_ratio: KeyRatio = None, budget: Budget = None,
    token_ratio: TokenRatio = None, recovery: Recovery = None, saliency: Saliency = None,
    recovery_constant: RecoveryConstant = None, backend: Backend = None, limit: Limit = None, seed: Seed = None,
    max_context: MaxContext = None, max_new_tokens: MaxNewTokens = None, chat_template: ChatTemplate = None,
    dtype: Dtype = None, device: Device = None, config: ConfigFile = None, out: Out = None, shard: Shard = None,
    overwrite: Overwrite = False, quiet: Quiet = False,
) -> None:
    """Needle in a haystack over lengths x depths; writes OUT/results.json and OUT/heatmap.png (one panel per press)."""
    cli = _common(haystack=haystack, needle=needle, question=question, answer=answer, lengths=lengths, depths=depths,
                  model=model, press=press, key_ratio=key_ratio, budget=budget, token_ratio=token_ratio,
                  recovery=recovery, saliency=saliency, recovery_constant=recovery_constant, backend=backend,
                  limit=limit, seed=seed, max_context=max_context, max_new_tokens=max_new_tokens,
                  chat_template=chat_template, dtype=dtype, device=device, out=out, shard=shard)
    _run("niah", config, overwrite, quiet, cli)


@eval_app.command()
def longbench(
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Folder with LongBench's <task>.jsonl files (its data.zip, unpacked).")] = None,
    tasks: Annotated[Optional[list[str]], typer.Option(
        "--tasks", help="English tasks (default: all 16): narrativeqa qasper multifieldqa_en hotpotqa 2wikimqa "
        "musique gov_report qmsum multi_news trec triviaqa samsum passage_count passage_retrieval_en lcc "
        "repobench-p.")] = None,
    max_length: Annotated[Optional[int], typer.Option(
        "--max-length", help="Prompt tokens kept by middle truncation (default: model context - generation length - "
                         "the prompt template's tokens).")
    ] = None,
    longbench_e: Annotated[Optional[bool], typer.Option(
        "--longbench-e/--no-longbench-e", help="Use the <task>_e.jsonl files; adds 0-4k/4-8k/8k+ scores.")] = None,
    model: Model = None, press: Press = None, key_ratio: KeyRatio = None, budget: Budget = None,
    token_ratio: TokenRatio = None, recovery: Recovery = None, saliency: Saliency = None,
    recovery_constant: RecoveryConstant = None, backend: Backend = None, limit: Limit = None, seed: Seed = None,
    max_context: MaxContext = None, max_new_tokens: MaxNewTokens = None,
    dtype: Dtype = None, device: Device = None, config: ConfigFile = None, out: Out = None, shard: Shard = None,
    overwrite: Overwrite = False, quiet: Quiet = False,
) -> None:
    """LongBench (English) from local JSONL files, with the official prompts, truncation and metrics."""
    cli = _common(data_dir=data_dir, tasks=tasks, max_length=max_length, longbench_e=longbench_e, model=model,
                  press=press, key_ratio=key_ratio, budget=budget, token_ratio=token_ratio, recovery=recovery,
                  saliency=saliency, recovery_constant=recovery_constant, backend=backend, limit=limit, seed=seed,
                  max_context=max_context, max_new_tokens=max_new_tokens, dtype=dtype, device=device, out=out,
                  shard=shard)
    _run("longbench", config, overwrite, quiet, cli)


@eval_app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (finished, or unfinished: then the "
                                                    "predictions so far are aggregated).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Where report.md and plots go (default: first run).")]
    = None,
    reference: Annotated[Optional[str], typer.Option(
        "--reference", help="Press label the paired differences are taken against (default: full, if present), "
        "e.g. 'spark@0.8/zero'.")] = None,
) -> None:
    """Markdown tables (task x press), KV-memory table, paired differences with 95% intervals, and accuracy vs λ
    plot when the runs vary λ."""
    from sparkv.eval.report import write_report

    try:
        text, files = write_report(run_dirs, out, reference=reference)
    except (FileNotFoundError, ValueError) as exc:
        _err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    typer.echo(text)
    for f in files:
        _err.print(escape(f"wrote {f}"))
