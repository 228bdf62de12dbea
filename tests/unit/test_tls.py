"""The self-signed certificate fal_client is pointed at with SSL_CERT_FILE."""

from __future__ import annotations

import ipaddress
import ssl

from cryptography import x509

from fluxserve.processes.tls import ensure_self_signed


def test_generated_once_and_reused(tmp_path):
    cert, key = ensure_self_signed(tmp_path / "tls")
    first = cert.read_bytes()
    assert ensure_self_signed(tmp_path / "tls") == (cert, key)
    assert cert.read_bytes() == first
    assert key.stat().st_mode & 0o077 == 0, "the private key must not be readable by others"


def test_names_cover_local_addresses_and_it_loads_as_a_trust_anchor(tmp_path):
    cert, key = ensure_self_signed(tmp_path)
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    ctx = ssl.create_default_context(cafile=str(cert))
    assert ctx.cert_store_stats()["x509_ca"] == 1
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
