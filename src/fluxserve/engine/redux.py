"""Redux: an input image -> the conditioning the FLUX transformer takes in place of text embeddings.

diffusers' FluxPriorReduxPipeline, loaded without text encoders as FLUX.1-Redux-dev is used: it encodes the image
with SigLIP, projects it with the Redux embedder to T5 width, and appends it to zero text embeddings. The output
feeds the one FluxEngine that serves the text endpoint: one copy of the big model serves both.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.core.errors import ModelLoadError
from fluxserve.engine.loading import log_components, quiet_libraries
from fluxserve.engine.placement import Placement

log = logging.getLogger(__name__)

REQUIRED = ("image_encoder", "feature_extractor", "image_embedder")
# Black Forest Labs publishes the Redux weights under the FLUX.1 [dev] Non-Commercial License.
LICENCE = "FLUX.1 [dev] Non-Commercial License (as named on the FLUX.1-Redux-dev model card)"


def check_redux_dir(root: Path) -> list[str]:
    index_path = root / "model_index.json"
    if not index_path.is_file():
        return [f"{index_path} is missing: not a diffusers FluxPriorReduxPipeline folder"]
    index = json.loads(index_path.read_text())
    if index.get("_class_name") != "FluxPriorReduxPipeline":
        return [f"model_index.json names {index.get('_class_name')!r}, not 'FluxPriorReduxPipeline'"]
    return [f"{name}/ is missing" for name in REQUIRED if not (root / name).is_dir()]


def require_redux_dir(root: Path) -> None:
    problems = check_redux_dir(root)
    if problems:
        raise ModelLoadError(f"{root} is not a usable Redux model folder:\n  - " + "\n  - ".join(problems))


@dataclass
class ReduxPrior:
    prior: Any
    placement: Placement

    @classmethod
    def load(cls, root: Path, placement: Placement) -> ReduxPrior:
        require_redux_dir(root)
        quiet_libraries()
        from diffusers import FluxPriorReduxPipeline

        try:
            prior = FluxPriorReduxPipeline.from_pretrained(root, dtype=placement.dtype, local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"could not load the Redux model {root}: {type(exc).__name__}: {exc}") from exc
        log_components(root, prior.components, placement)
        log.info("Redux weights licence: %s", LICENCE)
        return cls(prior=prior.to(placement.device), placement=placement)

    def embed(self, image: Any, num_images: int) -> tuple[Any, Any]:
        """(prompt_embeds, pooled_prompt_embeds), one row per image to generate."""
        out = self.prior(image)
        return (
            out.prompt_embeds.repeat_interleave(num_images, dim=0),
            out.pooled_prompt_embeds.repeat_interleave(num_images, dim=0),
        )
