"""Who signs (provenance/credentials.py): the development CA and signer made once, even by workers starting
together; the operator's files checked at start; the flags that choose the marks and the signer."""

from __future__ import annotations

import stat
import threading

import pytest

from fluxserve.cli.main import build_parser, settings_from_args
from fluxserve.core.settings import PROVENANCE_MARKS, ProvenanceSettings
from fluxserve.processes.tls import generate_self_signed
from fluxserve.provenance.credentials import (
    CA_NAME,
    KEY_NAME,
    CredentialsError,
    SigningCredentials,
    ensure_development,
    load_credentials,
)
from fluxserve.provenance.manifest import ManifestSigner
from fluxserve.provenance.stamp import Provenance
from tests.support.provenance import operator_credentials


def test_the_development_signer_is_made_once_and_kept(tmp_path):
    folder = tmp_path / "provenance"
    first = load_credentials(ProvenanceSettings(), folder)
    assert first.development and "development" in first.describe()
    assert stat.S_IMODE((folder / KEY_NAME).stat().st_mode) == 0o600
    assert (folder / CA_NAME).read_bytes() in first.chain_pem, "the chain ends with the CA verifiers trust"
    again = load_credentials(ProvenanceSettings(), folder)
    assert again == first and again.server_id == first.server_id


def test_workers_starting_together_share_one_development_signer(tmp_path):
    folder, results, start = tmp_path / "provenance", [], threading.Barrier(6)

    def make() -> None:
        start.wait()
        chain, key = ensure_development(folder)
        results.append((chain.read_bytes(), key.read_bytes()))

    threads = [threading.Thread(target=make) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["provenance"], "no folder left aside"


def test_the_c2pa_library_refuses_a_bare_self_signed_certificate():
    """Why a development CA is made at all: the TLS kind of certificate cannot sign a manifest."""
    cert, key = generate_self_signed()
    with pytest.raises(CredentialsError, match="will not sign"):
        ManifestSigner(SigningCredentials(cert, key, development=False))


def test_the_operators_files_are_used_as_given(tmp_path):
    cert, key = operator_credentials(tmp_path)
    credentials = load_credentials(ProvenanceSettings(c2pa_cert=cert, c2pa_key=key), tmp_path / "provenance")
    assert not credentials.development and credentials.algorithm == "es384"
    assert "Example Newsroom" in Provenance(frozenset(PROVENANCE_MARKS), credentials).describe()
    assert not (tmp_path / "provenance").exists()


def test_a_key_that_is_not_the_certificates_stops_the_start(tmp_path):
    cert, _ = operator_credentials(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = operator_credentials(tmp_path / "other")
    with pytest.raises(CredentialsError, match="does not belong"):
        load_credentials(ProvenanceSettings(c2pa_cert=cert, c2pa_key=other_key), tmp_path / "provenance")
    with pytest.raises(CredentialsError, match="cannot read"):
        load_credentials(ProvenanceSettings(c2pa_cert=cert, c2pa_key=tmp_path / "missing.pem"), tmp_path)


def test_the_server_id_comes_from_the_signing_certificate(tmp_path):
    one = load_credentials(ProvenanceSettings(), tmp_path / "a")
    two = load_credentials(ProvenanceSettings(), tmp_path / "b")
    assert one.server_id == int.from_bytes(one.fingerprint[:2], "big") and one.fingerprint != two.fingerprint


def settings(*argv: str, env: dict | None = None):
    return settings_from_args(build_parser(env or {}).parse_args(["serve", *argv]))


def test_every_mark_is_on_by_default_and_each_can_be_switched_off():
    assert settings().provenance == ProvenanceSettings()
    assert settings().provenance.marks == frozenset(PROVENANCE_MARKS)
    assert settings("--provenance", "metadata, watermark").provenance.marks == {"metadata", "watermark"}
    assert settings("--provenance", "none").provenance.marks == frozenset()
    assert settings(env={"FLUXSERVE_PROVENANCE": "c2pa"}).provenance.marks == {"c2pa"}


def test_bad_provenance_flags_are_refused_naming_them(capsys, tmp_path):
    with pytest.raises(SystemExit):
        build_parser({}).parse_args(["serve", "--provenance", "c2pa,stamp"])
    assert "unknown marks stamp" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--c2pa-cert and --c2pa-key"):
        settings("--c2pa-key", str(tmp_path / "key.pem"))
