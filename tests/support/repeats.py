"""Find blocks of code repeated between files: the check behind tests/unit/test_no_repeats.py.

A file is reduced to its meaningful lines (stripped; blank lines, comments, docstrings, imports and lone
brackets or keywords dropped, since those repeat everywhere without being copied logic), then every run of
WINDOW consecutive meaningful lines is compared across files. Two files sharing a run is a helper that wants
one home.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

WINDOW = 6

# Lines that carry no logic of their own: closing brackets, bare keywords, decorators shared by every fixture.
TRIVIAL = re.compile(
    r"^([)\]},:;]+|else:|try:|finally:|pass|return|continue|break|@pytest\.fixture.*|\.\.\.)$"
)


@dataclass(frozen=True)
class Repeat:
    """One run of WINDOW meaningful lines found in two files; line numbers are where each run starts."""

    first: Path
    first_line: int
    second: Path
    second_line: int
    text: str

    def __str__(self) -> str:
        return f"{self.first}:{self.first_line} ~ {self.second}:{self.second_line}\n    " + self.text.replace(
            "\n", "\n    "
        )


def _skipped_lines(tree: ast.AST) -> set[int]:
    """Line numbers of imports and docstrings, which may legitimately be the same in many files."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skipped.update(range(node.lineno, node.end_lineno + 1))
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                skipped.update(range(body[0].lineno, body[0].end_lineno + 1))
    return skipped


def _without_comments(source: str) -> list[str]:
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return lines


def meaningful_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of every line that carries logic."""
    source = path.read_text()
    skipped = _skipped_lines(ast.parse(source))
    kept = []
    for number, line in enumerate(_without_comments(source), start=1):
        text = line.strip()
        if text and number not in skipped and not TRIVIAL.match(text):
            kept.append((number, text))
    return kept


def repeats_between(paths: Iterable[Path], window: int = WINDOW) -> list[Repeat]:
    """Every run of `window` meaningful lines that occurs in two different files. A block longer than the
    window is reported once, at its first run."""
    seen: dict[tuple[str, ...], list[tuple[Path, int, int]]] = defaultdict(list)
    for path in paths:
        lines = meaningful_lines(path)
        for start in range(len(lines) - window + 1):
            run = tuple(text for _, text in lines[start : start + window])
            where = seen[run]
            if not any(p == path for p, _, _ in where):
                where.append((path, start, lines[start][0]))
    found: list[Repeat] = []
    reported: set[tuple[Path, Path, int]] = set()
    for run, where in seen.items():
        first, _, first_line = where[0]
        for second, start, second_line in where[1:]:
            continues_a_block = (first, second, start - 1) in reported
            reported.add((first, second, start))
            if not continues_a_block:
                found.append(Repeat(first, first_line, second, second_line, "\n".join(run)))
    return found
