"""Fixtures of the eval tests: a small byte-level BPE tokenizer trained offline, a scripted generation backend."""

from __future__ import annotations

import pytest
from eval_helpers import ScriptedBackend

from sparkv.eval.tasks.common import PromptFormat

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="session")
def haystack_text() -> str:
    from sparkv.data import paul_graham_essays

    return paul_graham_essays()


@pytest.fixture(scope="session")
def bpe_tokenizer(haystack_text):
    """Byte-level BPE (vocab 1500) trained on the bundled essays, with BOS and a small chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<s>", "</s>", "<|user|>", "<|assistant|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([haystack_text[:200_000]], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    hf.chat_template = CHAT_TEMPLATE
    return hf


@pytest.fixture(scope="session")
def fmt(bpe_tokenizer) -> PromptFormat:
    return PromptFormat(bpe_tokenizer)


@pytest.fixture
def scripted(bpe_tokenizer):
    return ScriptedBackend(bpe_tokenizer)
