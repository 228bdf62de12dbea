"""Flags and FLUXSERVE_* variables become Settings once, at the edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxserve.cli.main import build_parser, settings_from_args


def settings(argv, env=None):
    return settings_from_args(build_parser(env or {}).parse_args(["serve", *argv]))


def test_defaults_are_the_embedded_setup():
    s = settings([])
    assert (s.api.host, s.api.port, s.api.tls_port) == ("127.0.0.1", 8000, 8443)
    assert s.queue.db_path == Path("data/jobs.sqlite3")
    assert s.storage.root == Path("data/files")
    assert s.engine.model_path == Path("data/models/flux-schnell-tiny")
    assert (s.engine.device, s.engine.dtype) == ("auto", "auto")
    assert s.api.max_pixels == 2048 * 2048


def test_flags_override():
    s = settings(["--port", "9000", "--tls-port", "9443", "--data-dir", "/tmp/x", "--model", "/m",
                  "--device", "cpu", "--dtype", "bfloat16", "--safety-checker", "none"])  # fmt: skip
    assert (s.api.port, s.api.tls_port, s.data_dir) == (9000, 9443, Path("/tmp/x"))
    assert s.queue.db_path == Path("/tmp/x/jobs.sqlite3")
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


def test_server_builds_its_url_policy_from_settings():
    from fluxserve.processes.api_process import url_policy

    policy = url_policy(settings(["--fetch-max-bytes", "1000", "--fetch-timeout", "2.5", "--fetch-max-redirects", "1"]))
    assert (policy.max_bytes, policy.total_timeout_s, policy.max_redirects) == (1000, 2.5, 1)


def test_performance_flags():
    s = settings(["--batch-size", "8", "--batch-window-ms", "25", "--text-cache", "3", "--compile", "off",
                  "--disable-accel", "fused_qkv, channels_last_vae", "--fp8", "on"])  # fmt: skip
    assert (s.queue.max_batch, s.queue.batch_window_s, s.engine.text_cache_size) == (8, 0.025, 3)
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
