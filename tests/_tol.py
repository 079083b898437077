"""The tolerance table every test uses (DESIGN.md, testing conventions)."""

from __future__ import annotations

import torch

# dtype -> (rtol, atol)
TOL: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}

# Adjoint pairs in fp64: |<Ax, y> - <x, A^T y>| / (|Ax| |y|)
ADJOINT_TOL = 1e-6


def tol(dtype: torch.dtype) -> dict[str, float]:
    """Keyword arguments for ``torch.testing.assert_close`` at ``dtype``."""
    rtol, atol = TOL[dtype]
    return {"rtol": rtol, "atol": atol}


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype | None = None,
    scale: float = 1.0,
) -> None:
    """``assert_close`` at the table's tolerance for ``dtype`` (default: ``expected.dtype``),
    optionally loosened by ``scale`` for ops that sum many terms."""
    rtol, atol = TOL[dtype or expected.dtype]
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), rtol=rtol * scale, atol=atol * scale
    )


def half_precision_close(
    actual: torch.Tensor, reference_same_precision: torch.Tensor, exact: torch.Tensor, atol: float
) -> None:
    """Half-precision rule: error <= 2 x the same-precision PyTorch reference's error
    against fp64, plus ``atol``."""
    err = (actual.double() - exact.double()).abs().max().item()
    ref_err = (reference_same_precision.double() - exact.double()).abs().max().item()
    assert err <= 2 * ref_err + atol, (
        f"error {err:.3g} > 2 x reference error {ref_err:.3g} + {atol}"
    )
