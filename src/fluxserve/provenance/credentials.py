"""Who signs the C2PA manifests: the operator's certificate chain and key (--c2pa-cert, --c2pa-key), or else a
development CA and a leaf it issued, generated on first start under <data-dir>/provenance and labelled as not
for production in their names. A leaf is needed, not a bare self-signed certificate: the C2PA library refuses
to sign with a certificate that is its own issuer, and a verifier trusts a CA, not each signer.
"""

from __future__ import annotations

import datetime
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.core.settings import ProvenanceSettings

CA_NAME = "dev-ca.pem"  # what `fluxserve verify` trusts by default, and what to hand to other verifiers
CHAIN_NAME = "dev-signer-chain.pem"  # the leaf, then the CA
KEY_NAME = "dev-signer-key.pem"
DEVELOPMENT_LABEL = "fluxserve development"
CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = (
    825  # under the CA's lifetime; a restart after it expires makes no new one: delete the folder
)


class CredentialsError(ValueError):
    """The operator's certificate or key cannot be used (a configuration error: fix the flags)."""


@dataclass(frozen=True)
class SigningCredentials:
    chain_pem: bytes  # leaf first, then its issuers
    key_pem: bytes
    development: bool  # the generated development CA's leaf

    @functools.cached_property  # parsed once: the algorithm, the server id and the start log all read it
    def leaf(self) -> Any:
        from cryptography import x509

        return x509.load_pem_x509_certificates(self.chain_pem)[0]

    @property
    def algorithm(self) -> str:
        """The C2PA signing algorithm the key implies (es256/384/512, ed25519, ps256)."""
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        key = self.leaf.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithms = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
            if key.curve.name not in algorithms:
                raise CredentialsError(f"the C2PA key's curve {key.curve.name} is not one C2PA signs with")
            return algorithms[key.curve.name]
        if isinstance(key, ed25519.Ed25519PublicKey):
            return "ed25519"
        if isinstance(key, rsa.RSAPublicKey):
            return "ps256"
        raise CredentialsError(f"a {type(key).__name__} cannot sign C2PA manifests")

    @property
    def server_id(self) -> int:
        """16 bits naming this deployment in the watermark: its signing certificate's SHA-256, so every
        worker that signs with it writes the same id and a verifier can match one to the other."""
        return int.from_bytes(self.fingerprint[:2], "big")

    @property
    def fingerprint(self) -> bytes:
        from cryptography.hazmat.primitives import hashes

        return self.leaf.fingerprint(hashes.SHA256())

    def describe(self) -> str:
        subject = self.leaf.subject.rfc4514_string()
        return f"{subject}, of the development CA" if self.development else subject


def load_credentials(settings: ProvenanceSettings, folder: Path) -> SigningCredentials:
    """The operator's files if given (checked now, so a mismatch stops the start), else the development ones
    in `folder`, generated on first use."""
    if settings.c2pa_cert is not None and settings.c2pa_key is not None:
        try:
            credentials = SigningCredentials(
                settings.c2pa_cert.read_bytes(), settings.c2pa_key.read_bytes(), False
            )
        except OSError as exc:
            raise CredentialsError(f"cannot read the C2PA certificate or key: {exc}") from None
        check_pair(credentials)
        return credentials
    chain, key = ensure_development(folder)
    return SigningCredentials(chain.read_bytes(), key.read_bytes(), True)


def check_pair(credentials: SigningCredentials) -> None:
    from cryptography.hazmat.primitives import serialization

    try:
        leaf = credentials.leaf
        key = serialization.load_pem_private_key(credentials.key_pem, password=None)
    except ValueError as exc:
        raise CredentialsError(f"the C2PA certificate or key is not PEM the signer can read: {exc}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != leaf.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        raise CredentialsError("the C2PA key does not belong to the first certificate of --c2pa-cert")
    credentials.algorithm  # raises for a key type C2PA cannot sign with


def ensure_development(folder: Path) -> tuple[Path, Path]:
    """(chain, key) of the development signer in folder, generated once: several workers starting together
    each write a complete folder aside and rename it into place; the first rename wins, the rest use it."""
    chain, key = folder / CHAIN_NAME, folder / KEY_NAME
    if chain.is_file() and key.is_file():
        return chain, key
    folder.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        ca_pem, chain_pem, key_pem = generate_development()
        (aside / CA_NAME).write_bytes(ca_pem)
        (aside / CHAIN_NAME).write_bytes(chain_pem)
        (aside / KEY_NAME).touch(mode=0o600)
        (aside / KEY_NAME).write_bytes(key_pem)
        try:
            os.rename(aside, folder)  # atomic; fails when another process's folder is there first
        except OSError:
            if not (chain.is_file() and key.is_file()):
                raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    return chain, key


def generate_development(now: datetime.datetime | None = None) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, leaf + CA chain, leaf key), PEM. The leaf has what C2PA's profile asks of a signer:
    digitalSignature, the emailProtection EKU, not a CA, issued by a CA with keyCertSign."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{DEVELOPMENT_LABEL} (not for production)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ])  # fmt: skip

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, key_cert_sign=not sign, crl_sign=not sign,
                             content_commitment=False, key_encipherment=False, data_encipherment=False,
                             key_agreement=False, encipher_only=False, decipher_only=False)  # fmt: skip

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"{DEVELOPMENT_LABEL} CA")
    start = now - datetime.timedelta(minutes=5)
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder().subject_name(name(f"{DEVELOPMENT_LABEL} signer")).issuer_name(ca_name)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=LEAF_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), leaf.public_bytes(pem) + ca.public_bytes(pem), key_pem
