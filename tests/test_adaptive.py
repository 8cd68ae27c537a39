"""Adaptive number of masks: split-half statistics and the stopping rule."""

import math

import pytest
import torch
from helpers import ToySpeechModel, toy_features

from captum_spes import SPES, AdaptiveMasks, SpeechSeq2SeqWrapper
from captum_spes._utils.adaptive import (
    DEFAULT_THRESHOLDS,
    _top_k_mask,
    split_half_reliability,
    split_half_top_overlap,
    split_half_utterance_overlap,
)


def test_reliability_by_hand():
    a = [torch.tensor([[1.0, 2.0, 3.0]])]
    assert split_half_reliability(a, a) == pytest.approx(1.0)
    assert split_half_reliability(a, [torch.tensor([[3.0, 2.0, 1.0]])]) == -1.0
    assert split_half_reliability(a, [torch.ones(1, 3)]) == 0.0
    # r = 0.5 -> Spearman-Brown 2 * 0.5 / 1.5
    x = torch.tensor([[1.0, 0.0, -1.0, 0.0]])
    y = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    r = float(torch.corrcoef(torch.stack([x[0], y[0]]))[0, 1])
    assert split_half_reliability([x], [y]) == pytest.approx(2 * r / (1 + r))
    # Per token, not pooled: two tokens at different scales with unrelated patterns are
    # unreliable although pooling them would correlate strongly.
    first = [torch.tensor([[1.0, 0.0, 1.0, 0.0], [10.0, 11.0, 10.0, 11.0]])]
    second = [torch.tensor([[0.0, 1.0, 0.0, 1.0], [11.0, 10.0, 11.0, 10.0]])]
    assert split_half_reliability(first, second) == -1.0
    pooled = torch.corrcoef(torch.stack([first[0].flatten(), second[0].flatten()]))[0, 1]
    assert pooled > 0.9


def _ramp(n=20):
    return torch.arange(n, dtype=torch.float32)


def test_top_overlap_identical_and_disjoint():
    a = _ramp().reshape(1, 4, 5)  # 20 elements, 10 % -> k = 2
    assert split_half_top_overlap(a, a.clone(), 10.0) == 1.0
    assert split_half_top_overlap(a, -a, 10.0) == 0.0  # tops {19, 18} vs {0, 1}
    assert split_half_top_overlap(a, a, 100.0) == 1.0  # the whole map is the top


def test_top_overlap_half():
    a = _ramp()[None]
    b = a.clone()
    b[0, 0] = 100.0  # b's top 2 = {0, 19}, a's = {18, 19}
    assert split_half_top_overlap(a, b, 10.0) == 0.5


def test_top_overlap_k_is_rounded_half_up():
    a = _ramp(10)[None]
    b = a.clone()
    b[0, 7] = -1.0  # top 3: a {7, 8, 9}, b {6, 8, 9}; top 2 would agree
    assert split_half_top_overlap(a, b, 25.0) == pytest.approx(2 / 3)  # k = round(2.5) = 3
    assert split_half_top_overlap(a, b, 20.0) == 1.0  # k = 2
    assert split_half_top_overlap(a, b, 0.1) == 1.0  # k = max(1, 0) = 1


def test_top_overlap_valid_changes_the_top():
    a = _ramp(10)[None]
    b = a.clone()
    b[0, 8], b[0, 9] = 9.0, 8.0  # k = 1: a's top is 9, b's is 8
    assert split_half_top_overlap(a, b, 10.0) == 0.0
    valid = torch.ones(10, dtype=torch.bool)
    valid[8:] = False  # 8 valid elements, k = round(0.8) = 1: both tops are element 7
    assert split_half_top_overlap(a, b, 10.0, valid=valid) == 1.0
    maps = torch.cat([a, b]).reshape(2, 2, 5)
    assert split_half_top_overlap(maps[:1], maps[1:], 10.0, valid=valid.reshape(2, 5)) == 1.0


def test_top_overlap_constant_token_and_mean_over_tokens():
    a = torch.stack([_ramp(), _ramp()])
    b = a.clone()
    b[1, 0] = 100.0  # token 1 overlaps 1/2 (k = 2)
    assert split_half_top_overlap(a, b, 10.0) == pytest.approx((1.0 + 0.5) / 2)
    constant = a.clone()
    constant[1] = 3.0  # token 1 constant in the second half -> 0
    assert split_half_top_overlap(a, constant, 10.0) == pytest.approx((1.0 + 0.0) / 2)
    assert split_half_top_overlap(constant, a, 10.0) == pytest.approx(0.5)
    assert split_half_top_overlap(torch.zeros(2, 4, 5), torch.zeros(2, 4, 5), 10.0) == 0.0


def test_top_overlap_ties_go_to_the_lowest_index():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0, 0.0]])
    expected = torch.tensor([[False, True, True, False, True], [True, True, True, False, False]])
    assert torch.equal(_top_k_mask(scores, 3), expected)
    # Equal maps with ties agree completely.
    tied = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert split_half_top_overlap(tied, tied.clone(), 25.0) == 1.0


def test_top_overlap_bad_arguments():
    a = torch.zeros(2, 4, 5)
    with pytest.raises(ValueError, match="same shape"):
        split_half_top_overlap(a, torch.zeros(2, 20), 5.0)
    with pytest.raises(ValueError, match="top_percent"):
        split_half_top_overlap(a, a, 0.0)
    with pytest.raises(ValueError, match="valid"):
        split_half_top_overlap(a, a, 5.0, valid=torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid element"):
        split_half_top_overlap(a, a, 5.0, valid=torch.zeros(4, 5, dtype=torch.bool))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": 1.0, "criterion": "reliability"}, "threshold must be in \\(0, 1\\) for criterion 'reliability'"),
        ({"threshold": 0.0}, "threshold must be in \\(0, 1\\] for criterion 'utterance_top_overlap'"),
        ({"threshold": 0.0, "criterion": "top_overlap"}, "threshold must be in \\(0, 1\\] for criterion 'top_overlap'"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": True}, "threshold"),
        (
            {"criterion": "x"},
            "criterion must be one of \\['reliability', 'significant_top', 'top_overlap', 'utterance_top_overlap'\\]",
        ),
        ({"criterion": None}, "criterion must be"),
        ({"top_percent": 0}, "top_percent must be a percentage in \\(0, 100\\]"),
        ({"top_percent": 100.5}, "top_percent"),
        ({"top_percent": True}, "top_percent"),
        ({"round_size": 0}, "round_size"),
        ({"min_masks": 10, "max_masks": 5}, "exceeds"),
    ],
)
def test_adaptive_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveMasks(**kwargs)


def test_default_criterion_and_thresholds():
    rule = AdaptiveMasks()
    assert rule.criterion == "utterance_top_overlap" and rule.threshold is None and rule.top_percent == 5.0
    assert rule.resolved_threshold == DEFAULT_THRESHOLDS["utterance_top_overlap"]
    assert 0.0 < rule.resolved_threshold < 1.0
    assert AdaptiveMasks(criterion="top_overlap").resolved_threshold == DEFAULT_THRESHOLDS["top_overlap"]
    assert AdaptiveMasks(criterion="reliability").resolved_threshold == DEFAULT_THRESHOLDS["reliability"] == 0.95
    assert AdaptiveMasks(threshold=1.0).resolved_threshold == 1.0  # reachable for the overlap
    config = rule.config()
    assert config["criterion"] == "split_half_utterance_top_overlap" and config["stop_on"] == "utterance_top_overlap"
    assert config["threshold"] == rule.resolved_threshold and config["threshold_default"] is True
    assert {"top_percent", "round_size", "max_masks", "min_masks"} <= set(config)
    config = AdaptiveMasks(criterion="reliability", threshold=0.9).config()
    assert config["criterion"] == "split_half_reliability_spearman_brown"
    assert config["threshold"] == 0.9 and config["threshold_default"] is False


def _auto(rule, per_eval=32):
    return SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), n_masks=rule, perturbations_per_eval=per_eval, feature_mask="element"
    )


def test_stops_when_reliable_and_records_why():
    result = _auto(AdaptiveMasks(criterion="reliability", threshold=0.25, round_size=50, max_masks=2000, min_masks=100))
    info = result.metadata["adaptive"]
    assert info["converged"] and info["reliability"] >= 0.25 and info["statistic"] == info["reliability"]
    assert info["masks_used"] == result.metadata["n_masks"] == 100  # two rounds, the minimum
    assert result.metadata["forward_passes"] == 1 + 100 + 100  # plus decoupled token passes
    assert [h["masks"] for h in info["history"]] == [100]


def test_stops_when_tops_agree_and_records_every_statistic():
    rule = AdaptiveMasks(criterion="top_overlap", threshold=0.4, round_size=50, max_masks=2000, min_masks=100)
    result = _auto(rule)
    info = result.metadata["adaptive"]
    assert info["criterion"] == "split_half_top_overlap" and info["threshold"] == 0.4
    assert info["converged"] and info["masks_used"] < rule.max_masks
    assert info["statistic"] == info["top_overlap"] >= 0.4
    assert info["masks_used"] == result.metadata["n_masks"] == info["history"][-1]["masks"]
    assert info["rounds"] == info["masks_used"] // 50
    for entry in info["history"]:
        assert set(entry) == {"masks", "reliability", "top_overlap", "utterance_top_overlap", "significant_top"}
        assert 0.0 <= entry["utterance_top_overlap"] <= 1.0
        assert 0.0 <= entry["top_overlap"] <= 1.0 and math.isfinite(entry["reliability"])
    assert all(h["top_overlap"] < 0.4 for h in info["history"][:-1])  # it stopped at the first chance
    assert info["reliability"] == info["history"][-1]["reliability"]


@pytest.mark.parametrize("criterion", ["reliability", "top_overlap", "utterance_top_overlap"])
def test_hits_the_cap_when_threshold_is_unreachable(criterion):
    result = _auto(AdaptiveMasks(criterion=criterion, threshold=0.999999, round_size=40, max_masks=200, min_masks=40))
    info = result.metadata["adaptive"]
    assert info["masks_used"] == 200 and not info["converged"] and info["rounds"] == 5
    assert [h["masks"] for h in info["history"]] == [80, 120, 160, 200]
    assert info["statistic"] == info[criterion] < 0.999999


@pytest.mark.parametrize("criterion, threshold", [("reliability", 0.8), ("top_overlap", 0.4)])
def test_adaptive_is_independent_of_batch_size(criterion, threshold):
    rule = AdaptiveMasks(criterion=criterion, threshold=threshold, round_size=30, max_masks=300, min_masks=60)
    a, b = _auto(rule, per_eval=7), _auto(rule, per_eval=64)
    history_a, history_b = a.metadata["adaptive"]["history"], b.metadata["adaptive"]["history"]
    assert a.metadata["adaptive"]["masks_used"] == b.metadata["adaptive"]["masks_used"]
    assert [h["masks"] for h in history_a] == [h["masks"] for h in history_b]
    for x, y in zip(history_a, history_b):
        assert x["top_overlap"] == y["top_overlap"]
        assert x["reliability"] == pytest.approx(y["reliability"], abs=1e-9)
    torch.testing.assert_close(a.spectrogram_attr, b.spectrogram_attr, rtol=1e-5, atol=1e-7)


def test_auto_string_and_bad_values():
    spes = SPES(SpeechSeq2SeqWrapper(ToySpeechModel()))
    with pytest.raises(ValueError, match='"auto"'):
        spes.attribute(toy_features(), n_masks="many")
    result = spes.attribute(toy_features(), n_masks="auto", token_p=None)
    assert result.metadata["adaptive"]["stop_on"] == "utterance_top_overlap"
    assert result.metadata["adaptive"]["criterion"] == AdaptiveMasks().config()["criterion"]


def test_utterance_overlap_by_hand():
    # Two tokens whose tops swap between the halves: every token's top disagrees, but the
    # utterance map (normalised per token, then averaged) is the same in both halves.
    first = torch.tensor([[[4.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 4.0]]])
    second = torch.tensor([[[0.0, 0.0, 0.0, 4.0]], [[4.0, 0.0, 0.0, 0.0]]])
    assert split_half_top_overlap(first, second, 25.0) == 0.0
    assert split_half_utterance_overlap(first, second, 50.0) == 1.0
    # Normalisation puts tokens on one scale: a loud token does not own the utterance top.
    loud = torch.tensor([[[400.0, 0.0, 0.0, 0.0]], [[0.0, 3.0, 2.0, 0.0]]])
    quiet = torch.tensor([[[4.0, 0.0, 0.0, 0.0]], [[0.0, 300.0, 200.0, 0.0]]])
    assert split_half_utterance_overlap(loud, quiet, 50.0) == 1.0
    # first's utterance map is [0.5, 0, 0, 0.5] (top 25 %: element 0, ties go to the lowest
    # index); a rising ramp in both tokens has its top at element 3.
    ramp = torch.tensor([0.0, 1.0, 2.0, 3.0]).expand(2, 1, 4)
    assert split_half_utterance_overlap(first, ramp, 25.0) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        split_half_utterance_overlap(first, second[:1], 50.0)


def test_stops_on_the_utterance_overlap():
    # The toy's three regions hold 35 of its 160 elements, all equally relevant: a top of
    # 25 % (40 elements) contains them, a smaller top would be a draw among equals.
    rule = AdaptiveMasks(threshold=0.8, top_percent=25.0, round_size=50, max_masks=2000, min_masks=100)
    info = _auto(rule).metadata["adaptive"]
    assert info["criterion"] == "split_half_utterance_top_overlap" and info["converged"]
    assert info["masks_used"] < rule.max_masks
    assert info["statistic"] == info["utterance_top_overlap"] >= 0.8
    assert all(h["utterance_top_overlap"] < 0.8 for h in info["history"][:-1])


def test_significant_top_share_by_hand():
    from captum_spes._core.estimators import Estimate
    from captum_spes._utils.adaptive import significant_top_share

    # One token, 10 elements in 5 units of 2; top 20 % = 2 elements = unit 0 (value 5).
    units = torch.arange(10) // 2
    attribution = torch.zeros(1, 10)
    attribution[0, :2] = 5.0
    estimate = Estimate(
        attribution=attribution,
        units=units,
        standard_error=torch.ones(1, 5),
        z=torch.tensor([[8.0, 0.0, 0.0, 0.0, 0.0]]),
        occluded=torch.ones(5, dtype=torch.float64),
    )
    assert significant_top_share(estimate, 20.0) == pytest.approx(1.0)
    estimate.z = torch.tensor([[0.0, 8.0, 0.0, 0.0, 0.0]])  # significant, but not the top
    assert significant_top_share(estimate, 20.0) == pytest.approx(0.0)


def test_stops_when_the_top_is_significant():
    # The end token depends on no element, so its top is noise: 3 of 4 tokens can be separated.
    rule = AdaptiveMasks(criterion="significant_top", threshold=0.7, round_size=64, min_masks=128, max_masks=2000)
    result = SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), n_masks=rule, token_p=None, feature_mask="element"
    )
    info = result.metadata["adaptive"]
    assert info["stop_on"] == "significant_top" and info["converged"]
    assert info["masks_used"] < 2000 and info["statistic"] >= 0.7
    assert all("significant_top" in step for step in info["history"])
