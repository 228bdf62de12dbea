"""The provenance stage (provenance/stamp.py): each mark on its own switch, in the order that keeps each
readable, the image id a function of the request, the Redux ingredient with its digest."""

from __future__ import annotations

import hashlib
import io
import itertools
import json

import numpy as np
import pytest
from PIL import Image

from fluxserve.core.settings import PROVENANCE_MARKS
from fluxserve.provenance import verify as verifier
from fluxserve.provenance.manifest import INPUT_DIGEST_KEY, Ingredient
from fluxserve.provenance.stamp import Provenance, image_id
from fluxserve.worker.outputs import CONTENT_TYPES, encode
from tests.support.images import pixels, png_bytes
from tests.support.provenance import development_ca, read_manifest
from tests.support.specs import make_spec

SPEC = make_spec(width=512, height=384, output_format="png")


def generated(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:384, 0:512] / 512
    base = np.stack([x, 1 - y, (x + y) / 2], axis=-1) * 200 + rng.normal(0, 10, (384, 512, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def stamp(marks, spec=SPEC, image=None, ingredient=None, index=0):
    provenance = Provenance.in_memory(frozenset(marks))
    fmt = spec.output_format
    return provenance.stamp(image or generated(), spec, index, CONTENT_TYPES[fmt],
                            lambda im, packet: encode(im, fmt, None, packet), ingredient)  # fmt: skip


def found(data: bytes) -> set[str]:
    report = verifier.verify(data, development_ca())
    marks = set()
    if report.manifest.state == "trusted":
        marks.add("c2pa")
    if report.metadata is not None and report.metadata.digital_source_type:
        marks.add("metadata")
    if report.watermark is not None and report.watermark.found:
        marks.add("watermark")
    return marks


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_every_mark_by_default_in_every_format(output_format):
    data = stamp(PROVENANCE_MARKS, make_spec(width=512, height=384, output_format=output_format)).data
    assert found(data) == set(PROVENANCE_MARKS)


@pytest.mark.parametrize("off", PROVENANCE_MARKS)
def test_turning_one_mark_off_removes_that_mark_only(off):
    assert found(stamp(set(PROVENANCE_MARKS) - {off}).data) == set(PROVENANCE_MARKS) - {off}


def test_with_no_marks_the_file_is_the_plain_encoding():
    image = generated()
    assert stamp((), image=image).data == encode(image, "png")


def test_every_combination_keeps_the_pixels_but_the_watermarks():
    image = generated()
    plain = pixels(image)
    for n in range(len(PROVENANCE_MARKS) + 1):
        for marks in itertools.combinations(PROVENANCE_MARKS, n):
            changed = not np.array_equal(pixels(stamp(marks, image=image).data), plain)
            assert changed == ("watermark" in marks), marks


def test_the_manifest_says_a_model_made_it_and_which_generator_signed():
    store = read_manifest(stamp({"c2pa"}).data)
    manifest = store["manifests"][store["active_manifest"]]
    (action,) = [
        a
        for x in manifest["assertions"]
        if x["label"].startswith("c2pa.actions")
        for a in x["data"]["actions"]
    ]
    assert action["action"] == "c2pa.created"
    assert (
        action["digitalSourceType"]
        == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    )
    assert action["softwareAgent"]["name"] == "FLUX.1 [schnell]"
    assert manifest["claim_generator_info"][0]["name"] == "fluxserve"
    assert "development" in manifest["signature_info"]["issuer"]
    assert store["validation_state"] == "Trusted"


def test_a_redux_manifest_records_its_input_image_and_its_digest():
    source = png_bytes((10, 200, 30), (96, 64))
    ingredient = Ingredient(source, "image/png", Image.open(io.BytesIO(source)).convert("RGB"))
    data = stamp({"c2pa"}, make_spec(kind="redux", prompt="", width=512, height=384, output_format="png"),
                 ingredient=ingredient).data  # fmt: skip
    store = read_manifest(data)
    manifest = store["manifests"][store["active_manifest"]]
    (recorded,) = manifest["ingredients"]
    assert recorded["relationship"] == "inputTo" and recorded["format"] == "image/png"
    assert recorded["metadata"][INPUT_DIGEST_KEY] == hashlib.sha256(source).hexdigest()
    actions = json.dumps(manifest["assertions"])
    assert "FLUX.1 [schnell] Redux" in actions and "c2pa.ingredient" in actions  # the action names its input
    assert store["validation_state"] == "Trusted"


def test_an_input_whose_own_manifest_is_damaged_is_recorded_re_encoded_with_the_original_digest():
    """A hostile input: Pillow decodes it, but its manifest is broken, so the C2PA library refuses to read it
    as an ingredient. The job still gets its manifest."""
    signed = stamp({"c2pa"}, make_spec(output_format="jpeg"), image=Image.new("RGB", (64, 64), (9, 9, 9)))
    signed = signed.data
    damaged = bytearray(signed)
    damaged[signed.index(b"\xff\xeb") + 40] ^= 0xFF  # inside the input's own manifest (JPEG APP11)
    damaged = bytes(damaged)
    ingredient = Ingredient(damaged, "image/jpeg", Image.open(io.BytesIO(damaged)).convert("RGB"))
    spec = make_spec(kind="redux", prompt="", width=512, height=384, output_format="png")
    store = read_manifest(stamp({"c2pa"}, spec, ingredient=ingredient).data)
    assert store["validation_state"] == "Trusted"
    (recorded,) = store["manifests"][store["active_manifest"]]["ingredients"]
    assert recorded["metadata"][INPUT_DIGEST_KEY] == hashlib.sha256(damaged).hexdigest()
    assert "re-encoded" in recorded["description"] and recorded["format"] == "image/png"


def test_the_image_id_is_a_function_of_what_made_the_image():
    first = image_id(SPEC, 0, None)
    assert image_id(make_spec(width=512, height=384, output_format="png"), 0, None) == first
    assert image_id(make_spec(width=512, height=384, output_format="jpeg", sync_mode=True), 0, None) == first
    assert image_id(make_spec(width=512, height=384, seed=2), 0, None) != first
    assert image_id(make_spec(width=512, height=384, num_images=2), 1, None) != first
    a = stamp({"watermark"})
    b = stamp({"watermark"})
    assert a.data == b.data and a.watermark == b.watermark and a.watermark.image_id == first


def test_small_images_skip_the_watermark_and_keep_the_other_marks():
    small = make_spec(width=256, height=192, output_format="png")
    result = stamp(PROVENANCE_MARKS, small, image=Image.new("RGB", (256, 192), (50, 60, 70)))
    assert result.watermark is None
    assert found(result.data) == {"c2pa", "metadata"}


def test_the_stage_counts_the_marks_time_not_the_encoding():
    """A clock that moves only while the image is encoded: the stage's own time is then zero."""
    now = [0.0]

    def encode_slowly(image, packet):
        now[0] += 5.0
        return encode(image, "png", None, packet)

    credentials = Provenance.in_memory().credentials
    for marks in ((), PROVENANCE_MARKS):
        provenance = Provenance(frozenset(marks), credentials, clock=lambda: now[0])
        assert provenance.stamp(generated(), SPEC, 0, "image/png", encode_slowly).seconds == 0.0
    assert stamp(PROVENANCE_MARKS).seconds > 0
