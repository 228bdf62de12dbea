"""Single-file transformer checkpoints: diffusers format, fp8, Black Forest Labs' format, and the clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from fluxserve.core.errors import ModelLoadError
from fluxserve.core.settings import EngineSettings
from fluxserve.engine.checkpoints import load_transformer
from fluxserve.engine.flux import FluxEngine
from fluxserve.engine.model_check import require_model
from fluxserve.engine.placement import Placement
from tests.support.bfl_format import to_bfl
from tests.support.specs import make_spec

SPEC = make_spec(prompt="a cat", num_inference_steps=2, seed=5, enable_safety_checker=False, output_format="png")
FP32 = Placement("cpu", "float32")


@pytest.fixture(scope="module")
def base_and_state(tiny_model_dir, tmp_path_factory):
    """A base folder whose transformer/ holds only config.json, and the tiny transformer's weights."""
    base = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("single") / "base")
    for weights in (base / "transformer").glob("*.safetensors"):
        weights.unlink()
    from diffusers import FluxTransformer2DModel

    engine = FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu"))
    # The checkpoint as users have it: the stock module's weights (the engine's own carries fused QKV copies).
    stock = FluxTransformer2DModel.from_pretrained(tiny_model_dir, subfolder="transformer")
    state = {k: v.contiguous() for k, v in stock.state_dict().items()}
    return base, state, engine


def image_bytes(engine: FluxEngine) -> bytes:
    return engine.generate(SPEC).images[0].tobytes()


def test_a_diffusers_format_file_serves_the_same_images(base_and_state, tmp_path):
    base, state, folder_engine = base_and_state
    path = tmp_path / "flux1-schnell-diffusers.safetensors"
    save_file(state, str(path))
    engine = FluxEngine.load(EngineSettings(model_path=path, model_base=base, device="cpu"))
    assert image_bytes(engine) == image_bytes(folder_engine)


def test_an_fp8_file_is_widened_to_the_serving_dtype(base_and_state, tmp_path):
    base, state, _ = base_and_state
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in state.items()}
    path = tmp_path / "flux1-schnell-fp8-e4m3fn.safetensors"
    save_file(fp8, str(path))
    transformer = load_transformer(path, base, FP32)
    loaded = transformer.state_dict()
    for key, tensor in fp8.items():
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], tensor.to(torch.float32)), key
    engine = FluxEngine.load(EngineSettings(model_path=path, model_base=base, device="cpu"))
    assert engine.generate(SPEC).images[0].size == (64, 64)


def test_a_single_file_without_a_base_folder_says_what_is_missing(base_and_state, tmp_path):
    _, state, _ = base_and_state
    path = tmp_path / "t.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelLoadError, match="pass --model-base PATH"):
        require_model(EngineSettings(model_path=path))


def expect_error(path, base, message):
    with pytest.raises(ModelLoadError, match=message):
        load_transformer(path, base, FP32)


def test_truncated_and_garbage_files(base_and_state, tmp_path):
    base, state, _ = base_and_state
    good = tmp_path / "good.safetensors"
    save_file(state, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-1000])
    expect_error(cut, base, r"is truncated: its header describes \d+ bytes, the file has \d+")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"<html>404 Not Found</html>")
    expect_error(junk, base, "is not a readable .safetensors file")


def test_other_models_are_named(base_and_state, tmp_path):
    base, state, engine = base_and_state
    vae = tmp_path / "ae.safetensors"
    save_file({k: v.contiguous() for k, v in engine.pipe.vae.state_dict().items()}, str(vae))
    expect_error(vae, base, "it looks like a VAE .*expected a FLUX.1 \\[schnell\\] transformer")
    dev = tmp_path / "flux1-dev.safetensors"
    save_file({**state, "time_text_embed.guidance_embedder.linear_1.weight": torch.zeros(2, 2)}, str(dev))
    expect_error(dev, base, r"FLUX.1 \[dev\], not FLUX.1 \[schnell\]")
    unknown = tmp_path / "unknown.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(unknown))
    expect_error(unknown, base, "an unknown model .*foo.weight")


def test_a_width_that_does_not_match_the_base_is_refused(base_and_state, tmp_path):
    base, state, _ = base_and_state
    wider = {**state, "x_embedder.weight": torch.zeros(64, 64)}
    path = tmp_path / "wide.safetensors"
    save_file(wider, str(path))
    expect_error(path, base, "width 64, but .* describes width 32")


@pytest.fixture(scope="module")
def full_width(tmp_path_factory):
    """The smallest BFL-format model diffusers can convert: full width (3072), one block of each kind."""
    from diffusers import FluxTransformer2DModel

    folder = tmp_path_factory.mktemp("full-width")
    torch.manual_seed(0)
    model = FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=False)
    (folder / "transformer").mkdir()
    (folder / "transformer" / "config.json").write_text(json.dumps(dict(model.config)))
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    del model
    return folder, state


@pytest.mark.slow
def test_black_forest_labs_format_round_trips(full_width, tmp_path):
    folder, state = full_width
    path = tmp_path / "flux1-schnell.safetensors"
    save_file(to_bfl(state, double=1, single=1), str(path))
    loaded = load_transformer(path, folder, Placement("cpu", "bfloat16")).state_dict()
    path.unlink()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state), "bit-exact round trip"


@pytest.mark.slow
def test_comfyui_fp8_checkpoint_with_its_prefix(full_width, tmp_path):
    folder, state = full_width
    bfl = to_bfl(state, double=1, single=1)
    fp8 = {"model.diffusion_model." + k: v.to(torch.float8_e4m3fn) for k, v in bfl.items()}
    fp8["vae.decoder.conv_in.weight"] = torch.zeros(1)  # ComfyUI files may carry other components: ignored
    path = tmp_path / "flux1-schnell-fp8.safetensors"
    save_file(fp8, str(path))
    del bfl
    loaded = load_transformer(path, folder, Placement("cpu", "bfloat16")).state_dict()
    path.unlink()
    expected = {k: v.to(torch.float8_e4m3fn).to(torch.bfloat16) for k, v in state.items()}
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
