#!/usr/bin/env python3
r"""One explained utterance: its model input, speech frames, baseline and perturbed copies.

SPES, :func:`~captum_spes.compare` and the deletion metric all perturb the same thing — the
speech frames of one utterance inside its (possibly padded) model input — with the same
occlusion value. :class:`Utterance` holds that once: it validates the input, finds the
speech frames, resolves the baseline, segments the speech, and writes perturbed speech into
copies of the model input (:meth:`Utterance.perturbed_inputs`); padding is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from captum_spes._utils.baselines import BaselineSpec, resolve_baseline
from captum_spes.adapters import InputLayout, ModelAdapter
from captum_spes.errors import InputError, InputTypeError
from captum_spes.masks import MaskFamily, MaskLevel

__all__ = ["Utterance", "resolve_num_frames"]


def resolve_num_frames(
    adapter: ModelAdapter | InputLayout,
    inputs: Tensor,
    num_frames: int | None = None,
    num_samples: int | None = None,
) -> int:
    r"""Speech frames of one utterance: ``num_frames`` if given, else from the audio length
    ``num_samples`` when the adapter knows the frame rule, else detected from the padding.

    Args:
        adapter (ModelAdapter or InputLayout): the model's adapter (a bare layout knows no
            padding: every frame is speech).
        inputs (Tensor): one utterance in the model layout, e.g. ``(1, 80, 3000)``.
        num_frames (int, optional): frames holding audio.
        num_samples (int, optional): audio samples behind ``inputs`` (e.g. ``len(waveform)``).
    """
    # The utterance's own layout: a waveform model's STFT view has frames, not samples.
    layout = adapter.utterance_layout(inputs) if isinstance(adapter, ModelAdapter) else adapter
    total = int(layout.to_canonical(inputs).shape[1])
    if num_frames is not None and num_samples is not None:
        raise InputError("give num_frames or num_samples, not both (num_samples only serves to compute num_frames)")
    if num_frames is None and num_samples is not None and isinstance(adapter, ModelAdapter):
        num_frames = adapter.frames_for_samples(num_samples)
        if num_frames is None:
            raise InputError(f"{type(adapter).__name__} cannot turn num_samples into frames; pass num_frames= instead")
    if num_frames is None:
        return adapter.speech_frames(inputs) if isinstance(adapter, ModelAdapter) else total
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or not 1 <= num_frames <= total:
        raise InputError(f"num_frames must be an int in [1, {total}] (frames holding audio), got {num_frames!r}")
    return num_frames


@dataclass
class Utterance:
    r"""The speech of one utterance inside its model input.

    Build it with :meth:`prepare`. ``canonical`` is the whole input in SPES's canonical view
    ``(n_mels, input_frames)``; ``speech`` its first ``num_frames`` columns; ``baseline`` the
    occlusion value, broadcastable to ``speech``.

    Attributes:
        inputs (Tensor): the model input ``(1, ...)``, e.g. ``(1, 80, 3000)``.
        layout (InputLayout): how ``inputs`` maps to the canonical view.
        canonical (Tensor): ``(n_mels, input_frames)``.
        num_frames (int): speech frames at the start of the time axis.
        baseline (Tensor): broadcastable to ``(n_mels, num_frames)``.
        baseline_info (dict): JSON description of the baseline, for metadata.
    """

    inputs: Tensor
    layout: InputLayout
    canonical: Tensor
    num_frames: int
    baseline: Tensor
    baseline_info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        inputs: Tensor,
        adapter: ModelAdapter | InputLayout,
        *,
        num_frames: int | None = None,
        num_samples: int | None = None,
        baselines: BaselineSpec = None,
    ) -> Utterance:
        r"""Validate one utterance and resolve its speech frames and baseline.

        Args:
            inputs (Tensor): one utterance in the model layout with batch 1.
            adapter (ModelAdapter or InputLayout): the model's adapter, or a bare layout
                (for maps of models that are not at hand, e.g. in metrics).
            num_frames, num_samples (int, optional): see :func:`resolve_num_frames`.
            baselines (optional): the occlusion value, see
                :func:`~captum_spes._utils.baselines.resolve_baseline`.
        """
        if not isinstance(inputs, Tensor):
            raise InputTypeError(f"inputs must be a Tensor of features, got {type(inputs).__name__}")
        layout = adapter.input_layout if isinstance(adapter, ModelAdapter) else adapter
        name = type(adapter.model).__name__ if isinstance(adapter, ModelAdapter) else "the model"
        if isinstance(adapter, ModelAdapter):
            adapter.check_input(inputs)
        else:
            layout.check(inputs, name)
        if inputs.shape[0] != 1:
            raise InputError(
                f"one utterance per call, but inputs has batch size {inputs.shape[0]}; loop over utterances "
                "(masks are batched internally via perturbations_per_eval)"
            )
        if not inputs.is_floating_point():
            raise InputTypeError(
                f"inputs must be floating-point features, got dtype {inputs.dtype}; use the model's "
                "feature extractor (e.g. processor(audio, return_tensors='pt').input_features)"
            )
        if not torch.isfinite(inputs).all():
            raise InputError("inputs holds NaN or inf values; check the feature extraction")
        if isinstance(adapter, ModelAdapter):
            layout = adapter.utterance_layout(inputs)
        frames = resolve_num_frames(adapter, inputs, num_frames, num_samples)
        canonical = layout.to_canonical(inputs)
        baseline, info = resolve_baseline(baselines, canonical, frames, adapter, layout)
        return cls(inputs, layout, canonical, frames, baseline, info)

    @property
    def speech(self) -> Tensor:
        """The speech frames ``(n_mels, num_frames)``."""
        return self.canonical[:, : self.num_frames]

    @property
    def input_frames(self) -> int:
        return int(self.canonical.shape[1])

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def segment(self, family: MaskFamily) -> list[MaskLevel]:
        """The family's levels over the speech frames (computed on the CPU in float32)."""
        return family.segment(self.speech.detach().float().cpu())

    def perturbed_inputs(self, occluded: Tensor) -> Tensor:
        r"""Model inputs with the occluded speech elements set to the baseline.

        Args:
            occluded (Tensor): bool ``(batch, n_mels, num_frames)``, True where occluded.

        Returns:
            *Tensor* ``(batch, ...)`` in the model layout; frames after ``num_frames``
            (padding) are the clean input's.
        """
        if occluded.dim() != 3 or tuple(occluded.shape[1:]) != tuple(self.speech.shape):
            raise InputError(
                f"occluded must have shape (batch, {self.speech.shape[0]}, {self.num_frames}), "
                f"got {tuple(occluded.shape)}"
            )
        batch = self.canonical.expand(occluded.shape[0], *self.canonical.shape).clone()
        speech = self.speech
        batch[:, :, : self.num_frames] = torch.where(occluded.to(speech.device), self.baseline.to(speech), speech)
        return self.layout.from_canonical(batch)
