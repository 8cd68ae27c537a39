"""The streaming SPES estimator equals a naive per-mask computation (spectrogram and tokens)."""

import pytest
import torch
from helpers import tiny_whisper, whisper_features

from captum_spes import SPES, SLICMasks, SpeechSeq2SeqWrapper, kl_divergence
from captum_spes._utils.accumulator import SegmentAccumulator
from captum_spes._utils.sampling import MaskSampler, split_masks_across_levels

N_MELS, N_FRAMES, TARGETS = 5, 7, 3


def _naive(labels, mask_levels, mask_flags, scores):
    """sum_n s[n, k] O_n / sum_n O_n with each mask's full (n_mels, T) occlusion tensor."""
    numerator = torch.zeros(scores.shape[1], *labels[0].shape, dtype=torch.float64)
    count = torch.zeros(labels[0].shape, dtype=torch.float64)
    for level, flags, s in zip(mask_levels, mask_flags, scores):
        occlusion = flags[labels[level]].double()  # O_n, (n_mels, T)
        numerator += s.double()[:, None, None] * occlusion
        count += occlusion
    mean = torch.where(count > 0, numerator / count.clamp_min(1), torch.zeros_like(numerator))
    return mean, count


def _random_problem(seed, segments=(4, 9), masks=(11, 14)):
    generator = torch.Generator().manual_seed(seed)
    labels = [torch.randint(0, n, (N_MELS, N_FRAMES), generator=generator) for n in segments]
    mask_levels = [level for level, m in enumerate(masks) for _ in range(m)]
    mask_flags = [torch.rand(segments[level], generator=generator) < 0.5 for level in mask_levels]
    # One segment of level 1 is never occluded: its elements must get 0 (unless level 0 covers them).
    for level, flags in zip(mask_levels, mask_flags):
        if level == 1:
            flags[0] = False
    scores = torch.rand(len(mask_levels), TARGETS, generator=generator, dtype=torch.float64) * 3
    return list(segments), labels, mask_levels, mask_flags, scores


def _accumulate(segments, labels, mask_levels, mask_flags, scores, order, batch_size):
    """Feed masks to the accumulator in ``order``, ``batch_size`` at a time, grouped per level."""
    accumulator = SegmentAccumulator(TARGETS, segments, torch.device("cpu"))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for level in range(len(segments)):
            rows = [i for i in chunk if mask_levels[i] == level]
            if rows:
                flags = torch.stack([mask_flags[i] for i in rows])
                accumulator.add(level, scores[rows].float(), flags)
    return accumulator.finalize(labels)


def _accumulator_test_assert(seed, batch_sizes=(1, 4, 25), shuffle=True):
    """The streaming estimate equals the naive one for every batch size and mask order."""
    segments, labels, mask_levels, mask_flags, scores = _random_problem(seed)
    expected, expected_count = _naive(labels, mask_levels, mask_flags, scores.float())
    orders = [list(range(len(mask_levels)))]
    if shuffle:
        orders.append(torch.randperm(len(mask_levels), generator=torch.Generator().manual_seed(seed)).tolist())
    for order in orders:
        for batch_size in batch_sizes:
            mean, count = _accumulate(segments, labels, mask_levels, mask_flags, scores, order, batch_size)
            assert mean.dtype == torch.float32 and mean.shape == (TARGETS, N_MELS, N_FRAMES)
            torch.testing.assert_close(mean.double(), expected, rtol=1e-6, atol=1e-7)
            assert torch.equal(count, expected_count)
    return expected, expected_count


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_streaming_estimator_equals_naive(seed):
    _accumulator_test_assert(seed)


def test_never_occluded_elements_are_zero():
    segments = [2]
    labels = [torch.tensor([[0, 0, 1], [1, 1, 1]])]
    accumulator = SegmentAccumulator(2, segments, torch.device("cpu"))
    # Segment 1 is never occluded; segment 0 twice with scores (1, 2) and (3, 6) for the 2 targets.
    accumulator.add(0, torch.tensor([[1.0, 2.0], [3.0, 6.0]]), torch.tensor([[True, False], [True, False]]))
    mean, count = accumulator.finalize(labels)
    assert torch.equal(count, torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(mean[0], torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(mean[1], torch.tensor([[4.0, 4.0, 0.0], [0.0, 0.0, 0.0]]))


def test_two_levels_pool_their_masks_per_element():
    # Element e is occluded by one level-0 mask (score 1) and one level-1 mask (score 4): mean 2.5.
    labels = [torch.tensor([[0, 1]]), torch.tensor([[0, 0]])]
    accumulator = SegmentAccumulator(1, [2, 1], torch.device("cpu"))
    accumulator.add(0, torch.tensor([[1.0]]), torch.tensor([[True, False]]))
    accumulator.add(1, torch.tensor([[4.0]]), torch.tensor([[True]]))
    mean, count = accumulator.finalize(labels)
    assert torch.equal(mean, torch.tensor([[[2.5, 4.0]]]))
    assert torch.equal(count, torch.tensor([[2.0, 1.0]], dtype=torch.float64))
    means = accumulator.segment_means()
    assert torch.equal(means[0], torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert torch.equal(means[1], torch.tensor([[4.0]], dtype=torch.float64))


# ----- end to end: SPES on the tiny Whisper equals a naive per-mask loop ---------------------


def test_spes_equals_naive_per_mask_loop():
    model = tiny_whisper()
    features = whisper_features(num_frames=120)
    family = SLICMasks(n_segments=(12, 30), dynamic=False)
    n_masks, seed, per_eval = 6, 5, 4
    result = SPES(SpeechSeq2SeqWrapper(model)).attribute(
        features,
        feature_mask=family,
        n_masks=n_masks,
        token_p=0.5,
        token_masks="joint",
        seed=seed,
        perturbations_per_eval=per_eval,
    )

    wrapper = SpeechSeq2SeqWrapper(model)
    prompt = result.decoder_input_ids[: result.num_prompt]
    hypothesis = wrapper.set_hypothesis(features, result.target_ids[:-1], prompt_ids=prompt)
    speech = features[0, :, :120]
    baseline = speech.mean(dim=1, keepdim=True)  # default "channel_mean"
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
    spec_num = torch.zeros(hypothesis.num_explained, 80, 120, dtype=torch.float64)
    spec_cnt = torch.zeros(80, 120, dtype=torch.float64)
    tok_num = torch.zeros(hypothesis.num_explained, num_inputs, dtype=torch.float64)
    tok_cnt = torch.zeros(num_inputs, dtype=torch.float64)
    with torch.no_grad():
        clean = wrapper(features)[0]
        for batch in sampler.batches(1):  # one mask at a time
            ((level, _, flags),) = batch.level_rows
            occlusion = flags[0][labels[level]]  # (80, 120)
            perturbed = features.clone()
            perturbed[0, :, :120] = torch.where(occlusion, baseline, speech)
            keep = ~batch.token_occluded
            score = kl_divergence(clean, wrapper(perturbed, keep), target_ids)[0].double()
            spec_num += score[:, None, None] * occlusion.double()
            spec_cnt += occlusion.double()
            tok_num += score[:, None] * batch.token_occluded[0].double()
            tok_cnt += batch.token_occluded[0].double()
    expected_spec = torch.where(spec_cnt > 0, spec_num / spec_cnt.clamp_min(1), torch.zeros_like(spec_num))
    expected_tok = torch.where(tok_cnt > 0, tok_num / tok_cnt.clamp_min(1), torch.zeros_like(tok_num))
    expected_tok = torch.where(hypothesis.causal_mask(), expected_tok, torch.zeros_like(expected_tok))

    assert result.metadata["segments_obtained"] == [lv.num_segments for lv in levels]
    torch.testing.assert_close(result.spectrogram_attr, expected_spec.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.token_attr, expected_tok.float(), rtol=1e-4, atol=1e-6)
    assert result.spectrogram_attr.abs().sum() > 0 and result.token_attr.abs().sum() > 0
