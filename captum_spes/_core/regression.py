#!/usr/bin/env python3
r"""Least squares on streamed Gram matrices: a unit's effect with the other units held fixed.

A difference of means (occluded minus kept mean impact) carries the whole variance of a
token's impact, including what every *other* occluded unit contributes. Regressing the impact
on all the units' occlusion indicators removes what the other units explain linearly: the
coefficient of unit ``u`` is its effect with the others held fixed, with variance
``sigma_res^2 [(X_c^T X_c)^{-1}]_{uu}`` instead of Welch's ``s_1^2 / n_1 + s_0^2 / n_0``. It
pays off where the impact is additive enough in the units and there are clearly more masks
than units (about ``(1 - adjusted R^2) N / (N - p)``: ``scripts/gram_regression_check.py``).

The sums are ``X^T X`` ``(p, p)``, ``X^T y`` ``(T, p)``, and the totals of ``x``, ``y``, ``y^2``
and the mask count: memory independent of the number of masks ``N``, shared by all ``T``
tokens.

:meth:`GramSums.fit_smooth` adds a prior that fits spectrograms: the map is smooth across
neighbouring time-frequency bins (a penalty on the squared differences of neighbouring units'
effect densities, :func:`boundary_laplacian`), with its strength chosen per token by
generalised cross-validation, so a fit can have more units than masks.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GramSums", "boundary_laplacian", "SMOOTHING_GRID"]

#: Candidate smoothing strengths of :meth:`GramSums.fit_smooth`, relative to
#: ``trace(X_c^T X_c) / trace(penalty)``: from nearly unpenalised least squares to nearly a
#: constant map; generalised cross-validation picks one per token.
SMOOTHING_GRID = torch.logspace(-4, 4, 33, dtype=torch.float64)


class GramSums:
    r"""Streamed sums of one stage's masks for an ordinary least-squares fit per token.

    Args:
        num_targets (int): ``T``, the columns of the scores (tokens).
        num_units (int): ``p``, the units whose occlusion indicators are the regressors.
        device (torch.device or str): where the sums live.
    """

    def __init__(self, num_targets: int, num_units: int, device: torch.device | str) -> None:
        f64 = torch.float64
        self.gram = torch.zeros(num_units, num_units, dtype=f64, device=device)
        self.cross = torch.zeros(num_targets, num_units, dtype=f64, device=device)
        self.x_sum = torch.zeros(num_units, dtype=f64, device=device)
        self.y_sum = torch.zeros(num_targets, dtype=f64, device=device)
        self.y_sq = torch.zeros(num_targets, dtype=f64, device=device)
        self.count = 0

    def add(self, scores: Tensor, occluded: Tensor) -> None:
        """Add a batch: ``scores`` ``(batch, T)``, ``occluded`` bool ``(batch, p)``."""
        x = occluded.to(device=self.gram.device, dtype=torch.float64)
        y = scores.to(device=self.gram.device, dtype=torch.float64)
        self.gram.addmm_(x.T, x)
        self.cross.addmm_(y.T, x)
        self.x_sum += x.sum(dim=0)
        self.y_sum += y.sum(dim=0)
        self.y_sq += y.square().sum(dim=0)
        self.count += int(y.shape[0])

    def fit(self) -> dict[str, Tensor]:
        r"""Each unit's coefficient per token, its standard error and z (``(T, p)``), and the
        fit's coefficient of determination per token, ``r_squared`` ``(T,)``.

        Units that every mask occluded, or none did, have no coefficient: NaN, as the
        difference of means has none for them; the fit is over the other units (minimum-norm
        least squares, so collinear units share their effect).

        Raises:
            ValueError: with no more masks than fitted units plus one (no residual variance).
        """
        n = self.count
        x_mean = self.x_sum / max(n, 1)
        varies = (self.x_sum > 0) & (self.x_sum < n)
        fitted = int(varies.sum())
        if n <= fitted + 1:
            raise ValueError(f"a least-squares fit of {fitted} units needs more than {fitted + 1} masks, got {n}")
        index = varies.nonzero()[:, 0]
        centred_gram = self.gram[index][:, index] - n * torch.outer(x_mean[index], x_mean[index])
        centred_cross = self.cross[:, index] - torch.outer(self.y_sum, x_mean[index])
        inverse = torch.linalg.pinv(centred_gram, hermitian=True)
        coefficients = centred_cross @ inverse  # (T, fitted)
        total = self.y_sq - self.y_sum.square() / n
        residual = (total - (coefficients * centred_cross).sum(dim=1)).clamp_min(0)
        noise = residual / (n - torch.linalg.matrix_rank(centred_gram, hermitian=True) - 1)
        standard_error = (noise[:, None] * inverse.diagonal()[None, :].clamp_min(0)).sqrt()
        out = self._per_unit(index, coefficients, standard_error)
        out["r_squared"] = torch.where(total > 0, 1 - residual / total, torch.full_like(total, float("nan")))
        return out

    def _per_unit(self, index: Tensor, coefficients: Tensor, standard_error: Tensor) -> dict[str, Tensor]:
        """``effect``, ``standard_error`` and ``z`` ``(T, p)`` from the fitted units' ``(T, fitted)``
        values (units ``index``), NaN for the units not fitted."""
        z = coefficients / standard_error
        z = torch.where((standard_error == 0) & (coefficients == 0), torch.zeros_like(z), z)
        out = {}
        for key, fitted_values in (("effect", coefficients), ("standard_error", standard_error), ("z", z)):
            out[key] = torch.full_like(self.cross, float("nan"))
            out[key][:, index] = fitted_values
        return out

    def fit_smooth(
        self, penalty: Tensor, scale: Tensor | None = None, lambdas: Tensor | None = None
    ) -> dict[str, Tensor]:
        r"""Penalised least squares: each unit's effect with the other units held fixed and
        neighbouring units pulled together, per token (``(T, p)``).

        The regressor of unit ``u`` is its occlusion indicator times ``scale[u]`` (e.g. its size
        over a mean cell's), so the coefficient ``theta_u`` is an effect density: what occluding
        a region of scale 1 at ``u``'s density does. It minimises
        ``|y_c - X_c S theta|^2 + lambda theta^T P theta`` over ``theta``; with ``P`` from
        :func:`boundary_laplacian` the penalty is the sum over neighbouring time-frequency bins
        of the squared difference of the map. ``lambda`` is chosen per token by generalised
        cross-validation, ``N RSS / (N - 1 - df)^2``, from ``lambdas`` (default
        :data:`SMOOTHING_GRID` times ``trace(G) / trace(P)``); ``df`` is the fit's effective
        number of parameters, ``tr((G + lambda P)^{-1} G)``. All of it comes from one
        generalised eigendecomposition of ``G = (X_c S)^T X_c S`` against ``P``, shared by the
        tokens. The standard error is the penalised estimate's own spread,
        ``sigma^2 diag(A G A)`` with ``A = (G + lambda P)^{-1}`` and
        ``sigma^2 = RSS / (N - 1 - df)``; it leaves out the bias the smoothing adds, so a z of
        a small unit beside a large effect borrows its neighbours' evidence.

        Args:
            penalty (Tensor): ``(p, p)`` symmetric positive semi-definite, positive definite on
                the units that vary together with the data (a graph Laplacian: ``G`` must not be
                null on constant maps).
            scale (Tensor, optional): ``(p,)`` positive regressor scales. Default: ones.
            lambdas (Tensor, optional): candidate ``lambda`` values (absolute).

        Returns:
            *dict* with ``effect``, ``standard_error``, ``z`` ``(T, p)`` (NaN for units every mask
            occluded or none did), and per token ``smoothing`` (the chosen ``lambda``),
            ``effective_units`` (``df``) and ``r_squared``, each ``(T,)``.

        Raises:
            ValueError: with fewer than 3 masks.
        """
        n = self.count
        if n < 3:
            raise ValueError(f"a penalised least-squares fit needs at least 3 masks, got {n}")
        f64 = torch.float64
        x_mean = self.x_sum / n
        varies = (self.x_sum > 0) & (self.x_sum < n)
        index = varies.nonzero()[:, 0]
        scale_fitted = (torch.ones_like(self.x_sum) if scale is None else scale.to(self.gram))[index]
        gram = self.gram[index][:, index] - n * torch.outer(x_mean[index], x_mean[index])
        gram = gram * torch.outer(scale_fitted, scale_fitted)
        cross = (self.cross[:, index] - torch.outer(self.y_sum, x_mean[index])) * scale_fitted
        penalty = penalty.to(self.gram)[index][:, index]
        total = self.y_sq - self.y_sum.square() / n
        # Cholesky of the penalty (a jitter makes a Laplacian definite), then an ordinary
        # eigendecomposition of the Gram matrix whitened by it.
        jitter = 1e-9 * float(max(penalty.diagonal().mean(), gram.diagonal().mean(), 1e-300))
        eye = torch.eye(index.numel(), dtype=f64, device=gram.device)
        root = torch.linalg.cholesky(penalty + jitter * eye)
        root_inverse = torch.linalg.solve_triangular(root, eye, upper=False)
        whitened = root_inverse @ gram @ root_inverse.T
        eigenvalues, eigenvectors = torch.linalg.eigh((whitened + whitened.T) / 2)
        eigenvalues = eigenvalues.clamp_min(0)
        basis = root_inverse.T @ eigenvectors  # (fitted, fitted): basis^T G basis = diag(eigenvalues)
        projected = cross @ basis  # (T, fitted)
        if lambdas is None:
            lambdas = SMOOTHING_GRID.to(gram.device) * (gram.trace() / penalty.trace().clamp_min(1e-300))
        lambdas = lambdas.to(gram)
        weights = 1 / (eigenvalues[None, :] + lambdas[:, None])  # (L, fitted)
        df = (eigenvalues[None, :] * weights).sum(dim=1)
        explained = projected.square() @ ((eigenvalues[None, :] + 2 * lambdas[:, None]) * weights.square()).T
        rss = (total[:, None] - explained).clamp_min(0)  # (T, L)
        residual_df = n - 1 - df
        gcv = torch.where(residual_df > 0, n * rss / residual_df.clamp_min(1e-12).square(), torch.inf)
        best = gcv.argmin(dim=1)
        chosen = weights[best]  # (T, fitted)
        rss_chosen = rss.gather(1, best[:, None])[:, 0]
        noise = rss_chosen / residual_df[best].clamp_min(1e-12)
        coefficients = (projected * chosen) @ basis.T
        variance = noise[:, None] * ((eigenvalues[None, :] * chosen.square()) @ basis.square().T)
        standard_error = variance.clamp_min(0).sqrt()
        out = self._per_unit(index, coefficients, standard_error)
        out["smoothing"] = lambdas[best]
        out["effective_units"] = df[best]
        out["r_squared"] = torch.where(total > 0, 1 - rss_chosen / total, torch.full_like(total, float("nan")))
        return out


def boundary_laplacian(units: Tensor) -> Tensor:
    r"""The graph Laplacian of the units of a label map, each pair of units weighted by the
    neighbouring elements (time or frequency neighbours) across their boundary: for a map
    ``theta`` constant on units, ``theta^T L theta`` is the sum over neighbouring elements of
    the squared difference of the map.

    Args:
        units (Tensor): long ``(n_mels, n_frames)``, unit ids ``0 .. U - 1``.

    Returns:
        *Tensor* float64 ``(U, U)``.
    """
    num_units = int(units.max()) + 1
    first, second = [], []
    for a, b in ((units[1:, :], units[:-1, :]), (units[:, 1:], units[:, :-1])):
        a, b = a.reshape(-1), b.reshape(-1)
        differ = a != b
        first.append(a[differ])
        second.append(b[differ])
    a, b = torch.cat(first), torch.cat(second)
    weights = torch.zeros(num_units * num_units, dtype=torch.float64, device=units.device)
    weights.index_add_(0, a * num_units + b, torch.ones_like(a, dtype=torch.float64))
    weights = weights.reshape(num_units, num_units)
    weights = weights + weights.T
    return torch.diag(weights.sum(dim=1)) - weights
