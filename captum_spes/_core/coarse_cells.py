r"""The coarse cells of :class:`~captum_spes._core.coarse_to_fine.CoarseToFine`: cells cut from
the speech frames (SLIC superpixels or a grid of bands), shifted copies of them, and the
nesting of the mask family's segments into them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from captum_spes.masks import SLICMasks

if TYPE_CHECKING:
    from captum_spes._core.utterance import Utterance

__all__ = ["coarse_labels", "nest", "shift_offsets"]


def nest(fine: Tensor, coarse: Tensor) -> Tensor:
    r"""The coarse segment of every fine segment: the one that holds most of its elements.

    Args:
        fine, coarse (Tensor): long label maps of the same shape, ids ``0 .. n - 1``.

    Returns:
        *Tensor* long ``(num_fine,)`` with coarse ids renumbered ``0 .. C - 1`` in order (a
        coarse segment that receives no fine segment disappears).
    """
    num_fine, num_coarse = int(fine.max()) + 1, int(coarse.max()) + 1
    counts = torch.zeros(num_fine * num_coarse, dtype=torch.long)
    counts.index_add_(
        0, (fine.reshape(-1) * num_coarse + coarse.reshape(-1)).long(), torch.ones(fine.numel(), dtype=torch.long)
    )
    parent = counts.reshape(num_fine, num_coarse).argmax(dim=1)
    return torch.unique(parent, return_inverse=True)[1]


def shift_offsets(cells: Tensor, partitions: int) -> list[int]:
    """Time offsets in frames of ``partitions`` shifted partitions: ``round(k * w / partitions)``
    for ``k = 0 .. partitions - 1``, ``w`` the median width in frames of the cells of ``cells``
    (long ``(n_mels, n_frames)``)."""
    if partitions == 1:
        return [0]
    frames = torch.arange(cells.shape[1]).expand_as(cells).reshape(-1)
    flat = cells.reshape(-1)
    num_cells = int(flat.max()) + 1
    first = torch.full((num_cells,), cells.shape[1], dtype=torch.long).scatter_reduce(0, flat, frames, reduce="amin")
    last = torch.full((num_cells,), -1, dtype=torch.long).scatter_reduce(0, flat, frames, reduce="amax")
    width = float((last - first + 1).float().median())
    return [round(k * width / partitions) for k in range(partitions)]


def coarse_labels(
    utterance: Utterance, num_cells: int, frequency_bands: int | None, time_spacing: float = 1.0, offset: int = 0
) -> Tensor:
    """About ``num_cells`` coarse cells of the speech frames, ``(n_mels, num_frames)``: SLIC
    superpixels (published compactness and sigma; ``time_spacing`` as in :class:`SLICMasks`),
    or a grid of ``frequency_bands`` equal mel bands times equal time slices; ``offset`` frames
    shift the cells in time (SLIC of the speech with ``offset`` mirrored frames before it, as
    many cells per frame, cut back; the grid's slice boundaries ``offset`` frames earlier)."""
    speech = utterance.speech.detach().float().cpu()
    n_mels, num_frames = speech.shape
    if frequency_bands is None:
        offset = min(offset, num_frames - 1)
        padded = torch.cat([speech[:, 1 : offset + 1].flip(1), speech], dim=1) if offset else speech
        requested = max(1, round(num_cells * padded.shape[1] / num_frames))
        family = SLICMasks(n_segments=[requested], dynamic=False, time_spacing=time_spacing)
        labels = family.segment(padded)[0].labels[:, offset:]
        return torch.unique(labels, return_inverse=True)[1]
    bands = min(frequency_bands, n_mels)
    slices = max(1, min(num_frames, round(num_cells / bands)))
    band = torch.arange(n_mels) * bands // n_mels
    # Slices of the same width, their boundaries ``offset`` frames earlier (one more slice).
    time_slice = torch.unique((torch.arange(num_frames) + offset) * slices // num_frames, return_inverse=True)[1]
    return band[:, None] * int(time_slice.max() + 1) + time_slice[None, :]
