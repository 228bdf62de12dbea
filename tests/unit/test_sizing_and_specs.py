"""Presets and rounding to multiples of 16; the request -> GenerationSpec step, including the pixel cap."""

from __future__ import annotations

import pytest

from fluxserve.api.endpoints import text_to_spec
from fluxserve.api.schemas import SchnellInput
from fluxserve.core import sizing
from fluxserve.core.errors import InputError
from fluxserve.core.jobs import GenerationSpec


def test_presets_are_fals_sizes():
    assert sizing.PRESETS == {
        "square_hd": (1024, 1024),
        "square": (512, 512),
        "portrait_4_3": (768, 1024),
        "portrait_16_9": (576, 1024),
        "landscape_4_3": (1024, 768),
        "landscape_16_9": (1024, 576),
    }


@pytest.mark.parametrize(
    ("pixels", "rounded"), [(1, 16), (16, 16), (23, 16), (24, 32), (1000, 1008), (1024, 1024), (300, 304)]
)
def test_rounding_to_multiples_of_16(pixels, rounded):
    assert sizing.round_to_multiple(pixels) == rounded


def spec(max_pixels=2048 * 2048, **fields) -> GenerationSpec:
    return text_to_spec(SchnellInput(prompt="p", **fields), "http://h", max_pixels)


def test_spec_resolves_preset_and_custom_sizes():
    assert (spec().width, spec().height) == (1024, 768)
    custom = spec(image_size={"width": 300, "height": 201})
    assert (custom.width, custom.height) == (304, 208)


def test_pixel_cap_names_image_size():
    assert spec(max_pixels=1024 * 1024, image_size="square_hd").width == 1024
    with pytest.raises(InputError) as info:
        spec(max_pixels=1024 * 1024, image_size={"width": 1040, "height": 1024})
    assert info.value.field == "image_size"


def test_seed_kept_or_drawn():
    assert spec(seed=7).seed == 7
    drawn = {spec().seed for _ in range(5)}
    assert len(drawn) > 1 and all(0 <= s < 2**32 for s in drawn)


def test_image_seeds_count_up_from_the_seed_and_wrap():
    assert spec(seed=10, num_images=3).image_seeds == [10, 11, 12]
    assert spec(seed=2**64 - 1, num_images=2).image_seeds == [2**64 - 1, 0]


def test_spec_round_trips_through_a_dict():
    s = spec(seed=3, num_images=2, output_format="png")
    assert GenerationSpec.from_dict(s.to_dict()) == s
