"""Bound a prompt to what a text encoder reads, before its tokenizer sees it.

Tokenizers truncate only after tokenizing the whole string (and diffusers tokenizes it once more, untruncated,
to warn): a 1 MB prompt took 9.7 s and a 25 MB one held the worker for minutes, to keep 77 or 256 tokens.

Why a prefix keeps every token: CLIP's BPE and T5's SentencePiece both split the text at whitespace first and
tokenize each piece on its own, so a prefix cut just before a whitespace character tokenizes to exactly the
leading tokens of the whole text. We cut there, tokenize the prefix (cheap: it is short), and stop once it
holds at least as many tokens as the encoder reads; otherwise the prefix doubles. Two limits keep garbage cheap,
and only garbage ever reaches them: a "word" with no whitespace for half the window is cut inside (its own
tokens may then differ), and past MAX_CHARS_PER_TOKEN characters per token the prefix is used as it stands.
"""

from __future__ import annotations

from typing import Any

# Start with room for this many characters per token (English runs about 4); double until the budget is met.
START_CHARS_PER_TOKEN = 8
MAX_CHARS_PER_TOKEN = 64


def bounded(prompt: str, tokenizer: Any, budget: int) -> str:
    """The shortest whitespace-cut prefix of prompt (doubling) that gives the tokenizer at least `budget`
    tokens, or the prompt itself when it is shorter than that."""
    window = budget * START_CHARS_PER_TOKEN
    ceiling = budget * MAX_CHARS_PER_TOKEN
    while len(prompt) > window:
        prefix = prompt[: cut(prompt, window)]
        if window >= ceiling or token_count(tokenizer, prefix) >= budget:
            return prefix
        window *= 2
    return prompt


def cut(prompt: str, window: int) -> int:
    """The last whitespace boundary at or before `window`, unless that loses more than half the window."""
    for index in range(window, window // 2, -1):
        if prompt[index].isspace():
            return index
    return window


def token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
