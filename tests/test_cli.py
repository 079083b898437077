"""The ``fastdeblur`` CLI: version, help, ``blur`` and ``psf``, and every error path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fastdeblur import __version__
from fastdeblur.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "in.png"
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(path)
    return path


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text


def test_version_and_help() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output
    result = invoke("--help")
    assert result.exit_code == 0 and "blur" in result.output and "psf" in result.output


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fastdeblur", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize(
    "options",
    [
        ["--type", "gaussian", "--sigma", "1.5"],
        ["--type", "motion", "--length", "7", "--angle", "30"],
        ["--type", "defocus", "--radius", "2.5"],
    ],
)
def test_blur_models(image: Path, tmp_path: Path, options: list[str]) -> None:
    out = tmp_path / "out.png"
    result = invoke("blur", image, *options, "-o", out, "--save-psf", tmp_path / "k.npy")
    assert result.exit_code == 0, result.output
    before = np.asarray(Image.open(image), np.float64)
    after = np.asarray(Image.open(out), np.float64)
    assert after.shape == before.shape
    # Blur lowers the high-frequency energy.
    assert np.abs(np.diff(after, axis=1)).mean() < np.abs(np.diff(before, axis=1)).mean()
    k = np.load(tmp_path / "k.npy")
    assert k.shape[0] % 2 == 1 and abs(k.sum() - 1) < 1e-6


def test_blur_with_kernel_file_noise_and_seed(image: Path, tmp_path: Path) -> None:
    kernel = tmp_path / "k.npy"
    np.save(kernel, np.ones((5, 5)) / 25)
    outs = []
    for name, seed in (("a.png", 1), ("b.png", 1), ("c.png", 2)):
        out = tmp_path / name
        result = invoke(
            "blur",
            image,
            "--type",
            "kernel",
            "--kernel",
            kernel,
            "--noise",
            "0.05",
            "--seed",
            seed,
            "-o",
            out,
        )
        assert result.exit_code == 0, result.output
        outs.append(np.asarray(Image.open(out)))
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_default_output_name_and_psf_png(image: Path, tmp_path: Path) -> None:
    result = invoke(
        "blur", image, "--type", "gaussian", "--sigma", "1", "--save-psf", tmp_path / "k.png"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "in.blurred.png").exists()
    view = np.asarray(Image.open(tmp_path / "k.png"))
    assert view.ndim == 2 and view.max() == 255


def test_psf_command(tmp_path: Path) -> None:
    out = tmp_path / "psf.png"
    result = invoke(
        "psf", "--type", "motion", "--length", "9", "--angle", "45", "-o", out, "--scale", "8"
    )
    assert result.exit_code == 0, result.output
    view = np.asarray(Image.open(out))
    assert view.shape[0] == view.shape[1] and view.shape[0] % 8 == 0
    result = invoke("psf", "--type", "defocus", "--radius", "3", "-o", tmp_path / "d.npy")
    assert result.exit_code == 0 and abs(np.load(tmp_path / "d.npy").sum() - 1) < 1e-6
    # Existing output: refused without --force.
    assert_one_line_error(
        invoke("psf", "--type", "defocus", "--radius", "3", "-o", tmp_path / "d.npy"), "exists"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--type", "gaussian"], "--sigma"),
        (["--type", "motion", "--angle", "3"], "--length"),
        (["--type", "defocus", "--sigma", "2", "--radius", "2"], "--sigma"),
        (["--type", "kernel"], "--kernel"),
        (["--sigma", "2"], "--type"),
        (["--type", "gaussian", "--sigma", "-1"], "sigma"),
        (["--type", "motion", "--length", "0.5"], "length"),
        (["--type", "gaussian", "--sigma", "1", "--noise", "-0.1"], "--noise"),
    ],
)
def test_blur_bad_options(image: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    out = tmp_path / "out.png"
    assert_one_line_error(invoke("blur", image, *args, "-o", out), fragment)
    assert not out.exists()


def test_blur_bad_files(image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    assert_one_line_error(
        invoke("blur", tmp_path / "missing.png", "--type", "gaussian", "--sigma", "1", "-o", out),
        "missing.png",
    )
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert_one_line_error(
        invoke("blur", empty, "--type", "gaussian", "--sigma", "1", "-o", out), "empty.png"
    )
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert_one_line_error(
        invoke("blur", text, "--type", "gaussian", "--sigma", "1", "-o", out), "notes.png"
    )
    bad_kernel = tmp_path / "k.npy"
    np.save(bad_kernel, np.full((3, 3), np.nan))
    assert_one_line_error(
        invoke("blur", image, "--type", "kernel", "--kernel", bad_kernel, "-o", out), "k"
    )
    assert_one_line_error(
        invoke("blur", image, "--type", "kernel", "--kernel", tmp_path / "nope.npy", "-o", out),
        "nope.npy",
    )
    assert not out.exists()


def test_blur_never_overwrites_input_without_force(image: Path) -> None:
    before = image.read_bytes()
    assert_one_line_error(invoke("blur", image, "--type", "gaussian", "--sigma", "1", "-o", image))
    assert image.read_bytes() == before
    result = invoke("blur", image, "--type", "gaussian", "--sigma", "1", "-o", image, "--force")
    assert result.exit_code == 0 and image.read_bytes() != before


def test_keeps_16_bit_and_alpha(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgba = (rng.random((30, 30, 4)) * 255).astype(np.uint8)
    src = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(src)
    out = tmp_path / "rgba_out.png"
    assert invoke("blur", src, "--type", "gaussian", "--sigma", "1", "-o", out).exit_code == 0
    result = np.asarray(Image.open(out))
    assert result.shape == (30, 30, 4) and np.array_equal(result[..., 3], rgba[..., 3])
    gray16 = (rng.random((30, 30)) * 65535).astype(np.uint16)
    src16 = tmp_path / "g16.png"
    Image.fromarray(gray16).save(src16)
    out16 = tmp_path / "g16_out.png"
    assert invoke("blur", src16, "--type", "gaussian", "--sigma", "1", "-o", out16).exit_code == 0
    assert np.asarray(Image.open(out16)).dtype in (np.uint16, np.int32)
