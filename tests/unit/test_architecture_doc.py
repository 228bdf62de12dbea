"""docs/architecture.md names only what exists: every module path (`store/sqlite.py`, `fluxserve.api.app`),
other package file (`schema.sql`) and backticked class (`FluxEngine`, `JobQueue.submit`) it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "fluxserve"
DOC = ROOT / "docs" / "architecture.md"

FILE = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.(?:py|sql|lua))\b")
DOTTED = re.compile(r"\bfluxserve(?:\.\w+)+")
CLASS = re.compile(r"`([A-Z][a-z0-9]+[A-Z]\w*|[A-Z][a-z0-9]+)(?:\.(\w+))?`")


def defined() -> tuple[set[str], set[str]]:
    """Names of the classes and of the functions (methods included) defined anywhere in src/fluxserve."""
    classes, functions = set(), set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes.add(node.name)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.add(node.name)
    return classes, functions


def file_exists(name: str) -> bool:
    """A path relative to src/fluxserve or to the repository, or a bare file name found in src/fluxserve."""
    if (SRC / name).is_file() or (ROOT / name).is_file():
        return True
    return "/" not in name and any(SRC.rglob(name))


def module_exists(dotted: str) -> bool:
    path = ROOT / "src" / Path(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def missing(text: str) -> list[str]:
    classes, functions = defined()
    gone = [f"file {name}" for name in sorted(set(FILE.findall(text))) if not file_exists(name)]
    gone += [f"module {name}" for name in sorted(set(DOTTED.findall(text))) if not module_exists(name)]
    for name, member in sorted(set(CLASS.findall(text))):
        if name not in classes:
            gone.append(f"class {name}")
        elif member and member not in functions:
            gone.append(f"method {name}.{member}")
    return gone


def test_the_architecture_doc_names_only_what_exists():
    gone = missing(DOC.read_text())
    assert not gone, "docs/architecture.md names what src/fluxserve does not have:\n" + "\n".join(gone)


def test_the_check_catches_a_missing_module_class_and_method():
    text = "`store/gone.py` fluxserve.api.gone `BatchKey` `FluxEngine.no_such_method` `api/app.py` `Worker`"
    assert missing(text) == ["file store/gone.py", "module fluxserve.api.gone", "class BatchKey",
                             "method FluxEngine.no_such_method"]  # fmt: skip
