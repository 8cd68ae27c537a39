#!/usr/bin/env python3
r""":func:`compare`: SPES against Captum baselines on one utterance, with costs and metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from captum_spes._core.forward_wrapper import SpeechSeq2SeqWrapper, TargetType
from captum_spes._core.result import SPESResult
from captum_spes._core.utterance import Utterance
from captum_spes._utils.baselines import BaselineSpec
from captum_spes.comparison.methods import METHODS, MethodContext, run_method
from captum_spes.comparison.report import ComparisonReport, MethodResult
from captum_spes.errors import InputError
from captum_spes.masks import MaskFamily, resolve_mask_family
from captum_spes.metrics.deletion import DecodeFn, deletion_curve, make_generate_decoder, ranking_map
from captum_spes.metrics.plausibility import AlignmentLike, word_plausibility
from captum_spes.metrics.size import size_curve

__all__ = ["compare", "prepare_context", "DEFAULT_METHODS", "METRICS"]

DEFAULT_METHODS = tuple(METHODS)
METRICS = ("deletion", "insertion", "size", "plausibility")


def _as_result(maps: Tensor, ctx: MethodContext, method: str) -> SPESResult:
    # word_plausibility reads tokens and the frame rate from a SPESResult; other methods'
    # maps are wrapped in one so every method goes through the same word merging.
    hyp = ctx.hypothesis
    return SPESResult(
        spectrogram_attr=maps,
        token_attr=None,
        target_ids=hyp.target_ids,
        tokens=list(hyp.tokens),
        decoder_input_ids=hyp.decoder_input_ids,
        decoder_input_tokens=list(hyp.decoder_input_tokens),
        num_prompt=hyp.num_prompt,
        target_log_probs=torch.zeros(hyp.num_explained),
        text=hyp.text,
        metadata={"method": method, "frame_rate": ctx.wrapper.adapter.frame_rate, "num_frames": ctx.num_frames},
    )


def _check_names(values: Sequence[str], allowed: Sequence[str], what: str) -> list:
    if isinstance(values, str):
        values = [values]
    names = list(values)
    unknown = [n for n in names if n not in allowed]
    if unknown or not names or len(set(names)) != len(names):
        raise InputError(f"{what} must be distinct names from {list(allowed)}, got {names}")
    return names


def prepare_context(
    wrapper: SpeechSeq2SeqWrapper,
    features: Tensor,
    *,
    options: dict[str, Any],
    target: TargetType = None,
    num_frames: int | None = None,
    baselines: BaselineSpec = None,
    feature_mask: None | str | MaskFamily = None,
    seed: int = 0,
    batch_size: int = 8,
    prompt_ids: Sequence[int] | None = None,
    generate_kwargs: dict[str, Any] | None = None,
) -> MethodContext:
    r"""What every method of :func:`compare` shares for one utterance: the frozen hypothesis,
    the speech frames, the baseline ``(n_mels, num_frames)`` and SPES's segmentation.

    Args:
        wrapper (SpeechSeq2SeqWrapper): model wrapper; its hypothesis is set here.
        features (Tensor): one utterance in the model layout, e.g. ``(1, 80, 3000)``.
        options (dict): the method budgets (``n_masks``, ``occlusion_window``, ``ig_steps``...).
        target, num_frames, baselines, feature_mask, seed, batch_size, prompt_ids,
            generate_kwargs: as in :func:`compare`.

    Returns:
        *MethodContext* for :func:`~captum_spes.comparison.methods.run_method`.
    """
    utterance = Utterance.prepare(
        features.to(wrapper.device), wrapper.adapter, num_frames=num_frames, baselines=baselines
    )
    hypothesis = wrapper.set_hypothesis(
        utterance.inputs, target, prompt_ids=prompt_ids, generate_kwargs=generate_kwargs
    )
    family = resolve_mask_family(feature_mask) if feature_mask is not None else wrapper.adapter.default_mask_family()
    # The same segmentation SPES computes (SLIC is deterministic), for FeatureAblation.
    levels = utterance.segment(family)
    return MethodContext(
        wrapper=wrapper,
        utterance=utterance,
        hypothesis=hypothesis,
        feature_mask=family,
        levels=levels,
        seed=seed,
        batch_size=batch_size,
        options=options,
    )


def compare(
    wrapper: SpeechSeq2SeqWrapper,
    features: Tensor,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    n_masks: int | Sequence[int] = 2000,
    target: TargetType = None,
    num_frames: int | None = None,
    references: str | None = None,
    alignments: AlignmentLike | None = None,
    alignment_tier: str | None = "words",
    metrics: Sequence[str] = METRICS,
    decode_fn: DecodeFn | None = None,
    seed: int = 0,
    levels_step: float = 10,
    batch_size: int = 8,
    baselines: BaselineSpec = None,
    feature_mask: None | str | MaskFamily = None,
    ablation_level: int = 0,
    occlusion_window: Sequence[int] = (16, 10),
    occlusion_strides: Sequence[int] | None = None,
    ig_steps: int = 16,
    spes_kwargs: dict[str, Any] | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    prompt_ids: Sequence[int] | None = None,
    plausibility_tolerance: float = 0.0,
) -> ComparisonReport:
    r"""Explain one utterance with SPES and Captum baselines and compare cost and quality.

    The hypothesis is decoded (or taken from ``target``) **once** and frozen; every method
    then explains the same ``K + 1`` tokens over the same speech frames, with the same
    occlusion/path baseline (SPES's, by default each mel bin's mean over the speech frames):

    * ``spes``: :class:`~captum_spes.SPES` with ``n_masks`` masks over ``feature_mask``
      (spectrogram map only unless ``spes_kwargs`` sets ``token_p``);
      ``1 + n_masks`` forward passes (plus token passes when enabled).
    * ``occlusion``: Captum ``Occlusion`` with ``occlusion_window`` = (mel bins, frames)
      windows, non-overlapping by default (strides = window): ``1 + windows`` passes.
    * ``feature_ablation``: Captum ``FeatureAblation`` over SPES's own segments (level
      ``ablation_level`` of ``feature_mask``, ids = SLIC labels): ``1 + segments`` passes.
    * ``integrated_gradients`` (``ig_steps`` steps), ``saliency``, ``input_x_gradient``: one
      Captum call per token with ``target=k`` on the per-token log-probability;
      ``(K + 1) * steps`` forward and backward passes (steps = 1 for the last two).
    * ``random``: N(0, 1) maps seeded with ``seed``; no passes.

    Occlusion and FeatureAblation get all tokens from one run: their forward returns the
    ``(1, K + 1)`` token log-probabilities and ``target=None``, so Captum returns
    ``(K + 1, n_mels, num_frames)`` maps of log-probability drops (Captum notes §4, §6),
    which costs ``K + 1`` times fewer passes than looping ``target=k``.

    Maps are kept raw and **signed** (gradients are not abs-ed). For the metrics every
    method's per-token maps are treated identically: ``normalize_reference`` per token (z-score
    then min-max, so only the order within a token matters) and the mean over tokens gives the
    utterance map that deletion/insertion rank; size uses the same normalisation;
    plausibility uses the raw maps with negative values clipped (positive evidence only).

    Args:
        wrapper (SpeechSeq2SeqWrapper): model wrapper; its hypothesis is (re)set here.
        features (Tensor): one utterance in the model layout, e.g. ``(1, 80, 3000)``.
        methods (sequence of str, optional): any of :data:`DEFAULT_METHODS`, run in order.
        n_masks (int or list[int], optional): SPES masks. Default: 2000
        target (optional): the hypothesis, as in :meth:`SPES.attribute`. Default: decoded.
        num_frames (int, optional): speech frames. Default: detected from the padding.
        references (str, optional): reference text for deletion/insertion WER. Default: the
            clean input's free decoding (the model's own hypothesis).
        alignments (list of AlignedInterval or TextGrid path, optional): word intervals in
            seconds; plausibility is skipped (NaN) without them.
        alignment_tier (str, optional): TextGrid tier. Default: "words"
        metrics (sequence of str, optional): any of :data:`METRICS`. Default: all
        decode_fn (callable, optional): ``(batch, ...) -> list of str`` for free re-decoding;
            default :func:`~captum_spes.metrics.make_generate_decoder` on the wrapper's model.
        seed (int, optional): SPES masks and random maps. Default: 0
        levels_step (float, optional): deletion/insertion level spacing in percent (divides
            100); coarse by default for speed (11 levels). Default: 10
        batch_size (int, optional): inputs per forward (SPES masks, Occlusion windows,
            FeatureAblation segments, IG steps, decoding). Default: 8
        baselines (optional): occlusion value, as in SPES. Default: per-mel speech mean.
        feature_mask (None, str or MaskFamily, optional): segmentation for SPES and
            FeatureAblation. Default: SPES's multi-scale SLIC.
        ablation_level (int, optional): which level FeatureAblation ablates. Default: 0
        occlusion_window (tuple, optional): (mel bins, frames). Default: (16, 10)
        occlusion_strides (tuple, optional): Default: the window (no overlap)
        ig_steps (int, optional): Integrated Gradients steps per token. Default: 16
        spes_kwargs (dict, optional): more :meth:`SPES.attribute` arguments (``p``, ``impact``,
            ``token_p``...).
        generate_kwargs (dict, optional): for decoding the hypothesis and the default decoder.
        prompt_ids (list of int, optional): forced prompt for a given ``target``.
        plausibility_tolerance (float, optional): pointing-game tolerance in seconds.

    Returns:
        *ComparisonReport* with one row per method: forward and backward passes, seconds,
        deletion/insertion WER AUC, size AUC, plausibility mass share and pointing accuracy,
        and the per-token and utterance maps.

    Examples::

        >>> from captum_spes import SpeechSeq2SeqWrapper
        >>> from captum_spes.comparison import compare
        >>> report = compare(SpeechSeq2SeqWrapper(model, processor), features, methods=["spes", "random"],
        ...                  n_masks=16, metrics=["size"])
        >>> print(report.to_markdown())
        Hypothesis: 'He was not an old-sposed young man.' (12 tokens, 3.00 s)
        <BLANKLINE>
        | method | forward | backward | seconds | deletion AUC (WER, higher=better) | ...
        >>> fig, axes = report.plot()
    """
    names = _check_names(methods, list(METHODS), "methods")
    wanted = set(_check_names(metrics, METRICS, "metrics")) if metrics else set()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
        raise InputError(f"ig_steps must be a positive int, got {ig_steps!r}")
    if not isinstance(features, Tensor) or features.dim() < 2 or features.shape[0] != 1:
        raise InputError(
            "features must be one utterance in the model layout with batch 1, e.g. (1, 80, 3000); "
            f"got {getattr(features, 'shape', type(features).__name__)}"
        )
    ctx = prepare_context(
        wrapper,
        features,
        target=target,
        num_frames=num_frames,
        baselines=baselines,
        feature_mask=feature_mask,
        seed=seed,
        batch_size=batch_size,
        prompt_ids=prompt_ids,
        generate_kwargs=generate_kwargs,
        options={
            "n_masks": n_masks,
            "spes_kwargs": spes_kwargs,
            "ablation_level": ablation_level,
            "occlusion_window": tuple(occlusion_window),
            "occlusion_strides": None if occlusion_strides is None else tuple(occlusion_strides),
            "ig_steps": ig_steps,
            "baselines": baselines,
        },
    )
    features, hypothesis, num_frames = ctx.features, ctx.hypothesis, ctx.num_frames
    family, levels, adapter = ctx.feature_mask, ctx.levels, wrapper.adapter

    rows = []
    for name in names:
        started = time.perf_counter()
        maps, info, counts = run_method(name, ctx)
        seconds = time.perf_counter() - started
        rows.append(
            MethodResult(
                method=name,
                forward_passes=counts.forward,
                backward_passes=counts.backward,
                seconds=seconds,
                attributions=maps,
                utterance_map=ranking_map(maps, normalize="reference").float(),
                details={"settings": info},
            )
        )

    if wanted & {"deletion", "insertion"} and decode_fn is None:
        if wrapper.processor is None:
            raise InputError(
                "deletion/insertion re-decode the perturbed inputs: pass decode_fn= or a wrapper with a processor"
            )
        decode_fn = make_generate_decoder(wrapper.model, wrapper.processor, generate_kwargs, batch_size)
    for row in rows:
        _score(
            row,
            ctx,
            wanted,
            decode_fn,
            references,
            levels_step,
            baselines,
            batch_size,
            alignments,
            alignment_tier,
            plausibility_tolerance,
        )

    return ComparisonReport(
        rows=rows,
        text=hypothesis.text,
        tokens=list(hypothesis.tokens),
        num_frames=num_frames,
        frame_rate=float(adapter.frame_rate),
        settings={
            "methods": names,
            "metrics": [m for m in METRICS if m in wanted],
            "n_masks": n_masks,
            "seed": seed,
            "batch_size": batch_size,
            "levels_step": levels_step,
            "ig_steps": ig_steps,
            "feature_mask": family.config(),
            "segments_per_level": [lv.num_segments for lv in levels],
            "ablation_level": ablation_level,
            "occlusion_window": tuple(occlusion_window),
            "num_frames": num_frames,
            "model_id": wrapper.model_id,
            "passes": "forward/backward = input rows through the model (a batch of b counts b); "
            "the hypothesis decoding is shared and not counted",
            "deletion_insertion": "free re-decoding, corpus WER clipped at 100 (wer_max), AUC = mean WER "
            "over the levels; deletion: higher is more faithful, insertion: lower is",
            "size": "spectrogram size AUC after normalize_reference, 0-100, lower = more compact",
            "plausibility": "raw maps, negatives clipped; words merged by max; micro-average over matched words",
        },
    )


def _score(
    row: MethodResult,
    ctx: MethodContext,
    wanted: set,
    decode_fn: DecodeFn | None,
    references: str | None,
    levels_step: float,
    baselines: BaselineSpec,
    batch_size: int,
    alignments: AlignmentLike | None,
    tier: str | None,
    tolerance: float,
) -> None:
    maps = row.attributions
    for mode in ("deletion", "insertion"):
        if mode in wanted:
            curve = deletion_curve(
                maps,
                ctx.features,
                decode_fn,  # type: ignore[arg-type]
                references=references,
                metric="wer_max",
                mode=mode,
                step=levels_step,
                baselines=baselines,
                adapter=ctx.wrapper.adapter,
                num_frames=ctx.num_frames,
                normalize="reference",
                batch_size=batch_size,
            )
            setattr(row, f"{mode}_auc", curve.auc)
            row.details[mode] = curve
    if "size" in wanted:
        size = size_curve(maps, normalize="reference")
        row.size_auc = size.spectrogram_auc
        row.details["size"] = size
    if "plausibility" in wanted and alignments is not None:
        report = word_plausibility(_as_result(maps, ctx, row.method), alignments, tier=tier, tolerance=tolerance)
        row.plausibility_mass = report.mean_mass_in_span
        row.plausibility_pointing = report.pointing_accuracy
        row.details["plausibility"] = report
