"""Image I/O: round trips, alpha, EXIF orientation, atomic writes, every error path."""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from fastdeblur import io as fio
from fastdeblur.io import ImageIOError

H, W = 24, 37  # odd, non-square: catches transposed axes


def smooth_image(channels: int, seed: int = 0) -> torch.Tensor:
    """A smooth (C, H, W) float64 image in [0, 1] that lossy codecs keep well."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, H, dtype=torch.float64)[:, None]
    x = torch.linspace(0, 1, W, dtype=torch.float64)[None, :]
    phases = torch.rand(channels, generator=g, dtype=torch.float64) * 6
    return torch.stack([0.5 + 0.4 * torch.sin(3 * x + 2 * y + p) for p in phases])


def quantised(values: torch.Tensor, bit_depth: int) -> torch.Tensor:
    q = (1 << bit_depth) - 1
    return torch.round(values.double().clamp(0, 1) * q) / q


LAYOUTS = {"gray": (1, False), "gray_alpha": (1, True), "rgb": (3, False), "rgba": (3, True)}
LOSSLESS = (".png", ".tif", ".tiff")


ROUND_TRIPS = [(suffix, layout, bit_depth)
               for suffix in (".png", ".tif", ".jpg", ".webp") for layout in LAYOUTS
               for bit_depth in (8, 16)
               if not (suffix == ".jpg" and LAYOUTS[layout][1])]  # JPEG: no alpha


@pytest.mark.parametrize(("suffix", "layout", "bit_depth"), ROUND_TRIPS)
def test_round_trip(tmp_path: Path, suffix: str, layout: str, bit_depth: int) -> None:
    channels, has_alpha = LAYOUTS[layout]
    pixels = smooth_image(channels).float()
    alpha = smooth_image(1, seed=5).float() if has_alpha else None
    path = fio.write(tmp_path / f"image{suffix}", pixels, alpha=alpha, bit_depth=bit_depth)
    image = fio.read(path)

    stored_depth = bit_depth if suffix in LOSSLESS else 8
    assert image.bit_depth == stored_depth
    assert image.path == path
    assert image.pixels.dtype == torch.float32
    assert image.format == {".png": "PNG", ".tif": "TIFF", ".jpg": "JPEG", ".webp": "WEBP"}[suffix]
    expected = quantised(pixels, stored_depth)
    if suffix == ".webp" and channels == 1:
        # WebP stores colour only: gray comes back as three equal channels
        assert image.pixels.shape == (3, H, W)
        torch.testing.assert_close(image.pixels[0], image.pixels[1], rtol=0, atol=0.02)
        got = image.pixels[:1]
    else:
        assert image.pixels.shape == (channels, H, W)
        got = image.pixels
    if suffix in LOSSLESS:
        torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-7)
    else:
        assert (got.double() - expected).abs().mean() < 0.01
        assert (got.double() - expected).abs().max() < 0.08
    if has_alpha:
        assert image.alpha is not None and image.alpha.shape == (1, H, W)
        # lossless alpha in every format that has one (WebP keeps alpha losslessly)
        torch.testing.assert_close(image.alpha.double(), quantised(alpha, stored_depth),
                                   rtol=0, atol=1e-7)
    else:
        assert image.alpha is None


def test_alpha_untouched_by_colour(tmp_path: Path) -> None:
    # colour under zero alpha survives (no premultiplication), alpha values exact
    pixels = torch.rand(3, H, W, dtype=torch.float64)
    alpha = torch.zeros(1, H, W, dtype=torch.float64)
    alpha[:, :, ::3] = 1.0
    alpha[:, ::2, 1::3] = 0.5
    for bit_depth in (8, 16):
        path = fio.write(tmp_path / f"a{bit_depth}.png", pixels, alpha=alpha, bit_depth=bit_depth)
        image = fio.read(path)
        torch.testing.assert_close(image.pixels.double(), quantised(pixels, bit_depth),
                                   rtol=0, atol=1e-7)
        torch.testing.assert_close(image.alpha.double(), quantised(alpha, bit_depth),
                                   rtol=0, atol=1e-7)


def test_two_dimensional_pixels_and_numpy(tmp_path: Path) -> None:
    gray = smooth_image(1)[0]
    image = fio.read(fio.write(tmp_path / "g.png", gray))
    assert image.pixels.shape == (1, H, W)
    image = fio.read(fio.write(tmp_path / "n.png", gray.numpy()))
    assert image.pixels.shape == (1, H, W)


def test_values_are_clipped(tmp_path: Path) -> None:
    pixels = torch.full((1, 3, 3), 2.0)
    pixels[0, 0, 0] = -1.0
    image = fio.read(fio.write(tmp_path / "c.png", pixels))
    assert image.pixels[0, 0, 0] == 0 and image.pixels[0, 1, 1] == 1


# ---- EXIF orientation ---------------------------------------------------------------------------

def test_exif_orientation_applied_to_jpeg(tmp_path: Path) -> None:
    # a left half dark, right half bright, stored sideways with orientation 6 (turn 90 cw)
    array = np.zeros((40, 64, 3), np.uint8)
    array[:, 32:] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif.tobytes(), quality=95)
    image = fio.read(path)
    assert image.pixels.shape == (3, 64, 40)  # displayed upright: taller than wide
    # turned clockwise: the bright right half is now at the bottom
    assert image.pixels[:, :24].mean() < 0.1 and image.pixels[:, 40:].mean() > 0.8
    with Image.open(path) as reference:
        expected = np.asarray(ImageOps.exif_transpose(reference), dtype=np.float32) / 255
    np.testing.assert_allclose(np.moveaxis(image.pixels.numpy(), 0, -1), expected, atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_16_bit_path_matches_pillow(orientation: int) -> None:
    array = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = Image.fromarray(array)
    image.info["exif"] = exif.tobytes()
    image.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(fio._apply_orientation(array, orientation), expected)


# ---- 16-bit decoding details --------------------------------------------------------------------

def _png16_with_filters(array: np.ndarray) -> bytes:
    """A 16-bit PNG whose rows cycle through all five filter types (test-local encoder)."""
    height, width, channels = array.shape
    bpp = 2 * channels
    rows = array.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int64)
    out = bytearray()
    previous = np.zeros(rows.shape[1], np.int64)
    for y in range(height):
        kind = y % 5
        line = rows[y]
        left = np.concatenate([np.zeros(bpp, np.int64), line[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int64), previous[:-bpp]])
        if kind == 0:
            filtered = line
        elif kind == 1:
            filtered = line - left
        elif kind == 2:
            filtered = line - previous
        elif kind == 3:
            filtered = line - (left + previous) // 2
        else:
            estimate = left + previous - upper_left
            da, db, dc = abs(estimate - left), abs(estimate - previous), abs(estimate - upper_left)
            predictor = np.where((da <= db) & (da <= dc), left, np.where(db <= dc, previous,
                                                                         upper_left))
            filtered = line - predictor
        out.append(kind)
        out += (filtered % 256).astype(np.uint8).tobytes()
        previous = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    colour_type = {2: 4, 3: 2, 4: 6}[channels]
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png16_decoder_all_filters(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    array = rng.integers(0, 65536, (11, 6, channels)).astype(np.uint16)
    path = tmp_path / "filters.png"
    path.write_bytes(_png16_with_filters(array))
    image = fio.read(path)
    assert image.bit_depth == 16
    colour = array[..., :-1] if channels in (2, 4) else array
    np.testing.assert_array_equal(np.rint(image.pixels.numpy() * 65535).astype(np.uint16),
                                  np.moveaxis(colour, -1, 0))
    if channels in (2, 4):
        np.testing.assert_array_equal(np.rint(image.alpha.numpy()[0] * 65535), array[..., -1])


def test_opencv_interop_16_bit(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 65536, (9, 13, 3)).astype(np.uint16)
    for suffix in (".png", ".tif"):
        # theirs -> ours (libpng writes adaptive filters; libtiff its own layout)
        theirs = tmp_path / f"cv{suffix}"
        assert cv2.imwrite(str(theirs), bgr)
        image = fio.read(theirs)
        assert image.bit_depth == 16
        np.testing.assert_array_equal(np.rint(image.pixels.numpy() * 65535).astype(np.uint16),
                                      np.moveaxis(bgr[..., ::-1], -1, 0))
        # ours -> theirs
        ours = fio.write(tmp_path / f"ours{suffix}", image.pixels, bit_depth=16)
        back = cv2.imread(str(ours), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(back, bgr)


def test_icc_profile_kept(tmp_path: Path) -> None:
    profile = b"not a real profile, carried as bytes" * 3
    for name, bit_depth, channels in (("p8.png", 8, 3), ("p16.png", 16, 3), ("t16.tif", 16, 3),
                                      ("g16.png", 16, 1)):
        path = fio.write(tmp_path / name, smooth_image(channels), bit_depth=bit_depth,
                         icc_profile=profile)
        assert fio.read(path).icc_profile == profile, name


def test_palette_bilevel_and_cmyk_are_converted(tmp_path: Path) -> None:
    palette = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    image = fio.read(tmp_path / "p.png")
    assert image.pixels.shape[0] == 3 and image.alpha is not None and image.alpha[0, 0, 0] == 0
    Image.fromarray(np.eye(5, dtype=bool)).save(tmp_path / "b.png")
    image = fio.read(tmp_path / "b.png")
    assert image.pixels.shape == (1, 5, 5) and image.pixels[0, 2, 2] == 1
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    image = fio.read(tmp_path / "c.jpg")
    assert image.pixels.shape == (3, 3, 4) and image.pixels[0].mean() > 0.9


# ---- atomic writes, refusing to overwrite the input ---------------------------------------------

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    target = tmp_path / "out.png"
    fio.write(target, torch.zeros(1, 4, 4))
    before = target.read_bytes()

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fio.os, "replace", fail)
    with pytest.raises(ImageIOError, match="out.png: cannot write: .*No space left"):
        fio.write(target, torch.ones(1, 4, 4))
    assert target.read_bytes() == before  # the existing output is not half-written
    assert _leftovers(tmp_path) == []


def test_atomic_write_interrupted_encoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    target = tmp_path / "out.tif"
    monkeypatch.setattr(fio.os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        fio.write(target, torch.zeros(3, 4, 4))
    assert not target.exists() and _leftovers(tmp_path) == []


def test_written_file_has_normal_permissions(tmp_path: Path) -> None:
    path = fio.write(tmp_path / "perm.png", torch.zeros(1, 2, 2))
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044  # not the private 0600
    os.chmod(path, 0o640)
    fio.write(path, torch.ones(1, 2, 2))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # a replaced file keeps its mode


def test_refuses_to_overwrite_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = fio.write(tmp_path / "in.png", torch.zeros(1, 4, 4))
    before = source.read_bytes()
    with pytest.raises(ImageIOError, match="in.png: refusing to overwrite the input"):
        fio.write(source, torch.ones(1, 4, 4), source=source)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImageIOError, match="refusing"):  # same file, spelled differently
        fio.write(Path("./in.png"), torch.ones(1, 4, 4),
                  source=tmp_path / "in.png")
    link = tmp_path / "link.png"
    link.symlink_to(source)
    with pytest.raises(ImageIOError, match="refusing"):
        fio.write(link, torch.ones(1, 4, 4), source=source)
    assert source.read_bytes() == before
    fio.write(source, torch.ones(1, 4, 4), source=source, force=True)
    assert fio.read(source).pixels.min() == 1.0
    # another output is fine
    fio.write(tmp_path / "other.png", torch.ones(1, 4, 4), source=source)


# ---- errors -------------------------------------------------------------------------------------

def _assert_one_line(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert "\n" not in message and name in message


def test_read_errors(tmp_path: Path) -> None:
    cases: dict[str, str] = {}
    cases["missing.png"] = "no such file"
    (tmp_path / "folder.png").mkdir()
    cases["folder.png"] = "is a directory"
    (tmp_path / "empty.png").write_bytes(b"")
    cases["empty.png"] = "empty file"
    (tmp_path / "text.png").write_text("this is not an image\nsecond line\n")
    cases["text.png"] = "not an image file"
    good = tmp_path / "good.png"
    fio.write(good, torch.rand(3, 64, 64))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:300])
    cases["cut.png"] = "truncated or corrupt"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
                    ).save(tmp_path / "good.jpg", quality=90)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "good.jpg").read_bytes()[:600])
    cases["cut.jpg"] = "truncated or corrupt"
    good16 = fio.write(tmp_path / "good16.png", torch.rand(3, 32, 32), bit_depth=16)
    (tmp_path / "cut16.png").write_bytes(good16.read_bytes()[:400])
    cases["cut16.png"] = "truncated or corrupt"
    for name, match in cases.items():
        with pytest.raises(ImageIOError, match=match) as error:
            fio.read(tmp_path / name)
        _assert_one_line(error, name)
        assert isinstance(error.value, ValueError)


def test_decompression_bomb_limit(tmp_path: Path) -> None:
    path = fio.write(tmp_path / "big.png", torch.zeros(1, 20, 30))
    with pytest.raises(ImageIOError, match=r"big.png: 30x20 = 600 pixels .*--allow-huge") as e:
        fio.read(path, max_pixels=599)
    _assert_one_line(e, "big.png")
    assert fio.read(path, max_pixels=599, allow_huge=True).pixels.shape == (1, 20, 30)
    assert fio.read(path, max_pixels=600).pixels.shape == (1, 20, 30)
    assert fio.DEFAULT_MAX_PIXELS > 50_000_000
    # a 16-bit TIFF that only our own decoder opens is guarded too
    tiff = fio.write(tmp_path / "ga.tif", torch.zeros(1, 20, 30), alpha=torch.ones(1, 20, 30),
                     bit_depth=16)
    with pytest.raises(ImageIOError, match="over the limit"):
        fio.read(tiff, max_pixels=10)
    assert fio.read(tiff, max_pixels=10, allow_huge=True).alpha is not None


def test_write_errors(tmp_path: Path) -> None:
    pixels = torch.rand(3, 4, 4)
    with pytest.raises(ImageIOError, match=r"x.bmp: unsupported suffix '.bmp'") as e:
        fio.write(tmp_path / "x.bmp", pixels)
    _assert_one_line(e, "x.bmp")
    with pytest.raises(ImageIOError, match="x.jpg: JPEG has no alpha"):
        fio.write(tmp_path / "x.jpg", pixels, alpha=torch.ones(1, 4, 4))
    with pytest.raises(ImageIOError, match="does not exist"):
        fio.write(tmp_path / "nowhere" / "x.png", pixels)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageIOError, match="is a directory"):
        fio.write(tmp_path / "dir.png", pixels)
    with pytest.raises(ValueError, match="bit_depth"):
        fio.write(tmp_path / "x.png", pixels, bit_depth=12)
    with pytest.raises(ValueError, match="quality"):
        fio.write(tmp_path / "x.jpg", pixels, quality=0)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        fio.write(tmp_path / "x.png", torch.rand(4, 4, 4))
    with pytest.raises(ValueError, match=r"pixels must have shape \(C, H, W\)"):
        fio.write(tmp_path / "x.png", torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="pixels must be finite"):
        fio.write(tmp_path / "x.png", torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="float tensor"):
        fio.write(tmp_path / "x.png", torch.zeros(1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="alpha must have shape"):
        fio.write(tmp_path / "x.png", pixels, alpha=torch.ones(1, 3, 4))
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "x.png").exists()


def test_suffix_case_and_jpeg_spelling(tmp_path: Path) -> None:
    for name in ("A.PNG", "b.JPEG", "c.Tiff"):
        assert fio.read(fio.write(tmp_path / name, torch.rand(3, 4, 4))).pixels.shape[0] == 3
    assert set(fio.SUPPORTED_SUFFIXES) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}


# ---- paths --------------------------------------------------------------------------------------

def test_default_output_path() -> None:
    assert fio.default_output_path("dir/photo.jpg") == Path("dir/photo.deblurred.jpg")
    assert fio.default_output_path(Path("a.b.png"), tag="x") == Path("a.b.x.png")
    with pytest.raises(ValueError, match="tag"):
        fio.default_output_path("a.png", tag="../x")


def test_list_images(tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.png", "d.tif"):
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "e.png").write_bytes(b"x")
    single = tmp_path / "single.jpeg"
    single.write_bytes(b"x")
    odd = tmp_path / "odd.raw"
    odd.write_bytes(b"x")
    found = fio.list_images([single, folder, odd, folder / "b.png"])
    assert [p.name for p in found] == ["single.jpeg", "a.JPG", "b.png", "c.webp", "d.tif",
                                       "odd.raw"]
    with pytest.raises(ImageIOError, match="nope: no such file or directory"):
        fio.list_images([tmp_path / "nope"])
    assert fio.list_images([]) == []


# ---- kernels ------------------------------------------------------------------------------------

def test_kernel_round_trip_and_formats(tmp_path: Path) -> None:
    from fastdeblur import psf

    k = psf.motion(7.5, 30.0, dtype=torch.float64)
    path = fio.write_kernel(tmp_path / "k.npy", k)
    torch.testing.assert_close(fio.read_kernel(path), k, rtol=0, atol=1e-15)
    with pytest.raises(ImageIOError, match="k.npy: exists"):
        fio.write_kernel(path, k)
    fio.write_kernel(path, k * 2, force=True)
    with pytest.raises(ImageIOError, match="saved as .npy"):
        fio.write_kernel(tmp_path / "k.txt", k)
    with pytest.raises(ValueError, match="2-D"):
        fio.write_kernel(tmp_path / "k3.npy", torch.ones(3, 3, 3))

    np.savez(tmp_path / "one.npz", anything=np.ones((3, 3)))
    assert fio.read_kernel(tmp_path / "one.npz").sum().item() == pytest.approx(1.0)
    np.savez(tmp_path / "many.npz", k1=np.ones((3, 3)), k2=np.ones((4, 4)))
    with pytest.raises(ImageIOError, match=r"many.npz: holds 2 arrays \(k1, k2\); choose"):
        fio.read_kernel(tmp_path / "many.npz")
    assert fio.read_kernel(f"{tmp_path / 'many.npz'}:k2").shape == (5, 5)  # even side padded
    with pytest.raises(ImageIOError, match="no array 'k9'"):
        fio.read_kernel(f"{tmp_path / 'many.npz'}:k9")

    view = torch.zeros(3, 5, 5)
    view[:, 2, 1:4] = 1.0
    fio.write(tmp_path / "k.png", view)
    from_image = fio.read_kernel(tmp_path / "k.png")
    assert from_image.dtype == torch.float64 and from_image[2, 1:4].sum() == pytest.approx(1.0)

    np.save(tmp_path / "bad.npy", np.zeros((3, 3)))
    with pytest.raises(ImageIOError, match="bad.npy: kernel must not be all zero"):
        fio.read_kernel(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ImageIOError, match="obj.npy: cannot read a kernel"):
        fio.read_kernel(tmp_path / "obj.npy")
    with pytest.raises(ImageIOError, match="missing.npy: no such file"):
        fio.read_kernel(tmp_path / "missing.npy")


def test_read_kernel_shared_levin(shared_data: Path) -> None:
    k = fio.read_kernel(f"{shared_data / 'kernels' / 'levin09.npz'}:k1")
    assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    assert k.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_roundtrip_is_what_a_jpeg_file_holds(tmp_path: Path, channels: int) -> None:
    """In-memory JPEG equals writing the file and reading it back."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(channels, 40, 56, generator=g)
    pixels = torch.nn.functional.avg_pool2d(pixels[None], 3, 1, 1)[0]  # JPEG-friendly
    out = fio.jpeg_roundtrip(pixels, 80)
    assert out.shape == pixels.shape and out.dtype == torch.float32
    on_disk = fio.read(fio.write(tmp_path / "a.jpg", pixels, quality=80)).pixels
    torch.testing.assert_close(out, on_disk, atol=0, rtol=0)
    assert 0 < float((out - pixels).abs().mean()) < 0.05
    assert float((fio.jpeg_roundtrip(pixels, 95) - pixels).abs().mean()) < float(
        (fio.jpeg_roundtrip(pixels, 30) - pixels).abs().mean())
    with pytest.raises(ValueError, match="quality"):
        fio.jpeg_roundtrip(pixels, 0)
    with pytest.raises(ValueError, match="channels"):
        fio.jpeg_roundtrip(torch.rand(2, 8, 8), 90)


def test_jpeg_quality_range() -> None:
    assert fio.jpeg_quality_range("60-95") == (60, 95)
    assert fio.jpeg_quality_range("90-90") == (90, 90)
    for bad in ("95-60", "0-50", "60-101", "x-9", "90", "-5-9", ""):
        with pytest.raises(ValueError, match="LO-HI"):
            fio.jpeg_quality_range(bad)
