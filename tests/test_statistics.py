"""p-values and multiple-comparison corrections, against hand-computed answers."""

import math

import pytest
import torch

from captum_spes.statistics import p_values, reject, significant

# Ten p-values, sorted: with alpha = 0.05 and m = 10,
#   BH thresholds k * 0.005:     0.005 0.010 0.015 0.020 0.025 0.030 ...
#   Holm thresholds 0.05/(m-k+1): 0.005 0.00556 0.00625 0.00714 ...
#   Bonferroni threshold 0.005.
P = torch.tensor([[0.001, 0.008, 0.012, 0.04, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99]], dtype=torch.float64)


def test_benjamini_hochberg_by_hand():
    # p_(3) = 0.012 <= 0.015 is the largest k passing: reject the three smallest, even though
    # p_(2) = 0.008 exceeds its Bonferroni bound.
    assert reject(P, 0.05, "fdr_bh")[0].tolist() == [True, True, True] + [False] * 7


def test_benjamini_hochberg_steps_up():
    # m = 4, thresholds 0.0125 0.025 0.0375 0.05: p_(2) = 0.03 fails its own bound, but
    # p_(4) = 0.032 <= 0.05, so the step-up procedure rejects all four (a step-down one would
    # stop after the first).
    p = torch.tensor([[0.032, 0.001, 0.031, 0.03]], dtype=torch.float64)
    assert reject(p, 0.05, "fdr_bh")[0].tolist() == [True] * 4


def test_holm_by_hand():
    # 0.001 <= 0.005 passes; 0.008 > 0.05 / 9 = 0.00556 stops the procedure.
    assert reject(P, 0.05, "holm")[0].tolist() == [True] + [False] * 9


def test_bonferroni_and_uncorrected_by_hand():
    assert reject(P, 0.05, "bonferroni")[0].tolist() == [True] + [False] * 9
    assert reject(P, 0.05, None)[0].tolist() == [True, True, True, True] + [False] * 6


def test_order_does_not_matter_and_rows_are_independent():
    order = torch.tensor([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    shuffled = P[:, order]
    expected = reject(P, 0.05, "fdr_bh")[:, order]
    both = torch.cat([shuffled, torch.full_like(shuffled, 0.5)])
    out = reject(both, 0.05, "fdr_bh")
    assert torch.equal(out[0], expected[0]) and not out[1].any()
    assert torch.equal(reject(shuffled, 0.05, "holm"), reject(P, 0.05, "holm")[:, order])


def test_nan_entries_are_not_tests():
    # With two NaNs, m = 8 for BH: 0.001 <= 0.00625, 0.008 <= 0.0125, 0.012 <= 0.01875,
    # 0.04 > 0.025: three rejections, and the NaNs never.
    p = torch.cat([P[:, :8], torch.full((1, 2), float("nan"), dtype=torch.float64)], dim=1)
    out = reject(p, 0.05, "fdr_bh")
    assert out[0].tolist() == [True, True, True] + [False] * 7
    # Bonferroni with m = 8: 0.008 > 0.05 / 8 = 0.00625.
    assert reject(p, 0.05, "bonferroni")[0].tolist() == [True] + [False] * 9


def test_p_values_by_hand():
    z = torch.tensor([0.0, 1.6448536269514722, -1.959963984540054, float("nan")])
    one = p_values(z, "greater")
    assert one[0] == pytest.approx(0.5) and one[1] == pytest.approx(0.05) and one[2] == pytest.approx(0.975)
    assert math.isnan(one[3])
    two = p_values(z, "two-sided")
    assert two[1] == pytest.approx(0.1) and two[2] == pytest.approx(0.05)


def test_significant_is_one_sided_by_default():
    z = torch.tensor([[5.0, -5.0, 0.1]])
    assert significant(z)[0].tolist() == [True, False, False]
    assert significant(z, tail="two-sided")[0].tolist() == [True, True, False]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 0.0}, "alpha must be a level strictly between 0 and 1"),
        ({"alpha": True}, "alpha must be a level"),
        ({"correction": "fdr"}, "correction must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reject(P, **kwargs)
    with pytest.raises(ValueError, match="tail must be one of"):
        p_values(P, "less")
    with pytest.raises(ValueError, match="rows, tests"):
        reject(P[0])
