"""The invisible watermark: invisible-watermark's `dwtDctSvd` method (the one the Stable Diffusion and Black
Forest Labs reference code ship; it survives JPEG quality 75 where `dwtDct` does not), bit for bit in layout,
so its own `WatermarkDecoder("bytes", 64).decode(bgr, "dwtDctSvd", scales=[0, 48, 0])` reads what fluxserve
writes.

The method, as the library runs it: the image's U channel (BGR -> YUV), one level of the Haar wavelet, its
approximation band cut into 4x4 blocks in row-major order; block n carries bit n % 64 in its largest singular
value s0, moved to the centre of one half of its bin of width SCALE (the first half for 0, the second for 1).

SCALE is 48, not the library's 36: a JPEG's 4:2:0 chroma subsampling is decoded with a filter that blends
each block's edge with its neighbours', and in strongly textured images (grass, noise) that moved s0 across
its bin. Measured on the tiny model's noise-like outputs, served as JPEG q95 and re-encoded at q75, with the
soft votes of _read_band: 86-89 % of the bits right at 36 (lost), all of them at 48 (found), for 3 dB of
PSNR (41 -> 38 dB); smooth pictures kept the mark at either.

Why not call the library: it loops over every block in Python (1.0 s to mark a 1024x1024 image here, 0.5 s
to read it), and it writes back through uint8 with the detail bands swapped, which costs it 10 dB of PSNR.
Done as array operations the same mark takes milliseconds:
- the DCT of a block is orthonormal, so it leaves the singular values and turns the singular vectors by
  itself: the library's dct -> svd -> edit s0 -> idct is the same as adding (s0' - s0) u0 v0^T to the block;
- changing one Haar approximation coefficient by d adds d/2 to each pixel of its 2x2 square;
- U moves by 0.436 dB when only B moves (U = 0.492 (B - Y), Y = 0.299 R + 0.587 G + 0.114 B), so the mark
  is written into the blue channel alone: half the writes of holding Y and V still, at about 1 dB of PSNR
  (Y moves by a quarter of dU, about one level).

The payload is 64 bits: a 16-bit server id, a 32-bit image id and a CRC-16 of both. A read counts as found
only when the CRC matches and the blocks agree (CONFIDENCE_MIN), so a random image passes about once in 2**16
reads even before the strength test.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from typing import Any

BITS = 64
SCALE = 48.0  # the library's scales=[0, 48, 0] (its default is 36: see above)
BLOCK = 4
# The library refuses images under 256x256 pixels: too few blocks per bit to survive a re-encode.
MIN_PIXELS = 256 * 256
# The mean strength of the bits' votes: 1.0 for a pristine mark, 0.15 for the tiny model's noise-like outputs
# served as JPEG q95 then re-encoded at q75, under 0.1 on unmarked pictures and noise (a flat image votes
# fully, all bits alike, which the CRC refuses).
CONFIDENCE_MIN = 0.1
POWER_STEPS = 3

# OpenCV's BGR -> YUV (ITU-R BT.601, as cv2.COLOR_BGR2YUV): U = 0.492 (B - Y) + 128.
_U_FROM_RGB = (-0.299 * 0.492, -0.587 * 0.492, (1 - 0.114) * 0.492)
_DB_PER_DU = 1 / _U_FROM_RGB[2]


@dataclass(frozen=True)
class Payload:
    server_id: int  # 0..2**16-1: which deployment made the image
    image_id: int  # 0..2**32-1: which image it made

    def bits(self) -> Any:
        import numpy as np

        body = struct.pack(">HI", self.server_id, self.image_id)
        crc = binascii.crc_hqx(body, 0xFFFF)  # CRC-16/CCITT-FALSE: all-zero and all-one reads fail it
        return np.unpackbits(np.frombuffer(body + struct.pack(">H", crc), dtype=np.uint8))

    @classmethod
    def from_bits(cls, bits: Any) -> Payload | None:
        """The payload these 64 bits spell, or None when their CRC does not match."""
        import numpy as np

        raw = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()
        if binascii.crc_hqx(raw[:6], 0xFFFF) != struct.unpack(">H", raw[6:])[0]:
            return None
        server_id, image_id = struct.unpack(">HI", raw[:6])
        return cls(server_id, image_id)

    def __str__(self) -> str:
        return f"server {self.server_id:04x}, image {self.image_id:08x}"


@dataclass(frozen=True)
class Reading:
    payload: Payload | None  # None: not found
    confidence: float  # the mean strength of its bits' votes, 0..1
    scale: str  # "full": read at the image's size; "half": as a copy downscaled by two


def can_mark(width: int, height: int) -> bool:
    return width * height >= MIN_PIXELS


def embed(rgb: Any, payload: Payload) -> Any:
    """The marked copy of an (H, W, 3) uint8 RGB array (PSNR about 38 dB)."""
    marked = rgb.copy()
    embed_in_place(marked, payload)
    return marked


def embed_in_place(rgb: Any, payload: Payload) -> None:
    """Mark a writable (H, W, 3) uint8 RGB array (a 1024x1024 image is 3 MB: a copy is worth saving)."""
    import numpy as np

    height, width = rgb.shape[:2]
    if not can_mark(width, height):
        raise ValueError(f"a {width}x{height} image is too small to carry the watermark")
    rows, cols = height // 4 * 4, width // 4 * 4
    approx = _approx_of_squares(rgb[:rows, :cols])
    entries = _block_entries(approx)
    s0, left, right = _top_singular(entries)
    bits = np.resize(payload.bits(), s0.size).reshape(s0.shape)  # block n (row-major) carries bit n % 64
    change = (np.floor(s0 / SCALE) + 0.25 + 0.5 * bits) * SCALE - s0
    # One approximation coefficient is half its 2x2 square's sum: each of its pixels' U moves by d / 2. The
    # pixels are whole numbers, so rounding the change alone rounds the result.
    d_u = np.zeros_like(approx)
    grid_rows, grid_cols = s0.shape
    per_entry = (change / 2) * np.stack(left)[:, None] * np.stack(right)[None, :]  # [i, k, r, c]: u_i v_k
    d_u[: grid_rows * BLOCK, : grid_cols * BLOCK] = per_entry.transpose(2, 0, 3, 1).reshape(
        grid_rows * BLOCK, grid_cols * BLOCK
    )
    step = np.repeat(np.rint(_DB_PER_DU * d_u).astype(np.int16), 2, axis=1)  # each pixel of its 2x2 square
    # The blue channel made contiguous, changed, written back: numpy runs far slower on a strided channel.
    blue = np.ascontiguousarray(rgb[:rows, :cols, 2]).astype(np.int16)
    blue.reshape(rows // 2, 2, cols)[...] += step[:, None, :]
    np.clip(blue, 0, 255, out=blue)
    rgb[:rows, :cols, 2] = blue


def read(rgb: Any, try_half: bool = True) -> Reading:
    """The payload an (H, W, 3) uint8 RGB array carries, read at its own size, then (try_half) as a copy of
    a marked image downscaled by two: a box-filtered half is the Haar approximation band itself, halved."""
    height, width = rgb.shape[:2]
    readings = []
    if can_mark(width, height):
        readings.append(_read_band(_approx_of_squares(rgb[: height // 4 * 4, : width // 4 * 4]), "full"))
    if try_half and can_mark(2 * width, 2 * height):
        readings.append(_read_band(2 * _u_channel(rgb), "half"))
    found = [r for r in readings if r.payload is not None]
    return max(found or readings, key=lambda r: r.confidence, default=Reading(None, 0.0, "full"))


def _read_band(approx: Any, scale: str) -> Reading:
    import numpy as np

    s0, _, _ = _top_singular(_block_entries(approx))
    # A soft vote per block, where the library's is hard (its s0 in the bin's upper half or not): -1 at the
    # centre of the lower half (bit 0), +1 at the upper's, 0 on the boundaries between them. A block that a
    # re-encode pushed near a boundary then says little instead of casting a full wrong vote.
    votes = -np.sin(2 * np.pi * np.fmod(s0, SCALE) / SCALE).ravel()  # row-major, as the library numbers them
    bit_of = np.arange(len(votes)) % BITS
    per_bit = np.bincount(bit_of, weights=votes, minlength=BITS) / np.bincount(bit_of, minlength=BITS)
    confidence = float(np.mean(np.abs(per_bit)))
    payload = Payload.from_bits(per_bit > 0) if confidence >= CONFIDENCE_MIN else None
    return Reading(payload, confidence, scale)


def _block_entries(band: Any) -> Any:
    """The band's whole 4x4 blocks, entry by entry: entries[i, k][r, c] is row i, column k of block (r, c),
    one contiguous array per entry (what the array operations over all blocks run fastest on)."""
    import numpy as np

    rows, cols = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    blocks = band[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK)
    return np.ascontiguousarray(blocks.transpose(1, 3, 0, 2))


def _top_singular(entries: Any) -> tuple[Any, list[Any], list[Any]]:
    """Each block's largest singular value s0 and its singular vectors u and v, entry by entry (as
    _block_entries gives the blocks), equal to numpy.linalg.svd's within 0.01 but some 50x faster: LAPACK
    is called once per 4x4 block, where this runs a few dozen array operations over all blocks at once.
    Power iteration on B^T B from each block's mean direction: U's +128 offset makes that direction dominant
    by far (the second eigenvalue is at most a fifth of the first even in pure noise), so POWER_STEPS do."""
    import numpy as np

    gram = [[sum(row[k] * row[m] for row in entries) for m in range(BLOCK)] for k in range(BLOCK)]
    right = [np.full(entries[0][0].shape, 0.5, dtype=np.float32) for _ in range(BLOCK)]
    for _ in range(POWER_STEPS):  # v <- B^T B v, normalised
        right = [sum(gram[k][m] * right[m] for m in range(BLOCK)) for k in range(BLOCK)]
        norm = np.maximum(np.sqrt(sum(x * x for x in right)), 1e-30)
        right = [x / norm for x in right]
    image = [sum(row[k] * right[k] for k in range(BLOCK)) for row in entries]  # B v = s0 u
    s0 = np.sqrt(sum(x * x for x in image))
    return s0, [x / np.maximum(s0, 1e-30) for x in image], right


def _u_channel(rgb: Any) -> Any:
    import numpy as np

    return rgb.astype(np.float32) @ np.array(_U_FROM_RGB, dtype=np.float32) + 128.0


def _approx_of_squares(rgb: Any) -> Any:
    """pywt.dwt2(U, "haar")'s approximation band, each 2x2 square's sum of U halved, from the squares' RGB
    sums (U is affine in RGB: four offsets of 128, halved, are 256). Rows are summed in pairs first (two
    contiguous rows), then each square's six values (two pixels of three channels) weighted at once."""
    import numpy as np

    height, width = rgb.shape[:2]
    pairs = np.ascontiguousarray(rgb).reshape(height // 2, 2, width * 3)
    rows = pairs[:, 0].astype(np.float32)
    rows += pairs[:, 1]
    weights = np.tile(np.array(_U_FROM_RGB, dtype=np.float32) / 2, 2)
    return rows.reshape(height // 2, width // 2, 6) @ weights + 256.0
