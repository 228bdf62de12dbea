"""Properties of the input path over generated bodies: the JSON limits, the request models, the live submit.

What a hostile client can send is any byte string; what fal's clients send is a valid request. For the first,
the promise is a 4xx naming where the problem is (never a 500, never the input echoed back); for the second,
that it validates and survives the trip into the store unchanged.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fluxserve.api import errors, json_limits
from fluxserve.api.body_limits import RouteLimits
from fluxserve.api.endpoints import ENDPOINTS
from fluxserve.api.schemas import ImageSize, ImageSizePreset, ReduxInput, SchnellInput
from fluxserve.core.errors import InputError
from fluxserve.core.settings import ApiSettings
from fluxserve.engine import prompts
from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine

API = ApiSettings()
# The limits the live server applies to each endpoint, built from the defaults as the server builds them.
LIMITS = {e.app_id: RouteLimits.from_settings(API).rule_for(f"/{e.app_id}").json for e in ENDPOINTS}
MODELS = {e.app_id: e for e in ENDPOINTS}
SCHNELL, REDUX = "fal-ai/flux/schnell", "fal-ai/flux/schnell/redux"
# In every generated string value: a 422 that contains it has echoed the input.
MARKER = "Zq7echoX"
PROBLEM_TYPES = {"json_too_deep", "json_too_many_values", "finite_number", "string_unicode",
                 "string_too_long", "json_invalid", "image_url_invalid"}  # fmt: skip
FAST = settings(max_examples=300, deadline=None)


class Raw:
    """A JSON token written as is: what json.dumps cannot produce (a 5000-digit integer, 1e999)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:20]!r}{'...' if len(self.text) > 20 else ''})"


# -- strategies --------------------------------------------------------------------------------------------

# Any code point, lone surrogates included (hypothesis leaves them out of text() by default).
any_char = st.characters(exclude_categories=["Cs"]) | st.characters(categories=["Cs"])
any_text = st.text(any_char, max_size=12)
marked_text = any_text.map(lambda s: MARKER + s)
raw_numbers = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 5000, "-" + "9" * 4301, "1" + "0" * 400, "-0"]
).map(Raw)
scalars = st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**70) \
    | st.floats(allow_nan=True, allow_infinity=True) | marked_text | raw_numbers  # fmt: skip
FIELD_NAMES = sorted({*SchnellInput.model_fields, *ReduxInput.model_fields, "width", "height"})
keys = st.sampled_from(FIELD_NAMES) | st.text(any_char, max_size=6)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)


def nest(value: Any, depth: int, kind: str) -> Any:
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


deep_values = st.builds(nest, json_values, st.integers(0, 40), st.sampled_from(["list", "dict"]))
# What the URL check has to parse: schemes, brackets, ports, data: URIs. Hosts are loopback or unparseable
# and the rest starts at a delimiter, so no host here ever needs DNS when the live server's worker fetches it.
url_like = st.builds(
    lambda scheme, host, delimiter, rest: scheme + host + delimiter + MARKER + rest,
    st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "data:", "data:image/png;base64,", "",
                     "//"]),  # fmt: skip
    st.sampled_from(["", "127.0.0.1", "localhost", "[", "[::1", "[::1]", "[zz]", "127.0.0.1:",
                     "127.0.0.1:99999999", "127.0.0.1:-1", "%", "[::1]:x"]),  # fmt: skip
    st.sampled_from(["/", "?", "#"]),
    st.text(st.characters(exclude_characters="@"), max_size=12),
)

presets = st.sampled_from([p.value for p in ImageSizePreset])
side = st.integers(1, 14142)
custom_sizes = st.fixed_dictionaries({}, optional={"width": side, "height": side})
# A prompt the model accepts: something besides whitespace, no lone surrogate, within the server's cap.
prompts_ok = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300).filter(str.strip)
VALID_COMMON = {
    "image_size": presets | custom_sizes,
    "num_inference_steps": st.integers(1, 12),
    "seed": st.none() | st.integers(-(2**63), 2**64 - 1),
    "sync_mode": st.booleans(),
    "num_images": st.integers(1, 4),
    "enable_safety_checker": st.booleans(),
    "output_format": st.sampled_from(["jpeg", "png"]),
    "acceleration": st.sampled_from(["none", "regular", "high"]),
}
valid_schnell = st.fixed_dictionaries(
    {"prompt": prompts_ok},
    optional={**VALID_COMMON, "guidance_scale": st.floats(1, 20) | st.integers(1, 20)},
)
valid_redux = st.fixed_dictionaries(
    {"image_url": st.sampled_from(["http://127.0.0.1:9/x.jpg", "https://localhost:9/a.png",
                                   "data:image/png;base64,iVBORw0KGgo="])},  # fmt: skip
    optional=VALID_COMMON,
)


@st.composite
def mutated(draw: Any, valid: st.SearchStrategy) -> dict[str, Any]:
    """A valid request with one field (present or not) set to anything: errors deep inside each field."""
    body = dict(draw(valid))
    name = draw(st.sampled_from(FIELD_NAMES))
    near_misses = st.sampled_from([{"width": 512.0}, {"height": "9"}])
    body[name] = draw(json_values | deep_values | url_like | near_misses)
    return body


documents = (
    json_values | deep_values | mutated(valid_schnell) | mutated(valid_redux)
    | st.builds(lambda request, url: {**request, "image_url": url}, valid_redux, url_like)
    | st.dictionaries(st.sampled_from(FIELD_NAMES), json_values | url_like, max_size=8)
)  # fmt: skip


def encode(value: Any, ascii_only: bool) -> str:
    """JSON text for value; Raw tokens verbatim, NaN/Infinity as Python writes them."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        members = (f"{json.dumps(k, ensure_ascii=ascii_only)}: {encode(v, ascii_only)}"
                   for k, v in value.items())  # fmt: skip
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(encode(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


# Escaped (\udc00) or as raw bytes (surrogatepass: not UTF-8); now and then a body that is not JSON at all.
bodies = st.builds(
    lambda doc, ascii_only: encode(doc, ascii_only).encode("utf-8", "surrogatepass"), documents, st.booleans()
) | st.binary(max_size=64)


# -- what the API does with a body, without the HTTP around it ---------------------------------------------


def admit(app_id: str, body: bytes) -> Any:
    """A body's fate on an endpoint, as the server decides it: the limit problems, the validation errors, the
    InputError of the spec conversion, or the spec. Anything else escaping from here would be a 500."""
    problems = json_limits.check(body, LIMITS[app_id])
    if problems:
        return problems
    document = json.loads(body)
    endpoint = MODELS[app_id]
    try:
        model = endpoint.input_model.model_validate(document)
    except ValidationError as exc:
        return exc
    try:
        return endpoint.to_spec(model, "http://h", API.max_pixels)
    except InputError as exc:
        return exc


def rendered_422(items: list[dict[str, Any]]) -> str:
    """The 422 body the client would get, rendered by the real handler."""
    return errors.validation_response(items).body.decode("utf-8")


def follow(document: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        document = document[part]
    return document


# -- the JSON limits -----------------------------------------------------------------------------------------


@FAST
@given(body=bodies)
@example(body=b'{"a": [1, {"b": NaN}], "c": "\\ud800", "d": 1e999}')
@example(body=b'{"\\udc00": {"x": NaN}}')
def test_every_limit_problem_names_a_real_place_and_renders(body):
    problems = json_limits.check(body, LIMITS[SCHNELL])
    assert {p.type for p in problems} <= PROBLEM_TYPES
    text = rendered_422([p.item() for p in problems])
    assert MARKER not in text
    if any(p.type in ("finite_number", "string_unicode") for p in problems):
        document = json.loads(body, parse_constant=lambda name: Raw(name))
        for problem in problems:
            place = follow(document, problem.loc)
            if problem.type == "finite_number":
                assert isinstance(place, Raw) or place in (float("inf"), float("-inf"))
            elif problem.type == "string_unicode":
                assert isinstance(place, (str, dict)), "the bad string itself, or the object with a bad key"


@given(depth=st.integers(0, 80), kind=st.sampled_from(["list", "dict"]))
@settings(max_examples=100, deadline=None)
def test_nesting_is_refused_exactly_past_the_cap(depth, kind):
    body = encode(nest(1, depth, kind), True).encode()
    refused = [p.type for p in json_limits.check(body, LIMITS[SCHNELL])]
    assert refused == (["json_too_deep"] if depth > API.max_json_depth else [])


@given(prompt=st.text(st.sampled_from("ab \n,[]{}\"\\é"), max_size=API.max_prompt_length + 50))
@example(prompt="x" * API.max_prompt_length)
@example(prompt="x" * (API.max_prompt_length + 1))
@settings(max_examples=100, deadline=None)
def test_the_prompt_cap_holds_for_any_text(prompt):
    body = json.dumps({"prompt": prompt}).encode()
    refused = [(p.loc, p.type) for p in json_limits.check(body, LIMITS[SCHNELL])]
    too_long = [(("prompt",), "string_too_long")]
    assert refused == (too_long if len(prompt) > API.max_prompt_length else [])


# -- the request models --------------------------------------------------------------------------------------


@FAST
@given(app_id=st.sampled_from([SCHNELL, REDUX]), body=bodies)
@example(app_id=REDUX, body=b'{"image_url": "http://["}')  # urlsplit's ValueError was a 500
@example(app_id=REDUX, body=b'{"image_url": "https://[zz]/x"}')
@example(app_id=SCHNELL, body=b'{"prompt": "x", "num_images": true, "seed": 7.0, "sync_mode": "true"}')
def test_any_body_is_refused_naming_a_field_or_becomes_a_storable_spec(app_id, body):
    fields = MODELS[app_id].input_model.model_fields
    outcome = admit(app_id, body)
    if isinstance(outcome, list):  # limit problems, already checked above
        assert outcome
    elif isinstance(outcome, ValidationError):
        document = json.loads(body)
        items = outcome.errors()
        assert items
        for item in items:
            if isinstance(document, dict):
                assert item["loc"] and item["loc"][0] in fields, item
            else:
                assert item["loc"] == () and item["type"] == "model_type"
        assert MARKER not in rendered_422([{**i, "loc": ("body", *i["loc"])} for i in items])
    elif isinstance(outcome, InputError):
        assert outcome.field in fields and MARKER not in outcome.message
    else:  # a spec: it must go into the store and come back as it was
        stored = json.dumps(outcome.to_dict(), ensure_ascii=False).encode("utf-8")
        assert json.loads(stored) == outcome.to_dict()


def expected_value(name: str, value: Any) -> Any:
    if name == "image_size" and isinstance(value, dict):
        return ImageSize(**value)
    if name == "guidance_scale":
        return float(value)
    return value


@FAST
@given(app_id=st.sampled_from([SCHNELL, REDUX]), data=st.data())
def test_a_valid_request_validates_as_sent_and_round_trips(app_id, data):
    request = data.draw(valid_schnell if app_id == SCHNELL else valid_redux)
    model_type = MODELS[app_id].input_model
    outcome = admit(app_id, json.dumps(request).encode())
    assert not isinstance(outcome, (list, ValidationError)), outcome
    model = model_type.model_validate(request)
    for name, value in request.items():
        got = getattr(model, name)
        assert (got.value if isinstance(got, enum.Enum) else got) == expected_value(name, value)
    assert model_type.model_validate(model.model_dump(mode="json")) == model
    assert model_type.model_validate_json(model.model_dump_json()) == model


INTEGER_FIELDS = ["num_inference_steps", "num_images", "seed"]
BOOLEAN_FIELDS = ["sync_mode", "enable_safety_checker"]
not_an_integer = st.booleans() | st.floats(allow_nan=False, allow_infinity=False) \
    | st.integers(1, 4).map(str) | st.integers(1, 4).map(float)  # fmt: skip
not_a_boolean = st.integers(0, 1) | st.floats(0, 1) | st.sampled_from(["true", "false", "yes", "1", "on"])


@FAST
@given(data=st.data())
def test_strict_types_are_always_refused(data):
    kind = data.draw(st.sampled_from(["integer", "boolean", "number", "side"]))
    if kind == "integer":
        name, value = data.draw(st.sampled_from(INTEGER_FIELDS)), data.draw(not_an_integer)
        body, loc = {"prompt": "x", name: value}, (name,)
    elif kind == "boolean":
        name, value = data.draw(st.sampled_from(BOOLEAN_FIELDS)), data.draw(not_a_boolean)
        body, loc = {"prompt": "x", name: value}, (name,)
    elif kind == "number":
        value = data.draw(st.booleans() | st.floats(1, 20).map(str))
        body, loc = {"prompt": "x", "guidance_scale": value}, ("guidance_scale",)
    else:
        side = data.draw(st.sampled_from(["width", "height"]))
        value = data.draw(not_an_integer)
        body, loc = {"prompt": "x", "image_size": {side: value}}, ("image_size", "custom", side)
    with pytest.raises(ValidationError) as refused:
        SchnellInput.model_validate(body)
    assert [e["loc"][: len(loc)] for e in refused.value.errors()] == [loc]


@FAST
@given(prompt=st.text(any_char, max_size=40))
def test_a_prompt_is_accepted_exactly_when_it_is_text_with_something_besides_whitespace(prompt):
    try:
        SchnellInput(prompt=prompt)
    except ValidationError as exc:
        assert not (prompt.strip() and json_limits.is_text(prompt))
        assert [e["loc"] for e in exc.errors()] == [("prompt",)]
    else:
        assert prompt.strip() and json_limits.is_text(prompt)


# -- what a text encoder reads of a prompt (engine/prompts.py) -----------------------------------------


class WhitespaceTokenizer:
    """Splits at whitespace, as CLIP's BPE and T5's SentencePiece do before anything else; a word a token."""

    def __call__(self, text: str, **kwargs: Any) -> dict[str, list[str]]:
        return {"input_ids": text.split()}


words = st.text(st.sampled_from("abcxyz"), min_size=1, max_size=15)
spaces = st.text(st.sampled_from(" \t\n\u3000"), min_size=1, max_size=3)
texts = st.lists(st.tuples(words, spaces), max_size=200).map(lambda pairs: "".join(w + s for w, s in pairs))


@FAST
@given(prompt=texts | st.text(any_char, max_size=600), budget=st.integers(1, 12))
def test_a_bounded_prompt_is_a_short_prefix_with_the_tokens_the_encoder_reads(prompt, budget):
    tokenizer = WhitespaceTokenizer()
    kept = prompts.bounded(prompt, tokenizer, budget)
    assert prompt.startswith(kept)
    assert len(kept) <= budget * prompts.MAX_CHARS_PER_TOKEN
    if len(prompt) <= budget * prompts.START_CHARS_PER_TOKEN:
        assert kept == prompt
    longest_word = max((len(w) for w in prompt.split()), default=0)
    if longest_word < budget * prompts.START_CHARS_PER_TOKEN // 2:  # then it is cut at whitespace
        tokens = tokenizer(kept)["input_ids"]
        assert tokens == tokenizer(prompt)["input_ids"][: len(tokens)], "the leading tokens, none cut short"
        # Fewer tokens than the encoder reads only for the whole prompt, or for one of mostly whitespace.
        ceiling = budget * prompts.MAX_CHARS_PER_TOKEN
        assert len(tokens) >= budget or kept == prompt or len(kept) > ceiling // 2


# -- the live server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One live server (fake engine, Redux on) for all generated bodies; one per example costs seconds."""
    config = make_settings(tmp_path_factory.mktemp("props"), redux_enabled=True)
    server = start_live_server(config, FakeEngine())
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


@given(app_id=st.sampled_from([SCHNELL, REDUX]), body=bodies | st.builds(
    lambda doc: json.dumps(doc).encode(), valid_schnell | valid_redux))
@example(app_id=REDUX, body=b'{"image_url": "http://[' + MARKER.encode() + b'"}')
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_live_submit_answers_any_body_with_2xx_or_4xx_and_never_echoes_it(live, app_id, body):
    response = live.post(f"/queue/{app_id}", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (200, 202) or 400 <= response.status_code < 500, response.text
    if response.status_code == 422:
        assert MARKER not in response.text
        assert all(item["loc"][0] == "body" for item in response.json()["detail"])
