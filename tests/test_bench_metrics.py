"""Metrics of the blind-deblurring benchmark (``bench/eval_blind.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.eval_blind import ALIGN_BORDER, ALIGN_SHIFT, aligned_ssd, ssd


def test_aligned_ssd_forgives_a_shift_and_nothing_else() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((80, 90))
    shifted = np.roll(ref, (3, -2), (0, 1))  # within ALIGN_SHIFT: the wrapped rows are border
    value, n = aligned_ssd(shifted, ref)
    assert value < 1e-20 < ssd(shifted, ref)
    assert n == (80 - 2 * ALIGN_BORDER) * (90 - 2 * ALIGN_BORDER)
    too_far = np.roll(ref, (ALIGN_SHIFT + 2, 0), (0, 1))
    assert aligned_ssd(too_far, ref)[0] > 1.0
    noisy = ref + 0.01 * rng.standard_normal(ref.shape)
    assert aligned_ssd(noisy, ref)[0] <= ssd(noisy, ref)  # never worse than unaligned
    assert aligned_ssd(noisy[None], ref[None])[0] == aligned_ssd(noisy, ref)[0]  # (C, H, W)


def test_tuning_override_sets_numeric_constants_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.tune_kernel_estimation import override
    from fastdeblur.restore import kernel_estimation as ke

    monkeypatch.setattr(ke, "REFINE_ITERATIONS", ke.REFINE_ITERATIONS)
    monkeypatch.setattr(ke, "REFINE_START", ke.REFINE_START)
    assert override(["REFINE_ITERATIONS=7", "REFINE_START=2e-3"]) == {
        "REFINE_ITERATIONS": 7, "REFINE_START": 2e-3}
    assert ke.REFINE_ITERATIONS == 7 and isinstance(ke.REFINE_ITERATIONS, int)
    for bad in ("NO_SUCH=1", "estimate_kernel=1", "REFINE_START=", "REFINE_START"):
        with pytest.raises(SystemExit, match="not NAME=VALUE"):
            override([bad])
