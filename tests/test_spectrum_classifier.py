"""The image-level spectrum classifier: its input, its data, its training command, and how the
estimator and the combiner use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fastdeblur.estimate import likelihood as lk
from fastdeblur.estimate.data import combiner_split, synth_spectra
from fastdeblur.estimate.estimator import (
    COMPRESSED_NOISE_FLOOR,
    LIKELIHOOD_FILE,
    SPECTRUM_CLASSIFIER_FILE,
    WEIGHTS_DIR,
    BlurEstimator,
)
from fastdeblur.estimate.spectrum import SpectrumCNN, mirror_spectrum
from fastdeblur.synth import load_images

runner = CliRunner()


def _power(x: torch.Tensor) -> torch.Tensor:
    z = torch.view_as_real(torch.fft.rfft2(x))
    return z[..., 0] ** 2 + z[..., 1] ** 2


def test_mirror_spectrum_is_the_spectrum_of_the_mirrored_image() -> None:
    x = torch.rand(2, 16, 16, dtype=torch.float64)
    # index n -> -n (mod N) along x: the exact mirror on the periodic grid
    mirrored = torch.roll(x.flip(-1), 1, dims=-1)
    torch.testing.assert_close(mirror_spectrum(_power(x)), _power(mirrored))
    torch.testing.assert_close(mirror_spectrum(mirror_spectrum(_power(x))), _power(x))


def test_spectrum_cnn_input_and_output_shapes() -> None:
    model = SpectrumCNN(width=4, tile=32).eval()
    power = torch.rand(3, 32, 17) + 1e-3
    x = model.inputs(power, torch.tensor([0.0, 0.01, 0.02]))
    assert x.shape == (3, 4, 32, 17)
    assert torch.isfinite(x).all()
    # the shape channel ignores exposure and contrast: power scaled by a constant
    torch.testing.assert_close(
        model.inputs(power * 7.0, torch.zeros(3))[:, 0], model.inputs(power, torch.zeros(3))[:, 0]
    )
    assert model(power, torch.zeros(3)).shape == (3, 3)
    with pytest.raises(ValueError, match="spectra"):
        model(torch.rand(3, 32, 32), torch.zeros(3))


def test_synth_spectra_shapes_labels_and_clean_fraction() -> None:
    images = [im for im in load_images(None, gray=True) if min(im.shape[-2:]) >= 420][:2]
    data = synth_spectra(images, 10, seed=3, clean_fraction=0.3)
    assert data["power"].shape == (10, 128, 65)
    assert data["labels"].tolist()[:7] == [0, 1, 2, 0, 1, 2, 0]
    assert bool((data["noise"][7:] == 0).all()) and bool((data["noise"][:7] > 0).all())
    assert torch.isfinite(data["power"]).all() and bool((data["power"] >= 0).all())
    again = synth_spectra(images, 10, seed=3, clean_fraction=0.3)
    torch.testing.assert_close(again["power"], data["power"])
    with pytest.raises(ValueError, match="side of at least"):
        synth_spectra([torch.rand(1, 200, 200)], 3)


def test_combiner_split_is_by_image_and_disjoint() -> None:
    images = [torch.full((1, 8, 8), float(i)) for i in range(20)]
    names = [f"im{i}" for i in range(20)]
    spec, comb, split = combiner_split(images, names)
    assert len(comb) == 4 and len(spec) == 16
    assert not set(split["spectrum"]) & set(split["combiner"])
    assert {float(im[0, 0, 0]) for im in comb} == {int(n[2:]) for n in split["combiner"]}


def test_combiner_weighs_the_spectrum_classifier() -> None:
    """Patches and likelihood uninformative, the spectrum classifier right: the fitted
    combiner leans on it, and without its probabilities it refuses to score."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    probs = torch.full((90, 3), 1 / 3, dtype=torch.float64)
    excess = torch.rand(90, 3, generator=g, dtype=torch.float64)
    spec = torch.full((90, 3), 0.2, dtype=torch.float64)
    spec[torch.arange(90), labels] = 0.6
    comb = lk.Combiner.fit(probs, excess, labels, spec_probs=spec)
    assert comb.w_spec > 0
    assert bool((comb.scores(probs, excess, spec).argmax(1) == labels).all())
    with pytest.raises(ValueError, match="spec_probs"):
        comb.scores(probs, excess)
    again = lk.Combiner.from_dict(comb.to_dict())
    assert again.w_spec == comb.w_spec
    old = {k: v for k, v in comb.to_dict().items() if k != "w_spec"}
    assert lk.Combiner.from_dict(old).w_spec == 0.0
    assert lk.Combiner.fit(probs, excess, labels).w_spec == 0.0


def test_estimator_needs_the_spectrum_classifier_its_combiner_weighs() -> None:
    est = BlurEstimator.load()
    combiner = lk.Combiner(w_spec=1.0)
    with pytest.raises(ValueError, match="spectrum_classifier"):
        BlurEstimator(est.classifier, est.grnns, combiner=combiner)


def test_shipped_estimator_uses_the_spectrum_classifier() -> None:
    info = json.loads((WEIGHTS_DIR / LIKELIHOOD_FILE).read_text())
    if not info.get("uses_spectrum_classifier"):
        pytest.skip("the shipped combiner does not weigh the spectrum classifier")
    est = BlurEstimator.load()
    assert isinstance(est.spectrum_classifier, SpectrumCNN)
    image = load_images(None, gray=True)[0][:, :256, :256]
    from fastdeblur import psf
    from fastdeblur.convolution import convolve

    kernel = psf.from_params("defocus", {"radius": 4.0}, dtype=torch.float32)
    y = convolve(image[None], kernel, boundary="reflect")[0]
    r = est.estimate(y)
    assert r.spectrum_probs is not None
    # the likelihood fit's spectrum is the one the classifier would compute itself
    fit = lk.fit_likelihood(y[0], 0.0)
    torch.testing.assert_close(
        est.spectrum_probs(y[0], 0.0, fit.spectrum), est.spectrum_probs(y[0], 0.0)
    )
    assert abs(sum(r.spectrum_probs.values()) - 1) < 1e-5
    # smaller than one tile: the verdict goes on without it
    small = est.estimate(y[:, :100, :100])
    assert small.spectrum_probs is None and small.blur_type in ("gaussian", "motion", "defocus")


def test_load_spectrum_classifier_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fastdeblur train spectrum"):
        BlurEstimator.load_spectrum_classifier(tmp_path / SPECTRUM_CLASSIFIER_FILE)
    with pytest.raises(ValueError, match="not a spectrum classifier"):
        BlurEstimator.load_spectrum_classifier(WEIGHTS_DIR / "blur_classifier.safetensors")


def _app():
    import typer

    from fastdeblur.cli import classify as classify_cli
    from fastdeblur.cli import train as train_cli

    app = typer.Typer()
    classify_cli.register(app)
    train_cli.register(app)
    return app


@pytest.mark.slow
def test_train_spectrum_tiny(tmp_path: Path) -> None:
    out = tmp_path / "w"
    r = runner.invoke(
        _app(),
        ["train", "spectrum", "--output", str(out), "--crops", "9", "--val-crops", "6",
         "--epochs", "1", "--width", "4", "--checkpoints", str(tmp_path / "ck")],
    )
    assert r.exit_code == 0, r.output
    assert (out / SPECTRUM_CLASSIFIER_FILE).is_file()
    card = (out / SPECTRUM_CLASSIFIER_FILE).with_suffix(".md").read_text()
    assert "val_accuracy" in card and "SpectrumCNN width 4" in card
    model = BlurEstimator.load_spectrum_classifier(out / SPECTRUM_CLASSIFIER_FILE)
    assert model.width == 4
    assert (tmp_path / "ck" / "last.pt").is_file()


def test_train_spectrum_rejects_bad_options(tmp_path: Path) -> None:
    r = runner.invoke(_app(), ["train", "spectrum", "--epochs", "0", "--output", str(tmp_path)])
    assert r.exit_code == 1 and "--epochs" in r.output
    r = runner.invoke(_app(), ["train", "spectrum", "--crops", "1", "--output", str(tmp_path)])
    assert r.exit_code == 1 and "--crops" in r.output
    r = runner.invoke(
        _app(), ["train", "spectrum", "--images", str(tmp_path / "none"), "--output", str(tmp_path)]
    )
    assert r.exit_code == 1 and "not a folder" in r.output


def test_compressed_images_without_a_compressed_combiner_leave_the_classifier_out() -> None:
    info = json.loads((WEIGHTS_DIR / LIKELIHOOD_FILE).read_text())
    if not info.get("uses_spectrum_classifier"):
        pytest.skip("the shipped combiner does not weigh the spectrum classifier")
    est = BlurEstimator.load()
    est.compressed_combiner = None
    plain = lk.Combiner.from_dict(info["combiner_without_spectrum"])
    assert est.plain_combiner == plain and plain.w_spec == 0
    from fastdeblur import psf
    from fastdeblur.convolution import convolve

    image = load_images(None, gray=True)[0][:, :200, :200]
    kernel = psf.from_params("motion", {"length": 9.0, "angle": 30.0}, dtype=torch.float32)
    y = convolve(image[None], kernel, boundary="reflect")[0]
    r = est.estimate(y, compressed=True)
    assert r.spectrum_probs is None
    # the verdict is the plain combiner's posterior of the same patches and likelihood
    lik_fit = lk.fit_likelihood(y[0], max(r.noise_sigma, COMPRESSED_NOISE_FLOOR))
    patch = torch.tensor([r.patch_probs[t] for t in ("gaussian", "motion", "defocus")])
    expected = plain.posterior(patch, lik_fit.excess())
    torch.testing.assert_close(torch.tensor(list(r.probs.values()), dtype=torch.float64),
                               expected, atol=1e-5, rtol=0)
    assert est.estimate(y).spectrum_probs is not None


def test_deblur_and_classify_pass_compressed_on(tmp_path: Path, monkeypatch) -> None:
    """``deblur_with_details(compressed=True)`` and ``fastdeblur classify`` on a JPEG reach the
    estimator as ``compressed=True``; PNGs as False."""
    import numpy as np
    from PIL import Image

    from fastdeblur.restore import pipeline

    seen: list[bool] = []
    real = BlurEstimator.estimate

    def spy(self, image, **kwargs):
        seen.append(bool(kwargs.get("compressed", False)))
        return real(self, image, **kwargs)

    monkeypatch.setattr(BlurEstimator, "estimate", spy)
    y = torch.rand(1, 96, 96)
    pipeline.deblur_with_details(y, compressed=True, blind_kernel="parametric")
    pipeline.deblur_with_details(y, blind_kernel="parametric")
    assert seen == [True, False]
    app = _app()  # with the train group beside it, "classify" is a subcommand
    pixels = (np.random.default_rng(0).random((80, 80)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(pixels).save(tmp_path / "b.png")
    seen.clear()
    r = runner.invoke(app, ["classify", str(tmp_path / "a.jpg"), str(tmp_path / "b.png"),
                            "--json"])
    assert r.exit_code == 0, r.output
    assert seen == [True, False]


def test_synth_spectra_jpeg_compresses_every_crop() -> None:
    images = [im for im in load_images(None, gray=True) if min(im.shape[-2:]) >= 420][:2]
    plain = synth_spectra(images, 6, seed=3)
    jpeg = synth_spectra(images, 6, seed=3, jpeg_quality=(60, 70))
    assert jpeg["labels"].tolist() == plain["labels"].tolist()
    assert jpeg["params"] == plain["params"]
    # JPEG quantises the noise's high frequencies away (and, on a noise-free crop, adds its
    # own 8-bit and block errors above the numerical zero)
    top = (slice(None), slice(48, 80), slice(48, None))
    high_jpeg, high_plain = jpeg["power"][top].mean((1, 2)), plain["power"][top].mean((1, 2))
    noisy = plain["noise"] > 0
    assert bool(noisy.any()) and bool((~noisy).any())
    assert bool((high_jpeg[noisy] < high_plain[noisy]).all())
    assert bool((high_jpeg[~noisy] > high_plain[~noisy]).all())
    torch.testing.assert_close(synth_spectra(images, 6, seed=3, jpeg_quality=(60, 70))["power"],
                               jpeg["power"])
    with pytest.raises(ValueError, match="jpeg_quality"):
        synth_spectra(images, 3, jpeg_quality=(90, 80))


def _tiny_spectrum_cnn(seed: int) -> SpectrumCNN:
    torch.manual_seed(seed)
    return SpectrumCNN(width=4).eval()


def test_compressed_images_use_the_jpeg_classifier_and_combiner() -> None:
    """With a compressed combiner and a JPEG spectrum classifier, ``compressed=True`` takes the
    verdict from them; uncompressed images keep the main pair."""
    from fastdeblur import psf
    from fastdeblur.convolution import convolve

    est = BlurEstimator.load()
    main_spec, jpeg_spec = _tiny_spectrum_cnn(0), _tiny_spectrum_cnn(1)
    main = lk.Combiner(w_spec=1.0)
    compressed = lk.Combiner(w_patch=0.5, w_spec=2.0)
    mixed = BlurEstimator(est.classifier, est.grnns, combiner=main, spectrum_classifier=main_spec,
                          compressed_combiner=compressed, jpeg_spectrum_classifier=jpeg_spec)
    image = load_images(None, gray=True)[0][:, :200, :200]
    kernel = psf.from_params("defocus", {"radius": 3.0}, dtype=torch.float32)
    y = convolve(image[None], kernel, boundary="reflect")[0]
    r = mixed.estimate(y, compressed=True)
    # compressed: the likelihood assumes at least COMPRESSED_NOISE_FLOOR (its excess and its
    # parameters are those of that fit)
    lik_fit = lk.fit_likelihood(y[0], max(r.noise_sigma, COMPRESSED_NOISE_FLOOR))
    assert r.params == lik_fit.fits[r.blur_type].params
    expected_spec = mixed.spectrum_probs(y[0], r.noise_sigma, compressed=True)
    torch.testing.assert_close(torch.tensor(list(r.spectrum_probs.values())), expected_spec)
    patch = torch.tensor([r.patch_probs[t] for t in ("gaussian", "motion", "defocus")])
    torch.testing.assert_close(
        torch.tensor(list(r.probs.values()), dtype=torch.float64),
        compressed.posterior(patch, lik_fit.excess(), expected_spec), atol=1e-5, rtol=0)
    clean = mixed.estimate(y)
    torch.testing.assert_close(torch.tensor(list(clean.spectrum_probs.values())),
                               mixed.spectrum_probs(y[0], clean.noise_sigma))
    assert not torch.allclose(expected_spec, mixed.spectrum_probs(y[0], r.noise_sigma))
    with pytest.raises(ValueError, match="jpeg_spectrum_classifier"):
        BlurEstimator(est.classifier, est.grnns, combiner=main, spectrum_classifier=main_spec,
                      compressed_combiner=compressed)


@pytest.mark.slow
def test_train_spectrum_jpeg_tiny(tmp_path: Path) -> None:
    from fastdeblur.estimate.estimator import SPECTRUM_CLASSIFIER_JPEG_FILE

    out = tmp_path / "w"
    r = runner.invoke(
        _app(),
        ["train", "spectrum", "--output", str(out), "--crops", "6", "--val-crops", "3",
         "--epochs", "1", "--width", "4", "--jpeg-quality", "70-90"],
    )
    assert r.exit_code == 0, r.output
    assert (out / SPECTRUM_CLASSIFIER_JPEG_FILE).is_file()
    assert not (out / SPECTRUM_CLASSIFIER_FILE).exists()
    card = (out / SPECTRUM_CLASSIFIER_JPEG_FILE).with_suffix(".md").read_text()
    assert "JPEG" in card
    for bad in ("90-70", "x-90", "0-50", "95"):
        r = runner.invoke(_app(), ["train", "spectrum", "--jpeg-quality", bad,
                                   "--output", str(out)])
        assert r.exit_code == 1 and "--jpeg-quality" in r.output, bad


def test_shipped_compressed_verdict_uses_the_jpeg_classifier() -> None:
    """The shipped weights judge JPEGs with their own combiner and the spectrum classifier
    trained on JPEG crops; the two classifiers differ."""
    from fastdeblur import psf
    from fastdeblur.convolution import convolve
    from fastdeblur.io import jpeg_roundtrip

    info = json.loads((WEIGHTS_DIR / LIKELIHOOD_FILE).read_text())
    if "combiner_compressed" not in info:
        pytest.skip("the shipped weights have no verdict for compressed images")
    est = BlurEstimator.load()
    assert est.compressed_combiner == lk.Combiner.from_dict(info["combiner_compressed"])
    if est.compressed_combiner.w_spec == 0:
        pytest.skip("the shipped compressed verdict does not weigh a spectrum classifier")
    assert isinstance(est.jpeg_spectrum_classifier, SpectrumCNN)
    image = load_images(None, gray=True)[0][:, :256, :256]
    kernel = psf.from_params("motion", {"length": 15.0, "angle": 60.0}, dtype=torch.float32)
    y = jpeg_roundtrip(convolve(image[None], kernel, boundary="reflect")[0], 85)
    r = est.estimate(y, compressed=True)
    q = est.spectrum_probs(y[0], r.noise_sigma, compressed=True)
    torch.testing.assert_close(torch.tensor(list(r.spectrum_probs.values())), q)
    assert not torch.allclose(q, est.spectrum_probs(y[0], r.noise_sigma))
    patch = torch.tensor([r.patch_probs[t] for t in ("gaussian", "motion", "defocus")])
    lik_fit = lk.fit_likelihood(y[0], max(r.noise_sigma, COMPRESSED_NOISE_FLOOR))
    torch.testing.assert_close(
        torch.tensor(list(r.probs.values()), dtype=torch.float64),
        est.compressed_combiner.posterior(patch, lik_fit.excess(), q), atol=1e-5, rtol=0)


def test_axis_ratio_tells_a_streak_from_a_path() -> None:
    from fastdeblur import psf
    from fastdeblur.estimate.data import SHAKE_MIN_AXIS_RATIO, axis_ratio, shake_kernel

    streak = psf.from_params("motion", {"length": 21.0, "angle": 35.0}, dtype=torch.float32)
    disk = psf.from_params("defocus", {"radius": 6.0}, dtype=torch.float32)
    assert axis_ratio(streak) < 0.1
    assert axis_ratio(disk) > 0.95
    sizes = set()
    for s in range(12):
        k = shake_kernel(torch.Generator().manual_seed(s))
        assert axis_ratio(k) >= SHAKE_MIN_AXIS_RATIO
        assert abs(float(k.sum()) - 1) < 1e-5 and 11 <= k.shape[-1] <= 31
        sizes.add(k.shape[-1])
    assert len(sizes) > 3
    torch.testing.assert_close(shake_kernel(torch.Generator().manual_seed(4)),
                               shake_kernel(torch.Generator().manual_seed(4)))


def test_synth_spectra_shake_crops_are_the_fourth_class() -> None:
    images = [im for im in load_images(None, gray=True) if min(im.shape[-2:]) >= 420][:2]
    data = synth_spectra(images, 6, shake=5, seed=3, clean_fraction=0.4)
    assert data["power"].shape == (11, 128, 65)
    assert data["labels"].tolist() == [0, 1, 2, 0, 0, 1, 3, 3, 3, 3, 3]
    # the shake crops get the same share of noise-free crops
    assert (data["noise"][6:] == 0).tolist() == [False, False, False, True, True]
    assert torch.isfinite(data["power"]).all()
    alone = synth_spectra(images, 0, shake=5, seed=3, clean_fraction=0.4)
    assert alone["labels"].tolist() == [3] * 5 and alone["params"] == data["params"][6:]
    with pytest.raises(ValueError, match="shake"):
        synth_spectra(images, 3, shake=-1)


def test_estimate_reads_the_shake_class() -> None:
    """A spectrum classifier with a camera-shake class: the verdict takes its family
    probabilities given that a family is the blur, the estimate reports the shake probability
    and its confidence is multiplied by one minus it."""
    from fastdeblur import psf
    from fastdeblur.convolution import convolve

    est = BlurEstimator.load()
    torch.manual_seed(0)
    four = SpectrumCNN(width=4, classes=4).eval()
    with torch.no_grad():
        four.head[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 3.0]))  # leans to shake
    three = SpectrumCNN(width=4).eval()
    with torch.no_grad():
        three.load_state_dict({k: v[:3] if k.startswith("head.4") else v
                               for k, v in four.state_dict().items()})
    comb = lk.Combiner(w_spec=1.0)
    with_shake = BlurEstimator(est.classifier, est.grnns, combiner=comb,
                               spectrum_classifier=four)
    without = BlurEstimator(est.classifier, est.grnns, combiner=comb, spectrum_classifier=three)
    image = load_images(None, gray=True)[0][:, :200, :200]
    kernel = psf.from_params("defocus", {"radius": 3.0}, dtype=torch.float32)
    y = convolve(image[None], kernel, boundary="reflect")[0]
    r, r3 = with_shake.estimate(y), without.estimate(y)
    out = with_shake.spectrum_outputs(y[0], r.noise_sigma)
    assert out.shape == (4,)
    assert r.shake_probability == pytest.approx(float(out[3]))
    assert r3.shake_probability is None
    # the first three logits are the same network's: same family probabilities
    torch.testing.assert_close(torch.tensor(list(r.spectrum_probs.values())),
                               torch.tensor(list(r3.spectrum_probs.values())))
    assert r.blur_type == r3.blur_type
    assert r.confidence == pytest.approx(r3.confidence * (1 - r.shake_probability), rel=1e-5)
    assert r.shake_probability > 0.5 and any("camera shake" in w for w in r.warnings)
    assert r.to_dict()["shake_probability"] == round(r.shake_probability, 4)
    assert "shake_probability" not in r3.to_dict()
    with pytest.raises(ValueError, match="classes"):
        SpectrumCNN(width=4, classes=2)


@pytest.mark.slow
def test_train_spectrum_with_shake_crops_tiny(tmp_path: Path) -> None:
    out = tmp_path / "w"
    r = runner.invoke(
        _app(),
        ["train", "spectrum", "--output", str(out), "--crops", "6", "--val-crops", "3",
         "--epochs", "2", "--width", "4", "--shake-crops", "4", "--batch-size", "4"],
    )
    # the learning-rate schedule counts the shake crops' batches too (3 a epoch, not 2)
    assert r.exit_code == 0, r.output
    model = BlurEstimator.load_spectrum_classifier(out / SPECTRUM_CLASSIFIER_FILE)
    assert model.classes == 4
    card = (out / SPECTRUM_CLASSIFIER_FILE).with_suffix(".md").read_text()
    assert "camera shake" in card and "head 64-4" in card
    r = runner.invoke(_app(), ["train", "spectrum", "--shake-crops", "-1",
                               "--output", str(out)])
    assert r.exit_code == 1 and "--shake-crops" in r.output


def test_classify_json_reports_the_shake_probability(tmp_path: Path) -> None:
    """With the shipped weights (a shake class in the spectrum classifier), ``classify --json``
    adds the camera-shake probability to the issue's four keys."""
    import numpy as np
    from PIL import Image

    if BlurEstimator.load().spectrum_classifier.classes != 4:
        pytest.skip("the shipped spectrum classifier has no camera-shake class")
    from fastdeblur import psf
    from fastdeblur.convolution import convolve

    image = load_images(None, gray=True)[0][:, :256, :256]
    kernel = psf.from_params("gaussian", {"sigma": 2.0}, dtype=torch.float32)
    y = convolve(image[None], kernel, boundary="reflect")[0, 0].clamp(0, 1)
    Image.fromarray((y.numpy() * 255).round().astype(np.uint8)).save(tmp_path / "g.png")
    r = runner.invoke(_app(), ["classify", str(tmp_path / "g.png"), "--json"])
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout.strip())
    assert set(record) == {"file", "blur_type", "params", "confidence", "shake_probability"}
    assert 0 <= record["shake_probability"] < 0.5
