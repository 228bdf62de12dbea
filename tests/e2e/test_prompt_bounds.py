"""The text encoders read a bounded prefix of the prompt: the same tokens and embeddings, at a small cost."""

from __future__ import annotations

import random

import pytest
import torch

from fluxserve.engine import prompts
from fluxserve.engine.sampling import MAX_SEQUENCE_LENGTH

pytestmark = pytest.mark.abuse

WORDS = ["a", "red", "fox", "in", "the", "snow,", "photo", "cat!", "über", "東京", "x9", "'s"]


def wordy(chars: int, seed: int = 0) -> str:
    """Words from both tokenizers' vocabularies and outside them, joined by varied whitespace."""
    rng = random.Random(seed)
    parts, length = [], 0
    while length < chars:
        parts += [rng.choice(WORDS), rng.choice([" ", "  ", "\n", "\t "])]
        length += len(parts[-2]) + len(parts[-1])
    return "".join(parts)[:chars]


def reference(engine, prompt: str):
    """diffusers' own encoding of the whole prompt, as encode_text did before prompts were bounded."""
    embeds, pooled, _ = engine.pipe.encode_prompt(
        prompt=prompt, prompt_2=None, device="cpu", num_images_per_prompt=1,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    return embeds, pooled


def tokenizers(engine):
    pipe = engine.pipe
    return [(pipe.tokenizer, pipe.tokenizer_max_length), (pipe.tokenizer_2, MAX_SEQUENCE_LENGTH)]


@pytest.mark.parametrize("seed", range(5))
def test_a_bounded_prompt_has_the_tokens_the_model_reads(tiny_engine, seed):
    prompt = wordy(30_000, seed)
    for tokenizer, budget in tokenizers(tiny_engine):
        prefix = prompts.bounded(prompt, tokenizer, budget)
        assert len(prefix) < 10_000
        full = tokenizer(prompt, max_length=budget, truncation=True)["input_ids"]
        assert tokenizer(prefix, max_length=budget, truncation=True)["input_ids"] == full


def test_a_short_prompt_is_left_alone(tiny_engine):
    for tokenizer, budget in tokenizers(tiny_engine):
        assert prompts.bounded("a red fox", tokenizer, budget) == "a red fox"


def test_a_long_prompt_encodes_as_diffusers_encodes_it_whole(tiny_engine):
    prompt = wordy(40_000, seed=7)
    embeds, pooled = tiny_engine.encode_text(prompt)
    want_embeds, want_pooled = reference(tiny_engine, prompt)
    assert torch.equal(embeds, want_embeds) and torch.equal(pooled, want_pooled)


@pytest.mark.parametrize("prompt", [wordy(1_000_000, seed=3), "x" * 1_000_000, " ".join(["y"] * 500_000)])
def test_a_1_mb_prompt_costs_the_tokenizers_a_bounded_prefix_only(tiny_engine, prompt, monkeypatch):
    """What a 1 MB prompt costs, without a clock: neither tokenizer is ever handed more than its ceiling of
    characters (before bounding, both tokenized all of it: 9.7 s a megabyte)."""
    seen: dict[str, int] = {}
    for tokenizer, budget in tokenizers(tiny_engine):
        cls, original = type(tokenizer), type(tokenizer).__call__

        def spy(self, text=None, *args, _original=original, **kwargs):
            texts = [text] if isinstance(text, str) else list(text or [])
            name = type(self).__name__
            seen[name] = max([seen.get(name, 0), *map(len, texts)])
            return _original(self, text, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", spy)
    embeds, pooled = tiny_engine.encode_text(prompt)
    ceilings = {type(t).__name__: budget * prompts.MAX_CHARS_PER_TOKEN for t, budget in tokenizers(tiny_engine)}
    assert seen.keys() == ceilings.keys(), "both tokenizers ran"
    for name, longest in seen.items():
        assert longest <= ceilings[name], f"{name} tokenized {longest} characters"
    monkeypatch.undo()
    # The same embedding as diffusers gives its 40,000-character prefix, far more than the encoders read.
    want_embeds, want_pooled = reference(tiny_engine, prompt[:40_000])
    assert torch.equal(embeds, want_embeds) and torch.equal(pooled, want_pooled)
