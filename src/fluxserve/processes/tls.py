"""A self-signed certificate for 127.0.0.1 and localhost (and its queue. and rest. hosts), so fal_client
(which hard-codes https://) can reach a local server after `export SSL_CERT_FILE=<data-dir>/tls/cert.pem`."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALID_DAYS = 3650


def ensure_self_signed(folder: Path) -> tuple[Path, Path]:
    """The (cert, key) in folder, generated on first use and reused after."""
    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    if not (cert_path.is_file() and key_path.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        cert_pem, key_pem = generate_self_signed()
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        cert_path.write_bytes(cert_pem)
    return cert_path, key_path


def generate_self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fluxserve local")])
    now = datetime.datetime.now(datetime.timezone.utc)
    # queue. and rest. too: fal_client given only FAL_RUN_HOST=localhost:PORT derives queue.localhost:PORT,
    # which fluxserve serves by host (api/hosts.py).
    san = x509.SubjectAlternativeName([
        *(x509.DNSName(name) for name in ("localhost", "queue.localhost", "rest.localhost")),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ])  # fmt: skip
    # It is its own trust anchor (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS), so it is marked as a CA too.
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
