"""End to end on the packaged SmolLM2-135M-Instruct (real weights, real text): SparK λ=0.5 keeps the needles.

Marked ``model``: it converts the packaged GGUF once (~30 s) and runs 2k-token prefills on the CPU.
"""

import json
import re

import pytest
import torch

sparkv = pytest.importorskip("sparkv")
pytestmark = pytest.mark.model

NEEDLES = [
    ("The special magic number of Rotterdam is 7481.", "What is the special magic number of Rotterdam?", "7481"),
    ("The password to the old lighthouse is tangerine.", "What is the password to the old lighthouse?", "tangerine"),
]
DEPTHS = (0.25, 0.5, 0.75)


@pytest.fixture(scope="module")
def smollm2():
    try:
        return sparkv.load_model("smollm2", dtype="float32", device="cpu")
    except FileNotFoundError as err:  # the package is installed by `make test`; a bare checkout says why
        pytest.skip(str(err))


def test_spark_half_retrieves_what_full_cache_retrieves(smollm2):
    from sparkv.data import paul_graham_essays
    from sparkv.eval.tasks.niah import build_context

    model, tokenizer = smollm2
    haystack = paul_graham_essays()
    presses = [sparkv.parse_press("full"), sparkv.parse_press("spark", key_ratio=0.5)]
    found = {"full": 0, "spark": 0}
    missed = []
    for needle, question, answer in NEEDLES:
        for depth in DEPTHS:
            context = build_context(tokenizer, haystack, needle, 2000, depth)
            full, spark = sparkv.generate_many(model, tokenizer, context, question, presses, max_new_tokens=16)
            assert 1900 <= full.context_tokens <= 2200
            hit_full = answer in full.answer.lower()
            hit_spark = answer in spark.answer.lower()
            found["full"] += hit_full
            found["spark"] += hit_spark
            if hit_full and not hit_spark:
                missed.append((needle, depth, spark.answer))
            assert spark.memory.compressed_kv_bytes < full.memory.compressed_kv_bytes
    # The full cache must find most needles, or this test says nothing about SparK.
    assert found["full"] >= 4, found
    assert not missed, json.dumps(missed)


def test_cli_generate_json(tmp_path, smollm2):
    from typer.testing import CliRunner

    from sparkv.cli import app

    ctx = tmp_path / "ctx.txt"
    ctx.write_text("Alice keeps her bicycle in the blue shed behind the bakery. " * 20
                   + "The code word for the meeting is marmalade. " + "The weather was mild that week. " * 20)

    def generate(*extra):
        result = CliRunner().invoke(app, ["generate", "--context-file", str(ctx), "--question",
                                          "What is the code word?", "--press", "snapkv+spark", "--key-ratio", "0.8",
                                          "--budget", "128", "--max-new-tokens", "8", "--json", "--dtype", "float32",
                                          "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    record = generate()
    for field in ("answer", "model", "press", "key_ratio", "budget", "context_tokens", "dense_kv_bytes",
                  "compressed_kv_bytes", "allocated_kv_bytes", "nominal_kv_bytes"):
        assert field in record
    assert record["press"] == "snapkv+spark" and record["key_ratio"] == 0.8 and record["budget"] == 128
    assert record["compressed_kv_bytes"] == record["allocated_kv_bytes"]
    assert record["compressed_kv_bytes"] < record["dense_kv_bytes"]
    beams = generate("--num-beams", "3")
    assert beams["num_beams"] == 3 and record["num_beams"] == 1 and beams["answer"].strip()
    # one compressed copy of the prompt per beam: three times the prefix, plus three rows of tail
    assert 3 * record["compressed_kv_bytes"] <= beams["compressed_kv_bytes"] == beams["allocated_kv_bytes"]
    chunked = generate("--prefill-chunk-size", "100")
    assert chunked["prefill_chunk_size"] == 100 and record["prefill_chunk_size"] is None
    assert chunked["answer"] == record["answer"]  # the cache compresses as after one prefill
    assert chunked["compressed_kv_bytes"] == record["compressed_kv_bytes"] == chunked["allocated_kv_bytes"]
    lookup = generate("--prompt-lookup", "4")
    assert lookup["prompt_lookup"] == 4 and record["prompt_lookup"] is None
    assert lookup["answer"] == record["answer"]  # candidates verified, the greedy answer kept
    assert lookup["compressed_kv_bytes"] == record["compressed_kv_bytes"]


def test_cli_short_context_is_a_clear_error(tmp_path, smollm2):
    from typer.testing import CliRunner

    from sparkv.cli import app

    ctx = tmp_path / "ctx.txt"
    ctx.write_text("Too short.")
    result = CliRunner().invoke(app, ["generate", "--context-file", str(ctx), "--question", "Why?", "--press", "spark",
                                      "--budget", "64", "--no-chat-template", "--dtype", "float32", "--device", "cpu"])
    assert result.exit_code == 2
    assert "window" in result.output and "Traceback" not in result.output
    # SparK alone evicts nothing: a budget given with it is pointed out, not silently dropped.
    assert "press 'spark' does not use --budget, so it changes nothing" in " ".join(result.output.split())


def test_cli_cuda_graph_off_cuda_is_a_clear_error(tmp_path, smollm2):
    from typer.testing import CliRunner

    from sparkv.cli import app

    ctx = tmp_path / "ctx.txt"
    ctx.write_text("The code word for the meeting is marmalade. " * 40)
    result = CliRunner().invoke(app, ["generate", "--context-file", str(ctx), "--question", "What is the code word?",
                                      "--press", "spark", "--cuda-graph", "--dtype", "float32", "--device", "cpu"])
    assert result.exit_code == 2
    assert "needs the whole model on one CUDA device" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_cli_demo_rejects_bad_needle_and_haystack(tmp_path):
    from typer.testing import CliRunner

    from sparkv.cli import app

    runner = CliRunner()
    # A custom needle needs the answer it states; the default --value is not in it.
    res = runner.invoke(app, ["demo", "--needle", "The gate code is 7341."])
    assert res.exit_code == 2 and "--answer" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["demo", "--needle", "The gate code is 7341.", "--answer", "9999"])
    assert res.exit_code == 2 and "does not occur in the needle" in res.output
    res = runner.invoke(app, ["demo", "--answer", " "])
    assert res.exit_code == 2 and "--answer" in res.output and "must not be empty" in res.output
    res = runner.invoke(app, ["demo", "--value", ""])  # the default needle's fact, and so the default answer
    assert res.exit_code == 2 and "--value" in res.output and "must not be empty" in res.output
    res = runner.invoke(app, ["demo", "--haystack", str(tmp_path / "missing.txt")])
    assert res.exit_code == 2 and "--haystack" in res.output and "does not exist" in res.output
    (tmp_path / "empty.txt").write_text("  \n")
    res = runner.invoke(app, ["demo", "--haystack", str(tmp_path / "empty.txt")])
    assert res.exit_code == 2 and "hold no text" in res.output
    # A test that a reply could pass without retrieving the needle, and text read as what it is not.
    flat = lambda r: " ".join(r.output.replace("│", " ").split())  # noqa: E731
    res = runner.invoke(app, ["demo", "--needle", "The gate code is 7341.", "--question", "What is the gate code?",
                              "--answer", "gate code"])
    assert res.exit_code == 2 and "occurs in the question" in flat(res)
    (tmp_path / "hay.txt").write_text("Cats sleep a lot. The orchard grows pears. " * 30)
    res = runner.invoke(app, ["demo", "--haystack", str(tmp_path / "hay.txt"), "--needle", "The fruit is pears.",
                              "--question", "What is the fruit?", "--answer", "pears"])
    assert res.exit_code == 2 and "occurs in the haystack text itself" in flat(res)
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me. ".encode("latin-1") * 30)
    res = runner.invoke(app, ["demo", "--haystack", str(tmp_path / "latin1.txt")])
    assert res.exit_code == 2 and "is not UTF-8 text" in flat(res)
    res = runner.invoke(app, ["demo", "--question", " "])
    assert res.exit_code == 2 and "--question" in flat(res) and "must not be empty" in flat(res)


def test_cli_demo_and_generate_refuse_too_long_inputs(smollm2, tmp_path):
    from typer.testing import CliRunner

    from sparkv.cli import app

    runner = CliRunner()
    needle = "The gate code is 7341. " + "It is a long needle. " * 60
    res = runner.invoke(app, ["demo", "--needle", needle, "--answer", "7341", "--context-tokens", "200",
                              "--dtype", "float32", "--device", "cpu"])
    assert res.exit_code == 2 and "the needle alone has" in " ".join(res.output.split())
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("A sentence of the report. " * 200)
    res = runner.invoke(app, ["generate", "--context-file", str(ctx), "--question", "Why?", "--press", "spark",
                              "--max-context", "300", "--dtype", "float32", "--device", "cpu"])
    assert res.exit_code == 2 and "exceed max_context (CLI: --max-context) = 300 tokens" in " ".join(res.output.split())


def test_cli_demo_custom_haystack_and_needle(smollm2, tmp_path):
    from typer.testing import CliRunner

    from sparkv.cli import app

    hay = tmp_path / "lighthouses.txt"
    hay.write_text(" ".join(f"Lighthouse number {i} stands on a rocky cape and its lamp turns every {i % 7 + 3} "
                            "seconds through the night." for i in range(60)))
    res = CliRunner().invoke(app, ["demo", "--haystack", str(hay), "--needle", "The keeper's cat is named Biscuit.",
                                   "--question", "What is the keeper's cat named?", "--answer", "Biscuit",
                                   "--context-tokens", "400", "--budget", "200", "--max-new-tokens", "8",
                                   "--dtype", "float32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "lighthouses.txt" in res.output and "400-token haystack" in res.output and "repeated" not in res.output
    for press in ("full", "snapkv", "snapkv+spark", "spark"):
        assert press in res.output
    # A haystack shorter than the context is repeated, and the title says so (a fact in it then appears twice).
    hay.write_text("Lighthouse number 1 stands on a rocky cape. Its lamp turns every 3 seconds through the night.")
    res = CliRunner().invoke(app, ["demo", "--haystack", str(hay), "--needle", "The keeper's cat is named Biscuit.",
                                   "--question", "What is the keeper's cat named?", "--answer", "Biscuit",
                                   "--context-tokens", "300", "--budget", "200", "--max-new-tokens", "4",
                                   "--dtype", "float32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert re.search(r"its \d+ tokens repeated to fill", " ".join(res.output.split())), res.output


def test_cli_demo_and_memory_tables(smollm2):
    from typer.testing import CliRunner

    from sparkv.cli import app

    runner = CliRunner()
    demo = runner.invoke(app, ["demo", "--context-tokens", "600", "--max-new-tokens", "12", "--budget", "256",
                               "--dtype", "float32", "--device", "cpu"])
    assert demo.exit_code == 0, demo.output
    for press in ("full", "snapkv", "snapkv+spark", "spark"):
        assert press in demo.output
    memory = runner.invoke(app, ["memory", "--context-tokens", "600", "--key-ratios", "0.5,0.8", "--budget", "256",
                                 "--dtype", "bfloat16", "--device", "cpu", "--json"])
    assert memory.exit_code == 0, memory.output
    rows = {r["press"]: r for r in json.loads(memory.stdout.strip().splitlines()[-1])}
    assert set(rows) == {"full", "snapkv", "spark λ=0.5", "snapkv+spark λ=0.5", "spark λ=0.8", "snapkv+spark λ=0.8"}
    for r in rows.values():
        assert r["compressed_kv_bytes"] == r["allocated_kv_bytes"]
    exact = {k: r["compressed_kv_bytes"] for k, r in rows.items()}
    assert exact["spark λ=0.8"] < exact["spark λ=0.5"] < exact["full"]
    assert exact["snapkv+spark λ=0.8"] < exact["snapkv+spark λ=0.5"] < exact["snapkv"] < exact["full"]
    too_long = runner.invoke(app, ["memory", "--context-tokens", "600", "--max-context", "500", "--dtype", "float32",
                                   "--device", "cpu"])
    assert too_long.exit_code == 2 and "exceed max_context" in " ".join(too_long.output.split())
    assert "Traceback" not in too_long.output


def test_cli_bad_options_are_usage_errors_naming_the_option(tmp_path):
    """Each refused before a model loads (fast, no model needed), exit code 2, no traceback."""
    from typer.testing import CliRunner

    from sparkv.cli import app

    ctx = tmp_path / "ctx.txt"
    ctx.write_text("Some report text. " * 50)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Caf\xe9 cr\xe8me, r\xe9sum\xe9. ".encode("latin-1") * 20)
    (tmp_path / "notmodel").mkdir()
    base = ["generate", "--context-file", str(ctx), "--question", "Why?"]
    cases = [
        (base + ["--device", "gpu"], "--device"),
        (base + ["--device", "cpu", "--dtype", "fp64"], "--dtype"),
        (base + ["--device", "cpu", "--model", str(tmp_path / "missing")], "no such folder"),
        (base + ["--device", "cpu", "--model", str(tmp_path / "notmodel")], "has no config.json"),
        (base + ["--press", "spark", "--budget", "0"], "budget"),
        (["generate", "--context-file", str(latin), "--question", "Why?"], "not UTF-8"),
        (["memory", "--key-ratios", "0.5,abc"], "--key-ratios"),
        (["memory", "--key-ratios", "1.0"], "channel_prune_ratio"),
        (base + ["--prompt-lookup", "3", "--num-beams", "2"], "prompt lookup needs greedy decoding"),
    ]
    if not torch.cuda.is_available():
        cases.append((base + ["--device", "cuda"], "no CUDA device"))
    runner = CliRunner()
    for args, message in cases:
        res = runner.invoke(app, args)
        flat = " ".join(res.output.replace("│", " ").split())
        assert res.exit_code == 2 and message in flat and "Traceback" not in flat, (args, res.output)


def test_cli_options_the_press_does_not_use_are_pointed_out(tmp_path):
    """An option given for a part the press lacks is named in a warning (printed before the model loads; a bad
    --device then stops the run without loading one), while options the press uses, or left at their defaults,
    raise none."""
    from typer.testing import CliRunner

    from sparkv.cli import app

    ctx = tmp_path / "ctx.txt"
    ctx.write_text("Some report text. " * 50)
    base = ["generate", "--context-file", str(ctx), "--question", "Why?", "--device", "gpu"]
    cases = [
        (["--press", "snapkv", "--key-ratio", "0.8", "--recovery", "zero"], "press 'snapkv' does not use "
                                                                            "--key-ratio, --recovery, so they change"),
        (["--press", "think", "--saliency", "paper"], "press 'think' does not use --saliency, so it changes"),
        (["--press", "full", "--token-ratio", "0.5"], "press 'full' does not use --token-ratio"),
        (["--press", "snapkv+spark", "--key-ratio", "0.8", "--recovery", "zero", "--budget", "128"], None),
        (["--press", "snapkv"], None),
    ]
    for args, message in cases:
        res = CliRunner().invoke(app, base + args)
        flat = " ".join(res.output.replace("│", " ").split())
        assert res.exit_code == 2 and "--device" in flat, (args, res.output)  # stopped at the device
        assert (message in flat) if message else "does not use" not in flat, (args, res.output)


def test_longbench_samsum_follows_the_official_generation_rule(smollm2, tmp_path):
    """samsum stops at a newline and may not start with one (pred.py: eos=[eos, "\\n"], min_length=ctx+1). On these
    few-shot prompts SmolLM2's greedy first token is a newline; without the rule the scorer saw the next line."""
    from sparkv.eval.config import EvalConfig
    from sparkv.eval.runner import run_eval

    shots = ("Dialogue: Amy: Are you coming tonight?\nBen: Yes, at 8.\nSummary: Ben is coming tonight at 8.\n\n"
             "Dialogue: Carl: I lost my keys.\nDana: Check the car.\nCarl: Found them!\nSummary: Carl found his keys "
             "in the car.\n\n")
    inputs = ["Dialogue: Eve: Lunch at noon?\nFrank: Sure.\nSummary: ",
              "Dialogue: Kim: happy birthday!!\nLeo: thank you :)\nSummary: "]
    refs = ["Eve and Frank will have lunch at noon.", "Kim wished Leo a happy birthday."]
    data = tmp_path / "data"
    data.mkdir()
    (data / "samsum.jsonl").write_text("".join(json.dumps({"input": i, "context": shots, "answers": [r], "length": 50,
                                                           "all_classes": None, "_id": f"s{k}"}) + "\n"
                                               for k, (i, r) in enumerate(zip(inputs, refs))))
    out = tmp_path / "run"
    run_eval(EvalConfig(benchmark="longbench", data_dir=str(data), tasks=["samsum"], presses=["full"],
                        model="smollm2", device="cpu", dtype="float32", out=str(out)), progress=False)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["prediction"].strip() and not r["prediction"].startswith("\n") and "\n" not in r["prediction"]
        assert r["score"] > 0
