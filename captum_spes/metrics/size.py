#!/usr/bin/env python3
r"""Compactness: the size AUC of the reference (§12.2). Lower is more compact (better).

For thresholds ``t = 0, 0.05, ..., 1`` the size is the percentage of normalised values
``>= t``: over all ``num_tokens * n_mels * n_frames`` spectrogram values, and over the valid
(causal, lower-triangle) entries of the token map. Curves are macro-averaged over
utterances; the AUC is the trapezoid over ``t`` in [0, 1], so it lies in 0-100.

Maps are normalised **once**, before the threshold loop (the reference re-normalises inside
it, defect 10). Comparisons are done in float64 so a float32 value equal to a threshold
counts as ``>=`` it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from captum_spes._core.result import SPESResult
from captum_spes.errors import InputError, InputTypeError
from captum_spes.normalizers import NORMALIZERS

__all__ = ["SizeResult", "size_thresholds", "size_curve", "default_token_valid"]

MapsLike = SPESResult | Tensor | tuple[Tensor, Tensor | None]


@dataclass
class SizeResult:
    r"""Size curves and AUCs, macro-averaged over utterances.

    Attributes:
        thresholds (Tensor): ``(num_thresholds,)`` in [0, 1].
        spectrogram_curve (Tensor): ``(num_thresholds,)`` percent of spectrogram values >= t.
        token_curve (Tensor or None): same over valid token-map entries; None when no
            utterance has a token map.
        spectrogram_auc (float): trapezoid over t in [0, 1] of the curve, 0-100 ("AUC fbanks").
        token_auc (float or None): same for the token map ("AUC tgt").
        spectrogram_per_utterance (Tensor): ``(num_utterances, num_thresholds)``.
        token_per_utterance (Tensor or None): ``(num_utterances_with_token_map, num_thresholds)``.
        settings (dict): normalisation and threshold choices.
    """

    thresholds: Tensor
    spectrogram_curve: Tensor
    token_curve: Tensor | None
    spectrogram_auc: float
    token_auc: float | None
    spectrogram_per_utterance: Tensor
    token_per_utterance: Tensor | None
    settings: dict[str, Any] = field(default_factory=dict)
    direction: str = "lower_is_more_compact"
    scale: str = "AUC = trapezoid over t in [0, 1] of a percentage: 0-100"


def size_thresholds(step: float = 0.05) -> Tensor:
    """``0, step, ..., 1`` as float64; ``step`` must divide 1 exactly (e.g. 0.05, 0.1)."""
    count = Fraction(1) / Fraction(str(step)) if step > 0 else Fraction(1, 3)
    if step <= 0 or step > 1 or count.denominator != 1:
        raise InputError(f"step must be in (0, 1] and divide 1 exactly (e.g. 0.05), got {step}")
    n = int(count)
    return torch.tensor([i / n for i in range(n + 1)], dtype=torch.float64)


def default_token_valid(token_attr: Tensor) -> Tensor:
    r"""Causal mask for a plain ``(num_tokens, num_decoder_inputs)`` token map: row ``k`` may
    credit columns ``<= k + (num_decoder_inputs - num_tokens)`` (the reference's lower
    triangle with diagonal when square; ``P - 1`` prompt columns more otherwise)."""
    rows, cols = token_attr.shape
    return torch.arange(cols)[None, :] <= torch.arange(rows)[:, None] + (cols - rows)


def _unpack(maps: MapsLike, index: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    if isinstance(maps, SPESResult):
        return maps.spectrogram_attr, maps.token_attr, maps.token_valid_mask() if maps.token_attr is not None else None
    if isinstance(maps, Tensor):
        spec, tok = maps, None
    elif isinstance(maps, tuple) and len(maps) == 2:
        spec, tok = maps
    else:
        raise InputTypeError(
            f"maps[{index}] must be a SPESResult, a (num_tokens, n_mels, n_frames) Tensor or a "
            f"(spectrogram_attr, token_attr) tuple, got {type(maps).__name__}"
        )
    if not isinstance(spec, Tensor) or spec.dim() != 3:
        raise InputError(
            f"maps[{index}]: spectrogram_attr must have shape (num_tokens, n_mels, n_frames), "
            f"got {tuple(getattr(spec, 'shape', ()))}"
        )
    if tok is not None and (tok.dim() != 2 or tok.shape[0] != spec.shape[0]):
        raise InputError(
            f"maps[{index}]: token_attr must have shape (num_tokens={spec.shape[0]}, num_decoder_inputs), "
            f"got {tuple(tok.shape)}"
        )
    return spec, tok, default_token_valid(tok) if tok is not None else None


def _percent_at_least(values: Tensor, thresholds: Tensor) -> Tensor:
    values = values.reshape(-1).to(torch.float64).cpu()
    if values.numel() == 0:
        raise InputError("a map has no values to measure")
    return 100.0 * (values[None, :] >= thresholds[:, None]).double().mean(dim=1)


def size_curve(
    maps: MapsLike | Sequence[MapsLike],
    *,
    step: float = 0.05,
    normalize: str | None = "reference",
) -> SizeResult:
    r"""Size (compactness) curves and AUCs of one or several utterances.

    Args:
        maps (SPESResult, Tensor, tuple, or a list of them): per utterance a SPESResult, a
            spectrogram map ``(num_tokens, n_mels, n_frames)``, or ``(spectrogram_attr,
            token_attr)`` with ``token_attr`` ``(num_tokens, num_decoder_inputs)`` (validity by
            :func:`default_token_valid`). Raw maps from any method.
        step (float, optional): threshold spacing; must divide 1. Default: 0.05 (21 thresholds)
        normalize (str, optional): normaliser applied once per utterance before thresholding
            ("reference": z-score then paired min-max, so values lie in [0, 1]); None if the
            maps are already normalised. Default: "reference"

    Returns:
        *SizeResult*: AUCs in 0-100, lower = more compact.
    """
    if normalize is not None and normalize not in NORMALIZERS:
        raise InputError(f"normalize must be one of {sorted(NORMALIZERS)} or None, got {normalize!r}")
    items: list[MapsLike] = list(maps) if isinstance(maps, list) else [maps]
    if not items:
        raise InputError("maps is empty: give at least one utterance")
    thresholds = size_thresholds(step)
    spec_rows, tok_rows = [], []
    for index, item in enumerate(items):
        spec, tok, valid = _unpack(item, index)
        if not torch.isfinite(spec).all() or (tok is not None and not torch.isfinite(tok).all()):
            raise InputError(f"maps[{index}] holds NaN or inf values")
        # Normalise once, outside the threshold loop (reference defect 10).
        if normalize is not None:
            spec, tok = NORMALIZERS[normalize](spec, tok, valid)
        spec_rows.append(_percent_at_least(spec, thresholds))
        if tok is not None:
            tok_rows.append(_percent_at_least(tok[valid], thresholds))
    spec_per = torch.stack(spec_rows)
    spec_curve = spec_per.mean(dim=0)
    tok_per = torch.stack(tok_rows) if tok_rows else None
    tok_curve = tok_per.mean(dim=0) if tok_per is not None else None
    return SizeResult(
        thresholds=thresholds,
        spectrogram_curve=spec_curve,
        token_curve=tok_curve,
        spectrogram_auc=float(torch.trapezoid(spec_curve, thresholds)),
        token_auc=float(torch.trapezoid(tok_curve, thresholds)) if tok_curve is not None else None,
        spectrogram_per_utterance=spec_per,
        token_per_utterance=tok_per,
        settings={
            "normalize": normalize,
            "step": step,
            "num_utterances": len(items),
            "num_with_token_map": len(tok_rows),
            "macro_average": True,
        },
    )
