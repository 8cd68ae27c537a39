#!/usr/bin/env python3
r"""Spectrogram feature masks: segmentations whose integer ids SPES occludes together.

A *mask family* turns one utterance's spectrogram ``(n_mels, n_frames)`` into one or more
*levels*; each level is a label map with contiguous ids ``0 .. num_segments - 1`` (Captum's
``feature_mask`` convention: equal ids are perturbed together). SPES draws every random mask
from one level and occludes each of its segments independently.

Families: :class:`SLICMasks` (the method's multi-scale SLIC, Fucci et al., 2024),
:class:`TimeMasks`, :class:`FrequencyMasks`, :class:`ElementMasks` (the reference's
ablation perturbators ``discrete_fbank_time``, ``discrete_fbank_frequency``,
``continuous_fbank``) and :class:`CustomMasks` (user ids, e.g. word-aligned segments).
New families are added with :func:`register_mask_family`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from captum_spes.errors import InputError, InputTypeError

__all__ = [
    "MaskLevel",
    "MaskFamily",
    "SLICMasks",
    "TimeMasks",
    "FrequencyMasks",
    "ElementMasks",
    "CustomMasks",
    "MASK_FAMILIES",
    "register_mask_family",
    "resolve_mask_family",
]


@dataclass(frozen=True)
class MaskLevel:
    """One segmentation of an utterance.

    Attributes:
        labels (Tensor): long tensor ``(n_mels, n_frames)`` with ids ``0 .. num_segments-1``.
        num_segments (int): number of distinct ids actually obtained.
        requested_segments (int, optional): what the family asked for (SLIC may differ).
    """

    labels: Tensor
    num_segments: int
    requested_segments: int | None = None


def check_time_spacing(time_spacing: Any) -> float:
    """``time_spacing`` of SLIC segments as a float, or an :class:`InputError` naming it."""
    if isinstance(time_spacing, bool) or not isinstance(time_spacing, (int, float)) or not time_spacing > 0:
        raise InputError(f"time_spacing must be a number > 0 (1 = square SLIC segments), got {time_spacing!r}")
    return float(time_spacing)


def _relabel(labels: Tensor) -> tuple[Tensor, int]:
    """Make ids contiguous from 0, preserving their order."""
    unique, inverse = torch.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).to(torch.long), int(unique.numel())


class MaskFamily(ABC):
    """How an utterance is cut into perturbable segments (one or several levels)."""

    #: registry name, also stored in result metadata
    name: str = ""

    @abstractmethod
    def segment(self, spectrogram: Tensor) -> list[MaskLevel]:
        """Segment one utterance.

        Args:
            spectrogram (Tensor): features of the speech frames, ``(n_mels, n_frames)``.

        Returns:
            *list[MaskLevel]*: one entry per level, labels of shape ``(n_mels, n_frames)``.
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable parameters, saved with every explanation."""


class SLICMasks(MaskFamily):
    r"""Multi-scale SLIC superpixels over the spectrogram, as in SPES.

    The speech frames are min-max scaled to [0, 1] over the utterance and segmented as a
    one-channel image with :func:`skimage.segmentation.slic` (compactness 0.1), once per
    level. With ``dynamic=True`` (the reference's ``slic_fbank_dynamic_segments``) level
    ``l`` requests ``round(n_segments[l] * min(T, threshold_duration) / reference_duration)``
    segments (at least 1) for ``T`` frames. The number of segments SLIC actually returns is
    recorded per level: it can differ from the request, and levels can nearly coincide.

    Args:
        n_segments (sequence of int, optional): segments per level for a
            ``reference_duration``-frame utterance. Default: (2000, 2500, 3000), the
            published configuration.
        compactness (float, optional): SLIC compactness. Default: 0.1
        sigma (float, optional): Gaussian smoothing before SLIC. The reference code and
            its guide use 1, its follow-ups 0. Default: 1.0
        reference_duration (int, optional): frames for which ``n_segments`` is given.
            Default: 500
        threshold_duration (int or None, optional): frame cap on the duration scaling, so
            long utterances do not get segments too small to be occluded often enough.
            None disables the cap (the reference code default). Default: 750 (published).
        dynamic (bool, optional): scale the counts by duration. Default: True
        cmvn (bool, optional): apply utterance mean/variance normalisation per mel bin
            before the min-max scaling. The reference models saw CMVN features, so its
            SLIC image was CMVN-normalised; Whisper sees raw log-mel features, so the
            default segments what the model sees. Default: False
        time_spacing (float, optional): SLIC's distance per frame relative to per mel bin
            (``spacing`` of :func:`~skimage.segmentation.slic`): above 1, segments are
            narrower in time and taller in frequency, still following the spectrogram's
            edges. Default: 1.0 (the reference's square metric)
    """

    name = "slic"

    def __init__(
        self,
        n_segments: Sequence[int] = (2000, 2500, 3000),
        compactness: float = 0.1,
        sigma: float = 1.0,
        reference_duration: int = 500,
        threshold_duration: int | None = 750,
        dynamic: bool = True,
        cmvn: bool = False,
        time_spacing: float = 1.0,
    ) -> None:
        n_segments = [int(n) for n in n_segments]
        if not n_segments or any(n < 1 for n in n_segments):
            raise InputError(f"n_segments must be a non-empty sequence of positive ints, got {n_segments}")
        if compactness <= 0:
            raise InputError(f"compactness must be > 0, got {compactness}")
        if sigma < 0:
            raise InputError(f"sigma must be >= 0, got {sigma}")
        if reference_duration < 1:
            raise InputError(f"reference_duration must be >= 1 frame, got {reference_duration}")
        if threshold_duration is not None and threshold_duration < 1:
            raise InputError(f"threshold_duration must be >= 1 frame or None, got {threshold_duration}")
        self.n_segments = n_segments
        self.compactness = float(compactness)
        self.sigma = float(sigma)
        self.reference_duration = int(reference_duration)
        self.threshold_duration = threshold_duration
        self.dynamic = bool(dynamic)
        self.cmvn = bool(cmvn)
        self.time_spacing = check_time_spacing(time_spacing)

    def requested_segments(self, num_frames: int) -> list[int]:
        """Segment count requested per level for an utterance of ``num_frames`` frames."""
        if not self.dynamic:
            return list(self.n_segments)
        effective = num_frames
        if self.threshold_duration is not None:
            effective = min(num_frames, self.threshold_duration)
        return [max(1, round(n * effective / self.reference_duration)) for n in self.n_segments]

    def _image(self, spectrogram: Tensor) -> np.ndarray:
        # SLIC works on a (time, frequency) image, as in the reference.
        image = spectrogram.detach().to("cpu", torch.float64).T.numpy()
        if self.cmvn:
            std = image.std(axis=0, keepdims=True)
            image = (image - image.mean(axis=0, keepdims=True)) / np.where(std > 0, std, 1.0)
        lo, hi = image.min(), image.max()
        return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)

    def segment(self, spectrogram: Tensor) -> list[MaskLevel]:
        from skimage.segmentation import slic

        image = self._image(spectrogram)
        levels = []
        for requested in self.requested_segments(spectrogram.shape[1]):
            labels = slic(
                image,
                n_segments=requested,
                compactness=self.compactness,
                sigma=self.sigma,
                channel_axis=None,
                start_label=1,
                spacing=np.array([self.time_spacing, 1.0]),  # the image is (time, frequency)
            )
            relabeled, count = _relabel(torch.from_numpy(np.ascontiguousarray(labels.T)))
            levels.append(MaskLevel(relabeled, count, requested))
        return levels

    def config(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "n_segments": self.n_segments,
            "compactness": self.compactness,
            "sigma": self.sigma,
            "reference_duration": self.reference_duration,
            "threshold_duration": self.threshold_duration,
            "dynamic": self.dynamic,
            "cmvn": self.cmvn,
            "time_spacing": self.time_spacing,
        }


def _group_ids(length: int, group: int) -> Tensor:
    return torch.arange(length) // group


def _check_group_sizes(sizes: int | Sequence[int], argument: str) -> list[int]:
    values = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
    if not values or any((not isinstance(v, int)) or v < 1 for v in values):
        raise InputError(f"{argument} must be a positive int or a sequence of them, got {sizes!r}")
    return values


class TimeMasks(MaskFamily):
    """Groups of consecutive frames, all mel bins together (``discrete_fbank_time``).

    Args:
        frames_per_segment (int or sequence of int, optional): frames per segment; a
            sequence gives one level per value. Default: 1 (one frame per segment).
    """

    name = "time"

    def __init__(self, frames_per_segment: int | Sequence[int] = 1) -> None:
        self.frames_per_segment = _check_group_sizes(frames_per_segment, "frames_per_segment")

    def segment(self, spectrogram: Tensor) -> list[MaskLevel]:
        n_mels, n_frames = spectrogram.shape
        levels = []
        for group in self.frames_per_segment:
            ids = _group_ids(n_frames, group)
            labels = ids[None, :].expand(n_mels, n_frames).contiguous()
            levels.append(MaskLevel(labels, int(ids[-1]) + 1, None))
        return levels

    def config(self) -> dict[str, Any]:
        return {"family": self.name, "frames_per_segment": self.frames_per_segment}


class FrequencyMasks(MaskFamily):
    """Groups of consecutive mel bins over all frames (``discrete_fbank_frequency``).

    Args:
        bins_per_segment (int or sequence of int, optional): mel bins per segment; a
            sequence gives one level per value. Default: 1.
    """

    name = "frequency"

    def __init__(self, bins_per_segment: int | Sequence[int] = 1) -> None:
        self.bins_per_segment = _check_group_sizes(bins_per_segment, "bins_per_segment")

    def segment(self, spectrogram: Tensor) -> list[MaskLevel]:
        n_mels, n_frames = spectrogram.shape
        levels = []
        for group in self.bins_per_segment:
            ids = _group_ids(n_mels, group)
            labels = ids[:, None].expand(n_mels, n_frames).contiguous()
            levels.append(MaskLevel(labels, int(ids[-1]) + 1, None))
        return levels

    def config(self) -> dict[str, Any]:
        return {"family": self.name, "bins_per_segment": self.bins_per_segment}


class ElementMasks(MaskFamily):
    """Every time-frequency element on its own (``continuous_fbank``)."""

    name = "element"

    def segment(self, spectrogram: Tensor) -> list[MaskLevel]:
        n_mels, n_frames = spectrogram.shape
        labels = torch.arange(n_mels * n_frames).reshape(n_mels, n_frames)
        return [MaskLevel(labels, n_mels * n_frames, None)]

    def config(self) -> dict[str, Any]:
        return {"family": self.name}


class CustomMasks(MaskFamily):
    """User-supplied integer segment ids, one label map per level.

    Each map has shape ``(n_mels, n_frames)`` over the speech frames, or broadcasts to it:
    ``(1, n_frames)`` for time-only segments, ``(n_mels, 1)`` for bands. Ids need not be
    contiguous; they are renumbered in sorted order.

    Args:
        feature_masks (Tensor or sequence of Tensor): integer label maps.
    """

    name = "custom"

    def __init__(self, feature_masks: Tensor | Sequence[Tensor]) -> None:
        masks = [feature_masks] if isinstance(feature_masks, Tensor) else list(feature_masks)
        if not masks:
            raise InputError("feature_mask must hold at least one label map")
        for i, mask in enumerate(masks):
            if not isinstance(mask, Tensor) or mask.is_floating_point() or mask.is_complex():
                raise InputTypeError(
                    f"feature_mask[{i}] must be an integer tensor of segment ids "
                    f"(Captum's convention), got {getattr(mask, 'dtype', type(mask))}"
                )
        self.feature_masks = masks

    @classmethod
    def from_intervals(
        cls,
        intervals: Sequence[tuple[float, float]],
        num_frames: int,
        frame_rate: float = 100.0,
    ) -> CustomMasks:
        """Time segments from ``(start_s, end_s)`` intervals, e.g. aligned words.

        Frames outside every interval form one extra segment each gap, so every frame
        belongs to some segment. Returns a single-level family with ``(1, num_frames)`` ids.
        """
        ids = torch.full((num_frames,), -1, dtype=torch.long)
        for index, (start, end) in enumerate(sorted(intervals)):
            first = max(0, int(np.floor(start * frame_rate)))
            last = min(num_frames, int(np.ceil(end * frame_rate)))
            ids[first:last] = index
        gap = ids < 0
        if gap.any():
            # Each run of uncovered frames becomes its own segment.
            run_start = gap & torch.cat([torch.tensor([True]), ~gap[:-1]])
            ids[gap] = len(intervals) + torch.cumsum(run_start.long(), 0)[gap] - 1
        return cls(ids[None, :])

    def segment(self, spectrogram: Tensor) -> list[MaskLevel]:
        shape = tuple(spectrogram.shape)
        levels = []
        for i, mask in enumerate(self.feature_masks):
            mask = mask.to("cpu")
            if mask.dim() == 3 and mask.shape[0] == 1:
                mask = mask[0]
            try:
                labels = torch.broadcast_to(mask, shape)
            except RuntimeError:
                raise InputError(
                    f"feature_mask[{i}] of shape {tuple(mask.shape)} does not broadcast to the "
                    f"speech frames (n_mels, n_frames) = {shape}; give ids over the audio frames "
                    "only (the padding is never perturbed)"
                ) from None
            relabeled, count = _relabel(labels.contiguous())
            levels.append(MaskLevel(relabeled, count, None))
        return levels

    def config(self) -> dict[str, Any]:
        return {"family": self.name, "num_levels": len(self.feature_masks)}


MASK_FAMILIES: dict[str, Callable[..., MaskFamily]] = {
    "slic": SLICMasks,
    "time": TimeMasks,
    "frequency": FrequencyMasks,
    "element": ElementMasks,
}


def register_mask_family(name: str, factory: Callable[..., MaskFamily]) -> None:
    """Make ``feature_mask=name`` build masks with ``factory()``."""
    if not isinstance(name, str) or not name:
        raise InputError("name must be a non-empty string")
    MASK_FAMILIES[name] = factory


def resolve_mask_family(feature_mask: None | str | MaskFamily | Tensor | Sequence[Tensor]) -> MaskFamily:
    """Turn SPES's ``feature_mask`` argument into a :class:`MaskFamily`.

    None gives the method's default (:class:`SLICMasks` with the published settings).
    """
    if feature_mask is None:
        return SLICMasks()
    if isinstance(feature_mask, MaskFamily):
        return feature_mask
    if isinstance(feature_mask, str):
        if feature_mask not in MASK_FAMILIES:
            raise InputError(
                f"feature_mask={feature_mask!r} is not a registered mask family; choose one of "
                f"{sorted(MASK_FAMILIES)}, pass a MaskFamily, or integer id tensors"
            )
        return MASK_FAMILIES[feature_mask]()
    if isinstance(feature_mask, Tensor) or (
        isinstance(feature_mask, (list, tuple)) and all(isinstance(m, Tensor) for m in feature_mask)
    ):
        return CustomMasks(feature_mask)
    raise InputTypeError(
        "feature_mask must be None (multi-scale SLIC), a family name "
        f"{sorted(MASK_FAMILIES)}, a MaskFamily, or integer id tensors; got {type(feature_mask)}"
    )
