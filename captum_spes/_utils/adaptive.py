#!/usr/bin/env python3
r"""Adaptive number of masks: sample in rounds until the map is reliable.

The paper's configuration spends 20 000 forward passes per utterance. With
``n_masks="auto"`` (or an :class:`AdaptiveMasks`) SPES samples rounds of masks, alternating
them between two halves, and after each round measures the *split-half reliability* of the
spectrogram map: the Pearson correlation between the two half-maps of each token (at segment
resolution, every level), averaged over tokens to ``r`` and stepped up to the full map with
the Spearman-Brown formula ``2r / (1 + r)``. Sampling stops when the reliability reaches ``threshold`` or when
``max_masks`` masks have been used. Both values and the history go into the metadata.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List

import torch
from torch import Tensor

__all__ = ["AdaptiveMasks", "split_half_reliability"]


@dataclass(frozen=True)
class AdaptiveMasks:
    """Stopping rule for ``n_masks="auto"``.

    Args:
        threshold (float): split-half reliability (Spearman-Brown corrected) to reach, in
            (0, 1). Default: 0.95
        round_size (int): masks per round, split over the levels. Default: 256
        max_masks (int): cap; the published configuration's 20 000. Default: 20000
        min_masks (int): never stop before this many. Default: 512
    """

    threshold: float = 0.95
    round_size: int = 256
    max_masks: int = 20000
    min_masks: int = 512

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        for name in ("round_size", "max_masks", "min_masks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.min_masks > self.max_masks:
            raise ValueError(f"min_masks ({self.min_masks}) exceeds max_masks ({self.max_masks})")

    def config(self) -> Dict[str, Any]:
        return {"criterion": "split_half_reliability_spearman_brown", **asdict(self)}


def split_half_reliability(first: List[Tensor], second: List[Tensor]) -> float:
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
    rows = torch.where(denominator > 0, (a * b).sum(dim=1) / denominator.clamp_min(1e-300), torch.zeros_like(denominator))
    r = float(rows.mean())
    return 2 * r / (1 + r) if r > -1 else -1.0
