"""Blind blur estimation: patches, features, classifier/RBM, the estimate API and its map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdeblur.estimate import features as feats
from fastdeblur.estimate.classifier import RBM, BlurClassifier, BlurCNN, dihedral, pretrain
from fastdeblur.estimate.estimator import BlurEstimate, BlurEstimator
from fastdeblur.estimate.patches import (
    estimate_noise,
    extract_patches,
    texture_energy,
    texture_threshold,
)


def _textured(h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth random texture in [0, 1], (1, h, w)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, h // 4, w // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
    return x[0].clamp(0, 1)


def tiny_estimator(with_grnn: bool = True) -> BlurEstimator:
    """A random (untrained) tiny classifier and GRNNs fitted on random data."""
    torch.manual_seed(0)
    model = BlurClassifier((1024, 16, 8, 6, 3))
    model.set_normalisation(torch.randn(64, 1024))
    grnns = {}
    if with_grnn:
        grnn_mod = pytest.importorskip("fastdeblur.estimate.grnn")
        g = torch.Generator().manual_seed(1)
        for t, p in (("gaussian", 1), ("motion", 3), ("defocus", 1)):
            x = torch.randn(40, feats.PROFILE_DIM, generator=g)
            y = torch.rand(40, p, generator=g) * 4 + 1
            grnns[t] = grnn_mod.GRNN().fit(x, y)
    return BlurEstimator(model, grnns, "profile")


# ---- patches --------------------------------------------------------------------------------


def test_extract_patches_grid_is_centred() -> None:
    img = torch.arange(70 * 100, dtype=torch.float32).reshape(1, 70, 100)
    patches, corners = extract_patches(img, 32, 32)
    assert patches.shape == (2 * 3, 32, 32)
    assert corners[0].tolist() == [3, 2] and corners[-1].tolist() == [35, 66]
    r, c = corners[4].tolist()
    assert torch.equal(patches[4], img[0, r : r + 32, c : c + 32])
    p16, _ = extract_patches(img[0], 32, 16)
    assert p16.shape[0] == 3 * 5


@pytest.mark.parametrize("shape", [(32, 32), (33, 47), (100, 131), (257, 64)])
@pytest.mark.parametrize("stride", [1, 3, 16, 32, 40])
def test_extract_patches_are_the_image_at_their_corners(
    shape: tuple[int, int], stride: int
) -> None:
    img = torch.rand(shape, generator=torch.Generator().manual_seed(stride))
    patches, corners = extract_patches(img, 32, stride)
    rows = range(0, shape[0] - 32 + 1, stride)
    cols = range(0, shape[1] - 32 + 1, stride)
    assert len(patches) == len(corners) == len(rows) * len(cols)
    for patch, (r, c) in zip(patches, corners.tolist(), strict=True):
        assert torch.equal(patch, img[r : r + 32, c : c + 32])
    # the margin the stride leaves is split between both sides
    assert int(corners[:, 0].min()) == (shape[0] - 32 - rows[-1]) // 2
    assert int(corners[:, 1].min()) == (shape[1] - 32 - cols[-1]) // 2


def test_extract_patches_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 32x32"):
        extract_patches(torch.zeros(20, 50))
    with pytest.raises(ValueError, match="one channel"):
        extract_patches(torch.zeros(3, 40, 40))
    with pytest.raises(ValueError, match="stride"):
        extract_patches(torch.zeros(40, 40), 32, -1)


def test_texture_threshold_separates_noise_from_texture() -> None:
    g = torch.Generator().manual_seed(0)
    noise_only = 0.5 + 0.02 * torch.randn(50, 32, 32, generator=g)
    assert (texture_energy(noise_only) < texture_threshold(0.02)).all()
    flat = torch.full((3, 32, 32), 0.3)
    assert (texture_energy(flat) < texture_threshold(0.0)).all()
    tex = extract_patches(_textured(), 32)[0]
    assert (texture_energy(tex) > texture_threshold(0.02)).all()


def test_estimate_noise() -> None:
    from fastdeblur.convolution import blur

    img = _textured(128, 128)
    k = torch.ones(5, 5) / 25
    for sigma in (0.005, 0.02):
        y = blur(img, k, noise_sigma=sigma, seed=1)
        assert estimate_noise(y) == pytest.approx(sigma, rel=0.2)


# ---- features -------------------------------------------------------------------------------


def test_spectrum_input_is_contrast_and_offset_invariant() -> None:
    p = extract_patches(_textured(), 32)[0][:4]
    a = feats.classifier_input(p, "spectrum")
    b = feats.classifier_input(0.5 * p + 0.2, "spectrum")
    # equal up to the tiny ε inside the log, which matters only in near-empty frequency bins
    assert (a - b).abs().mean() < 1e-3 and (a - b).abs().max() < 0.2
    assert a.shape == (4, 1024)
    r = feats.classifier_input(p, "raw")
    torch.testing.assert_close(r.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="input kind"):
        feats.classifier_input(p, "wavelet")


def test_profile_features_see_the_motion_direction() -> None:
    """Horizontal motion removes horizontal frequencies: the cos 2φ moment is negative; for
    vertical motion it is positive."""
    from fastdeblur.convolution import blur

    img = _textured(160, 160, seed=3)
    horizontal = torch.zeros(15, 15)
    horizontal[7, :] = 1 / 15
    out = []
    for k in (horizontal, horizontal.T.contiguous()):
        patches = extract_patches(blur(img, k)[0], 32)[0]
        f = feats.profile_features(patches).mean(0)
        out.append(f[feats.N_RINGS : 2 * feats.N_RINGS].sum())
    assert out[0] < 0 < out[1]


def test_encode_decode_params_round_trip() -> None:
    for t, params in (
        ("gaussian", {"sigma": 2.5}),
        ("motion", {"length": 9.0, "angle": 170.0}),
        ("defocus", {"radius": 4.0}),
    ):
        y = torch.tensor([feats.encode_params(t, params)])
        back = feats.decode_params(t, y)
        for name, v in params.items():
            assert float(back[name][0]) == pytest.approx(v, abs=1e-4)
    # 0° and 180° are the same motion
    a = feats.encode_params("motion", {"length": 5, "angle": 0.0})
    b = feats.encode_params("motion", {"length": 5, "angle": 180.0})
    assert a == pytest.approx(b)


# ---- classifier and RBM ---------------------------------------------------------------------


def test_classifier_shapes_and_hidden_layers() -> None:
    model = BlurClassifier()
    assert [m.out_features for m in model.linears] == [500, 30, 10, 3]
    x = torch.randn(5, 1024)
    assert model(x).shape == (5, 3)
    assert model.hidden(x, depth=2).shape == (5, 30)
    with pytest.raises(ValueError, match="layers"):
        BlurClassifier((1024,))


def test_cnn_classifier_is_exposure_and_contrast_invariant() -> None:
    torch.manual_seed(0)
    model = BlurCNN(width=4).eval()
    patches = torch.stack([_textured(32, 32, seed=s)[0] for s in range(6)])
    model.set_normalisation(patches.flatten(1))
    x = patches.flatten(1)
    logits = model(x)
    assert logits.shape == (6, 3)
    # a darker, lower-contrast exposure of the same patches gives the same verdict
    torch.testing.assert_close(model(0.5 * x + 0.2), logits, atol=2e-2, rtol=0)


def test_dihedral_turns_and_mirrors_whole_patches() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1024, generator=g)
    y = dihedral(x, torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    pats, outs = x.view(8, 32, 32), y.view(8, 32, 32)
    for p, o in zip(pats, outs, strict=True):
        images = [torch.rot90(q, k) for q in (p, p.flip(-1)) for k in range(4)]
        assert any(torch.equal(o, im) for im in images)
    assert not torch.equal(y, dihedral(x, torch.Generator().manual_seed(4))) or torch.equal(
        y, x
    )


def test_cnn_classifier_saves_loads_and_estimates(tmp_path) -> None:
    from fastdeblur.train import export_safetensors

    torch.manual_seed(0)
    model = BlurCNN(width=4)
    model.set_normalisation(torch.rand(64, 1024))
    path = tmp_path / "blur_classifier.safetensors"
    export_safetensors(model, path, metadata={"arch": "cnn", "width": 4, "input_kind": "patch"})
    loaded = BlurEstimator.load_classifier(path)
    x = torch.rand(3, 1024)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    result = BlurEstimator(loaded).estimate(_textured(96, 96), params=False)
    assert result.blur_type in ("gaussian", "motion", "defocus")
    with pytest.raises(ValueError, match="paper"):
        BlurEstimator(loaded, grnn_feature="hidden")


def test_rbm_cd_loss_and_pretraining_copy_weights() -> None:
    rbm = RBM(8, 4, gaussian=True, k=2)
    v = torch.randn(10, 8)
    loss = rbm(v)
    loss.backward()
    assert torch.isfinite(loss) and rbm.weight.grad is not None
    assert RBM(8, 4, gaussian=False).gibbs(torch.rand(3, 8).round()).shape == (3, 8)

    model = BlurClassifier((12, 6, 4, 3))
    x = torch.randn(40, 12)
    model.set_normalisation(x)
    before = model.linears[0].weight.clone()
    records = pretrain(model, x, epochs=1, batch_size=10, progress=False)
    assert len(records) == 2 and not torch.equal(before, model.linears[0].weight)


# ---- estimate API ---------------------------------------------------------------------------


def test_estimate_result_and_map() -> None:
    est = tiny_estimator()
    img = _textured(100, 130)
    result = est.estimate(img)
    assert isinstance(result, BlurEstimate)
    assert result.blur_type in ("gaussian", "motion", "defocus")
    assert (
        set(result.params)
        == {"gaussian": {"sigma"}, "motion": {"length", "angle"}, "defocus": {"radius"}}[
            result.blur_type
        ]
    )
    assert 0 <= result.confidence <= 1
    m = result.map
    assert m.grid == (3, 4) and m.corners.shape == (12, 2) and m.probs.shape == (12, 3)
    assert m.textured.all()
    torch.testing.assert_close(m.probs.sum(1), torch.ones(12))
    assert ((m.blur_type >= 0) & (m.blur_type < 3)).all()
    for i, k in enumerate(m.blur_type.tolist()):
        name = ("sigma", "length", "radius")[k]
        assert not math.isnan(float(m.params[name][i]))
    assert sum(result.probs.values()) == pytest.approx(1, abs=1e-5)
    assert est.classify(img) == result.blur_type


def test_image_level_grnn_gives_the_verdict_parameters() -> None:
    """With image-level GRNNs, the verdict's parameters come from them (here: constant)."""
    grnn_mod = pytest.importorskip("fastdeblur.estimate.grnn")
    est = tiny_estimator()
    x = torch.randn(20, feats.PROFILE_DIM)
    est.image_grnns = {
        "gaussian": grnn_mod.GRNN(sigma=1.0).fit(x, torch.full((20, 1), 2.5)),
        "motion": grnn_mod.GRNN(sigma=1.0).fit(x, torch.tensor([[12.0, 0.0, 1.0]]).repeat(20, 1)),
        "defocus": grnn_mod.GRNN(sigma=1.0).fit(x, torch.full((20, 1), 4.0)),
    }
    result = est.estimate(_textured(96, 96))
    # (the motion angle comes from the patches, not from the image-level GRNN)
    expected = {"gaussian": {"sigma": 2.5}, "motion": {"length": 12.0}, "defocus": {"radius": 4.0}}
    for name, value in expected[result.blur_type].items():
        assert result.params[name] == pytest.approx(value, abs=1e-3)


def test_estimate_accepts_numpy_and_rgb() -> None:
    est = tiny_estimator(with_grnn=False)
    gray = _textured(64, 96)
    rgb = gray.expand(3, -1, -1)
    arr8 = (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    arr16 = (rgb.permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    a = est.estimate(rgb, params=False)
    for other in (arr8, arr16, arr8[..., 0], gray[0]):
        b = est.estimate(other, params=False)
        assert b.blur_type == a.blur_type
        torch.testing.assert_close(b.map.probs, a.map.probs, atol=2e-2, rtol=0)
    assert a.params == {}


def test_estimate_flat_image_has_low_confidence() -> None:
    est = tiny_estimator()
    result = est.estimate(torch.full((1, 64, 64), 0.5))
    assert result.confidence < 0.35
    assert any("textured" in w for w in result.warnings)
    assert not result.map.textured.any()


def test_estimate_bad_input() -> None:
    est = tiny_estimator(with_grnn=False)
    with pytest.raises(ValueError, match="at least 32x32"):
        est.estimate(torch.rand(1, 16, 64))
    with pytest.raises(TypeError, match="torch.Tensor or a numpy"):
        est.estimate([[0.0]])
    with pytest.raises(ValueError, match="one image"):
        est.estimate(torch.rand(2, 1, 64, 64))
    with pytest.raises(RuntimeError, match="no GRNN regressors"):
        est.estimate(_textured())


def test_large_image_is_sampled_not_exhausted() -> None:
    est = tiny_estimator(with_grnn=False)
    result = est.estimate(_textured(600, 800), params=False, max_patches=100)
    assert len(result.map.corners) <= 100


def test_overlay_draws_every_type() -> None:
    from fastdeblur.estimate.overlay import render_map

    est = tiny_estimator()
    img = _textured(96, 128)
    result = est.estimate(img)
    m = result.map
    m.blur_type[:] = torch.tensor([0, 1, 2] * 4)
    m.params["angle"][:] = 30.0
    m.params["length"][:] = 12.0
    picture = render_map(img, m)
    assert picture.size == (128, 96) and picture.mode == "RGB"
    arr = np.asarray(picture)
    assert arr[..., 0].max() == 255  # the white motion line


# ---- shipped weights ------------------------------------------------------------------------


def _shipped() -> BlurEstimator:
    from fastdeblur.estimate.estimator import CLASSIFIER_FILE, GRNN_MANIFEST, WEIGHTS_DIR

    if not (WEIGHTS_DIR / CLASSIFIER_FILE).is_file() or not (WEIGHTS_DIR / GRNN_MANIFEST).is_file():
        pytest.skip("no shipped estimator weights")
    pytest.importorskip("fastdeblur.estimate.grnn")
    return BlurEstimator.load()


@pytest.mark.parametrize(
    ("blur_type", "params"),
    [("motion", {"length": 21.0, "angle": 60.0}), ("defocus", {"radius": 6.0})],
)
def test_shipped_weights_on_an_unseen_photo(blur_type: str, params: dict) -> None:
    """skimage's astronaut is in the validation split of the shipped weights."""
    import skimage.data

    from fastdeblur import psf
    from fastdeblur.convolution import blur

    est = _shipped()
    img = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255
    y = blur(img, psf.from_params(blur_type, params), noise_sigma=0.005, seed=0)
    result = est.estimate(y)
    assert result.blur_type == blur_type
    key = "length" if blur_type == "motion" else "radius"
    assert abs(result.params[key] - params[key]) < 0.1 * params[key]
    assert result.likelihood is not None  # the shipped configuration has the likelihood stage


def test_likelihood_stage_gives_the_verdict_and_parameters() -> None:
    """With a combiner, the type, confidence and parameters come from the likelihood fit."""
    from fastdeblur import psf
    from fastdeblur.convolution import convolve
    from fastdeblur.estimate.likelihood import Combiner

    est = tiny_estimator()
    est.combiner = Combiner(w_patch=0.0, w_nll=1.0, conf_a=1.0, conf_b=0.0)
    img = _textured(160, 192, seed=3)
    y = convolve(img[None], psf.defocus(3.0), boundary="reflect")[0]
    result = est.estimate(y)
    assert result.likelihood is not None and set(result.likelihood) == {
        "gaussian", "motion", "defocus"
    }
    assert result.params == result.likelihood[result.blur_type]["params"]
    assert 0 <= result.confidence <= 1
    assert sum(result.probs.values()) == pytest.approx(1, abs=1e-5)
    assert sum(result.patch_probs.values()) == pytest.approx(1, abs=1e-5)
    # the paper's configuration has no likelihood stage
    est.combiner = None
    assert est.estimate(y).likelihood is None
