"""Estimators: the streaming statistics equal naive per-mask computations, by hand and end to end."""

import math

import pytest
import torch
from helpers import REGIONS, ToySpeechModel, toy_features

from captum_spes import SPES, ReferenceEstimator, SLICMasks, SpeechSeq2SeqWrapper, kl_divergence
from captum_spes._core.estimators import mean_and_variance, register_estimator, resolve_estimator, units_of, welch_z
from captum_spes._utils.sampling import MaskSampler, split_masks_across_levels

N_MELS, N_FRAMES, TARGETS = 5, 7, 3


def _naive(labels, mask_levels, mask_flags, scores):
    """Per element, with every mask's full (n_mels, T) occlusion: the mean impact over the
    occluding masks, its standard error and Welch's z of occluded minus kept."""
    n_el = labels[0].numel()
    occ = torch.stack([flags[labels[level]].reshape(-1) for level, flags in zip(mask_levels, mask_flags)]).double()
    s = scores.double()  # (N, K)
    mean = torch.zeros(TARGETS, n_el, dtype=torch.float64)
    se = torch.full((TARGETS, n_el), float("nan"), dtype=torch.float64)
    z = torch.full((TARGETS, n_el), float("nan"), dtype=torch.float64)
    for e in range(n_el):
        o = occ[:, e].bool()
        if o.any():
            mean[:, e] = s[o].mean(0)
        if o.sum() > 1 and (~o).sum() > 1:
            a, b = s[o], s[~o]
            se[:, e] = a.std(0) / math.sqrt(len(a))
            z[:, e] = (a.mean(0) - b.mean(0)) / (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    return mean.reshape(TARGETS, *labels[0].shape), se, z, occ.sum(0)


def _random_problem(seed, segments=(4, 9), masks=(11, 14)):
    generator = torch.Generator().manual_seed(seed)
    labels = [torch.randint(0, n, (N_MELS, N_FRAMES), generator=generator) for n in segments]
    mask_levels = [level for level, m in enumerate(masks) for _ in range(m)]
    mask_flags = [torch.rand(segments[level], generator=generator) < 0.5 for level in mask_levels]
    scores = torch.rand(len(mask_levels), TARGETS, generator=generator, dtype=torch.float64) * 3
    return list(segments), labels, mask_levels, mask_flags, scores


def _stream(segments, labels, mask_levels, mask_flags, scores, order, batch_size):
    estimator = ReferenceEstimator().bind(TARGETS, segments, "cpu")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for level in range(len(segments)):
            rows = [i for i in chunk if mask_levels[i] == level]
            if rows:
                estimator.add(level, scores[rows].float(), torch.stack([mask_flags[i] for i in rows]))
    return estimator.finalize(labels)


def _per_element(estimate, values):
    return values[:, estimate.units.reshape(-1)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reference_estimator_equals_naive_for_any_batching(seed):
    segments, labels, mask_levels, mask_flags, scores = _random_problem(seed)
    mean, se, z, count = _naive(labels, mask_levels, mask_flags, scores.float())
    orders = [list(range(len(mask_levels)))]
    orders.append(torch.randperm(len(mask_levels), generator=torch.Generator().manual_seed(seed)).tolist())
    for order in orders:
        for batch_size in (1, 4, 25):
            estimate = _stream(segments, labels, mask_levels, mask_flags, scores, order, batch_size)
            assert estimate.attribution.dtype == torch.float32
            assert estimate.attribution.shape == (TARGETS, N_MELS, N_FRAMES)
            torch.testing.assert_close(estimate.attribution.double(), mean, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(
                _per_element(estimate, estimate.standard_error).double(), se, rtol=1e-5, atol=1e-7, equal_nan=True
            )
            torch.testing.assert_close(
                _per_element(estimate, estimate.z).double(), z, rtol=1e-5, atol=1e-6, equal_nan=True
            )
            assert torch.equal(estimate.occluded[estimate.units.reshape(-1)], count)


def test_statistics_by_hand():
    # One segment, four masks: occluded in masks 0, 1, 2 (impacts 1, 2, 3), kept in mask 3 (impact 5)
    # and, for a second segment, occluded in masks 2 and 3.
    estimator = ReferenceEstimator().bind(1, [2], "cpu")
    flags = torch.tensor([[True, False], [True, False], [True, True], [False, True]])
    estimator.add(0, torch.tensor([[1.0], [2.0], [3.0], [5.0]]), flags)
    estimate = estimator.finalize([torch.tensor([[0, 1]])])
    # segment 0: mean 2, sample sd 1, se 1/sqrt(3); the kept group has one mask: no z.
    assert estimate.attribution[0, 0, 0].item() == pytest.approx(2.0)
    assert estimate.standard_error[0, 0].item() == pytest.approx(1 / math.sqrt(3))
    assert math.isnan(estimate.z[0, 0].item())
    # segment 1: occluded {3, 5}: mean 4, sd sqrt(2), se 1; kept {1, 2}: mean 1.5, var 0.5;
    # z = 2.5 / sqrt(2 / 2 + 0.5 / 2)
    assert estimate.attribution[0, 0, 1].item() == pytest.approx(4.0)
    assert estimate.standard_error[0, 1].item() == pytest.approx(1.0)
    assert estimate.z[0, 1].item() == pytest.approx(2.5 / math.sqrt(1.25))


def test_never_occluded_elements_are_zero_with_undefined_statistics():
    labels = [torch.tensor([[0, 0, 1], [1, 1, 1]])]
    estimator = ReferenceEstimator().bind(2, [2], "cpu")
    estimator.add(0, torch.tensor([[1.0, 2.0], [3.0, 6.0]]), torch.tensor([[True, False], [True, False]]))
    estimate = estimator.finalize(labels)
    assert torch.equal(estimate.attribution[0], torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(estimate.attribution[1], torch.tensor([[4.0, 4.0, 0.0], [0.0, 0.0, 0.0]]))
    never = estimate.units[0, 2]
    assert estimate.occluded[never] == 0
    assert torch.isnan(estimate.standard_error[:, never]).all() and torch.isnan(estimate.z[:, never]).all()


def test_two_levels_pool_their_masks_and_define_units():
    # Element 0 is occluded by one level-0 mask (score 1) and one level-1 mask (score 4): mean 2.5.
    labels = [torch.tensor([[0, 1]]), torch.tensor([[0, 0]])]
    estimator = ReferenceEstimator().bind(1, [2, 1], "cpu")
    estimator.add(0, torch.tensor([[1.0]]), torch.tensor([[True, False]]))
    estimator.add(1, torch.tensor([[4.0]]), torch.tensor([[True]]))
    estimate = estimator.finalize(labels)
    assert torch.equal(estimate.attribution, torch.tensor([[[2.5, 4.0]]]))
    assert estimate.num_units == 2 and estimate.units[0, 0] != estimate.units[0, 1]
    assert estimator.masks_seen() == 2


def test_units_of_intersects_levels():
    a = torch.tensor([[0, 0, 1, 1]])
    b = torch.tensor([[0, 1, 1, 1]])
    units, segments = units_of([a, b])
    assert units.shape == a.shape and int(units.max()) + 1 == 3
    assert units[0, 2] == units[0, 3] and len({int(u) for u in units[0, :3]}) == 3
    for u in range(3):
        element = int((units.reshape(-1) == u).nonzero()[0])
        assert segments[0, u] == a.reshape(-1)[element] and segments[1, u] == b.reshape(-1)[element]


def test_merge_equals_one_stream_and_empty_like_is_empty():
    segments, labels, mask_levels, mask_flags, scores = _random_problem(7)
    whole = _stream(segments, labels, mask_levels, mask_flags, scores, list(range(len(mask_levels))), 5)
    first = ReferenceEstimator().bind(TARGETS, segments, "cpu")
    second = first.empty_like()
    for i, (level, flags) in enumerate(zip(mask_levels, mask_flags)):
        (first if i % 2 else second).add(level, scores[i : i + 1].float(), flags[None])
    assert first.empty_like().masks_seen() == 0
    first.merge(second)
    merged = first.finalize(labels)
    torch.testing.assert_close(merged.attribution, whole.attribution)
    torch.testing.assert_close(merged.z, whole.z, equal_nan=True)
    with pytest.raises(ValueError, match="same kind"):
        first.merge(ReferenceEstimator().bind(TARGETS, [3], "cpu"))


def test_helpers_and_registry():
    mean, var = mean_and_variance(torch.tensor([[6.0]]), torch.tensor([[14.0]]), torch.tensor([3.0]))
    assert mean.item() == pytest.approx(2.0) and var.item() == pytest.approx(1.0)  # values 1, 2, 3
    assert welch_z(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(2.0), torch.tensor(0.0), torch.tensor(2.0)) == 0
    assert isinstance(resolve_estimator("reference"), ReferenceEstimator)
    with pytest.raises(ValueError, match="not a registered estimator"):
        resolve_estimator("median")
    with pytest.raises(RuntimeError, match="not bound"):
        ReferenceEstimator().add(0, torch.zeros(1, 1), torch.zeros(1, 1))
    register_estimator("my_reference", ReferenceEstimator)
    result = SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), n_masks=8, token_p=None, estimator="my_reference"
    )
    assert result.metadata["estimator"]["name"] == "reference"


# ----- end to end on a model whose right answer is known ------------------------------------


def _naive_spes(model, features, family, n_masks, seed, baseline_value=None):
    """SPES by hand: one mask at a time, full occlusion tensors, joint token masks."""
    wrapper = SpeechSeq2SeqWrapper(model)
    hypothesis = wrapper.set_hypothesis(features)
    speech = features[0]
    baseline = speech.mean(dim=1, keepdim=True) if baseline_value is None else torch.tensor(baseline_value)
    levels = family.segment(speech)
    labels = [lv.labels for lv in levels]
    num_inputs = len(hypothesis.decoder_input_ids)
    sampler = MaskSampler(
        [lv.num_segments for lv in levels],
        split_masks_across_levels(n_masks, len(levels)),
        0.5,
        0.5,
        num_inputs,
        seed,
        torch.ones(num_inputs, dtype=torch.bool),
    )
    target_ids = torch.tensor(hypothesis.target_ids)
    spec_num = torch.zeros(hypothesis.num_explained, *speech.shape, dtype=torch.float64)
    spec_cnt = torch.zeros(speech.shape, dtype=torch.float64)
    tok_num = torch.zeros(hypothesis.num_explained, num_inputs, dtype=torch.float64)
    tok_cnt = torch.zeros(num_inputs, dtype=torch.float64)
    with torch.no_grad():
        clean = wrapper(features)[0]
        for batch in sampler.batches(1):
            ((level, _, flags),) = batch.level_rows
            occlusion = flags[0][labels[level]]
            perturbed = torch.where(occlusion, baseline, speech)[None]
            score = kl_divergence(clean, wrapper(perturbed, ~batch.token_occluded), target_ids)[0].double()
            spec_num += score[:, None, None] * occlusion.double()
            spec_cnt += occlusion.double()
            tok_num += score[:, None] * batch.token_occluded[0].double()
            tok_cnt += batch.token_occluded[0].double()
    spec = torch.where(spec_cnt > 0, spec_num / spec_cnt.clamp_min(1), torch.zeros_like(spec_num))
    tok = torch.where(tok_cnt > 0, tok_num / tok_cnt.clamp_min(1), torch.zeros_like(tok_num))
    return spec.float(), torch.where(hypothesis.causal_mask(), tok, torch.zeros_like(tok)).float()


class _MaskIgnoringSPES(SPES):
    """A deliberately broken SPES: its perturbation never occludes anything."""

    def _perturb(self, speech, occluded, baseline):
        return speech.expand(occluded.shape[0], *speech.shape).clone()


class _MeanOfKeptEstimator(ReferenceEstimator):
    """A deliberately broken estimator: credits the masks that *kept* each element."""

    def add(self, level, scores, occluded):
        super().add(level, scores, ~occluded.bool())


def _spes(cls=SPES, **kwargs):
    family = SLICMasks(n_segments=(20, 40), dynamic=False, sigma=0.0)
    return cls(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), feature_mask=family, n_masks=40, token_p=0.5, token_masks="joint", seed=3, **kwargs
    )


def test_spes_equals_naive_per_mask_loop_and_a_broken_one_does_not():
    family = SLICMasks(n_segments=(20, 40), dynamic=False, sigma=0.0)
    spec, tok = _naive_spes(ToySpeechModel(), toy_features(), family, n_masks=40, seed=3)
    # The toy's maps are O(1), so an error in perturbation or estimation is visible.
    assert spec.max() > 0.5 and tok.max() > 0.1
    for per_eval in (1, 4, 40):
        result = _spes(perturbations_per_eval=per_eval)
        torch.testing.assert_close(result.spectrogram_attr, spec, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(result.token_attr, tok, rtol=1e-4, atol=1e-6)
    broken = _spes(cls=_MaskIgnoringSPES)
    assert not torch.allclose(broken.spectrogram_attr, spec, rtol=1e-2, atol=1e-3)
    wrong = _spes(estimator=_MeanOfKeptEstimator())
    assert not torch.allclose(wrong.spectrogram_attr, spec, rtol=1e-2, atol=1e-3)


def test_significance_finds_each_tokens_region_and_nothing_else():
    result = SPES(SpeechSeq2SeqWrapper(ToySpeechModel())).attribute(
        toy_features(), feature_mask="element", n_masks=400, token_p=None, seed=1
    )
    significant = result.significance(alpha=0.05)
    for k, (mels, frames) in enumerate(REGIONS):
        inside = torch.zeros(8, 20, dtype=torch.bool)
        inside[mels, frames] = True
        found = significant[k]
        assert found[inside].float().mean() >= 0.8, f"token {k}: its region is not significant"
        assert (found & ~inside).sum() <= 2, f"token {k}: significant elements outside its region"
    # The end token depends on no spectrogram element at all.
    assert significant[3].sum() <= 2
