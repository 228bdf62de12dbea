"""Every input has a cap, enforced before it costs anything: body size (413 while streaming), prompt length,
data: URI size at submit, JSON depth and size, strict types, and 422s that name the field, never echoing it.
All through a live server (fake engine) with real HTTP clients."""

from __future__ import annotations

import base64
import socket
import time
from urllib.parse import urlsplit

import pytest

from fluxserve.core.settings import ApiSettings
from tests.conftest import make_settings, start_live_server

pytestmark = pytest.mark.abuse

RUN = "/fal-ai/flux/schnell"
SUBMIT = "/queue/fal-ai/flux/schnell"
REDUX_SUBMIT = "/queue/fal-ai/flux/schnell/redux"
LIMITS = ApiSettings()


def post_json(http, path: str, raw: bytes):
    return http.post(path, content=raw, headers={"content-type": "application/json"})


def assert_names(response, loc: list, kind: str | None = None) -> dict:
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    assert item["loc"] == loc
    assert set(item) == {"loc", "msg", "type"}, "an error item never carries the input"
    if kind:
        assert item["type"] == kind
    return item


def raw_exchange(server, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request by hand and read what the server answers (it may answer before the body is all sent)."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_declared_body_over_the_cap_is_a_413_before_it_is_read(fake_server, fake_engine):
    head = (f"POST {RUN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {25 * 1024 * 1024}\r\n\r\n").encode()  # fmt: skip
    started = time.perf_counter()
    answer = raw_exchange(fake_server, head, [b'{"prompt": "aaaa'])  # the other 25 MB never come
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.perf_counter() - started < 2
    assert b'"error_type":"request_too_large"' in answer and b"connection: close" in answer.lower()
    assert fake_engine.calls == []


def test_a_chunked_body_is_cut_off_once_it_outgrows_the_cap(fake_server, fake_engine):
    head = (f"POST {RUN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b'{"prompt": "' + b"a" * 65536
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (LIMITS.max_body_bytes // len(chunk) + 1)
    answer = raw_exchange(fake_server, head.encode(), parts)  # no terminating chunk: the server must not wait
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert fake_engine.calls == []


def test_a_25_mb_prompt_is_refused_at_once_and_not_echoed(fake_server, fake_engine):
    prompt = "a" * (25 * 1024 * 1024)
    with fake_server.client() as http:
        started = time.perf_counter()
        r = http.post(RUN, json={"prompt": prompt})
        elapsed = time.perf_counter() - started
    assert r.status_code == 413 and r.json()["error_type"] == "request_too_large"
    assert len(r.content) < 500 and elapsed < 5
    assert fake_engine.calls == []


@pytest.mark.parametrize("path", [RUN, SUBMIT])
def test_a_prompt_over_the_length_cap_is_a_422_naming_prompt(fake_server, fake_engine, path):
    with fake_server.client() as http:
        r = http.post(path, json={"prompt": "b" * (LIMITS.max_prompt_length + 1)})
        ok = http.post(path, json={"prompt": "c" * LIMITS.max_prompt_length, "image_size": "square"})
    item = assert_names(r, ["body", "prompt"], "string_too_long")
    assert str(LIMITS.max_prompt_length) in item["msg"] and "bbbb" not in r.text
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"prompt": "x", "guidance_scale": NaN}', ["body", "guidance_scale"]),
        (b'{"prompt": "x", "guidance_scale": Infinity}', ["body", "guidance_scale"]),
        (b'{"prompt": "x", "guidance_scale": -Infinity}', ["body", "guidance_scale"]),
        (b'{"prompt": "x", "guidance_scale": 1e999}', ["body", "guidance_scale"]),
        (b'{"prompt": "x", "seed": NaN}', ["body", "seed"]),
        (b'{"prompt": "x", "image_size": {"width": NaN, "height": 512}}', ["body", "image_size", "width"]),
        (b'{"prompt": "x", "extra": [1, NaN]}', ["body", "extra", 1]),
    ],
)
def test_nan_and_infinity_are_a_422_naming_the_field(fake_server, fake_engine, raw, loc):
    with fake_server.client() as http:
        r = post_json(http, RUN, raw)
    assert_names(r, loc, "finite_number")
    assert fake_engine.calls == []


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"prompt": "a \\ud800 cat"}', ["body", "prompt"]),
        (b'{"prompt": "\\udfff"}', ["body", "prompt"]),
        (b'{"prompt": "a \xed\xa0\x80 cat"}', ["body", "prompt"]),  # a surrogate encoded as UTF-8 bytes
        (b'{"prompt": "x", "output_format": "\\ud83d"}', ["body", "output_format"]),
    ],
)
def test_lone_surrogates_are_a_422_naming_the_field(fake_server, fake_engine, raw, loc):
    with fake_server.client() as http:
        r = post_json(http, SUBMIT, raw)
    assert_names(r, loc, "string_unicode")
    assert fake_engine.calls == []


def test_a_paired_surrogate_escape_is_text(fake_server):
    with fake_server.client() as http:
        r = post_json(http, RUN, b'{"prompt": "a \\ud83e\\udd8a", "image_size": "square"}')
    assert r.status_code == 200 and r.json()["prompt"] == "a \U0001f98a"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_images", "2"), ("num_images", 2.0), ("num_images", True),
        ("num_inference_steps", "4"), ("num_inference_steps", 4.0),
        ("seed", "5"), ("seed", True), ("seed", 5.0),
        ("sync_mode", "true"), ("sync_mode", "yes"), ("sync_mode", 1),
        ("enable_safety_checker", "false"), ("enable_safety_checker", 0),
        ("guidance_scale", "3.5"), ("guidance_scale", True),
        ("image_size", {"width": "512", "height": 512}),
    ],
)  # fmt: skip
def test_types_are_strict_where_fal_is(fake_server, fake_engine, field, value):
    with fake_server.client() as http:
        r = http.post(RUN, json={"prompt": "x", field: value})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["body", field]
    assert fake_engine.calls == []


def test_an_integer_is_still_a_number(fake_server, fake_engine):
    with fake_server.client() as http:
        r = http.post(RUN, json={"prompt": "x", "guidance_scale": 4, "image_size": "square"})
    assert r.status_code == 200, r.text
    assert fake_engine.calls[0].guidance_scale == 4.0


def test_a_422_never_echoes_the_input(fake_server):
    junk = "zq" * 40_000  # 80 KB a field, under the body cap
    with fake_server.client() as http:
        responses = [
            http.post(RUN, json={"prompt": [junk]}),
            http.post(RUN, json={"prompt": "x", "output_format": junk}),
            http.post(RUN, json={"prompt": "x", "image_size": {"width": junk, "height": junk}}),
            http.post(RUN, json={"prompt": "x", "seed": junk, "num_images": junk, "sync_mode": junk}),
        ]
    for r in responses:
        assert r.status_code == 422
        assert len(r.content) < 2000 and "zqzq" not in r.text
        for item in r.json()["detail"]:
            assert set(item) == {"loc", "msg", "type"}


def test_deep_nesting_is_a_422(fake_server):
    depth = LIMITS.max_json_depth + 1
    raw = b'{"prompt": "x", "extra": ' + b"[" * depth + b"]" * depth + b"}"
    with fake_server.client() as http:
        r = post_json(http, RUN, raw)
    assert_names(r, ["body"], "json_too_deep")


def test_a_2_mb_array_is_refused_without_blocking_the_server(tmp_path, fake_engine):
    # On the Redux route the body cap leaves room for a 20 MB data: URI, so the array reaches the JSON checks.
    server = start_live_server(make_settings(tmp_path, redux_enabled=True), fake_engine)
    raw = b'{"image_url": "data:,", "extra": [' + b"0," * 1_000_000 + b"0]}"
    try:
        with server.client() as http:
            started = time.perf_counter()
            r = post_json(http, REDUX_SUBMIT, raw)
            elapsed = time.perf_counter() - started
            text = post_json(http, SUBMIT, raw)
    finally:
        server.stop()
    assert_names(r, ["body"], "json_too_many_values")
    assert elapsed < 1, f"{elapsed:.2f} s"
    assert text.status_code == 413


def data_uri(size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(b"\0" * size).decode()


def test_a_data_uri_over_the_cap_is_a_422_at_submit(tmp_path, fake_engine):
    settings = make_settings(tmp_path, redux_enabled=True, max_upload_bytes=10_000)
    server = start_live_server(settings, fake_engine)
    try:
        with server.client() as http:
            big = http.post(REDUX_SUBMIT, json={"image_url": data_uri(10_001)})
            small = http.post(REDUX_SUBMIT, json={"image_url": data_uri(10_000)})
            queued = server.store.count_queued()
    finally:
        server.stop()
    item = assert_names(big, ["body", "image_url"], "image_url_invalid")
    assert "10001 bytes" in item["msg"] and "AAAA" not in big.text
    assert small.status_code == 200, small.text
    assert queued <= 1, "the refused request must never be queued"


def test_an_upload_over_the_cap_is_a_413_in_fals_shape(tmp_path, fake_engine):
    server = start_live_server(make_settings(tmp_path, max_upload_bytes=10_000), fake_engine)
    try:
        with server.client() as http:
            r = http.post("/files/upload", content=b"\0" * 10_001, headers={"content-type": "image/png"})
    finally:
        server.stop()
    assert r.status_code == 413 and r.json()["error_type"] == "request_too_large"


def test_a_non_finite_start_timeout_is_refused_without_echo(fake_server):
    with fake_server.client() as http:
        for value in ("inf", "nan", "-1", "x" * 2000):
            r = http.post(SUBMIT, json={"prompt": "x"}, headers={"x-fal-request-timeout": value})
            assert_names(r, ["header", "x-fal-request-timeout"])
            assert "xxxx" not in r.text


def test_the_limits_are_flags(tmp_path):
    from fluxserve.cli.main import build_parser, settings_from_args

    args = build_parser({}).parse_args(
        ["api", "--data-dir", str(tmp_path), "--max-body-bytes", "1000", "--max-prompt-length", "10",
         "--max-json-depth", "3", "--max-json-items", "20"]
    )  # fmt: skip
    api = settings_from_args(args).api
    got = (api.max_body_bytes, api.max_prompt_length, api.max_json_depth, api.max_json_items)
    assert got == (1000, 10, 3, 20)
    defaults = settings_from_args(build_parser({}).parse_args(["api", "--data-dir", str(tmp_path)])).api
    assert defaults.max_prompt_length == ApiSettings().max_prompt_length == 5000
