#!/usr/bin/env python3
r"""Faithfulness by deletion and insertion (reference §12.1), for maps from any method.

The spectrogram elements of the speech frames are ranked by an utterance-level map. At each
level ``q`` (percent of the ``n = n_mels * n_frames`` elements):

* **deletion** replaces the top ``floor(n * q / 100)`` elements with the baseline;
* **insertion** keeps the top ``floor(n * q / 100)`` elements and replaces all the others
  (the lowest ``100 - q`` percent), so insertion at ``q`` keeps exactly what deletion at ``q``
  removes.

Each perturbed input is **re-decoded freely** by the model and scored against the reference
text (the clean input's own decoding by default) with WER or BLEU, at corpus level over all
utterances. The AUC is the trapezoid of the score over ``q`` in percent:

* ``auc_raw``: the raw trapezoid, 0-10 000 for a 0-100 score over q in 0-100 (what the
  reference prints without saying so);
* ``auc = auc_raw / 100``: for levels spanning 0-100 this is the mean score over the curve,
  on the score's own 0-100 scale (what follow-up papers quote).

Direction: for deletion a higher WER AUC (lower BLEU AUC) is more faithful; for insertion a
lower WER AUC (higher BLEU AUC) is. Ties in the ranking are broken by flat index
(``mel * n_frames + frame``, lower first), so results are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from captum_spes._core.forward_wrapper import SpeechSeq2SeqWrapper
from captum_spes._core.result import SPESResult
from captum_spes._core.utterance import Utterance
from captum_spes._utils.baselines import BaselineSpec
from captum_spes.adapters import InputLayout, ModelAdapter, get_model_adapter
from captum_spes.errors import InputError, InputTypeError
from captum_spes.metrics._text import TEXT_METRICS, as_text_list, score_texts
from captum_spes.normalizers import NORMALIZERS

__all__ = [
    "PerturbationCurve",
    "percent_levels",
    "ranking_map",
    "perturbation_masks",
    "perturbed_inputs",
    "make_generate_decoder",
    "deletion_curve",
    "insertion_curve",
    "deletion_curve_teacher_forced",
]

AttributionLike = SPESResult | Tensor
DecodeFn = Callable[[Tensor], list[str]]
MODES = ("deletion", "insertion")


@dataclass
class PerturbationCurve:
    r"""A deletion or insertion curve and its area.

    Attributes:
        mode (str): "deletion" or "insertion".
        metric (str): "wer", "wer_max" (WER clipped at 100 per level), "bleu",
            "sentence_bleu" or "log_prob" (teacher-forced variant).
        levels (Tensor): ``(num_levels,)`` percentages q.
        scores (Tensor): ``(num_levels,)`` corpus score at each level (float64).
        auc (float): ``auc_raw / 100``; the mean score over the curve when levels span 0-100.
        auc_raw (float): trapezoid of ``scores`` over ``levels`` in percent (0-10 000 for WER).
        direction (str): "higher_is_more_faithful" or "lower_is_more_faithful".
        scale (str): the AUC scale in words.
        num_replaced (Tensor): ``(num_utterances, num_levels)`` elements set to the baseline.
        utterance_scores (Tensor or None): ``(num_utterances, num_levels)`` per-utterance scores.
        hypotheses (list or None): ``[utterance][level]`` decoded texts (re-decoding only).
        references (list or None): the reference text of each utterance.
        settings (dict): text normalisation, ranking, baseline and decoding choices.
    """

    mode: str
    metric: str
    levels: Tensor
    scores: Tensor
    auc: float
    auc_raw: float
    direction: str
    scale: str
    num_replaced: Tensor
    utterance_scores: Tensor | None = None
    hypotheses: list[list[str]] | None = None
    references: list[str] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


# ----- levels, ranking, masks -----------------------------------------------------------
def percent_levels(step: float = 5, max_percent: float = 100, levels: Sequence[float] | None = None) -> list[float]:
    r"""The levels q: ``0, step, ..., max_percent``, or the given ``levels``.

    Raises:
        ValueError: if ``step`` does not divide 100 and ``max_percent``, if ``max_percent`` is
            outside (0, 100], or if ``levels`` is empty, unsorted or outside [0, 100].
    """
    if levels is not None:
        values = [float(q) for q in levels]
        if not values:
            raise InputError("levels is empty: give at least two percentages, e.g. [0, 50, 100]")
        if any(not 0 <= q <= 100 for q in values) or any(b <= a for a, b in zip(values, values[1:])):
            raise InputError(f"levels must be strictly increasing percentages in [0, 100], got {list(levels)}")
        return values
    if not 0 < max_percent <= 100:
        raise InputError(f"max_percent must be in (0, 100], got {max_percent}")
    steps = Fraction(str(100)) / Fraction(str(step)) if step > 0 else None
    if steps is None or steps.denominator != 1 or (Fraction(str(max_percent)) / Fraction(str(step))).denominator != 1:
        raise InputError(
            f"step must be positive and divide both 100 and max_percent ({max_percent}), got {step}; "
            "e.g. step=5 (21 levels) or step=1"
        )
    count = int(Fraction(str(max_percent)) / Fraction(str(step)))
    return [float(Fraction(str(step)) * i) for i in range(count + 1)]


def _count(n: int, q: float) -> int:
    # Exact floor(n * q / 100): a float product can land just below an integer.
    return int(Fraction(str(q)) * n // 100)


def _check_map(values: Tensor, name: str) -> Tensor:
    if not isinstance(values, Tensor):
        raise InputTypeError(f"{name} must be a SPESResult or a Tensor, got {type(values).__name__}")
    if not torch.isfinite(values).all():
        raise InputError(f"{name} holds NaN or inf; rank a finite map (e.g. nan_to_num it first)")
    return values


def ranking_map(
    attribution: AttributionLike, token_index: int | None = None, normalize: str | None = "reference"
) -> Tensor:
    r"""The ``(n_mels, n_frames)`` map that orders the elements.

    Args:
        attribution (SPESResult or Tensor): a result, per-token maps
            ``(num_tokens, n_mels, n_frames)`` or one map ``(n_mels, n_frames)`` (used as given).
        token_index (int, optional): rank by this token's map instead of the mean over tokens
            (per-token evaluation). Default: None
        normalize (str, optional): normaliser applied to the per-token maps before averaging
            (``"reference"``, ``"single_mean_std"``, ``"paired_min_max"`` or None). For a
            SPESResult the token map takes part in ``paired_min_max`` as in the reference.

    Returns:
        *Tensor* ``(n_mels, n_frames)``.
    """
    if normalize is not None and normalize not in NORMALIZERS:
        raise InputError(f"normalize must be one of {sorted(NORMALIZERS)} or None, got {normalize!r}")
    if isinstance(attribution, SPESResult):
        per_token = attribution.normalize(normalize).spectrogram_attr if normalize else attribution.spectrogram_attr
    else:
        values = _check_map(attribution, "attribution")
        if values.dim() == 2:
            if token_index is not None:
                raise InputError("token_index needs per-token maps (num_tokens, n_mels, n_frames), got one 2-D map")
            return values
        if values.dim() != 3:
            raise InputError(
                "attribution must have shape (num_tokens, n_mels, n_frames) or (n_mels, n_frames), "
                f"got {tuple(values.shape)}"
            )
        per_token = NORMALIZERS[normalize](values)[0] if normalize else values
    per_token = _check_map(per_token, "attribution")
    if token_index is None:
        return per_token.mean(dim=0)
    if not -per_token.shape[0] <= token_index < per_token.shape[0]:
        raise IndexError(f"token_index must be in [0, {per_token.shape[0]}), got {token_index}")
    return per_token[token_index]


def perturbation_masks(score_map: Tensor, levels: Sequence[float], mode: str = "deletion") -> Tensor:
    r"""Which elements take the baseline at each level.

    Args:
        score_map (Tensor): ``(n_mels, n_frames)`` ranking map (higher = more important).
        levels (sequence of float): percentages q.
        mode (str, optional): "deletion" (replace the top ``floor(n q / 100)``) or "insertion"
            (keep them, replace the rest). Default: "deletion"

    Returns:
        *Tensor* bool ``(num_levels, n_mels, n_frames)``, True where replaced.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if score_map.dim() != 2:
        raise InputError(f"score_map must have shape (n_mels, n_frames), got {tuple(score_map.shape)}")
    n = score_map.numel()
    order = torch.argsort(score_map.reshape(-1), descending=True, stable=True)
    # rank[i] = position of element i in the descending order.
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=order.device)
    counts = torch.tensor([_count(n, q) for q in levels], device=order.device)
    top = rank[None, :] < counts[:, None]
    replaced = top if mode == "deletion" else ~top
    return replaced.reshape(len(levels), *score_map.shape)


def perturbed_inputs(
    features: Tensor,
    replaced: Tensor,
    baseline: Tensor,
    adapter: ModelAdapter | None = None,
) -> Tensor:
    r"""Write perturbed speech frames into copies of the full model input; padding untouched.

    Args:
        features (Tensor): one utterance in the model layout, e.g. ``(1, 80, 3000)``.
        replaced (Tensor): bool ``(batch, n_mels, n_frames)`` over the speech frames.
        baseline (Tensor): broadcastable to ``(n_mels, n_frames)``.
        adapter (ModelAdapter, optional): layout conversion. Default: mel-first
            ``(batch, n_mels, frames)``.

    Returns:
        *Tensor* model inputs ``(batch, ...)``.
    """
    layout = adapter.utterance_layout(features) if adapter is not None else InputLayout("mel_first")
    utterance = Utterance(features, layout, layout.to_canonical(features), int(replaced.shape[-1]), baseline)
    return utterance.perturbed_inputs(replaced)


# ----- decoding -------------------------------------------------------------------------
def make_generate_decoder(
    model: torch.nn.Module, processor: Any, generate_kwargs: dict[str, Any] | None = None, batch_size: int = 8
) -> DecodeFn:
    r"""A ``decode_fn`` that re-decodes inputs freely with ``model.generate``.

    Args:
        model (nn.Module): e.g. ``WhisperForConditionalGeneration`` in eval mode.
        processor (Any): a processor or tokenizer with ``batch_decode``.
        generate_kwargs (dict, optional): e.g. ``{"num_beams": 5, "no_repeat_ngram_size": 5}``
            for the reference's decoding; default: the model's generation config.
        batch_size (int, optional): inputs per ``generate`` call. Default: 8

    Returns:
        *callable* ``(batch, ...) -> list of str`` (special tokens skipped, stripped). Its
        ``adapter`` attribute holds the model's adapter, which the curves use by default.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    tokenizer = getattr(processor, "tokenizer", processor)
    if not hasattr(tokenizer, "batch_decode"):
        raise InputTypeError("processor must be a Hugging Face processor or tokenizer with batch_decode")
    adapter = get_model_adapter(model)
    kwargs = dict(generate_kwargs or {})

    def decode(features: Tensor) -> list[str]:
        texts: list[str] = []
        for chunk in features.split(batch_size):
            sequences = adapter.generate(chunk.to(adapter.device), **kwargs)
            texts.extend(t.strip() for t in tokenizer.batch_decode(sequences, skip_special_tokens=True))
        return texts

    decode.adapter = adapter  # type: ignore[attr-defined]
    return decode


# ----- curves ---------------------------------------------------------------------------
def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _speech_map(score_map: Tensor, canonical: Tensor, num_frames: int | None, index: int) -> Tensor:
    total = canonical.shape[1]
    if score_map.shape[0] != canonical.shape[0]:
        raise InputError(
            f"utterance {index}: the map has {score_map.shape[0]} mel bins but features have "
            f"{canonical.shape[0]}; give features in the model layout, e.g. (1, 80, 3000)"
        )
    if num_frames is None:
        num_frames = score_map.shape[1]
    if not 1 <= num_frames <= total:
        raise InputError(f"utterance {index}: num_frames must be in [1, {total}], got {num_frames}")
    if score_map.shape[1] == num_frames:
        return score_map
    if score_map.shape[1] == total:
        # A map in the full input layout (e.g. a Captum method on (1, 80, 3000)): rank speech only.
        return score_map[:, :num_frames]
    raise InputError(
        f"utterance {index}: the map covers {score_map.shape[1]} frames, expected num_frames "
        f"({num_frames}) or the input's {total}"
    )


def _auc(levels: Sequence[float], scores: Tensor) -> tuple[float, float]:
    raw = float(torch.trapezoid(scores.to(torch.float64), torch.tensor(levels, dtype=torch.float64)))
    return raw / 100.0, raw


def _prepare(
    attributions: Any,
    features: Any,
    adapter: ModelAdapter | None,
    num_frames: Any,
    baselines: BaselineSpec,
    token_index: int | None,
    normalize: str | None,
    levels: list[float],
    mode: str,
) -> list[tuple[Tensor, Tensor, int]]:
    """Per utterance: (model inputs for every level, num_replaced per level, frames)."""
    maps, feats = _as_list(attributions), _as_list(features)
    frames = _as_list(num_frames) if num_frames is not None else [None] * len(maps)
    if len(feats) != len(maps) or len(frames) != len(maps):
        raise InputError(
            f"attributions, features and num_frames must describe the same utterances, got "
            f"{len(maps)}, {len(feats)} and {len(frames)}"
        )
    layout: ModelAdapter | InputLayout = adapter or InputLayout("mel_first")
    input_dims = layout.expected_input_dims() if isinstance(layout, ModelAdapter) else layout.input_dims
    out = []
    for index, (attribution, feature, frame_count) in enumerate(zip(maps, feats, frames)):
        if not isinstance(feature, Tensor) or feature.dim() != input_dims or feature.shape[0] != 1:
            raise InputError(
                f"features[{index}] must be one utterance in the model layout with batch 1, e.g. "
                f"(1, 80, 3000), got {getattr(feature, 'shape', type(feature).__name__)}"
            )
        view = layout.utterance_layout(feature) if isinstance(layout, ModelAdapter) else layout
        canonical = view.to_canonical(feature)
        score_map = _speech_map(ranking_map(attribution, token_index, normalize), canonical, frame_count, index)
        utterance = Utterance.prepare(feature, layout, num_frames=int(score_map.shape[1]), baselines=baselines)
        replaced = perturbation_masks(score_map.to(canonical.device), levels, mode)
        out.append((utterance.perturbed_inputs(replaced), replaced.flatten(1).sum(dim=1), utterance.num_frames))
    return out


def _utterance_score(metric: str, reference: str, hypothesis: str, normalize_text: bool) -> float:
    try:
        return score_texts(metric, [reference], [hypothesis], normalize_text)
    except ValueError:
        # An empty reference has no WER of its own; it still counts in the corpus score.
        return math.nan


def _direction(mode: str, higher_is_better_score: bool) -> str:
    # Deleting what matters should hurt the score; inserting it should restore it.
    hurts_is_faithful = mode == "deletion"
    if higher_is_better_score == hurts_is_faithful:
        return "lower_is_more_faithful"
    return "higher_is_more_faithful"


def deletion_curve(
    attributions: AttributionLike | Sequence[AttributionLike],
    features: Tensor | Sequence[Tensor],
    decode_fn: DecodeFn,
    *,
    references: str | Sequence[str] | None = None,
    metric: str = "wer_max",
    mode: str = "deletion",
    step: float = 5,
    max_percent: float = 100,
    levels: Sequence[float] | None = None,
    baselines: BaselineSpec = None,
    adapter: ModelAdapter | None = None,
    num_frames: int | Sequence[int | None] | None = None,
    token_index: int | None = None,
    normalize: str | None = "reference",
    normalize_text: bool = False,
    batch_size: int = 8,
) -> PerturbationCurve:
    r"""Deletion (or insertion) curve by free re-decoding, scored at corpus level.

    Args:
        attributions (SPESResult, Tensor or a sequence of them): one per utterance; per-token
            maps ``(num_tokens, n_mels, n_frames)``, a ranking map ``(n_mels, n_frames)``, or
            maps over the full input length (cropped to ``num_frames``).
        features (Tensor or sequence of Tensor): each utterance's clean model input with batch
            1, e.g. ``(1, 80, 3000)`` for Whisper.
        decode_fn (callable): ``(batch, ...) -> list of str``, e.g. from
            :func:`make_generate_decoder`; called with up to ``batch_size`` inputs.
        references (str or sequence of str, optional): reference texts; default: ``decode_fn``
            on the clean inputs (the model's own hypothesis).
        metric (str, optional): "wer_max" (corpus WER clipped at 100 at every level, the
            reference default), "wer", "bleu" (sacrebleu corpus BLEU) or "sentence_bleu"
            (mean sentence BLEU). Default: "wer_max"
        mode (str, optional): "deletion" or "insertion". Default: "deletion"
        step (float, optional): level spacing in percent; must divide 100. Default: 5
        max_percent (float, optional): last level. Default: 100
        levels (sequence of float, optional): explicit levels, overriding step/max_percent.
        baselines (optional): occlusion value as in SPES: None/"channel_mean" (per-mel mean
            over the speech frames), "floor", a number, or a tensor broadcastable to
            ``(n_mels, n_frames)``. Default: None
        adapter (ModelAdapter, optional): layout conversion; default: ``decode_fn.adapter``
            if present, else mel-first ``(batch, n_mels, frames)``.
        num_frames (int or sequence, optional): speech frames per utterance; default: the
            map's frame count.
        token_index (int, optional): rank by one token's map (per-token evaluation).
        normalize (str, optional): per-token normaliser before averaging. Default: "reference"
        normalize_text (bool, optional): lower-case, strip punctuation and collapse spaces
            before WER; the reference does not. Default: False
        batch_size (int, optional): inputs per ``decode_fn`` call. Default: 8

    Returns:
        *PerturbationCurve*: ``auc`` = trapezoid / 100 (mean score, 0-100 for WER over levels
        0-100), ``auc_raw`` = raw trapezoid (0-10 000).
    """
    if metric not in TEXT_METRICS:
        raise InputError(f"metric must be one of {sorted(TEXT_METRICS)}, got {metric!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    level_list = percent_levels(step, max_percent, levels)
    adapter = adapter or getattr(decode_fn, "adapter", None)
    prepared = _prepare(
        attributions, features, adapter, num_frames, baselines, token_index, normalize, level_list, mode
    )
    num_utterances = len(prepared)
    # Clean inputs first (the default references), then every level of every utterance.
    device = prepared[0][0].device
    stacked = torch.cat([c.to(device) for c in _as_list(features)] + [p[0] for p in prepared])
    texts: list[str] = []
    for chunk in stacked.split(batch_size):
        decoded = list(decode_fn(chunk))
        if len(decoded) != chunk.shape[0] or not all(isinstance(t, str) for t in decoded):
            raise InputError(f"decode_fn must return one str per input ({chunk.shape[0]}), got {decoded!r:.200}")
        texts.extend(decoded)
    clean_texts, rest = texts[:num_utterances], texts[num_utterances:]
    refs = clean_texts if references is None else as_text_list(references, "references", num_utterances)
    count = len(level_list)
    hyps = [rest[u * count : (u + 1) * count] for u in range(num_utterances)]
    scores = torch.tensor(
        [score_texts(metric, refs, [hyps[u][i] for u in range(num_utterances)], normalize_text) for i in range(count)],
        dtype=torch.float64,
    )
    per_utt = torch.tensor(
        [
            [_utterance_score(metric, refs[u], hyps[u][i], normalize_text) for i in range(count)]
            for u in range(num_utterances)
        ],
        dtype=torch.float64,
    )
    auc, auc_raw = _auc(level_list, scores)
    return PerturbationCurve(
        mode=mode,
        metric=metric,
        levels=torch.tensor(level_list, dtype=torch.float64),
        scores=scores,
        auc=auc,
        auc_raw=auc_raw,
        direction=_direction(mode, TEXT_METRICS[metric]),
        scale=(
            "auc = trapezoid over q in percent / 100 (mean score over 0-100, score units); "
            "auc_raw = raw trapezoid (0-10000 for a 0-100 score)"
        ),
        num_replaced=torch.stack([p[1] for p in prepared]).cpu(),
        utterance_scores=per_utt,
        hypotheses=hyps,
        references=refs,
        settings={
            "decoding": "free re-decoding with decode_fn",
            "references": "clean decoding" if references is None else "given",
            "normalize_text": normalize_text,
            "wer_clipped_at_100": metric == "wer_max",
            "corpus_level": True,
            "ranking": "mean over tokens" if token_index is None else f"token {token_index}",
            "normalize": normalize,
            "baselines": baselines if baselines is None or isinstance(baselines, (str, int, float)) else "tensor",
            "num_frames": [p[2] for p in prepared],
        },
    )


def insertion_curve(
    attributions: AttributionLike | Sequence[AttributionLike],
    features: Tensor | Sequence[Tensor],
    decode_fn: DecodeFn,
    **kwargs: Any,
) -> PerturbationCurve:
    """:func:`deletion_curve` with ``mode="insertion"`` (lower WER AUC = more faithful)."""
    return deletion_curve(attributions, features, decode_fn, mode="insertion", **kwargs)


def deletion_curve_teacher_forced(
    attribution: AttributionLike,
    features: Tensor,
    wrapper: SpeechSeq2SeqWrapper,
    *,
    mode: str = "deletion",
    step: float = 5,
    max_percent: float = 100,
    levels: Sequence[float] | None = None,
    baselines: BaselineSpec = None,
    num_frames: int | None = None,
    token_index: int | None = None,
    normalize: str | None = "reference",
    batch_size: int = 8,
) -> PerturbationCurve:
    r"""Cheap proxy: mean log-probability of the frozen hypothesis under each perturbed input.

    **Not the paper's metric** (which re-decodes freely, :func:`deletion_curve`): one
    teacher-forced forward per chunk of ``batch_size`` levels scores the hypothesis already
    set on ``wrapper`` (``wrapper.hypothesis``, ``K + 1`` positions including the end token;
    with ``token_index`` only that token's log-probability). Scores are in nats
    (<= 0); lower deletion AUC (higher insertion AUC) is more faithful.

    Args:
        attribution (SPESResult or Tensor): one utterance, as in :func:`deletion_curve`.
        features (Tensor): the clean input ``(1, ...)`` whose hypothesis ``wrapper`` holds.
        wrapper (SpeechSeq2SeqWrapper): with the hypothesis set.
        Others: as in :func:`deletion_curve`.

    Returns:
        *PerturbationCurve* with ``metric="log_prob"``; ``auc = auc_raw / 100`` is the mean
        log-probability over levels 0-100.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    level_list = percent_levels(step, max_percent, levels)
    hypothesis = wrapper.hypothesis
    [(inputs, replaced, frames)] = _prepare(
        [attribution], [features], wrapper.adapter, [num_frames], baselines, token_index, normalize, level_list, mode
    )
    targets = torch.tensor(hypothesis.target_ids)
    rows = []
    with torch.inference_mode():
        for chunk in inputs.split(batch_size):
            log_probs = wrapper(chunk.to(wrapper.device))  # (chunk, K + 1, vocab)
            picked = log_probs.gather(-1, targets.to(log_probs.device)[None, :, None].expand(chunk.shape[0], -1, 1))[
                ..., 0
            ]
            rows.append((picked[:, token_index] if token_index is not None else picked.mean(dim=1)).double().cpu())
    scores = torch.cat(rows)
    auc, auc_raw = _auc(level_list, scores)
    return PerturbationCurve(
        mode=mode,
        metric="log_prob",
        levels=torch.tensor(level_list, dtype=torch.float64),
        scores=scores,
        auc=auc,
        auc_raw=auc_raw,
        direction=_direction(mode, True),
        scale=(
            "auc = trapezoid over q in percent / 100 (mean log-probability in nats over 0-100); auc_raw = raw trapezoid"
        ),
        num_replaced=replaced[None].cpu(),
        utterance_scores=scores[None].clone(),
        settings={
            "decoding": "teacher-forced on the frozen hypothesis (not the paper's metric)",
            "ranking": "mean over tokens" if token_index is None else f"token {token_index}",
            "normalize": normalize,
            "num_frames": [frames],
        },
    )
