#!/usr/bin/env python3
r"""Stability: do two explanations of one utterance (e.g. two seeds) agree?

A SPES map is a Monte-Carlo estimate, so two runs with different seeds differ. These
statistics measure by how much, at the level a user reads a map:

* **top overlap** (:func:`top_overlap`): the share of each token's top ``q`` % elements that
  both maps put in their top, averaged over tokens; also on the utterance map (the token maps
  normalised as the reference evaluation does, then averaged: the map deletion ranks);
* **time-profile Spearman**: the rank correlation of each token's saliency over time (the
  mel axis averaged), averaged over tokens: whether the maps agree on *when*;
* **effective resolution**: how many independently estimated units a map has, and how many
  lie in each token's top ``q`` % — a map made stable by being coarse says so here.

Ties: a piecewise-constant map (coarse segments) ties thousands of elements. The overlap is
computed under **uniformly random tie-breaking**, exactly: an element strictly above a
map's ``k``-th value is in its top with probability 1, one tied with it with probability
(places left) / (tied elements), and the expected overlap is the sum over elements of the
product of the two probabilities, over ``k``. No arbitrary order (e.g. by index) can make two
coarse maps look more alike than they are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from captum_spes._core.result import SPESResult
from captum_spes.errors import InputError
from captum_spes.normalizers import normalize_reference

__all__ = ["Agreement", "top_membership", "top_overlap", "rank_correlation", "seed_agreement", "top_units"]


def _top_k(n: int, top_percent: float) -> int:
    if isinstance(top_percent, bool) or not isinstance(top_percent, (int, float)) or not 0 < top_percent <= 100:
        raise InputError(f"top_percent must be a percentage in (0, 100], e.g. 5.0; got {top_percent!r}")
    return min(n, max(1, math.floor(n * top_percent / 100 + 0.5)))


def top_membership(values: Tensor, k: int) -> Tensor:
    r"""Probability that each entry is in its row's top ``k`` under random tie-breaking.

    Args:
        values (Tensor): ``(rows, n)``.
        k (int): size of the top, ``1 <= k <= n``.

    Returns:
        *Tensor* float64 ``(rows, n)``: 1 above the ``k``-th largest value, the share of the
        remaining places among the entries tied with it, 0 below. Each row sums to ``k``.
    """
    values = values.to(torch.float64)
    kth = values.topk(k, dim=1).values[:, -1:]
    above = values > kth
    tied = values == kth
    places = k - above.sum(dim=1, keepdim=True)
    return above.to(torch.float64) + tied.to(torch.float64) * places / tied.sum(dim=1, keepdim=True).clamp_min(1)


def top_overlap(first: Tensor, second: Tensor, top_percent: float = 5.0) -> Tensor:
    r"""Expected overlap of the two maps' top ``top_percent`` %, per row, under random tie-breaking.

    Args:
        first, second (Tensor): ``(rows, ...)`` maps of the same shape (rows = tokens).
        top_percent (float, optional): size of the top in percent of each row. Default: 5.0

    Returns:
        *Tensor* float64 ``(rows,)`` in [0, 1]: ``E|A ∩ B| / k``. Two constant rows give
        ``k / n`` (chance), as they should: a constant map has no top.
    """
    if first.shape != second.shape or first.dim() < 2:
        raise InputError(
            f"maps must have the same shape (rows, ...), got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    a = first.reshape(first.shape[0], -1)
    b = second.reshape(second.shape[0], -1)
    k = _top_k(a.shape[1], top_percent)
    return (top_membership(a, k) * top_membership(b, k)).sum(dim=1) / k


def rank_correlation(first: Tensor, second: Tensor) -> Tensor:
    r"""Spearman correlation per row (average ranks for ties), ``(rows,)`` float64; 0 for a
    constant row."""
    a = _ranks(first.reshape(first.shape[0], -1))
    b = _ranks(second.reshape(second.shape[0], -1))
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    return torch.where(
        denominator > 0, (a * b).sum(dim=1) / denominator.clamp_min(1e-300), torch.zeros_like(denominator)
    )


def _ranks(values: Tensor) -> Tensor:
    """Average ranks along dim 1 (ties share the mean of their ranks)."""
    values = values.to(torch.float64)
    out = torch.empty_like(values)
    for row in range(values.shape[0]):
        unique, inverse, counts = torch.unique(values[row], return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).to(torch.float64)
        out[row] = (ends - (counts.to(torch.float64) - 1) / 2)[inverse]
    return out


def top_units(result: SPESResult, top_percent: float = 5.0) -> Tensor:
    r"""Independent units touched by each token's top ``top_percent`` % (expected, under random
    tie-breaking), ``(num_tokens,)`` float64: the resolution of what a user reads first."""
    if result.units is None:
        raise InputError("the result has no units (made by another method or an old version)")
    maps = result.spectrogram_attr.reshape(result.num_tokens, -1)
    membership = top_membership(maps, _top_k(maps.shape[1], top_percent))
    units = result.units.reshape(-1).to(membership.device)
    per_unit = torch.zeros(result.num_tokens, int(units.max()) + 1, dtype=torch.float64)
    per_unit.index_add_(1, units, membership)
    size = torch.bincount(units).to(torch.float64)
    # A unit counts by the share of its elements in the top (a tied unit half in counts 0.5).
    return (per_unit / size).sum(dim=1)


@dataclass
class Agreement:
    """Statistics of two explanations of one utterance (see the module docstring)."""

    top_overlap_tokens: float
    top_overlap_utterance: float
    time_spearman_tokens: float
    spearman_tokens: float
    units: float
    top_units: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_agreement(first: SPESResult, second: SPESResult, top_percent: float = 5.0) -> Agreement:
    r"""How much two explanations of the same utterance and hypothesis agree.

    Args:
        first, second (SPESResult): e.g. two seeds; same tokens and map shape.
        top_percent (float, optional): size of the tops. Default: 5.0

    Returns:
        *Agreement*: mean over tokens of the top overlap, the utterance map's top overlap,
        the mean per-token Spearman of the time profiles and of the whole maps, and the
        mean number of units (all, and in the top) of the two maps.
    """
    if first.spectrogram_attr.shape != second.spectrogram_attr.shape or first.target_ids != second.target_ids:
        raise InputError("the two results must explain the same hypothesis over the same frames")
    a, b = first.spectrogram_attr, second.spectrogram_attr
    utterance_a = normalize_reference(a)[0].mean(dim=0, keepdim=True)
    utterance_b = normalize_reference(b)[0].mean(dim=0, keepdim=True)
    units = [float(r.num_units) if r.units is not None else float("nan") for r in (first, second)]
    tops = [float(top_units(r, top_percent).mean()) if r.units is not None else float("nan") for r in (first, second)]
    return Agreement(
        top_overlap_tokens=float(top_overlap(a, b, top_percent).mean()),
        top_overlap_utterance=float(top_overlap(utterance_a, utterance_b, top_percent).mean()),
        time_spearman_tokens=float(rank_correlation(first.time_profile(), second.time_profile()).mean()),
        spearman_tokens=float(rank_correlation(a, b).mean()),
        units=sum(units) / 2,
        top_units=sum(tops) / 2,
    )
