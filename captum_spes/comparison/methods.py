#!/usr/bin/env python3
r"""The attribution methods that :func:`~captum_spes.comparison.compare` runs, on equal terms.

Every method explains the same frozen hypothesis of one utterance and returns per-token
maps ``(num_tokens, n_mels, num_frames)`` over the **speech frames only**: the Captum
methods see a sub-forward (:class:`SpeechOnlyForward`) that writes the speech part into the
padded model input, so Whisper's padding is never perturbed nor attributed. Occluded or
baseline values are the same as SPES's (by default each mel bin's mean over the speech
frames), so perturbation and path methods start from the same reference input.

Model passes are counted by wrapping the adapter's teacher-forced ``logits`` call
(:func:`count_passes`): one forward pass is one input row through the model (a batch of
``b`` perturbed inputs counts ``b``), one backward pass is one row whose gradient reaches
the input (a hook on the logits). This is what a method costs, whatever its batching.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients, Occlusion, Saliency
from torch import Tensor

from captum_spes._core.forward_wrapper import Hypothesis, SpeechSeq2SeqWrapper
from captum_spes._core.spes import SPES
from captum_spes._core.utterance import Utterance
from captum_spes.adapters import InputLayout
from captum_spes.errors import InputError
from captum_spes.masks import MaskFamily, MaskLevel

__all__ = [
    "METHODS",
    "MethodContext",
    "PassCount",
    "SpeechOnlyForward",
    "count_passes",
    "occlusion_windows",
    "run_method",
]


@dataclass
class PassCount:
    """Model passes of one method: input rows forwarded, and rows back-propagated."""

    forward: int = 0
    backward: int = 0


@contextlib.contextmanager
def count_passes(wrapper: SpeechSeq2SeqWrapper) -> Iterator[PassCount]:
    r"""Count teacher-forced passes through ``wrapper`` while the context is open.

    The adapter's ``logits`` is replaced on the instance (and restored on exit), so every
    route into the model is counted: ``wrapper(...)``, ``token_log_probs`` and
    ``forward_from_encoder`` (SPES's decoder-only token passes). ``generate`` is not counted:
    the hypothesis is decoded once, before any method runs.

    Yields:
        *PassCount* updated in place.
    """
    adapter = wrapper.adapter
    counts = PassCount()
    had_own = "logits" in vars(adapter)
    original = adapter.logits

    def counted(decoder_input_ids: Tensor, model_inputs: Tensor | None = None, encoder_outputs: Any = None) -> Tensor:
        logits = original(decoder_input_ids, model_inputs=model_inputs, encoder_outputs=encoder_outputs)
        rows = int(decoder_input_ids.shape[0])
        counts.forward += rows
        if logits.requires_grad:

            def on_backward(grad: Tensor) -> None:
                counts.backward += rows

            logits.register_hook(on_backward)
        return logits

    adapter.logits = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        if had_own:
            adapter.logits = original  # type: ignore[method-assign]
        else:
            del adapter.logits


@contextlib.contextmanager
def _input_gradients_only(model: torch.nn.Module) -> Iterator[None]:
    # Gradient methods need d(output)/d(input) only: freezing the weights keeps autograd
    # from building weight-gradient buffers, which on CPU roughly halves the backward cost.
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class SpeechOnlyForward:
    r"""A Captum forward over the speech frames: ``(batch, n_mels, num_frames) -> (batch, K + 1)``.

    The speech part is written into a copy of the full (padded) model input and the
    hypothesis tokens' log-probabilities are returned, so one perturbation run scores every
    token (Captum multi-output, ``target=None``) and gradient methods pick token ``k`` with
    ``target=k``. Differentiable: the padding is concatenated, not written in place.

    Args:
        wrapper (SpeechSeq2SeqWrapper): with the hypothesis set.
        canonical_full (Tensor): the clean input in canonical layout ``(n_mels, total_frames)``.
        num_frames (int): speech frames at the start of the time axis.
        layout (InputLayout, optional): the utterance's layout (e.g. an STFT view with its
            phase). Default: the adapter's static layout.
    """

    def __init__(
        self,
        wrapper: SpeechSeq2SeqWrapper,
        canonical_full: Tensor,
        num_frames: int,
        layout: InputLayout | None = None,
    ) -> None:
        self.wrapper = wrapper
        self.padding = canonical_full[:, num_frames:].detach()
        self.num_frames = num_frames
        self.layout = layout if layout is not None else wrapper.adapter.input_layout

    def __call__(self, speech: Tensor) -> Tensor:
        if speech.dim() != 3 or speech.shape[-1] != self.num_frames:
            raise InputError(f"expected speech frames (batch, n_mels, {self.num_frames}), got {tuple(speech.shape)}")
        padding = self.padding.to(speech).expand(speech.shape[0], *self.padding.shape)
        full = torch.cat([speech, padding], dim=2)
        return self.wrapper.token_log_probs(self.layout.from_canonical(full))


@dataclass
class MethodContext:
    r"""What every method gets: the same utterance, hypothesis, baseline and segments.

    Attributes:
        wrapper (SpeechSeq2SeqWrapper): with ``hypothesis`` set.
        utterance (Utterance): the clean input, its speech frames and baseline.
        hypothesis (Hypothesis): the frozen hypothesis.
        feature_mask (MaskFamily): the SLIC (or other) family SPES uses.
        levels (list of MaskLevel): its segmentation of this utterance.
        seed (int), batch_size (int): shared settings.
        options (dict): per-method settings (see :func:`~captum_spes.comparison.compare`).
    """

    wrapper: SpeechSeq2SeqWrapper
    utterance: Utterance
    hypothesis: Hypothesis
    feature_mask: MaskFamily
    levels: list[MaskLevel]
    seed: int
    batch_size: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> Tensor:
        """The clean model input ``(1, ...)``."""
        return self.utterance.inputs

    @property
    def canonical_full(self) -> Tensor:
        """The clean input in canonical layout ``(n_mels, total_frames)``."""
        return self.utterance.canonical

    @property
    def num_frames(self) -> int:
        return self.utterance.num_frames

    @property
    def baseline(self) -> Tensor:
        """``(n_mels, num_frames)`` occlusion / path-start value."""
        speech = self.utterance.speech
        return self.utterance.baseline.to(speech).expand(*speech.shape)

    @property
    def speech(self) -> Tensor:
        """Clean speech frames with a batch dimension, ``(1, n_mels, num_frames)``."""
        return self.canonical_full[None, :, : self.num_frames]

    def forward(self) -> SpeechOnlyForward:
        return SpeechOnlyForward(self.wrapper, self.canonical_full, self.num_frames, self.utterance.layout)


def occlusion_windows(num_frames: int, n_mels: int, window: Sequence[int], strides: Sequence[int]) -> int:
    """Window positions Captum's ``Occlusion`` visits: ``prod(ceil((D - w) / s) + 1)``."""
    return math.prod(math.ceil((d - w) / s) + 1 for d, w, s in zip((n_mels, num_frames), window, strides))


def _occlusion_window(ctx: MethodContext) -> tuple[tuple[int, int], tuple[int, int]]:
    n_mels = ctx.canonical_full.shape[0]
    mels, frames = ctx.options.get("occlusion_window", (16, 10))
    # A window may not exceed the input; clamp for very short utterances.
    window = (min(int(mels), n_mels), min(int(frames), ctx.num_frames))
    strides = ctx.options.get("occlusion_strides") or window
    return window, (int(strides[0]), int(strides[1]))


def _check_per_token(maps: Tensor, ctx: MethodContext, name: str) -> Tensor:
    expected = (ctx.hypothesis.num_explained, ctx.canonical_full.shape[0], ctx.num_frames)
    if tuple(maps.shape) != expected:
        raise RuntimeError(f"{name} returned maps of shape {tuple(maps.shape)}, expected {expected}")
    if not torch.isfinite(maps).all():
        raise FloatingPointError(f"{name} returned NaN or inf attributions; run the model in float32")
    return maps.detach().float().cpu()


# ----- the methods ---------------------------------------------------------------------
def _spes(ctx: MethodContext) -> tuple[Tensor, dict[str, Any]]:
    kwargs = dict(ctx.options.get("spes_kwargs") or {})
    # Spectrogram maps only by default: the other methods have no token map, and SPES's
    # decoupled token passes would add decoder-only passes to its cost column.
    kwargs.setdefault("token_p", None)
    result = SPES(ctx.wrapper).attribute(
        ctx.features,
        # The user's spec, resolved by SPES exactly as it was for the other methods.
        baselines=ctx.options.get("baselines"),
        target=ctx.hypothesis,
        feature_mask=ctx.feature_mask,
        perturbations_per_eval=ctx.batch_size,
        n_masks=ctx.options["n_masks"],
        seed=ctx.seed,
        num_frames=ctx.num_frames,
        **kwargs,
    )
    return result.spectrogram_attr, {"spes_result": result, "n_masks": result.metadata["n_masks"]}


def _occlusion(ctx: MethodContext) -> tuple[Tensor, dict[str, Any]]:
    window, strides = _occlusion_window(ctx)
    baseline = ctx.baseline[None]
    # target=None: the forward returns (1, K + 1), so one occlusion run attributes all tokens
    # and Captum returns (K + 1, n_mels, num_frames) (log-prob drop, initial - occluded).
    maps = Occlusion(ctx.forward()).attribute(
        ctx.speech,
        sliding_window_shapes=window,
        strides=strides,
        baselines=baseline,
        target=None,
        perturbations_per_eval=ctx.batch_size,
    )
    n_windows = occlusion_windows(ctx.num_frames, ctx.canonical_full.shape[0], window, strides)
    return maps, {"window": window, "strides": strides, "windows": n_windows}


def _feature_ablation(ctx: MethodContext) -> tuple[Tensor, dict[str, Any]]:
    level = int(ctx.options.get("ablation_level", 0))
    if not 0 <= level < len(ctx.levels):
        raise InputError(f"ablation_level must be in [0, {len(ctx.levels)}), got {level}")
    labels = ctx.levels[level].labels.to(ctx.canonical_full.device)
    baseline = ctx.baseline[None]
    maps = FeatureAblation(ctx.forward()).attribute(
        ctx.speech,
        baselines=baseline,
        target=None,
        feature_mask=labels[None],
        perturbations_per_eval=ctx.batch_size,
    )
    return maps, {"level": level, "segments": ctx.levels[level].num_segments}


def _per_token_gradients(ctx: MethodContext, method: Any, **attribute_kwargs: Any) -> Tensor:
    # A leaf that already requires grad: Captum then does not warn that it had to set it.
    speech = ctx.speech.detach().clone().requires_grad_()
    rows = []
    with _input_gradients_only(ctx.wrapper.model):
        for k in range(ctx.hypothesis.num_explained):
            rows.append(method.attribute(speech, target=k, **attribute_kwargs)[0].detach())
    return torch.stack(rows)


def _integrated_gradients(ctx: MethodContext) -> tuple[Tensor, dict[str, Any]]:
    n_steps = int(ctx.options.get("ig_steps", 16))
    baseline = ctx.baseline[None]
    maps = _per_token_gradients(
        ctx,
        IntegratedGradients(ctx.forward()),
        baselines=baseline,
        n_steps=n_steps,
        internal_batch_size=ctx.batch_size,
    )
    return maps, {"n_steps": n_steps, "baseline": "same as SPES"}


def _saliency(ctx: MethodContext) -> tuple[Tensor, dict[str, Any]]:
    # abs=False keeps the signed gradient, like the other methods' raw maps.
    return _per_token_gradients(ctx, Saliency(ctx.forward()), abs=False), {"abs": False}


def _input_x_gradient(ctx: MethodContext) -> tuple[Tensor, dict[str, Any]]:
    return _per_token_gradients(ctx, InputXGradient(ctx.forward())), {}


def _random(ctx: MethodContext) -> tuple[Tensor, dict[str, Any]]:
    generator = torch.Generator().manual_seed(ctx.seed)
    shape = (ctx.hypothesis.num_explained, ctx.canonical_full.shape[0], ctx.num_frames)
    return torch.randn(shape, generator=generator), {"distribution": "N(0, 1)"}


MethodFn = Callable[[MethodContext], tuple[Tensor, dict[str, Any]]]

#: name -> runner; each returns raw per-token maps (num_tokens, n_mels, num_frames) and settings.
METHODS: dict[str, MethodFn] = {
    "spes": _spes,
    "occlusion": _occlusion,
    "feature_ablation": _feature_ablation,
    "integrated_gradients": _integrated_gradients,
    "saliency": _saliency,
    "input_x_gradient": _input_x_gradient,
    "random": _random,
}


def run_method(name: str, ctx: MethodContext) -> tuple[Tensor, dict[str, Any], PassCount]:
    r"""Run one method under the pass counter.

    Returns:
        *tuple*: per-token maps ``(num_tokens, n_mels, num_frames)`` float32 on CPU, the
        method's settings, and its :class:`PassCount`.
    """
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    with count_passes(ctx.wrapper) as counts:
        maps, info = METHODS[name](ctx)
    return _check_per_token(maps, ctx, name), info, counts
