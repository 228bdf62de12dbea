"""JSON request bodies parsed with limits, before FastAPI and pydantic see them.

Python's json module accepts what JSON does not (NaN, Infinity, 1e999, lone surrogates) and has no cap on
nesting or size; pydantic let those values through to a 500, and the default 422 echoed a 25 MB body. Here
every check costs at most a few passes at C speed over a body whose size is already capped: the structure is
counted before anything is parsed, so a 2 MB array is refused in milliseconds, and only a body within the caps
is parsed and walked (at most max_items values). Each problem comes back as an error item naming its field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# A JSON string once its escaped backslashes and quotes are gone: one run of one class, fast to scan.
STRING = re.compile(rb'"[^"]*"')
NOT_BRACKET = re.compile(rb"[^\[\]{}]")
OPENERS = frozenset(b"[{")


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int
    # Values in the whole document, counted as array items, object members and containers.
    max_items: int
    # Per top-level field: a check of its value that returns a problem's (msg, type), or None when it is fine.
    fields: dict[str, Callable[[Any], tuple[str, str] | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    loc: tuple[str | int, ...]
    msg: str
    type: str

    def item(self) -> dict[str, Any]:
        return {"loc": ["body", *self.loc], "msg": self.msg, "type": self.type}


class _NonFinite:
    """What NaN, Infinity and -Infinity parse to: not a float, so nothing downstream takes it for a number."""


def check(body: bytes, limits: JsonLimits) -> list[Problem]:
    """The problems of a JSON body; empty when it is within the limits and is JSON as RFC 8259 defines it."""
    problem = structure_problem(body, limits)
    if problem is not None:
        return [problem]
    try:
        # Bytes are decoded with surrogatepass: encoded surrogates come out as lone ones, caught below.
        document = json.loads(body, parse_constant=lambda name: _NonFinite())
    except json.JSONDecodeError as exc:
        return [Problem((exc.pos,), f"JSON decode error: {exc.msg}", "json_invalid")]
    except (ValueError, RecursionError):  # not UTF-8, or an integer of more than 4300 digits
        return [Problem((), "JSON decode error: not valid UTF-8 JSON", "json_invalid")]
    problems = list(value_problems(document, ()))
    if not problems and isinstance(document, dict):
        problems = list(field_problems(document, limits))
    return problems


def structure_problem(body: bytes, limits: JsonLimits) -> Problem | None:
    """Nesting and size from the bytes alone. Counting in the raw body over-counts (commas inside strings), so
    only a body that fails that count pays for taking its strings out and counting again."""
    if not over_limits(body, limits):
        return None
    # Escapes go first, in C: an escaped backslash (left to right, as JSON reads them), then an escaped quote.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = STRING.sub(b'""', unescaped)
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    if skeleton.count(b",") + containers > limits.max_items:
        return Problem((), f"JSON has more than {limits.max_items} values", "json_too_many_values")
    depth = deepest(NOT_BRACKET.sub(b"", skeleton))  # at most max_items brackets by now
    if depth > limits.max_depth:
        return Problem((), f"JSON is nested more than {limits.max_depth} levels deep", "json_too_deep")
    return None


def over_limits(body: bytes, limits: JsonLimits) -> bool:
    containers = body.count(b"[") + body.count(b"{")
    return containers > limits.max_depth or body.count(b",") + containers > limits.max_items


def deepest(brackets: bytes) -> int:
    depth = most = 0
    for byte in brackets:
        depth += 1 if byte in OPENERS else -1
        most = max(most, depth)
    return most


def value_problems(value: Any, loc: tuple[str | int, ...]) -> Iterator[Problem]:
    if isinstance(value, _NonFinite) or (isinstance(value, float) and not math.isfinite(value)):
        yield Problem(loc, "Input should be a finite number (JSON has no NaN or Infinity)", "finite_number")
    elif isinstance(value, str):
        if not is_text(value):
            yield Problem(loc, "Input should be a valid string: it has a lone surrogate", "string_unicode")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not is_text(key):
                yield Problem(loc, "Object keys should be valid strings: one contains a lone surrogate",
                              "string_unicode")  # fmt: skip
                continue
            yield from value_problems(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from value_problems(item, (*loc, index))


def is_text(value: str) -> bool:
    """Whether a string can be encoded as UTF-8, i.e. has no lone surrogate (what later made the 500s)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def field_problems(document: dict[str, Any], limits: JsonLimits) -> Iterator[Problem]:
    for name, check_field in limits.fields.items():
        if name in document:
            found = check_field(document[name])
            if found is not None:
                yield Problem((name,), *found)


def max_chars(limit: int) -> Callable[[Any], tuple[str, str] | None]:
    """A field check: a string of at most limit characters (anything else is left to the schema)."""

    def check_length(value: Any) -> tuple[str, str] | None:
        if isinstance(value, str) and len(value) > limit:
            return f"String should have at most {limit} characters", "string_too_long"
        return None

    return check_length
