"""Probe behind REPRODUCTION.md's SnapKV finding: one 4k-token needle prompt, SnapKV at growing budgets.

    python scripts/snapkv_budget_probe.py [--model smollm2]

SmolLM2 tokenizes numbers digit by digit, and its observation window (the question) puts almost no attention on a
number's inner digits, so SnapKV drops them first even at large budgets. Prints each press's answer.
"""

import argparse

import sparkv
from sparkv.config import parse_press
from sparkv.data import paul_graham_essays
from sparkv.eval.tasks.niah import build_context

NEEDLE = "One of the special magic numbers for long-context is: 4530821."
QUESTION = ("What is the special magic number for long-context mentioned in the provided text? "
            "Answer with the number only.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--length", type=int, default=4000)
    args = ap.parse_args()
    model, tokenizer = sparkv.load_model(args.model)
    context = build_context(tokenizer, paul_graham_essays(), NEEDLE, args.length, 0.5)
    specs = [("full", None), ("spark", None), ("snapkv", 128), ("snapkv", 512), ("snapkv", 1024), ("snapkv", 2048),
             ("snapkv", 3000), ("streamingllm", 3900)]
    presses = [parse_press(name, budget=budget, key_ratio=0.8) for name, budget in specs]
    results = sparkv.generate_many(model, tokenizer, context, QUESTION, presses, max_new_tokens=28)
    print(f"| press | budget | answer (needle 4530821, {results[0].context_tokens} prompt tokens) |")
    print("|---|---|---|")
    for (name, budget), res in zip(specs, results):
        label = f"{name} λ=0.8" if name == "spark" else name
        answer = " ".join(res.answer.split())  # (an f-string holding " " needs Python 3.12)
        print(f"| {label} | {budget or '-'} | {answer} |")


if __name__ == "__main__":
    main()
