"""`fluxserve verify FILE_OR_URL`: what an image says of where it came from, read back mark by mark.

- The C2PA manifest, read and validated by the C2PA library: trusted (valid, and signed under a CA given as a
  trust anchor), valid (signature and hashes hold, signer not among the anchors), invalid (the file or the
  manifest was changed after signing: the codes say what), or absent.
- The XMP metadata: IPTC's DigitalSourceType, the AI system and the creator tool, as metadata readers see
  them.
- The watermark: found (its server and image ids) or not, read at the image's size and as a half-size copy.

Report.outcome sums it up: marked (some mark found, none invalid), invalid (a manifest that fails), unmarked.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from fluxserve.blobs.content_types import image_type
from fluxserve.provenance import watermark
from fluxserve.provenance.manifest import INPUT_DIGEST_KEY

# A manifest's validation codes that mean only "the signer is not among the trust anchors given".
UNTRUSTED_ONLY = {"signingCredential.untrusted"}


@dataclass
class ManifestReport:
    state: str  # absent | trusted | valid | invalid
    signer: str | None = None
    issuer: str | None = None
    generator: str | None = None
    actions: list[str] = field(default_factory=list)
    ingredients: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the validation failures, code: explanation


@dataclass
class MetadataReport:
    digital_source_type: str | None
    ai_system: str | None
    creator_tool: str | None


@dataclass
class WatermarkReport:
    found: bool
    server_id: str | None
    image_id: str | None
    confidence: float
    read_as: str  # full | half


@dataclass
class Report:
    content_type: str | None
    size: tuple[int, int] | None
    manifest: ManifestReport
    metadata: MetadataReport | None
    watermark: WatermarkReport | None

    @property
    def outcome(self) -> str:
        """invalid | marked | unmarked"""
        if self.manifest.state == "invalid":
            return "invalid"
        marked = self.manifest.state != "absent" or (self.watermark is not None and self.watermark.found)
        marked = marked or (self.metadata is not None and self.metadata.digital_source_type is not None)
        return "marked" if marked else "unmarked"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def verify(data: bytes, trust_anchors: str | None = None) -> Report:
    """trust_anchors: PEM certificates whose signers count as trusted (the development CA, the operator's)."""
    content_type = image_type(data)
    image = _decode(data)
    return Report(
        content_type=content_type,
        size=image.size if image is not None else None,
        manifest=read_manifest(data, content_type, trust_anchors),
        metadata=read_metadata(image) if image is not None else None,
        watermark=read_watermark(image) if image is not None else None,
    )


def read_manifest(data: bytes, content_type: str | None, trust_anchors: str | None) -> ManifestReport:
    import c2pa

    if content_type is None:
        return ManifestReport("absent")
    try:
        context = reading_context(trust_anchors)
        reader = c2pa.Reader.try_create(content_type, io.BytesIO(data), context=context)
    except c2pa.C2paError as exc:  # a manifest store that cannot even be parsed
        return ManifestReport("invalid", problems=[str(exc)])
    if reader is None:
        return ManifestReport("absent")
    with reader:
        store = json.loads(reader.json())
        state = (reader.get_validation_state() or "Invalid").lower()
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    results = store.get("validation_results", {}).get("activeManifest", {})
    problems = [f"{p.get('code')}: {p.get('explanation', '')}" for p in results.get("failure", [])
                if p.get("code") not in UNTRUSTED_ONLY]  # fmt: skip
    if problems:
        state = "invalid"
    signature = active.get("signature_info", {})
    generators = [f"{g.get('name')} {g.get('version', '')}".strip()
                  for g in active.get("claim_generator_info", [])]  # fmt: skip
    actions = [action for assertion in active.get("assertions", [])
               if assertion.get("label", "").startswith("c2pa.actions")
               for action in assertion.get("data", {}).get("actions", [])]  # fmt: skip
    return ManifestReport(
        state=state if state in ("trusted", "valid") else "invalid",
        signer=signature.get("common_name"),
        issuer=signature.get("issuer"),
        generator=", ".join(generators) or None,
        actions=[describe_action(a) for a in actions],
        ingredients=[describe_ingredient(i) for i in active.get("ingredients", [])],
        problems=problems,
    )


def reading_context(trust_anchors: str | None) -> Any:
    """The C2PA library's reading context: trust checked, against these PEM CAs when given."""
    import c2pa

    settings: dict[str, Any] = {"verify": {"verify_trust": True}}
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors}
    return c2pa.Context(c2pa.Settings.from_dict(settings))


def describe_action(action: dict[str, Any]) -> str:
    text = action.get("action", "?")
    if source := action.get("digitalSourceType"):
        text += f" ({source.rsplit('/', 1)[-1]})"
    if agent := action.get("softwareAgent"):
        text += f" by {agent.get('name') if isinstance(agent, dict) else agent}"
    return text


def describe_ingredient(ingredient: dict[str, Any]) -> str:
    relationship, form = ingredient.get("relationship", "?"), ingredient.get("format")
    text = f"{ingredient.get('title', 'ingredient')} ({relationship}, {form})"
    if digest := (ingredient.get("metadata") or {}).get(INPUT_DIGEST_KEY):
        text += f" sha256 {digest}"
    if ingredient.get("active_manifest"):
        text += ", with its own manifest"
    return text


def read_metadata(image: Any) -> MetadataReport | None:
    packet = image.info.get("xmp")
    if not packet:
        return None
    text = packet.decode("utf-8", "replace") if isinstance(packet, bytes) else str(packet)
    return MetadataReport(
        digital_source_type=_xmp_value(text, "Iptc4xmpExt:DigitalSourceType"),
        ai_system=_xmp_value(text, "Iptc4xmpExt:AISystemUsed"),
        creator_tool=_xmp_value(text, "xmp:CreatorTool"),
    )


def _xmp_value(text: str, name: str) -> str | None:
    """A property written as an attribute (name="value") or as an element (<name>value</name>)."""
    found = re.search(rf'{re.escape(name)}="([^"]*)"', text) or re.search(
        rf"<{re.escape(name)}>([^<]*)</{re.escape(name)}>", text
    )
    return found.group(1) if found else None


def read_watermark(image: Any) -> WatermarkReport:
    import numpy as np

    reading = watermark.read(np.asarray(image.convert("RGB")))
    payload = reading.payload
    return WatermarkReport(
        found=payload is not None,
        server_id=f"{payload.server_id:04x}" if payload else None,
        image_id=f"{payload.image_id:08x}" if payload else None,
        confidence=round(reading.confidence, 3),
        read_as=reading.scale,
    )


def _decode(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None


def render(report: Report, source: str) -> str:
    """The report as `fluxserve verify` prints it."""
    size = f"{report.size[0]}x{report.size[1]}" if report.size else "not an image"
    lines = [f"{source}: {report.content_type or 'unknown type'}, {size}"]
    manifest = report.manifest
    states = {"trusted": "valid and trusted", "valid": "valid (signer not among the trusted CAs given)",
              "invalid": "INVALID", "absent": "absent"}  # fmt: skip
    lines.append(f"C2PA manifest: {states[manifest.state]}")
    if manifest.signer or manifest.issuer:
        lines.append(f"  signer: {manifest.signer} (issued by {manifest.issuer})")
    if manifest.generator:
        lines.append(f"  claim generator: {manifest.generator}")
    lines += [f"  action: {action}" for action in manifest.actions]
    lines += [f"  ingredient: {ingredient}" for ingredient in manifest.ingredients]
    lines += [f"  problem: {problem}" for problem in manifest.problems]
    metadata = report.metadata
    if metadata is None or not any(asdict(metadata).values()):
        lines.append("XMP metadata: absent")
    else:
        lines.append(f"XMP metadata: DigitalSourceType {metadata.digital_source_type}")
        lines.append(f"  AI system: {metadata.ai_system}; creator tool: {metadata.creator_tool}")
    mark = report.watermark
    if mark is None or not mark.found:
        confidence = f" (vote strength {mark.confidence:.2f})" if mark else ""
        lines.append(f"watermark: not found{confidence}")
    else:
        half = ", read as a half-size copy" if mark.read_as == "half" else ""
        lines.append(f"watermark: found: server {mark.server_id}, image {mark.image_id} "
                     f"(vote strength {mark.confidence:.2f}{half})")  # fmt: skip
    return "\n".join(lines)
