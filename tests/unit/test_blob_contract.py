"""The BlobStore contract. Every backend runs this same suite (local disk; S3 through a real moto server)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from fluxserve.blobs.expiry import BlobExpiries
from fluxserve.blobs.local import LocalBlobStore
from fluxserve.blobs.s3 import S3BlobStore
from fluxserve.core.errors import NotFound
from fluxserve.core.settings import S3Settings, parse_s3_url

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # a PNG signature, not a real image: stores must not care
JPEG = b"\xff\xd8\xffjpeg"
HTML = b"<!doctype html><script>alert(1)</script>"
INVALID_KEYS = ["../x", "a/b.png", "", "../" + "a" * 32 + ".png", "A" * 32 + ".png", "a" * 32 + ".png/x"]
BASE_URL = "http://api.example:8080/"


@pytest.fixture(params=["local", "s3"])
def blobs(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore.open(tmp_path / "files")
    return request.getfixturevalue("s3_blobs")


def unused_key(extension: str = "png") -> str:
    return f"{uuid.uuid4().hex}.{extension}"


def test_put_then_read_returns_bytes_and_content_type(blobs):
    png = blobs.put(PNG, "image/png", "png")
    jpeg = blobs.put(JPEG, "image/jpeg", "jpeg")
    assert blobs.read(png) == (PNG, "image/png")
    assert blobs.read(jpeg) == (JPEG, "image/jpeg")


def test_the_content_type_comes_from_the_bytes_never_the_name(blobs):
    disguised = unused_key("png")
    blobs.put_at(disguised, HTML)
    assert blobs.read(disguised) == (HTML, "application/octet-stream")
    assert blobs.read(blobs.put(PNG, "text/html", "html"))[1] == "image/png"


def test_put_new_never_overwrites(blobs):
    key = unused_key()
    assert blobs.put_new(key, PNG) is True
    assert blobs.put_new(key, HTML) is False
    assert blobs.read(key) == (PNG, "image/png")
    output = blobs.put(JPEG, "image/jpeg", "jpeg")
    assert blobs.put_new(output, HTML) is False and blobs.read(output)[0] == JPEG


def test_records_are_written_listed_and_deleted(blobs):
    blobs.put_record("uploads/abc/one.png.grant", b"1")
    blobs.put_record("uploads/abc/two.png.done", b"")
    blobs.put_record("uploads/xyz/three.png.done", b"3")
    blobs.put_record("uploads/abc/one.png.grant", b"replaced")
    assert blobs.read_record("uploads/abc/one.png.grant") == b"replaced"
    assert blobs.read_record("uploads/abc/missing.grant") is None
    names = sorted(name for name, _ in blobs.list_records("uploads/abc/"))
    assert names == ["uploads/abc/one.png.grant", "uploads/abc/two.png.done"]
    assert len(blobs.list_records("uploads/")) == 3
    assert all(abs(written - time.time()) < 60 for _, written in blobs.list_records("uploads/"))
    blobs.delete_record("uploads/abc/one.png.grant")
    blobs.delete_record("uploads/abc/one.png.grant")  # idempotent
    assert [name for name, _ in blobs.list_records("uploads/abc/")] == ["uploads/abc/two.png.done"]


BAD_RECORD_NAMES = ["../x", "uploads/../x", "a", "/abs/x", "UP/x", "uploads//x", "uploads/.hidden"]


@pytest.mark.parametrize("name", BAD_RECORD_NAMES)
def test_record_names_cannot_escape(blobs, name):
    with pytest.raises(ValueError):
        blobs.put_record(name, b"x")


def test_records_are_never_reachable_as_blobs(blobs):
    blobs.put_record("uploads/abc/k.grant", b"secret")
    for key in (".records", ".records/uploads/abc/k.grant", "uploads/abc/k.grant"):
        with pytest.raises(NotFound):
            blobs.read(key)


def test_keys_are_unique_and_carry_the_extension(blobs):
    keys = {blobs.put(b"x", "image/png", "png") for _ in range(20)}
    assert len(keys) == 20 and all(k.endswith(".png") for k in keys)


def test_put_at_stores_under_the_given_key(blobs):
    key = unused_key("jpeg")
    blobs.put_at(key, JPEG)
    assert blobs.read(key) == (JPEG, "image/jpeg")
    blobs.put_at(key, b"replaced")  # put_at overwrites (uploads use put_new)
    assert blobs.read(key)[0] == b"replaced"


def test_read_of_missing_key_is_not_found(blobs):
    with pytest.raises(NotFound):
        blobs.read(unused_key())


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_not_found(blobs, key):
    with pytest.raises(NotFound):
        blobs.read(key)
    with pytest.raises(NotFound):
        blobs.put_at(key, b"x")
    blobs.delete(key)  # refused silently, like a missing key


def test_delete_is_idempotent(blobs):
    key = blobs.put(PNG, "image/png", "png")
    blobs.delete(key)
    with pytest.raises(NotFound):
        blobs.read(key)
    blobs.delete(key)
    blobs.delete(unused_key())


def test_redirect_url_of_a_missing_blob_is_not_found(blobs):
    with pytest.raises(NotFound):
        blobs.redirect_url(unused_key())
    key = blobs.put(PNG, "image/png", "png")
    blobs.redirect_url(key)  # a stored one: a URL to send the client to, or None to serve it


def test_expired_blobs_are_swept_and_others_kept(blobs):
    expiries = BlobExpiries(blobs)
    soon, later, forever = (blobs.put(PNG, "image/png", "png") for _ in range(3))
    expiries.record(soon, 1000.5)  # rounded up: never removed before its time
    expiries.record(later, 5000)
    assert expiries.sweep(now=1000) == 0 and blobs.read(soon)[0] == PNG
    assert expiries.sweep(now=1001) == 1
    with pytest.raises(NotFound):
        blobs.read(soon)
    assert blobs.read(later)[0] == PNG and blobs.read(forever)[0] == PNG
    assert [name for name, _ in blobs.list_records("expiries/")] == [f"expiries/{later}.5000"]
    assert expiries.sweep(now=10**10) == 1 and blobs.read(forever)[0] == PNG


def test_url_is_absolute(blobs):
    key = blobs.put(PNG, "image/png", "png")
    parts = urlsplit(blobs.url(key, BASE_URL))
    assert parts.scheme in ("http", "https") and parts.netloc and parts.path.endswith(key)


# S3 only ------------------------------------------------------------------------------------------


def list_keys(store: S3BlobStore) -> list[str]:
    listing = store.client.list_objects_v2(Bucket=store.settings.bucket)
    return sorted(obj["Key"] for obj in listing.get("Contents", []))


def open_store(settings: S3Settings, **changes) -> S3BlobStore:
    return S3BlobStore.open(dataclasses.replace(settings, **changes), create_bucket=True)


def test_public_base_url_gives_public_urls(s3_settings):
    store = open_store(s3_settings, public_base_url="https://cdn.example/images/", prefix="out")
    key = store.put(PNG, "image/png", "png")
    assert store.url(key, BASE_URL) == f"https://cdn.example/images/out/{key}"
    store.close()


def test_without_a_public_url_the_url_is_the_apis_own_and_redirects_to_a_presigned_one(s3_blobs, s3_server):
    key = s3_blobs.put(PNG, "image/png", "png")
    kept = s3_blobs.url(key, BASE_URL)
    assert kept == f"{BASE_URL.rstrip('/')}/files/{key}", "a presigned URL would die within 7 days"
    url = s3_blobs.redirect_url(key)
    assert url.startswith(f"{s3_server}/{s3_blobs.settings.bucket}/{key}?")  # path-style
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == [str(7 * 24 * 3600)]
    response = httpx.get(url, trust_env=False)
    assert response.status_code == 200
    assert response.content == PNG and response.headers["content-type"] == "image/png"


def test_bucket_serves_non_images_as_downloads_typed_by_their_bytes(s3_blobs):
    html, png = unused_key("png"), unused_key("html")
    s3_blobs.put_at(html, HTML)
    s3_blobs.put_at(png, PNG)
    served = httpx.get(s3_blobs.redirect_url(html), trust_env=False)
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"] == "attachment"
    image = httpx.get(s3_blobs.redirect_url(png), trust_env=False)
    assert image.headers["content-type"] == "image/png" and "content-disposition" not in image.headers


def test_presign_lifetime_is_configurable(s3_settings):
    store = open_store(s3_settings, presign_seconds=600)
    query = parse_qs(urlsplit(store.redirect_url(store.put(PNG, "image/png", "png"))).query)
    assert query["X-Amz-Expires"] == ["600"]
    store.close()


def test_prefix_is_applied_to_object_keys(s3_settings):
    store = open_store(s3_settings, prefix="/renders/2024/")
    key = store.put(PNG, "image/png", "png")
    uploaded = unused_key("jpeg")
    store.put_at(uploaded, b"u")
    assert list_keys(store) == sorted([f"renders/2024/{key}", f"renders/2024/{uploaded}"])
    assert store.read(key) == (PNG, "image/png")
    store.delete(key)
    assert list_keys(store) == [f"renders/2024/{uploaded}"]
    store.close()


def test_open_creates_a_missing_bucket_only_when_asked(s3_settings):
    from botocore.exceptions import ClientError

    plain = S3BlobStore.open(s3_settings)
    with pytest.raises(ClientError):
        plain.client.head_bucket(Bucket=s3_settings.bucket)
    created = S3BlobStore.open(s3_settings, create_bucket=True)
    created.client.head_bucket(Bucket=s3_settings.bucket)
    again = S3BlobStore.open(s3_settings, create_bucket=True)  # a second host starting: still fine
    key = again.put(PNG, "image/png", "png")
    assert plain.read(key) == (PNG, "image/png")
    for store in (plain, created, again):
        store.close()


def test_key_with_trailing_newline_is_refused(s3_blobs):
    # `$` in KEY_PATTERN matches before a final newline; the S3 store must not accept such a key.
    key = unused_key() + "\n"
    with pytest.raises(NotFound):
        s3_blobs.put_at(key, b"x")
    with pytest.raises(NotFound):
        s3_blobs.read(key)
    with pytest.raises(NotFound):
        s3_blobs.url(key, BASE_URL)
    assert list_keys(s3_blobs) == []


def test_create_bucket_outside_us_east_1(s3_settings):
    store = open_store(s3_settings, region="eu-west-1")
    location = store.client.get_bucket_location(Bucket=s3_settings.bucket)["LocationConstraint"]
    assert location == "eu-west-1"
    assert store.read(store.put(PNG, "image/png", "png"))[0] == PNG
    store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/prefix", ("bucket", "prefix/")),
        ("s3://my.bucket/a/b/", ("my.bucket", "a/b/")),
    ],
)
def test_parse_s3_url(url, expected):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "bucket/prefix", "s3://b/p?x=1"])
def test_parse_s3_url_refuses_other_urls(url):
    with pytest.raises(ValueError):
        parse_s3_url(url)


@pytest.mark.parametrize(
    "changes",
    [
        {"bucket": ""},
        {"presign_seconds": 0},
        {"presign_seconds": 7 * 24 * 3600 + 1},
        {"addressing_style": "sideways"},
        {"access_key_id": "only-one"},
    ],
)
def test_settings_refuse_configurations_that_cannot_work(changes):
    with pytest.raises(ValueError):
        S3Settings(**{"bucket": "b", **changes})
