"""engine/protocol.Engine is everything the worker asks of an engine: the real engine and the fakes implement
all of it, and the worker asks for nothing else (no probing for optional methods)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import fluxserve.worker
from fluxserve.engine.flux import FluxEngine
from fluxserve.engine.protocol import Engine
from tests.support.fakes import FakeEngine

WORKER_SOURCES = sorted(Path(fluxserve.worker.__file__).parent.glob("*.py"))


def protocol_methods() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(f) for name, f in vars(Engine).items()
            if inspect.isfunction(f) and not name.startswith("_")}  # fmt: skip


@pytest.mark.parametrize("engine", [FluxEngine, FakeEngine], ids=lambda engine: engine.__name__)
def test_each_engine_implements_every_method_of_the_protocol(engine):
    for name, wanted in protocol_methods().items():
        assert callable(getattr(engine, name, None)), f"{engine.__name__} lacks {name}"
        given = list(inspect.signature(getattr(engine, name)).parameters)
        assert given == list(wanted.parameters), f"{engine.__name__}.{name} takes {given}"


def engine_attributes(source: Path) -> set[str]:
    """Every name the module reads off `self.engine`."""
    tree = ast.parse(source.read_text())
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "engine"}  # fmt: skip


def test_the_worker_calls_only_what_the_protocol_declares_and_probes_for_nothing():
    assert {"generate_batch", "warm_up", "gpu_memory_bytes", "describe"} == set(protocol_methods())
    for source in WORKER_SOURCES:
        assert engine_attributes(source) <= set(protocol_methods()), source.name
        assert "getattr(self.engine" not in source.read_text(), f"{source.name} probes its engine"
