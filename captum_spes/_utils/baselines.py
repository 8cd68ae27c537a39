#!/usr/bin/env python3
r"""Occlusion values (Captum's ``baselines``) for spectrogram perturbation.

The reference multiplies CMVN-normalised features by the keep-mask, so an occluded element
takes its mel channel's utterance mean. Whisper features are not normalised: a literal 0 is
log10 power -4, neither the mean nor silence. SPES therefore resolves the baseline
explicitly:

* ``None`` or ``"channel_mean"`` (default): each mel bin's mean over the speech frames, the
  reference's semantics.
* ``"floor"``: the features' silence value (Whisper: the padding floor ``max - 2``).
* a number: that constant (Captum's scalar baseline; ``0`` reproduces "multiply by the mask").
* a Tensor shaped like the input (first dimension 1, e.g. ``(1, 80, 3000)``), or like the
  speech frames ``(n_mels, n_frames)``, or broadcastable to them (``(n_mels, 1)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from captum_spes.adapters import InputLayout, ModelAdapter
from captum_spes.errors import InputError, InputTypeError

__all__ = ["BaselineSpec", "resolve_baseline"]

BaselineSpec = None | str | int | float | Tensor | tuple

_NAMED = ("channel_mean", "floor")


def resolve_baseline(
    baselines: BaselineSpec,
    canonical_full: Tensor,
    num_frames: int,
    adapter: ModelAdapter | InputLayout,
    layout: InputLayout | None = None,
) -> tuple[Tensor, dict[str, object]]:
    """Resolve ``baselines`` to a tensor broadcastable to ``(n_mels, num_frames)``.

    ``adapter`` is the model's adapter, or a bare :class:`~captum_spes.adapters.InputLayout`
    when no model is at hand (then ``"floor"`` is the smallest speech value); ``layout``, the
    utterance's own layout, converts a baseline given in the model's input layout (default:
    the adapter's static layout).

    Returns:
        *tuple* of the baseline tensor and a JSON-serialisable description for metadata.
    """
    if isinstance(baselines, tuple):
        if len(baselines) != 1:
            raise InputError(f"SPES takes one input tensor, so baselines must hold one entry, got {len(baselines)}")
        baselines = baselines[0]
    speech = canonical_full[:, :num_frames]
    if baselines is None or (isinstance(baselines, str) and baselines == "channel_mean"):
        return speech.mean(dim=1, keepdim=True), {"kind": "channel_mean"}
    if isinstance(baselines, str):
        if baselines == "floor":
            if isinstance(adapter, ModelAdapter):
                value = adapter.floor_value(canonical_full, num_frames)
            else:
                value = speech.min()
            return value.reshape(1, 1).to(speech.dtype), {"kind": "floor", "value": float(value)}
        raise InputError(f"baselines={baselines!r} is not known; use one of {list(_NAMED)}, a number, or a tensor")
    if isinstance(baselines, bool):
        raise InputTypeError("baselines must be a number, a name or a tensor, not a bool")
    if isinstance(baselines, (int, float)):
        value = torch.tensor(float(baselines), dtype=speech.dtype, device=speech.device)
        if not torch.isfinite(value):
            raise InputError(f"baselines must be finite, got {baselines}")
        return value.reshape(1, 1), {"kind": "constant", "value": float(baselines)}
    if isinstance(baselines, Tensor):
        tensor = baselines.to(device=speech.device, dtype=speech.dtype)
        if not torch.isfinite(tensor).all():
            raise InputError("baselines holds NaN or inf values; give finite occlusion values")
        if layout is None:
            layout = adapter.input_layout if isinstance(adapter, ModelAdapter) else adapter
        if tensor.dim() == layout.input_dims and tensor.shape[0] == 1:
            canonical = layout.to_canonical(tensor)
            if canonical.shape[1] == canonical_full.shape[1]:
                canonical = canonical[:, :num_frames]
            tensor = canonical
        try:
            torch.broadcast_shapes(tuple(tensor.shape), tuple(speech.shape))
            if tensor.dim() > 2:
                raise RuntimeError
        except RuntimeError:
            raise InputError(
                f"baselines of shape {tuple(baselines.shape)} does not match the input: give the "
                f"input's shape with first dimension 1, the speech frames {tuple(speech.shape)}, "
                "or a shape broadcastable to them such as (n_mels, 1)"
            ) from None
        return tensor, {"kind": "tensor", "shape": list(baselines.shape)}
    raise InputTypeError(
        f"baselines must be None, {list(_NAMED)}, a number or a tensor, got {type(baselines).__name__}"
    )
