#!/usr/bin/env python3
r"""A self-contained interactive HTML report of one SPES explanation.

:func:`write_html_report` writes ONE ``.html`` file that works offline (no CDN, no network
request): inline CSS and JavaScript, the audio embedded as a base64 WAV ``data:`` URI and the
maps embedded as base64 ``uint8`` arrays that inline JavaScript draws on ``<canvas>``
elements. Each map is quantised to 256 levels over its own ``[min, max]`` (a display
scaling; the raw range is printed next to the map), which keeps a 30 s, 40-token report
around a few MB.

The page shows an audio player, the transcript as clickable words and tokens (a click puts
that word's or token's map over the spectrogram), a button per word playing its salient
region, the causal token map and the run's metadata.

Stable hooks for scripting and tests: ``[data-word-index="i"]`` (rows of
``result.to_words()``, the end token last), ``[data-token-index="k"]``,
``button.play-word[data-word-index="i"]`` (with ``data-start``/``data-end`` in seconds),
``#show-utterance``, ``#audio``, ``#spectrogram`` and ``#overlay`` canvases; ``#overlay``
carries ``data-active`` (``"utterance"``, ``"word:i"`` or ``"token:k"``),
``data-active-word`` and ``data-active-token`` (index or empty), ``#audio`` carries
``data-play-start``/``data-play-end`` while a range plays.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captum_spes._core.result import SPESResult
from captum_spes._utils.files import atomic_write, refuse_overwrite
from captum_spes.errors import InputError

__all__ = ["write_html_report", "salient_span"]

ArrayLike = np.ndarray | torch.Tensor

# Colour stops of the overlay colormap (dark purple -> red -> yellow), interpolated to a
# 256-entry table; low saliency is also more transparent, so the spectrogram shows through.
_STOPS = [
    (0.0, (20, 11, 52)),
    (0.3, (120, 28, 109)),
    (0.55, (212, 72, 66)),
    (0.8, (250, 160, 30)),
    (1.0, (252, 255, 164)),
]


def _lut() -> list[list[int]]:
    positions = [p for p, _ in _STOPS]
    table = []
    for level in range(256):
        x = level / 255.0
        table.append([int(round(np.interp(x, positions, [c[ch] for _, c in _STOPS]))) for ch in range(3)])
    return table


def _numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _quantise(values: np.ndarray) -> tuple[str, float, float]:
    """uint8 levels over the array's own [min, max], base64-encoded (row-major)."""
    low, high = float(np.min(values)), float(np.max(values))
    scale = (values - low) / (high - low) if high > low else np.zeros_like(values)
    levels = np.clip(np.round(scale * 255.0), 0, 255).astype(np.uint8)
    return base64.b64encode(levels.tobytes()).decode("ascii"), low, high


def _pack(mask: np.ndarray) -> str:
    """A bool map as base64 bits (row-major, most significant bit first)."""
    return base64.b64encode(np.packbits(mask.astype(bool).reshape(-1)).tobytes()).decode("ascii")


def salient_span(
    profile: ArrayLike, frame_rate: float, top_percent: float = 10.0, pad_s: float = 0.05, min_s: float = 0.2
) -> tuple[float, float]:
    r"""Seconds ``(start, end)`` of the salient region of a time profile: the run of
    consecutive frames around the peak that lie in the top ``top_percent`` % of frames,
    padded by ``pad_s`` on each side and widened to at least ``min_s`` (a few frames are
    too short to hear).

    Args:
        profile (ndarray or Tensor): ``(n_frames,)`` saliency over time.
        frame_rate (float): frames per second.
        top_percent (float, optional): Default: 10.0
        pad_s (float, optional): Default: 0.05
        min_s (float, optional): Default: 0.2
    """
    values = _numpy(profile)
    n_frames = values.shape[0]
    duration = n_frames / frame_rate
    peak = int(np.argmax(values))
    threshold = np.percentile(values, 100.0 - top_percent)
    floor = values.min()

    def salient(frame: int) -> bool:
        # Ties at the floor (a sparse profile) are not salient, as in salient_mask.
        return bool(values[frame] > floor if threshold <= floor else values[frame] >= threshold)

    first = last = peak
    while first > 0 and salient(first - 1):
        first -= 1
    while last < n_frames - 1 and salient(last + 1):
        last += 1
    start, end = first / frame_rate - pad_s, (last + 1) / frame_rate + pad_s
    if end - start < min_s:
        middle = (start + end) / 2
        start, end = middle - min_s / 2, middle + min_s / 2
    start, end = max(0.0, start), min(duration, end)
    return round(start, 3), round(end, 3)


def _wav_data_uri(waveform: ArrayLike, sampling_rate: int) -> str:
    import soundfile as sf

    audio = _numpy(waveform)
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1:
        raise InputError(f"waveform must be mono (num_samples,), got shape {audio.shape}")
    buffer = io.BytesIO()
    # 16-bit PCM: half the size of float WAV and every browser plays it.
    sf.write(buffer, np.clip(audio, -1.0, 1.0), int(sampling_rate), format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _background(features: ArrayLike | None, n_mels: int, n_frames: int) -> str | None:
    if features is None:
        return None
    values = _numpy(features)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2 or values.shape[0] != n_mels or values.shape[1] < n_frames:
        raise InputError(
            f"features must be the log-mel input, (1, {n_mels}, T) or ({n_mels}, T) with "
            f"T >= {n_frames}; got shape {tuple(values.shape)}"
        )
    return _quantise(values[:, :n_frames])[0]


def _time_ticks(duration: float) -> list[float]:
    for step in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0):
        if duration / step <= 12:
            break
    return [round(i * step, 3) for i in range(int(duration / step + 1e-9) + 1)]


def _metadata_rows(result: SPESResult) -> list[tuple[str, str]]:
    meta = dict(result.metadata)
    first = [
        "model_id",
        "model_class",
        "method",
        "n_masks",
        "masks_per_level",
        "segments_requested",
        "segments_obtained",
        "seed",
        "impact",
        "baseline",
        "p",
        "mask_family",
        "token_masks",
        "n_token_masks",
        "num_frames",
        "frame_rate",
        "seconds",
        "device",
        "dtype",
        "autocast",
        "normalization",
    ]
    rows: list[tuple[str, str]] = []

    def show(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    for key in first + sorted(k for k in meta if k not in first and k != "versions"):
        if key in meta:
            rows.append((key, show(meta[key])))
    for name, version in sorted(dict(meta.get("versions", {})).items()):
        rows.append((f"versions.{name}", show(version)))
    return rows


def _intervals(words: Sequence[Any] | None) -> list[dict[str, Any]]:
    out = []
    for item in words or []:
        if hasattr(item, "start"):
            start, end, label = item.start, item.end, getattr(item, "label", "")
        else:
            start, end, label = item
        out.append({"start": float(start), "end": float(end), "label": str(label)})
    return out


def _piece(text: str) -> str:
    stripped = text.strip()
    return stripped if stripped else repr(text)


def write_html_report(
    result: SPESResult,
    path: str | os.PathLike,
    *,
    waveform: ArrayLike | None = None,
    sampling_rate: int = 16000,
    features: ArrayLike | None = None,
    words: Sequence[Any] | None = None,
    overwrite: bool = False,
    normalize: str | None = None,
    top_percent: float = 10.0,
    title: str | None = None,
    listen_top_percent: float | None = 10.0,
    contrast: SPESResult | None = None,
    contrast_foils: Mapping[int, str] | None = None,
    significance: float | None = 0.05,
    correction: str | None = "fdr_bh",
) -> Path:
    r"""Write an interactive, self-contained HTML report of ``result``.

    Args:
        result (SPESResult): the explanation.
        path (str or PathLike): the ``.html`` file to write.
        waveform (ndarray or Tensor, optional): mono audio ``(num_samples,)`` the
            explanation was computed on, embedded for the player. Default: None
        sampling_rate (int, optional): of ``waveform``, Hz. Default: 16000
        features (ndarray or Tensor, optional): the log-mel input ``(1, n_mels, T)``, drawn
            in grey under the saliency. Default: None
        words (sequence, optional): word alignment (:class:`AlignedInterval` or
            ``(start, end, label)``), drawn as a track under the spectrogram. Default: None
        overwrite (bool, optional): replace an existing file. Default: False
        normalize (str, optional): :meth:`SPESResult.normalize` method for the token maps
            and token map. Default: None (raw maps)
        top_percent (float, optional): frames defining a word's playable salient region
            (:func:`salient_span`). Default: 10.0
        title (str, optional): page title. Default: the transcript.
        listen_top_percent (float or None, optional): with a waveform, embed for every word
            its *listenable explanation*: the audio resynthesised from only the word's top
            ``listen_top_percent`` % salient time-frequency bins (:func:`salient_audio`),
            cut to the word's salient region +- 0.25 s and played by its "listen" button.
            None leaves it out. Default: 10.0
        contrast (SPESResult, optional): a contrastive explanation of the same tokens
            (:class:`~captum_spes.impact.ContrastiveImpact`); its maps of the contrasted
            positions are shown beside the plain ones. Default: None
        contrast_foils (mapping, optional): contrasted position -> foil text, for the
            panel's captions. Default: the positions whose contrastive map is not zero.
        significance (float or None, optional): elements that are not significant at this
            level (:meth:`SPESResult.significance`) are drawn faint, and the page says so.
            None, or a result without statistics, draws every element alike. Default: 0.05
        correction (str or None, optional): the multiple-comparison correction. Default:
            "fdr_bh"

    Returns:
        *Path* of the written file.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    target = refuse_overwrite(path, overwrite)
    source = result.normalize(normalize) if normalize else result
    merged = source.to_words()
    groups = merged.metadata["word_groups"]
    rate = source.frame_rate

    tested = significance is not None and source.spectrogram_z is not None and source.units is not None
    token_sig = source.significance(significance, correction).numpy() if tested else None
    word_sig = merged.significance(significance, correction).numpy() if tested else None
    token_items = []
    for k, text in enumerate(source.tokens):
        data, low, high = _quantise(_numpy(source.spectrogram_attr[k]))
        token_items.append({"text": text, "map": data, "min": low, "max": high})
        if token_sig is not None:
            token_items[-1]["sig"] = _pack(token_sig[k])
    word_items = []
    word_profiles = _numpy(merged.time_profile("mean"))
    for i, text in enumerate(merged.tokens):
        start, end = salient_span(word_profiles[i], rate, top_percent)
        item: dict[str, Any] = {"text": text, "tokens": groups[i], "start": start, "end": end}
        if len(groups[i]) == 1:
            # A one-token word has its token's map: point at it rather than embed it twice.
            token_item = token_items[groups[i][0]]
            item.update(ref=groups[i][0], min=token_item["min"], max=token_item["max"])
        else:
            item["map"], item["min"], item["max"] = _quantise(_numpy(merged.spectrogram_attr[i]))
            if word_sig is not None:
                item["sig"] = _pack(word_sig[i])
        word_items.append(item)
    utterance, u_low, u_high = _quantise(_numpy(result.utterance_map()))
    utterance_item: dict[str, Any] = {"map": utterance, "min": u_low, "max": u_high}
    if token_sig is not None:
        utterance_item["sig"] = _pack(token_sig.any(axis=0))
    payload = {
        "n_mels": source.n_mels,
        "n_frames": source.n_frames,
        "frame_rate": rate,
        "duration": source.duration,
        "background": _background(features, source.n_mels, source.n_frames),
        "tokens": token_items,
        "words": word_items,
        "utterance": utterance_item,
        "significance": _significance_note(source, significance, correction) if tested else None,
        "lut": _lut(),
        "alignment": _intervals(words),
    }
    # "</" would end the <script> element early.
    payload_json = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")

    spans = [(item["start"], item["end"]) for item in word_items]
    listen = None
    if waveform is not None and listen_top_percent is not None:
        listen = _listen_clips(result, waveform, sampling_rate, spans, listen_top_percent)
    page = _render(source, merged, spans, payload_json, waveform, sampling_rate, top_percent, title, listen)
    if contrast is not None:
        from captum_spes.visualization.contrast_panel import contrast_section

        page = page.replace(
            _METADATA_HEADING, contrast_section(result, contrast, _lut(), contrast_foils) + _METADATA_HEADING
        )
    with atomic_write(target) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return target


def _significance_note(result: SPESResult, level: float | None, correction: str | None) -> str:
    method = {"fdr_bh": "Benjamini-Hochberg false discovery rate", "holm": "Holm", "bonferroni": "Bonferroni"}
    return (
        f"Bright: significant at {level:g} ({method.get(correction, 'no correction')}, per token over its "
        f"{result.num_units} independent units); faint: not distinguishable from Monte-Carlo noise with "
        f"{result.metadata.get('n_masks', '?')} masks."
    )


def _listen_clips(
    result: SPESResult,
    waveform: ArrayLike,
    sampling_rate: int,
    spans: list[tuple[float, float]],
    top_percent: float,
    margin: float = 0.25,
) -> list[str]:
    """Per word (end token excluded), a WAV data URI of its resynthesised salient audio."""
    from captum_spes.visualization.listen import salient_audio

    audio = _numpy(waveform).astype(np.float32).reshape(-1)
    words = result.to_words()  # the raw maps merged once, not once per word
    clips = []
    for index, (start, end) in enumerate(spans[:-1]):
        kept = salient_audio(words, audio, sampling_rate, token=index, top_percent=top_percent)
        first = max(0, int((start - margin) * sampling_rate))
        last = min(len(kept), int((end + margin) * sampling_rate))
        clips.append(_wav_data_uri(kept[first:last], sampling_rate))
    return clips


def _token_map_table(source: SPESResult) -> str:
    if source.token_attr is None:
        return "<p class='note'>No token map: the explanation was computed without token masks.</p>"
    values = _numpy(source.token_attr)
    valid = source.token_valid_mask().numpy()
    shown = values[valid]
    low, high = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    span = high - low if high > low else 1.0
    head = "".join(
        f"<th class='col' title='{html.escape(t)}'>{html.escape(_piece(t))}</th>" for t in source.decoder_input_tokens
    )
    rows = []
    for k, token in enumerate(source.tokens):
        cells = []
        for c in range(values.shape[1]):
            if not valid[k, c]:
                cells.append("<td class='na'></td>")
                continue
            level = (values[k, c] - low) / span
            cells.append(f"<td style='background:rgba(200,30,30,{level:.3f})' title='{values[k, c]:.4g}'></td>")
        rows.append(
            f"<tr><th class='row' data-token-index='{k}'>{html.escape(_piece(token))}</th>" + "".join(cells) + "</tr>"
        )
    return (
        f"<table id='token-map'><thead><tr><th></th>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        f"<p class='note'>Rows: explained tokens; columns: decoder inputs (prompt first). "
        f"Blank cells are inputs a causal decoder cannot see. Colour scale {low:.3g} to {high:.3g}.</p>"
    )


def _render(
    source: SPESResult,
    merged: SPESResult,
    spans: list[tuple[float, float]],
    payload_json: str,
    waveform: ArrayLike | None,
    sampling_rate: int,
    top_percent: float,
    title: str | None,
    listen: list[str] | None = None,
) -> str:
    from captum_spes.visualization.plots import row_centres

    esc = html.escape
    heading = title if title is not None else (source.text.strip() or "SPES explanation")
    if waveform is not None:
        audio = f"<audio id='audio' controls preload='auto' src='{_wav_data_uri(waveform, sampling_rate)}'></audio>"
    else:
        audio = "<audio id='audio' controls></audio><p class='note'>No waveform was given to the report.</p>"
    word_spans = []
    for i, text in enumerate(merged.tokens):
        special = " special" if i == merged.num_tokens - 1 else ""
        word_spans.append(
            f"<span class='wordbox'><span class='word{special}' data-word-index='{i}' "
            f"title='tokens {merged.metadata['word_groups'][i]}'>{esc(_piece(text))}</span>"
            f"<button class='play-word' data-word-index='{i}' data-start='{spans[i][0]:g}' "
            f"data-end='{spans[i][1]:g}' {_labelled(f'play the salient region {spans[i][0]:g}-{spans[i][1]:g} s')}>"
            f"{_PLAY_ICON}</button>"
            + (
                f"<button class='listen-word' data-word-index='{i}' {_labelled(_LISTEN_LABEL)}>{_LISTEN_ICON}</button>"
                f"<audio class='listen-audio' data-word-index='{i}' preload='none' src='{listen[i]}'></audio>"
                if listen is not None and i < len(listen)
                else ""
            )
            + "</span>"
        )
    last = source.num_tokens - 1
    token_spans = "".join(
        f"<span class='token{' special' if k == last else ''}' data-token-index='{k}'>{esc(_piece(t))}</span>"
        for k, t in enumerate(source.tokens)
    )
    duration = source.duration
    time_ticks = "".join(
        f"<span class='tick' style='left:{100 * t / duration:.3f}%'>{t:g}</span>" for t in _time_ticks(duration)
    )
    centres = row_centres(source, sampling_rate if waveform is not None else 16000)
    freq_ticks = []
    for hz in (250, 500, 1000, 2000, 4000, 6000):
        if centres[0] <= hz <= centres[-1]:
            position = (float(np.interp(hz, centres, np.arange(source.n_mels))) + 0.5) / source.n_mels
            freq_ticks.append(f"<span class='ftick' style='bottom:{100 * position:.3f}%'>{hz}</span>")
    meta_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _metadata_rows(source))
    return _TEMPLATE.format(
        title=esc(heading),
        audio=audio,
        words="".join(word_spans),
        tokens=token_spans,
        time_ticks=time_ticks,
        freq_ticks="".join(freq_ticks),
        token_map=_token_map_table(source),
        metadata=meta_rows,
        payload=payload_json,
        top_percent=f"{top_percent:g}",
        n_frames=source.n_frames,
        n_mels=source.n_mels,
    )


# Inline SVG icons rather than the characters U+25B6 and U+1F50A: those need a font with the
# glyph (an emoji font for the speaker), which e.g. Debian's chromium lacks by default and then
# draws an empty box. currentColor follows the button's text colour.
_SVG_OPEN = "<svg class='icon' viewBox='0 0 16 16' width='14' height='14' aria-hidden='true' focusable='false'>"
_PLAY_ICON = _SVG_OPEN + "<path d='M4 2.5v11l9.5-5.5z' fill='currentColor'/></svg>"
_LISTEN_ICON = (
    _SVG_OPEN + "<path d='M1.5 5.5h3l4-3.5v12l-4-3.5h-3z' fill='currentColor'/>"
    "<path d='M10.8 5.4a3.6 3.6 0 0 1 0 5.2M12.8 3.4a6.4 6.4 0 0 1 0 9.2' fill='none' stroke='currentColor' "
    "stroke-width='1.5' stroke-linecap='round'/></svg>"
)
_LISTEN_LABEL = "listen to the explanation: only the top salient time-frequency bins, resynthesised"


def _labelled(label: str) -> str:
    """``aria-label`` (for screen readers: the button has no text) and ``title`` (tooltip)."""
    escaped = html.escape(label, quote=True)
    return f"aria-label='{escaped}' title='{escaped}'"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.4em}
.note{color:#666;font-size:.85em}
#transcript{line-height:2.2em}
.wordbox{white-space:nowrap;margin-right:.35em}
.word,.token{cursor:pointer;padding:.15em .3em;border-radius:4px;background:#eef}
.word.special,.token.special{background:#eee;color:#777}
.word.active,.token.active{background:#d44842;color:#fff}
.play-word,.listen-word{margin-left:.1em;padding:1px 3px;line-height:0;vertical-align:middle;cursor:pointer;border:1px solid #bbb;border-radius:3px;background:#fff;color:#222}
.icon{display:inline-block;vertical-align:middle}
.note .icon{width:1em;height:1em;vertical-align:-.15em}
#tokens .token{font-size:.85em;margin-right:.2em}
#plot{display:flex;gap:.4em}
#faxis{position:relative;width:3.2em;font-size:.72em;color:#555}
.ftick{position:absolute;right:.3em;transform:translateY(50%)}
#stack{position:relative;flex:1;height:260px;background:#000}
#stack canvas{position:absolute;left:0;top:0;width:100%;height:100%;image-rendering:pixelated}
#playhead{position:absolute;top:0;bottom:0;width:2px;background:#0cf;left:0;display:none}
#taxis{position:relative;height:1.4em;margin-left:3.6em;font-size:.72em;color:#555}
.tick{position:absolute;transform:translateX(-50%)}
#align{position:relative;height:1.6em;margin-left:3.6em;font-size:.72em}
.seg{position:absolute;top:0;height:1.4em;background:#e4e4f4;border-left:1px solid #99a;overflow:hidden;white-space:nowrap}
#token-map{border-collapse:collapse;font-size:.78em}
#token-map td{width:1.6em;height:1.3em;border:1px solid #eee}
#token-map td.na{background:repeating-linear-gradient(45deg,#f7f7f7,#f7f7f7 3px,#e8e8e8 3px,#e8e8e8 6px)}
#token-map th.col{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;max-height:9em;overflow:hidden}
#token-map th.row{text-align:right;font-weight:normal;cursor:pointer;padding-right:.4em}
#meta{border-collapse:collapse;font-size:.8em}
#meta th{text-align:left;padding:.15em .8em .15em 0;vertical-align:top}
#meta td{font-family:ui-monospace,monospace;word-break:break-all}
#controls{font-size:.85em;margin:.4em 0}
"""

_JS = r"""
(function(){
"use strict";
var D = JSON.parse(document.getElementById("spes-data").textContent);
var W = D.n_frames, H = D.n_mels;
var audio = document.getElementById("audio");
var bg = document.getElementById("spectrogram"), ov = document.getElementById("overlay");
var caption = document.getElementById("caption"), alphaInput = document.getElementById("alpha");
var playhead = document.getElementById("playhead");
function decode(b64){
  var s = atob(b64), out = new Uint8Array(s.length);
  for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
var cache = {};
var MUTED = 0.15;
function countBits(bits, n){
  var count = 0;
  for (var i = 0; i < n; i++) count += (bits[i >> 3] >> (7 - (i & 7))) & 1;
  return count;
}
if (D.significance){ document.getElementById("significance").textContent = D.significance; }
function levels(key, b64){ if(!(key in cache)) cache[key] = decode(b64); return cache[key]; }
function drawBackground(){
  var ctx = bg.getContext("2d"), img = ctx.createImageData(W, H);
  var v = D.background ? decode(D.background) : null;
  for (var m = 0; m < H; m++) for (var t = 0; t < W; t++){
    var g = v ? v[m * W + t] : 0, p = ((H - 1 - m) * W + t) * 4;  // low mels at the bottom
    img.data[p] = img.data[p+1] = img.data[p+2] = g; img.data[p+3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}
var current = null;
function drawOverlay(key, item){
  current = [key, item];
  var v = levels(key, item.map), ctx = ov.getContext("2d"), img = ctx.createImageData(W, H);
  var a = parseFloat(alphaInput.value);
  var sig = item.sig ? levels(key + ":sig", item.sig) : null;
  for (var m = 0; m < H; m++) for (var t = 0; t < W; t++){
    var i = m * W + t, q = v[i], c = D.lut[q], p = ((H - 1 - m) * W + t) * 4;
    img.data[p] = c[0]; img.data[p+1] = c[1]; img.data[p+2] = c[2];
    // Low saliency is more transparent so the spectrogram stays readable; what is not
    // significant is drawn faint (MUTED of its opacity).
    var keep = sig === null || (sig[i >> 3] >> (7 - (i & 7))) & 1;
    img.data[p+3] = Math.round(255 * a * Math.min(1, 0.25 + q / 255) * (keep ? 1 : MUTED));
  }
  ctx.putImageData(img, 0, 0);
  ov.dataset.significant = sig === null ? "" : String(countBits(sig, W * H));
}
function clearActive(){
  document.querySelectorAll(".active").forEach(function(e){ e.classList.remove("active"); });
}
function select(kind, index){
  clearActive();
  var item;
  if (kind === "word"){
    item = D.words[index];
    if (item.ref !== undefined) item = Object.assign({}, item, {map: D.tokens[item.ref].map, sig: D.tokens[item.ref].sig, key: "token:" + item.ref});
    document.querySelectorAll('.word[data-word-index="' + index + '"]').forEach(function(e){ e.classList.add("active"); });
    item.tokens.forEach(function(k){
      document.querySelectorAll('.token[data-token-index="' + k + '"]').forEach(function(e){ e.classList.add("active"); });
    });
    ov.dataset.activeWord = String(index); ov.dataset.activeToken = "";
    caption.textContent = "Word " + index + ": " + item.text.trim() + " (tokens " + item.tokens.join(", ") +
      "); raw range " + item.min.toPrecision(3) + " to " + item.max.toPrecision(3);
  } else if (kind === "token"){
    item = D.tokens[index];
    document.querySelectorAll('.token[data-token-index="' + index + '"]').forEach(function(e){ e.classList.add("active"); });
    ov.dataset.activeWord = ""; ov.dataset.activeToken = String(index);
    caption.textContent = "Token " + index + ": " + JSON.stringify(item.text) + "; raw range " +
      item.min.toPrecision(3) + " to " + item.max.toPrecision(3);
  } else {
    item = D.utterance; kind = "utterance";
    ov.dataset.activeWord = ""; ov.dataset.activeToken = "";
    caption.textContent = "Utterance map (mean of the normalised token maps); range " +
      item.min.toPrecision(3) + " to " + item.max.toPrecision(3);
  }
  ov.dataset.active = kind === "utterance" ? "utterance" : kind + ":" + index;
  drawOverlay(item.key || ov.dataset.active, item);
}
var stopAt = null;
function playRange(start, end){
  audio.dataset.playStart = String(start); audio.dataset.playEnd = String(end);
  stopAt = end;
  try { audio.currentTime = start; } catch (e) { /* no media loaded */ }
  var promise = audio.play();
  // Autoplay policies or a missing audio device reject play(); that is not a page error.
  if (promise && promise.catch) promise.catch(function(){});
}
audio.addEventListener("timeupdate", function(){
  if (stopAt !== null && audio.currentTime >= stopAt){ audio.pause(); stopAt = null; }
  var f = Math.min(1, audio.currentTime / D.duration);
  playhead.style.display = "block"; playhead.style.left = (100 * f) + "%";
});
document.querySelectorAll(".word").forEach(function(e){
  e.addEventListener("click", function(){ select("word", parseInt(e.dataset.wordIndex, 10)); });
});
document.querySelectorAll(".token, #token-map th.row").forEach(function(e){
  e.addEventListener("click", function(){ select("token", parseInt(e.dataset.tokenIndex, 10)); });
});
document.querySelectorAll(".play-word").forEach(function(e){
  e.addEventListener("click", function(){
    var i = parseInt(e.dataset.wordIndex, 10);
    select("word", i); playRange(D.words[i].start, D.words[i].end);
  });
});
document.querySelectorAll(".listen-word").forEach(function(e){
  e.addEventListener("click", function(){
    var i = parseInt(e.dataset.wordIndex, 10);
    select("word", i);
    var clip = document.querySelector(".listen-audio[data-word-index='" + i + "']");
    audio.pause();
    document.querySelectorAll(".listen-audio").forEach(function(a){ a.pause(); });
    clip.currentTime = 0;
    clip.dataset.playing = "1";
    var promise = clip.play();
    if (promise && promise.catch) promise.catch(function(){});
  });
});
document.getElementById("show-utterance").addEventListener("click", function(){ select("utterance", 0); });
alphaInput.addEventListener("input", function(){ if (current) drawOverlay(current[0], current[1]); });
document.getElementById("stack").addEventListener("click", function(ev){
  var r = this.getBoundingClientRect(), t = (ev.clientX - r.left) / r.width * D.duration;
  try { audio.currentTime = t; } catch (e) {}
});
var track = document.getElementById("align");
D.alignment.forEach(function(w){
  var s = document.createElement("span");
  s.className = "seg"; s.textContent = w.label; s.title = w.label + " " + w.start + "-" + w.end + " s";
  s.style.left = (100 * w.start / D.duration) + "%";
  s.style.width = (100 * Math.max(0, Math.min(w.end, D.duration) - w.start) / D.duration) + "%";
  track.appendChild(s);
});
if (!D.alignment.length) track.style.display = "none";
drawBackground();
select("utterance", 0);
document.body.dataset.ready = "1";
})();
"""

_METADATA_HEADING = "<h2>Run metadata</h2>"

_TEMPLATE = (
    "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
    "<meta name='viewport' content='width=device-width, initial-scale=1'>"
    "<link rel='icon' href='data:,'><title>SPES: {title}</title><style>"
    + _CSS.replace("{", "{{").replace("}", "}}")
    + "</style></head><body>"
    "<h1>SPES explanation: {title}</h1>"
    "{audio}"
    "<h2>Transcript</h2><div id='transcript'>{words}</div>"
    "<p class='note'>Click a word to show its saliency (subword tokens merged by max); "
    + _PLAY_ICON
    + " plays its salient region (the frames around its saliency peak in its top {top_percent}%); "
    + _LISTEN_ICON
    + " plays the "
    "listenable explanation: the audio resynthesised from only the word's most salient time-frequency "
    "bins (original phase).</p>"
    "<div id='tokens'>Tokens: {tokens}</div>"
    "<h2>Spectrogram saliency</h2>"
    "<div id='controls'><button id='show-utterance'>Utterance map</button> "
    "<label>overlay opacity <input id='alpha' type='range' min='0' max='1' step='0.05' value='0.75'></label> "
    "<span id='caption'></span></div>"
    "<div id='plot'><div id='faxis'>{freq_ticks}</div><div id='stack'>"
    "<canvas id='spectrogram' width='{n_frames}' height='{n_mels}'></canvas>"
    "<canvas id='overlay' width='{n_frames}' height='{n_mels}' data-active='' data-active-word='' "
    "data-active-token=''></canvas><div id='playhead'></div></div></div>"
    "<div id='taxis'>{time_ticks}</div><div id='align'></div>"
    "<p class='note'>Time in seconds; frequency axis on the Slaney mel scale, labelled in Hz. Grey: log-mel "
    "input; colour: saliency, each map scaled to its own range. Click the spectrogram to seek. "
    "<span id='significance'></span></p>"
    "<h2>Token map</h2>{token_map}"
    "<h2>Run metadata</h2><table id='meta'>{metadata}</table>"
    "<script type='application/json' id='spes-data'>{payload}</script>"
    "<script>" + _JS.replace("{", "{{").replace("}", "}}") + "</script>"
    "</body></html>\n"
)
