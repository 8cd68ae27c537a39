#!/usr/bin/env python3
r"""Adaptive number of masks: sample in rounds until the explanation's top is stable.

The paper's configuration spends 20 000 forward passes per utterance. With
``n_masks="auto"`` (or an :class:`AdaptiveMasks`) SPES samples rounds of masks, alternating
them between two half accumulators, and after every round from the second on compares the
two half-maps with three statistics. All are recorded in ``metadata["adaptive"]["history"]``;
sampling stops when the one selected by ``criterion`` reaches ``threshold``, or when
``max_masks`` masks have been used.

``criterion="utterance_top_overlap"`` (default), :func:`split_half_utterance_overlap`
    The share of the ``top_percent`` % highest elements of one half's *utterance map* (each
    token's map normalised as the reference evaluation does, then averaged over tokens:
    the map deletion and insertion rank) that are also in the other half's top.

``criterion="top_overlap"``, :func:`split_half_top_overlap`
    The same overlap for each token's own map, averaged over tokens: whether the halves
    agree on *where* each token's evidence is.

``criterion="significant_top"``, :func:`significant_top_share`
    Not a split-half statistic: on all masks so far, the share of each token's top
    ``top_percent`` % elements that are significant at ``alpha`` (Benjamini-Hochberg per token,
    :meth:`SPESResult.significance`), averaged over tokens: whether what a user reads first is
    separated from the Monte-Carlo noise with confidence.

``criterion="reliability"``, :func:`split_half_reliability`
    The Pearson correlation between the two half-maps of each token (segment resolution,
    every level), averaged over tokens to ``r`` and stepped up to the full map with the
    Spearman-Brown formula ``2r / (1 + r)``: whether the *whole* map is reproducible.

Why the default: measured on real speech with Whisper tiny.en (docs/results.md, sections 4
and 5), no whole-map statistic converges within the published 20 000 masks -- two
20 000-mask maps of one utterance agree at a per-token Spearman of 0.32 -- because most
elements have no effect on a token and their order is Monte-Carlo noise. What users read
(the top of the map) and what the evaluation measures (deletion, pointing game) settle far
earlier, and the utterance map's top tracks them. The default thresholds live in
:data:`DEFAULT_THRESHOLDS` and were calibrated as docs/results.md section 5 describes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from captum_spes._utils.sampling import split_masks_across_levels
from captum_spes.errors import InputError
from captum_spes.normalizers import normalize_reference

if TYPE_CHECKING:
    from captum_spes._core.estimators import Estimate, Estimator

#: runs one round: ``(masks per level, round index, half estimator)``
RoundFn = Callable[[Sequence[int], int, "Estimator"], None]

__all__ = [
    "DEFAULT_THRESHOLDS",
    "AdaptiveMasks",
    "run_adaptive",
    "significant_top_share",
    "split_half_reliability",
    "split_half_top_overlap",
    "split_half_utterance_overlap",
]

#: Threshold used when ``AdaptiveMasks(threshold=None)``, per criterion. The overlaps' values
#: are what the split-half statistics reach at about 2000 masks on 3 s LibriVox clips with
#: Whisper tiny.en, the budget at which deletion AUC and the pointing game match a
#: 20 000-mask map there (docs/results.md, sections 4 and 5). Change them here only.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "utterance_top_overlap": 0.25,
    "top_overlap": 0.2,
    "reliability": 0.95,
    "significant_top": 0.9,
}

#: name of the statistic reported in ``config()["criterion"]``, per criterion
STATISTIC_NAMES: dict[str, str] = {
    "utterance_top_overlap": "split_half_utterance_top_overlap",
    "top_overlap": "split_half_top_overlap",
    "reliability": "split_half_reliability_spearman_brown",
    "significant_top": "significant_share_of_the_top",
}


@dataclass(frozen=True)
class AdaptiveMasks:
    """Stopping rule for ``n_masks="auto"``.

    Args:
        criterion (str): the statistic that decides when to stop:
            ``"utterance_top_overlap"`` (split-half overlap of the utterance map's top
            ``top_percent`` % elements, :func:`split_half_utterance_overlap`),
            ``"top_overlap"`` (the same per token, :func:`split_half_top_overlap`) or
            ``"reliability"`` (Spearman-Brown corrected split-half correlation of the whole
            map, :func:`split_half_reliability`) or ``"significant_top"`` (the share of each
            token's top that is significant, :func:`significant_top_share`). All four are
            computed and recorded.
            Default: "utterance_top_overlap"
        threshold (float or None): value of the criterion to reach. None takes the
            criterion's default from :data:`DEFAULT_THRESHOLDS`. Must be in (0, 1) for
            ``"reliability"`` and in (0, 1] for the overlaps. Tokens whose map is constant
            (no spectrogram effect) count as 0 in ``"top_overlap"``, so with such tokens its
            mean cannot reach 1. Default: None
        top_percent (float): percentage of each token's elements that make its top, in
            (0, 100]. Default: 5.0
        round_size (int): masks per round, split over the levels. Default: 256
        max_masks (int): cap; the published configuration's 20 000. Default: 20000
        min_masks (int): never stop before this many. Default: 512
    """

    criterion: str = "utterance_top_overlap"
    threshold: float | None = None
    top_percent: float = 5.0
    round_size: int = 256
    max_masks: int = 20000
    min_masks: int = 512

    def __post_init__(self) -> None:
        if not isinstance(self.criterion, str) or self.criterion not in DEFAULT_THRESHOLDS:
            raise InputError(
                f'criterion must be one of {sorted(DEFAULT_THRESHOLDS)} (default "utterance_top_overlap"), '
                f"got {self.criterion!r}"
            )
        if self.threshold is not None:
            value = self.threshold
            upper_closed = self.criterion != "reliability"
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0.0 < value < 1.0 or (upper_closed and value == 1.0))
            ):
                interval = "(0, 1]" if upper_closed else "(0, 1)"
                raise InputError(
                    f"threshold must be in {interval} for criterion {self.criterion!r}, or None for "
                    f"the criterion's default ({DEFAULT_THRESHOLDS[self.criterion]}); got {value!r}"
                )
        tp = self.top_percent
        if isinstance(tp, bool) or not isinstance(tp, (int, float)) or not 0.0 < tp <= 100.0:
            raise InputError(f"top_percent must be a percentage in (0, 100], e.g. 5.0; got {tp!r}")
        for name in ("round_size", "max_masks", "min_masks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        if self.min_masks > self.max_masks:
            raise InputError(
                f"min_masks ({self.min_masks}) exceeds max_masks ({self.max_masks}); lower min_masks or raise max_masks"
            )

    @property
    def resolved_threshold(self) -> float:
        """``threshold``, or the criterion's default from :data:`DEFAULT_THRESHOLDS` if None."""
        return float(DEFAULT_THRESHOLDS[self.criterion] if self.threshold is None else self.threshold)

    def config(self) -> dict[str, Any]:
        """The rule for the metadata: ``criterion`` names the statistic, ``stop_on`` is the
        ``criterion`` argument, ``threshold`` the resolved value (``threshold_default`` says
        whether it was the criterion's default)."""
        fields = asdict(self)
        fields.pop("criterion")
        fields.pop("threshold")
        return {
            "criterion": STATISTIC_NAMES[self.criterion],
            "stop_on": self.criterion,
            "threshold": self.resolved_threshold,
            "threshold_default": self.threshold is None,
            **fields,
        }


def split_half_reliability(first: list[Tensor], second: list[Tensor]) -> float:
    """Spearman-Brown corrected split-half correlation of two half-maps.

    The Pearson correlation is computed per explained token (each row centred on its own
    mean, all levels' segments together) and averaged over tokens: pooling the tokens would
    reward the differences in scale between tokens' maps, which are there after a few masks,
    instead of the spatial pattern of each map.

    Args:
        first, second (list of Tensor): per level, mean impacts ``(num_tokens, num_segments)``.

    Returns:
        *float* in [-1, 1]; rows that are constant in either half count as 0.
    """
    a = torch.cat([t.to(torch.float64) for t in first], dim=1)
    b = torch.cat([t.to(torch.float64) for t in second], dim=1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    rows = torch.where(
        denominator > 0, (a * b).sum(dim=1) / denominator.clamp_min(1e-300), torch.zeros_like(denominator)
    )
    r = float(rows.mean())
    return 2 * r / (1 + r) if r > -1 else -1.0


def _top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean ``(rows, n)`` mask of each row's ``k`` largest entries; among entries equal to
    the ``k``-th largest value the lowest indices are taken, so the set does not depend on
    the device or on ``torch.topk``'s order for ties."""
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    missing = k - above.sum(dim=1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=1) <= missing))


def split_half_top_overlap(
    first_maps: Tensor, second_maps: Tensor, top_percent: float, valid: Tensor | None = None
) -> float:
    """Mean over tokens of the overlap between the two half-maps' top elements.

    For each token the top ``k = max(1, round(n_valid * top_percent / 100))`` elements
    (rounded half up) of each half are taken, and the overlap is ``|A ∩ B| / k``. Ties at
    the ``k``-th value are broken by position (lowest flattened index first), the same way
    in both halves and on every device.

    Args:
        first_maps, second_maps (Tensor): the two half-maps at element resolution,
            ``(num_tokens, ...)``, e.g. ``(num_tokens, n_mels, n_frames)``.
        top_percent (float): size of the top, in percent of the valid elements, in (0, 100].
        valid (Tensor, optional): bool mask shaped like the maps' trailing dimensions,
            True for the elements that count (e.g. the speech frames). Default: all.

    Returns:
        *float* in [0, 1]. A token whose map is constant (over the valid elements) in either
        half has no top and counts as 0 overlap.
    """
    if first_maps.shape != second_maps.shape or first_maps.dim() < 2:
        raise InputError(
            "first_maps and second_maps must have the same shape (num_tokens, ...), got "
            f"{tuple(first_maps.shape)} and {tuple(second_maps.shape)}"
        )
    if isinstance(top_percent, bool) or not isinstance(top_percent, (int, float)) or not 0.0 < top_percent <= 100.0:
        raise InputError(f"top_percent must be a percentage in (0, 100], e.g. 5.0; got {top_percent!r}")
    num_tokens = first_maps.shape[0]
    a = first_maps.reshape(num_tokens, -1)
    b = second_maps.reshape(num_tokens, -1)
    if valid is not None:
        if valid.dtype != torch.bool or tuple(valid.shape) != tuple(first_maps.shape[1:]):
            raise InputError(
                f"valid must be a bool mask of shape {tuple(first_maps.shape[1:])} (the maps' "
                f"trailing dimensions), got {valid.dtype} {tuple(valid.shape)}"
            )
        keep = valid.reshape(-1).to(a.device)
        a, b = a[:, keep], b[:, keep]
    n_valid = a.shape[1]
    if n_valid == 0 or num_tokens == 0:
        raise InputError("split_half_top_overlap needs at least one token and one valid element")
    k = min(n_valid, max(1, math.floor(n_valid * top_percent / 100 + 0.5)))
    shared = (_top_k_mask(a, k) & _top_k_mask(b, k)).sum(dim=1).to(torch.float64) / k
    informative = (a.amax(dim=1) > a.amin(dim=1)) & (b.amax(dim=1) > b.amin(dim=1))
    return float(torch.where(informative, shared, torch.zeros_like(shared)).mean())


def split_half_utterance_overlap(first_maps: Tensor, second_maps: Tensor, top_percent: float) -> float:
    """Overlap of the top ``top_percent`` % elements of the two halves' utterance maps.

    The utterance map is the one deletion and insertion rank: each token's map normalised as
    the reference evaluation does (:func:`~captum_spes.normalizers.normalize_reference`),
    then averaged over tokens.

    Args:
        first_maps, second_maps (Tensor): the two half-maps, ``(num_tokens, n_mels, n_frames)``.
        top_percent (float): size of the top, in percent of the elements, in (0, 100].

    Returns:
        *float* in [0, 1]; 0 when either utterance map is constant.
    """
    if first_maps.shape != second_maps.shape or first_maps.dim() < 2:
        raise InputError(
            "first_maps and second_maps must have the same shape (num_tokens, ...), got "
            f"{tuple(first_maps.shape)} and {tuple(second_maps.shape)}"
        )
    first = normalize_reference(first_maps)[0].mean(dim=0, keepdim=True)
    second = normalize_reference(second_maps)[0].mean(dim=0, keepdim=True)
    return split_half_top_overlap(first, second, top_percent)


def run_adaptive(
    rule: AdaptiveMasks, estimator: Estimator, labels: Sequence[Tensor], run_round: RoundFn
) -> tuple[list[int], dict[str, Any]]:
    r"""Sample rounds of masks into two halves until ``rule`` is met; merge them into ``estimator``.

    Rounds alternate between two empty copies of ``estimator``. After every round from the
    second on, the three split-half statistics are computed on the halves' maps (the
    reliability at unit resolution, the overlaps on the element maps over the speech frames)
    and recorded; sampling stops when the selected criterion reaches its threshold (and at
    least ``rule.min_masks`` masks were used) or when the cap is hit.

    Args:
        rule (AdaptiveMasks): the stopping rule.
        estimator (Estimator): bound to the utterance; receives both halves at the end.
        labels (sequence of Tensor): per level, the segment ids of every element.
        run_round (callable): ``run_round(masks_per_level, round_index, half)`` draws the
            round's masks (from the round's own seeded streams) and adds them to ``half``.

    Returns:
        *tuple* of the masks used per level and the description for ``metadata["adaptive"]``.
    """
    num_levels = len(labels)
    if rule.round_size < num_levels:
        raise InputError(
            f"AdaptiveMasks(round_size={rule.round_size}) is smaller than the number of mask levels "
            f"({num_levels}): every round needs at least one mask per level; raise round_size (default 256)"
        )
    if rule.max_masks < 2 * rule.round_size:
        raise InputError(
            f"AdaptiveMasks(max_masks={rule.max_masks}) allows fewer than two rounds of {rule.round_size} masks; "
            "the split halves need one round each: raise max_masks or lower round_size"
        )
    halves = [estimator.empty_like(), estimator.empty_like()]
    threshold = rule.resolved_threshold
    used = [0] * num_levels
    history: list[dict[str, float]] = []
    statistics = {name: float("nan") for name in DEFAULT_THRESHOLDS}
    round_index = 0
    while sum(used) < rule.max_masks:
        size = min(rule.round_size, rule.max_masks - sum(used))
        if size < num_levels:
            break  # a last partial round too small for every level: stop at the cap
        per_level = split_masks_across_levels(size, num_levels)
        run_round(per_level, round_index, halves[round_index % 2])
        used = [u + n for u, n in zip(used, per_level)]
        round_index += 1
        if round_index < 2:
            continue
        first, second = halves[0].finalize(labels), halves[1].finalize(labels)
        statistics["reliability"] = split_half_reliability([first.unit_attribution], [second.unit_attribution])
        statistics["top_overlap"] = split_half_top_overlap(first.attribution, second.attribution, rule.top_percent)
        statistics["utterance_top_overlap"] = split_half_utterance_overlap(
            first.attribution, second.attribution, rule.top_percent
        )
        pooled = halves[0].empty_like()
        pooled.merge(halves[0])
        pooled.merge(halves[1])
        statistics["significant_top"] = significant_top_share(pooled.finalize(labels), rule.top_percent)
        del first, second, pooled
        history.append({"masks": sum(used), **statistics})
        if sum(used) >= rule.min_masks and statistics[rule.criterion] >= threshold:
            break
    for half in halves:
        estimator.merge(half)
    statistic = statistics[rule.criterion]
    info = {
        **rule.config(),
        "statistic": statistic,
        **statistics,
        "converged": bool(statistic >= threshold),
        "masks_used": sum(used),
        "rounds": round_index,
        "history": history,
    }
    return used, info


def significant_top_share(estimate: Estimate, top_percent: float, alpha: float = 0.05) -> float:
    r"""Mean over tokens of the share of the token's top ``top_percent`` % elements (expected,
    under random tie-breaking) that are significant at ``alpha`` (Benjamini-Hochberg over the
    token's units, one-sided).

    Args:
        estimate (Estimate): an estimator's output.
        top_percent (float): size of the top, in (0, 100].
        alpha (float, optional): level. Default: 0.05

    Returns:
        *float* in [0, 1]: 1 when every token's top is distinguishable from noise.
    """
    from captum_spes.metrics.stability import top_membership
    from captum_spes.statistics import significant

    maps = estimate.attribution.reshape(estimate.attribution.shape[0], -1)
    k = min(maps.shape[1], max(1, math.floor(maps.shape[1] * top_percent / 100 + 0.5)))
    membership = top_membership(maps, k)
    found = significant(estimate.z, alpha)[:, estimate.units.reshape(-1).to(estimate.z.device)]
    return float(((membership * found.to(membership.dtype)).sum(dim=1) / k).mean())
