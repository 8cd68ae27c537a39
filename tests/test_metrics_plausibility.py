"""Plausibility on maps whose saliency mass per aligned span is known."""

from __future__ import annotations

import math

import pytest
import torch

from captum_spes import SPESResult
from captum_spes.data.alignments import AlignedInterval
from captum_spes.metrics import interval_frames, interval_scores, word_plausibility

ALIGN = [AlignedInterval(0.0, 0.4, "hello"), AlignedInterval(0.4, 0.5, "um"), AlignedInterval(0.5, 1.0, "world")]


def make_result() -> SPESResult:
    """10 frames at 10 frames/s (1 s), 2 mel bins; words " Hello," and " wor"+"ld"."""
    spec = torch.zeros(4, 2, 10)
    spec[0, 0, :4] = torch.tensor([0.5, 2.0, 0.25, 0.25])  # 3 inside [0, 0.4), argmax frame 1
    spec[0, 1, 8] = 1.0  # 1 outside: mass share 0.75
    spec[0, 1, 9] = -5.0  # negative: clipped, must not count
    spec[1, 0, 6] = 1.0  # " wor": inside [0.5, 1.0)
    spec[2, 0, 2] = 3.0  # "ld": outside; max-merged word mass share 1/4, argmax frame 2
    spec[3] = 1.0  # end token, not a word
    return SPESResult(
        spectrogram_attr=spec,
        token_attr=None,
        target_ids=[1, 2, 3, 4],
        tokens=[" Hello,", " wor", "ld", "<|endoftext|>"],
        decoder_input_ids=[0, 1, 2, 3],
        decoder_input_tokens=["<s>", " Hello,", " wor", "ld"],
        num_prompt=1,
        target_log_probs=torch.zeros(4),
        text="Hello, world",
        metadata={"frame_rate": 10.0},
    )


def test_interval_frames():
    assert interval_frames(0.0, 0.4, 10.0, 10) == (0, 4)
    assert interval_frames(0.5, 1.3, 10.0, 10) == (5, 10)
    assert interval_frames(0.42, 0.43, 10.0, 10) == (4, 5)  # shorter than a frame: one frame
    assert interval_frames(-0.2, 0.1, 10.0, 10) == (0, 1)


def test_word_plausibility_known_mass():
    report = word_plausibility(make_result(), ALIGN)
    utt = report.utterances[0]
    assert utt.num_hypothesis_words == 2 and utt.num_aligned_words == 3 and utt.num_matched == 2
    hello, world = utt.words
    assert (hello.word, hello.label, world.word, world.label) == ("Hello,", "hello", "world", "world")
    assert hello.mass_in_span == pytest.approx(0.75) and hello.mass_chance == pytest.approx(0.4)
    assert hello.pointing_hit and hello.argmax_time == pytest.approx(0.1)
    assert world.mass_in_span == pytest.approx(0.25) and world.mass_chance == pytest.approx(0.5)
    assert not world.pointing_hit and world.argmax_time == pytest.approx(0.2)
    assert report.mean_mass_in_span == pytest.approx(0.5)
    assert report.pointing_accuracy == pytest.approx(0.5)
    assert report.pointing_chance == pytest.approx(0.45)
    assert "clipped" in report.settings["negative_values"]


def test_tolerance_widens_pointing_only():
    report = word_plausibility(make_result(), ALIGN, tolerance=0.3)
    world = report.utterances[0].words[1]
    assert world.pointing_hit and world.pointing_chance == pytest.approx(0.8)  # frames 2-9
    assert world.mass_in_span == pytest.approx(0.25)


def test_unmatched_words_are_reported_and_several_utterances():
    other = [AlignedInterval(0.0, 0.4, "goodbye"), AlignedInterval(0.5, 1.0, "world")]
    report = word_plausibility([make_result(), make_result()], [ALIGN, other])
    assert [u.num_matched for u in report.utterances] == [2, 1]
    assert report.utterances[1].unmatched_hypothesis_words == ["Hello,"]
    assert report.num_matched == 3 and report.num_hypothesis_words == 4
    assert report.mean_mass_in_span == pytest.approx((0.75 + 0.25 + 0.25) / 3)


def test_interval_scores_zero_map_and_errors():
    zero = interval_scores(torch.zeros(2, 10), 0.0, 0.5, 10.0)
    assert zero["mass_in_span"] == 0.0 and zero["pointing_hit"] == 0.0 and zero["mass_chance"] == 0.5
    profile = interval_scores(torch.tensor([0.0, 1.0, 3.0, 0.0]), 0.2, 0.4, 10.0)
    assert profile["mass_in_span"] == pytest.approx(0.75) and profile["pointing_hit"] == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        interval_scores(torch.zeros(2, 10), 0.0, 0.5, 10.0, tolerance=-1)
    with pytest.raises(ValueError, match="saliency must have shape"):
        interval_scores(torch.zeros(1, 2, 10), 0.0, 0.5, 10.0)
    with pytest.raises(ValueError, match="one alignment per result"):
        word_plausibility([make_result()], [ALIGN, ALIGN])
    with pytest.raises(ValueError, match="tier="):
        word_plausibility(make_result(), "words.TextGrid")


def test_textgrid_path(tmp_path):
    from praatio import textgrid

    grid = textgrid.Textgrid()
    grid.addTier(textgrid.IntervalTier("words", [(0.0, 0.4, "hello"), (0.5, 1.0, "world")], 0.0, 1.0))
    path = tmp_path / "utt.TextGrid"
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    report = word_plausibility(make_result(), str(path), tier="words")
    assert report.num_matched == 2 and report.mean_mass_in_span == pytest.approx(0.5)


def test_pointing_with_tied_maxima_counts_the_share_inside():
    # Ten frames; the maximum is shared by frames 2-5 (rows 0 and 1): 8 tied elements, of which
    # the 4 in frames 4-5 lie in the interval [0.4, 0.6) s: expected hit 0.5, not the hit or miss
    # of whichever tied element comes first.
    saliency = torch.zeros(2, 10)
    saliency[:, 2:6] = 1.0
    out = interval_scores(saliency, 0.4, 0.6, frame_rate=10.0)
    assert out["pointing_hit"] == pytest.approx(0.5) and out["argmax_time"] == pytest.approx(0.2)


def test_significance_in_the_word_span():
    # One word (" hello", frames 0-4 of 10) with statistics: unit 0 = frames 0-2, unit 1 =
    # frames 3-5, unit 2 = the rest. Unit 0 and unit 2 are significant: one region inside the
    # span, one outside -> found, and 3 x 2 of the 3 x 2 + 4 x 2 significant elements inside.
    result = SPESResult(
        spectrogram_attr=torch.rand(2, 2, 10),
        token_attr=None,
        target_ids=[1, 2],
        tokens=[" hello", "<eos>"],
        decoder_input_ids=[0, 1],
        decoder_input_tokens=["<s>", " hello"],
        num_prompt=1,
        target_log_probs=torch.zeros(2),
        metadata={"frame_rate": 10.0},
        units=torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])[None, :].expand(2, 10).contiguous(),
        unit_occluded=torch.ones(3, dtype=torch.float64),
        spectrogram_se=torch.ones(2, 3),
        spectrogram_z=torch.tensor([[9.0, 0.0, 9.0], [0.0, 0.0, 0.0]]),
    )
    report = word_plausibility(result, [AlignedInterval(0.0, 0.5, "hello")])
    (word,) = report.utterances[0].words
    assert word.significant_in_span == 1.0 and word.significant_share_in_span == pytest.approx(6 / 14)
    assert report.significant_in_span == 1.0
    assert math.isnan(
        word_plausibility(result, [AlignedInterval(0.0, 0.5, "hello")], significance=None).significant_in_span
    )
