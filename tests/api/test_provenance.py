"""Provenance through the live server and the real clients (issue 17): what fal_client's results download is
signed, and the C2PA library's reader and an independent one (TrustNXT's c2pa-ts, in Node) both validate it;
`fluxserve verify` reports it, a tampered copy and recompressed copies; each --provenance switch removes its
own mark only; the operator's certificate signs when given."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fluxserve.core.settings import ProvenanceSettings
from fluxserve.provenance import verify as verifier
from fluxserve.provenance.credentials import CA_NAME, CHAIN_NAME
from tests.conftest import make_settings, start_live_server
from tests.support.fal_clients import point_fal_client
from tests.support.provenance import operator_credentials, read_manifest

SIZE = {"width": 512, "height": 384}
JS_DIR = Path(__file__).resolve().parents[1] / "js"
SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def data_dir(server) -> Path:
    return server.api.settings.data_dir


def dev_ca(server) -> str:
    return (data_dir(server) / "provenance" / CA_NAME).read_text()


def fal_result(server, monkeypatch, **arguments) -> tuple[dict, list[bytes]]:
    """fal_client.subscribe through the queue, and the images downloaded from the URLs it returned."""
    fal_client = point_fal_client(monkeypatch, server.url)
    result = fal_client.subscribe(
        "fal-ai/flux/schnell", arguments={"prompt": "a", "image_size": SIZE, **arguments}
    )
    return result, [httpx.get(image["url"]).content for image in result["images"]]


def verify_cli(source: str, directory: Path, *flags: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "fluxserve", "verify", source, "--data-dir", str(directory), *flags]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def tampered(data: bytes) -> bytes:
    """One pixel-data byte changed, the file still well formed: no JPEG marker (0xFF) made or broken."""
    changed = bytearray(data)
    at = next(i for i in range(len(data) * 2 // 3, len(data))
              if data[i] not in (0xFE, 0xFF) and data[i - 1] != 0xFF)  # fmt: skip
    changed[at] ^= 0x01
    return bytes(changed)


def recompressed(data: bytes, scale: float = 1.0, quality: int = 75) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if scale != 1.0:
        image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.BOX)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.mark.parametrize("output_format", ["png", "jpeg"])
def test_what_fal_client_downloads_is_signed_and_the_c2pa_reader_trusts_it(
    fake_server, monkeypatch, output_format
):
    result, (data,) = fal_result(fake_server, monkeypatch, output_format=output_format)
    store = read_manifest(data, trust=dev_ca(fake_server))
    assert store["validation_state"] == "Trusted", store.get("validation_status")
    manifest = store["manifests"][store["active_manifest"]]
    actions = [
        a
        for x in manifest["assertions"]
        if x["label"].startswith("c2pa.actions")
        for a in x["data"]["actions"]
    ]
    assert [(a["action"], a["digitalSourceType"]) for a in actions] == [("c2pa.created", SOURCE_TYPE)]
    assert result["timings"]["provenance"] > 0


def test_an_independent_c2pa_reader_validates_the_outputs_and_fails_a_tampered_one(fake_server, monkeypatch,
                                                                                    tmp_path):  # fmt: skip
    _, (png,) = fal_result(fake_server, monkeypatch, output_format="png")
    _, (jpeg,) = fal_result(fake_server, monkeypatch, output_format="jpeg", seed=5)
    files = {"png": png, "jpeg": jpeg, "tampered": tampered(jpeg), "unsigned": recompressed(jpeg)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = subprocess.run(["node", str(JS_DIR / "c2pa_read.mjs"), *(str(tmp_path / n) for n in files)],
                         capture_output=True, text=True, timeout=120, cwd=JS_DIR)  # fmt: skip
    assert out.returncode == 0, out.stderr
    read = {Path(r["file"]).name: r for r in map(json.loads, out.stdout.splitlines())}
    assert read["png"]["valid"] and read["jpeg"]["valid"], read
    assert read["jpeg"]["claimGenerator"] == "fluxserve"
    assert read["jpeg"]["actions"] == [{"action": "c2pa.created", "digitalSourceType": SOURCE_TYPE}]
    assert read["tampered"]["found"] and not read["tampered"]["valid"]
    assert "assertion.dataHash.mismatch (failure)" in read["tampered"]["codes"]
    assert not read["unsigned"]["found"]


def test_verify_reports_an_output_a_tampered_copy_and_recompressed_copies(fake_server, monkeypatch, tmp_path):
    result, (data,) = fal_result(fake_server, monkeypatch, output_format="jpeg")
    url = result["images"][0]["url"]
    out = verify_cli(url, data_dir(fake_server))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "C2PA manifest: valid and trusted" in out.stdout
    assert "action: c2pa.created (trainedAlgorithmicMedia) by FLUX.1 [schnell]" in out.stdout
    assert f"XMP metadata: DigitalSourceType {SOURCE_TYPE}" in out.stdout
    assert "watermark: found: server " in out.stdout

    (tmp_path / "tampered.jpg").write_bytes(tampered(data))
    out = verify_cli(str(tmp_path / "tampered.jpg"), data_dir(fake_server))
    assert (
        out.returncode == 1 and "C2PA manifest: INVALID" in out.stdout and "dataHash.mismatch" in out.stdout
    )

    # A re-encode drops the manifest and the metadata; the watermark stays.
    (tmp_path / "q75.jpg").write_bytes(recompressed(data))
    out = verify_cli(str(tmp_path / "q75.jpg"), data_dir(fake_server))
    assert (
        out.returncode == 0 and "C2PA manifest: absent" in out.stdout and "XMP metadata: absent" in out.stdout
    )
    assert "watermark: found" in out.stdout

    # Without the server's CA the same output is valid but its signer not trusted.
    out = verify_cli(url, tmp_path / "elsewhere")
    assert out.returncode == 0 and "valid (signer not among the trusted CAs given)" in out.stdout

    report = json.loads(verify_cli(url, data_dir(fake_server), "--json").stdout)
    assert report["manifest"]["state"] == "trusted" and report["watermark"]["found"]


def test_a_sync_mode_data_uri_carries_the_same_marks_as_the_stored_image(fake_server, monkeypatch):
    fal_client = point_fal_client(monkeypatch, fake_server.url)
    arguments = {"prompt": "a", "image_size": SIZE, "seed": 9, "output_format": "png"}
    inline = fal_client.run("fal-ai/flux/schnell", arguments={**arguments, "sync_mode": True})
    url = inline["images"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    inline_report = verifier.verify(base64.b64decode(url.split(",", 1)[1]), dev_ca(fake_server))
    _, (stored,) = fal_result(fake_server, monkeypatch, **arguments)
    stored_report = verifier.verify(stored, dev_ca(fake_server))
    for report in (inline_report, stored_report):
        assert report.manifest.state == "trusted" and report.metadata.digital_source_type == SOURCE_TYPE
        assert report.watermark.found
    assert inline_report.watermark.image_id == stored_report.watermark.image_id, (
        "the same request, the same id"
    )
    assert verify_cli(url, data_dir(fake_server)).returncode == 0


def test_the_openai_routes_webp_is_signed_too(fake_server):
    with fake_server.client() as http:
        body = {"prompt": "a", "response_format": "b64_json", "output_format": "webp", "size": "1024x1024"}
        data = base64.b64decode(http.post("/v1/images/generations", json=body).json()["data"][0]["b64_json"])
    report = verifier.verify(data, dev_ca(fake_server))
    assert (
        report.content_type == "image/webp" and report.manifest.state == "trusted" and report.watermark.found
    )


@pytest.mark.parametrize("off", ["c2pa", "metadata", "watermark"])
def test_each_switch_turns_off_its_own_mark_only(tmp_path, fake_engine, monkeypatch, off):
    marks = frozenset({"c2pa", "metadata", "watermark"} - {off})
    server = start_live_server(
        make_settings(tmp_path, provenance=ProvenanceSettings(marks=marks)), fake_engine
    )
    try:
        result, (data,) = fal_result(server, monkeypatch, output_format="png")
    finally:
        server.stop()
    ca = (tmp_path / "provenance" / CA_NAME).read_text() if (tmp_path / "provenance").exists() else None
    report = verifier.verify(data, ca)
    assert (report.manifest.state == "trusted") == ("c2pa" in marks)
    assert (report.metadata is not None and report.metadata.digital_source_type == SOURCE_TYPE) == (
        "metadata" in marks
    )
    assert report.watermark.found == ("watermark" in marks)
    assert "provenance" in result["timings"]


def test_with_no_marks_nothing_is_signed_and_no_credentials_are_made(tmp_path, fake_engine, monkeypatch):
    server = start_live_server(make_settings(tmp_path, provenance=ProvenanceSettings(marks=frozenset())),
                               fake_engine)  # fmt: skip
    try:
        _, (data,) = fal_result(server, monkeypatch, output_format="png")
    finally:
        server.stop()
    assert verifier.verify(data).outcome == "unmarked"
    assert not (tmp_path / "provenance").exists()


def test_the_operators_certificate_signs_when_given(tmp_path, fake_engine, monkeypatch):
    cert, key = operator_credentials(tmp_path)
    settings = make_settings(tmp_path / "data", provenance=ProvenanceSettings(c2pa_cert=cert, c2pa_key=key))
    server = start_live_server(settings, fake_engine)
    try:
        _, (data,) = fal_result(server, monkeypatch, output_format="jpeg")
    finally:
        server.stop()
    store = read_manifest(data, trust=(tmp_path / "operator-ca.pem").read_text())
    assert store["validation_state"] == "Trusted"
    signer = store["manifests"][store["active_manifest"]]["signature_info"]
    assert signer["common_name"] == "Example Newsroom image signer" and signer["alg"].lower() == "es384"
    assert not (tmp_path / "data" / "provenance" / CHAIN_NAME).exists(), "no development signer was made"
    out = verify_cli(str(_write(tmp_path / "out.jpg", data)), tmp_path / "data", "--trust",
                     str(tmp_path / "operator-ca.pem"))  # fmt: skip
    assert out.returncode == 0 and "valid and trusted" in out.stdout and "Example Newsroom" in out.stdout


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
