"""Image files: read and write PNG, JPEG, TIFF and WebP, 8 and 16 bits, gray/RGB/RGBA.

* Pixels come back as a float32 tensor ``(C, H, W)`` in [0, 1] (C = 1 or 3) with the alpha
  channel apart, untouched; EXIF orientation is applied on reading.
* 16 bits per channel: PNG and TIFF. Pillow has no 16-bit colour mode, so 16-bit colour
  PNG (RGB, RGBA, gray+alpha) and uncompressed/deflate TIFF are encoded and decoded here
  with ``zlib`` and numpy; round trips are exact. JPEG and WebP hold 8 bits: a 16-bit
  write to them is stored with 8 bits (the documented downgrade rule).
* Writes are atomic (a temporary file in the target's folder, then ``os.replace``) and
  refuse to overwrite the input image unless ``force=True``.
* Every failure is an :class:`ImageIOError` (a ``ValueError``) with a one-line message
  that names the file.
* Blur kernels travel as ``.npy`` (:func:`write_kernel`, :func:`read_kernel`, which also
  reads ``.npz`` and gray images).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tempfile
import threading
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "ImageData",
    "ImageIOError",
    "default_output_path",
    "jpeg_quality_range",
    "jpeg_roundtrip",
    "list_images",
    "read",
    "read_kernel",
    "write",
    "write_kernel",
]

# suffix -> Pillow format name
_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_FORMATS)
_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")

#: Images with more pixels than this are refused unless ``allow_huge=True`` (a
#: decompression bomb guard: a small file can declare a gigantic image). Pillow's own
#: limit, 89.5 megapixels; a 12000 x 7000 photo fits.
DEFAULT_MAX_PIXELS = 89_478_485

# Pillow's own bomb check (in Image.open) reads a module global; opening here switches it
# off for a moment, under a lock, and applies ``max_pixels`` instead, so that the limit is
# a parameter. Decoding happens outside the lock.
_PIL_LIMIT_LOCK = threading.RLock()


class ImageIOError(ValueError):
    """A file could not be read or written; the message is one line naming the file."""


@dataclass
class ImageData:
    """An image as read from a file.

    Attributes:
        pixels: float32 ``(C, H, W)`` in [0, 1], C = 1 (gray) or 3 (RGB), without alpha.
        alpha: float32 ``(1, H, W)`` in [0, 1] or None; the file's values divided by the
            maximum of its bit depth, so writing it back at the same depth restores them.
        bit_depth: 8 or 16 (bits per channel in the file as read).
        format: Pillow's format name ("PNG", "JPEG", "TIFF", "WEBP", ...).
        path: the file read.
        icc_profile: the embedded colour profile, if any (pass it on to :func:`write`).
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None
    bit_depth: int
    format: str
    path: Path
    icc_profile: bytes | None = None


# ---------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------

def default_output_path(input_path: str | os.PathLike[str], tag: str = "deblurred") -> Path:
    """``NAME.EXT`` -> ``NAME.<tag>.EXT`` beside the input.

    ``photo.jpg`` -> ``photo.deblurred.jpg``.
    """
    path = Path(input_path)
    if not tag or any(sep in tag for sep in ("/", "\\")):
        raise ValueError(f"tag must be a non-empty name without path separators, got {tag!r}")
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def list_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders into the image files they hold.

    A folder contributes its files with a supported suffix (case-insensitive; hidden
    files skipped; not recursive), sorted by name. A file is kept as given, whatever its
    suffix (reading judges it by its content). Duplicates are dropped, order kept.

    Raises:
        ImageIOError: a path that does not exist.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for item in paths:
        path = Path(item)
        if path.is_dir():
            children = sorted(p for p in path.iterdir()
                              if p.is_file() and not p.name.startswith(".")
                              and p.suffix.lower() in _FORMATS)
        elif path.exists():
            children = [path]
        else:
            raise ImageIOError(f"{path}: no such file or directory")
        for child in children:
            key = child.resolve()
            if key not in seen:
                seen.add(key)
                found.append(child)
    return found


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def _pillow_bomb_check_off() -> Iterator[None]:
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImageIOError(f"{path}: no such file")
    if path.is_dir():
        raise ImageIOError(f"{path}: is a directory, not an image file")
    if not os.access(path, os.R_OK):
        raise ImageIOError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise ImageIOError(f"{path}: empty file (0 bytes)")


def read(path: str | os.PathLike[str], *, allow_huge: bool = False,
         max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read an image file.

    Args:
        path: PNG, JPEG, TIFF, WebP (or anything else Pillow opens), recognised by content.
        allow_huge: lift the decompression-bomb limit (the CLI's ``--allow-huge``).
        max_pixels: the limit, width x height (default :data:`DEFAULT_MAX_PIXELS`).

    Returns:
        :class:`ImageData`: pixels ``(C, H, W)`` float32 in [0, 1] with EXIF orientation
        applied, alpha ``(1, H, W)`` or None, bit depth 8 or 16.

    Raises:
        ImageIOError: missing, empty, unreadable, truncated or non-image file, an image
            over the pixel limit, or a pixel format that is not supported (float TIFF,
            32-bit integer beyond 16 bits).
    """
    path = Path(path)
    _check_readable(path)
    try:
        with _pillow_bomb_check_off():
            image = Image.open(path)
    except Image.UnidentifiedImageError:
        # Pillow cannot open some 16-bit TIFF layouts (gray + alpha) that we decode
        return _read_tiff16_only(path, allow_huge=allow_huge, max_pixels=max_pixels)
    except OSError as error:
        raise ImageIOError(f"{path}: truncated or corrupt image data "
                           f"({_one_line(error)})") from None
    with image:
        _check_pixel_count(path, *image.size, allow_huge=allow_huge, max_pixels=max_pixels)
        try:
            array, alpha_array, bit_depth = _decode(image, path)
        except ImageIOError:
            raise
        except (OSError, SyntaxError, ValueError, zlib.error, EOFError, struct.error) as error:
            raise ImageIOError(f"{path}: truncated or corrupt image data "
                               f"({_one_line(error)})") from None
        icc = image.info.get("icc_profile") or None
        format_name = image.format or "unknown"

    return _image_data(array, alpha_array, bit_depth, format_name, path, icc)


def _check_pixel_count(path: Path, width: int, height: int, *, allow_huge: bool,
                       max_pixels: int) -> None:
    if not allow_huge and width * height > max_pixels:
        raise ImageIOError(
            f"{path}: {width}x{height} = {width * height} pixels is over the limit of "
            f"{max_pixels} (decompression-bomb guard); allow it with allow_huge=True "
            f"(--allow-huge)")


def _read_tiff16_only(path: Path, *, allow_huge: bool, max_pixels: int) -> ImageData:
    data = path.read_bytes()
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        raise ImageIOError(f"{path}: not an image file (unknown or unsupported format)")
    tags, _ = _tiff_tags(data, path)
    if 256 in tags and 257 in tags:
        _check_pixel_count(path, tags[256][0], tags[257][0], allow_huge=allow_huge,
                           max_pixels=max_pixels)
    try:
        decoded = _decode_tiff16(data, path)
    except (ValueError, zlib.error, struct.error) as error:
        if isinstance(error, ImageIOError):
            raise
        raise ImageIOError(f"{path}: truncated or corrupt image data "
                           f"({_one_line(error)})") from None
    if decoded is None:
        raise ImageIOError(f"{path}: unsupported TIFF layout")
    array, alpha_array, bit_depth = _split_alpha16(*decoded)
    icc = bytes(tags[34675]) if 34675 in tags else None
    return _image_data(array, alpha_array, bit_depth, "TIFF", path, icc)


def _image_data(array: np.ndarray, alpha_array: np.ndarray | None, bit_depth: int,
                format_name: str, path: Path, icc: bytes | None) -> ImageData:
    scale = float((1 << bit_depth) - 1)
    pixels = torch.from_numpy(np.ascontiguousarray(
        np.moveaxis(array, -1, 0).astype(np.float32) / np.float32(scale)))
    alpha = None
    if alpha_array is not None:
        alpha = torch.from_numpy(alpha_array[None].astype(np.float32) / np.float32(scale))
    return ImageData(pixels=pixels, alpha=alpha, bit_depth=bit_depth, format=format_name,
                     path=path, icc_profile=icc)


def _decode(image: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Pixels ``(H, W, C)`` and alpha ``(H, W)`` as integers, and the bit depth."""
    raw16 = _read_colour16(image, path)  # before getexif(), which loads a PNG
    if raw16 is not None:
        return _split_alpha16(raw16[0], image.getexif().get(0x0112, 1) if raw16[1] is None
                              else raw16[1])

    image.load()
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image).astype(np.uint16)[..., None], None, 16
    if mode == "I":
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageIOError(f"{path}: 32-bit integer pixels beyond the 16-bit range are "
                               f"not supported")
        return values.astype(np.uint16)[..., None], None, 16
    if mode == "F":
        raise ImageIOError(f"{path}: floating-point pixels are not supported "
                           f"(convert to 8 or 16 bits)")
    if mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "La":
        image = image.convert("LA")
    elif mode in ("RGBa", "RGBX"):
        image = image.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if image.mode in ("LA", "RGBA"):
        return array[..., :-1], array[..., -1], 8
    return array, None, 8


def _split_alpha16(array: np.ndarray, orientation: int
                   ) -> tuple[np.ndarray, np.ndarray | None, int]:
    array = _apply_orientation(array, orientation)
    if array.shape[-1] in (2, 4):
        return array[..., :-1], array[..., -1], 16
    return array, None, 16


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation (1..8) applied to an ``(H, W, C)`` array, as ``exif_transpose``."""
    if orientation in (2, 4, 5, 7):
        array = array[:, ::-1]
    turns = {3: 2, 4: 2, 5: 1, 6: 3, 7: 3, 8: 1}.get(orientation, 0)
    return np.ascontiguousarray(np.rot90(array, turns))


# ---- 16-bit colour, which Pillow narrows to 8 bits ------------------------------------------

def _read_colour16(image: Image.Image, path: Path) -> tuple[np.ndarray, int | None] | None:
    """``(H, W, C)`` uint16 for a 16-bit colour (or gray+alpha) PNG/TIFF, else None; with
    the EXIF orientation when it was read on the way (TIFF), else None."""
    if image.format == "PNG":
        rawmode = image.tile[0].args if image.tile else None
        if isinstance(rawmode, tuple):
            rawmode = rawmode[0]
        if rawmode not in ("RGB;16B", "RGBA;16B", "LA;16B"):
            return None
        if image.info.get("interlace"):
            warnings.warn(f"{path}: interlaced 16-bit colour PNG is read with 8 bits per "
                          f"channel", stacklevel=3)
            return None
        return _decode_png16(path.read_bytes(), path), None
    if image.format == "TIFF":
        return _decode_tiff16(path.read_bytes(), path)
    return None


def _png_chunks(data: bytes, path: Path) -> Iterator[tuple[bytes, bytes]]:
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        if len(body) < length:
            raise ImageIOError(f"{path}: truncated or corrupt image data (PNG chunk "
                               f"{kind.decode('latin-1')!r} cut short)")
        yield kind, body
        if kind == b"IEND":
            return
        position += 12 + length
    raise ImageIOError(f"{path}: truncated or corrupt image data (PNG ends before IEND)")


def _decode_png16(data: bytes, path: Path) -> np.ndarray:
    header = None
    compressed = []
    for kind, body in _png_chunks(data, path):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.append(body)
    if header is None:
        raise ImageIOError(f"{path}: truncated or corrupt image data (PNG without IHDR)")
    width, height, depth, colour_type = header[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    bytes_per_pixel = 2 * channels
    stride = width * bytes_per_pixel
    raw = zlib.decompress(b"".join(compressed))
    if depth != 16 or len(raw) < height * (stride + 1):
        raise ImageIOError(f"{path}: truncated or corrupt image data (PNG pixel data too short)")
    rows = np.frombuffer(raw, dtype=np.uint8, count=height * (stride + 1)).reshape(height, -1)
    out = np.empty((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            current = line.copy()
        elif kind == 1:  # Sub: running sum (mod 256) of every bytes_per_pixel-th byte
            current = np.cumsum(line.reshape(width, bytes_per_pixel), axis=0,
                                dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            current = line + previous
        elif kind in (3, 4):
            current = _unfilter_sequential(kind, line, previous, bytes_per_pixel)
        else:
            raise ImageIOError(f"{path}: truncated or corrupt image data (PNG filter {kind})")
        out[y] = current
        previous = current
    return out.view(">u2").reshape(height, width, channels).astype(np.uint16)


def _unfilter_sequential(kind: int, line: np.ndarray, previous: np.ndarray,
                         bpp: int) -> np.ndarray:
    """PNG Average (3) and Paeth (4) filters: each byte depends on the one bpp to its left."""
    filtered = line.tolist()
    up = previous.tolist()
    current = [0] * len(filtered)
    for i, value in enumerate(filtered):
        left = current[i - bpp] if i >= bpp else 0
        if kind == 3:
            current[i] = (value + ((left + up[i]) >> 1)) & 0xFF
            continue
        upper_left = up[i - bpp] if i >= bpp else 0
        estimate = left + up[i] - upper_left
        d_left, d_up, d_ul = abs(estimate - left), abs(estimate - up[i]), abs(estimate - upper_left)
        if d_left <= d_up and d_left <= d_ul:
            predictor = left
        elif d_up <= d_ul:
            predictor = up[i]
        else:
            predictor = upper_left
        current[i] = (value + predictor) & 0xFF
    return np.asarray(current, dtype=np.uint8)


def _encode_png16(array: np.ndarray, icc_profile: bytes | None) -> bytes:
    """A 16-bit PNG of ``(H, W, C)`` uint16, C = 1..4, each row with the Up filter."""
    height, width, channels = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = array.astype(">u2").reshape(height, -1).view(np.uint8)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 arithmetic wraps, as the filter requires
    filtered = np.concatenate([np.full((height, 1), 2, dtype=np.uint8), up], axis=1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    parts = [b"\x89PNG\r\n\x1a\n",
             chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))]
    if icc_profile:
        parts.append(chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc_profile)))
    parts += [chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)), chunk(b"IEND", b"")]
    return b"".join(parts)


_TIFF_TYPES = {1: "B", 2: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 11: "f",
               12: "d", 16: "Q"}


def _tiff_tags(data: bytes, path: Path) -> tuple[dict[int, tuple], str]:
    """The first IFD of a classic TIFF: tag -> tuple of values (rationals skipped)."""
    endian = {b"II": "<", b"MM": ">"}.get(data[:2])
    if endian is None or len(data) < 8:
        raise ImageIOError(f"{path}: not an image file (unknown or unsupported format)")
    (magic, offset) = struct.unpack(endian + "HI", data[2:8])
    if magic != 42:
        raise ImageIOError(f"{path}: unsupported TIFF variant (BigTIFF or damaged header)")
    try:
        (count,) = struct.unpack(endian + "H", data[offset:offset + 2])
        tags: dict[int, tuple] = {}
        for i in range(count):
            entry = data[offset + 2 + 12 * i:offset + 14 + 12 * i]
            tag, kind, number = struct.unpack(endian + "HHI", entry[:8])
            code = _TIFF_TYPES.get(kind)
            if code is None:
                continue
            size = struct.calcsize(code) * number
            if size <= 4:
                raw = entry[8:8 + size]
            else:
                (where,) = struct.unpack(endian + "I", entry[8:12])
                raw = data[where:where + size]
            tags[tag] = struct.unpack(f"{endian}{number}{code}", raw)
    except struct.error:
        raise ImageIOError(f"{path}: truncated or corrupt image data (TIFF directory)") from None
    return tags, endian


def _decode_tiff16(data: bytes, path: Path) -> tuple[np.ndarray, int] | None:
    """A 16-bit gray+alpha/RGB/RGBA TIFF (chunky strips, any compression Pillow decodes,
    predictor 1 or 2) as ``(H, W, C)`` uint16 and its orientation tag; None for any other
    TIFF (Pillow reads those itself).

    Pillow has no 16-bit colour mode, but it decodes 16-bit gray strips exactly. So the
    file gets a second directory describing the same strips as a gray image ``C`` times
    wider (without the predictor, undone here), which Pillow then decodes.
    """
    tags, endian = _tiff_tags(data, path)
    bits = tags.get(258, (1,))
    samples = tags.get(277, (1,))[0]
    if samples < 2 or any(b != 16 for b in bits):
        return None
    predictor = tags.get(317, (1,))[0]
    if (predictor not in (1, 2) or tags.get(284, (1,))[0] != 1 or 322 in tags or samples > 4
            or tags.get(339, (1,))[0] != 1 or not {256, 257, 273, 279} <= tags.keys()):
        warnings.warn(f"{path}: this 16-bit colour TIFF layout is read with 8 bits per "
                      f"channel", stacklevel=3)
        return None
    width, height = tags[256][0], tags[257][0]
    offsets, counts = tags[273], tags[279]
    entries = [  # (tag, type, values)
        (256, 4, (width * samples,)), (257, 4, (height,)), (258, 3, (16,)),
        (259, 3, tags.get(259, (1,))), (262, 3, (1,)), (273, 4, offsets), (277, 3, (1,)),
        (278, 4, tags.get(278, (height,))), (279, 4, counts), (284, 3, (1,)),
    ]
    gray = _tiff_with_directory(data, entries, endian)
    try:
        with _pillow_bomb_check_off():
            image = Image.open(io.BytesIO(gray))
        with image:
            values = np.asarray(image).astype(np.uint16)
    except Image.UnidentifiedImageError:
        raise ImageIOError(f"{path}: unsupported TIFF compression "
                           f"{tags.get(259, (1,))[0]}") from None
    array = values.reshape(height, width, samples)
    if predictor == 2:  # horizontal differencing, mod 2^16
        array = np.cumsum(array, axis=1, dtype=np.uint16)
    return array, tags.get(274, (1,))[0]


def _tiff_with_directory(data: bytes, entries: list[tuple[int, int, tuple]],
                         endian: str) -> bytes:
    """``data`` (a classic TIFF) with a new first directory made of ``entries`` appended."""
    out = bytearray(data)
    if len(out) % 2:
        out += b"\0"
    directory_at = len(out)
    extra_at = directory_at + 2 + 12 * len(entries) + 4
    table = b""
    extra = b""
    for tag, kind, values in sorted(entries):
        code = _TIFF_TYPES[kind]
        packed = struct.pack(f"{endian}{len(values)}{code}", *values)
        if len(packed) <= 4:
            table += struct.pack(f"{endian}HHI", tag, kind, len(values)) + packed.ljust(4, b"\0")
        else:
            table += struct.pack(f"{endian}HHII", tag, kind, len(values), extra_at + len(extra))
            extra += packed
    out += struct.pack(f"{endian}H", len(entries)) + table + struct.pack(f"{endian}I", 0) + extra
    out[4:8] = struct.pack(f"{endian}I", directory_at)
    return bytes(out)


def _encode_tiff16(array: np.ndarray, icc_profile: bytes | None) -> bytes:
    """A little-endian, deflate-compressed, single-strip 16-bit gray+alpha/RGB/RGBA TIFF."""
    height, width, channels = array.shape
    pixels = zlib.compress(array.astype("<u2").tobytes(), 6)
    entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, value bytes

    def add(tag: int, kind: int, values: list[int] | bytes) -> None:
        if kind == 7:  # UNDEFINED (bytes)
            entries.append((tag, kind, len(values), bytes(values)))
        else:
            fmt = {3: "H", 4: "I"}[kind]
            entries.append((tag, kind, len(values), struct.pack(f"<{len(values)}{fmt}",
                                                                *values)))

    add(256, 4, [width])
    add(257, 4, [height])
    add(258, 3, [16] * channels)
    add(259, 3, [8])  # deflate
    add(262, 3, [1 if channels == 2 else 2])  # gray (min is black) or RGB
    add(273, 4, [0])  # strip offset, patched below
    add(277, 3, [channels])
    add(278, 4, [height])
    add(279, 4, [len(pixels)])
    add(284, 3, [1])  # chunky
    if channels in (2, 4):
        add(338, 3, [2])  # unassociated alpha
    if icc_profile:
        add(34675, 7, icc_profile)
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = 8 + ifd_size
    extra = b""
    table = b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, kind, count, extra_at + len(extra))
            extra += value + (b"\0" if len(value) % 2 else b"")
    pixel_offset = extra_at + len(extra)
    # patch the strip offset (tag 273 always fits inline)
    index = [e[0] for e in entries].index(273)
    start = 12 * index + 8
    table = table[:start] + struct.pack("<I", pixel_offset) + table[start + 4:]
    header = b"II*\x00" + struct.pack("<I", 8)
    ifd = struct.pack("<H", len(entries)) + table + struct.pack("<I", 0)
    return header + ifd + extra + pixels


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

def _as_hwc(pixels: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """``(C, H, W)`` or ``(H, W)`` values -> ``(H, W, C)`` float64 numpy in [0, 1]."""
    if isinstance(pixels, np.ndarray):
        pixels = torch.from_numpy(pixels)
    if not isinstance(pixels, torch.Tensor):
        raise ValueError(f"{name} must be a tensor (C, H, W), got {type(pixels).__name__}")
    if pixels.dim() == 2:
        pixels = pixels[None]
    if pixels.dim() != 3 or pixels.shape[1] == 0 or pixels.shape[2] == 0:
        raise ValueError(f"{name} must have shape (C, H, W) with H, W > 0, "
                         f"got {tuple(pixels.shape)}")
    if not pixels.dtype.is_floating_point:
        raise ValueError(f"{name} must be a float tensor in [0, 1], got {pixels.dtype}")
    array = pixels.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    return np.moveaxis(np.clip(array, 0.0, 1.0), 0, -1)


def _pixels_hwc(pixels: torch.Tensor | np.ndarray) -> np.ndarray:
    """:func:`_as_hwc` of image pixels, which have 1 or 3 channels."""
    array = _as_hwc(pixels, "pixels")
    if array.shape[-1] not in (1, 3):
        raise ValueError(f"pixels must have 1 or 3 channels, got {array.shape[-1]}")
    return array


def _check_quality(quality: int) -> None:
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in 1..100, got {quality!r}")


def _quantise(array: np.ndarray, bit_depth: int) -> np.ndarray:
    scale = (1 << bit_depth) - 1
    return np.rint(array * scale).astype(np.uint16 if bit_depth == 16 else np.uint8)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def write(path: str | os.PathLike[str], pixels: torch.Tensor, *,
          alpha: torch.Tensor | None = None, bit_depth: int = 8,
          source: str | os.PathLike[str] | None = None, force: bool = False,
          quality: int = 95, icc_profile: bytes | None = None) -> Path:
    """Write an image atomically; the format comes from the suffix.

    Args:
        path: target; suffix one of :data:`SUPPORTED_SUFFIXES` (case-insensitive).
        pixels: ``(C, H, W)`` (or ``(H, W)``) float tensor, C = 1 or 3; values are clipped
            to [0, 1] and rounded to the bit depth.
        alpha: ``(1, H, W)`` (or ``(H, W)``) float in [0, 1], or None. JPEG has no alpha:
            it is refused there.
        bit_depth: 8 or 16. PNG and TIFF store 16 bits; JPEG and WebP hold 8 bits, so a
            16-bit write to them is stored with 8 bits.
        source: the input image this output was made from: writing over it is refused
            unless ``force`` (the CLI's ``--force``).
        force: allow overwriting ``source``.
        quality: JPEG/WebP quality, 1..100.
        icc_profile: colour profile to embed (e.g. ``ImageData.icc_profile``).

    Returns:
        The path written.

    Raises:
        ImageIOError: unsupported suffix, overwriting the input, alpha for JPEG, or the
            file system refusing; nothing is left behind and an existing file at ``path``
            stays as it was.
        ValueError: bad ``pixels``, ``alpha``, ``bit_depth`` or ``quality``.
    """
    path = Path(path)
    format_name = _FORMATS.get(path.suffix.lower())
    if format_name is None:
        raise ImageIOError(f"{path}: unsupported suffix {path.suffix!r} "
                           f"(use one of {', '.join(SUPPORTED_SUFFIXES)})")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    _check_quality(quality)
    if source is not None and not force and _same_file(path, Path(source)):
        raise ImageIOError(f"{path}: refusing to overwrite the input image "
                           f"(use force=True / --force)")
    if path.is_dir():
        raise ImageIOError(f"{path}: is a directory")

    array = _pixels_hwc(pixels)
    if alpha is not None:
        alpha_array = _as_hwc(alpha, "alpha")
        if alpha_array.shape != array.shape[:2] + (1,):
            raise ValueError(f"alpha must have shape (1, {array.shape[0]}, {array.shape[1]}), "
                             f"got {tuple(np.moveaxis(alpha_array, -1, 0).shape)}")
        if format_name == "JPEG":
            raise ImageIOError(f"{path}: JPEG has no alpha channel (write .png, .tif or .webp)")
        array = np.concatenate([array, alpha_array], axis=-1)
    if format_name not in _SIXTEEN_BIT_FORMATS:
        bit_depth = 8
    values = _quantise(array, bit_depth)
    encoded = _encode(values, format_name, bit_depth, quality, icc_profile)
    _atomic_write(path, encoded)
    return path


def _encode(values: np.ndarray, format_name: str, bit_depth: int, quality: int,
            icc_profile: bytes | None) -> bytes:
    """File bytes for ``(H, W, C)`` integer values (C = 1..4, alpha last)."""
    channels = values.shape[-1]
    if bit_depth == 16 and format_name == "PNG" and channels > 1:
        return _encode_png16(values, icc_profile)
    if bit_depth == 16 and format_name == "TIFF" and channels > 1:
        return _encode_tiff16(values, icc_profile)
    if bit_depth == 16:
        image = Image.fromarray(values[..., 0].astype(np.uint16), mode=None)
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        image = Image.fromarray(values if channels > 1 else values[..., 0], mode=None)
        if image.mode != mode:
            image = image.convert(mode)
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if format_name in ("JPEG", "WEBP"):
        options["quality"] = quality
    if format_name == "TIFF":
        options["compression"] = "tiff_adobe_deflate"
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **options)
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ImageIOError(f"{path}: folder {folder} does not exist")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise ImageIOError(f"{path}: cannot write: {_one_line(error)}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600): keep the mode of the file being
        # replaced, else the usual 0644
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise ImageIOError(f"{path}: cannot write: {_one_line(error)}") from None
        raise


def jpeg_quality_range(text: str) -> tuple[int, int]:
    """``"60-95"`` -> ``(60, 95)``: a range of JPEG qualities as the commands take it.

    Raises:
        ValueError: not ``LO-HI`` with ``1 <= LO <= HI <= 100``.
    """
    lo, _, hi = text.partition("-")
    if not (lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 100):
        raise ValueError(f"a JPEG quality range is LO-HI with 1 <= LO <= HI <= 100; got {text!r}")
    return int(lo), int(hi)


def jpeg_roundtrip(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """What saving as an 8-bit JPEG and reading back does to an image (in memory).

    Args:
        pixels: ``(C, H, W)`` float in [0, 1] (values outside are clipped), C = 1 or 3.
        quality: JPEG quality, 1..100 (Pillow's encoder, 4:2:0 chroma for colour).

    Returns:
        ``(C, H, W)`` float32 in [0, 1]: the decoded image.
    """
    _check_quality(quality)
    values = _quantise(_pixels_hwc(pixels), 8)
    with Image.open(io.BytesIO(_encode(values, "JPEG", 8, quality, None))) as image:
        decoded = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(decoded.reshape(values.shape).copy()).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------

_KERNEL_KEYS = ("kernel", "psf", "k")


def read_kernel(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read a blur kernel (PSF) and validate it with :func:`fastdeblur.psf.from_array`.

    Accepted files:
        * ``.npy``: a 2-D array (no pickles).
        * ``.npz``: its only array, or the one named ``kernel``, ``psf`` or ``k``; pick
          another with ``FILE.npz:NAME`` (e.g. ``levin09.npz:k3``).
        * an image (PNG, TIFF, ...): gray, or colour averaged over its channels; alpha
          ignored.

    Returns:
        ``(kh, kw)`` float64 tensor with odd sides, summing to 1.

    Raises:
        ImageIOError: unreadable file, missing key, or an invalid kernel (one line naming
            the file).
    """
    from fastdeblur.psf import from_array  # psf does not import io: no cycle

    path = Path(path)
    key = None
    if not path.exists() and ":" in path.name:
        name, key = path.name.rsplit(":", 1)
        path = path.with_name(name)
    _check_readable(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                listing = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                if key is None:
                    preferred = [n for n in _KERNEL_KEYS if n in names]
                    if len(names) != 1 and not preferred:
                        raise ImageIOError(f"{path}: holds {len(names)} arrays ({listing}); "
                                           f"choose one as {path.name}:NAME")
                    key = names[0] if len(names) == 1 else preferred[0]
                if key not in names:
                    raise ImageIOError(f"{path}: has no array {key!r} (it holds {listing})")
                array = archive[key]
        else:
            image = read(path)
            array = image.pixels.double().mean(dim=0).numpy()
    except ImageIOError:
        raise
    except (OSError, ValueError, EOFError, zlib.error) as error:
        raise ImageIOError(f"{path}: cannot read a kernel ({_one_line(error)})") from None
    try:
        return from_array(np.asarray(array), dtype=torch.float64)
    except ValueError as error:
        raise ImageIOError(f"{path}: {_one_line(error)}") from None


def write_kernel(path: str | os.PathLike[str], kernel: torch.Tensor | np.ndarray, *,
                 force: bool = False) -> Path:
    """Save a kernel's values as ``.npy`` (float64), atomically.

    Args:
        path: target, suffix ``.npy``.
        kernel: ``(kh, kw)`` tensor or array.
        force: overwrite an existing file (refused otherwise).

    Returns:
        The path written.

    Raises:
        ImageIOError: wrong suffix, existing file without ``force``, or the file system
            refusing.
        ValueError: ``kernel`` is not 2-D.
    """
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ImageIOError(f"{path}: kernels are saved as .npy")
    if path.exists() and not force:
        raise ImageIOError(f"{path}: exists; overwrite with force=True (--force)")
    if path.is_dir():
        raise ImageIOError(f"{path}: is a directory")
    values = (kernel.detach().to("cpu", torch.float64).numpy()
              if isinstance(kernel, torch.Tensor) else np.asarray(kernel, dtype=np.float64))
    if values.ndim != 2:
        raise ValueError(f"kernel must be 2-D (kh, kw), got shape {values.shape}")
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    _atomic_write(path, buffer.getvalue())
    return path
