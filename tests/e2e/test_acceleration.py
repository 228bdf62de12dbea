"""Batching and acceleration levels on the real tiny model: each optimisation proven applied (or skipped with a
reason on CPU), batched output equal to unbatched up to float rounding, the exact level reproducible."""

from __future__ import annotations

import dataclasses

import numpy as np

from fluxserve.core.settings import AccelSettings, EngineSettings
from fluxserve.engine.flux import FluxEngine
from fluxserve.engine.switches import attention_modules
from tests.support.images import pixels
from tests.support.specs import make_spec

SPEC = make_spec(prompt="a photo of a cat", width=128, height=96, num_inference_steps=3, seed=7, output_format="png",
                 acceleration="regular")


def test_a_batch_gives_each_job_its_own_images(engine):
    specs = [SPEC, dataclasses.replace(SPEC, prompt="a dog", seed=100, num_images=2),
             dataclasses.replace(SPEC, seed=9, enable_safety_checker=False)]  # fmt: skip
    batched = engine.generate_batch(specs)
    assert [len(g.images) for g in batched] == [1, 2, 1] and [len(g.has_nsfw_concepts) for g in batched] == [1, 2, 1]
    for spec, result in zip(specs, batched):
        alone = engine.generate(spec)
        for a, b in zip(result.images, alone.images):
            diff = np.abs(pixels(a) - pixels(b))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.05, "equal up to float rounding"
    assert np.abs(pixels(batched[1].images[0]) - pixels(batched[1].images[1])).max() > 1


def test_repeated_prompts_reuse_their_text_embedding_and_stay_exact(engine):
    exact = dataclasses.replace(SPEC, acceleration="none", prompt="a unique prompt for the cache")
    misses = engine.text_cache.misses
    first = engine.generate(exact).images[0].tobytes()
    hits = engine.text_cache.hits
    second = engine.generate(exact).images[0].tobytes()
    assert engine.text_cache.misses == misses + 1 and engine.text_cache.hits == hits + 1
    assert first == second, "acceleration=none: the same request gives the same bytes"


def test_the_cache_is_bounded(tiny_model_dir):
    engine = FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu", text_cache_size=2))
    for prompt in ("a", "b", "c"):
        engine.generate(dataclasses.replace(SPEC, prompt=prompt, width=32, height=32, num_inference_steps=1))
    assert len(engine.text_cache) == 2


def test_fused_qkv_and_channels_last_switch_with_the_level(engine):
    import torch

    assert {"fused_qkv", "channels_last_vae"} <= set(engine.accel.applied("regular"))
    assert engine.accel.applied("none") == []
    modules = attention_modules(engine.pipe.transformer)
    assert modules and all(hasattr(m, "to_qkv") or hasattr(m, "to_added_qkv") for m in modules)
    conv = next(m for m in engine.pipe.vae.modules() if isinstance(m, torch.nn.Conv2d))
    for level, fused in (("regular", True), ("none", False), ("high", True)):
        with engine.accel.level(level, engine):
            assert all(m.fused_projections is fused for m in modules), level
            assert conv.weight.is_contiguous(memory_format=torch.channels_last) is fused, level


def test_regular_matches_none_up_to_float_rounding(engine):
    none = engine.generate(dataclasses.replace(SPEC, acceleration="none")).images[0]
    regular = engine.generate(SPEC).images[0]
    assert np.abs(pixels(none) - pixels(regular)).max() <= 2


def test_gpu_only_optimisations_are_skipped_on_cpu_with_a_reason(engine):
    assert "torch.compile is used on CUDA only" in engine.accel.skipped["compile"]
    assert "fp8" in engine.accel.skipped["fp8"]
    assert "compile" not in engine.accel.applied("regular") and "fp8" not in engine.accel.applied("high")


def test_compile_when_forced_wraps_the_transformer_for_accelerated_levels_only(tiny_model_dir):
    engine = FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu",
                                            accel=AccelSettings(compile="on", compile_backend="aot_eager")))  # fmt: skip
    assert "compile" in engine.accel.applied("regular")
    blocks = [*engine.pipe.transformer.transformer_blocks, *engine.pipe.transformer.single_transformer_blocks]
    with engine.accel.level("regular", engine):
        assert all(b._compiled_call_impl is not None for b in blocks)
        assert engine.pipe.vae.decoder._compiled_call_impl is not None
    with engine.accel.level("none", engine):
        assert all(b._compiled_call_impl is None for b in blocks) and engine.pipe.vae.decoder._compiled_call_impl is None


def test_an_operator_can_switch_any_optimisation_off(tiny_model_dir):
    engine = FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu",
                                            accel=AccelSettings(disabled=frozenset({"fused_qkv"}))))  # fmt: skip
    assert engine.accel.skipped["fused_qkv"] == "switched off by the operator"
    assert engine.accel.applied("regular") == ["channels_last_vae"]


def test_low_memory_mode_is_ignored_on_cpu_with_one_log_line(tiny_model_dir, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="fluxserve.engine.flux"):
        engine = FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu", memory="low"))
    assert "memory mode low: needs a CUDA GPU; ignored on cpu" in caplog.text
    assert engine.generate(SPEC).images[0].size == (128, 96)
