"""Stability statistics between two explanations, against hand-computed answers."""

import pytest
import torch
from scipy.stats import spearmanr

from captum_spes import SPESResult
from captum_spes.metrics import rank_correlation, seed_agreement, top_overlap, top_units
from captum_spes.metrics.stability import top_membership


def test_top_membership_shares_ties_by_hand():
    # k = 2 of [3, 1, 1, 1]: 3 is in; one place left for three tied ones: 1/3 each.
    out = top_membership(torch.tensor([[3.0, 1.0, 1.0, 1.0]]), 2)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64))
    assert out.sum() == pytest.approx(2.0)


def test_top_overlap_by_hand():
    a = torch.tensor([[4.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[4.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    # top 20 % = 2 elements; they share element 0: overlap 1/2.
    assert top_overlap(a, b, 20.0).item() == pytest.approx(0.5)
    assert top_overlap(a, a, 20.0).item() == pytest.approx(1.0)
    # Constant maps have no top: random tie-breaking gives chance, k / n.
    flat = torch.zeros(1, 10)
    assert top_overlap(flat, flat, 20.0).item() == pytest.approx(0.2)


def test_coarse_maps_do_not_gain_from_tie_order():
    # Two maps with one 4-element segment on top that they place differently by two elements.
    a = torch.tensor([[1.0] * 4 + [0.0] * 16])
    b = torch.tensor([[0.0] * 2 + [1.0] * 4 + [0.0] * 14])
    # top 5 % of 20 = 1 element: each map draws it from its 4 tied ones; they share 2 of them:
    # expected overlap = 2 * (1/4 * 1/4) = 0.125 (an order by index would say 0: element 0 vs 2).
    assert top_overlap(a, b, 5.0).item() == pytest.approx(0.125)


def test_rank_correlation_equals_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (3, 12), generator=generator).double()
    b = torch.randint(0, 4, (3, 12), generator=generator).double()
    for row in range(3):
        assert rank_correlation(a[row : row + 1], b[row : row + 1]).item() == pytest.approx(
            spearmanr(a[row], b[row])[0]
        )
    assert rank_correlation(torch.zeros(1, 5), a[:1, :5]).item() == 0.0


def _result(maps, units):
    k = maps.shape[0]
    return SPESResult(
        spectrogram_attr=maps,
        token_attr=None,
        target_ids=list(range(k)),
        tokens=[f" t{i}" for i in range(k)],
        decoder_input_ids=[99] + list(range(k - 1)),
        decoder_input_tokens=["<s>"] + [f" t{i}" for i in range(k - 1)],
        num_prompt=1,
        target_log_probs=torch.zeros(k),
        units=units,
        unit_occluded=torch.ones(int(units.max()) + 1, dtype=torch.float64),
        spectrogram_se=torch.zeros(k, int(units.max()) + 1),
        spectrogram_z=torch.zeros(k, int(units.max()) + 1),
    )


def test_top_units_and_seed_agreement_by_hand():
    # 2 x 10 map, units = 5 columns pairs (4 elements each); token 0's top 10 % (2 elements)
    # is unit 0 (value 5): half of unit 0 -> 0.5 units; token 1: units 3 and 4 tie -> 2 of 8 -> 0.5.
    units = (torch.arange(10) // 2)[None, :].expand(2, 10).contiguous()
    maps = torch.zeros(2, 2, 10)
    maps[0][units == 0] = 5.0
    maps[1][(units == 3) | (units == 4)] = 5.0
    result = _result(maps, units)
    torch.testing.assert_close(top_units(result, 10.0), torch.tensor([0.5, 0.5], dtype=torch.float64))
    agreement = seed_agreement(result, result, top_percent=10.0)
    # Even a map against itself overlaps below 1 where its top ends inside a tied unit: token 0
    # draws 2 of its 4 tied elements twice independently (4 * 0.5^2 / 2 = 0.5), token 1 2 of 8
    # (8 * 0.25^2 / 2 = 0.25).
    assert agreement.top_overlap_tokens == pytest.approx((0.5 + 0.25) / 2)
    assert agreement.units == 5.0 and agreement.top_units == pytest.approx(0.5)
    assert agreement.time_spearman_tokens == pytest.approx(1.0)
