"""No block of six or more meaningful lines repeated between the two store backends, or between two test
files: shared logic has one home (store/ for the backends, tests/support/ for the tests)."""

from __future__ import annotations

from pathlib import Path

from tests.support.repeats import WINDOW, meaningful_lines, repeats_between

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "src" / "fluxserve" / "store"


def python_files_of_the_tests() -> list[Path]:
    tests = ROOT / "tests"
    skipped = {"node_modules", "js"}
    return sorted(p for p in tests.rglob("*.py") if not skipped & set(p.relative_to(tests).parts))


def report(repeats: list) -> str:
    return "\n".join(str(r).replace(f"{ROOT}/", "") for r in repeats)


def test_the_two_store_backends_share_no_block():
    repeats = repeats_between([STORE / "sqlite.py", STORE / "redis.py"])
    assert not repeats, report(repeats)


def test_no_two_test_files_share_a_block():
    repeats = repeats_between(python_files_of_the_tests())
    assert not repeats, report(repeats)


def test_the_checker_finds_a_copied_block_and_ignores_imports_comments_and_docstrings(tmp_path):
    block = "".join(f"    total = total + {n}\n" for n in range(WINDOW))
    first = tmp_path / "first.py"
    first.write_text(f'"""One."""\nimport os\n\n\ndef a(total):\n{block}    return total\n')
    second = tmp_path / "second.py"
    second.write_text(f"import os  # the same import\n\n\ndef b(total):\n    # a comment\n{block}")
    (found,) = repeats_between([first, second])
    assert (found.first_line, found.second_line) == (6, 6)
    shorter = tmp_path / "shorter.py"
    shorter.write_text("def c(total):\n" + "".join(block.splitlines(keepends=True)[1:]))
    assert repeats_between([first, shorter]) == []
    assert [text for _, text in meaningful_lines(second)][:1] == ["def b(total):"]
