#!/usr/bin/env python3
r"""Streaming SPES estimator: running sums of impact x occlusion, by matrix products.

Each element's score is the mean impact over the masks in which it was occluded,
``S[k, e] = sum_n s[n, k] O[n, e] / sum_n O[n, e]`` (0 where never occluded). Because a mask
is constant on the segments of its level, the sums are kept at segment resolution,
``(num_targets, num_segments)`` per level, and scattered to elements once at the end: memory
does not depend on the number of masks, and no masks x tokens x frames x mels tensor exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["SegmentAccumulator"]


class SegmentAccumulator:
    """Running sums for several segmentations of one input (or decoder-input columns).

    Args:
        num_targets (int): explained positions (rows of the maps).
        segments_per_level (sequence of int): segment count of each level.
        device (torch.device): where the sums live.

    Sums are kept in float64 so that the order in which masks arrive (the batch size)
    changes the result only at the last bits.
    """

    def __init__(self, num_targets: int, segments_per_level: Sequence[int], device: torch.device) -> None:
        self.numerators = [torch.zeros(num_targets, n, dtype=torch.float64, device=device) for n in segments_per_level]
        self.counts = [torch.zeros(n, dtype=torch.float64, device=device) for n in segments_per_level]

    def add(self, level: int, scores: Tensor, occluded: Tensor) -> None:
        """Add a batch of masks of one level.

        Args:
            level (int): level index.
            scores (Tensor): impacts ``(batch, num_targets)``.
            occluded (Tensor): flags ``(batch, num_segments)``, 1 where occluded.
        """
        flags = occluded.to(device=self.counts[level].device, dtype=torch.float64)
        self.numerators[level].addmm_(scores.to(torch.float64).T, flags)
        self.counts[level] += flags.sum(dim=0)

    def merge(self, other: SegmentAccumulator) -> None:
        """Add another accumulator's sums (same targets and levels) to this one."""
        for mine, theirs in zip(self.numerators + self.counts, other.numerators + other.counts):
            mine += theirs

    def finalize(self, labels: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Scatter the sums to elements and divide.

        Args:
            labels (sequence of Tensor): per level, a long tensor of any shape ``S`` mapping
                each element to its segment id.

        Returns:
            *tuple* of the mean-impact map ``(num_targets, *S)`` (float32, 0 where never
            occluded) and the occlusion counts ``S`` (float64).
        """
        numerator = None
        count = None
        for level_labels, num, cnt in zip(labels, self.numerators, self.counts):
            flat = level_labels.reshape(-1).to(num.device)
            part_num = num[:, flat]
            part_cnt = cnt[flat]
            numerator = part_num if numerator is None else numerator + part_num
            count = part_cnt if count is None else count + part_cnt
        assert numerator is not None and count is not None
        mean = torch.where(count > 0, numerator / count.clamp_min(1), torch.zeros_like(numerator))
        shape = tuple(labels[0].shape)
        return mean.to(torch.float32).reshape(-1, *shape), count.reshape(shape)

    def segment_means(self) -> list[Tensor]:
        """Per-level mean impact at segment resolution, ``(num_targets, num_segments)``."""
        return [
            torch.where(c > 0, n / c.clamp_min(1), torch.zeros_like(n)) for n, c in zip(self.numerators, self.counts)
        ]
