"""``fastdeblur robustness``: tiny TorchScript / exported models on a tiny ImageFolder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fastdeblur.cli.main import app
from fastdeblur.robustness import ImageFolder

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids the thread-pool overhead, large on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SharpnessNet(torch.nn.Module):
    """Class 1 ("sharp") when the mean squared horizontal difference exceeds 0.01."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).mean(dim=(1, 2, 3))
        return torch.stack([0.01 - e, e - 0.01], dim=1)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """``data/{flat,sharp}/*.png``: flat gray images and random-noise images, 12x12."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name in ("flat", "sharp"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            if name == "sharp":
                pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            else:
                pixels = np.full((12, 12, 3), 90 + 10 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "sharp" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def scripted(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(SharpnessNet()), str(path))
    return path


def run(*args: str | Path):
    return runner.invoke(app, ["robustness", *map(str, args)])


def assert_one_line_error(result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    # the progress bar may precede it; the error itself is the one last line
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert needle in errors[0]
    assert "Traceback" not in result.output


def test_image_folder(folder: Path) -> None:
    data = ImageFolder(folder)
    assert data.classes == ["flat", "sharp"] and len(data) == 6
    image, label = data[4]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32 and label == 1
    assert ImageFolder(folder, gray=True, size=(8, 10))[0][0].shape == (1, 8, 10)


def test_json_report(folder: Path, scripted: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run("--model", scripted, "--data", folder, "--types", "gaussian,defocus",
                 "--strengths", "0,1", "--strengths", "2", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["classes"] == ["flat", "sharp"] and report["n_images"] == 6
    assert report["strengths"] == {"gaussian": [0.0, 1.0, 2.0], "defocus": [0.0, 1.0, 2.0]}
    assert report["accuracy"]["gaussian"][0] == 1.0
    assert report["accuracy"]["gaussian"][-1] == 0.5  # noise blurred at sigma 2 reads as flat
    assert "gaussian" in result.stdout and "AUC" in result.stdout
    # the report serves as the reference of a second run: CE of a model against itself is 1
    again = run("--model", scripted, "--data", folder, "--types", "gaussian",
                "--strengths", "0,1,2", "--reference", out, "--json", tmp_path / "b.json")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b.json").read_text())["ce"] == {"gaussian": 1.0}


@pytest.mark.slow  # torch.export takes several seconds
def test_exported_program(folder: Path, tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(SharpnessNet(), (torch.rand(2, 3, 12, 12),),
                                  dynamic_shapes=({0: batch},))
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    out = tmp_path / "r.json"
    result = run("--model", path, "--data", folder, "--types", "motion", "--strengths", "0,3",
                 "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"]["motion"][0] == 1.0


def test_errors_are_one_line(folder: Path, scripted: Path, tmp_path: Path, monkeypatch) -> None:
    not_a_model = tmp_path / "junk.pt"
    not_a_model.write_bytes(b"not a model")
    assert_one_line_error(run("--model", not_a_model, "--data", folder), "--model")
    assert_one_line_error(run("--model", tmp_path / "missing.pt", "--data", folder),
                          "--model")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run("--model", scripted, "--data", empty), "no class folders")
    (empty / "a").mkdir()
    assert_one_line_error(run("--model", scripted, "--data", empty), "no images")
    assert_one_line_error(run("--model", scripted, "--data", folder, "--types", "fog"),
                          "unknown blur type")
    assert_one_line_error(run("--model", scripted, "--data", folder, "--strengths", "a"),
                          "--strengths")
    rgb_only = tmp_path / "rgb.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3),
                                                        torch.nn.Flatten())), str(rgb_only))
    assert_one_line_error(run("--model", rgb_only, "--data", folder, "--gray"),
                          "model failed")
    monkeypatch.setattr("fastdeblur.robustness.plot.have_matplotlib", lambda: False)
    assert_one_line_error(run("--model", scripted, "--data", folder, "--plot",
                              tmp_path / "p.png"), "fastdeblur[plot]")


def test_deblur_first_without_deblur(folder: Path, scripted: Path) -> None:
    try:
        from fastdeblur import deblur  # noqa: F401
    except ImportError:
        assert_one_line_error(run("--model", scripted, "--data", folder, "--deblur-first"),
                              "fastdeblur.deblur")
    else:
        pytest.skip("fastdeblur.deblur exists")


def test_plot(folder: Path, scripted: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    result = run("--model", scripted, "--data", folder, "--types", "gaussian,motion",
                 "--strengths", "0,1,2", "--plot", out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_images_of_different_sizes(folder: Path, scripted: Path) -> None:
    Image.fromarray(np.zeros((20, 15, 3), dtype=np.uint8)).save(folder / "flat" / "big.png")
    assert_one_line_error(run("--model", scripted, "--data", folder), "--size")
    result = run("--model", scripted, "--data", folder, "--size", "12x12", "--types", "gaussian",
                 "--strengths", "0")
    assert result.exit_code == 0, result.output
