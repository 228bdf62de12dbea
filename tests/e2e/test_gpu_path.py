"""The GPU path's decisions, proven on CPU with the real tiny model: what each level really runs (fp8 twin, regional
compile, attention backend, CUDA graphs), that none of it leaks into `none`, and that a failing switch costs only
itself. Stand-ins (tests/support/fp8_fakes.py) replace only what the CPU lacks: fp8 kernels, CUDA graphs."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from fluxserve.core.settings import AccelSettings, EngineSettings, WarmupSettings
from fluxserve.engine.flux import FluxEngine
from fluxserve.engine.switches import CudaGraphs, Float8, has_float8_weights, repeated_blocks
from tests.support.fp8_fakes import FakeGraphFactory, RecordingBackend, fake_quantise
from tests.support.specs import make_spec

SPEC = make_spec(prompt="a lighthouse at dusk", height=48, num_inference_steps=2, seed=3, output_format="png",
                 base_url="")


def load(tiny_model_dir, **accel) -> FluxEngine:
    return FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu", accel=AccelSettings(**accel)))


def image_bytes(engine: FluxEngine, level: str, **changes) -> bytes:
    return engine.generate(dataclasses.replace(SPEC, acceleration=level, **changes)).images[0].tobytes()


@pytest.fixture
def fake_fp8(monkeypatch):
    monkeypatch.setattr(Float8, "quantise", staticmethod(fake_quantise))


def test_none_is_stock_diffusers_bit_for_bit(tiny_model_dir):
    from diffusers import FluxPipeline

    from fluxserve.engine.sampling import generators

    engine = load(tiny_model_dir)
    ours = image_bytes(engine, "none")
    image_bytes(engine, "regular")  # whatever ran before, none is stock
    with engine.accel.level("none", engine):
        stock = FluxPipeline(**engine.pipe.components)
        stock.set_progress_bar_config(disable=True)
        theirs = stock(prompt=SPEC.prompt, width=SPEC.width, height=SPEC.height, num_inference_steps=2,
                       guidance_scale=3.5, generator=generators(SPEC.image_seeds), max_sequence_length=256).images[0]
    assert theirs.tobytes() == ours == image_bytes(engine, "none")


def test_high_runs_the_compiled_fp8_twin(tiny_model_dir, fake_fp8):
    backend = RecordingBackend()
    engine = load(tiny_model_dir, compile="on", fp8="on", compile_backend=backend)
    assert engine.accel.skipped.get("fp8") is None and "fp8" in engine.accel.copies
    with engine.accel.level("high", engine):
        running = engine.pipe.transformer
        assert running is engine.accel.copies["fp8"] and has_float8_weights(running)
        assert all(block._compiled_call_impl is not None for block in repeated_blocks(running))
    calls = backend.calls
    image_bytes(engine, "high")
    assert backend.calls > calls, "compiled code ran"
    float8_graphs = [inputs for inputs in backend.graph_inputs if any(t.dtype == torch.float8_e4m3fn for t in inputs)]
    assert float8_graphs, "a compiled graph read the fp8 weights"
    assert engine.accel.running(engine, "high") == ["fused_qkv", "channels_last_vae", "fp8", "compile"]
    assert engine.accel.running(engine, "regular") == ["fused_qkv", "channels_last_vae", "compile"]
    assert engine.accel.running(engine, "none") == []


@pytest.mark.parametrize("compile_on", [False, True], ids=["eager", "compiled"])
def test_none_high_none_is_bit_exact(tiny_model_dir, fake_fp8, compile_on):
    engine = load(tiny_model_dir, fp8="on", compile="on" if compile_on else "off", compile_backend="aot_eager")
    before = image_bytes(engine, "none")
    high = image_bytes(engine, "high")
    assert image_bytes(engine, "none") == before, "none never inherits a switch from high"
    assert image_bytes(engine, "high") == high, "high is deterministic"
    bf16 = next(t for name, t in engine.accel.copies.items() if name == "bf16")
    with engine.accel.level("none", engine):
        assert not any(m.fused_projections for t in engine.accel.copies.values() for m in attention_modules_of(t))
        assert engine.pipe.transformer is bf16


def attention_modules_of(transformer):
    from fluxserve.engine.switches import attention_modules

    return attention_modules(transformer)


def test_compile_is_static_per_shape(tiny_model_dir):
    backend = RecordingBackend()
    engine = load(tiny_model_dir, compile="on", compile_backend=backend)
    image_bytes(engine, "regular")
    graphs = len(backend.graph_inputs)
    image_bytes(engine, "regular", width=64, height=64)
    image_bytes(engine, "regular", width=64, height=48)  # the first shape again: no new graph
    assert len(backend.graph_inputs) == 2 * graphs, "one graph per block type and shape, reused"
    symbolic = [t for inputs in backend.graph_inputs for t in inputs if not all(isinstance(d, int) for d in t.shape)]
    assert symbolic == [], "never an automatic dynamic graph"
    assert torch._dynamo.config.recompile_limit >= 64


def test_real_torchao_fp8_on_cpu_is_skipped_with_its_reason(tiny_model_dir):
    engine = load(tiny_model_dir, fp8="on")
    assert "fp8" in engine.accel.skipped and "failed to prepare" in engine.accel.skipped["fp8"]
    assert engine.accel.running(engine, "high") == ["fused_qkv", "channels_last_vae"]
    assert engine.generate(dataclasses.replace(SPEC, acceleration="high")).images[0].size == (64, 48)


def test_a_switch_that_fails_while_warming_up_is_dropped_from_that_level(tiny_model_dir, caplog):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("inductor blew up")

    engine = load(tiny_model_dir, compile="on", compile_backend=broken_backend)
    with caplog.at_level(logging.WARNING, logger="fluxserve.engine.accel"):
        engine.warm_up(WarmupSettings(sizes=((64, 48),), levels=("regular",)))
    assert "compile dropped from regular" in caplog.text and "inductor blew up" in caplog.text
    assert engine.accel.running(engine, "regular") == ["fused_qkv", "channels_last_vae"]
    assert "compile" in engine.accel.applied("high"), "only the level that failed loses it"
    described = engine.describe()
    assert "inductor blew up" in described["dropped"]["regular"]["compile"]
    assert described["levels"]["regular"] == ["fused_qkv", "channels_last_vae"]
    assert engine.generate(dataclasses.replace(SPEC, acceleration="regular")).images[0].size == (64, 48)


def test_default_warmup_levels_are_those_that_compile(tiny_model_dir):
    assert load(tiny_model_dir).warmup_levels() == ("none",)
    assert load(tiny_model_dir, compile="on", compile_backend="aot_eager").warmup_levels() == ("regular", "high")


def test_the_attention_backend_is_what_runs(tiny_model_dir):
    from torch.profiler import ProfilerActivity, profile

    engine = load(tiny_model_dir, attention="math")
    assert "attention" in engine.accel.running(engine, "regular")
    assert "attention" not in engine.accel.running(engine, "none")

    def sdpa_ops(level: str) -> set[str]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            image_bytes(engine, level)
        return {e.name for e in prof.events() if "scaled_dot_product" in e.name and e.name.startswith("aten::_")}

    math = "aten::_scaled_dot_product_attention_math"  # (the text encoders and the VAE keep PyTorch's choice)
    assert math in sdpa_ops("regular")
    assert math not in sdpa_ops("none"), "none keeps PyTorch's own choice"
    assert engine.describe()["details"]["attention"] == "math: chosen by the operator"


def test_auto_attention_picks_the_faster_backend_and_says_why():
    from types import SimpleNamespace

    from fluxserve.engine.attention import choose_backend

    transformer = SimpleNamespace(config=SimpleNamespace(num_attention_heads=24, attention_head_dim=128))
    timings = {"cudnn": 0.5, "flash": 0.9}
    assert choose_backend(transformer, lambda name, shape: timings[name])[0] == "cudnn"

    def no_cudnn(name, shape):
        if name == "cudnn":
            raise RuntimeError("cuDNN SDPA is not supported on this device")
        return 0.9

    name, why = choose_backend(transformer, no_cudnn)
    assert name == "flash" and "(1, 24, 4352, 128)" in why and "flash 0.900 ms" in why


def test_cuda_graphs_replay_the_same_bits_per_shape(tiny_model_dir, monkeypatch):
    factory = FakeGraphFactory()
    monkeypatch.setattr(CudaGraphs, "graph_factory", factory, raising=False)
    engine = load(tiny_model_dir)
    assert "cuda_graphs" in engine.accel.running(engine, "regular")
    assert "cuda_graphs" not in engine.accel.running(engine, "none")
    first = image_bytes(engine, "regular")
    assert len(factory.graphs) == 1, "one capture for the shape (the steps share it)"
    replays = factory.graphs[0].replays
    assert image_bytes(engine, "regular") == first
    assert factory.graphs[0].replays > replays and len(factory.graphs) == 1, "replayed, not captured again"
    image_bytes(engine, "regular", width=64, height=64)
    assert len(factory.graphs) == 2, "a new shape gets its own graph"
    with engine.accel.level("none", engine):
        pass
    ungraphed = load(tiny_model_dir, cuda_graphs="off")
    assert image_bytes(ungraphed, "regular") == first, "graphed is bit-identical to un-graphed"


def test_a_graph_that_changes_the_bits_is_not_used(tiny_model_dir, monkeypatch, caplog):
    monkeypatch.setattr(CudaGraphs, "graph_factory", FakeGraphFactory(perturb=True), raising=False)
    engine = load(tiny_model_dir)
    with caplog.at_level(logging.WARNING, logger="fluxserve.engine.graphs"):
        graphed = image_bytes(engine, "regular")
        again = image_bytes(engine, "regular")
    assert "replay differs from the un-graphed output" in caplog.text
    assert caplog.text.count("replay differs") == 1, "logged once per shape"
    assert graphed == again == image_bytes(load(tiny_model_dir, cuda_graphs="off"), "regular")


def test_stage_timers_wait_for_the_device_before_reading_the_clock():
    from fluxserve.engine.flux import StageTimer
    from fluxserve.engine.protocol import NoProgress

    now = [0.0]
    queued = {"denoise": 5.0, "vae decode": 1.0}  # GPU work still running when the host leaves the stage
    current = []

    def synchronize():
        now[0] += queued.get(current[-1], 0.0)

    timer = StageTimer(NoProgress(), synchronize, clock=lambda: now[0])
    for name in ("denoise", "vae decode"):
        current.append(name)
        with timer.stage(name):
            now[0] += 0.1  # the host-side launch time
    assert timer.timings == pytest.approx({"denoise": 5.1, "vae_decode": 1.1})


def test_a_cuda_placement_synchronises_the_device(monkeypatch):
    from fluxserve.engine.placement import Placement

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append(a))
    Placement("cuda", "bfloat16").synchronize()
    Placement("cpu", "float32").synchronize()
    assert len(calls) == 1


def test_batched_regular_matches_alone_within_rounding(tiny_model_dir, fake_fp8):
    engine = load(tiny_model_dir, fp8="on")
    specs = [dataclasses.replace(SPEC, acceleration="high", seed=s, prompt=p) for s, p in ((1, "a"), (2, "b c"))]
    together = engine.generate_batch(specs)
    for spec, result in zip(specs, together):
        alone = np.asarray(engine.generate(spec).images[0], dtype=np.int16)
        assert np.abs(np.asarray(result.images[0], dtype=np.int16) - alone).max() <= 2


def test_low_memory_mode_quantises_in_cpu_memory_and_offloads_without_moving_the_pipeline(monkeypatch):
    """--memory low at full size, built on the meta device: weight-only fp8 block linears, diffusers' model
    offload, and never a move of the whole pipeline (~34 GB) to the GPU."""
    from benchmarks.random_flux import full_size_pipeline

    from fluxserve.engine.flux import LOW_MEMORY_DISABLED, fit_small_gpu
    from fluxserve.engine.placement import Placement

    pipe, _, _ = full_size_pipeline("meta", torch.bfloat16)
    offloaded, moved = [], []
    monkeypatch.setattr(pipe, "enable_model_cpu_offload", lambda **kw: offloaded.append(kw))
    monkeypatch.setattr(type(pipe), "to", lambda self, *a, **kw: moved.append((a, kw)))
    fit_small_gpu(pipe, Placement("cuda", "bfloat16"))
    assert offloaded == [{"device": "cuda"}] and moved == []
    assert has_float8_weights(pipe.transformer)
    blocks = pipe.transformer.transformer_blocks[0]
    assert blocks.ff.net[2].weight.qdata.dtype == torch.float8_e4m3fn
    assert blocks.norm1.linear.weight.dtype == torch.bfloat16, "modulation stays bf16"
    assert pipe.transformer.proj_out.weight.dtype == torch.bfloat16, "the final layer stays bf16"
    assert {"fused_qkv", "fp8", "compile", "cuda_graphs"} <= LOW_MEMORY_DISABLED, "fusing cannot run over fp8"


def test_a_pipeline_for_offload_is_loaded_without_moving_it(tiny_model_dir, monkeypatch):
    from diffusers import FluxPipeline

    from fluxserve.engine.loading import load_flux_pipeline
    from fluxserve.engine.placement import Placement

    moved = []
    monkeypatch.setattr(FluxPipeline, "to", lambda self, *a, **kw: moved.append(a) or self)
    load_flux_pipeline(tiny_model_dir, Placement("cpu", "float32"), move=False)
    assert moved == []
    load_flux_pipeline(tiny_model_dir, Placement("cpu", "float32"))
    assert moved == [("cpu",)]


def test_fp8_is_per_row_on_the_block_linears_only():
    from benchmarks.random_flux import building_on
    from diffusers import FluxTransformer2DModel
    from torchao.quantization import PerRow

    from fluxserve.engine.switches import fp8_config, fp8_eligible

    config = fp8_config(AccelSettings())
    assert all(isinstance(g, PerRow) for g in (config.granularity if isinstance(config.granularity, (list, tuple))
                                               else [config.granularity]))  # fmt: skip
    assert config.set_inductor_config is False, "torchao must not retune every later compile"
    with building_on("meta", torch.bfloat16):
        transformer = FluxTransformer2DModel(guidance_embeds=False)
    chosen = {fqn for fqn, m in transformer.named_modules() if fp8_eligible(m, fqn)}
    linears = {fqn for fqn, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    assert "transformer_blocks.0.attn.to_q" in chosen and "single_transformer_blocks.37.proj_mlp" in chosen
    kept = linears - chosen
    assert kept and all(fqn.startswith(("x_embedder", "context_embedder", "time_text_embed", "norm_out", "proj_out")) or ".norm" in fqn
                        for fqn in kept), sorted(kept)[:5]  # fmt: skip
    # Every token-wise linear: 12·3072² weights per stream, 2 streams in each of 19 double blocks, 1 in 38 singles.
    assert sum(transformer.get_submodule(f).weight.numel() for f in chosen) == 12 * 3072**2 * (2 * 19 + 38)
