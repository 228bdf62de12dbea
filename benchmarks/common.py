"""What the API benchmarks share: percentiles, the machine they ran on, and the fluxserve processes they start
(from this tree, or from another one with --src, so "before" and "after" run in the same session)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
# The packages whose versions decide the figures: the framework, its server and parsers, the store clients.
VERSIONED = ("fastapi", "starlette", "uvicorn", "h11", "httptools", "uvloop", "orjson", "pydantic", "redis")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of seconds, in milliseconds (nearest rank; 0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def use_source_tree(src: Path | None) -> Path:
    """Make every child process import fluxserve from `src`/src (this tree when None); returns that tree.
    Set in the environment, which Popen children inherit; the benchmark process imports no fluxserve."""
    tree = (src or ROOT).resolve()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), str(ROOT)])
    return tree


def git_commit(tree: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return (out.stdout.strip() + ("+dirty" if dirty else "")) if out.returncode == 0 else None


def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0],
            "platform": platform.platform(), "versions": versions}  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc), to turn reads/s into CPU per read."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
