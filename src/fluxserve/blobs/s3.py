"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, moto), so several hosts share the files.

The client fetches objects from the bucket itself, so the API never proxies image bytes: url() is a public/CDN
URL, or else the API's own /files/<key> URL, which redirects each GET to a freshly presigned URL. A presigned
URL lives at most 7 days (SigV4), an object as long as its expiry says (blobs/expiry.py, possibly forever),
so the URL a client keeps must not be the presigned one; presign_seconds is how long each redirect target
lives.

Keys are the same `<32 hex>.<ext>` names local storage hands out; anything else is refused, so a
caller-supplied key can never address another object in the bucket.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fluxserve.blobs.base import FILES_ROUTE, KEY_PATTERN, RECORDS_DIR, check_record_name, new_blob_key
from fluxserve.blobs.content_types import served_type
from fluxserve.core.errors import NotFound
from fluxserve.core.settings import S3Settings, normalize_prefix

# Error codes S3-compatible services use for "no such object" (HEAD answers a bare 404 without a body).
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})
# What a conditional PUT (If-None-Match: *) answers when the key is taken, or being written concurrently.
TAKEN_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for settings; boto3 is imported here so that local-only installs never load it."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": settings.addressing_style},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
    )
    # A private session: boto3's default session is module-global state shared with whoever else uses boto3.
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region,
    )
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def ensure_bucket(client: Any, settings: S3Settings) -> None:
    """Create the bucket unless it exists; a concurrent creator (another host starting) is fine."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=settings.bucket)
        return
    except ClientError as exc:
        if error_code(exc) not in MISSING_BUCKET_CODES:
            raise
    kwargs: dict[str, Any] = {"Bucket": settings.bucket}
    # us-east-1 is the one region that must NOT be named as a location constraint.
    if settings.region and settings.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


class S3BlobStore:
    """The BlobStore protocol on an S3-compatible bucket. boto3 clients are thread-safe, so one is shared."""

    def __init__(self, client: Any, settings: S3Settings) -> None:
        self.client = client
        self.settings = settings
        self.prefix = normalize_prefix(settings.prefix)

    @classmethod
    def open(cls, settings: S3Settings, create_bucket: bool = False) -> S3BlobStore:
        client = make_client(settings)
        if create_bucket:
            ensure_bucket(client, settings)
        return cls(client, settings)

    def close(self) -> None:
        """Release the client's connection pool (not part of the protocol; tests and shutdown use it)."""
        self.client.close()

    def object_key(self, key: str) -> str:
        """The bucket key for a blob key; refuses keys this store did not hand out."""
        # fullmatch, not match: KEY_PATTERN ends in `$`, which also matches before a trailing newline.
        if not KEY_PATTERN.fullmatch(key):
            raise NotFound(key)
        return self.prefix + key

    def put(self, data: bytes, content_type: str, extension: str) -> str:
        key = new_blob_key(extension)
        self.write(self.object_key(key), data)
        return key

    def put_at(self, key: str, data: bytes) -> None:
        self.write(self.object_key(key), data)

    def put_new(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.write(self.object_key(key), data, IfNoneMatch="*")  # S3's atomic create-only write
        except ClientError as exc:
            if error_code(exc) in TAKEN_CODES:
                return False
            raise
        return True

    def write(self, object_key: str, data: bytes, **conditions: Any) -> None:
        # Clients fetch objects from the bucket directly, so the bucket must serve them as safely as /files/
        # does: the type read from the bytes, and anything but an allow-listed image as a download.
        content_type, inline = served_type(data)
        disposition = {} if inline else {"ContentDisposition": "attachment"}
        # A PUT is atomic on S3: readers see the old object, or none, or the whole new one.
        bucket = self.settings.bucket
        self.client.put_object(Bucket=bucket, Key=object_key, Body=data, ContentType=content_type,
                               **disposition, **conditions)  # fmt: skip

    def url(self, key: str, base_url: str) -> str:
        """The object's public (CDN) URL, else the API's /files/ URL that redirects to a presigned one."""
        object_key = self.object_key(key)
        if self.settings.public_base_url:
            return self.settings.public_base_url.rstrip("/") + "/" + quote(object_key, safe="/")
        return base_url.rstrip("/") + FILES_ROUTE + key

    def redirect_url(self, key: str) -> str:
        """A GET URL presigned now for presign_seconds; NotFound once the object is gone (expired or never
        stored), so /files/ answers 404 rather than a redirect to the bucket's error."""
        from botocore.exceptions import ClientError

        object_key = self.object_key(key)
        try:
            self.client.head_object(Bucket=self.settings.bucket, Key=object_key)
        except ClientError as exc:
            if error_code(exc) in MISSING_OBJECT_CODES:
                raise NotFound(key) from None
            raise
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.settings.bucket, "Key": object_key},
            ExpiresIn=self.settings.presign_seconds,
        )

    def key_for_url(self, url: str) -> str | None:
        """The key when url is one of this store's own object URLs (public, or presigned: what url() gave
        before it gave /files/ URLs, and where a redirect points), else None."""
        from urllib.parse import unquote, urlsplit

        settings = self.settings
        bases = [settings.public_base_url.rstrip("/")] if settings.public_base_url else []
        if settings.endpoint_url:
            bases.append(f"{settings.endpoint_url.rstrip('/')}/{settings.bucket}")
        bases.append(f"https://{settings.bucket}.s3.amazonaws.com")
        plain = unquote(urlsplit(url)._replace(query="", fragment="").geturl())
        for base in bases:
            start = f"{base}/{settings.prefix}"
            if plain.startswith(start) and KEY_PATTERN.fullmatch(plain[len(start) :]):
                return plain[len(start) :]
        return None

    def read(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import ClientError

        object_key = self.object_key(key)
        try:
            response = self.client.get_object(Bucket=self.settings.bucket, Key=object_key)
        except ClientError as exc:
            if error_code(exc) in MISSING_OBJECT_CODES:
                raise NotFound(key) from None
            raise
        with response["Body"] as body:
            data = body.read()
        return data, response.get("ContentType") or DEFAULT_CONTENT_TYPE

    # -- records (under a `.records/` prefix: never a blob key, so no URL this store hands out reaches one)
    def record_key(self, name: str) -> str:
        return f"{self.prefix}{RECORDS_DIR}/{check_record_name(name)}"

    def put_record(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.settings.bucket, Key=self.record_key(name), Body=data)

    def read_record(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.settings.bucket, Key=self.record_key(name))
        except ClientError as exc:
            if error_code(exc) in MISSING_OBJECT_CODES:
                return None
            raise
        with response["Body"] as body:
            return body.read()

    def list_records(self, prefix: str) -> list[tuple[str, float]]:
        start = f"{self.prefix}{RECORDS_DIR}/"
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.settings.bucket,
                                                                      Prefix=start + prefix)  # fmt: skip
        return [(obj["Key"][len(start) :], obj["LastModified"].timestamp())
                for page in pages for obj in page.get("Contents", [])]  # fmt: skip

    def delete_record(self, name: str) -> None:
        self.client.delete_object(Bucket=self.settings.bucket, Key=self.record_key(name))

    def delete(self, key: str) -> None:
        """Idempotent like local storage: S3 answers 204 for a missing key; some look-alikes say NoSuchKey."""
        from botocore.exceptions import ClientError

        if not KEY_PATTERN.fullmatch(key):
            return
        try:
            self.client.delete_object(Bucket=self.settings.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if error_code(exc) not in MISSING_OBJECT_CODES:
                raise
