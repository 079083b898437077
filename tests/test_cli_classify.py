"""``fastdeblur classify`` and ``fastdeblur train`` with tiny models (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from fastdeblur.cli import classify as classify_cli
from fastdeblur.cli import train as train_cli
from fastdeblur.estimate import features as feats
from fastdeblur.estimate.classifier import BlurClassifier
from fastdeblur.estimate.estimator import CLASSIFIER_FILE, GRNN_MANIFEST
from fastdeblur.estimate.grnn import GRNN
from fastdeblur.train import export_safetensors

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    classify_cli.register(app)
    train_cli.register(app)
    return app


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    folder = tmp_path / "weights"
    torch.manual_seed(0)
    model = BlurClassifier((1024, 16, 8, 6, 3))
    model.set_normalisation(torch.randn(64, 1024))
    export_safetensors(
        model,
        folder / CLASSIFIER_FILE,
        metadata={"layers": [1024, 16, 8, 6, 3], "input_kind": "spectrum"},
    )
    g = torch.Generator().manual_seed(1)
    files = {}
    for t, p in (("gaussian", 1), ("motion", 3), ("defocus", 1)):
        grnn = GRNN().fit(
            torch.randn(30, feats.PROFILE_DIM, generator=g), torch.rand(30, p, generator=g) * 3 + 1
        )
        grnn.save(folder / f"g_{t}.safetensors")
        files[t] = f"g_{t}.safetensors"
    (folder / GRNN_MANIFEST).write_text(json.dumps({"feature": "profile", "files": files}))
    return folder


def _image(path: Path, mode: str = "RGB", size: tuple[int, int] = (96, 64)) -> Path:
    g = np.random.default_rng(0)
    small = g.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize(size, Image.BICUBIC)
    im.convert(mode).save(path)
    return path


def test_classify_json(tmp_path: Path, tiny_weights: Path) -> None:
    a = _image(tmp_path / "a.png")
    b = _image(tmp_path / "b.png", mode="L")
    result = runner.invoke(
        _app(), ["classify", str(a), str(b), "--json", "--weights", str(tiny_weights)]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(s) for s in result.stdout.strip().splitlines()]
    assert [r["file"] for r in lines] == [str(a), str(b)]
    for r in lines:
        assert set(r) == {"file", "blur_type", "params", "confidence"}
        assert r["blur_type"] in ("gaussian", "motion", "defocus")
        assert 0 <= r["confidence"] <= 1


def test_classify_text_and_map(tmp_path: Path, tiny_weights: Path) -> None:
    a = _image(tmp_path / "a.png")
    out = tmp_path / "map.png"
    result = runner.invoke(
        _app(), ["classify", str(a), "--map", str(out), "--weights", str(tiny_weights)]
    )
    assert result.exit_code == 0, result.output
    assert "confidence" in result.stdout and out.is_file()
    with Image.open(out) as im:
        assert im.size == (96, 64) and im.mode == "RGB"
    # several images: one map each
    b = _image(tmp_path / "b.png")
    result = runner.invoke(
        _app(),
        [
            "classify",
            str(a),
            str(b),
            "--map",
            str(out),
            "--weights",
            str(tiny_weights),
            "--types-only",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "map.a.png").is_file() and (tmp_path / "map.b.png").is_file()


def test_classify_errors_are_one_line(tmp_path: Path, tiny_weights: Path) -> None:
    app = _app()
    missing = runner.invoke(
        app, ["classify", str(tmp_path / "nope.png"), "--weights", str(tiny_weights)]
    )
    assert missing.exit_code == 1 and "no such file" in missing.output
    assert "Traceback" not in missing.output
    small = _image(tmp_path / "s.png", size=(20, 20))
    r = runner.invoke(app, ["classify", str(small), "--weights", str(tiny_weights)])
    assert r.exit_code == 1 and "at least 32x32" in r.output
    r = runner.invoke(app, ["classify", str(small), "--weights", str(tmp_path)])
    assert r.exit_code == 1 and "no blur classifier" in r.output
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = runner.invoke(app, ["classify", str(bad), "--weights", str(tiny_weights)])
    assert r.exit_code == 1 and "not an image file" in r.output


def test_classify_map_is_never_overwritten_without_force(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """An existing map is refused before any image is read (and kept byte for byte); --force
    replaces it; a map suffix that is not an image format is refused."""
    a = _image(tmp_path / "a.png")
    out = tmp_path / "map.png"
    out.write_bytes(b"keep me")
    args = ["classify", str(a), "--map", str(out), "--weights", str(tiny_weights)]
    r = runner.invoke(_app(), args)
    assert r.exit_code == 1 and "exists; overwrite with --force" in r.output
    assert out.read_bytes() == b"keep me" and "Traceback" not in r.output
    r = runner.invoke(_app(), [*args, "--force"])
    assert r.exit_code == 0, r.output
    with Image.open(out) as im:
        assert im.size == (96, 64)
    r = runner.invoke(_app(), ["classify", str(a), "--map", str(tmp_path / "m.txt"),
                               "--weights", str(tiny_weights)])
    assert r.exit_code == 1 and "the map is an image" in r.output
    assert not (tmp_path / "m.txt").exists()


@pytest.mark.slow
def test_train_classifier_and_grnn_tiny(tmp_path: Path) -> None:
    """Both training commands end to end on a few patches of the skimage photos."""
    app = _app()
    out = tmp_path / "w"
    r = runner.invoke(
        app,
        [
            "train",
            "classifier",
            "--output",
            str(out),
            "--patches",
            "30",
            "--val-patches",
            "15",
            "--epochs",
            "1",
            "--width",
            "4",
            "--checkpoints",
            str(tmp_path / "ck"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (out / CLASSIFIER_FILE).is_file() and (out / "blur_classifier.md").is_file()
    card = (out / "blur_classifier.md").read_text()
    assert "skimage.data" in card and "val_patch_accuracy" in card
    assert "BlurCNN width 4:" in card and "4×4×16" in card
    assert (tmp_path / "ck" / "finetune" / "last.pt").is_file()
    r = runner.invoke(
        app,
        ["train", "classifier", "--arch", "paper", "--output", str(out), "--patches", "30"]
        + ["--val-patches", "15", "--epochs", "1", "--pretrain-epochs", "1"],
    )
    assert r.exit_code == 0, r.output
    assert (out / "blur_classifier_paper.safetensors").is_file()
    assert "1024-500-30-10-3" in (out / "blur_classifier_paper.md").read_text()
    r = runner.invoke(
        app,
        [
            "train",
            "grnn",
            "--weights",
            str(out),
            "--patches",
            "30",
            "--val-patches",
            "15",
            "--windows",
            "9",
            "--val-windows",
            "6",
        ],
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / GRNN_MANIFEST).read_text())
    assert len(manifest["image_files"]) == 3
    for name in [*manifest["files"].values(), *manifest["image_files"].values()]:
        assert (out / name).is_file() and (out / name).with_suffix(".md").is_file()
    img = _image(tmp_path / "x.png")
    r = runner.invoke(app, ["classify", str(img), "--json", "--weights", str(out)])
    assert r.exit_code == 0, r.output


def test_train_rejects_bad_options(tmp_path: Path) -> None:
    r = runner.invoke(
        _app(),
        ["train", "classifier", "--images", str(tmp_path / "none"), "--output", str(tmp_path)],
    )
    assert r.exit_code == 1 and "not a folder" in r.output
    r = runner.invoke(_app(), ["train", "classifier", "--patches", "1", "--output", str(tmp_path)])
    assert r.exit_code == 1 and "--patches" in r.output
    r = runner.invoke(_app(), ["train", "classifier", "--input", "raw", "--output", str(tmp_path)])
    assert r.exit_code == 1 and "--arch paper" in r.output
    for flags in (["--pretrain"], ["--no-pretrain"], ["--pretrain-epochs", "2"]):
        r = runner.invoke(_app(), ["train", "classifier", *flags, "--output", str(tmp_path)])
        assert r.exit_code == 1 and "--arch paper" in r.output, r.output


class _StoppedBeforeTrainingError(Exception):
    pass


@pytest.mark.parametrize(("flags", "epochs"), [([], 20), (["--arch", "paper"], 8),
                                               (["--epochs", "3"], 3)])
def test_train_classifier_epochs_default_per_arch(
    flags: list[str], epochs: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--epochs`` each architecture trains as long as its shipped weights did."""
    from fastdeblur.estimate import training

    seen: dict[str, int] = {}

    def fake_fit(train, val, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen["epochs"] = kwargs["epochs"]
        raise _StoppedBeforeTrainingError

    monkeypatch.setattr(training, "patch_sets", lambda *a, **k: (None, None, {}))
    monkeypatch.setattr(training, "fit_classifier", fake_fit)
    r = runner.invoke(_app(), ["train", "classifier", *flags, "--output", str(tmp_path)])
    assert isinstance(r.exception, _StoppedBeforeTrainingError), r.output
    assert seen["epochs"] == epochs
    r = runner.invoke(_app(), ["train", "classifier", "--epochs", "0", "--output", str(tmp_path)])
    assert r.exit_code == 1 and "--epochs" in r.output


def test_train_classifier_cnn_width(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--width`` builds a CNN of that width and records it in the weights; the paper
    network has no such option."""
    from fastdeblur.estimate import training
    from fastdeblur.estimate.classifier import BlurCNN
    from fastdeblur.estimate.estimator import BlurEstimator

    with pytest.raises(ValueError, match="width"):
        training.fit_classifier({}, {}, width=0)
    seen: dict[str, int] = {}

    def fake_fit(train, val, **kwargs):  # noqa: ANN001, ANN003, ANN202
        model = BlurCNN(kwargs["width"])
        seen["width"] = model.width
        return model, {"val_patch_accuracy": 0.5}

    names = {"train": ["a.png"], "val": ["b.png"]}
    monkeypatch.setattr(training, "patch_sets", lambda *a, **k: (None, None, names))
    monkeypatch.setattr(training, "fit_classifier", fake_fit)
    r = runner.invoke(_app(), ["train", "classifier", "--width", "8", "--output", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert seen["width"] == 8
    loaded = BlurEstimator.load_classifier(tmp_path / CLASSIFIER_FILE)
    assert isinstance(loaded, BlurCNN) and loaded.width == 8
    assert "BlurCNN width 8" in (tmp_path / CLASSIFIER_FILE).with_suffix(".md").read_text()
    for flags in (["--arch", "paper", "--width", "8"], ["--width", "0"]):
        r = runner.invoke(_app(), ["train", "classifier", *flags, "--output", str(tmp_path)])
        assert r.exit_code == 1 and "--width" in r.output, r.output
