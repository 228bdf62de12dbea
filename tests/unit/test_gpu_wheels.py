"""The wheels `make gpu-wheels` carries to the GPU machine need nothing that machine lacks: each wheel's
Requires-Dist (read from the same version installed here) is met by the other wheels or by the machine's own
packages (benchmarks/gpu_machine.txt), for CPython 3.12 on x86-64 Linux. This is what failed on first contact:
huggingface_hub 2.4.0 imports httpx2, which the GPU machine does not have. (That the imports work without the
one requirement met by the standard library, importlib_metadata, is shown by the preflight's CPU rehearsal in
tests/e2e/test_gpu_preflight.py, which runs with it hidden.)"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from benchmarks.gpu_preflight import GPU_MARKERS, check_requirements
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
GPU_TORCH = "2.11.0"


def gpu_wheels() -> dict[str, str]:
    """The Makefile's GPU_WHEELS: canonical name -> pinned version."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("GPU_WHEELS"))
    pins = line.split(":=", 1)[1].split()
    assert pins and all("==" in pin for pin in pins), f"every wheel is pinned: {line}"
    return {canonicalize_name(name): version for name, version in (pin.split("==") for pin in pins)}


def gpu_machine() -> dict[str, str | None]:
    """benchmarks/gpu_machine.txt: canonical name -> version, or None where only its presence is known."""
    found: dict[str, str | None] = {}
    for line in (ROOT / "benchmarks" / "gpu_machine.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version or None
    return found


def requires(wheels: dict[str, str]) -> dict[str, list[str]]:
    """Each wheel's Requires-Dist, from the installed distribution, which must be the very version carried."""
    found = {}
    for name, version in wheels.items():
        installed = importlib.metadata.version(name)
        assert installed == version, f"{name}: {installed} installed here, {version} carried: other metadata"
        found[f"{name} {version}"] = importlib.metadata.requires(name) or []
    return found


def test_the_gpu_wheels_need_nothing_the_gpu_machine_lacks():
    wheels = gpu_wheels()
    report = check_requirements(requires(wheels), {**gpu_machine(), **wheels}, GPU_MARKERS)
    # Met on trust (present there, version unknown) or by the standard library: shown, so a failure is traced.
    print("\n".join(["assumed met:", *report.unknown_version, *report.backports]))
    assert not report.unmet, "\n".join(report.unmet)


def test_the_check_fails_with_the_huggingface_hub_that_broke_first_contact():
    wheels = {**gpu_wheels(), "huggingface-hub": "2.4.0"}
    if importlib.metadata.version("huggingface_hub") != "2.4.0":
        pytest.skip("huggingface_hub 2.4.0 is not the version installed here; its metadata is not at hand")
    report = check_requirements(requires(wheels), {**gpu_machine(), **wheels}, GPU_MARKERS)
    assert any("httpx2" in line for line in report.unmet), report.unmet


def test_the_wheels_run_on_the_gpu_machines_python_and_torch():
    for name, version in gpu_wheels().items():
        # .get: once anything imports the importlib_metadata backport (LiteLLM does), its finder answers, and
        # its Message raises KeyError for a missing field where the standard library's gives None.
        requires_python = importlib.metadata.metadata(name).get("Requires-Python")
        if requires_python:
            assert SpecifierSet(requires_python).contains(GPU_MARKERS["python_full_version"]), name
        # torch cannot travel (its wheel is ~900 MB): every torch requirement, extras too, must take 2.11.
        for line in importlib.metadata.requires(name) or []:
            req = Requirement(line)
            if canonicalize_name(req.name) == "torch":
                assert req.specifier.contains(Version(GPU_TORCH)), f"{name} {version}: {line}"
    assert (gpu_machine()["torch"] or "").startswith(GPU_TORCH)


def test_the_gpu_machine_file_is_one_package_a_line():
    for line in (ROOT / "benchmarks" / "gpu_machine.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        assert not line or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(==[0-9][A-Za-z0-9.+]*)?", line), line
