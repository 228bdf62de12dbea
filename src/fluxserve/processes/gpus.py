"""Which GPUs a node has, and which worker `serve` pins to which, without importing torch.

Each worker sees exactly one GPU through CUDA_VISIBLE_DEVICES, so inside it `cuda` is its own GPU: a node's
GPUs all serve instead of every worker loading the model onto the first one.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

NVIDIA_SMI = ("nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader")
# nvidia-smi numbers GPUs by PCI bus; CUDA's default order ranks them by speed, so an nvidia-smi index means
# the same GPU in CUDA only under this order.
PCI_ORDER = "PCI_BUS_ID"
CUDA_DEFAULT_ORDER = "FASTEST_FIRST"


class GpuPlanError(ValueError):
    """The operator asked for workers the node's GPUs cannot give: refused before any process starts."""


@dataclass(frozen=True)
class Gpu:
    # What CUDA_VISIBLE_DEVICES takes: an index, or a GPU-/MIG- UUID.
    id: str
    name: str = ""
    # The CUDA_DEVICE_ORDER under which `id` names this GPU.
    order: str = PCI_ORDER

    @property
    def label(self) -> str:
        """This GPU in worker names: gpu3, or the UUID itself (already prefixed GPU-/MIG-)."""
        return f"gpu{self.id}" if self.id.isdigit() else self.id


@dataclass(frozen=True)
class WorkerSlot:
    """One worker `serve` starts: pinned to a GPU, or (no GPU) the i-th worker on the CPU."""

    index: int
    gpu: Gpu | None = None

    @property
    def label(self) -> str:
        return self.gpu.label if self.gpu else f"worker-{self.index}"


def query_nvidia_smi(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> str:
    """nvidia-smi's GPU list; empty when there is no binary, no driver, or it hangs."""
    try:
        done = run(list(NVIDIA_SMI), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def parse_nvidia_smi(text: str) -> list[Gpu]:
    gpus = []
    for line in text.splitlines():
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            gpus.append(Gpu(index.strip(), name.strip(), PCI_ORDER))
    return gpus


def visible_gpus(env: Mapping[str, str], query: Callable[[], str] = query_nvidia_smi) -> list[Gpu]:
    """CUDA_VISIBLE_DEVICES when set (the operator's choice; "" or -1: none), else what nvidia-smi lists."""
    chosen = env.get("CUDA_VISIBLE_DEVICES")
    if chosen is None:
        return parse_nvidia_smi(query())
    # CUDA stops at the first invalid entry, -1 included, so what follows it is never visible.
    ids = []
    for entry in (e.strip() for e in chosen.split(",")):
        if not entry or entry.startswith("-"):
            break
        ids.append(entry)
    order = env.get("CUDA_DEVICE_ORDER", CUDA_DEFAULT_ORDER)
    return [Gpu(gpu_id, order=order) for gpu_id in ids]


def plan_workers(
    workers: str | int, gpus: tuple[str, ...], found: list[Gpu], device: str
) -> list[WorkerSlot]:
    """One worker per GPU: every visible GPU (auto), the first N, or the operator's list. Without a GPU
    (or with --device cpu) the workers share the CPU."""
    if device == "cpu":
        if gpus:
            raise GpuPlanError("--gpus pins workers to GPUs, but --device cpu runs them on the CPU")
        count = 1 if workers == "auto" else int(workers)
        return cpu_slots(count)
    if gpus:
        chosen = pick_gpus(gpus, found)
        if workers != "auto" and int(workers) != len(chosen):
            raise GpuPlanError(f"--workers {workers} does not match --gpus {','.join(gpus)}: "
                               "one worker runs on each listed GPU")  # fmt: skip
        return [WorkerSlot(i, gpu) for i, gpu in enumerate(chosen)]
    if workers == "auto":
        return [WorkerSlot(i, gpu) for i, gpu in enumerate(found)] or cpu_slots(1)
    count = int(workers)
    if not found:
        if device == "cuda" and count > 1:
            raise GpuPlanError(f"--workers {count} --device cuda: no GPU found to give each worker its own "
                               "(no CUDA_VISIBLE_DEVICES, no nvidia-smi); list them with --gpus")  # fmt: skip
        return cpu_slots(count)
    if count > len(found):
        ids = ", ".join(gpu.id for gpu in found)
        raise GpuPlanError(f"--workers {count}: this node has {len(found)} visible GPU(s) ({ids}) and each "
                           "worker needs its own; use --workers auto, fewer workers, or --gpus")  # fmt: skip
    return [WorkerSlot(i, gpu) for i, gpu in enumerate(found[:count])]


def cpu_slots(count: int) -> list[WorkerSlot]:
    if count > 1:
        log.warning("no GPU: %d workers share this machine's CPU cores", count)
    return [WorkerSlot(i) for i in range(count)]


def pick_gpus(ids: tuple[str, ...], found: list[Gpu]) -> list[Gpu]:
    """The listed GPUs, checked against the visible ones; trusted as nvidia-smi indices when none is found."""
    if not found:
        log.warning("no visible GPU to check --gpus %s against: trusting it", ",".join(ids))
        return [Gpu(gpu_id) for gpu_id in ids]
    by_id = {gpu.id: gpu for gpu in found}
    unknown = [gpu_id for gpu_id in ids if gpu_id not in by_id]
    if unknown:
        raise GpuPlanError(f"--gpus {','.join(unknown)}: not among this node's visible GPUs "
                           f"({', '.join(by_id)})")  # fmt: skip
    return [by_id[gpu_id] for gpu_id in ids]


def pinned_env(env: Mapping[str, str], gpu: Gpu) -> dict[str, str]:
    """env for a process that must see `gpu` alone."""
    return {**env, "CUDA_VISIBLE_DEVICES": gpu.id, "CUDA_DEVICE_ORDER": gpu.order}


def pin_this_process(environ: MutableMapping[str, str], gpu_id: str) -> None:
    """Make `gpu_id` the one GPU this process sees; before torch is imported. A worker that serve started
    already has both variables (the order is the one its id means); one started by hand gets nvidia-smi's."""
    environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    environ.setdefault("CUDA_DEVICE_ORDER", PCI_ORDER)


def worker_count(value: str) -> str | int:
    """--workers: auto, or a positive number."""
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected auto or a positive number, got {value!r}")


def gpu_list(value: str) -> tuple[str, ...]:
    """--gpus 0,2,3: indices (as nvidia-smi numbers them) or GPU UUIDs, each used once."""
    ids = tuple(v.strip() for v in value.split(",") if v.strip())
    if not ids:
        raise argparse.ArgumentTypeError("expected a comma-separated list of GPU indices or UUIDs")
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"a GPU is listed twice in {value!r}: one worker per GPU")
    return ids
