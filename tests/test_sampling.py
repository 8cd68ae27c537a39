"""Mask sampling: exact level split, occlusion rule and rate, batching invariance, seeds."""

import numpy as np
import pytest
import torch

from captum_spes._utils.sampling import MaskSampler, split_masks_across_levels


def _draw_all(sampler, batch_size):
    """Every mask of ``sampler``, in order: per-mask (level, occluded segment flags) and token flags."""
    spectrogram = []
    tokens = []
    expected_start = 0
    for batch in sampler.batches(batch_size):
        assert batch.start == expected_start and 1 <= batch.size <= batch_size
        expected_start += batch.size
        per_row = [None] * batch.size
        for level, rows, occluded in batch.level_rows:
            assert occluded.dtype == torch.bool and occluded.shape == (len(rows), sampler.segments_per_level[level])
            for row, flags in zip(rows.tolist(), occluded):
                assert per_row[row] is None, "a mask row belongs to two levels"
                per_row[row] = (level, flags)
        assert all(entry is not None for entry in per_row) or not sampler.segments_per_level
        spectrogram.extend(per_row)
        if batch.token_occluded is not None:
            assert batch.token_occluded.shape == (batch.size, sampler.num_tokens)
            tokens.append(batch.token_occluded)
    assert expected_start == sampler.n_masks
    return spectrogram, (torch.cat(tokens) if tokens else None)


def _sampler(seed=0, **kwargs):
    args = dict(
        segments_per_level=[13, 29],
        masks_per_level=[50, 53],
        p=0.5,
        token_p=0.5,
        num_tokens=6,
        seed=seed,
    )
    args.update(kwargs)
    return MaskSampler(**args)


# ----- level split -------------------------------------------------------------------------


def test_split_masks_across_levels_is_exact():
    assert split_masks_across_levels(20000, 3) == [6667, 6667, 6666]
    assert split_masks_across_levels(6, 3) == [2, 2, 2]
    assert split_masks_across_levels(7, 1) == [7]
    assert split_masks_across_levels(3, 3) == [1, 1, 1]
    assert sum(split_masks_across_levels(20001, 4)) == 20001


def test_split_masks_across_levels_errors():
    with pytest.raises(ValueError, match="at least one mask level"):
        split_masks_across_levels(10, 0)
    with pytest.raises(ValueError, match="smaller than the number of mask levels"):
        split_masks_across_levels(2, 3)


# ----- occlusion rule and rate -------------------------------------------------------------


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_empirical_occlusion_rate_matches_p(p):
    n_masks, n_segments = 200, 500
    sampler = MaskSampler([n_segments], [n_masks], p, p, num_tokens=500, seed=3)
    spectrogram, tokens = _draw_all(sampler, 64)
    flags = torch.stack([f for _, f in spectrogram]).double()
    n = flags.numel()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5  # five binomial standard deviations
    assert abs(flags.mean().item() - p) < tolerance
    assert abs(tokens.double().mean().item() - p) < tolerance


def test_occluded_iff_uniform_draw_below_p():
    # Each level has its own PCG64 stream seeded from (seed, (0, level)); tokens use (seed, (1,)).
    sampler = _sampler(seed=11, p=0.3, token_p=0.7)
    spectrogram, tokens = _draw_all(sampler, 16)
    for level, (start, count, segments) in enumerate([(0, 50, 13), (50, 53, 29)]):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(11, spawn_key=(0, level))))
        expected = torch.from_numpy(rng.random((count, segments)) < 0.3)
        got = torch.stack([spectrogram[start + i][1] for i in range(count)])
        assert all(spectrogram[start + i][0] == level for i in range(count))
        assert torch.equal(got, expected)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(11, spawn_key=(1,))))
    assert torch.equal(tokens, torch.from_numpy(rng.random((103, 6)) < 0.7))


def test_masks_use_levels_in_consecutive_blocks():
    spectrogram, _ = _draw_all(_sampler(), 7)
    assert [level for level, _ in spectrogram] == [0] * 50 + [1] * 53


# ----- invariance --------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [7, 64, 103, 500])
def test_masks_do_not_depend_on_batch_size(batch_size):
    reference_spec, reference_tok = _draw_all(_sampler(), 1)
    spectrogram, tokens = _draw_all(_sampler(), batch_size)
    assert len(spectrogram) == len(reference_spec) == 103
    for (level, flags), (ref_level, ref_flags) in zip(spectrogram, reference_spec):
        assert level == ref_level and torch.equal(flags, ref_flags)
    assert torch.equal(tokens, reference_tok)


def test_token_only_sampler():
    sampler = MaskSampler([], [20], None, 0.5, num_tokens=4, seed=0)
    spectrogram, tokens = _draw_all(sampler, 8)
    assert spectrogram == [None] * 20
    assert tokens.shape == (20, 4)


def test_no_token_flags_without_token_p():
    _, tokens = _draw_all(_sampler(token_p=None), 10)
    assert tokens is None


def test_token_maskable_is_respected():
    maskable = torch.tensor([False, True, True, False, True, True])
    _, tokens = _draw_all(_sampler(token_maskable=maskable), 32)
    assert not tokens[:, ~maskable].any()
    rate = tokens[:, maskable].double().mean().item()
    assert 0.4 < rate < 0.6
    # The maskable columns are exactly the unrestricted draws.
    _, unrestricted = _draw_all(_sampler(), 32)
    assert torch.equal(tokens[:, maskable], unrestricted[:, maskable])


def test_different_seeds_give_different_masks():
    first, first_tok = _draw_all(_sampler(seed=0), 16)
    again, again_tok = _draw_all(_sampler(seed=0), 16)
    other, other_tok = _draw_all(_sampler(seed=1), 16)
    stack = lambda masks, level: torch.stack([f for lv, f in masks if lv == level])  # noqa: E731
    for level in (0, 1):
        assert torch.equal(stack(first, level), stack(again, level))
        assert not torch.equal(stack(first, level), stack(other, level))
    assert torch.equal(first_tok, again_tok)
    assert not torch.equal(first_tok, other_tok)


def test_levels_and_tokens_use_independent_streams():
    # Same segment count on both levels: they must still differ (separate streams).
    spectrogram, tokens = _draw_all(_sampler(segments_per_level=[6, 6], masks_per_level=[40, 40]), 16)
    level0 = torch.stack([f for lv, f in spectrogram if lv == 0])
    level1 = torch.stack([f for lv, f in spectrogram if lv == 1])
    assert not torch.equal(level0, level1)
    assert not torch.equal(level0, tokens[:40])
