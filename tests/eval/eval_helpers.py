"""Helpers of the eval tests (importable by name: ``from eval_helpers import ScriptedBackend``)."""

from __future__ import annotations

import random
from typing import Any

from sparkv.eval.runner import Generation


class ScriptedBackend:
    """Answers like a model would, without one.

    ``full`` (and any label in ``perfect``) answers with all references; other presses answer with the first
    reference only when ``partial`` else with nothing useful. Counts calls; can fail after ``fail_after`` calls.
    """

    def __init__(self, tokenizer: Any, max_context: int | None = 8192, fail_after: int | None = None,
                 prefix_in_reply: bool = True):
        self.tokenizer = tokenizer
        self.max_context = max_context
        self.prefix_in_reply = prefix_in_reply
        self.fail_after = fail_after
        self.calls: list[tuple[str, str, list[str]]] = []

    def generate_many(self, sample, presses):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        from sparkv.eval.config import press_label

        labels = [press_label(p) for p in presses]
        self.calls.append((sample.task, sample.id, labels))
        out = []
        rng = random.Random(sample.id)
        for label in labels:
            if label == "full":
                answer = " ".join(sample.answers)
            elif "spark" in label:
                answer = sample.answers[0]
            else:
                answer = f"no idea {rng.randint(0, 9)}"
            dense = 1000
            ratio = 0.5 if ("spark" in label or "think" in label) else 1.0
            out.append(Generation(answer=answer, context_tokens=None, memory={
                "dense_kv_bytes": dense, "compressed_kv_bytes": int(dense * ratio * 0.9),
                "allocated_kv_bytes": int(dense * ratio), "nominal_kv_bytes": int(dense * ratio)}))
        return out
