"""A worker says what it runs, as its engine describes it: in its start log and each report to the store."""

from __future__ import annotations

import logging
import threading
import time

from fluxserve.blobs.local import LocalBlobStore
from fluxserve.core.settings import WarmupSettings
from fluxserve.core.worker_state import WorkerState
from fluxserve.store.sqlite import SQLiteJobStore
from fluxserve.worker.loop import Worker, WorkerConfig
from tests.support.fakes import CPU_DESCRIPTION, FakeEngine

H200 = {
    "device": "cuda:0 NVIDIA H200",
    "levels": {"none": [], "regular": ["fused_qkv", "attention", "compile"],
               "high": ["fused_qkv", "fp8", "compile"]},  # fmt: skip
    "skipped": {"cuda_graphs": "switched off by the operator"},
    "dropped": {"high": {"attention": "failed warming up 1024x1024, batch 1: RuntimeError: no kernel"}},
}


def run_until_ready(tmp_path, engine, gpu=None, warmup=None) -> tuple[Worker, SQLiteJobStore]:
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    worker = Worker(store, LocalBlobStore.open(tmp_path / "files"), engine,
                    WorkerConfig(worker_id="w", gpu=gpu, idle_sleep_s=0.01))  # fmt: skip
    thread = threading.Thread(target=worker.run_forever, args=(warmup,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while store.worker_states() != {"w": "ready"}:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    worker.stop()
    thread.join(timeout=10)
    return worker, store


def test_the_start_log_says_what_each_level_runs_with_and_names_the_gpu(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fluxserve.worker.loop")
    run_until_ready(tmp_path, FakeEngine(description=H200), gpu="3")
    lines = [r.getMessage() for r in caplog.records]
    assert "worker w level none runs with: no switches" in lines
    assert "worker w level regular runs with: fused_qkv, attention, compile" in lines
    assert "worker w level high runs with: fused_qkv, fp8, compile" in lines
    assert "worker w skips cuda_graphs: switched off by the operator" in lines
    dropped = "failed warming up 1024x1024, batch 1: RuntimeError: no kernel"
    assert f"worker w level high dropped attention: {dropped}" in lines
    assert "worker w ready on GPU 3 (cuda:0 NVIDIA H200)" in lines
    ready = lines.index("worker w ready on GPU 3 (cuda:0 NVIDIA H200)")
    assert ready > lines.index("worker w level high runs with: fused_qkv, fp8, compile"), "known once ready"


def test_a_worker_given_a_gpu_that_torch_cannot_use_says_it_runs_on_cpu(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fluxserve.worker.loop")
    run_until_ready(tmp_path, FakeEngine(description=CPU_DESCRIPTION), gpu="0")
    assert "worker w ready on GPU 0 (cpu)" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["worker w was given GPU 0, but torch sees no usable CUDA device: it runs on CPU"]


def test_every_report_carries_the_gpu_and_the_engines_description(tmp_path):
    _, store = run_until_ready(tmp_path, FakeEngine(description=H200), gpu="GPU-5f3c")
    info = store.worker_reports()["w"]["stats"]["info"]
    assert info == {"gpu": "GPU-5f3c", **H200}
    assert store.worker_states() == {"w": "stopping"}


def test_what_is_dropped_while_warming_up_is_what_the_worker_reports(tmp_path):
    engine = FakeEngine(description={"device": "cpu", "levels": {"regular": ["fused_qkv", "compile"]}})

    def warm_up(warmup):
        engine.description = {"device": "cpu", "levels": {"regular": ["fused_qkv"]},
                              "dropped": {"regular": {"compile": "failed warming up"}}}  # fmt: skip

    engine.warm_up = warm_up
    _, store = run_until_ready(tmp_path, engine, warmup=WarmupSettings(sizes=((64, 64),)))
    assert store.worker_reports()["w"]["stats"]["info"]["levels"] == {"regular": ["fused_qkv"]}


def test_the_engine_warms_up_only_when_there_are_shapes_to_warm(tmp_path):
    engine, warmup = FakeEngine(), WarmupSettings(sizes=((64, 64),), levels=("regular",))
    run_until_ready(tmp_path / "a", engine, warmup=warmup)
    run_until_ready(tmp_path / "b", engine, warmup=WarmupSettings())
    assert engine.warmed_up == [warmup]


def test_a_warming_worker_reports_each_state_of_its_life_in_order(tmp_path, monkeypatch):
    reported: list[str] = []
    original = SQLiteJobStore.report_worker

    def report_worker(self, worker_id, state, *rest):
        reported.append(state)
        original(self, worker_id, state, *rest)

    monkeypatch.setattr(SQLiteJobStore, "report_worker", report_worker)
    run_until_ready(tmp_path, FakeEngine(), warmup=WarmupSettings(sizes=((64, 64),), levels=("regular",)))
    assert [state for i, state in enumerate(reported) if i == 0 or reported[i - 1] != state] == [
        WorkerState.WARMING.value, WorkerState.READY.value, WorkerState.STOPPING.value]
    assert all(type(state) is str for state in reported), "the store is handed the state's value"
