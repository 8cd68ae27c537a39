#!/usr/bin/env python3
r"""Normalisers of SPES maps, applied after attribution and never stored.

They follow the reference implementation's ``normalizers/`` package (Fucci et al., 2024):
``single_mean_std`` z-scores each token row, ``paired_min_max`` rescales each token row
jointly over the spectrogram map and the token map so both share one [0, 1] scale. The
evaluation of the reference applies the first, then the second (:func:`normalize_reference`).

Unlike the reference, degenerate rows (a single valid entry, a constant row, a zero range)
give zeros instead of NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from captum_spes.errors import InputError

__all__ = ["single_mean_std", "paired_min_max", "normalize_reference", "NORMALIZERS"]


def _check(spectrogram_attr: Tensor, token_attr: Tensor | None, token_valid: Tensor | None) -> None:
    if spectrogram_attr.dim() < 2:
        raise InputError(
            "spectrogram_attr must have shape (num_tokens, ...) with at least 2 dimensions, "
            f"got {tuple(spectrogram_attr.shape)}"
        )
    if token_attr is None:
        return
    if token_attr.dim() != 2 or token_attr.shape[0] != spectrogram_attr.shape[0]:
        raise InputError(
            "token_attr must have shape (num_tokens, num_decoder_inputs) with the same num_tokens "
            f"as spectrogram_attr ({spectrogram_attr.shape[0]}), got {tuple(token_attr.shape)}"
        )
    if token_valid is not None and token_valid.shape != token_attr.shape:
        raise InputError(
            f"token_valid must have the shape of token_attr {tuple(token_attr.shape)}, got {tuple(token_valid.shape)}"
        )


def _valid_or_all(token_attr: Tensor, token_valid: Tensor | None) -> Tensor:
    if token_valid is None:
        return torch.ones_like(token_attr, dtype=torch.bool)
    return token_valid.to(torch.bool)


def _zscore_rows(values: Tensor, valid: Tensor) -> Tensor:
    """Row-wise z-score over ``valid`` entries with the sample std (n - 1); invalid -> 0."""
    values = values.to(torch.float64)
    count = valid.sum(dim=1, keepdim=True)
    masked = torch.where(valid, values, torch.zeros_like(values))
    mean = masked.sum(dim=1, keepdim=True) / count.clamp_min(1)
    sq = torch.where(valid, (values - mean) ** 2, torch.zeros_like(values)).sum(dim=1, keepdim=True)
    std = (sq / (count - 1).clamp_min(1)).sqrt()
    # Rows with fewer than two entries or no spread have no defined z-score: 0, not NaN.
    degenerate = (count < 2) | (std == 0)
    out = (values - mean) / torch.where(degenerate, torch.ones_like(std), std)
    out = torch.where(valid & ~degenerate, out, torch.zeros_like(out))
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _spectrogram_valid(spectrogram_attr: Tensor, spectrogram_valid: Tensor | None) -> Tensor:
    """``(num_tokens, n)`` bool: the elements that enter the statistics."""
    flat_shape = (spectrogram_attr.shape[0], spectrogram_attr[0].numel())
    if spectrogram_valid is None:
        return torch.ones(flat_shape, dtype=torch.bool, device=spectrogram_attr.device)
    valid = spectrogram_valid.to(device=spectrogram_attr.device, dtype=torch.bool)
    try:
        return torch.broadcast_to(valid, spectrogram_attr.shape).reshape(flat_shape)
    except RuntimeError:
        raise InputError(
            f"spectrogram_valid of shape {tuple(valid.shape)} does not match the map {tuple(spectrogram_attr.shape)}; "
            "give (n_mels, n_frames) or the map's shape"
        ) from None


def single_mean_std(
    spectrogram_attr: Tensor,
    token_attr: Tensor | None = None,
    token_valid: Tensor | None = None,
    *,
    spectrogram_valid: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Z-score every token row, separately for the spectrogram and the token map.

    Args:
        spectrogram_attr (Tensor): maps of shape ``(num_tokens, n_mels, n_frames)``
            (any trailing shape is accepted; each row is flattened).
        token_attr (Tensor, optional): token map ``(num_tokens, num_decoder_inputs)``.
        token_valid (Tensor, optional): boolean ``(num_tokens, num_decoder_inputs)``, True
            where row ``k`` may credit column ``j`` (the causal lower triangle). Only valid
            entries enter the statistics; invalid entries become 0. Default: all valid.
        spectrogram_valid (Tensor, optional): boolean ``(n_mels, n_frames)`` (or the map's
            shape), False for elements without an estimate (never occluded): they are left
            out of the statistics and become 0. Default: all valid.

    Returns:
        *tuple* of the normalised spectrogram map (same shape, float32) and token map
        (or None). The standard deviation is the sample one (n - 1), as in the reference.
    """
    _check(spectrogram_attr, token_attr, token_valid)
    flat = spectrogram_attr.reshape(spectrogram_attr.shape[0], -1)
    spec = _zscore_rows(flat, _spectrogram_valid(spectrogram_attr, spectrogram_valid))
    spec = spec.reshape(spectrogram_attr.shape).to(torch.float32)
    if token_attr is None:
        return spec, None
    tok = _zscore_rows(token_attr, _valid_or_all(token_attr, token_valid)).to(torch.float32)
    return spec, tok


def paired_min_max(
    spectrogram_attr: Tensor,
    token_attr: Tensor | None = None,
    token_valid: Tensor | None = None,
    *,
    spectrogram_valid: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Min-max scale every token row jointly over its spectrogram row and valid token row.

    Both maps of a token then share one [0, 1] scale, so their magnitudes are comparable.
    A row whose range is zero becomes 0 (the reference would divide by zero).

    Args:
        spectrogram_attr (Tensor): ``(num_tokens, n_mels, n_frames)``.
        token_attr (Tensor, optional): ``(num_tokens, num_decoder_inputs)``.
        token_valid (Tensor, optional): boolean mask of valid token-map entries.
        spectrogram_valid (Tensor, optional): boolean ``(n_mels, n_frames)``: elements
            outside it do not set the range and become 0. Default: all valid.

    Returns:
        *tuple* of the scaled spectrogram map and token map (or None), float32.
    """
    _check(spectrogram_attr, token_attr, token_valid)
    num_tokens = spectrogram_attr.shape[0]
    flat = spectrogram_attr.reshape(num_tokens, -1).to(torch.float64)
    spec_valid = _spectrogram_valid(spectrogram_attr, spectrogram_valid)
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    lo = torch.where(spec_valid, flat, inf).min(dim=1).values
    hi = torch.where(spec_valid, flat, -inf).max(dim=1).values
    valid = None
    tok = None
    if token_attr is not None:
        valid = _valid_or_all(token_attr, token_valid)
        tok = token_attr.to(torch.float64)
        lo = torch.minimum(lo, torch.where(valid, tok, inf).min(dim=1).values)
        hi = torch.maximum(hi, torch.where(valid, tok, -inf).max(dim=1).values)
    span = (hi - lo)[:, None]
    span = torch.where(torch.isfinite(span), span, torch.zeros_like(span))  # a row with nothing valid
    safe = torch.where(span > 0, span, torch.ones_like(span))
    spec = torch.where((span > 0) & spec_valid, (flat - lo[:, None]) / safe, torch.zeros_like(flat))
    spec = spec.reshape(spectrogram_attr.shape).to(torch.float32)
    if tok is None:
        return spec, None
    tok = torch.where(span > 0, (tok - lo[:, None]) / safe, torch.zeros_like(tok))
    tok = torch.where(valid, tok, torch.zeros_like(tok)).to(torch.float32)
    return spec, tok


def normalize_reference(
    spectrogram_attr: Tensor,
    token_attr: Tensor | None = None,
    token_valid: Tensor | None = None,
    *,
    spectrogram_valid: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""The reference evaluation's normalisation: :func:`single_mean_std`, then
    :func:`paired_min_max`. Idempotent."""
    spec, tok = single_mean_std(spectrogram_attr, token_attr, token_valid, spectrogram_valid=spectrogram_valid)
    return paired_min_max(spec, tok, token_valid, spectrogram_valid=spectrogram_valid)


NORMALIZERS = {
    "single_mean_std": single_mean_std,
    "paired_min_max": paired_min_max,
    "reference": normalize_reference,
}
