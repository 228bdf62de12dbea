"""`fluxserve serve`'s start banner says the truth: which auth mode is on and how to get a key, and the exact
lines that point both fal clients here, storage included."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxserve.cli.main import banner, build_parser, settings_from_args


class Listening:
    """What banner() reads of a started ApiServer."""

    def url(self, scheme: str) -> str:
        return {"http": "http://127.0.0.1:8000", "https": "https://127.0.0.1:8443"}[scheme]

    def tls_files(self) -> tuple[Path, Path]:
        return Path("/data/tls/cert.pem"), Path("/data/tls/key.pem")


def shown(*flags: str) -> str:
    return banner(Listening(), settings_from_args(build_parser({}).parse_args(["serve", *flags])))


def test_with_auth_on_it_says_keys_are_required_and_how_to_make_one():
    text = shown("--auth", "on")
    assert "any key is accepted" not in text
    assert "API keys are required (auth on)" in text and "fluxserve keys create --name NAME" in text


def test_with_auth_off_it_says_any_key_is_accepted():
    text = shown("--auth", "off")
    assert "Auth is off: any key is accepted" in text and "keys create" not in text


@pytest.mark.parametrize("auth", ["on", "off"])
def test_it_gives_both_clients_every_host_storage_included(auth):
    text = shown("--auth", auth)
    for line in ("export FAL_RUN_HOST=127.0.0.1:8443", "export FAL_QUEUE_RUN_HOST=127.0.0.1:8443/queue",
                 "export SSL_CERT_FILE=/data/tls/cert.pem",
                 'fal_client.client.REST_URL = fal_client.client.CDN_URL = "https://127.0.0.1:8443"',
                 '.replace("https://queue.fal.run/", "http://127.0.0.1:8000/queue/")',
                 '.replace("https://fal.run/", "http://127.0.0.1:8000/")',
                 '.replace("https://rest.fal.ai/", "http://127.0.0.1:8000/")',
                 'fal.config({ proxyUrl: "http://127.0.0.1:8000/proxy" })'):  # fmt: skip
        assert line in text


def test_the_browser_line_says_when_cors_must_be_turned_on():
    assert "needs --cors-origins" in shown()
    assert "needs --cors-origins" not in shown("--cors-origins", "https://app.example/, http://localhost:5173")


def test_cors_origins_flag_reaches_the_api_settings():
    args = build_parser({}).parse_args(["serve", "--cors-origins", "https://app.example/, http://localhost:5173"])
    assert settings_from_args(args).api.cors_origins == ("https://app.example", "http://localhost:5173")
    assert settings_from_args(build_parser({}).parse_args(["serve"])).api.cors_origins == ()
