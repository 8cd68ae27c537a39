#!/usr/bin/env python3
r"""Matplotlib plots of SPES explanations.

Every plot follows Captum's visualization conventions (``captum.attr.visualization``):
matplotlib is imported lazily (importing :mod:`captum_spes` never needs it), a figure and
axis may be supplied through ``plt_fig_axis=(fig, ax)``, ``show=True`` calls
``pyplot.show()`` and every function returns ``(fig, ax)``.

Spectrogram axes are physical: time in seconds (``result.frame_rate`` frames per second) and
the mel axis labelled in Hz at the centre frequency of each mel filter. Whisper's filter bank
uses the *Slaney* mel scale (linear below 1 kHz, logarithmic above; librosa's default, also
``transformers.audio_utils.mel_filter_bank(..., mel_scale="slaney")``); the centres are
computed here with that formula (:func:`mel_frequencies`).

Maps are drawn with their noise: when a result carries its statistics (every
:class:`~captum_spes.SPESResult` made by SPES does), elements that are not significant at
``significance`` (Benjamini-Hochberg false discovery rate per token by default, see
:meth:`SPESResult.significance`) are muted to a faint wash, significant regions are outlined,
and the legend says so. ``significance=None`` draws the raw map alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from captum_spes._core.result import SPESResult
from captum_spes.errors import InputError, InputTypeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "mel_frequencies",
    "hz_to_mel",
    "mel_to_hz",
    "token_index",
    "as_captum_image",
    "plot_token_saliency",
    "plot_word_saliency",
    "plot_utterance_map",
    "plot_token_map",
    "plot_time_profile",
    "significance_mask",
    "MUTED_OPACITY",
]

ArrayLike = np.ndarray | torch.Tensor
FigAxis = tuple["Figure", "Axes"]

# Slaney mel scale constants (Auditory Toolbox): 200/3 Hz per mel below 1 kHz, then a
# logarithmic scale with 27 mels per factor 6.4 of frequency.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0

# Candidate tick frequencies for the mel axis: roughly even on a mel scale.
_HZ_TICKS = (0, 250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 11000, 16000)


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("captum_spes.visualization plots need matplotlib: pip install 'captum-spes[viz]'") from error
    return plt


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=np.float32)


# ----- mel scale ------------------------------------------------------------------------
def hz_to_mel(frequencies: ArrayLike) -> np.ndarray:
    """Hz to Slaney mels (the scale of Whisper's filter bank)."""
    hz = np.asarray(frequencies, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mels: ArrayLike) -> np.ndarray:
    """Slaney mels to Hz (inverse of :func:`hz_to_mel`)."""
    mel = np.asarray(mels, dtype=np.float64)
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_frequencies(
    n_mels: int = 80, sampling_rate: int = 16000, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    r"""Centre frequency in Hz of each mel filter of a Whisper-style (Slaney) filter bank.

    Filter ``k`` is a triangle spanning mel points ``k`` to ``k + 2`` of ``n_mels + 2`` points
    evenly spaced in Slaney mels between ``fmin`` and ``fmax``; its centre (the peak) is
    point ``k + 1``.

    Args:
        n_mels (int, optional): number of mel bins (80 for Whisper v1-v3-turbo except v3's 128).
            Default: 80
        sampling_rate (int, optional): Hz. Default: 16000
        fmin (float, optional): lowest filter edge in Hz. Default: 0.0
        fmax (float, optional): highest filter edge in Hz; None means Nyquist. Default: None

    Returns:
        *ndarray* ``(n_mels,)`` of increasing frequencies in Hz.
    """
    if n_mels < 1:
        raise InputError(f"n_mels must be a positive integer, got {n_mels}")
    top = sampling_rate / 2.0 if fmax is None else float(fmax)
    points = np.linspace(hz_to_mel(fmin), hz_to_mel(top), n_mels + 2)
    return mel_to_hz(points[1:-1])


# ----- selecting rows ---------------------------------------------------------------------
def _index_from(labels: Sequence[str], key: int | str, what: str, argument: str) -> int:
    count = len(labels)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        index = int(key)
        if not -count <= index < count:
            raise IndexError(f"{argument}={index} is out of range for {count} {what}s")
        return index % count
    if isinstance(key, str):
        if key in labels:
            return list(labels).index(key)
        stripped = [label.strip() for label in labels]
        if key.strip() in stripped:
            return stripped.index(key.strip())
        raise InputError(f"{argument}={key!r} matches no {what}; pass an index or one of {list(labels)}")
    raise InputTypeError(f"{argument} must be an int index or a {what} string, got {type(key).__name__}")


def token_index(result: SPESResult, token: int | str) -> int:
    """Row of ``result`` for a token given by index (negative allowed) or by its text
    (exact, else ignoring surrounding whitespace; the first match wins)."""
    return _index_from(result.tokens, token, "token", "token")


def _word_row(words: SPESResult, word: int | str) -> int:
    # Row of a word-level result (from SPESResult.to_words) for an index or the word text.
    return _index_from(words.tokens, word, "word", "word_index")


def _label(piece: str) -> str:
    # Whisper pieces carry their leading space; an empty label would hide the tick.
    text = piece.strip()
    return text if text else repr(piece)


# ----- Captum interop ---------------------------------------------------------------------
def as_captum_image(saliency: ArrayLike, low_frequencies_at_bottom: bool = True) -> np.ndarray:
    r"""A ``(n_mels, n_frames)`` map as the channels-last image Captum's
    :func:`captum.attr.visualization.visualize_image_attr` expects.

    Args:
        saliency (Tensor or ndarray): ``(n_mels, n_frames)``.
        low_frequencies_at_bottom (bool, optional): flip the mel axis, since images draw
            row 0 at the top. Default: True

    Returns:
        *ndarray* ``(n_mels, n_frames, 1)`` float32.
    """
    values = _to_numpy(saliency)
    if values.ndim != 2:
        raise InputError(f"saliency must be (n_mels, n_frames), got shape {values.shape}")
    if low_frequencies_at_bottom:
        values = values[::-1]
    return np.ascontiguousarray(values[..., None], dtype=np.float32)


# ----- shared drawing ---------------------------------------------------------------------
def _figure_axis(plt_fig_axis: FigAxis | None, fig_size: tuple[float, float]) -> FigAxis:
    if plt_fig_axis is not None:
        fig, ax = plt_fig_axis
        return fig, ax
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=fig_size)
    return fig, ax


def _finish(fig: Figure, show: bool, tidy: bool = False) -> None:
    if tidy:
        # Only for figures made here: a caller's layout is theirs to manage.
        fig.tight_layout()
    if show:
        _pyplot().show()


def _log_mel(features: ArrayLike, n_mels: int, n_frames: int) -> np.ndarray:
    values = _to_numpy(features)
    if values.ndim == 3:
        if values.shape[0] != 1:
            raise InputError(f"features must hold one utterance, (1, n_mels, frames); got shape {values.shape}")
        values = values[0]
    if values.ndim != 2 or values.shape[0] != n_mels:
        raise InputError(
            f"features must be (1, {n_mels}, frames) or ({n_mels}, frames) log-mel input "
            f"features, got shape {values.shape}"
        )
    if values.shape[1] < n_frames:
        raise InputError(
            f"features have {values.shape[1]} frames but the maps cover {n_frames}; pass the "
            "features the explanation was computed on"
        )
    # The model input is padded (Whisper: 30 s); the maps cover speech frames only.
    return values[:, :n_frames]


def row_centres(result: SPESResult, sampling_rate: int) -> np.ndarray:
    """Centre frequency in Hz of every map row: the adapter's (e.g. linear STFT bins, recorded
    in ``metadata["row_frequencies_hz"]``), else the Slaney-mel centres of log-mel rows."""
    recorded = result.metadata.get("row_frequencies_hz")
    if recorded is not None and len(recorded) == result.n_mels:
        return np.asarray(recorded, dtype=np.float64)
    return mel_frequencies(result.n_mels, sampling_rate)


def _mel_axis_ticks(ax: Axes, n_mels: int, sampling_rate: int, centres: np.ndarray | None = None) -> None:
    if centres is None:
        centres = mel_frequencies(n_mels, sampling_rate)
    # Place each round frequency at its exact (fractional) position between bin centres.
    ticks: list[float] = []
    labels: list[str] = []
    for hz in _HZ_TICKS:
        if centres[0] <= hz <= centres[-1]:
            ticks.append(float(np.interp(hz, centres, np.arange(n_mels))))
            labels.append(str(hz))
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels)
    ax.set_ylabel("Frequency (Hz)")


#: opacity of the elements that are not significant, relative to the significant ones
MUTED_OPACITY = 0.15


def significance_mask(
    result: SPESResult, row: int | None, significance: float | None, correction: str | None
) -> tuple[np.ndarray | None, str | None]:
    """``(n_mels, n_frames)`` bool mask of significant elements of one row (or, for
    ``row=None``, of any row: the utterance map), and the legend text; ``(None, None)`` when
    ``significance`` is None or the result has no statistics."""
    if significance is None or result.spectrogram_z is None or result.units is None:
        return None, None
    every = result.significance(alpha=significance, correction=correction)
    mask = every.any(dim=0) if row is None else every[row]
    method = {"fdr_bh": "BH false discovery rate", "holm": "Holm", "bonferroni": "Bonferroni", None: "uncorrected"}
    scope = "in any token" if row is None else ""
    legend = (
        f"bright: significant {scope} at {significance:g} ({method.get(correction, correction)}, "
        f"{result.num_units} units); faint: within Monte-Carlo noise"
    ).replace("  ", " ")
    return _to_numpy(mask).astype(bool), legend


def _plot_map(
    saliency: np.ndarray,
    frame_rate: float,
    features: ArrayLike | None,
    *,
    sampling_rate: int,
    cmap: str,
    alpha: float,
    show_colorbar: bool,
    title: str | None,
    fig_size: tuple[float, float],
    plt_fig_axis: FigAxis | None,
    show: bool,
    significant: np.ndarray | None = None,
    legend: str | None = None,
    centres: np.ndarray | None = None,
) -> FigAxis:
    from matplotlib import colors

    fig, ax = _figure_axis(plt_fig_axis, fig_size)
    n_mels, n_frames = saliency.shape
    # Frame t covers [t, t + 1) / frame_rate s; bin k is centred on k.
    extent = (0.0, n_frames / frame_rate, -0.5, n_mels - 0.5)
    overlay_alpha = 1.0
    if features is not None:
        background = _log_mel(features, n_mels, n_frames)
        ax.imshow(background, origin="lower", aspect="auto", cmap="gray", extent=extent, interpolation="nearest")
        overlay_alpha = alpha
    opacity: float | np.ndarray = overlay_alpha
    if significant is not None:
        opacity = np.where(significant, overlay_alpha, overlay_alpha * MUTED_OPACITY)
    norm = colors.Normalize(vmin=float(np.min(saliency)), vmax=float(np.max(saliency)))
    image = ax.imshow(
        saliency,
        origin="lower",
        aspect="auto",
        cmap=cmap,
        norm=norm,
        extent=extent,
        alpha=opacity,
        interpolation="nearest",
    )
    if significant is not None:
        if significant.any() and not significant.all():
            ax.contour(
                significant.astype(float),
                levels=[0.5],
                colors="cyan",
                linewidths=0.8,
                origin="lower",
                extent=(0.5 / frame_rate, (n_frames - 0.5) / frame_rate, 0.0, n_mels - 1.0),
            )
        note = legend if significant.any() else f"{legend} (nothing significant)"
        ax.text(
            0.01,
            0.99,
            note,
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=7,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.55, "pad": 2, "edgecolor": "none"},
        )
    ax.set_xlabel("Time (s)")
    _mel_axis_ticks(ax, n_mels, sampling_rate, centres)
    if title:
        ax.set_title(title)
    if show_colorbar:
        fig.colorbar(image, ax=ax, label="saliency")
    _finish(fig, show, tidy=plt_fig_axis is None)
    return fig, ax


# ----- public plots -----------------------------------------------------------------------
def plot_token_saliency(
    result: SPESResult,
    token: int | str,
    features: ArrayLike | None = None,
    *,
    normalize: str | None = None,
    sampling_rate: int = 16000,
    cmap: str = "inferno",
    alpha: float = 0.55,
    show_colorbar: bool = True,
    title: str | None = None,
    fig_size: tuple[float, float] = (9, 4),
    plt_fig_axis: FigAxis | None = None,
    show: bool = False,
    significance: float | None = 0.05,
    correction: str | None = "fdr_bh",
) -> FigAxis:
    r"""Spectrogram saliency of one explained token.

    The token's map ``result.spectrogram_attr[k]`` is drawn over the log-mel spectrogram
    (grey) with transparency ``alpha``; without ``features`` the map is drawn opaque.

    Args:
        result (SPESResult): the explanation.
        token (int or str): row index (negative allowed) or the token text.
        features (Tensor or ndarray, optional): the log-mel input the explanation was
            computed on, ``(1, n_mels, T)`` or ``(n_mels, T)`` with ``T >= n_frames``.
            Default: None
        normalize (str, optional): a :meth:`SPESResult.normalize` method applied first;
            None draws the raw maps. Default: None
        sampling_rate (int, optional): of the audio, for the Hz labels. Default: 16000
        cmap (str, optional): matplotlib colormap of the saliency. Default: "inferno"
        alpha (float, optional): opacity of the saliency over the spectrogram. Default: 0.55
        show_colorbar (bool, optional): Default: True
        title (str, optional): default names the token.
        fig_size (tuple, optional): used when a new figure is created. Default: (9, 4)
        plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into. Default: None
        show (bool, optional): call ``pyplot.show()``. Default: False
        significance (float or None, optional): level below which elements count as
            significant; the others are muted and the legend says so. None draws the map
            without its statistics. Default: 0.05
        correction (str or None, optional): multiple-comparison correction,
            see :meth:`SPESResult.significance`. Default: "fdr_bh"

    Returns:
        ``(fig, ax)``.
    """
    source = result.normalize(normalize) if normalize else result
    index = token_index(source, token)
    saliency = _to_numpy(source.spectrogram_attr[index])
    significant, legend = significance_mask(source, index, significance, correction)
    return _plot_map(
        saliency,
        source.frame_rate,
        features,
        sampling_rate=sampling_rate,
        cmap=cmap,
        alpha=alpha,
        show_colorbar=show_colorbar,
        title=title if title is not None else f"Token {index}: {_label(source.tokens[index])}",
        fig_size=fig_size,
        plt_fig_axis=plt_fig_axis,
        show=show,
        significant=significant,
        legend=legend,
        centres=row_centres(source, sampling_rate),
    )


def plot_word_saliency(
    result: SPESResult,
    word_index: int | str,
    features: ArrayLike | None = None,
    *,
    reduce: str = "max",
    normalize: str | None = None,
    title: str | None = None,
    plt_fig_axis: FigAxis | None = None,
    show: bool = False,
    **kwargs: Any,
) -> FigAxis:
    r"""Spectrogram saliency of one word: its subword tokens merged by
    :meth:`SPESResult.to_words` (``reduce``), then drawn as :func:`plot_token_saliency`.

    Args:
        result (SPESResult): the token-level explanation.
        word_index (int or str): word row (the end token is the last row) or the word text.
        features (Tensor or ndarray, optional): log-mel input, as for
            :func:`plot_token_saliency`. Default: None
        reduce (str, optional): "max", "mean" or "sum" over a word's tokens. Default: "max"
        normalize (str, optional): normalisation applied to the token maps before merging.
            Default: None
        title (str, optional): default names the word and its tokens.
        plt_fig_axis (tuple, optional): ``(fig, ax)``. Default: None
        show (bool, optional): Default: False
        **kwargs: passed on to :func:`plot_token_saliency` (``cmap``, ``alpha``, ...).

    Returns:
        ``(fig, ax)``.
    """
    source = result.normalize(normalize) if normalize else result
    words = source.to_words(reduce)
    index = _word_row(words, word_index)
    if title is None:
        pieces = [source.tokens[i] for i in words.metadata["word_groups"][index]]
        title = f"Word {index}: {_label(words.tokens[index])}  (tokens {pieces}, {reduce})"
    return plot_token_saliency(words, index, features, title=title, plt_fig_axis=plt_fig_axis, show=show, **kwargs)


def plot_utterance_map(
    result: SPESResult,
    features: ArrayLike | None = None,
    *,
    normalize: str | None = "reference",
    title: str | None = None,
    plt_fig_axis: FigAxis | None = None,
    show: bool = False,
    **kwargs: Any,
) -> FigAxis:
    r"""The utterance-level map, :meth:`SPESResult.utterance_map` (mean over tokens of the
    normalised maps, the one ranked by deletion/insertion), over the spectrogram.

    Args:
        result (SPESResult): the explanation.
        features (Tensor or ndarray, optional): log-mel input. Default: None
        normalize (str, optional): passed to ``utterance_map``. Default: "reference"
        title (str, optional): default shows the transcript.
        plt_fig_axis (tuple, optional): ``(fig, ax)``. Default: None
        show (bool, optional): Default: False
        **kwargs: ``sampling_rate``, ``cmap``, ``alpha``, ``show_colorbar``, ``fig_size``,
            ``significance`` and ``correction`` (as for :func:`plot_token_saliency`; an element
            is bright when it is significant for any token).

    Returns:
        ``(fig, ax)``.
    """
    options = dict(sampling_rate=16000, cmap="inferno", alpha=0.55, show_colorbar=True, fig_size=(9, 4))
    significance = kwargs.pop("significance", 0.05)
    correction = kwargs.pop("correction", "fdr_bh")
    unknown = set(kwargs) - set(options)
    if unknown:
        raise InputTypeError(f"plot_utterance_map got unexpected keyword arguments {sorted(unknown)}")
    options.update(kwargs)
    saliency = _to_numpy(result.utterance_map(normalize))
    significant, legend = significance_mask(result, None, significance, correction)
    return _plot_map(
        saliency,
        result.frame_rate,
        features,
        title=title if title is not None else f"Utterance map: {result.text.strip()!r}",
        plt_fig_axis=plt_fig_axis,
        show=show,
        significant=significant,
        legend=legend,
        centres=row_centres(result, int(options["sampling_rate"])),  # type: ignore[call-overload]
        **options,  # type: ignore[arg-type]
    )


def plot_token_map(
    result: SPESResult,
    *,
    normalize: str | None = None,
    cmap: str = "Reds",
    show_colorbar: bool = True,
    title: str | None = "Token-to-token saliency",
    fig_size: tuple[float, float] | None = None,
    plt_fig_axis: FigAxis | None = None,
    show: bool = False,
) -> FigAxis:
    r"""Causal token map: how much each decoder input (columns) mattered for each explained
    token (rows). Entries a causal decoder cannot use (input after the token's own position)
    are masked and left blank. Pass ``result.to_words()`` for a word-level map.

    Args:
        result (SPESResult): an explanation computed with token masks
            (``result.token_attr`` is not None).
        normalize (str, optional): :meth:`SPESResult.normalize` method. Default: None
        cmap (str, optional): Default: "Reds"
        show_colorbar (bool, optional): Default: True
        title (str, optional): Default: "Token-to-token saliency"
        fig_size (tuple, optional): default grows with the number of tokens.
        plt_fig_axis (tuple, optional): ``(fig, ax)``. Default: None
        show (bool, optional): Default: False

    Returns:
        ``(fig, ax)``; ``ax.images[0]`` holds the masked ``(num_tokens, num_decoder_inputs)``
        array.
    """
    if result.token_attr is None:
        raise InputError(
            "result.token_attr is None: the explanation was computed without token masks; "
            "rerun SPES.attribute with token masks enabled to plot the token map"
        )
    source = result.normalize(normalize) if normalize else result
    values = _to_numpy(source.token_attr)
    valid = source.token_valid_mask().numpy()
    masked = np.ma.masked_array(values, mask=~valid)
    rows, cols = values.shape
    if fig_size is None:
        fig_size = (max(4.0, 0.45 * cols + 2.0), max(3.0, 0.4 * rows + 1.5))
    fig, ax = _figure_axis(plt_fig_axis, fig_size)
    image = ax.imshow(masked, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(range(cols))
    ax.set_xticklabels([_label(t) for t in source.decoder_input_tokens], rotation=60, ha="right")
    ax.set_yticks(range(rows))
    ax.set_yticklabels([_label(t) for t in source.tokens])
    ax.set_xlabel("Decoder input token")
    ax.set_ylabel("Explained token")
    if title:
        ax.set_title(title)
    if show_colorbar:
        fig.colorbar(image, ax=ax, label="saliency")
    _finish(fig, show, tidy=plt_fig_axis is None)
    return fig, ax


def _interval(item: Any) -> tuple[float, float, str]:
    if hasattr(item, "start") and hasattr(item, "end"):
        return float(item.start), float(item.end), str(getattr(item, "label", ""))
    start, end, label = item
    return float(start), float(end), str(label)


def plot_time_profile(
    result: SPESResult,
    words: Sequence[Any] | None = None,
    *,
    token: int | str | None = None,
    normalize: str | None = "reference",
    reduce: str = "mean",
    color: str = "C3",
    title: str | None = None,
    fig_size: tuple[float, float] = (9, 3),
    plt_fig_axis: FigAxis | None = None,
    show: bool = False,
) -> FigAxis:
    r"""Saliency over time with the transcript's words under their time spans.

    The profile is the utterance map (or one token's map when ``token`` is given) reduced
    over the mel axis, one point per frame at its centre time. Words come from ``words``
    (an alignment) when given; otherwise from ``result.to_words()``, each word placed at the
    peak of its own time profile, which the figure states, since a peak is not an alignment.

    Args:
        result (SPESResult): the explanation.
        words (sequence, optional): word intervals in seconds: :class:`AlignedInterval`
            objects or ``(start, end, label)`` tuples. Default: None
        token (int or str, optional): profile of this token instead of the utterance.
            Default: None
        normalize (str, optional): normalisation before profiling. Default: "reference"
        reduce (str, optional): "mean", "max" or "sum" over mel bins. Default: "mean"
        color (str, optional): line colour. Default: "C3"
        title (str, optional): Default: names what is profiled.
        fig_size (tuple, optional): Default: (9, 3)
        plt_fig_axis (tuple, optional): ``(fig, ax)``. Default: None
        show (bool, optional): Default: False

    Returns:
        ``(fig, ax)``; ``ax.lines[0]`` is the profile.
    """
    from matplotlib.transforms import blended_transform_factory

    source = result.normalize(normalize) if normalize else result
    if reduce not in ("mean", "max", "sum"):
        raise InputError(f"reduce must be 'mean', 'max' or 'sum', got {reduce!r}")
    if token is None:
        utterance = _to_numpy(source.spectrogram_attr.mean(dim=0))
        profile = getattr(np, reduce)(utterance, axis=0)
        what = "utterance"
    else:
        index = token_index(source, token)
        profile = _to_numpy(source.time_profile(reduce)[index])
        what = f"token {index} ({_label(source.tokens[index])})"
    fig, ax = _figure_axis(plt_fig_axis, fig_size)
    times = (np.arange(profile.shape[0]) + 0.5) / source.frame_rate
    ax.plot(times, profile, color=color, linewidth=1.2)
    ax.set_xlim(0.0, source.n_frames / source.frame_rate)
    ax.set_xlabel("Time (s)")
    ax.set_ylabel(f"saliency ({reduce} over mel)")
    low, high = float(np.min(profile)), float(np.max(profile))
    span = high - low if high > low else 1.0
    # Leave the bottom quarter for the word labels.
    ax.set_ylim(low - 0.35 * span, high + 0.05 * span)
    under = blended_transform_factory(ax.transData, ax.transAxes)
    if words is not None:
        for number, item in enumerate(words):
            start, end, label = _interval(item)
            ax.axvspan(start, end, ymin=0.0, ymax=0.22, color="0.85" if number % 2 else "0.75", linewidth=0)
            ax.text(
                (start + end) / 2,
                0.03 + 0.09 * (number % 2),
                label,
                transform=under,
                ha="center",
                va="bottom",
                fontsize=8,
            )
        note = "words: alignment spans"
    else:
        merged = source.to_words()
        word_profiles = _to_numpy(merged.time_profile(reduce))
        for number, label in enumerate(merged.tokens[:-1]):  # the end token is no word
            peak = (int(np.argmax(word_profiles[number])) + 0.5) / source.frame_rate
            ax.axvline(peak, color="0.6", linestyle=":", linewidth=0.8)
            ax.text(
                peak, 0.03 + 0.09 * (number % 2), _label(label), transform=under, ha="center", va="bottom", fontsize=8
            )
        note = "words placed at their saliency peaks (no alignment given)"
    ax.text(0.995, 0.98, note, transform=ax.transAxes, ha="right", va="top", fontsize=7, style="italic", color="0.35")
    ax.set_title(title if title is not None else f"Time profile of the {what}")
    _finish(fig, show, tidy=plt_fig_axis is None)
    return fig, ax
