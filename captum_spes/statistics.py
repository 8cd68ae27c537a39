#!/usr/bin/env python3
r"""Reading a map with its noise: p-values and multiple-comparison corrections.

Every SPES map is a Monte-Carlo estimate. Its estimator returns, per token and per
independent *unit* (the elements that every mask occluded together), a z statistic that the
unit raises the impact. These functions turn z statistics into p-values and decide which
units are significant at a level ``alpha`` with a correction for testing all units of a
token at once.

Choices, documented:

* **One-sided tests** (``tail="greater"``): evidence is an impact that *grows* when the unit
  is occluded. ``"two-sided"`` is available for signed impacts such as ``prob_drop``.
* **Normal approximation**: ``p = 1 - Phi(z)``. The z statistics are Welch's statistics of
  two means over hundreds of masks, where Student's t and the normal agree to the third
  decimal; with fewer than about 30 masks per group p-values are optimistic.
* **Default correction: Benjamini-Hochberg** false discovery rate, per token over its units
  (``"fdr_bh"``). A map is read as "which regions matter", where a controlled share of
  false regions is the useful guarantee; the units of one map are positively dependent
  (every mask occludes half of them), under which BH stays valid. ``"holm"`` and
  ``"bonferroni"`` control the family-wise error instead (no false region at all with
  probability ``1 - alpha``) and are far more conservative on maps of thousands of units;
  ``None`` applies no correction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from captum_spes.errors import InputError

__all__ = ["CORRECTIONS", "TAILS", "p_values", "reject", "significant"]

CORRECTIONS = ("fdr_bh", "holm", "bonferroni", None)
TAILS = ("greater", "two-sided")


def p_values(z: Tensor, tail: str = "greater") -> Tensor:
    r"""P-values of z statistics under the normal approximation; NaN stays NaN.

    Args:
        z (Tensor): any shape.
        tail (str, optional): ``"greater"`` (one-sided, large z is evidence) or
            ``"two-sided"``. Default: "greater"
    """
    if tail not in TAILS:
        raise InputError(f"tail must be one of {TAILS}, got {tail!r}")
    z = z.to(torch.float64)
    if tail == "greater":
        return 0.5 * torch.erfc(z / math.sqrt(2.0))
    return torch.erfc(z.abs() / math.sqrt(2.0))


def reject(p: Tensor, alpha: float = 0.05, correction: str | None = "fdr_bh") -> Tensor:
    r"""Which hypotheses to reject, row by row (one row = one token's units).

    Args:
        p (Tensor): p-values ``(rows, tests)``; NaN entries are not tests (never rejected,
            not counted).
        alpha (float, optional): level in (0, 1). Default: 0.05
        correction (str or None, optional): one of :data:`CORRECTIONS`. Default: "fdr_bh"

    Returns:
        *Tensor* bool ``(rows, tests)``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be a level strictly between 0 and 1, e.g. 0.05; got {alpha!r}")
    if correction not in CORRECTIONS:
        raise InputError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if p.dim() != 2:
        raise InputError(f"p must have shape (rows, tests), got {tuple(p.shape)}")
    valid = ~torch.isnan(p)
    m = valid.sum(dim=1, keepdim=True).clamp_min(1).to(torch.float64)
    filled = torch.where(valid, p.to(torch.float64), torch.full_like(p, 2.0, dtype=torch.float64))
    if correction is None:
        return valid & (filled <= alpha)
    if correction == "bonferroni":
        return valid & (filled * m <= alpha)
    order = filled.argsort(dim=1)
    ranked = filled.gather(1, order)  # ascending; NaNs (filled with 2) last
    rank = torch.arange(1, p.shape[1] + 1, dtype=torch.float64, device=p.device)[None, :]
    if correction == "fdr_bh":
        # Reject the k smallest, k the largest rank with p_(k) <= k * alpha / m (step-up).
        passing = ranked <= rank * alpha / m
        count = torch.where(passing, rank, torch.zeros_like(rank)).amax(dim=1, keepdim=True)
    else:  # holm: step-down, stop at the first p_(k) > alpha / (m - k + 1)
        failing = (rank > m) | (ranked > alpha / (m - rank + 1).clamp_min(1))
        first_fail = torch.where(failing, rank, torch.full_like(rank, float(p.shape[1] + 1))).amin(dim=1, keepdim=True)
        count = first_fail - 1
    rejected_sorted = rank <= count
    out = torch.zeros_like(rejected_sorted)
    out.scatter_(1, order, rejected_sorted)
    return out & valid


def significant(z: Tensor, alpha: float = 0.05, correction: str | None = "fdr_bh", tail: str = "greater") -> Tensor:
    r"""Significant units from z statistics ``(rows, units)``: :func:`p_values` then :func:`reject`;
    with ``tail="greater"`` only positive evidence counts."""
    return reject(p_values(z, tail), alpha, correction)
