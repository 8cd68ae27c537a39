#!/usr/bin/env python3
r"""Text scores for the faithfulness curves: WER through ``jiwer``, BLEU through ``sacrebleu``.

Nothing here re-implements an edit distance or BLEU; these are thin wrappers that fix the
scale (percent, 0-100 for BLEU, 0-100+ for WER) and the text normalisation.

Text normalisation for WER: the reference scores detokenised, cased, punctuated text (no
normalisation), which is the default here (``normalize_text=False``). With
``normalize_text=True`` both sides are lower-cased, stripped of punctuation (every Unicode
punctuation character) and have runs of whitespace collapsed, as Whisper evaluations
usually do. BLEU is computed by sacrebleu with its default ``13a`` tokeniser on the raw text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from captum_spes.errors import InputError, InputTypeError

__all__ = ["normalize_transcript", "corpus_wer", "corpus_bleu", "mean_sentence_bleu", "TEXT_METRICS", "score_texts"]

#: metric name -> True when a higher score means a better transcript/translation
TEXT_METRICS = {"wer": False, "wer_max": False, "bleu": True, "sentence_bleu": True}

_SPACES = re.compile(r"\s+")


def normalize_transcript(text: str) -> str:
    """Lower-case, drop Unicode punctuation, collapse whitespace, strip the ends."""
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return _SPACES.sub(" ", kept).strip()


def _prepare(references: Sequence[str], hypotheses: Sequence[str], normalize_text: bool) -> tuple:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise InputTypeError("references and hypotheses must be sequences of strings (one per utterance), not a str")
    if len(references) != len(hypotheses):
        raise InputError(
            f"references and hypotheses must have the same length, got {len(references)} and {len(hypotheses)}"
        )
    if len(references) == 0:
        raise InputError("references is empty: give at least one utterance")
    if normalize_text:
        return [normalize_transcript(r) for r in references], [normalize_transcript(h) for h in hypotheses]
    return [r.strip() for r in references], [h.strip() for h in hypotheses]


def _jiwer():
    try:
        import jiwer
    except ImportError as exc:  # pragma: no cover - jiwer is in the eval/test extras
        raise ImportError("WER needs jiwer: pip install 'captum-spes[eval]' or pip install jiwer") from exc
    return jiwer


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError as exc:  # pragma: no cover - sacrebleu is in the eval/test extras
        raise ImportError("BLEU needs sacrebleu: pip install 'captum-spes[eval]' or pip install sacrebleu") from exc
    return sacrebleu


def corpus_wer(
    references: Sequence[str], hypotheses: Sequence[str], normalize_text: bool = False, clip: bool = False
) -> float:
    r"""Corpus-level word error rate in percent: total edits / total reference words * 100.

    Args:
        references (sequence of str): one reference per utterance.
        hypotheses (sequence of str): one hypothesis per utterance.
        normalize_text (bool, optional): see the module docstring. Default: False
        clip (bool, optional): cap the corpus WER at 100 (the reference's ``wer_max``: a
            hallucinating decoder can insert without bound). Default: False

    Returns:
        *float* WER in percent (above 100 possible unless ``clip``).
    """
    refs, hyps = _prepare(references, hypotheses, normalize_text)
    if sum(len(r.split()) for r in refs) == 0:
        raise InputError(
            "every reference is empty, so WER is undefined; pass non-empty references= (the clean "
            "hypothesis was empty?)"
        )
    # jiwer (>= 3.1) counts an empty reference's hypothesis words as insertions.
    output = _jiwer().process_words(refs, hyps)
    edits = output.substitutions + output.deletions + output.insertions
    words = output.substitutions + output.deletions + output.hits
    value = 100.0 * edits / words
    return min(value, 100.0) if clip else value


def corpus_bleu(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """SacreBLEU corpus BLEU (0-100) with one reference per utterance and default settings."""
    refs, hyps = _prepare(references, hypotheses, False)
    return float(_sacrebleu().corpus_bleu(hyps, [refs]).score)


def mean_sentence_bleu(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Mean over utterances of SacreBLEU sentence BLEU (0-100, default exp smoothing)."""
    refs, hyps = _prepare(references, hypotheses, False)
    sacrebleu = _sacrebleu()
    return float(sum(sacrebleu.sentence_bleu(h, [r]).score for r, h in zip(refs, hyps)) / len(refs))


def score_texts(metric: str, references: Sequence[str], hypotheses: Sequence[str], normalize_text: bool) -> float:
    r"""Score hypotheses with one of :data:`TEXT_METRICS`.

    ``"wer"``: corpus WER; ``"wer_max"``: corpus WER clipped at 100; ``"bleu"``: corpus BLEU;
    ``"sentence_bleu"``: mean sentence BLEU. ``normalize_text`` applies to WER only (BLEU uses
    sacrebleu's own tokenisation).
    """
    if metric == "wer":
        return corpus_wer(references, hypotheses, normalize_text, clip=False)
    if metric == "wer_max":
        return corpus_wer(references, hypotheses, normalize_text, clip=True)
    if metric == "bleu":
        return corpus_bleu(references, hypotheses)
    if metric == "sentence_bleu":
        return mean_sentence_bleu(references, hypotheses)
    raise InputError(f"metric must be one of {sorted(TEXT_METRICS)}, got {metric!r}")


def as_text_list(values: Sequence[str], name: str, count: int) -> list[str]:
    """Check a per-utterance list of strings (a lone str counts as one utterance)."""
    items = [values] if isinstance(values, str) else list(values)
    if len(items) != count or not all(isinstance(v, str) for v in items):
        raise InputError(f"{name} must hold {count} strings (one per utterance), got {values!r}")
    return items
