"""Who may write which upload: grants recorded next to the blobs, so every API node sharing them agrees.

An upload URL is issued to one API key for one fresh blob key, carries a random secret (only its SHA-256
is kept), and is good for one PUT before it expires: the PUT cannot name a key the server did not issue, an
output, another key's file, or a file already uploaded. Every upload counts against its key's quota until the
retention sweep removes it.

Records, per owner (a hash of the key id, so names stay short and the bucket never lists key ids):
  uploads/<owner>/<blob key>.grant   {"owner", "token_sha256", "lifetime_s", "expires_at"}, written when
                                     the URL is issued
  uploads/<owner>/<blob key>.done    written just before the bytes are stored; its time starts the retention

An upload may ask to live less than the retention (fal's X-Fal-Object-Lifecycle): its end is then recorded in
the blob expiry index (expiry.py), which removes the file sooner; the retention sweep ends it at the latest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fluxserve.blobs.base import KEY_PATTERN, BlobStore
from fluxserve.blobs.expiry import BlobExpiries
from fluxserve.core.settings import StorageSettings

ANONYMOUS = "anonymous"  # the owner of every upload while auth is off
PREFIX = "uploads/"
GRANT, DONE = ".grant", ".done"


class QuotaExceeded(Exception):
    pass


class UploadRefused(Exception):
    """The PUT may not write: no such grant (never issued, or already used), a wrong secret, or expired."""


@dataclass(frozen=True)
class Grant:
    key: str
    token: str  # what the upload URL carries: "<owner tag>.<secret>"


def owner_tag(owner: str | None) -> str:
    return hashlib.sha256((owner or ANONYMOUS).encode()).hexdigest()[:24]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Uploads:
    def __init__(
        self, blobs: BlobStore, settings: StorageSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.blobs, self.settings, self.clock = blobs, settings, clock
        # Count-then-record is exact within one API process; across N nodes a key may overshoot by N - 1.
        self._lock = threading.Lock()

    def active(self, owner: str | None) -> int:
        """Uploads the owner holds: stored ones, and issued URLs that can still be used."""
        live_from = self.clock() - self.settings.upload_url_ttl_s
        held = set()
        for name, written in self.blobs.list_records(f"{PREFIX}{owner_tag(owner)}/"):
            key, _, kind = name.rpartition("/")[2].rpartition(".")
            if f".{kind}" == DONE or (f".{kind}" == GRANT and written >= live_from):
                held.add(key)
        return len(held)

    def _check_quota(self, owner: str | None) -> None:
        quota = self.settings.upload_quota
        if quota and self.active(owner) >= quota:
            raise QuotaExceeded(f"Upload quota reached: {quota} files per key; older uploads expire after "
                                f"{self.settings.upload_retention_s / 3600:g} hours")  # fmt: skip

    def grant(self, owner: str | None, key: str, lifetime_s: float | None = None) -> Grant:
        """Issue the one upload URL for a fresh key (whose file lives lifetime_s once stored, within the
        retention; None: the retention); raises QuotaExceeded."""
        secret = secrets.token_urlsafe(24)
        record = {"owner": owner, "token_sha256": _sha256(secret), "lifetime_s": lifetime_s,
                  "expires_at": self.clock() + self.settings.upload_url_ttl_s}  # fmt: skip
        with self._lock:
            self._check_quota(owner)
            self.blobs.put_record(self._name(owner_tag(owner), key, GRANT), json.dumps(record).encode())
        return Grant(key, f"{owner_tag(owner)}.{secret}")

    def redeem(self, key: str, token: str) -> str:
        """Check a PUT's token against its grant; the grant's owner, or UploadRefused."""
        tag, _, secret = token.partition(".")
        if not KEY_PATTERN.fullmatch(key) or not tag.isalnum() or not secret:
            raise UploadRefused("Unknown upload URL")
        raw = self.blobs.read_record(self._name(tag, key, GRANT))
        if raw is None:
            raise UploadRefused("Unknown or already used upload URL")
        record = json.loads(raw)
        if not hmac.compare_digest(record["token_sha256"], _sha256(secret)):
            raise UploadRefused("Unknown or already used upload URL")
        if self.clock() >= record["expires_at"]:
            raise UploadRefused("Upload URL expired: ask /storage/upload/initiate for a new one")
        return record["owner"]

    def store(
        self, owner: str | None, key: str, data: bytes, granted: bool, lifetime_s: float | None = None
    ) -> bool:
        """Write an upload once. granted: the key came with a redeemed grant (else quota is checked now),
        whose lifetime then applies; else lifetime_s does (None: the retention).
        False when the key already holds a file: a grant is good for one PUT."""
        tag = owner_tag(owner)
        if granted:
            grant = self.blobs.read_record(self._name(tag, key, GRANT))
            lifetime_s = json.loads(grant or "{}").get("lifetime_s")
        with self._lock:
            if not granted:
                self._check_quota(owner)
            self.blobs.put_record(self._name(tag, key, DONE), b"")  # first: a stored file is always swept
        if lifetime_s is not None and lifetime_s < self.settings.upload_retention_s:
            BlobExpiries(self.blobs).record(key, self.clock() + lifetime_s)
        if not self.blobs.put_new(key, data):
            return False
        self.blobs.delete_record(self._name(tag, key, GRANT))
        return True

    def sweep(self) -> int:
        """Remove uploads past retention (file and records) and grants past their URL's lifetime."""
        now = self.clock()
        removed = 0
        for name, written in self.blobs.list_records(PREFIX):
            stem, _, kind = name.rpartition(".")
            key = stem.rpartition("/")[2]
            if f".{kind}" == DONE and written < now - self.settings.upload_retention_s:
                self.blobs.delete(key)
                self.blobs.delete_record(name)
                self.blobs.delete_record(stem + GRANT)
                removed += 1
            elif f".{kind}" == GRANT and written < now - self.settings.upload_url_ttl_s:
                self.blobs.delete_record(name)
        return removed

    @staticmethod
    def _name(tag: str, key: str, kind: str) -> str:
        return f"{PREFIX}{tag}/{key}{kind}"
