#!/usr/bin/env python3
r"""Seeded random masks for SPES, independent of batching and device.

Masks are drawn on the CPU with NumPy's PCG64, one stream per level and one for tokens,
each seeded from ``(seed, stream)``. Mask ``j`` of a level is always the ``j``-th draw of its
stream, so any batch size (``perturbations_per_eval``) and any device give the same masks.
An element is occluded iff ``U < p`` with ``U ~ Uniform[0, 1)`` (one rule, no inversion).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from captum_spes.errors import InputError

__all__ = ["split_masks_across_levels", "MaskBatch", "MaskSampler"]

_SPECTROGRAM_STREAM = 0
_TOKEN_STREAM = 1
_ROUND_STREAM = 2
_STAGE_STREAM = 3


def split_masks_across_levels(n_masks: int, num_levels: int) -> list[int]:
    """Masks per level: consecutive blocks, the remainder spread over the first levels.

    Unlike the reference, which lowers ``n_masks`` to a multiple of the level count
    (20000 masks over 3 levels became 19 998), exactly ``n_masks`` masks are used.
    """
    if num_levels < 1:
        raise InputError("there must be at least one mask level")
    if n_masks < num_levels:
        raise InputError(
            f"n_masks={n_masks} is smaller than the number of mask levels ({num_levels}); "
            "every level needs at least one mask: raise n_masks or use fewer levels"
        )
    base, extra = divmod(n_masks, num_levels)
    return [base + (1 if level < extra else 0) for level in range(num_levels)]


@dataclass
class MaskBatch:
    """Consecutive masks ``start .. start + size - 1`` of one attribution call.

    Attributes:
        start (int): index of the first mask.
        level_rows (list of (level, row indices, occluded)): for each level present in the
            batch, the rows of the batch that use it and their occlusion flags at segment
            resolution, a bool tensor ``(len(rows), num_segments)``.
        token_occluded (Tensor, optional): bool ``(size, num_decoder_inputs)``, True where a
            decoder input embedding is zeroed.
    """

    start: int
    size: int
    level_rows: list[tuple]
    token_occluded: Tensor | None

    def split(self, size: int) -> list[MaskBatch]:
        """Consecutive pieces of at most ``size`` masks (the same masks, in the same order)."""
        pieces = []
        for first in range(0, self.size, size):
            last = min(first + size, self.size)
            level_rows = []
            for level, rows, occluded in self.level_rows:
                inside = (rows >= first) & (rows < last)
                if inside.any():
                    level_rows.append((level, rows[inside] - first, occluded[inside]))
            tokens = None if self.token_occluded is None else self.token_occluded[first:last]
            pieces.append(MaskBatch(self.start + first, last - first, level_rows, tokens))
        return pieces


class MaskSampler:
    """Draws the occlusion flags of all masks of one utterance, in a fixed order.

    Args:
        segments_per_level (sequence of int): segment counts of the spectrogram levels;
            empty for token-only masks.
        masks_per_level (sequence of int): how many masks use each level (blocks in order).
        p (float or None): probability that a spectrogram segment is occluded.
        token_p (float or None): probability that a decoder input is occluded, or None.
        num_tokens (int): decoder inputs that can be occluded (columns of the token map).
        seed (int): base seed.
        token_maskable (Tensor, optional): bool ``(num_tokens,)``; False columns are never
            occluded (e.g. forced prompt tokens when they are kept fixed).
        round_index (int, optional): round of adaptive sampling; each round has its own
            streams. Default: None (one fixed-size run)
        probabilities (sequence of Tensor or None, optional): per level, an occlusion
            probability per segment ``(num_segments,)`` replacing ``p`` (0 = never occluded),
            or None for ``p`` everywhere. Default: None
        stage (int, optional): stage of a multi-stage design (e.g. coarse-to-fine); each
            stage has its own streams, like adaptive rounds. Default: None
    """

    def __init__(
        self,
        segments_per_level: Sequence[int],
        masks_per_level: Sequence[int],
        p: float | None,
        token_p: float | None,
        num_tokens: int,
        seed: int,
        token_maskable: Tensor | None = None,
        round_index: int | None = None,
        probabilities: Sequence[Tensor | None] | None = None,
        stage: int | None = None,
    ) -> None:
        self.segments_per_level = list(segments_per_level)
        self.masks_per_level = list(masks_per_level)
        self.p = p
        self.token_p = token_p
        self.num_tokens = num_tokens
        self.token_maskable = token_maskable
        self.n_masks = sum(self.masks_per_level)
        # Adaptive sampling draws its rounds from streams of their own, so round r's masks do
        # not depend on how many rounds came before.
        prefix = () if round_index is None else (_ROUND_STREAM, round_index)
        if stage is not None:
            prefix = (_STAGE_STREAM, stage, *prefix)
        self.probabilities = list(probabilities) if probabilities is not None else [None] * len(self.segments_per_level)
        if len(self.probabilities) != len(self.segments_per_level):
            raise InputError("probabilities must give one entry (or None) per level")
        for level, (probs, count) in enumerate(zip(self.probabilities, self.segments_per_level)):
            if probs is not None and tuple(probs.shape) != (count,):
                raise InputError(f"probabilities[{level}] must have shape ({count},), got {tuple(probs.shape)}")
        self._level_rngs = [
            np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(seed, spawn_key=prefix + (_SPECTROGRAM_STREAM, level)))
            )
            for level in range(len(self.segments_per_level))
        ]
        self._token_rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=prefix + (_TOKEN_STREAM,)))
        )
        starts = np.cumsum([0] + self.masks_per_level)
        self._level_starts = starts

    def batches(self, batch_size: int) -> Iterator[MaskBatch]:
        """Yield the masks in order, ``batch_size`` at a time (the last batch may be smaller)."""
        for start in range(0, self.n_masks, batch_size):
            stop = min(start + batch_size, self.n_masks)
            level_rows = []
            for level, rng in enumerate(self._level_rngs):
                lo = max(start, int(self._level_starts[level]))
                hi = min(stop, int(self._level_starts[level + 1]))
                if lo >= hi:
                    continue
                draws = rng.random((hi - lo, self.segments_per_level[level]))
                probs = self.probabilities[level]
                threshold = self.p if probs is None else probs.detach().cpu().double().numpy()[None, :]
                occluded = torch.from_numpy(draws < threshold)
                rows = torch.arange(lo - start, hi - start)
                level_rows.append((level, rows, occluded))
            token_occluded = None
            if self.token_p is not None:
                draws = self._token_rng.random((stop - start, self.num_tokens))
                token_occluded = torch.from_numpy(draws < self.token_p)
                if self.token_maskable is not None:
                    token_occluded &= self.token_maskable[None, :].cpu()
            yield MaskBatch(start, stop - start, level_rows, token_occluded)
