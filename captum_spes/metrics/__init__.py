#!/usr/bin/env python3
r"""Evaluation of speech-to-text explanations (reference §12), for maps from any method.

* faithfulness: :func:`deletion_curve` / :func:`insertion_curve` (free re-decoding, WER or
  BLEU, the paper's metric) and :func:`deletion_curve_teacher_forced` (cheap proxy);
* compactness: :func:`size_curve`;
* plausibility: :func:`word_plausibility` against word alignments, :func:`interval_scores`
  for any interval (e.g. phones);
* stability: :func:`seed_agreement` of two explanations of one utterance (e.g. two seeds).

WER comes from ``jiwer`` and BLEU from ``sacrebleu`` (``pip install 'captum-spes[eval]'``).
"""

from captum_spes.metrics._text import corpus_bleu, corpus_wer, mean_sentence_bleu, normalize_transcript
from captum_spes.metrics.deletion import (
    PerturbationCurve,
    deletion_curve,
    deletion_curve_teacher_forced,
    insertion_curve,
    make_generate_decoder,
    percent_levels,
    perturbation_masks,
    perturbed_inputs,
    ranking_map,
)
from captum_spes.metrics.plausibility import (
    PlausibilityReport,
    UtterancePlausibility,
    WordPlausibility,
    interval_frames,
    interval_scores,
    word_plausibility,
)
from captum_spes.metrics.size import SizeResult, default_token_valid, size_curve, size_thresholds
from captum_spes.metrics.stability import Agreement, rank_correlation, seed_agreement, top_overlap, top_units

__all__ = [
    "PerturbationCurve",
    "deletion_curve",
    "insertion_curve",
    "deletion_curve_teacher_forced",
    "make_generate_decoder",
    "percent_levels",
    "ranking_map",
    "perturbation_masks",
    "perturbed_inputs",
    "SizeResult",
    "size_curve",
    "size_thresholds",
    "default_token_valid",
    "PlausibilityReport",
    "UtterancePlausibility",
    "WordPlausibility",
    "word_plausibility",
    "interval_scores",
    "interval_frames",
    "corpus_wer",
    "corpus_bleu",
    "mean_sentence_bleu",
    "normalize_transcript",
    "Agreement",
    "seed_agreement",
    "top_overlap",
    "top_units",
    "rank_correlation",
]
