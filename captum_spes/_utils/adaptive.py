#!/usr/bin/env python3
r"""Adaptive number of masks: sample in rounds until the map is reliable.

The paper's configuration spends 20 000 forward passes per utterance. With
``n_masks="auto"`` (or an :class:`AdaptiveMasks`) SPES samples rounds of masks, alternating
them between two halves, and after each round measures the *split-half reliability* of the
spectrogram map: the Pearson correlation ``r`` between the two half-maps (all tokens, at
segment resolution, every level), stepped up to the full map with the Spearman-Brown
formula ``2r / (1 + r)``. Sampling stops when the reliability reaches ``threshold`` or when
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
    """Spearman-Brown corrected Pearson correlation of two half-maps.

    Args:
        first, second (list of Tensor): per level, mean impacts ``(num_tokens, num_segments)``.

    Returns:
        *float* in [-1, 1]; 0 when either half is constant.
    """
    a = torch.cat([t.reshape(-1) for t in first]).to(torch.float64)
    b = torch.cat([t.reshape(-1) for t in second]).to(torch.float64)
    a = a - a.mean()
    b = b - b.mean()
    denominator = (a.square().sum() * b.square().sum()).sqrt()
    if denominator == 0:
        return 0.0
    r = float((a * b).sum() / denominator)
    return 2 * r / (1 + r) if r > -1 else -1.0
