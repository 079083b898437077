"""NAFNet training: pair dataset, training through the engine, export/load, inference, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from fastdeblur.cli.train_nafnet import add_commands
from fastdeblur.models.nafnet import NAFNet
from fastdeblur.models.pretrained import load_nafnet, nafnet_deblur
from fastdeblur.synth_pairs import BLUR_FAMILIES, DeblurPairDataset
from fastdeblur.train.export import export_safetensors, load_safetensors
from fastdeblur.train.nafnet import (
    NAFNetTrainConfig,
    _EpochPairs,
    build_data,
    charbonnier_loss,
    load_init_weights,
    nafnet_config,
    psnr,
    psnr_loss,
    train_nafnet,
)


def _smooth_images(n: int, size: int = 72, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(n):
        coarse = torch.rand(1, 3, size // 8, size // 8, generator=g)
        images.append(torch.nn.functional.interpolate(coarse, size=(size, size),
                                                      mode="bilinear")[0])
    return images


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sharp")
    for k, im in enumerate(_smooth_images(5, size=72, seed=1)):
        arr = (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr if k % 2 == 0 else arr[..., 0]).save(folder / f"im_{k}.png")
    return folder


def _tiny_config(image_dir: Path, **overrides) -> NAFNetTrainConfig:
    settings = dict(images=[str(image_dir)], val_fraction=0.3, width=4, enc_blocks=[1, 1],
                    middle_blocks=1, patch_size=16, batch_size=2, steps=3, epoch_size=4,
                    lr=1e-3, warmup_steps=1, val_pairs=2, seed=3)
    settings.update(overrides)
    return NAFNetTrainConfig(**settings)


# ---- dataset -----------------------------------------------------------------------------


def test_pairs_are_deterministic_and_in_range() -> None:
    images = _smooth_images(3)
    data = DeblurPairDataset(images, patch_size=16, length=10, seed=5)
    again = DeblurPairDataset(images, patch_size=16, length=10, seed=5)
    for i in (4, 0, 7):  # any order gives the same items
        a, b = data[i], again[i]
        assert torch.equal(a["blurred"], b["blurred"]) and torch.equal(a["sharp"], b["sharp"])
    for i in range(len(BLUR_FAMILIES)):
        item = data[i]
        assert item["family"] == i  # balanced: item i has family i mod 5
        assert item["blurred"].shape == item["sharp"].shape == (3, 16, 16)
        assert item["blurred"].dtype == item["sharp"].dtype == torch.float32
        assert float(item["blurred"].min()) >= 0 and float(item["blurred"].max()) <= 1
        assert float(item["sharp"].min()) >= 0 and float(item["sharp"].max()) <= 1
    other = DeblurPairDataset(images, patch_size=16, length=10, seed=6)
    assert not torch.equal(data[1]["blurred"], other[1]["blurred"])
    with pytest.raises(IndexError):
        data[10]


def test_pairs_blur_and_noise() -> None:
    images = _smooth_images(2)
    clean = DeblurPairDataset(images, patch_size=16, length=5, noise_sigma=0.0, seed=2,
                              families=("motion",))
    item = clean[0]
    assert not torch.allclose(item["blurred"], item["sharp"], atol=1e-3)  # blurred
    # noise-free blur preserves the mean (PSF sums to 1; the patch is cut from inside)
    assert abs(float(item["blurred"].mean() - item["sharp"].mean())) < 0.05
    gray = DeblurPairDataset([images[0][:1]], patch_size=16, length=2, seed=0)
    assert gray[0]["sharp"].shape == (3, 16, 16)


def test_pairs_shake_speed_variation_changes_camera_shake_only() -> None:
    """Dwell-point camera shake is opt-in: other families, and the default, are unchanged."""
    images = _smooth_images(2)
    plain = DeblurPairDataset(images, patch_size=32, length=10, seed=3, noise_sigma=0.0)
    dwell = DeblurPairDataset(images, patch_size=32, length=10, seed=3, noise_sigma=0.0,
                              shake_speed_variation=1.5)
    shake = BLUR_FAMILIES.index("camera_shake")
    for i in range(len(BLUR_FAMILIES)):
        same = torch.equal(plain[i]["blurred"], dwell[i]["blurred"])
        assert same == (i != shake), BLUR_FAMILIES[i]
    with pytest.raises(ValueError, match="shake_speed_variation"):
        DeblurPairDataset(images, shake_speed_variation=-1.0)


def test_pair_dataset_rejects_bad_arguments() -> None:
    images = _smooth_images(1)
    with pytest.raises(ValueError, match="families"):
        DeblurPairDataset(images, families=("wobble",))
    with pytest.raises(ValueError, match="patch_size"):
        DeblurPairDataset(images, patch_size=4)
    with pytest.raises(ValueError, match="noise_sigma"):
        DeblurPairDataset(images, noise_sigma=(0.1, 0.0))
    with pytest.raises(ValueError, match="large enough"):
        DeblurPairDataset(images, patch_size=128, length=1)[0]


def test_losses() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert float(charbonnier_loss(x, x)) == pytest.approx(1e-3)
    y = (x + 0.1).clamp(0, 1)
    assert float(psnr_loss(x, y)) == pytest.approx(-float(psnr(x, y).mean()), abs=1e-3)


def test_config_validation(image_dir: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        _tiny_config(image_dir, patch_size=18)
    with pytest.raises(ValueError, match="loss"):
        _tiny_config(image_dir, loss="l2")
    with pytest.raises(ValueError, match="noise_sigma"):
        _tiny_config(image_dir, noise_sigma=(0.02, 0.01))
    with pytest.raises(ValueError, match="noise_sigma"):
        _tiny_config(image_dir, noise_sigma=(0.0, float("nan")))


def test_noise_sigma_reaches_training_and_validation_pairs(image_dir: Path) -> None:
    """``noise_sigma`` is the noise range of every pair: noise-free pairs differ from noisy ones
    of the same seed in the blurred image only, by the noise."""
    train, val = build_data(_tiny_config(image_dir, noise_sigma=(0, 0)))
    assert train.noise_sigma == val.noise_sigma == (0.0, 0.0)
    assert _tiny_config(image_dir, noise_sigma=0.01).noise_sigma == (0.01, 0.01)
    noisy_train, _ = build_data(_tiny_config(image_dir, noise_sigma=(0.05, 0.05)))
    clean, noisy = train[0], noisy_train[0]
    assert torch.equal(clean["sharp"], noisy["sharp"])
    residual = noisy["blurred"] - clean["blurred"]
    assert 0.03 < float(residual.std()) < 0.06


def test_families_restrict_training_and_validation_pairs(image_dir: Path) -> None:
    """``families`` picks the pairs' blur families; the default keeps every family and the
    pairs of a run without the setting."""
    from fastdeblur.synth_pairs import BLUR_FAMILIES
    from fastdeblur.train.nafnet import build_data

    only = ["camera_shake", "spatially_varying"]
    train, val = build_data(_tiny_config(image_dir, families=only))
    assert train.families == val.families == tuple(only)
    assert {train.families[int(train[i]["family"])] for i in range(6)} == set(only)
    default_train, _ = build_data(_tiny_config(image_dir))
    assert default_train.families == BLUR_FAMILIES
    explicit, _ = build_data(_tiny_config(image_dir, families=list(BLUR_FAMILIES)))
    assert torch.equal(default_train[3]["blurred"], explicit[3]["blurred"])
    for bad in ([], ["camera_shake", "camera_shake"], ["blurry"]):
        with pytest.raises(ValueError, match="families"):
            _tiny_config(image_dir, families=bad)


def test_fresh_pairs_every_epoch(image_dir: Path) -> None:
    """Each epoch serves new pairs (a repeated fixed set over-fits); same pairs on request."""
    cfg = _tiny_config(image_dir, steps=6, epoch_size=4)  # 3 epochs of 4 pairs
    train, _ = build_data(cfg)
    assert len(train) == 12
    view = _EpochPairs(train, cfg.epoch_size)
    assert len(view) == 4
    first = view[1]["blurred"]
    view.set_epoch(2)
    assert torch.equal(view[1]["blurred"], train[9]["blurred"])
    assert not torch.equal(view[1]["blurred"], first)
    with pytest.raises(IndexError):
        view[4]
    same, _ = build_data(_tiny_config(image_dir, steps=6, epoch_size=4, fresh_pairs=False))
    assert len(same) == 4


def test_data_seed_changes_pairs_not_split(image_dir: Path) -> None:
    train_a, val_a = build_data(_tiny_config(image_dir))
    train_b, val_b = build_data(_tiny_config(image_dir, data_seed=11))
    assert not torch.equal(train_a[0]["blurred"], train_b[0]["blurred"])
    assert len(train_a.images) == len(train_b.images)
    for a, b in zip(train_a.images, train_b.images, strict=True):
        assert torch.equal(a, b)  # same training images
    for i in range(len(val_a)):  # same validation pairs
        assert torch.equal(val_a[i]["blurred"], val_b[i]["blurred"])


def test_init_from_exported_weights(image_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(image_dir, steps=2, epoch_size=4)
    export = tmp_path / "first.safetensors"
    train_nafnet(cfg, tmp_path / "first", export=export, progress=False)
    tensors, _ = load_safetensors(export)
    model = NAFNet(**nafnet_config(cfg))
    load_init_weights(model, export, nafnet_config(cfg))
    for name, t in model.state_dict().items():
        assert torch.equal(t, tensors[name]), name
    # continuing from the export: a run with a tiny learning rate stays next to it
    cont = _tiny_config(image_dir, steps=2, epoch_size=4, init=str(export), lr=1e-9,
                        data_seed=5)
    train_nafnet(cont, tmp_path / "cont", progress=False)
    last = torch.load(tmp_path / "cont" / "last.pt", weights_only=False)["model"]
    for name, t in last.items():
        torch.testing.assert_close(t, tensors[name], atol=1e-5, rtol=0, msg=name)
    wider = _tiny_config(image_dir, width=8, init=str(export))
    with pytest.raises(ValueError, match="init"):
        train_nafnet(wider, tmp_path / "wider", progress=False)
    with pytest.raises(ValueError, match="init"):
        _tiny_config(image_dir, init=str(tmp_path / "missing.safetensors"))


# ---- training, export, loading -----------------------------------------------------------


def test_train_export_and_load_round_trip(image_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(image_dir)
    export = tmp_path / "tiny.safetensors"
    result = train_nafnet(cfg, tmp_path / "run", export=export, progress=False,
                          command="fastdeblur train nafnet ...")
    assert result["steps"] == 4  # 3 steps rounded up to whole epochs of 2
    assert np.isfinite(result["best_val_psnr"])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("val_psnr" in rec for rec in log)  # validation each epoch
    assert export.is_file() and export.with_suffix(".md").is_file()
    assert "fastdeblur train nafnet" in export.with_suffix(".md").read_text()

    tensors, meta = load_safetensors(export)
    assert meta["nafnet_config"]["width"] == 4
    model = load_nafnet(export, cache=False)
    assert isinstance(model, NAFNet) and not model.training
    for name, t in model.state_dict().items():
        assert torch.equal(t, tensors[name])
    x = torch.rand(1, 3, 20, 20)
    reference = NAFNet(**meta["nafnet_config"])
    reference.load_state_dict(tensors)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)


def test_resume_with_ema_is_exact(image_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(image_dir, steps=4, epoch_size=4)
    full = train_nafnet(cfg, tmp_path / "full", progress=False)
    train_nafnet(cfg, tmp_path / "split", progress=False, max_steps=3)
    split = train_nafnet(cfg, tmp_path / "split", progress=False, resume=True)
    assert split["steps"] == full["steps"] == 4
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    for key in ("model",):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    for name in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][name], b["ema"]["module"][name]), name
    with pytest.raises(ValueError, match="settings differ"):
        train_nafnet(_tiny_config(image_dir, steps=4, epoch_size=4, lr=2e-3),
                     tmp_path / "split", progress=False, resume=True)


def test_resume_may_change_the_total_steps(image_dir: Path, tmp_path: Path) -> None:
    """A run can be lengthened (or shortened) on resume; other settings must match."""
    cfg = _tiny_config(image_dir, steps=4, epoch_size=4)
    train_nafnet(cfg, tmp_path / "run", progress=False, max_steps=2)
    longer = train_nafnet(_tiny_config(image_dir, steps=8, epoch_size=4), tmp_path / "run",
                          progress=False, resume=True)
    assert longer["steps"] == 8
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log if "val_psnr" in rec] == [0, 1, 2, 3]


def test_resume_of_a_run_from_before_a_setting_existed(image_dir: Path, tmp_path: Path) -> None:
    """A config.json without a later-added setting resumes when that setting is at its default,
    and not when it was changed."""
    cfg = _tiny_config(image_dir, steps=4, epoch_size=4)
    train_nafnet(cfg, tmp_path / "run", progress=False, max_steps=2)
    path = tmp_path / "run" / "config.json"
    stored = json.loads(path.read_text())
    del stored["shake_speed_variation"], stored["families"]
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="shake_speed_variation"):
        changed = _tiny_config(image_dir, steps=4, epoch_size=4)
        changed.shake_speed_variation = 1.0
        train_nafnet(changed, tmp_path / "run", progress=False, resume=True)
    with pytest.raises(ValueError, match="families"):
        changed = _tiny_config(image_dir, steps=4, epoch_size=4, families=["camera_shake"])
        train_nafnet(changed, tmp_path / "run", progress=False, resume=True)
    done = train_nafnet(cfg, tmp_path / "run", progress=False, resume=True)
    assert done["steps"] == 4


def test_load_nafnet_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_nafnet(tmp_path / "missing.safetensors")
    from fastdeblur.train.export import export_safetensors

    bare = export_safetensors({"w": torch.zeros(2)}, tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="nafnet_config"):
        load_nafnet(bare)


# ---- inference ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape, dtype", [((1, 1, 21, 26), torch.float64),
                                          ((2, 3, 17, 19), torch.float32)])
def test_nafnet_deblur_keeps_shape_and_dtype(shape, dtype) -> None:
    torch.manual_seed(0)
    model = NAFNet(3, 4, 1, [1, 1], [1, 1]).eval()
    image = torch.rand(shape, dtype=dtype)
    out = nafnet_deblur(image, model=model)
    assert out.shape == image.shape and out.dtype == dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    tiled = nafnet_deblur(image, model=model, tile=16, overlap=4)
    assert tiled.shape == image.shape


def test_nafnet_deblur_gray_is_channel_mean() -> None:
    model = NAFNet(3, 4, 1, [1], [1]).eval()
    gray = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        expected = model(gray.expand(-1, 3, -1, -1)).mean(1, keepdim=True).clamp(0, 1)
    torch.testing.assert_close(nafnet_deblur(gray, model=model), expected)


def test_nafnet_deblur_rejects_bad_images() -> None:
    model = NAFNet(3, 4, 1, [1], [1])
    with pytest.raises(ValueError, match="channels"):
        nafnet_deblur(torch.rand(1, 2, 8, 8), model=model)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        nafnet_deblur(torch.rand(3, 8, 8), model=model)
    with pytest.raises(ValueError, match="float"):
        nafnet_deblur(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), model=model)


# ---- CLI ---------------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    train_app = typer.Typer()
    add_commands(train_app)
    app.add_typer(train_app, name="train")
    return app


def test_cli_train_nafnet_tiny_run(image_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "w.safetensors"
    args = ["train", "nafnet", "--images", str(image_dir), "--out", str(tmp_path / "run"),
            "--width", "4", "--enc-blocks", "1,1", "--patch-size", "16", "--batch-size", "2",
            "--steps", "2", "--epoch-size", "4", "--val-pairs", "2", "--val-fraction", "0.3",
            "--warmup-steps", "1", "--no-progress", "--export", str(export),
            "--families", "gaussian, camera_shake", "--noise-sigma", "0"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "best validation PSNR" in result.output
    assert export.is_file() and (tmp_path / "run" / "last.pt").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["families"] == ["gaussian", "camera_shake"]
    assert config["noise_sigma"] == [0.0, 0.0]
    assert "gaussian / camera_shake only" in export.with_suffix(".md").read_text()
    assert load_nafnet(export, cache=False).intro.out_channels == 4


@pytest.mark.parametrize("extra, message", [
    (["--export", "w.pt"], "--export"),
    (["--enc-blocks", "a,b"], "--enc-blocks"),
    (["--steps", "2", "--epochs", "1"], "--steps"),
    (["--patch-size", "18"], "multiple"),
    (["--init", "missing.safetensors"], "--init"),
    (["--families", "camera_shake,blurry"], "--families"),
    (["--families", "motion,motion"], "--families"),
    (["--families", ","], "--families"),
    (["--noise-sigma", "0.02,0.01"], "--noise-sigma"),
    (["--noise-sigma", "low"], "--noise-sigma"),
    (["--noise-sigma", "0,2"], "--noise-sigma"),
    (["--noise-sigma", "0,0.01,0.02"], "--noise-sigma"),
])
def test_cli_errors(image_dir: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    args = ["train", "nafnet", "--images", str(image_dir), "--out", str(tmp_path / "run"),
            "--width", "4", "--enc-blocks", "1,1", "--no-progress", *extra]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 1
    assert message in result.output


def test_shipped_weights_load_and_run() -> None:
    from fastdeblur.models.pretrained import WEIGHTS_DIR

    path = WEIGHTS_DIR / "nafnet_deblur.safetensors"
    if not path.is_file():
        pytest.skip("no shipped NAFNet weights in this checkout")
    assert path.stat().st_size <= 20 * 2**20
    assert path.with_suffix(".md").is_file()  # the model card ships beside the weights
    model = load_nafnet()
    assert load_nafnet() is model  # cached
    image = torch.rand(1, 3, 24, 24)
    out = nafnet_deblur(image)
    assert out.shape == image.shape and torch.isfinite(out).all()


# ---- kernel-guided NAFNet: classical results as the input --------------------------------


class _FakeResult:
    def __init__(self, image: torch.Tensor, method: str) -> None:
        self.image, self.method = image, method


def _fake_classical(monkeypatch: pytest.MonkeyPatch, refused: set[int]) -> list[torch.Tensor]:
    """Replace the classical pipeline by a marker (input + 0.25, clamped); the calls whose
    position is in ``refused`` report the blind NAFNet fallback."""
    from fastdeblur.restore import pipeline

    calls: list[torch.Tensor] = []

    def fake(image: torch.Tensor, method: str = "auto") -> _FakeResult:
        assert method == "auto"
        calls.append(image)
        return _FakeResult((image + 0.25).clamp(0, 1),
                           "nafnet" if len(calls) - 1 in refused else "hyperlaplacian")

    monkeypatch.setattr(pipeline, "deblur_with_details", fake)
    return calls


def test_deconvolved_pairs_cache_crop_and_skip(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    from fastdeblur.synth_pairs import DeconvolvedPairDataset

    pairs = DeblurPairDataset(_smooth_images(3), patch_size=32, length=12, seed=5)
    calls = _fake_classical(monkeypatch, refused={1})
    data = DeconvolvedPairDataset(pairs, 4, tmp_path / "cache", crop=16, seed=2)
    assert len(data) == 4 and data.families == pairs.families
    whole = data.deconvolved(0)
    torch.testing.assert_close(whole["classical"], (pairs[0]["blurred"] + 0.25).clamp(0, 1))
    torch.testing.assert_close(whole["blurred"], pairs[0]["blurred"])
    torch.testing.assert_close(whole["sharp"], pairs[0]["sharp"])
    # item 1's first pair is refused (no kernel fits): it takes pair 1 + 4
    item1 = data.deconvolved(1)
    assert int(item1["source"]) == 5 and len(calls) == 3
    torch.testing.assert_close(item1["sharp"], pairs[5]["sharp"])
    # cached in half precision: read back without calling the pipeline again
    again = data.deconvolved(0)
    assert len(calls) == 3
    for key in ("classical", "blurred", "sharp"):
        torch.testing.assert_close(again[key], whole[key], atol=5e-4, rtol=0)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["000000.pt", "000001.pt"]
    # windows: crop-sized, cut from the same place of input and target, new each epoch
    a = data[0]
    assert a["blurred"].shape == (6, 16, 16) and a["sharp"].shape == (3, 16, 16)
    assert a["family"] == pairs[0]["family"]
    # the input is the classical result, then the blurred patch, windowed like the target
    torch.testing.assert_close(a["blurred"][:3], (a["blurred"][3:] + 0.25).clamp(0, 1),
                               atol=5e-4, rtol=0)
    torch.testing.assert_close(data[0]["sharp"], a["sharp"])
    data.set_epoch(1)
    assert not torch.equal(data[0]["sharp"], a["sharp"])
    data.fill(progress=False)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4
    with pytest.raises(IndexError):
        data.deconvolved(4)
    with pytest.raises(ValueError, match="crop"):
        DeconvolvedPairDataset(pairs, 4, tmp_path / "c2", crop=40)


def test_deconvolved_pairs_say_when_no_kernel_fits(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    from fastdeblur.synth_pairs import DeconvolvedPairDataset

    pairs = DeblurPairDataset(_smooth_images(3), patch_size=32, length=8, seed=5)
    _fake_classical(monkeypatch, refused={0, 1})
    data = DeconvolvedPairDataset(pairs, 4, tmp_path / "cache")
    with pytest.raises(ValueError, match="no pair of 8"):
        data.deconvolved(0)
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written


def test_train_on_deconvolved_pairs(monkeypatch: pytest.MonkeyPatch, image_dir: Path,
                                    tmp_path: Path) -> None:
    calls = _fake_classical(monkeypatch, refused=set())
    cfg = _tiny_config(image_dir, input="deconvolved", source_patch=32,
                       pairs_cache=str(tmp_path / "pairs"))
    train, val = build_data(cfg)
    assert train[0]["blurred"].shape == (6, 16, 16)  # windows of the 32-px classical results
    assert val[0]["blurred"].shape == (6, 32, 32)
    result = train_nafnet(cfg, tmp_path / "run", progress=False)
    assert result["steps"] == cfg.epochs * cfg.steps_per_epoch
    assert math.isfinite(result["best_val_psnr"])
    assert len(list((tmp_path / "pairs" / "train").glob("*.pt"))) == 4
    assert len(list((tmp_path / "pairs" / "val").glob("*.pt"))) == 2
    n = len(calls)
    train_nafnet(cfg, tmp_path / "run2", progress=False)  # the cache serves a second run
    assert len(calls) == n
    with pytest.raises(ValueError, match="source_patch"):
        _tiny_config(image_dir, input="deconvolved", source_patch=8)
    with pytest.raises(ValueError, match="input"):
        _tiny_config(image_dir, input="sharp")


def test_cli_fill_pairs(monkeypatch: pytest.MonkeyPatch, image_dir: Path,
                        tmp_path: Path) -> None:
    _fake_classical(monkeypatch, refused=set())
    base = ["train", "nafnet", "--images", str(image_dir), "--out", str(tmp_path / "run"),
            "--width", "4", "--enc-blocks", "1,1", "--patch-size", "16", "--source-patch", "32",
            "--epoch-size", "6", "--val-pairs", "2", "--val-fraction", "0.3", "--no-progress"]
    result = CliRunner().invoke(_app(), [*base, "--input", "deconvolved", "--fill-pairs", "2:4"])
    assert result.exit_code == 0, result.output
    cache = tmp_path / "run" / "pairs"
    assert sorted(p.name for p in (cache / "train").iterdir()) == ["000002.pt", "000003.pt"]
    assert not (cache / "val").exists()  # the process from 0 fills the validation items
    result = CliRunner().invoke(_app(), [*base, "--input", "deconvolved", "--fill-pairs", "0:1"])
    assert result.exit_code == 0 and len(list((cache / "val").iterdir())) == 2
    for extra, message in ((["--fill-pairs", "0:2"], "--input deconvolved"),
                           (["--input", "deconvolved", "--fill-pairs", "3:1"], "START:STOP"),
                           (["--input", "sharp"], "input"),
                           (["--pairs-cache", str(tmp_path / "c")], "--input deconvolved")):
        result = CliRunner().invoke(_app(), [*base, *extra])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_guided_run_starts_from_blind_weights_as_the_identity(image_dir: Path,
                                                              tmp_path: Path) -> None:
    blind_cfg = _tiny_config(image_dir)
    blind = NAFNet(**nafnet_config(blind_cfg))
    for p in blind.parameters():  # beta and gamma start at 0; make every branch count
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path / "blind.safetensors"
    export_safetensors(blind, path, metadata={"nafnet_config": nafnet_config(blind_cfg)})
    guided_cfg = _tiny_config(image_dir, input="deconvolved", pairs_cache=str(tmp_path))
    config = nafnet_config(guided_cfg)
    assert config == {**nafnet_config(blind_cfg), "guide_channels": 3}
    guided = NAFNet(**config)
    load_init_weights(guided, path, config)
    x = torch.rand(2, 6, 16, 16)
    torch.testing.assert_close(guided(x), x[:, :3])  # the classical result, unchanged
    torch.testing.assert_close(guided.intro.weight[:, :3], blind.intro.weight)
    other = {**config, "width": 8}
    with pytest.raises(ValueError, match="the run builds"):
        load_init_weights(NAFNet(**other), path, other)


def test_nafnet_deblur_guide_checks() -> None:
    guided = NAFNet(img_channel=3, width=4, enc_blk_nums=[1], dec_blk_nums=[1],
                    guide_channels=3).eval()
    blind = NAFNet(img_channel=3, width=4, enc_blk_nums=[1], dec_blk_nums=[1]).eval()
    image, guide = torch.rand(1, 1, 12, 10), torch.rand(1, 1, 12, 10)
    out = nafnet_deblur(image, model=guided, guide=guide)
    stacked = torch.cat([image.expand(-1, 3, -1, -1), guide.expand(-1, 3, -1, -1)], 1)
    torch.testing.assert_close(out, guided(stacked).mean(1, keepdim=True).clamp(0, 1))
    with pytest.raises(ValueError, match="needs guide"):
        nafnet_deblur(image, model=guided)
    with pytest.raises(ValueError, match="takes none"):
        nafnet_deblur(image, model=blind, guide=guide)
    with pytest.raises(ValueError, match="shape"):
        nafnet_deblur(image, model=guided, guide=torch.rand(1, 1, 12, 11))
