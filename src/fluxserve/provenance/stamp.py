"""The provenance stage: each output image's marks, applied where images are encoded (the worker's delivery
thread, overlapped with the engine's next batch, never on its critical path), in the one order that keeps each
readable: the watermark into the pixels, the XMP packet into the encoded file, then the C2PA manifest over
those bytes (its hash covers all of the file but the manifest itself).

The watermark's image id is derived from what made the image (its job's kind, prompt, size, steps, seed and
input), not drawn at random, so a seed still reproduces an image's pixels exactly. The C2PA manifest is signed
anew each time (its signature and instance id differ), so with c2pa on two runs of one seed differ only in it.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fluxserve.core.jobs import GenerationSpec
from fluxserve.core.settings import PROVENANCE_MARKS, ProvenanceSettings
from fluxserve.provenance import watermark, xmp
from fluxserve.provenance.credentials import SigningCredentials, generate_development, load_credentials
from fluxserve.provenance.manifest import Ingredient, ManifestSigner

# What the stamp needs of the encoder: an image and an XMP packet (None: none) -> the file's bytes.
Encode = Callable[[Any, "bytes | None"], bytes]


@dataclass(frozen=True)
class Stamped:
    data: bytes  # the encoded image with its marks
    seconds: float  # the marks' own time, encoding excluded
    watermark: watermark.Payload | None  # None: not watermarked (switched off, or an image too small)


class Provenance:
    """The marks one worker applies, with its signer; built once at the edge from ProvenanceSettings."""

    def __init__(
        self, marks: frozenset[str], credentials: SigningCredentials | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:  # fmt: skip
        if "c2pa" in marks and credentials is None:
            raise ValueError("the c2pa mark needs signing credentials")
        self.marks = frozenset(marks)
        self.clock = clock
        self.credentials = credentials
        self.signer = ManifestSigner(credentials) if "c2pa" in marks else None
        # The deployment's id in the watermark: its signing certificate's (0 when it has none).
        self.server_id = credentials.server_id if credentials is not None else 0

    @classmethod
    def open(cls, settings: ProvenanceSettings, folder: Path) -> Provenance:
        """Raises CredentialsError for an unusable --c2pa-cert/--c2pa-key (a configuration error)."""
        needs_identity = bool({"c2pa", "watermark"} & settings.marks)
        return cls(settings.marks, load_credentials(settings, folder) if needs_identity else None)

    @classmethod
    def in_memory(cls, marks: frozenset[str] = frozenset(PROVENANCE_MARKS)) -> Provenance:
        """Every mark, signed by a development CA that lives only in this process (a worker built without
        settings: tests, embedding)."""
        return cls(marks, _in_memory_credentials())

    def describe(self) -> str:
        """The start log's account of the marks: which, and who signs."""
        parts = []
        for mark in PROVENANCE_MARKS:
            if mark not in self.marks:
                continue
            if mark == "c2pa" and self.credentials is not None:
                parts.append(f"c2pa signed by {self.credentials.describe()}")
            elif mark == "watermark":
                parts.append(f"watermark (server id {self.server_id:04x})")
            else:
                parts.append(mark)
        return ", ".join(parts) or "none"

    def stamp(
        self, image: Any, spec: GenerationSpec, index: int, content_type: str, encode: Encode,
        ingredient: Ingredient | None = None,
    ) -> Stamped:  # fmt: skip
        """Image `index` of the job's images, marked and encoded."""
        started = self.clock()
        payload = None
        if "watermark" in self.marks and watermark.can_mark(image.width, image.height):
            import numpy as np
            from PIL import Image

            payload = watermark.Payload(self.server_id, image_id(spec, index, ingredient))
            pixels = np.array(image if image.mode == "RGB" else image.convert("RGB"))  # a writable copy
            watermark.embed_in_place(pixels, payload)
            image = Image.fromarray(pixels)
        packet = xmp.packet(spec.kind) if "metadata" in self.marks else None
        encode_started = self.clock()
        data = encode(image, packet)
        encoding = self.clock() - encode_started
        if self.signer is not None:
            data = self.signer.sign(data, content_type, spec.kind, ingredient)
        return Stamped(data, self.clock() - started - encoding, payload)


def image_id(spec: GenerationSpec, index: int, ingredient: Ingredient | None) -> int:
    """32 bits naming image `index` of this job by what determines its pixels, so an identical request
    reproduces it exactly (and gets the same id)."""
    made_from = ingredient.sha256 if ingredient is not None else spec.image_url
    seed = spec.image_seeds[index]
    what = (spec.kind, spec.prompt, spec.width, spec.height, spec.num_inference_steps, seed,
            spec.guidance_scale, spec.acceleration, made_from)  # fmt: skip
    return int.from_bytes(hashlib.sha256(repr(what).encode()).digest()[:4], "big")


@functools.lru_cache(maxsize=1)
def _in_memory_credentials() -> SigningCredentials:
    _, chain, key = generate_development()
    return SigningCredentials(chain, key, development=True)
