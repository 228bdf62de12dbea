"""A folder that is not a usable FLUX.1 [schnell] model fails with one message naming every problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fluxserve.core.errors import ModelLoadError
from fluxserve.engine.model_check import check_model_dir, require_model_dir


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def test_the_tiny_model_is_a_complete_schnell_folder(tiny_model_dir):
    assert check_model_dir(tiny_model_dir) == []


def test_missing_folder(tmp_path):
    assert check_model_dir(tmp_path / "nope") == [f"model folder {tmp_path / 'nope'} does not exist"]


def test_not_a_pipeline_folder(tmp_path):
    (problem,) = check_model_dir(tmp_path)
    assert "model_index.json is missing" in problem


def test_every_missing_part_is_named(model_copy):
    shutil.rmtree(model_copy / "vae")
    for f in (model_copy / "text_encoder_2").glob("*.safetensors"):
        f.unlink()
    (model_copy / "scheduler" / "scheduler_config.json").unlink()
    problems = check_model_dir(model_copy)
    assert "vae/ is missing" in problems
    assert "text_encoder_2/ has no weights (*.safetensors or *.bin)" in problems
    assert "scheduler/scheduler_config.json is missing" in problems


def test_flux_dev_is_refused(model_copy):
    config_path = model_copy / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "guidance_embeds": True}))
    with pytest.raises(ModelLoadError, match=r"FLUX.1 \[dev\], not FLUX.1 \[schnell\]"):
        require_model_dir(model_copy)


def test_other_pipelines_are_refused(model_copy):
    index = json.loads((model_copy / "model_index.json").read_text())
    (model_copy / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    (problem,) = check_model_dir(model_copy)
    assert "'StableDiffusionPipeline', not 'FluxPipeline'" in problem


def test_serve_with_a_bad_model_prints_one_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fluxserve", "serve", "--data-dir", str(tmp_path), "--model", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert "cannot start" in out.stderr and "model_index.json is missing" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_without_a_safety_checker_says_how_to_proceed(model_copy, tmp_path):
    shutil.rmtree(model_copy / "safety_checker")
    out = subprocess.run(
        [sys.executable, "-m", "fluxserve", "serve", "--data-dir", str(tmp_path), "--model", str(model_copy)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "--safety-checker none" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_with_a_single_file_and_no_base_names_what_is_missing(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "flux1-schnell.safetensors"
    save_file({"x_embedder.weight": torch.zeros(2, 2), "transformer_blocks.0.x": torch.zeros(1)}, str(path))
    out = subprocess.run(
        [sys.executable, "-m", "fluxserve", "serve", "--data-dir", str(tmp_path), "--model", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "pass --model-base PATH" in out.stderr
    assert "Traceback" not in out.stderr
