"""JSON bodies checked with limits before any route parses them: cheap on hostile bodies, exact on fields."""

from __future__ import annotations

import time

import pytest

from fluxserve.api import errors, json_limits
from fluxserve.api.json_limits import JsonLimits

LIMITS = JsonLimits(max_depth=8, max_items=50, fields={"prompt": json_limits.max_chars(10)})


def problems(raw: bytes) -> list[tuple]:
    return [(p.loc, p.type) for p in json_limits.check(raw, LIMITS)]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"prompt": "a, [b] {c}", "image_size": {"width": 5}}',
        b'{"a": "' + b",[{" * 10_000 + b'"}',
        b'{"a": "q\\" [[[[[[[[[[ \\\\", "b": "\\\\\\"]]]]]]]]]"}',  # escaped quotes and backslashes
        b"[]",
        b"1.5",
    ],
)
def test_json_within_the_limits_passes(raw):
    assert problems(raw) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"[" * 9 + b"]" * 9, [((), "json_too_deep")]),
        (b"[" + b"0," * 50 + b"0]", [((), "json_too_many_values")]),
        (b'{"a": [1, {"b": NaN}]}', [(("a", 1, "b"), "finite_number")]),
        (b'{"a": -Infinity, "b": 1e400}', [(("a",), "finite_number"), (("b",), "finite_number")]),
        (b'{"a": "\\udc00"}', [(("a",), "string_unicode")]),
        (b'{"\\ud800": 1}', [((), "string_unicode")]),
        (b'{"prompt": "12345678901"}', [(("prompt",), "string_too_long")]),
        (b'{"a": 1,}', [((8,), "json_invalid")]),
        (b'{"a": "\xff"}', [((), "json_invalid")]),
        (b'{"a": ' + b"9" * 5000 + b"}", [((), "json_invalid")]),
    ],
)
def test_each_problem_names_where_it_is(raw, expected):
    assert problems(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"[" + b"0," * 1_000_000 + b"0]",  # the 2 MB array that blocked the event loop for 2 s
        b"[" * 2_000_000 + b"]" * 2_000_000,
        b'{"a": "' + b"x" * 27_000_000 + b'"}',
        b'{"a": "' + b"\\\\," * 4_000_000 + b'", "b": [' + b"1," * 100 + b"1]}",
    ],
)
def test_hostile_bodies_are_checked_in_milliseconds(raw):
    started = time.perf_counter()
    json_limits.check(raw, LIMITS)
    assert time.perf_counter() - started < 0.5


def test_a_422_reports_a_few_errors_without_their_input():
    many = [{"loc": ("body", "f" * 500, i), "msg": "m" * 5000, "type": "t", "input": "secret", "ctx": {}}
            for i in range(100)]  # fmt: skip
    detail = __import__("json").loads(errors.validation_response(many).body)["detail"]
    assert len(detail) == errors.MAX_REPORTED_ERRORS
    assert all(set(item) == {"loc", "msg", "type"} for item in detail)
    assert len(detail[0]["loc"][1]) == errors.MAX_LOC_PART_CHARS
    assert len(detail[0]["msg"]) == errors.MAX_MSG_CHARS
