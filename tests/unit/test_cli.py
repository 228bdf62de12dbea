"""Flags and FLUXSERVE_* variables become Settings once, at the edge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fluxserve.cli.main import build_parser, settings_from_args
from fluxserve.core.settings import StoreSettings


def settings(argv, env=None):
    return settings_from_args(build_parser(env or {}).parse_args(["serve", *argv]))


def test_defaults_are_the_embedded_setup():
    s = settings([])
    assert (s.api.host, s.api.port, s.api.tls_port) == ("127.0.0.1", 8000, 8443)
    assert s.store == StoreSettings(db_path=Path("data/jobs.sqlite3"), store_url=None)
    assert s.storage.root == Path("data/files")
    assert s.engine.model_path == Path("data/models/flux-schnell-tiny")
    assert (s.engine.device, s.engine.dtype) == ("auto", "auto")
    assert s.api.max_pixels == 2048 * 2048


def test_flags_override():
    s = settings(["--port", "9000", "--tls-port", "9443", "--data-dir", "/tmp/x", "--model", "/m",
                  "--device", "cpu", "--dtype", "bfloat16", "--safety-checker", "none"])  # fmt: skip
    assert (s.api.port, s.api.tls_port, s.data_dir) == (9000, 9443, Path("/tmp/x"))
    assert s.store.db_path == Path("/tmp/x/jobs.sqlite3")
    assert s.engine.model_path == Path("/m") and s.engine.dtype == "bfloat16"
    assert s.engine.safety_disabled and s.engine.safety_checker_path is None


def test_environment_gives_defaults_and_tls_port_zero_disables_https():
    s = settings([], env={"FLUXSERVE_PORT": "9100", "FLUXSERVE_TLS_PORT": "0", "FLUXSERVE_MAX_PIXELS": "100"})
    assert s.api.port == 9100 and s.api.tls_port is None and s.api.max_pixels == 100


def test_fetch_limits_and_url_policy_flags():
    s = settings(["--fetch-max-bytes", "1000", "--fetch-timeout", "2.5", "--fetch-max-redirects", "1",
                  "--allow-network", "10.1.0.0/16", "--allow-network", "127.0.0.1/32", "--redux-model", "/r"])  # fmt: skip
    assert (s.urls.max_bytes, s.urls.total_timeout_s, s.urls.max_redirects) == (1000, 2.5, 1)
    assert s.urls.allowed_networks == ("10.1.0.0/16", "127.0.0.1/32") and not s.urls.allow_private
    assert s.api.max_upload_bytes == 1000 and s.api.redux_enabled and s.engine.redux_model_path == Path("/r")
    assert settings(["--allow-private-urls"]).urls.allow_private


def test_performance_flags():
    s = settings(["--batch-size", "8", "--batch-window-ms", "25", "--text-cache", "3", "--compile", "off",
                  "--disable-accel", "fused_qkv, channels_last_vae", "--fp8", "on"])  # fmt: skip
    assert (s.worker.max_batch, s.worker.batch_window_s, s.engine.text_cache_size) == (8, 0.025, 3)
    accel = s.engine.accel
    assert accel.disabled == {"fused_qkv", "channels_last_vae"} and accel.compile == "off" and accel.fp8 == "on"


def test_acceleration_flags_default_to_the_settings_defaults_and_reach_the_engine():
    from fluxserve.core.settings import AccelSettings, WarmupSettings
    from fluxserve.core.sizing import PRESETS

    s = settings([])
    assert s.engine.accel == AccelSettings()
    assert s.engine.warmup == WarmupSettings(sizes=tuple(PRESETS.values()), levels=None, batches=(1,))
    s = settings(["--compile-mode", "max-autotune-no-cudagraphs", "--fp8-granularity", "tensor", "--attention",
                  "cudnn", "--cuda-graphs", "off", "--warmup-levels", "high", "--warmup-batches", "1,4"])  # fmt: skip
    assert (s.engine.accel.compile_mode, s.engine.accel.fp8_granularity, s.engine.accel.attention,
            s.engine.accel.cuda_graphs) == ("max-autotune-no-cudagraphs", "tensor", "cudnn", "off")  # fmt: skip
    assert (s.engine.warmup.levels, s.engine.warmup.batches) == (("high",), (1, 4))
    assert settings(["--warmup", "off"]).engine.warmup.sizes == ()


def test_a_count_flag_refuses_zero_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser({}).parse_args(["serve", "--fetch-concurrency", "0"])
    assert exit_info.value.code == 2 and "--fetch-concurrency: must be 1 or more" in capsys.readouterr().err


def test_each_default_is_written_once_flag_settings_and_component_agree():
    from fluxserve.core.settings import RetryPolicy, Settings, UrlPolicy
    from fluxserve.net import safe_http, webhooks
    from fluxserve.worker.loop import WorkerConfig

    args = build_parser({}).parse_args(["serve"])
    s = settings_from_args(args)
    # The components enforce the very classes Settings holds, so there is no second copy to drift.
    assert safe_http.UrlPolicy is UrlPolicy and webhooks.RetryPolicy is RetryPolicy
    assert s.urls == UrlPolicy() == safe_http.SafeClient().policy
    # The documented image_url limits (README, docs/security.md): 5 redirects, 10 s, 20 MiB.
    assert (args.fetch_max_redirects, s.urls.max_redirects, UrlPolicy().max_redirects) == (5, 5, 5)
    assert (args.fetch_timeout, s.urls.total_timeout_s, UrlPolicy().total_timeout_s) == (10, 10, 10)
    assert args.fetch_max_bytes == s.urls.max_bytes == UrlPolicy().max_bytes == 20 * 2**20
    assert s.webhooks.retry == RetryPolicy()
    config, defaults = WorkerConfig.from_settings(s), WorkerConfig()
    assert config.fetch_concurrency == defaults.fetch_concurrency == Settings.fetch_concurrency
    assert (config.lease_s, config.max_attempts, config.max_batch, config.batch_window_s, config.max_per_key) == (
        defaults.lease_s, defaults.max_attempts, defaults.max_batch, defaults.batch_window_s, defaults.max_per_key)


def test_each_consumer_has_its_own_settings_and_the_flags_default_to_them():
    from fluxserve.blobs import s3
    from fluxserve.core.settings import (
        MAX_PRESIGN_SECONDS,
        AdmissionSettings,
        LeaseSettings,
        S3Settings,
        UpkeepSettings,
        WaitingSettings,
        WorkerSettings,
    )  # fmt: skip
    from fluxserve.worker.loop import WorkerConfig

    args = build_parser({}).parse_args(["serve"])
    s = settings_from_args(args)
    assert (s.admission, s.leases, s.worker, s.upkeep) == (
        AdmissionSettings(), LeaseSettings(), WorkerSettings(), UpkeepSettings())
    assert s.waiting == WaitingSettings()  # no flag: the API process always waits this way
    assert (args.max_queue_length, args.max_queued_per_key) == (10_000, 1_000)
    assert (args.lease_seconds, args.max_attempts, args.retention_hours) == (30.0, 3, 7 * 24)
    assert (args.batch_size, args.batch_window_ms, args.max_running_per_key) == (4, 10, 0)
    config = WorkerConfig()
    assert (config.lease_s, config.max_attempts) == (s.leases.lease_s, s.leases.max_attempts)
    assert (config.max_batch, config.batch_window_s, config.max_per_key) == (
        s.worker.max_batch, s.worker.batch_window_s, s.worker.max_running_per_key)
    # One S3 settings class: the blob store enforces the very class the flags fill, presign cap included.
    assert s3.S3Settings is S3Settings and s.storage.s3 is None
    assert args.s3_presign_seconds == S3Settings.presign_seconds == MAX_PRESIGN_SECONDS == 7 * 24 * 3600


def test_each_setting_flag_reaches_its_consumer():
    s = settings(["--max-queue-length", "5", "--max-queued-per-key", "2", "--lease-seconds", "9",
                  "--max-attempts", "4", "--retention-hours", "2", "--max-running-per-key", "1",
                  "--store", "redis://r:6379/1"])  # fmt: skip
    assert (s.admission.max_queue_length, s.admission.max_queued_per_key) == (5, 2)
    assert (s.leases.lease_s, s.leases.max_attempts, s.upkeep.retention_s) == (9.0, 4, 7200.0)
    assert s.worker.max_running_per_key == 1 and s.store.store_url == "redis://r:6379/1"


def test_blobs_flags_build_the_bucket_settings_and_refuse_a_bad_one_at_once():
    from fluxserve.core.settings import S3Settings

    s = settings(["--blobs", "s3://images/out", "--s3-endpoint", "http://minio:9000", "--s3-region", "eu",
                  "--s3-public-url", "https://cdn.example/", "--s3-presign-seconds", "600"])  # fmt: skip
    assert s.storage.s3 == S3Settings(
        bucket="images", prefix="out/", endpoint_url="http://minio:9000", region="eu",
        public_base_url="https://cdn.example/", presign_seconds=600,
    )  # fmt: skip
    with pytest.raises(ValueError, match="presign_seconds"):
        settings(["--blobs", "s3://images", "--s3-presign-seconds", str(7 * 24 * 3600 + 1)])


def test_keys_and_usage_take_only_the_store_flags(capsys):
    parser = build_parser({"FLUXSERVE_DATA_DIR": "/srv/d"})
    args = parser.parse_args(["keys", "create", "--name", "a", "--store", "redis://r:6379/0"])
    assert (args.data_dir, args.store, args.name) == (Path("/srv/d"), "redis://r:6379/0", "a")
    assert parser.parse_args(["usage", "--data-dir", "/x", "--key", "k"]).usage_key == "k"
    with pytest.raises(SystemExit):
        parser.parse_args(["keys", "list", "--port", "9000"])
    assert "unrecognized arguments: --port" in capsys.readouterr().err


def test_the_worker_process_imports_no_http_server(tmp_path):
    """`fluxserve worker`, run up to the engine load (a stand-in that reports what is imported by then)."""
    code = (
        "import sys, types\n"
        "stub = types.ModuleType('fluxserve.engine.flux')\n"
        "class FluxEngine:\n"
        "    @staticmethod\n"
        "    def load(settings):\n"
        "        print(sorted(m for m in ('uvicorn', 'fastapi') if m in sys.modules))\n"
        "        raise SystemExit(0)\n"
        "stub.FluxEngine = FluxEngine\n"
        "sys.modules[stub.__name__] = stub\n"
        "from fluxserve.cli.main import main\n"
        f"main(['worker', '--data-dir', {str(tmp_path)!r}, '--device', 'cpu'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_attention_flag_offers_exactly_the_engines_backends():
    from fluxserve.core.settings import ATTENTION_BACKENDS
    from fluxserve.engine.attention import BACKENDS

    assert set(ATTENTION_BACKENDS) == set(BACKENDS)

