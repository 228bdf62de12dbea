"""The provenance stage, per mark, on one CPU core: what each mark adds to a 1024x1024 output image, against
the image's own encoding measured in the same run (the baseline every output pays anyway), and how well the
watermark survives what images go through.

    make bench-provenance
    # which runs: .venv/bin/python benchmarks/bench_provenance.py --out benchmarks/results/provenance

Timings: the process is pinned to one core; each figure is the median (and minimum) of --repeats runs after
one warm-up, in ms. The image is a smooth gradient with texture, as generated images are; noise would make
every encoder slower than any real output.
- watermark: provenance/watermark.embed on the pixels;
- metadata: the encode with the XMP packet minus the same encode without it (minima, on a 64x64 image: the
  packet's cost does not depend on the image's size, and a large PNG's encode jitters by more than it);
- c2pa: ManifestSigner.sign on the encoded file (the development signer, no thumbnail);
- the stage: Provenance.stamp with every mark, encoding excluded (what `timings.provenance` reports).

Robustness (measured and reported, not required but for JPEG quality 75): the share of --images marked images
whose watermark is read back after each change, and the false positives over --images unmarked ones.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fluxserve.core.jobs import GenerationSpec  # noqa: E402
from fluxserve.provenance import watermark, xmp  # noqa: E402
from fluxserve.provenance.stamp import Provenance  # noqa: E402
from fluxserve.worker.outputs import CONTENT_TYPES, encode  # noqa: E402


def picture(seed: int, size: int = 1024) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    waves = np.sin(x * rng.uniform(3, 12)) * np.cos(y * rng.uniform(3, 12))
    base = np.stack([x, 1 - y, (x + y) / 2], axis=-1) * rng.uniform(120, 220, 3) + waves[..., None] * 30
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(runs), 2), "min_ms": round(min(runs), 2)}


def spec_for(fmt: str, size: int) -> GenerationSpec:
    return GenerationSpec(kind="text", prompt="p", width=size, height=size, num_inference_steps=4, seed=1,
                          num_images=1, guidance_scale=3.5, enable_safety_checker=True, output_format=fmt,
                          sync_mode=False, acceleration="none", base_url="http://h")  # fmt: skip


def timings(repeats: int, size: int) -> list[dict[str, Any]]:
    provenance = Provenance.in_memory()
    payload = watermark.Payload(provenance.server_id, 1)
    image = picture(0, size)
    pixels = np.asarray(image)
    rows = []
    for fmt in ("jpeg", "png", "webp"):
        spec, content_type = spec_for(fmt, size), CONTENT_TYPES[fmt]
        plain = encode(image, fmt)
        with_xmp = encode(image, fmt, metadata=xmp.packet("text"))

        small = picture(1, 64)
        row = {
            "format": fmt,
            "bytes": len(plain),
            "encode (baseline)": timed(lambda: encode(image, fmt), repeats),
            "watermark": timed(lambda: watermark.embed(pixels, payload), repeats),
            # The packet's cost does not grow with the image: measured on a 64x64 one, whose encode's own
            # jitter is well under it (at 1024x1024 a PNG or WebP encode's jitter is larger than the packet).
            "encode 64x64": timed(lambda: encode(small, fmt), repeats * 10),
            "encode 64x64 with metadata": timed(lambda: encode(small, fmt, metadata=xmp.packet("text")),
                                                repeats * 10),
            "c2pa": timed(lambda: provenance.signer.sign(with_xmp, content_type, "text"), repeats),
        }
        stamped = [provenance.stamp(image, spec, 0, content_type, lambda im, p: encode(im, fmt, None, p))
                   for _ in range(repeats)]  # fmt: skip
        row["stage (all marks)"] = {
            "median_ms": round(statistics.median(s.seconds for s in stamped) * 1000, 2),
            "min_ms": round(min(s.seconds for s in stamped) * 1000, 2),
        }
        small_cost = row["encode 64x64 with metadata"]["min_ms"] - row["encode 64x64"]["min_ms"]
        row["metadata"] = {"median_ms": round(max(small_cost, 0.0), 3)}
        row["manifest_bytes"] = len(provenance.signer.sign(with_xmp, content_type, "text")) - len(with_xmp)
        rows.append(row)
    return rows


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return Image.open(out).convert("RGB")


ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda im: im,
    "jpeg q90": lambda im: jpeg(im, 90),
    "jpeg q75 (required)": lambda im: jpeg(im, 75),
    "jpeg q50": lambda im: jpeg(im, 50),
    "half size (box)": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BOX),
    "half size (bicubic)": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC),
    "half size (bicubic), then jpeg q75": lambda im: jpeg(
        im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC), 75
    ),
    "10% crop (5% off each side)": lambda im: im.crop(
        (im.width // 20, im.height // 20, im.width - im.width // 20, im.height - im.height // 20)
    ),
    "10% crop (off the right and bottom)": lambda im: im.crop(
        (0, 0, im.width * 9 // 10, im.height * 9 // 10)
    ),
}


def robustness(images: int, size: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    survived = dict.fromkeys(ATTACKS, 0)
    false_positives = 0
    for i in range(images):
        original = picture(100 + i, size)
        payload = watermark.Payload(int(rng.integers(0, 2**16)), int(rng.integers(0, 2**32)))
        marked = Image.fromarray(watermark.embed(np.asarray(original), payload))
        for name, attack in ATTACKS.items():
            survived[name] += watermark.read(np.asarray(attack(marked).convert("RGB"))).payload == payload
        false_positives += watermark.read(np.asarray(jpeg(original, 90))).payload is not None
    noise_positives = sum(
        watermark.read(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).payload is not None
        for _ in range(images)
    )
    return {
        "images": images,
        "size": size,
        "survival": {name: round(count / images, 3) for name, count in survived.items()},
        "false_positives": {"unmarked pictures": false_positives, "noise": noise_positives, "of": images},
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Provenance stage, one CPU core ({result['machine']})", "",
             f"{result['size']}x{result['size']}, median of {result['repeats']} (min in brackets), ms.", "",
             "| format | encode (baseline) | watermark | metadata | c2pa | stage, all marks | stage / encode "
             "| manifest bytes |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in result["timings"]:

        def cell(name: str) -> str:
            value = row[name]
            return f"{value['median_ms']}" + (f" ({value['min_ms']})" if "min_ms" in value else "")

        ratio = row["stage (all marks)"]["median_ms"] / row["encode (baseline)"]["median_ms"]
        lines.append(
            f"| {row['format']} | {cell('encode (baseline)')} | {cell('watermark')} | {cell('metadata')} "
            f"| {cell('c2pa')} | {cell('stage (all marks)')} | {ratio:.2f} | {row['manifest_bytes']} |"
        )
    robust = result["robustness"]
    size = f"{robust['size']}x{robust['size']}"
    lines += ["", f"Watermark read back, {robust['images']} marked {size} images:", "",
              "| change | read back |", "|---|---|"]  # fmt: skip
    lines += [f"| {name} | {share:.0%} |" for name, share in robust["survival"].items()]
    fp = robust["false_positives"]
    lines += ["", f"False positives: {fp['unmarked pictures']} of {fp['of']} unmarked pictures (JPEG q90), "
              f"{fp['noise']} of {fp['of']} noise images."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/provenance"))
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--images", type=int, default=40, help="images for the robustness figures")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, pinned to one",
        "size": args.size,
        "repeats": args.repeats,
        "timings": timings(args.repeats, args.size),
        "robustness": robustness(args.images, args.size),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "provenance.json").write_text(json.dumps(result, indent=2))
    (args.out / "provenance.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
