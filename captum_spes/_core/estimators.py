#!/usr/bin/env python3
r"""Estimators: how the impacts of many random masks become a map, with its uncertainty.

A SPES map is a Monte-Carlo estimate. An :class:`Estimator` receives, batch after batch,
the impact of each mask on every explained token and which segments the mask occluded, keeps
streaming sums whose size does not depend on the number of masks, and finally scatters them
to elements. Besides the map it returns each estimate's standard error and a z statistic
per *unit* — the groups of elements that every mask treats alike, i.e. the independently
estimated pieces of the map — so that a map can be read with its noise
(:meth:`~captum_spes.SPESResult.significance`).

Registered estimators (:data:`ESTIMATORS`, extended with :func:`register_estimator`):

``"reference"`` (:class:`ReferenceEstimator`)
    The method's published estimator: an element's score is the mean impact over the masks
    that occluded it, ``S[k, e] = sum_n s[n, k] O[n, e] / sum_n O[n, e]`` (0 where never
    occluded). Its z statistic is Welch's test that occluding the element raises the impact:
    ``(mean_occluded - mean_kept) / sqrt(var_occluded / n_occluded + var_kept / n_kept)``.

Sums are kept per level at segment resolution in float64, so the order in which masks arrive
(the batch size) changes a result only in its last bits.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from captum_spes.errors import InputError, InputTypeError

if TYPE_CHECKING:
    from captum_spes._core.utterance import Utterance
    from captum_spes.masks import MaskLevel

__all__ = [
    "MaskStage",
    "Estimate",
    "Estimator",
    "ReferenceEstimator",
    "ESTIMATORS",
    "register_estimator",
    "resolve_estimator",
    "units_of",
]


@dataclass(frozen=True)
class MaskStage:
    r"""One block of masks of an estimator's own design (:meth:`Estimator.plan`).

    Attributes:
        level (int): the estimator level the masks are added under.
        labels (Tensor): long ``(n_mels, n_frames)`` segment ids of this stage.
        num_segments (int): segments in ``labels``.
        n_masks (int): masks to draw.
        probabilities (Tensor or None): occlusion probability per segment ``(num_segments,)``
            (0 = never occluded), or None for the run's ``p`` everywhere.
        name (str): what the stage is for, e.g. "coarse" or "refine".
    """

    level: int
    labels: Tensor
    num_segments: int
    n_masks: int
    probabilities: Tensor | None = None
    name: str = ""


@dataclass
class Estimate:
    r"""What an estimator returns for one utterance.

    Attributes:
        attribution (Tensor): the map, ``(num_targets, *shape)`` float32, e.g.
            ``(num_tokens, n_mels, n_frames)``.
        units (Tensor): long ``shape``: the independent unit of every element (elements of a
            unit were occluded by exactly the same masks, so they share every statistic).
        standard_error (Tensor): ``(num_targets, num_units)`` float32, the standard error of
            the attribution of each unit (NaN where it is undefined: fewer than two masks).
        z (Tensor): ``(num_targets, num_units)`` float32, the estimator's test statistic that
            the unit raises the impact (large positive = evidence); NaN where undefined.
        occluded (Tensor): float64 ``(num_units,)``, how many masks occluded each unit.
        info (dict): JSON-serialisable description (estimator name and settings).
    """

    attribution: Tensor
    units: Tensor
    standard_error: Tensor
    z: Tensor
    occluded: Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_units(self) -> int:
        return int(self.occluded.shape[0])

    @property
    def unit_attribution(self) -> Tensor:
        """The map at unit resolution, ``(num_targets, num_units)``."""
        first = torch.full((self.num_units,), -1, dtype=torch.long, device=self.units.device)
        flat = self.units.reshape(-1)
        first.scatter_reduce_(0, flat, torch.arange(flat.numel(), device=flat.device), reduce="amax", include_self=True)
        return self.attribution.reshape(self.attribution.shape[0], -1)[:, first]


def units_of(labels: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    r"""The units of several segmentations of one input: elements with the same segment in
    every level.

    Args:
        labels (sequence of Tensor): per level, long segment ids of the same shape ``S``.

    Returns:
        *tuple* of the unit id of every element (long, shape ``S``, ``0 .. U - 1``) and, per
        level, the segment of each unit (long ``(num_levels, U)``).
    """
    stacked = torch.stack([lv.reshape(-1).long() for lv in labels])  # (L, n)
    unique, inverse = torch.unique(stacked, dim=1, return_inverse=True)
    return inverse.reshape(labels[0].shape), unique


class Estimator(ABC):
    r"""Streaming statistics of one attribution run; subclass to add an estimator.

    An instance first holds only its settings (what the user passes as ``estimator=``);
    :meth:`bind` returns a fresh copy sized for one utterance, which receives the masks with
    :meth:`add` and returns the map with :meth:`finalize`. Memory never depends on the number
    of masks.
    """

    #: registry name, stored in the result metadata
    name: str = ""

    def __init__(self) -> None:
        self.num_targets = 0
        self.segments_per_level: list[int] = []
        self.device = torch.device("cpu")

    # ----- lifecycle ------------------------------------------------------------------
    def bind(self, num_targets: int, segments_per_level: Sequence[int], device: torch.device | str) -> Estimator:
        """A fresh estimator with these settings for ``num_targets`` rows and these levels."""
        bound = copy.copy(self)
        bound.num_targets = int(num_targets)
        bound.segments_per_level = [int(n) for n in segments_per_level]
        bound.device = torch.device(device)
        bound._allocate()
        bound._bound = True
        return bound

    def empty_like(self) -> Estimator:
        """A fresh estimator with the same settings and sizes (e.g. for split halves)."""
        return self.bind(self.num_targets, self.segments_per_level, self.device)

    @abstractmethod
    def _allocate(self) -> None:
        """Create the zeroed sums for the bound sizes."""

    @abstractmethod
    def add(self, level: int, scores: Tensor, occluded: Tensor) -> None:
        r"""Add a batch of masks of one level.

        Args:
            level (int): level index.
            scores (Tensor): impacts ``(batch, num_targets)``.
            occluded (Tensor): bool or 0/1 ``(batch, num_segments)``, 1 where occluded.
        """

    @abstractmethod
    def merge(self, other: Estimator) -> None:
        """Add the sums of another estimator bound to the same sizes."""

    @abstractmethod
    def finalize(self, labels: Sequence[Tensor]) -> Estimate:
        r"""The map and its statistics.

        Args:
            labels (sequence of Tensor): per level, long segment ids of every element, all of
                the same shape ``S`` (e.g. ``(n_mels, n_frames)``).
        """

    @abstractmethod
    def masks_seen(self) -> int:
        """Masks added so far, over all levels."""

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings, saved with every explanation."""
        return {"name": self.name}

    def for_tokens(self) -> Estimator:
        """The (unbound) estimator of the token map; by default one with the same settings."""
        return copy.copy(self)

    def plan(
        self, utterance: Utterance, levels: Sequence[MaskLevel], n_masks: int, p: float
    ) -> Iterator[MaskStage] | None:
        r"""The masks to draw, for estimators that choose their own design; None (the default)
        draws ``n_masks`` masks over the mask family's ``levels`` in consecutive blocks.

        A design is a generator of :class:`MaskStage`: SPES runs each stage's masks (adding
        them to this estimator under the stage's ``level`` index) before asking for the next,
        so a later stage can depend on what the earlier ones found.
        """
        return None

    def _check_bound(self) -> None:
        if not getattr(self, "_bound", False):
            raise RuntimeError(f"{type(self).__name__} is not bound to an utterance: call bind() first")


class ReferenceEstimator(Estimator):
    r"""The published estimator: mean impact over the masks that occluded each element.

    Per level it keeps, at segment resolution, the sums of impacts and squared impacts over
    the masks that occluded each segment and the occlusion counts, plus the totals over all
    masks of the level (so the kept masks' sums are the differences). An element pools every
    level it belongs to. The map is exactly the reference implementation's
    ``sum_n s[n, k] O[n, e] / sum_n O[n, e]``; ``standard_error`` is that mean's standard
    error (sample variance over the occluding masks); ``z`` is Welch's statistic of
    "occluded minus kept" mean impact.
    """

    name = "reference"

    def _allocate(self) -> None:
        zeros = torch.zeros
        k, dev, f64 = self.num_targets, self.device, torch.float64
        self.occluded_sum = [zeros(k, n, dtype=f64, device=dev) for n in self.segments_per_level]
        self.occluded_sq = [zeros(k, n, dtype=f64, device=dev) for n in self.segments_per_level]
        self.occluded_count = [zeros(n, dtype=f64, device=dev) for n in self.segments_per_level]
        self.total_sum = [zeros(k, dtype=f64, device=dev) for _ in self.segments_per_level]
        self.total_sq = [zeros(k, dtype=f64, device=dev) for _ in self.segments_per_level]
        self.total_count = [zeros((), dtype=f64, device=dev) for _ in self.segments_per_level]

    def add_level(self, num_segments: int) -> int:
        """Append a zeroed level of ``num_segments`` segments; returns its index."""
        self._check_bound()
        k, dev, f64 = self.num_targets, self.device, torch.float64
        self.segments_per_level.append(int(num_segments))
        self.occluded_sum.append(torch.zeros(k, num_segments, dtype=f64, device=dev))
        self.occluded_sq.append(torch.zeros(k, num_segments, dtype=f64, device=dev))
        self.occluded_count.append(torch.zeros(num_segments, dtype=f64, device=dev))
        self.total_sum.append(torch.zeros(k, dtype=f64, device=dev))
        self.total_sq.append(torch.zeros(k, dtype=f64, device=dev))
        self.total_count.append(torch.zeros((), dtype=f64, device=dev))
        return len(self.segments_per_level) - 1

    def add(self, level: int, scores: Tensor, occluded: Tensor) -> None:
        self._check_bound()
        flags = occluded.to(device=self.device, dtype=torch.float64)
        s = scores.to(device=self.device, dtype=torch.float64)
        self.occluded_sum[level].addmm_(s.T, flags)
        self.occluded_sq[level].addmm_(s.square().T, flags)
        self.occluded_count[level] += flags.sum(dim=0)
        self.total_sum[level] += s.sum(dim=0)
        self.total_sq[level] += s.square().sum(dim=0)
        self.total_count[level] += s.shape[0]

    def _sums(self) -> list[list[Tensor]]:
        return [
            self.occluded_sum,
            self.occluded_sq,
            self.occluded_count,
            self.total_sum,
            self.total_sq,
            self.total_count,
        ]

    def merge(self, other: Estimator) -> None:
        if not isinstance(other, ReferenceEstimator) or other.segments_per_level != self.segments_per_level:
            raise InputError("can only merge an estimator of the same kind bound to the same levels")
        for mine, theirs in zip(self._sums(), other._sums()):
            for a, b in zip(mine, theirs):
                a += b

    def masks_seen(self) -> int:
        return int(sum(float(c) for c in self.total_count))

    def unit_statistics(self, unit_segments: Tensor) -> dict[str, Tensor]:
        r"""Pooled sums per unit: occluded and kept counts, sums and sums of squares.

        Args:
            unit_segments (Tensor): long ``(num_levels, num_units)``, each unit's segment per level.

        Returns:
            *dict* of ``n_occ``, ``n_kept`` ``(U,)`` and ``sum_occ``, ``sq_occ``,
            ``sum_kept``, ``sq_kept`` ``(num_targets, U)``, all float64.
        """
        self._check_bound()
        segs = unit_segments.to(self.device)
        n_occ = sum(c[segs[i]] for i, c in enumerate(self.occluded_count))
        sum_occ = sum(s[:, segs[i]] for i, s in enumerate(self.occluded_sum))
        sq_occ = sum(q[:, segs[i]] for i, q in enumerate(self.occluded_sq))
        n_kept = sum(n - c[segs[i]] for i, (n, c) in enumerate(zip(self.total_count, self.occluded_count)))
        sum_kept = sum(t[:, None] - s[:, segs[i]] for i, (t, s) in enumerate(zip(self.total_sum, self.occluded_sum)))
        sq_kept = sum(t[:, None] - q[:, segs[i]] for i, (t, q) in enumerate(zip(self.total_sq, self.occluded_sq)))
        return {
            "n_occ": n_occ,
            "n_kept": n_kept,
            "sum_occ": sum_occ,
            "sq_occ": sq_occ,
            "sum_kept": sum_kept,
            "sq_kept": sq_kept,
        }

    def level_statistics(self, level: int) -> dict[str, Tensor]:
        r"""Per segment of one level alone: the occluded-minus-kept mean impact, its standard
        error, Welch's z and the occlusion counts, each ``(num_targets, num_segments)``
        (counts ``(num_segments,)``)."""
        self._check_bound()
        n_occ = self.occluded_count[level]
        n_kept = self.total_count[level] - n_occ
        mean_occ, var_occ = mean_and_variance(self.occluded_sum[level], self.occluded_sq[level], n_occ)
        mean_kept, var_kept = mean_and_variance(
            self.total_sum[level][:, None] - self.occluded_sum[level],
            self.total_sq[level][:, None] - self.occluded_sq[level],
            n_kept,
        )
        effect = mean_occ - mean_kept
        return {
            "effect": effect,
            "standard_error": (var_occ / n_occ + var_kept / n_kept).sqrt(),
            "z": welch_z(effect, var_occ, n_occ, var_kept, n_kept),
            "occluded": n_occ,
        }

    def finalize(self, labels: Sequence[Tensor]) -> Estimate:
        self._check_bound()
        if len(labels) != len(self.segments_per_level):
            raise InputError(f"expected {len(self.segments_per_level)} label maps (one per level), got {len(labels)}")
        units, unit_segments = units_of([lv.to(self.device) for lv in labels])
        st = self.unit_statistics(unit_segments)
        mean_occ, var_occ = mean_and_variance(st["sum_occ"], st["sq_occ"], st["n_occ"])
        mean_kept, var_kept = mean_and_variance(st["sum_kept"], st["sq_kept"], st["n_kept"])
        attribution_units = torch.where(st["n_occ"] > 0, mean_occ, torch.zeros_like(mean_occ))
        standard_error = (var_occ / st["n_occ"]).sqrt()
        z = welch_z(mean_occ - mean_kept, var_occ, st["n_occ"], var_kept, st["n_kept"])
        attribution = attribution_units.to(torch.float32)[:, units.reshape(-1)].reshape(-1, *units.shape)
        return Estimate(
            attribution=attribution,
            units=units,
            standard_error=standard_error.to(torch.float32),
            z=z.to(torch.float32),
            occluded=st["n_occ"],
            info=self.config(),
        )


def mean_and_variance(total: Tensor, squares: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean and sample variance (``n - 1``) from streamed sums; NaN where undefined.

    Args:
        total, squares (Tensor): sums of values and of squared values, ``(rows, units)``.
        count (Tensor): number of values per unit, ``(units,)``.
    """
    n = count.to(total.dtype)
    mean = torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("nan")))
    # (sum x^2 - n mean^2) / (n - 1), floored at 0 against cancellation.
    variance = ((squares - n * mean.square()) / (n - 1).clamp_min(1)).clamp_min(0)
    variance = torch.where(n > 1, variance, torch.full_like(variance, float("nan")))
    return mean, variance


def welch_z(difference: Tensor, var_a: Tensor, n_a: Tensor, var_b: Tensor, n_b: Tensor) -> Tensor:
    r"""``difference / sqrt(var_a / n_a + var_b / n_b)``; NaN where a group has < 2 values,
    0 where both groups are constant and equal, ±inf where constant groups differ."""
    variance = var_a / n_a + var_b / n_b
    z = difference / variance.sqrt()
    constant = variance == 0
    z = torch.where(constant & (difference == 0), torch.zeros_like(z), z)
    return z


ESTIMATORS: dict[str, Callable[[], Estimator]] = {
    "reference": ReferenceEstimator,
}


def register_estimator(name: str, factory: Callable[[], Estimator]) -> None:
    """Make ``estimator=name`` use ``factory()`` (an :class:`Estimator` with its settings)."""
    if not isinstance(name, str) or not name:
        raise InputError("name must be a non-empty string")
    if not callable(factory):
        raise InputTypeError("factory must be callable and return an Estimator")
    ESTIMATORS[name] = factory


def resolve_estimator(estimator: str | Estimator) -> Estimator:
    """An :class:`Estimator` (with settings, not yet bound) from a registered name or an instance."""
    if isinstance(estimator, Estimator):
        return estimator
    if isinstance(estimator, str) and estimator in ESTIMATORS:
        return ESTIMATORS[estimator]()
    raise InputError(
        f"estimator={estimator!r} is not a registered estimator; choose one of {sorted(ESTIMATORS)} "
        "or pass an Estimator instance"
    )
