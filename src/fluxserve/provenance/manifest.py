"""The signed C2PA manifest (Content Credentials) of an output image: one `c2pa.created` action whose
digitalSourceType is IPTC's trainedAlgorithmicMedia, the model as its software agent, fluxserve and its
version as the claim generator; a Redux output also lists its input image as an `inputTo` ingredient, with
the input's SHA-256 (and the input's own manifest, when it had one, so the chain of custody carries on).

Signed with the C2PA library (c2pa-python, over the reference c2pa-rs), embedded in the file (JPEG APP11,
PNG caBX, WebP C2PA chunk). No claim thumbnail: it would cost a second JPEG encode per image and add more
bytes than the manifest itself, and a reader has the image in hand.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from dataclasses import dataclass
from typing import Any

import fluxserve
from fluxserve.provenance.credentials import CredentialsError, SigningCredentials
from fluxserve.provenance.xmp import DIGITAL_SOURCE_TYPE, MODELS

log = logging.getLogger(__name__)

GENERATOR = "fluxserve"
# Where the input image's digest sits in its ingredient: C2PA 2's ingredient assertion has no field for the
# digest of an ingredient that is not embedded, and its metadata takes namespaced keys.
INPUT_DIGEST_KEY = "org.fluxserve.sha256"
# A 1x1 PNG, signed once when a signer is made.
TRIAL_IMAGE = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415478da63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)
# The ingredient's label, by which the created action names it among its own ingredients.
INPUT_LABEL = "input-image"


@dataclass(frozen=True)
class Ingredient:
    """A Redux job's input image as it was fetched: its bytes (their digest, and any manifest they carry) and
    the decoded image, re-encoded as the ingredient when the C2PA library cannot parse the original file."""

    data: bytes
    content_type: str
    image: Any = None

    @functools.cached_property  # read for the watermark's image id and the manifest: hashed once
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def definition(kind: str, with_ingredient: bool = False) -> dict[str, Any]:
    action: dict[str, Any] = {
        "action": "c2pa.created",
        "digitalSourceType": DIGITAL_SOURCE_TYPE,
        "softwareAgent": {"name": MODELS[kind]},
    }
    if with_ingredient:
        action["parameters"] = {"ingredientIds": [INPUT_LABEL]}
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": fluxserve.__version__}],
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [action]}}],
    }


class ManifestSigner:
    """Signs images with one credential; made once per worker (the library's context holds the signer)."""

    def __init__(self, credentials: SigningCredentials) -> None:
        import c2pa

        self.credentials = credentials
        info = c2pa.C2paSignerInfo(credentials.algorithm, credentials.chain_pem, credentials.key_pem, None)
        settings = c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        try:
            self._context = c2pa.Context(settings, c2pa.Signer.from_info(info))
            # Once at start: a certificate the library refuses stops the worker, not each job.
            self.sign(TRIAL_IMAGE, "image/png", "text")
        except c2pa.C2paError as exc:
            raise CredentialsError(
                f"the C2PA library will not sign with this certificate and key: {exc}"
            ) from None

    def sign(self, data: bytes, content_type: str, kind: str, ingredient: Ingredient | None = None) -> bytes:
        """The image file with its manifest embedded."""
        import c2pa

        with c2pa.Builder(definition(kind, ingredient is not None), context=self._context) as builder:
            if ingredient is not None:
                add_ingredient(builder, ingredient)
            signed = io.BytesIO()
            builder.sign(content_type, io.BytesIO(data), signed)
        return signed.getvalue()


def add_ingredient(builder: Any, ingredient: Ingredient) -> None:
    import c2pa

    fields = {"title": "input image", "relationship": "inputTo", "label": INPUT_LABEL,
              "metadata": {INPUT_DIGEST_KEY: ingredient.sha256}}  # fmt: skip
    try:
        builder.add_ingredient(fields, ingredient.content_type, io.BytesIO(ingredient.data))
        return
    except c2pa.C2paError as exc:
        if ingredient.image is None:
            raise
        # Pillow decoded it but the C2PA parser will not (a damaged chunk, a manifest it cannot read): the
        # ingredient is then the decoded image, its digest still the original's.
        log.info("input image not parsed by the C2PA library (%s); recording it re-encoded", exc)
    stand_in = io.BytesIO()
    ingredient.image.save(stand_in, format="PNG")
    fields["description"] = "re-encoded: the C2PA library could not parse the input file"
    builder.add_ingredient(fields, "image/png", io.BytesIO(stand_in.getvalue()))
