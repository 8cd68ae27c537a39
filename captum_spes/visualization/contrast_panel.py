#!/usr/bin/env python3
r"""The HTML report's contrastive panel: each contrasted token's plain map beside its contrastive map.

A contrastive map (:class:`~captum_spes.impact.ContrastiveImpact`) is signed: red where the
occluded input supported the explained token over the foil, blue where it supported the foil.
The plain map (KL by default) is drawn with the report's sequential colours. Both are embedded
as PNG ``data:`` URIs (written here with :mod:`zlib`, no imaging library), low frequencies at
the bottom, each scaled to its own range (printed under it).
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Callable, Mapping

import numpy as np

from captum_spes._core.result import SPESResult
from captum_spes.errors import InputError

__all__ = ["contrast_section", "png_data_uri"]


def png_data_uri(rgb: np.ndarray) -> str:
    """A ``data:image/png`` URI of an ``(height, width, 3)`` uint8 image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"rgb must be a (height, width, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    height, width, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))  # filter 0 on every row
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _sequential(values: np.ndarray, lut: list[list[int]]) -> tuple[np.ndarray, str]:
    low, high = float(values.min()), float(values.max())
    levels = np.zeros(values.shape, dtype=np.int64)
    if high > low:
        levels = np.round(255 * (values - low) / (high - low)).astype(np.int64)
    return np.asarray(lut, dtype=np.uint8)[levels], f"{low:.3g} to {high:.3g}"


def _diverging(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Blue (negative) - white (0) - red (positive), symmetric around 0."""
    bound = float(np.abs(values).max()) or 1.0
    x = np.clip(values / bound, -1.0, 1.0)[..., None]
    white, red, blue = np.array([255.0, 255, 255]), np.array([200.0, 30, 30]), np.array([30.0, 70, 200])
    rgb = np.where(x >= 0, white + x * (red - white), white - x * (blue - white))
    return np.round(rgb).astype(np.uint8), f"-{bound:.3g} to {bound:.3g}"


def _figure(values: np.ndarray, colour: Callable[[np.ndarray], tuple[np.ndarray, str]], caption: str) -> str:
    rgb, scale = colour(values[::-1])  # low frequencies at the bottom
    return (
        f"<figure class='contrast-map'><img alt='{html.escape(caption)}' src='{png_data_uri(rgb)}' "
        f"style='width:100%;height:160px;image-rendering:pixelated'><figcaption>{html.escape(caption)} "
        f"({scale})</figcaption></figure>"
    )


def contrast_section(
    plain: SPESResult,
    contrast: SPESResult,
    lut: list[list[int]],
    foils: Mapping[int, str] | None = None,
) -> str:
    r"""The panel's HTML: for each contrasted position, the plain and the contrastive map.

    Args:
        plain (SPESResult): the explanation with the plain measure (same hypothesis).
        contrast (SPESResult): the explanation with a contrastive measure.
        lut (list): the report's 256-entry colour table for the plain map.
        foils (mapping, optional): position -> foil text, for the captions. Default: the
            positions whose contrastive map is not all zero, foils unnamed.
    """
    if contrast.target_ids != plain.target_ids:
        raise InputError("the contrastive explanation must explain the same tokens as the plain one")
    if foils is None:
        maps = contrast.spectrogram_attr.flatten(1).abs().amax(dim=1)
        foils = {k: "the foil" for k in range(contrast.num_tokens) if float(maps[k]) > 0}
    blocks = []
    for position, foil in sorted(foils.items()):
        token = plain.tokens[position].strip() or repr(plain.tokens[position])
        blocks.append(
            f"<div class='contrast' data-token-index='{position}'><h3>{html.escape(token)!s} rather than "
            f"{html.escape(foil)}</h3><div style='display:flex;gap:1em'>"
            + _figure(plain.spectrogram_attr[position].double().numpy(), lambda v: _sequential(v, lut), "plain map")
            + _figure(contrast.spectrogram_attr[position].double().numpy(), _diverging, "contrastive map")
            + "</div></div>"
        )
    impact = html.escape(str(contrast.metadata.get("impact", "contrastive")))
    return (
        "<h2>Contrastive explanation</h2>"
        + "".join(blocks)
        + f"<p class='note'>Left: the token's map with the plain measure; right: with {impact}, red where the "
        "occluded input made the model prefer the explained token over the foil, blue where it favoured the "
        "foil. Time left to right, frequency bottom to top.</p>"
    )
