"""``fastdeblur deblur``: outputs, overwriting, kernel files, folders, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fastdeblur.cli.main import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    k = np.zeros((5, 5))
    k[2, :] = 1.0
    path = tmp_path / "k.npy"
    np.save(path, k / k.sum())
    return path


def _image(path: Path, channels: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (36, 44, channels) if channels > 1 else (36, 44)
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(path)
    return path


def test_writes_default_output_beside_input(tmp_path: Path, kernel: Path) -> None:
    src = _image(tmp_path / "photo.png")
    result = invoke("deblur", src, "--kernel", kernel, "--method", "wiener")
    assert result.exit_code == 0, result.output
    out = tmp_path / "photo.deblurred.png"
    with Image.open(out) as im:
        assert im.size == (44, 36) and im.mode == "RGB"


def test_output_option_gray_and_save_kernel(tmp_path: Path, kernel: Path) -> None:
    src = _image(tmp_path / "gray.png", channels=1)
    out = tmp_path / "result.png"
    saved = tmp_path / "used.npy"
    result = invoke("deblur", src, "-o", out, "--kernel", kernel, "--save-kernel", saved,
                    "--tile", "24")
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (44, 36)
    np.testing.assert_allclose(np.load(saved), np.load(kernel))


def test_refuses_to_overwrite_without_force(tmp_path: Path, kernel: Path) -> None:
    src = _image(tmp_path / "a.png")
    assert invoke("deblur", src, "--kernel", kernel).exit_code == 0
    result = invoke("deblur", src, "--kernel", kernel)
    assert_one_line_error(result, "exists", "--force")
    assert invoke("deblur", src, "--kernel", kernel, "--force").exit_code == 0
    # and never over the input itself
    result = invoke("deblur", src, "-o", src, "--kernel", kernel)
    assert_one_line_error(result)


def test_bad_kernel_file_is_one_line_error(tmp_path: Path) -> None:
    src = _image(tmp_path / "a.png")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file")
    assert_one_line_error(invoke("deblur", src, "--kernel", bad), "bad.npy")
    negative = tmp_path / "neg.npy"
    np.save(negative, -np.ones((3, 3)))
    assert_one_line_error(invoke("deblur", src, "--kernel", negative), "neg.npy")
    missing = tmp_path / "missing.npy"
    assert_one_line_error(invoke("deblur", src, "--kernel", missing), "missing.npy")
    assert not (tmp_path / "a.deblurred.png").exists()


def test_folder_input_with_output_folder(tmp_path: Path, kernel: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(3):
        _image(folder / f"im{n}.png", seed=n)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = invoke("deblur", folder, "-o", out, "--kernel", kernel, "--method", "hyperlaplacian")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        f"im{n}.deblurred.png" for n in range(3)
    ]


def test_image_kernel_file_and_bad_options(tmp_path: Path) -> None:
    src = _image(tmp_path / "a.png")
    k = np.zeros((7, 7), np.uint8)
    k[3, 1:6] = 255
    Image.fromarray(k).save(tmp_path / "k.png")
    assert invoke("deblur", src, "--kernel", tmp_path / "k.png", "-m", "rl").exit_code == 0
    assert_one_line_error(invoke("deblur", src, "--kernel", tmp_path / "k.png", "--tile", "4"),
                          "--tile")
    result = invoke("deblur", tmp_path / "nope.png", "--kernel", tmp_path / "k.png")
    assert_one_line_error(result, "nope.png")


def test_without_kernel_needs_estimation(tmp_path: Path) -> None:
    from fastdeblur.restore.pipeline import estimation_available

    if estimation_available():
        pytest.skip("blur estimation is installed")
    src = _image(tmp_path / "a.png")
    assert_one_line_error(invoke("deblur", src), "kernel")


def test_prints_what_ran_and_why_in_one_line(tmp_path: Path, kernel: Path) -> None:
    src = _image(tmp_path / "photo.png")
    result = invoke("deblur", src, "--kernel", kernel)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "wrote" in line]
    assert len(lines) == 1 and "(hyperlaplacian, given kernel)" in lines[0], result.output


def test_nafnet_method_says_so(tmp_path: Path) -> None:
    src = _image(tmp_path / "photo.png")
    result = invoke("deblur", src, "--method", "nafnet")
    assert result.exit_code == 0, result.output
    assert "nafnet was asked for" in result.output


def test_save_kernel_when_no_kernel_ran(tmp_path: Path) -> None:
    src = _image(tmp_path / "photo.png")
    saved = tmp_path / "k.npy"
    result = invoke("deblur", src, "--method", "nafnet", "--save-kernel", saved)
    assert result.exit_code == 0, result.output
    assert "no kernel to save" in result.output and not saved.exists()


def test_jpeg_inputs_get_the_noise_floor(tmp_path: Path, kernel: Path) -> None:
    # a smooth image: its estimated noise is far below the JPEG floor
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = 0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 9.0)
    pixels = (np.repeat(smooth[..., None], 3, axis=2) * 255).astype(np.uint8)
    for suffix, floored in ((".jpg", True), (".png", False)):
        src = tmp_path / f"smooth{suffix}"
        Image.fromarray(pixels).save(src, **({"quality": 95} if floored else {}))
        result = invoke("deblur", src, "--kernel", kernel, "--force")
        assert result.exit_code == 0, result.output
        assert ("noise level raised to 0.005" in result.output) == floored, result.output


def test_blind_kernel_options(tmp_path: Path, kernel: Path) -> None:
    from fastdeblur.restore.pipeline import estimation_available

    src = _image(tmp_path / "photo.png")
    for size in ("30", "3", "103"):
        assert_one_line_error(invoke("deblur", src, "--shake-size", size), "--shake-size")
    assert_one_line_error(invoke("deblur", src, "--kernel", kernel, "--blind-kernel", "shake"),
                          "only without --kernel")
    assert invoke("deblur", src, "--blind-kernel", "nonsense").exit_code != 0
    if not estimation_available():
        pytest.skip("blur estimation is not installed")
    saved = tmp_path / "used.npy"
    result = invoke("deblur", src, "-o", tmp_path / "out.png", "--method", "hyperlaplacian",
                    "--blind-kernel", "shake", "--shake-size", "9", "--save-kernel", saved)
    assert result.exit_code == 0, result.output
    assert "free-form kernel (9 px" in result.output
    assert np.load(saved).shape == (9, 9)
