"""GPU discovery without torch, and which worker `serve` pins to which GPU (refused before anything runs)."""

from __future__ import annotations

import subprocess

import pytest

from fluxserve.cli.main import build_parser, settings_from_args
from fluxserve.processes.gpus import (
    Gpu,
    GpuPlanError,
    WorkerSlot,
    pin_this_process,
    pinned_env,
    plan_workers,
    query_nvidia_smi,
    visible_gpus,
)

H200S = "0, NVIDIA H200\n1, NVIDIA H200\n2, NVIDIA H200\n3, NVIDIA H200\n"


def smi(text: str):
    return lambda: text


def ids(slots: list[WorkerSlot]) -> list[str | None]:
    return [slot.gpu.id if slot.gpu else None for slot in slots]


def test_nvidia_smi_lists_the_gpus_when_cuda_visible_devices_is_unset():
    gpus = visible_gpus({}, smi(H200S))
    assert [(g.id, g.name, g.order) for g in gpus][:2] == [("0", "NVIDIA H200", "PCI_BUS_ID"),
                                                           ("1", "NVIDIA H200", "PCI_BUS_ID")]  # fmt: skip
    assert len(gpus) == 4


def test_cuda_visible_devices_wins_over_nvidia_smi():
    assert [g.id for g in visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}, smi(H200S))] == ["2", "3"]
    uuid = "GPU-5f3c1a2b-0000-1111-2222-333344445555"
    assert [g.id for g in visible_gpus({"CUDA_VISIBLE_DEVICES": uuid}, smi(H200S))] == [uuid]
    # CUDA's own rule: what follows an invalid entry (-1) is not visible.
    assert [g.id for g in visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, smi(H200S))] == ["1"]


@pytest.mark.parametrize("value", ["", "-1", " "])
def test_an_empty_cuda_visible_devices_means_no_gpu(value):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": value}, smi(H200S)) == []


def test_indices_from_cuda_visible_devices_keep_the_operators_device_order():
    gpus = visible_gpus({"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, smi(""))
    assert gpus[0].order == "PCI_BUS_ID"
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}, smi(""))[0].order == "FASTEST_FIRST", "CUDA's default"


def run_with_path(folder):
    """subprocess.run with only `folder` on PATH: the nvidia-smi found is the one put there, or none."""
    return lambda argv, **kwargs: subprocess.run(argv, env={"PATH": str(folder)}, check=False, **kwargs)


def test_nvidia_smi_is_asked_for_index_and_name_in_csv(tmp_path):
    script = tmp_path / "nvidia-smi"
    script.write_text('#!/bin/sh\n[ "$*" = "--query-gpu=index,name --format=csv,noheader" ] || exit 6\n'
                      'printf "0, NVIDIA H200\\n1, NVIDIA H200\\n"\n')  # fmt: skip
    script.chmod(0o755)
    listed = query_nvidia_smi(run_with_path(tmp_path))
    gpus = visible_gpus({}, lambda: listed)
    assert [(g.id, g.name) for g in gpus] == [("0", "NVIDIA H200"), ("1", "NVIDIA H200")]


def test_no_nvidia_smi_binary_or_a_failing_one_means_no_gpu(tmp_path):
    missing = query_nvidia_smi(run_with_path(tmp_path))
    assert missing == "" and visible_gpus({}, smi(missing)) == []
    no_driver = subprocess.CompletedProcess([], 9, stdout="NVIDIA-SMI has failed\n", stderr="")
    assert query_nvidia_smi(lambda *a, **k: no_driver) == ""
    assert visible_gpus({}, smi("No devices were found\n")) == []


def test_auto_is_one_worker_per_visible_gpu_or_one_without():
    assert ids(plan_workers("auto", (), visible_gpus({}, smi(H200S)), "auto")) == ["0", "1", "2", "3"]
    assert ids(plan_workers("auto", (), [], "auto")) == [None]
    assert ids(plan_workers("auto", (), visible_gpus({}, smi(H200S)), "cpu")) == [None]


def test_n_workers_take_the_first_n_gpus_and_never_more_than_there_are():
    four = visible_gpus({}, smi(H200S))
    assert ids(plan_workers(2, (), four, "auto")) == ["0", "1"]
    with pytest.raises(GpuPlanError, match=r"--workers 5: this node has 4 visible GPU\(s\) \(0, 1, 2, 3\)"):
        plan_workers(5, (), four, "auto")
    with pytest.raises(GpuPlanError, match="no GPU found"):
        plan_workers(2, (), [], "cuda")


def test_more_workers_than_gpus_share_the_cpu(caplog):
    assert ids(plan_workers(3, (), [], "auto")) == [None, None, None]
    assert ids(plan_workers(2, (), visible_gpus({}, smi(H200S)), "cpu")) == [None, None]
    assert "2 workers share this machine's CPU cores" in caplog.text


def test_an_explicit_gpu_list_gets_one_worker_each():
    four = visible_gpus({}, smi(H200S))
    slots = plan_workers("auto", ("1", "3"), four, "auto")
    assert ids(slots) == ["1", "3"] and [s.label for s in slots] == ["gpu1", "gpu3"]
    assert ids(plan_workers(2, ("3", "0"), four, "auto")) == ["3", "0"]
    with pytest.raises(GpuPlanError, match=r"--gpus 7: not among this node's visible GPUs \(0, 1, 2, 3\)"):
        plan_workers("auto", ("1", "7"), four, "auto")
    with pytest.raises(GpuPlanError, match="--workers 3 does not match --gpus 1,3"):
        plan_workers(3, ("1", "3"), four, "auto")
    with pytest.raises(GpuPlanError, match="--device cpu"):
        plan_workers("auto", ("1",), four, "cpu")


def test_an_explicit_gpu_list_is_trusted_where_nothing_can_be_checked(caplog):
    assert ids(plan_workers("auto", ("0", "2"), [], "cuda")) == ["0", "2"]
    assert "trusting it" in caplog.text


def test_a_pinned_environment_shows_one_gpu_in_the_order_its_index_means():
    env = pinned_env({"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, Gpu("2"))
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    operator = visible_gpus({"CUDA_VISIBLE_DEVICES": "5,6"}, smi(""))[1]
    assert pinned_env({}, operator) == {"CUDA_VISIBLE_DEVICES": "6", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"}


def test_a_worker_started_by_hand_with_a_gpu_sees_only_that_one():
    by_hand = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    pin_this_process(by_hand, "2")
    assert by_hand == {"CUDA_VISIBLE_DEVICES": "2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    from_serve = pinned_env({}, visible_gpus({"CUDA_VISIBLE_DEVICES": "5,6"}, smi(""))[0])
    pin_this_process(from_serve, "5")
    assert from_serve == {"CUDA_VISIBLE_DEVICES": "5", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"}, "serve's order"


def cli_settings(*argv: str, env: dict | None = None):
    return settings_from_args(build_parser(env or {}).parse_args(list(argv)))


def test_the_flags_reach_the_settings(capsys):
    args = build_parser({}).parse_args(["serve"])
    assert args.workers == "auto" and args.gpus is None
    assert build_parser({}).parse_args(["serve", "--workers", "3"]).workers == 3
    assert build_parser({"FLUXSERVE_WORKERS": "2"}).parse_args(["serve"]).workers == 2
    assert cli_settings("serve", "--gpus", "0, 2,3").gpus == ("0", "2", "3")
    worker = cli_settings("worker", "--gpu", "3")
    assert worker.gpu == "3" and worker.worker_id.endswith("-gpu3")
    assert cli_settings("worker", "--gpu", "3", "--worker-id", "w").worker_id == "w"
    assert cli_settings("worker").gpu is None
    for bad in (["--workers", "0"], ["--workers", "many"], ["--gpus", "1,1"], ["--gpus", ","]):
        with pytest.raises(SystemExit):
            build_parser({}).parse_args(["serve", *bad])
    assert "one worker per GPU" in capsys.readouterr().err
