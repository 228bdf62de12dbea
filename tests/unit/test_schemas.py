"""SchnellInput / Output: every field's default, range edges, presets and custom sizes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fluxserve.api.schemas import ImageSize, ImageSizePreset, Output, SchnellInput


def errors_for(**fields):
    with pytest.raises(ValidationError) as info:
        SchnellInput(**fields)
    return info.value.errors()


def test_defaults_match_the_spec():
    body = SchnellInput(prompt="a cat")
    assert body.image_size is ImageSizePreset.landscape_4_3
    assert body.num_inference_steps == 4
    assert body.seed is None
    assert body.guidance_scale == 3.5
    assert body.sync_mode is False
    assert body.num_images == 1
    assert body.enable_safety_checker is True
    assert body.output_format.value == "jpeg"
    assert body.acceleration.value == "none"


@pytest.mark.parametrize(
    ("field", "low", "high"),
    [("num_inference_steps", 1, 12), ("num_images", 1, 4), ("guidance_scale", 1, 20)],
)
def test_range_edges_accepted_and_beyond_refused(field, low, high):
    assert getattr(SchnellInput(prompt="x", **{field: low}), field) == low
    assert getattr(SchnellInput(prompt="x", **{field: high}), field) == high
    for bad in (low - 1, high + 1):
        (err,) = errors_for(prompt="x", **{field: bad})
        assert err["loc"] == (field,)


@pytest.mark.parametrize("preset", [p.value for p in ImageSizePreset])
def test_every_preset_is_accepted(preset):
    assert SchnellInput(prompt="x", image_size=preset).image_size.value == preset


def test_custom_size_object():
    body = SchnellInput(prompt="x", image_size={"width": 640, "height": 480})
    assert body.image_size == ImageSize(width=640, height=480)


@pytest.mark.parametrize(
    ("image_size", "loc"),
    [
        ("huge", ("image_size", "preset")),
        (5, ("image_size",)),
        ({"width": 0, "height": 512}, ("image_size", "custom", "width")),
        ({"width": 512, "height": 14143}, ("image_size", "custom", "height")),
    ],
)
def test_bad_image_size_names_the_field_once(image_size, loc):
    (err,) = errors_for(prompt="x", image_size=image_size)
    assert err["loc"] == loc


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_refused(prompt):
    (err,) = errors_for(prompt=prompt)
    assert err["loc"] == ("prompt",)


def test_prompt_is_required():
    (err,) = errors_for()
    assert err["loc"] == ("prompt",) and err["type"] == "missing"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output_format", "gif"),
        ("acceleration", "turbo"),
        ("num_images", "many"),
        ("num_inference_steps", 2.5),
        ("seed", "abc"),
        ("seed", 2**64),
        ("sync_mode", [1]),
        ("enable_safety_checker", {"a": 1}),
    ],
)
def test_wrong_values_refused_with_field_named(field, value):
    errs = errors_for(prompt="x", **{field: value})
    assert all(e["loc"][0] == field for e in errs)


def test_seed_range_covers_torch_generator_seeds():
    assert SchnellInput(prompt="x", seed=2**64 - 1).seed == 2**64 - 1
    assert SchnellInput(prompt="x", seed=-(2**63)).seed == -(2**63)


def test_output_requires_every_spec_field():
    sample = {
        "images": [{"url": "http://h/files/a.jpg", "content_type": "image/jpeg", "width": 8, "height": 8}],
        "timings": {"inference": 0.1},
        "seed": 1,
        "has_nsfw_concepts": [False],
        "prompt": "p",
    }
    assert Output.model_validate(sample).seed == 1
    for key in sample:
        with pytest.raises(ValidationError):
            Output.model_validate({k: v for k, v in sample.items() if k != key})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_images", "2"), ("num_images", 2.0), ("num_images", True),
        ("num_inference_steps", "4"), ("seed", "7"), ("seed", False), ("seed", 7.0),
        ("sync_mode", "true"), ("sync_mode", 1), ("enable_safety_checker", "yes"),
        ("guidance_scale", "3.5"), ("guidance_scale", True),
    ],
)  # fmt: skip
def test_types_are_strict_as_on_fal(field, value):
    (err,) = errors_for(prompt="x", **{field: value})
    assert err["loc"][0] == field


def test_custom_size_sides_are_strict_integers():
    (err,) = errors_for(prompt="x", image_size={"width": 512.0, "height": 512})
    assert err["loc"] == ("image_size", "custom", "width")
    assert SchnellInput(prompt="x", guidance_scale=4).guidance_scale == 4.0  # an integer is still a number
