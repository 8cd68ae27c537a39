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
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GramSums"]


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
        z = coefficients / standard_error
        z = torch.where((standard_error == 0) & (coefficients == 0), torch.zeros_like(z), z)
        out = {}
        for key, fitted_values in (("effect", coefficients), ("standard_error", standard_error), ("z", z)):
            out[key] = torch.full_like(self.cross, float("nan"))
            out[key][:, index] = fitted_values
        out["r_squared"] = torch.where(total > 0, 1 - residual / total, torch.full_like(total, float("nan")))
        return out
