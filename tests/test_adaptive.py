"""Adaptive number of masks: split-half reliability and the stopping rule."""
import pytest
import torch
from helpers import ToySpeechModel, toy_features

from captum_spes import SPES, AdaptiveMasks, SpeechSeq2SeqWrapper
from captum_spes._utils.adaptive import split_half_reliability


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


@pytest.mark.parametrize(
    "kwargs, match",
    [({"threshold": 1.0}, "threshold"), ({"round_size": 0}, "round_size"), ({"min_masks": 10, "max_masks": 5}, "exceeds")],
)
def test_adaptive_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveMasks(**kwargs)


def _auto(rule, per_eval=32):
    return SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), n_masks=rule, perturbations_per_eval=per_eval, feature_mask="element"
    )


def test_stops_when_reliable_and_records_why():
    result = _auto(AdaptiveMasks(threshold=0.25, round_size=50, max_masks=2000, min_masks=100))
    info = result.metadata["adaptive"]
    assert info["converged"] and info["reliability"] >= 0.25
    assert info["masks_used"] == result.metadata["n_masks"] == 100  # two rounds, the minimum
    assert result.metadata["forward_passes"] == 1 + 100 + 100  # plus decoupled token passes
    assert [h["masks"] for h in info["history"]] == [100]


def test_hits_the_cap_when_threshold_is_unreachable():
    result = _auto(AdaptiveMasks(threshold=0.999999, round_size=40, max_masks=200, min_masks=40))
    info = result.metadata["adaptive"]
    assert info["masks_used"] == 200 and not info["converged"] and info["rounds"] == 5
    assert [h["masks"] for h in info["history"]] == [80, 120, 160, 200]


def test_adaptive_is_independent_of_batch_size():
    rule = AdaptiveMasks(threshold=0.8, round_size=30, max_masks=300, min_masks=60)
    a, b = _auto(rule, per_eval=7), _auto(rule, per_eval=64)
    assert a.metadata["adaptive"]["masks_used"] == b.metadata["adaptive"]["masks_used"]
    torch.testing.assert_close(a.spectrogram_attr, b.spectrogram_attr, rtol=1e-5, atol=1e-7)


def test_auto_string_and_bad_values():
    spes = SPES(SpeechSeq2SeqWrapper(ToySpeechModel()))
    with pytest.raises(ValueError, match='"auto"'):
        spes.attribute(toy_features(), n_masks="many")
    assert spes._resolve_adaptive("auto") == AdaptiveMasks()
