"""Reading provenance marks back in tests: the C2PA library's own reader and the CA to trust."""

from __future__ import annotations

import io
import json
from typing import Any

from fluxserve.blobs.content_types import image_type
from fluxserve.provenance.credentials import SigningCredentials


def ca_of(credentials: SigningCredentials) -> str:
    """The issuing CA of a development signer (its chain's last certificate), as PEM."""
    pem = credentials.chain_pem.decode()
    return pem[pem.rindex("-----BEGIN CERTIFICATE-----") :]


def development_ca() -> str:
    """The CA of the in-memory development signer (Provenance.in_memory, a Worker's default)."""
    from fluxserve.provenance.stamp import Provenance

    return ca_of(Provenance.in_memory().credentials)


def read_manifest(data: bytes, trust: str | None = None) -> dict[str, Any]:
    """The manifest store as the C2PA library reports it (with validation_state), trusting `trust`
    (default: the in-memory development CA)."""
    import c2pa

    from fluxserve.provenance.verify import reading_context

    context = reading_context(trust or development_ca())
    with c2pa.Reader(image_type(data), io.BytesIO(data), context=context) as reader:
        return json.loads(reader.json())


def operator_credentials(folder: Any) -> tuple[Any, Any]:
    """An operator's own CA-issued signer, as --c2pa-cert (leaf, then CA) and --c2pa-key files in folder."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Newsroom Root")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Newsroom"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "Example Newsroom image signer")])
    # fmt: skip

    def build(subject: Any, public: Any, ca: bool) -> Any:  # with what C2PA's certificate profile asks
        usage = x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca,
                              content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)  # fmt: skip
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
        )
        # fmt: skip
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False
            )
        return builder.sign(ca_key, hashes.SHA384())

    pem = serialization.Encoding.PEM
    ca = build(ca_name, ca_key.public_key(), ca=True)
    leaf = build(leaf_name, key.public_key(), ca=False)
    cert_path, key_path = folder / "signer-chain.pem", folder / "signer-key.pem"
    cert_path.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "operator-ca.pem").write_bytes(ca.public_bytes(pem))
    return cert_path, key_path
