"""Tests of ``captum_spes.dataset.evaluate``: the streamed corpus scores equal the library's
corpus functions (``deletion_curve``, ``size_curve``, ``word_plausibility``) on the same inputs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from dataset_helpers import CLIPS, clip_rows, write_manifest, write_tiny_whisper

from captum_spes import SPES, SpeechSeq2SeqWrapper, SPESResult, cli
from captum_spes.data import load_sample, read_textgrid
from captum_spes.dataset.evaluate import (
    METRICS,
    EvaluationSettings,
    evaluate_dataset,
    evaluate_utterance,
    reduce_corpus,
)
from captum_spes.dataset.store import DatasetStore
from captum_spes.metrics import deletion_curve, make_generate_decoder, size_curve, word_plausibility
from captum_spes.models import load_model

SETTINGS = EvaluationSettings(step=25, num_beams=2, no_repeat_ngram_size=3, batch_size=4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three clips explained with the tiny model: results, features and a decoder."""
    folder = write_tiny_whisper(tmp_path_factory.mktemp("model") / "tiny-whisper")
    model, processor = load_model(folder)
    spes = SPES(SpeechSeq2SeqWrapper(model, processor))
    samples = [load_sample(name) for name in CLIPS[:3]]
    features = [processor(s.waveform, sampling_rate=16000, return_tensors="pt").input_features for s in samples]
    results = [spes.attribute(f, n_masks=16) for f in features]
    decode = make_generate_decoder(
        model, processor, {"num_beams": SETTINGS.num_beams, "no_repeat_ngram_size": 3}, batch_size=4
    )
    return {"folder": folder, "samples": samples, "features": features, "results": results, "decode": decode}


def _records(corpus: dict[str, Any], settings: EvaluationSettings, **per_utterance: list[Any]) -> list[dict]:
    return [
        evaluate_utterance(result, features, corpus["decode"], settings, **{k: v[i] for k, v in per_utterance.items()})
        for i, (result, features) in enumerate(zip(corpus["results"], corpus["features"]))
    ]


def _assert_equal_curves(evaluation: Any, corpus: dict[str, Any], metric: str, **options: Any) -> None:
    for mode in ("deletion", "insertion"):
        expected = deletion_curve(
            corpus["results"], corpus["features"], corpus["decode"], metric=metric, mode=mode, step=25, **options
        )
        got = evaluation.curves[mode]
        assert got.scores == expected.scores.tolist(), (metric, mode)
        assert (got.auc, got.auc_raw, got.direction) == (expected.auc, expected.auc_raw, expected.direction)
        assert got.levels == expected.levels.tolist()


def test_corpus_curves_equal_deletion_curve_for_every_metric(corpus: dict[str, Any]) -> None:
    records = _records(corpus, SETTINGS)
    assert any(
        0 < s < 100 for m in ("deletion", "insertion") for s in reduce_corpus(records, SETTINGS).curves[m].scores
    )
    for metric in METRICS:
        _assert_equal_curves(reduce_corpus(records, SETTINGS, metric), corpus, metric)


def test_corpus_curves_against_references_and_with_normalised_text(corpus: dict[str, Any]) -> None:
    # The clean decodings, shouted: only text normalisation makes them match again.
    references = [text.upper() + " !" for text in corpus["decode"](torch.cat(corpus["features"]))]
    settings = dataclasses.replace(SETTINGS, against="reference", normalize_text=True)
    records = _records(corpus, settings, reference=references)
    assert [r["reference"] for r in records] == references
    for metric in ("wer", "bleu"):
        evaluation = reduce_corpus(records, settings, metric)
        _assert_equal_curves(evaluation, corpus, metric, references=references, normalize_text=True)
    raw = dataclasses.replace(settings, normalize_text=False)
    raw_scores = reduce_corpus(_records(corpus, raw, reference=references), raw, "wer").curves["deletion"].scores
    assert raw_scores != reduce_corpus(records, settings, "wer").curves["deletion"].scores
    with pytest.raises(ValueError, match="gives no reference"):
        evaluate_utterance(corpus["results"][0], corpus["features"][0], corpus["decode"], settings)


def test_size_aucs_equal_size_curve(corpus: dict[str, Any]) -> None:
    settings = dataclasses.replace(SETTINGS, size_step=0.1)
    evaluation = reduce_corpus(_records(corpus, settings), settings)
    expected = size_curve(corpus["results"], step=0.1)
    assert evaluation.size_spectrogram_auc == expected.spectrogram_auc
    assert evaluation.size_token_auc == expected.token_auc
    assert evaluation.num_aligned == 0 and evaluation.num_words_matched == 0


def _word_result(sample: Any, alignment: Path, seed: int) -> SPESResult:
    """A map over the clip's frames whose tokens are the aligned words (so they match)."""
    words = [w.label for w in read_textgrid(alignment, "words")]
    frames = int(sample.duration * 100)
    generator = torch.Generator().manual_seed(seed)
    return SPESResult(
        spectrogram_attr=torch.rand(len(words) + 1, 80, frames, generator=generator),
        token_attr=None,
        target_ids=list(range(len(words) + 1)),
        tokens=[f" {w}" for w in words] + ["<|endoftext|>"],
        decoder_input_ids=list(range(len(words) + 1)),
        decoder_input_tokens=["<|startoftranscript|>"] + [f" {w}" for w in words],
        num_prompt=1,
        target_log_probs=torch.zeros(len(words) + 1),
        text=" ".join(words),
        metadata={"frame_rate": 100.0, "baseline": {"kind": "channel_mean"}},
    )


def test_plausibility_equals_word_plausibility(corpus: dict[str, Any]) -> None:
    alignments = [Path(row["alignment"]) for row in clip_rows(CLIPS[:3])]
    results = [_word_result(s, a, i) for i, (s, a) in enumerate(zip(corpus["samples"], alignments))]
    settings = dataclasses.replace(SETTINGS, step=50, tolerance=0.05)
    records = [
        evaluate_utterance(r, f, corpus["decode"], settings, alignment=a)
        for r, f, a in zip(results, corpus["features"], alignments)
    ]
    evaluation = reduce_corpus(records, settings)
    expected = word_plausibility(results, [str(a) for a in alignments], tier="words", tolerance=0.05)
    assert evaluation.num_words_matched == expected.num_matched > 10
    assert evaluation.num_aligned == 3
    pairs = {"pointing_accuracy": "pointing_accuracy", "pointing_chance": "pointing_chance"}
    pairs.update(mass_in_span="mean_mass_in_span", mass_chance="mean_mass_chance")
    for ours, theirs in pairs.items():
        assert getattr(evaluation, ours) == getattr(expected, theirs), ours


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="against must be one of"):
        EvaluationSettings(against="gold")
    with pytest.raises(ValueError, match="step must be positive and divide"):
        EvaluationSettings(step=7)
    with pytest.raises(ValueError, match="num_beams must be a positive integer"):
        EvaluationSettings(num_beams=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        reduce_corpus([{}], SETTINGS, "cer")
    with pytest.raises(ValueError, match="no utterance could be evaluated"):
        reduce_corpus([], SETTINGS)


def test_evaluation_resumes_and_redoes_only_what_changed(corpus: dict[str, Any], tmp_path: Path) -> None:
    rows = clip_rows(CLIPS[:3])
    copy = tmp_path / "copy.wav"
    shutil.copy(rows[2]["audio"], copy)
    rows[2]["audio"] = str(copy)
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "run"
    explain = ["explain-dataset", str(manifest), "--out", str(out), "--model", str(corpus["folder"]), "--no-progress"]
    assert cli.main([*explain, "--n-masks", "16", "--threads", "1"]) == 0
    loads: list[str] = []

    def counting_loader(name: str, device: str) -> tuple[Any, Any]:
        loads.append(name)
        return load_model(name, device=device)

    settings = dataclasses.replace(SETTINGS, step=50, num_beams=1)
    first = evaluate_dataset(out, settings, load_model=counting_loader, device="cpu", show_progress=False)
    assert first is not None and first.num_utterances == 3 and loads == [str(corpus["folder"])]
    again = evaluate_dataset(out, settings, load_model=counting_loader, device="cpu", show_progress=False)
    assert loads == [str(corpus["folder"])]  # nothing left to decode: the model is not even loaded
    assert again == first

    # Re-explain one utterance: only its evaluation is redone.
    store = DatasetStore(out)
    shard = store.shards.path(0)
    shard.write_text("".join(line for line in shard.open() if f'"{CLIPS[0]}"' not in line))
    assert cli.main([*explain, "--n-masks", "16", "--threads", "1"]) == 0
    third = evaluate_dataset(out, settings, load_model=counting_loader, device="cpu", show_progress=False)
    assert third is not None and third.num_utterances == 3 and len(loads) == 2
    evaluated = [json.loads(line)["id"] for line in (out / "evaluation" / "index" / "rank-0.jsonl").open()]
    assert sorted(evaluated) == sorted([*CLIPS[:3], CLIPS[0]])

    # An utterance whose audio is gone is left out, with its error.
    copy.unlink()
    fourth = evaluate_dataset(
        out, settings, out=tmp_path / "other", load_model=counting_loader, device="cpu", show_progress=False
    )
    assert fourth is not None and fourth.num_utterances == 2
    assert [(i, e.split(":")[0]) for i, e in fourth.failures] == [(CLIPS[2], "AudioError")]
