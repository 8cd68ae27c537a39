#!/usr/bin/env python3
r"""Plausibility: does a word's saliency fall inside the word's aligned time span?

The paper's plausibility protocol is unknown (reference §12.3); these are two transparent
measures against forced alignments (word or phone intervals in seconds, e.g. from a
TextGrid):

* **mass in span**: the share of the word's non-negative saliency mass whose frames lie
  inside its aligned interval. Negative values are clipped to 0 first (signed methods such as
  Integrated Gradients would otherwise cancel mass); a map with no positive mass scores 0.
* **pointing game**: a hit when the frame of the word map's largest element lies inside the
  interval widened by ``tolerance`` seconds on each side. When several elements share the
  largest value (a map made of coarse segments), the hit is its expected value under
  uniformly random tie-breaking: the share of those elements whose frame lies inside, so no
  arbitrary order (e.g. the lowest mel bin first) decides it.

Chance level of both is the (widened) interval length over the map's duration: what a map
spread uniformly over time (mass) or a random argmax frame (pointing) would score.

For results that carry their statistics (SPES's), two more measures read the map with its
noise, at ``significance`` (Benjamini-Hochberg per word by default,
:meth:`SPESResult.significance`):

* **significant in span**: whether some element of the word map that is significant lies
  inside the (widened) interval — "the map shows a real region inside the word";
* **significant share in span**: of the word's significant elements, the share inside the
  interval (NaN when nothing is significant) — how much of what it calls real is in the word.

Frame ``i`` covers ``[i / frame_rate, (i + 1) / frame_rate)``; an interval ``[start, end)``
covers frames ``round(start * frame_rate)`` to ``round(end * frame_rate) - 1`` (at least one
frame), clipped to the map.

Hypothesis words (from :meth:`SPESResult.to_words`, subword rows merged) are matched to
aligned words in order by their normalised text (lower case, no punctuation) with
:class:`difflib.SequenceMatcher`; unmatched words are reported, not scored.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor

from captum_spes._core.result import SPESResult
from captum_spes.data.alignments import AlignedInterval, read_textgrid
from captum_spes.errors import InputError, InputTypeError
from captum_spes.metrics._text import normalize_transcript

__all__ = [
    "WordPlausibility",
    "UtterancePlausibility",
    "PlausibilityReport",
    "interval_frames",
    "interval_scores",
    "word_plausibility",
]

AlignmentLike = Union[Sequence[AlignedInterval], str, "os.PathLike[str]"]


@dataclass
class WordPlausibility:
    """Scores of one matched hypothesis word.

    Attributes:
        word_index (int): row of the word in ``result.to_words()``.
        word (str): hypothesis word as decoded.
        label (str): the aligned label it matched.
        start, end (float): aligned interval in seconds.
        mass_in_span (float): share (0-1) of the clipped saliency mass inside the interval.
        mass_chance (float): interval frames / map frames.
        pointing_hit (float): 1 when the argmax frame is inside the interval (± tolerance), 0
            when not; between them, the share of tied maxima inside.
        pointing_chance (float): widened interval frames / map frames.
        argmax_time (float): time in seconds of the argmax frame's start.
        significant_in_span (float): 1 if a significant element lies inside the widened
            interval, else 0; NaN without statistics.
        significant_share_in_span (float): share of the word's significant elements inside
            the widened interval; NaN without statistics or when none is significant.
    """

    word_index: int
    word: str
    label: str
    start: float
    end: float
    mass_in_span: float
    mass_chance: float
    pointing_hit: float
    pointing_chance: float
    argmax_time: float
    significant_in_span: float = float("nan")
    significant_share_in_span: float = float("nan")


@dataclass
class UtterancePlausibility:
    """Per-utterance summary; means are over matched words (NaN when none matched)."""

    words: list[WordPlausibility]
    num_hypothesis_words: int
    num_aligned_words: int
    num_matched: int
    unmatched_hypothesis_words: list[str]
    mean_mass_in_span: float
    mean_mass_chance: float
    pointing_accuracy: float
    pointing_chance: float
    significant_in_span: float = float("nan")
    significant_share_in_span: float = float("nan")


@dataclass
class PlausibilityReport:
    """Utterances and overall summaries, micro-averaged over all matched words.

    Attributes:
        utterances (list of UtterancePlausibility)
        num_matched (int), num_hypothesis_words (int)
        mean_mass_in_span, mean_mass_chance, pointing_accuracy, pointing_chance (float):
            overall means over every matched word (NaN when none matched).
        settings (dict): tolerance, word reduction, normalisation and clipping choices.
        significant_in_span, significant_share_in_span (float): means over matched words of
            the significance measures (NaN without statistics).
    """

    utterances: list[UtterancePlausibility]
    num_matched: int
    num_hypothesis_words: int
    mean_mass_in_span: float
    mean_mass_chance: float
    pointing_accuracy: float
    pointing_chance: float
    settings: dict[str, Any] = field(default_factory=dict)
    significant_in_span: float = float("nan")
    significant_share_in_span: float = float("nan")


def interval_frames(start: float, end: float, frame_rate: float, n_frames: int) -> tuple[int, int]:
    """``(first, stop)`` frames of ``[start, end)`` seconds, clipped to ``[0, n_frames]``."""
    first = max(0, min(n_frames, int(round(start * frame_rate))))
    stop = max(0, min(n_frames, int(round(end * frame_rate))))
    if stop <= first and first < n_frames:
        stop = first + 1  # a very short interval still covers the frame it starts in
    return first, stop


def interval_scores(
    saliency: Tensor, start: float, end: float, frame_rate: float, tolerance: float = 0.0
) -> dict[str, float]:
    r"""Mass share and pointing hit of one map against one interval.

    Args:
        saliency (Tensor): ``(n_mels, n_frames)`` map, or ``(n_frames,)`` time profile.
        start, end (float): interval in seconds.
        frame_rate (float): frames per second.
        tolerance (float, optional): seconds added on each side for the pointing game.

    Returns:
        *dict* with ``mass_in_span``, ``mass_chance``, ``pointing_hit`` (0 to 1: the share of
        the maximal elements inside, 0/1 without ties),
        ``pointing_chance`` and ``argmax_time``.
    """
    if saliency.dim() == 1:
        saliency = saliency[None]
    if saliency.dim() != 2:
        raise InputError(f"saliency must have shape (n_mels, n_frames) or (n_frames,), got {tuple(saliency.shape)}")
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 seconds, got {tolerance}")
    values = saliency.to(torch.float64)
    n_frames = values.shape[1]
    first, stop = interval_frames(start, end, frame_rate, n_frames)
    mass = values.clamp_min(0).sum(dim=0)
    total = float(mass.sum())
    inside = float(mass[first:stop].sum())
    lo, hi = interval_frames(start - tolerance, end + tolerance, frame_rate, n_frames)
    if total > 0:
        flat = values.reshape(-1)
        peaks = (flat == flat.max()).nonzero()[:, 0] % n_frames
        frame = int(peaks[0])
        hit = float(((peaks >= lo) & (peaks < hi)).to(torch.float64).mean())
    else:
        frame, hit = 0, 0.0  # no positive saliency: nothing points anywhere
    return {
        "mass_in_span": inside / total if total > 0 else 0.0,
        "mass_chance": (stop - first) / n_frames,
        "pointing_hit": float(hit),
        "pointing_chance": (hi - lo) / n_frames,
        "argmax_time": frame / frame_rate,
    }


def _intervals(alignment: AlignmentLike, tier: str | None) -> list[AlignedInterval]:
    if isinstance(alignment, (str, os.PathLike)):
        if tier is None:
            raise InputError("alignments is a TextGrid path: pass tier= (e.g. 'words')")
        return read_textgrid(alignment, tier)
    items = list(alignment)
    if not all(isinstance(i, AlignedInterval) for i in items):
        raise InputTypeError("alignments must be a TextGrid path or a list of AlignedInterval")
    return items


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _nanmean(values: list[float]) -> float:
    return _mean([v for v in values if v == v])


def _significance_in_span(
    significant: Tensor, start: float, end: float, frame_rate: float, tolerance: float
) -> tuple[float, float]:
    """(1 if a significant element is inside the widened interval else 0, share of the
    significant elements inside; NaN when none is significant)."""
    n_frames = significant.shape[-1]
    lo, hi = interval_frames(start - tolerance, end + tolerance, frame_rate, n_frames)
    total = int(significant.sum())
    inside = int(significant[..., lo:hi].sum())
    return float(inside > 0), inside / total if total else float("nan")


def _utterance(
    result: SPESResult,
    intervals: list[AlignedInterval],
    tolerance: float,
    reduce: str,
    normalize: str | None,
    significance: float | None,
) -> UtterancePlausibility:
    words = result.normalize(normalize).to_words(reduce) if normalize else result.to_words(reduce)
    tested = significance is not None and words.spectrogram_z is not None and words.units is not None
    significant = words.significance(significance) if tested else None
    hyp_words = [w.strip() for w in words.tokens[:-1]]  # the end token is not a word
    hyp_keys = [normalize_transcript(w) for w in hyp_words]
    ali_keys = [normalize_transcript(i.label) for i in intervals]
    matcher = difflib.SequenceMatcher(None, hyp_keys, ali_keys, autojunk=False)
    scored: list[WordPlausibility] = []
    matched = set()
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            h, a = block.a + offset, block.b + offset
            if not hyp_keys[h]:
                continue  # a pure punctuation "word" has no span to check
            matched.add(h)
            iv = intervals[a]
            s = interval_scores(words.spectrogram_attr[h], iv.start, iv.end, result.frame_rate, tolerance)
            found, share = (float("nan"), float("nan"))
            if significant is not None:
                found, share = _significance_in_span(significant[h], iv.start, iv.end, result.frame_rate, tolerance)
            scored.append(
                WordPlausibility(
                    word_index=h,
                    word=hyp_words[h],
                    label=iv.label,
                    start=iv.start,
                    end=iv.end,
                    mass_in_span=s["mass_in_span"],
                    mass_chance=s["mass_chance"],
                    pointing_hit=s["pointing_hit"],
                    pointing_chance=s["pointing_chance"],
                    argmax_time=s["argmax_time"],
                    significant_in_span=found,
                    significant_share_in_span=share,
                )
            )
    return UtterancePlausibility(
        words=scored,
        num_hypothesis_words=len(hyp_words),
        num_aligned_words=len(intervals),
        num_matched=len(scored),
        unmatched_hypothesis_words=[w for i, w in enumerate(hyp_words) if i not in matched],
        mean_mass_in_span=_mean([w.mass_in_span for w in scored]),
        mean_mass_chance=_mean([w.mass_chance for w in scored]),
        pointing_accuracy=_mean([float(w.pointing_hit) for w in scored]),
        pointing_chance=_mean([w.pointing_chance for w in scored]),
        significant_in_span=_mean([w.significant_in_span for w in scored]),
        significant_share_in_span=_nanmean([w.significant_share_in_span for w in scored]),
    )


def word_plausibility(
    results: SPESResult | Sequence[SPESResult],
    alignments: AlignmentLike | Sequence[AlignmentLike],
    *,
    tier: str | None = None,
    tolerance: float = 0.0,
    reduce: str = "max",
    normalize: str | None = None,
    significance: float | None = 0.05,
) -> PlausibilityReport:
    r"""Word-level plausibility of one or several explanations against word alignments.

    Args:
        results (SPESResult or list): explanations; maps from other methods can be wrapped in a
            SPESResult (tokens and ``metadata["frame_rate"]`` are what is used).
        alignments (list of AlignedInterval, TextGrid path, or a list of them): word
            intervals in seconds, one alignment per result.
        tier (str, optional): interval tier to read from TextGrid paths, e.g. "words".
        tolerance (float, optional): seconds each side of the interval for the pointing game.
            Default: 0.0
        reduce (str, optional): how subword rows merge into words ("max", as Echoes of
            Phonetics, "mean", "sum"). Default: "max"
        normalize (str, optional): normaliser applied before merging; None uses the raw maps
            (the mass share is then scale-free). Default: None
        significance (float or None, optional): level of the significance measures (results
            with statistics only); None skips them. Default: 0.05

    Returns:
        *PlausibilityReport* with per-word, per-utterance and overall scores.
    """
    if isinstance(results, SPESResult):
        results = [results]
        alignments = [alignments]  # type: ignore[list-item]
    results = list(results)
    aligns = list(alignments)  # type: ignore[arg-type]
    if not results:
        raise InputError("results is empty: give at least one SPESResult")
    if len(aligns) != len(results):
        raise InputError(f"give one alignment per result: {len(results)} results, {len(aligns)} alignments")
    utterances = [
        _utterance(r, _intervals(a, tier), tolerance, reduce, normalize, significance) for r, a in zip(results, aligns)
    ]
    every = [w for u in utterances for w in u.words]
    return PlausibilityReport(
        utterances=utterances,
        num_matched=len(every),
        num_hypothesis_words=sum(u.num_hypothesis_words for u in utterances),
        mean_mass_in_span=_mean([w.mass_in_span for w in every]),
        mean_mass_chance=_mean([w.mass_chance for w in every]),
        pointing_accuracy=_mean([float(w.pointing_hit) for w in every]),
        pointing_chance=_mean([w.pointing_chance for w in every]),
        significant_in_span=_mean([w.significant_in_span for w in every]),
        significant_share_in_span=_nanmean([w.significant_share_in_span for w in every]),
        settings={
            "significance": significance,
            "tolerance_s": tolerance,
            "word_reduce": reduce,
            "normalize": normalize,
            "negative_values": "clipped to 0 before summing mass",
            "matching": "difflib.SequenceMatcher on lower-cased, punctuation-free words",
            "average": "micro over matched words",
        },
    )
