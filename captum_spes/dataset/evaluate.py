#!/usr/bin/env python3
r"""Corpus-level evaluation of a dataset run (reference §12): faithfulness, size, plausibility.

For every explained utterance, one at a time:

* **deletion and insertion**: :func:`captum_spes.metrics.deletion_curve` on that utterance
  alone (re-decoding every perturbed input freely, the baseline the explanation used), so
  memory holds one utterance's levels at a time (about 20 MB for 21 Whisper levels), never
  the corpus. What is kept are the texts and, per level, the word edits and reference words;
* **size**: the utterance's row of :func:`captum_spes.metrics.size_curve`;
* **plausibility** (rows with an ``alignment``): the matched words of
  :func:`captum_spes.metrics.word_plausibility`.

These per-utterance statistics are appended to ``<eval dir>/index/rank-<r>.jsonl`` as they
are made (fsynced), so an interrupted evaluation resumes where it stopped, and under
``torchrun`` each rank evaluates its shard. Rank 0 then reduces the corpus:

* corpus WER per level = 100 * total edits / total reference words (``wer_max`` clips each
  level at 100), corpus BLEU per level from the kept texts (sacrebleu);
* AUC = trapezoid over q in percent / 100 (``auc``, the mean score over 0-100) and the raw
  trapezoid (``auc_raw``, 0-10 000 for WER);
* size AUC: the mean over utterances of their curves, trapezoid over thresholds in [0, 1];
* plausibility: micro-averages over every matched word, with their chance levels.

These are the numbers :func:`~captum_spes.metrics.deletion_curve`,
:func:`~captum_spes.metrics.size_curve` and :func:`~captum_spes.metrics.word_plausibility`
give for the whole corpus at once (tested to equality). Defaults follow the reference:
levels every 5 %, beam search with 5 beams and no repeated 5-grams, ``wer_max``, scored
against the clean input's own decoding, no text normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from captum_spes.dataset.distributed import RANK_ERRORS, configure_threads, initialize, resolve_device, shard
from captum_spes.dataset.manifest import Utterance
from captum_spes.dataset.progress import UtteranceProgress
from captum_spes.dataset.runner import ModelLoader, generate_kwargs, load_waveform, utterance_features
from captum_spes.dataset.store import DONE, FAILED, DatasetStore, RecordShards, check_settings_file
from captum_spes.errors import InputError

__all__ = [
    "METRICS",
    "EvaluationSettings",
    "CorpusCurve",
    "CorpusEvaluation",
    "evaluate_utterance",
    "reduce_corpus",
    "evaluation_records",
    "split_records",
    "evaluate_dataset",
]

#: Corpus metrics: name -> True when a higher score means a better transcript.
METRICS: dict[str, bool] = {"wer_max": False, "wer": False, "bleu": True, "sentence_bleu": True}
MODES: tuple[str, ...] = ("deletion", "insertion")
AGAINST: tuple[str, ...] = ("hypothesis", "reference")


@dataclass(frozen=True)
class EvaluationSettings:
    r"""How the corpus is evaluated; all but ``batch_size`` are checked on rerun.

    Attributes:
        step (float): level spacing in percent (must divide 100). Default: 5
        num_beams (int): beams when re-decoding (1: greedy). Default: 5 (the reference)
        no_repeat_ngram_size (int): no repeated n-grams when re-decoding (0: off). Default: 5
        against (str): score against ``"hypothesis"`` (the clean input's own decoding) or
            the manifest's ``"reference"``. Default: "hypothesis"
        normalize_text (bool): lower-case and strip punctuation before WER. Default: False
        size_step (float): threshold spacing of the size curve. Default: 0.05
        tier (str): TextGrid tier of the word intervals. Default: "words"
        tolerance (float): seconds around a word for the pointing game. Default: 0.0
        batch_size (int): inputs per ``generate`` call. Default: 8
    """

    step: float = 5
    num_beams: int = 5
    no_repeat_ngram_size: int = 5
    against: str = "hypothesis"
    normalize_text: bool = False
    size_step: float = 0.05
    tier: str = "words"
    tolerance: float = 0.0
    batch_size: int = 8

    def __post_init__(self) -> None:
        from captum_spes.metrics import percent_levels, size_thresholds

        if self.against not in AGAINST:
            raise InputError(f"against must be one of {', '.join(AGAINST)}, got {self.against!r}")
        for name in ("num_beams", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.no_repeat_ngram_size < 0 or self.tolerance < 0:
            raise InputError("no_repeat_ngram_size and tolerance must be >= 0")
        percent_levels(self.step)  # raises for a step that does not divide 100
        size_thresholds(self.size_step)

    @property
    def levels(self) -> list[float]:
        from captum_spes.metrics import percent_levels

        return percent_levels(self.step)

    def checked(self, model: str) -> dict[str, Any]:
        """The settings that must match between runs into one evaluation folder."""
        from captum_spes import __version__

        values = asdict(self)
        values.pop("batch_size")
        return {**values, "model": model, "captum_spes": __version__}


@dataclass
class CorpusCurve:
    """A corpus-level deletion or insertion curve.

    Attributes:
        mode (str): "deletion" or "insertion".
        metric (str): one of :data:`METRICS`.
        levels (list of float): percentages q.
        scores (list of float): corpus score per level.
        auc (float): trapezoid over q in percent / 100 (mean score over 0-100).
        auc_raw (float): the raw trapezoid (0-10 000 for WER).
        direction (str): "higher_is_more_faithful" or "lower_is_more_faithful".
    """

    mode: str
    metric: str
    levels: list[float]
    scores: list[float]
    auc: float
    auc_raw: float
    direction: str


@dataclass
class CorpusEvaluation:
    """The corpus table of a dataset run.

    Attributes:
        curves (dict): mode -> :class:`CorpusCurve`.
        size_spectrogram_auc (float): size AUC of the spectrogram maps, 0-100, lower = more compact.
        size_token_auc (float or None): same for the token maps (None without token maps).
        pointing_accuracy, pointing_chance, mass_in_span, mass_chance (float): plausibility
            micro-averages over matched words (NaN without alignments).
        num_words_matched (int): words scored for plausibility.
        num_aligned (int): utterances with an alignment.
        num_utterances (int): utterances in the corpus scores.
        failures (list of tuple): ``(id, error)`` of utterances that could not be evaluated.
        settings (dict): the evaluation settings and the metric.
    """

    curves: dict[str, CorpusCurve]
    size_spectrogram_auc: float
    size_token_auc: float | None
    pointing_accuracy: float
    pointing_chance: float
    mass_in_span: float
    mass_chance: float
    num_words_matched: int
    num_aligned: int
    num_utterances: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


# ----- one utterance --------------------------------------------------------------------
def _baseline(result: Any) -> Any:
    """The ``baselines`` argument that reproduces the explanation's occlusion value."""
    info = result.metadata.get("baseline") or {"kind": "channel_mean"}
    if info["kind"] == "channel_mean":
        return None
    if info["kind"] == "floor":
        return "floor"
    if info["kind"] == "constant":
        return float(info["value"])
    raise InputError(f"the explanation's baseline {info!r} cannot be reproduced from its metadata")


def _edits(reference: str, hypothesis: str, normalize_text: bool) -> tuple[int, int]:
    """``(word edits, reference words)`` of one pair, with ``corpus_wer``'s text handling."""
    import jiwer

    from captum_spes.metrics import normalize_transcript

    prepare = normalize_transcript if normalize_text else str.strip
    output = jiwer.process_words([prepare(reference)], [prepare(hypothesis)])
    return (
        output.substitutions + output.deletions + output.insertions,
        output.substitutions + output.deletions + output.hits,
    )


def evaluate_utterance(
    result: Any,
    features: Any,
    decode_fn: Callable[[Any], list[str]],
    settings: EvaluationSettings,
    *,
    reference: str | None = None,
    alignment: str | Path | None = None,
) -> dict[str, Any]:
    r"""The statistics of one utterance that the corpus scores are reduced from.

    Args:
        result (SPESResult): the explanation.
        features (Tensor): its clean model input ``(1, n_mels, n_frames)``.
        decode_fn (callable): re-decodes inputs, e.g. :func:`~captum_spes.metrics.make_generate_decoder`.
        settings (EvaluationSettings): levels, decoding, text handling.
        reference (str, optional): the manifest reference (``settings.against == "reference"``).
        alignment (path, optional): TextGrid with word intervals (plausibility).

    Returns:
        *dict* (JSON-serialisable): ``reference``, per mode the ``hypotheses``, ``edits``,
        ``words`` and ``num_replaced`` per level, ``size`` rows and ``plausibility`` words.
    """
    from captum_spes.metrics import deletion_curve, size_curve, word_plausibility

    if settings.against == "reference" and reference is None:
        raise InputError("the manifest gives no reference for this utterance, but the evaluation is against references")
    references = [reference] if settings.against == "reference" else None
    record: dict[str, Any] = {"modes": {}}
    for mode in MODES:
        # The score deletion_curve computes for one utterance is not used (the corpus score
        # is reduced later); BLEU is asked for because it is defined for an empty reference.
        curve = deletion_curve(
            result,
            features,
            decode_fn,
            references=references,
            metric="bleu",
            mode=mode,
            levels=settings.levels,
            baselines=_baseline(result),
            batch_size=settings.batch_size,
        )
        used = curve.references[0]
        references = [used]  # one reference for both modes
        record["reference"] = used
        hypotheses = curve.hypotheses[0]
        counts = [_edits(used, h, settings.normalize_text) for h in hypotheses]
        record["modes"][mode] = {
            "hypotheses": hypotheses,
            "edits": [c[0] for c in counts],
            "words": [c[1] for c in counts],
            "num_replaced": curve.num_replaced[0].tolist(),
        }
    size = size_curve(result, step=settings.size_step)
    record["size"] = {
        "spectrogram": size.spectrogram_per_utterance[0].tolist(),
        "token": None if size.token_per_utterance is None else size.token_per_utterance[0].tolist(),
    }
    record["plausibility"] = None
    if alignment is not None:
        report = word_plausibility(result, str(alignment), tier=settings.tier, tolerance=settings.tolerance)
        record["plausibility"] = {
            "words": [
                [w.mass_in_span, w.mass_chance, float(w.pointing_hit), w.pointing_chance]
                for w in report.utterances[0].words
            ],
            "num_hypothesis_words": report.num_hypothesis_words,
        }
    return record


# ----- the corpus -----------------------------------------------------------------------
def _direction(mode: str, metric: str) -> str:
    # Deleting what matters should hurt the score; inserting it should restore it.
    if METRICS[metric] == (mode == "deletion"):
        return "lower_is_more_faithful"
    return "higher_is_more_faithful"


def _trapezoid(values: Sequence[float], positions: Sequence[float]) -> float:
    import torch

    return float(
        torch.trapezoid(torch.tensor(values, dtype=torch.float64), torch.tensor(positions, dtype=torch.float64))
    )


def _level_scores(records: Sequence[Mapping[str, Any]], mode: str, metric: str, normalize_text: bool) -> list[float]:
    from captum_spes.metrics import corpus_bleu, mean_sentence_bleu

    levels = len(records[0]["modes"][mode]["hypotheses"])
    if metric in ("wer", "wer_max"):
        scores = []
        for level in range(levels):
            edits = sum(r["modes"][mode]["edits"][level] for r in records)
            words = sum(r["modes"][mode]["words"][level] for r in records)
            if words == 0:
                raise InputError("every reference is empty, so WER is undefined; evaluate against references instead")
            value = 100.0 * edits / words
            scores.append(min(value, 100.0) if metric == "wer_max" else value)
        return scores
    score = corpus_bleu if metric == "bleu" else mean_sentence_bleu
    references = [r["reference"] for r in records]
    return [score(references, [r["modes"][mode]["hypotheses"][level] for r in records]) for level in range(levels)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def reduce_corpus(
    records: Sequence[Mapping[str, Any]],
    settings: EvaluationSettings,
    metric: str = "wer_max",
    failures: Iterable[tuple[str, str]] = (),
) -> CorpusEvaluation:
    r"""Corpus scores from the records of :func:`evaluate_utterance` (in corpus order).

    Raises:
        InputError: for an unknown metric or no records.
    """
    import torch

    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not records:
        raise InputError("no utterance could be evaluated, so there is no corpus score")
    levels = settings.levels
    curves = {}
    for mode in MODES:
        scores = _level_scores(records, mode, metric, settings.normalize_text)
        raw = _trapezoid(scores, levels)
        curves[mode] = CorpusCurve(mode, metric, levels, scores, raw / 100.0, raw, _direction(mode, metric))
    from captum_spes.metrics import size_thresholds

    thresholds = size_thresholds(settings.size_step)
    spectrogram = torch.tensor([r["size"]["spectrogram"] for r in records], dtype=torch.float64).mean(dim=0)
    token_rows = [r["size"]["token"] for r in records if r["size"]["token"] is not None]
    token = torch.tensor(token_rows, dtype=torch.float64).mean(dim=0) if token_rows else None
    words = [w for r in records if r["plausibility"] for w in r["plausibility"]["words"]]
    return CorpusEvaluation(
        curves=curves,
        size_spectrogram_auc=float(torch.trapezoid(spectrogram, thresholds)),
        size_token_auc=None if token is None else float(torch.trapezoid(token, thresholds)),
        mass_in_span=_mean([w[0] for w in words]),
        mass_chance=_mean([w[1] for w in words]),
        pointing_accuracy=_mean([w[2] for w in words]),
        pointing_chance=_mean([w[3] for w in words]),
        num_words_matched=len(words),
        num_aligned=sum(1 for r in records if r["plausibility"] is not None),
        num_utterances=len(records),
        failures=list(failures),
        settings={**asdict(settings), "metric": metric},
    )


def evaluation_records(shards: RecordShards, explained: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """The current evaluation record of every id whose explanation has not changed since."""
    records = shards.latest(lambda record: True)
    return {
        identifier: record
        for identifier, record in records.items()
        if identifier in explained and record.get("explained_at") == explained[identifier].get("finished_at")
    }


def split_records(
    records: Mapping[str, Mapping[str, Any]], order: Iterable[str]
) -> tuple[list[Mapping[str, Any]], list[tuple[str, str]]]:
    """``(done records, failures)`` in ``order``."""
    done, failures = [], []
    for identifier in order:
        record = records.get(identifier)
        if record is None:
            continue
        if record["status"] == DONE:
            done.append(record)
        elif record["status"] == FAILED:
            failures.append((identifier, record.get("error") or ""))
    return done, failures


# ----- a whole run ----------------------------------------------------------------------
def _utterance_of(record: Mapping[str, Any]) -> Utterance:
    """The manifest row stored with an index record."""
    return Utterance(
        id=record["id"],
        audio=Path(record["audio"]),
        reference=record.get("reference"),
        language=record.get("language"),
        task=record.get("task"),
        alignment=Path(record["alignment"]) if record.get("alignment") else None,
        row=record.get("row", ""),
    )


def _evaluate_shard(
    identifiers: Sequence[str],
    explained: Mapping[str, Mapping[str, Any]],
    store: DatasetStore,
    shards: RecordShards,
    settings: EvaluationSettings,
    *,
    model: Any,
    processor: Any,
    rank: int,
    progress: UtteranceProgress,
) -> None:
    """Evaluate this rank's utterances, appending one record each (failures included)."""
    from captum_spes import SpeechSeq2SeqWrapper
    from captum_spes.metrics import make_generate_decoder

    if not identifiers:
        return
    wrapper = SpeechSeq2SeqWrapper(model, processor)

    for identifier in identifiers:
        utterance = _utterance_of(explained[identifier])
        record: dict[str, Any] = {"id": identifier, "explained_at": explained[identifier].get("finished_at")}
        try:
            features = utterance_features(load_waveform(utterance), wrapper)
            decode = make_generate_decoder(
                model,
                processor,
                generate_kwargs(utterance, settings.num_beams, settings.no_repeat_ngram_size),
                batch_size=settings.batch_size,
            )
            statistics = evaluate_utterance(
                store.load_result(identifier),
                features,
                decode,
                settings,
                reference=utterance.reference,
                alignment=utterance.alignment,
            )
            record.update(status=DONE, error=None, **statistics)
        except Exception as error:  # noqa: BLE001 - one bad utterance must not stop the corpus
            record.update(status=FAILED, error=f"{type(error).__name__}: {' '.join(str(error).split())}")
        shards.append(rank, record)
        progress.advance()


def evaluate_dataset(
    directory: str | Path,
    settings: EvaluationSettings | None = None,
    *,
    metric: str = "wer_max",
    out: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    load_model: ModelLoader | None = None,
    show_progress: bool = True,
) -> CorpusEvaluation | None:
    r"""Evaluate the explanations of a dataset run at corpus level, on one process or under torchrun.

    Resumable: utterances already evaluated with the same settings are not decoded again.

    Args:
        directory (path): the ``--out`` of ``captum-spes explain-dataset``.
        settings (EvaluationSettings, optional): levels, decoding, text handling. Default:
            the reference's protocol (``EvaluationSettings()``).
        metric (str, optional): one of :data:`METRICS`. Default: "wer_max"
        out (path, optional): where the statistics and tables go. Default: ``directory/evaluation``
        device (str, optional): "auto", "cpu" or "cuda". Default: "auto"
        threads (int, optional): torch threads per rank (default: see
            :mod:`captum_spes.dataset.distributed`).
        load_model (callable, optional): ``load_model(name, device) -> (model, processor)``;
            default: :func:`captum_spes.models.load_model`.
        show_progress (bool, optional): progress bars. Default: True

    Returns:
        *CorpusEvaluation* on rank 0 (its files are written to ``out``); None on other ranks.
    """
    from captum_spes.dataset.report import write_evaluation
    from captum_spes.models import load_model as default_loader

    settings = settings or EvaluationSettings()
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    context = initialize()
    try:
        device = resolve_device(device, context)
        configure_threads(device, context, threads)
        store = DatasetStore(directory)
        index = store.read_index()
        explained = {r["id"]: r for r in index if r["status"] == DONE}
        order = [r["id"] for r in index]
        folder = Path(out) if out is not None else store.root / "evaluation"
        shards = RecordShards(folder / "index")

        def prepare() -> tuple[str, list[str]]:
            stored = store.read_settings() or {}
            if "model" not in stored:
                raise InputError(f"{store.settings_path} names no model: is {store.root} a dataset run?")
            check_settings_file(
                folder / "settings.json",
                settings.checked(stored["model"]),
                mix=False,
                fix=f"pass another evaluation folder (--eval-dir), or delete {folder} to start over",
            )
            finished = evaluation_records(shards, explained)
            return stored["model"], [i for i in explained if i not in finished]

        model_name, pending = context.run_on_main(prepare, RANK_ERRORS)
        mine = shard(pending, context)
        progress = UtteranceProgress(
            context,
            len(mine),
            len(pending),
            [shards.path(r) for r in range(1, context.world_size)],
            "evaluated",
            enabled=show_progress,
        )
        loader = load_model or (lambda name, where: default_loader(name, device=where))
        loaded = context.main_first(lambda: loader(model_name, device), needed=bool(mine))
        model, processor = loaded if loaded is not None else (None, None)
        _evaluate_shard(
            mine,
            explained,
            store,
            shards,
            settings,
            model=model,
            processor=processor,
            rank=context.rank,
            progress=progress,
        )
        context.barrier(progress.refresh_total)
        progress.close()
        if not context.is_main:
            return None
        done, failures = split_records(evaluation_records(shards, explained), order)
        failures += [(r["id"], f"not explained: {r.get('error') or ''}") for r in index if r["status"] != DONE]
        evaluation = reduce_corpus(done, settings, metric, failures)
        evaluation.settings["folder"] = str(folder)
        write_evaluation(evaluation, folder)
        return evaluation
    finally:
        context.close()
