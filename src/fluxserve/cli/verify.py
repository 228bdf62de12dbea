"""`fluxserve verify FILE_OR_URL`: the provenance report of one image (provenance/verify.py), from a file, an
http(s) URL or a data: URI. The development CA in <data-dir>/provenance is trusted by default, as are the
CAs given with --trust.

Exit status: 0 when some mark was found and none is invalid, 1 when a manifest is invalid (the file was
changed after signing), 4 when no mark was found, 2 when the image cannot be read."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fluxserve.processes.exit_codes import ExitCode

# The largest image verify downloads or reads.
MAX_BYTES = 64 * 1024 * 1024
EXIT_CODES = {"marked": ExitCode.OK, "invalid": ExitCode.REFUSED, "unmarked": ExitCode.NO_MARKS}


def add_verify_parser(sub: Any, env: Mapping[str, str]) -> None:
    from fluxserve.cli.flags import DEFAULT_DATA_DIR

    p = sub.add_parser("verify", help="report an image's C2PA manifest, XMP metadata and watermark")
    p.add_argument("source", help="an image file, an http(s) URL or a data: URI")
    p.add_argument("--trust", type=Path, action="append", default=[],
                   help="a PEM file of CAs whose signers count as trusted (repeatable)")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=Path(env.get("FLUXSERVE_DATA_DIR", DEFAULT_DATA_DIR)),
                   help="its provenance/dev-ca.pem (the development CA) is trusted too")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def read_source(source: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The image's bytes; over max_bytes is refused before more is read."""
    if source.startswith("data:"):
        from fluxserve.net.image_inputs import decode_data_uri

        return decode_data_uri(source, max_bytes)
    if source.startswith(("http://", "https://")):
        import httpx

        with httpx.stream("GET", source, follow_redirects=True, timeout=60) as response:
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise ValueError(f"{source} is larger than {max_bytes} bytes")
                chunks.append(chunk)
        return b"".join(chunks)
    path = Path(source)
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{source} is larger than {max_bytes} bytes")
    return path.read_bytes()


def trust_anchors(args: argparse.Namespace) -> str | None:
    from fluxserve.core.settings import PROVENANCE_SUBDIR
    from fluxserve.provenance.credentials import CA_NAME

    files = list(args.trust)
    development = args.data_dir / PROVENANCE_SUBDIR / CA_NAME
    if development.is_file():
        files.append(development)
    return "".join(path.read_text() for path in files) or None


def run_verify(args: argparse.Namespace) -> int:
    from fluxserve.provenance.verify import render, verify

    try:
        data = read_source(args.source)
        anchors = trust_anchors(args)
    except Exception as exc:  # noqa: BLE001 - any reason the image cannot be had is the user's to fix
        print(f"fluxserve verify: cannot read {args.source[:200]}: {exc}", file=sys.stderr)
        return ExitCode.CONFIG_ERROR
    report = verify(data, anchors)
    shown = args.source if not args.source.startswith("data:") else "data: URI"
    print(report.to_json() if args.json else render(report, shown))
    return EXIT_CODES[report.outcome]
