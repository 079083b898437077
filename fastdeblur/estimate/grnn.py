"""Generalised regression neural network (GRNN, Specht 1991) on the fused GRNN op.

A GRNN predicts ``y(x) = sum_i Y_i exp(-|x - X_i|^2 / 2 sigma^2) / sum_i exp(...)``: a
kernel-weighted mean of the training targets. Here it regresses blur parameters (Gaussian
sigma, motion length/angle, defocus radius) from patch features, one GRNN per blur type.

How :class:`GRNN` works:

* **Standardisation**: every input feature is shifted and scaled to zero mean and unit
  variance on the training set (``x_mean``, ``x_std`` buffers; a constant feature gets
  std 1), so one sigma suits all features.
* **Pattern layer**: the standardised training points themselves, or, with
  ``n_centers``, a k-means compression of them (k-means++ seeding and Lloyd iterations in
  torch, seeded by ``seed``). A centre then stands for its ``count`` points with their mean
  target, and the prediction weights each centre by its count (the clustered GRNN):
  ``y = sum_k c_k w_k Ybar_k / sum_k c_k w_k``. That is one call of the op on the values
  ``[c_k Ybar_k, c_k]`` followed by a division: both sums share the op's normalisation.
* **Sigma**: a given float, or the value of ``sigma_grid`` with the lowest leave-one-out
  mean squared error (targets standardised so outputs weigh equally). The LOO predictions
  of all points come from one call of the op per candidate with ``exclude_self=True`` (the
  kernel masks the pair ``i == i``, which stays exact for tiny sigma, unlike subtracting
  the self term afterwards). The default grid spans 1/100 to 3 times the median distance
  between standardised points. Cross-validation uses at most ``cv_points`` training points
  (a seeded random subset) against each other, before any compression.
* **Persistence**: everything a prediction needs is a buffer, so ``state_dict`` /
  ``load_state_dict`` work (buffers are resized on load) and :meth:`GRNN.save` /
  :meth:`GRNN.load` write and read a ``.safetensors`` file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import nn

from fastdeblur.ops.grnn import grnn

__all__ = ["GRNN", "kmeans"]

_BUFFERS = ("x_mean", "x_std", "centers", "targets", "counts", "sigma", "target_is_vector")


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(n, k) squared distances through the GEMM form, clamped at 0."""
    d = (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)
    return d.clamp_min_(0)


def _nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to the nearest row of ``c`` for every row of ``x``."""
    idx, dist = [], []
    for s in range(0, x.shape[0], chunk):
        d = _sq_dists(x[s : s + chunk], c)
        v, i = d.min(1)
        idx.append(i)
        dist.append(v)
    return torch.cat(idx), torch.cat(dist)


def kmeans(x: torch.Tensor, k: int, *, iters: int = 50, seed: int = 0,
           tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means (k-means++ seeding, Lloyd iterations), deterministic for a given seed.

    Args:
        x: ``(n, d)`` points, floating point.
        k: number of clusters, ``1 <= k <= n``.
        iters: maximum number of Lloyd iterations.
        seed: seed of the k-means++ sampling.
        tol: stop when no centre moves by more than ``tol`` (relative to the data's scale).

    Returns:
        ``(centers (k, d), labels (n,) int64)``. Every cluster is non-empty: a cluster that
        empties is re-seeded at the point farthest from its centre.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: k must be in [1, n={n}], got {k}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = x.detach()
    centers = torch.empty((k, x.shape[1]), dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=gen))
    centers[0] = x[first]
    best = _sq_dists(x, centers[:1])[:, 0]
    for j in range(1, k):
        # k-means++: next centre drawn with probability proportional to D(x)^2.
        weights = best.double().cpu()
        if float(weights.sum()) <= 0:  # fewer distinct points than k
            pick = int(torch.randint(n, (1,), generator=gen))
        else:
            pick = int(torch.multinomial(weights, 1, generator=gen))
        centers[j] = x[pick]
        best = torch.minimum(best, _sq_dists(x, centers[j : j + 1])[:, 0])
    scale = float(x.std()) if n > 1 else 1.0
    labels = torch.zeros(n, dtype=torch.long, device=x.device)
    for _ in range(iters):
        labels, dist = _nearest(x, centers)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        new = sums / counts.clamp_min(1)[:, None]
        empty = counts == 0
        if bool(empty.any()):
            far = torch.argsort(dist, descending=True)[: int(empty.sum())]
            new[empty] = x[far]
        shift = float((new - centers).norm(dim=1).max())
        centers = new
        if shift <= tol * max(scale, 1e-12):
            break
    labels, _ = _nearest(x, centers)
    return centers, labels


class GRNN(nn.Module):
    """Generalised regression neural network with a fused Gaussian-kernel layer.

    Args:
        sigma: kernel width in standardised feature units; ``None`` chooses it by
            leave-one-out cross-validation over ``sigma_grid`` in :meth:`fit`.
        sigma_grid: candidate widths for the cross-validation (standardised units);
            default: 25 values from 1/100 to 3 times the median inter-point distance.
        n_centers: compress the pattern layer to this many k-means centres (``None``: keep
            every training point).
        cv_points: at most this many training points take part in the cross-validation.
        kmeans_iters: Lloyd iterations of the compression.
        seed: seed of the cross-validation subset and of k-means.

    Example:
        >>> model = GRNN(n_centers=256).fit(features, params)  # (n, d), (n,) or (n, p)
        >>> model.predict(new_features)                          # (m,) or (m, p)
        >>> model.save("grnn_motion.safetensors")
        >>> GRNN.load("grnn_motion.safetensors")
    """

    x_mean: torch.Tensor
    x_std: torch.Tensor
    centers: torch.Tensor
    targets: torch.Tensor
    counts: torch.Tensor
    sigma: torch.Tensor
    target_is_vector: torch.Tensor

    def __init__(self, sigma: float | None = None, *, sigma_grid: Sequence[float] | None = None,
                 n_centers: int | None = None, cv_points: int = 4096, kmeans_iters: int = 50,
                 seed: int = 0) -> None:
        super().__init__()
        if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"GRNN: sigma must be positive and finite, got {sigma}")
        if n_centers is not None and n_centers < 1:
            raise ValueError(f"GRNN: n_centers must be >= 1, got {n_centers}")
        if cv_points < 2:
            raise ValueError(f"GRNN: cv_points must be >= 2, got {cv_points}")
        self.fixed_sigma = sigma
        self.sigma_grid = list(sigma_grid) if sigma_grid is not None else None
        self.n_centers = n_centers
        self.cv_points = cv_points
        self.kmeans_iters = kmeans_iters
        self.seed = seed
        #: (sigma candidates, LOO MSE) of the last cross-validation, for inspection.
        self.cv_curve: tuple[torch.Tensor, torch.Tensor] | None = None
        for name in _BUFFERS:
            self.register_buffer(name, torch.empty(0))

    # -- fitting ------------------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` ran (or a fitted state was loaded)."""
        return self.centers.numel() > 0

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> GRNN:
        """Fit the pattern layer and choose sigma.

        Args:
            X: ``(n, d)`` training features, floating point, ``n >= 2``.
            Y: ``(n,)`` or ``(n, p)`` training targets.

        Returns:
            ``self``.
        """
        if not isinstance(X, torch.Tensor) or X.dim() != 2 or not X.is_floating_point():
            raise ValueError(f"GRNN.fit: X must be a floating-point (n, d) tensor, got "
                             f"{getattr(X, 'shape', type(X))}")
        if not isinstance(Y, torch.Tensor) or Y.dim() not in (1, 2) or Y.shape[0] != X.shape[0]:
            raise ValueError(f"GRNN.fit: Y must be (n,) or (n, p) with n = {X.shape[0]}, got "
                             f"{getattr(Y, 'shape', type(Y))}")
        if X.shape[0] < 2:
            raise ValueError(f"GRNN.fit: need at least 2 training points, got {X.shape[0]}")
        X = X.detach()
        vector = Y.dim() == 1
        Y2 = Y.detach().reshape(X.shape[0], -1).to(X.dtype)
        self.x_mean = X.mean(0)
        std = X.std(0)
        self.x_std = torch.where(std > 0, std, torch.ones_like(std))
        Z = (X - self.x_mean) / self.x_std
        self.target_is_vector = torch.tensor(vector, device=X.device)

        if self.fixed_sigma is not None:
            sigma = float(self.fixed_sigma)
        else:
            sigma = self._cross_validate(Z, Y2)
        self.sigma = torch.tensor(sigma, dtype=X.dtype, device=X.device)

        if self.n_centers is not None and self.n_centers < X.shape[0]:
            centers, labels = kmeans(Z, self.n_centers, iters=self.kmeans_iters, seed=self.seed)
            counts = torch.bincount(labels, minlength=self.n_centers).to(X.dtype)
            sums = torch.zeros((self.n_centers, Y2.shape[1]), dtype=X.dtype,
                               device=X.device).index_add_(0, labels, Y2)
            self.centers = centers
            self.targets = sums / counts[:, None]
            self.counts = counts
        else:
            self.centers = Z.clone()
            self.targets = Y2.clone()
            self.counts = torch.empty(0, dtype=X.dtype, device=X.device)  # all ones
        return self

    def _default_grid(self, Z: torch.Tensor) -> list[float]:
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(Z.shape[0], generator=gen)[:1024].to(Z.device)
        sub = Z[idx]
        d2 = _sq_dists(sub, sub)
        off = d2[~torch.eye(sub.shape[0], dtype=torch.bool, device=Z.device)]
        median = float(off.median().sqrt()) if off.numel() else 1.0
        median = median if median > 0 else 1.0
        return (median * torch.logspace(-2, math.log10(3.0), 25, dtype=torch.float64)).tolist()

    def _cross_validate(self, Z: torch.Tensor, Y: torch.Tensor) -> float:
        """Sigma with the lowest leave-one-out MSE over the grid (vectorised over points)."""
        gen = torch.Generator().manual_seed(self.seed)
        n = Z.shape[0]
        idx = torch.randperm(n, generator=gen)[: self.cv_points].to(Z.device)
        Zs, Ys = Z[idx], Y[idx]
        y_std = Ys.std(0)
        Yn = (Ys - Ys.mean(0)) / torch.where(y_std > 0, y_std, torch.ones_like(y_std))
        grid = self.sigma_grid if self.sigma_grid is not None else self._default_grid(Zs)
        if not grid or any(not (math.isfinite(s) and s > 0) for s in grid):
            raise ValueError(f"GRNN: sigma_grid must hold positive finite values, got {grid}")
        errors = []
        with torch.no_grad():
            for s in grid:
                loo = grnn(Zs, Zs, Yn, float(s), exclude_self=True)
                errors.append(float((loo - Yn).square().mean()))
        err = torch.tensor(errors, dtype=torch.float64)
        err = torch.where(torch.isfinite(err), err, torch.full_like(err, float("inf")))
        self.cv_curve = (torch.tensor(grid, dtype=torch.float64), err)
        return float(grid[int(err.argmin())])

    # -- prediction ---------------------------------------------------------------------------

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Predict targets at ``X``.

        Args:
            X: ``(m, d)`` features (same d as in :meth:`fit`).

        Returns:
            ``(m,)`` when fitted on ``(n,)`` targets, else ``(m, p)``; dtype of the model.
        """
        if not self.is_fitted:
            raise RuntimeError("GRNN.predict: the model is not fitted (call fit or load)")
        if not isinstance(X, torch.Tensor) or X.dim() != 2 or X.shape[1] != self.x_mean.shape[0]:
            raise ValueError(f"GRNN.predict: X must be (m, {self.x_mean.shape[0]}), got "
                             f"{getattr(X, 'shape', type(X))}")
        Z = (X.to(self.centers) - self.x_mean) / self.x_std
        if self.counts.numel() > 0:
            # Clustered GRNN: sum_k c_k w_k Ybar_k / sum_k c_k w_k from one op call.
            weighted = torch.cat([self.targets * self.counts[:, None], self.counts[:, None]], 1)
            out = grnn(Z, self.centers, weighted, float(self.sigma))
            out = out[:, :-1] / out[:, -1:]
        else:
            out = grnn(Z, self.centers, self.targets, float(self.sigma))
        return out[:, 0] if bool(self.target_is_vector) else out

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`predict`."""
        return self.predict(X)

    # -- persistence --------------------------------------------------------------------------

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Buffers start empty: take the saved shapes before the copy.
        for name in _BUFFERS:
            key = prefix + name
            if key in state_dict:
                saved = state_dict[key]
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype,
                                                  device=self._buffers[name].device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted state (buffers) to a ``.safetensors`` file."""
        from safetensors.torch import save_file

        if not self.is_fitted:
            raise RuntimeError("GRNN.save: the model is not fitted")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, os.fspath(path), metadata={"format": "fastdeblur.GRNN", "version": "1"})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> GRNN:
        """Read a model written by :meth:`save`."""
        from safetensors.torch import load_file

        state = load_file(os.fspath(path), device=str(device))
        missing = [k for k in _BUFFERS if k not in state]
        if missing:
            raise ValueError(f"GRNN.load: {os.fspath(path)} is not a GRNN file (missing {missing})")
        model = cls(sigma=float(state["sigma"]))
        model.load_state_dict(state)
        return model.to(device)

    def extra_repr(self) -> str:
        if not self.is_fitted:
            return "not fitted"
        return (f"d={self.centers.shape[1]}, centers={self.centers.shape[0]}, "
                f"p={self.targets.shape[1]}, sigma={float(self.sigma):.4g}")
