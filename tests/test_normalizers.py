"""Normalisers: hand-computed z-scores and joint min-max scaling, degenerate rows, errors."""

import math

import pytest
import torch

from captum_spes import normalize_reference, paired_min_max, single_mean_std
from captum_spes.normalizers import NORMALIZERS

LOWER = torch.tensor([[True, False, False], [True, True, False], [True, True, True]])


def test_single_mean_std_by_hand():
    spec = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # mean 2.5, sample std sqrt(5 / 3)
    out, tok = single_mean_std(spec)
    std = math.sqrt(5 / 3)
    expected = torch.tensor([[[-1.5, -0.5], [0.5, 1.5]]]) / std
    torch.testing.assert_close(out, expected)
    assert tok is None and out.dtype == torch.float32


def test_single_mean_std_token_map_uses_valid_entries_only():
    spec = torch.rand(3, 2, 2)
    token = torch.tensor([[5.0, 99.0, 99.0], [1.0, 3.0, 99.0], [2.0, 4.0, 9.0]])
    _, tok = single_mean_std(spec, token, LOWER)
    # row 0: one valid entry -> 0; row 1: (1, 3) -> -+1/sqrt(2); row 2: (2, 4, 9): mean 5, std sqrt(13)
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.0],
            [-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0],
            [-3 / math.sqrt(13), -1 / math.sqrt(13), 4 / math.sqrt(13)],
        ]
    )
    torch.testing.assert_close(tok, expected)


def test_single_mean_std_degenerate_rows_are_zero_not_nan():
    spec = torch.stack([torch.full((2, 3), 7.0), torch.rand(2, 3)])
    token = torch.tensor([[4.0, 4.0, 4.0], [1.0, 2.0, 3.0]])
    out, tok = single_mean_std(spec, token)
    assert torch.equal(out[0], torch.zeros(2, 3))
    assert torch.equal(tok[0], torch.zeros(3))
    single, _ = single_mean_std(torch.tensor([[[3.0]]]))
    assert torch.equal(single, torch.zeros(1, 1, 1))
    assert torch.isfinite(out).all() and torch.isfinite(tok).all()


def test_paired_min_max_joint_scaling_by_hand():
    spec = torch.tensor([[[0.0, 2.0]], [[1.0, 3.0]]])  # (2 tokens, 1 mel, 2 frames)
    token = torch.tensor([[-2.0, 100.0], [6.0, 7.0]])
    valid = torch.tensor([[True, False], [True, True]])
    out, tok = paired_min_max(spec, token, valid)
    # row 0: range [-2, 2] over spec and valid tokens (100 is invalid); row 1: [1, 7]
    torch.testing.assert_close(out, torch.tensor([[[0.5, 1.0]], [[0.0, 2 / 6]]]))
    torch.testing.assert_close(tok, torch.tensor([[0.0, 0.0], [5 / 6, 1.0]]))
    alone, none = paired_min_max(spec)
    torch.testing.assert_close(alone, torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]))
    assert none is None


def test_paired_min_max_zero_range_is_zero():
    out, tok = paired_min_max(torch.full((1, 2, 2), 3.0), torch.full((1, 2), 3.0))
    assert torch.equal(out, torch.zeros(1, 2, 2)) and torch.equal(tok, torch.zeros(1, 2))


def test_normalize_reference_is_single_then_paired_and_idempotent():
    generator = torch.Generator().manual_seed(0)
    spec = torch.rand(3, 4, 5, generator=generator) * 10
    token = torch.rand(3, 3, generator=generator) * LOWER
    once = normalize_reference(spec, token, LOWER)
    expected = paired_min_max(*single_mean_std(spec, token, LOWER), LOWER)
    torch.testing.assert_close(once[0], expected[0])
    torch.testing.assert_close(once[1], expected[1])
    twice = normalize_reference(*once, LOWER)
    torch.testing.assert_close(twice[0], once[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(twice[1], once[1], rtol=1e-5, atol=1e-6)
    assert set(NORMALIZERS) == {"single_mean_std", "paired_min_max", "reference"}


@pytest.mark.parametrize("normalizer", [single_mean_std, paired_min_max, normalize_reference])
def test_shape_errors(normalizer):
    with pytest.raises(ValueError, match="spectrogram_attr"):
        normalizer(torch.rand(5))
    with pytest.raises(ValueError, match="token_attr"):
        normalizer(torch.rand(3, 2, 2), torch.rand(2, 3))
    with pytest.raises(ValueError, match="token_valid"):
        normalizer(torch.rand(3, 2, 2), torch.rand(3, 3), torch.ones(3, 2, dtype=torch.bool))
