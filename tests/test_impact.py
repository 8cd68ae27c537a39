"""Impact measures: KL divergence numerics, probability drop, registry."""

import pytest
import torch
import torch.nn.functional as F

from captum_spes import IMPACT_MEASURES, kl_divergence, probability_drop, register_impact_measure
from captum_spes.impact import resolve_impact_measure


def _reference_kl(clean_log_probs, perturbed_log_probs, floor=None):
    """KL(P || Q) in float64 over the support of P; ``floor`` clamps log-probabilities first."""
    clean = clean_log_probs.double()
    perturbed = perturbed_log_probs.double()
    if floor is not None:
        clean, perturbed = clean.clamp_min(floor), perturbed.clamp_min(floor)
    probs = clean.exp()
    terms = torch.where(probs[None] > 0, probs[None] * (clean[None] - perturbed), torch.zeros(()).double())
    return terms.sum(-1)


def _random_log_probs(*shape, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator) * scale).log_softmax(-1)


def test_kl_matches_torch_kl_div_and_float64_reference():
    clean = _random_log_probs(4, 50, seed=0)
    perturbed = _random_log_probs(3, 4, 50, seed=1)
    scores = kl_divergence(clean, perturbed, torch.zeros(4, dtype=torch.long))
    assert scores.shape == (3, 4) and scores.dtype == torch.float32
    torch_kl = F.kl_div(perturbed, clean[None].expand_as(perturbed), reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(scores, torch_kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores.double(), _reference_kl(clean, perturbed), rtol=1e-5, atol=1e-6)
    assert (scores > 0).all()


def test_kl_is_zero_for_identical_distributions():
    clean = _random_log_probs(5, 30, seed=2)
    scores = kl_divergence(clean, clean[None].expand(2, 5, 30), torch.zeros(5, dtype=torch.long))
    assert torch.equal(scores, torch.zeros(2, 5))


def test_kl_hand_example():
    # P = (1/2, 1/2, 0), Q = (1/4, 1/4, 1/2): KL = 2 * 1/2 * log 2 = log 2; P's zero adds nothing.
    clean = torch.tensor([[0.5, 0.5, 0.0]]).log()
    perturbed = torch.tensor([[[0.25, 0.25, 0.5]]]).log()
    scores = kl_divergence(clean, perturbed, torch.tensor([0]))
    torch.testing.assert_close(scores, torch.tensor([[torch.log(torch.tensor(2.0)).item()]]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kl_is_finite_in_half_precision_with_extreme_logits(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0, 5.0], [0.0, 0.0, -1e4, 1e4]], dtype=dtype)
    clean = logits.log_softmax(-1)
    perturbed = torch.stack([logits.flip(-1), -logits]).log_softmax(-1)
    scores = kl_divergence(clean, perturbed, torch.zeros(2, dtype=torch.long))
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all() and (scores >= 0).all()
    # The float64 KL of the same half-precision inputs: finite log-probabilities (down to
    # -2e4 here) are used as they are; only -inf is floored.
    torch.testing.assert_close(scores.double(), _reference_kl(clean, perturbed), rtol=1e-3, atol=1e-3)
    assert scores.max() > 1e3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kl_ignores_tokens_the_clean_model_rules_out(dtype):
    # -inf in the clean log-probs (p = 0) contributes 0, even where the perturbed is -inf too.
    logits = torch.tensor([[2.0, 1.0, float("-inf"), 0.5]], dtype=dtype)
    clean = logits.log_softmax(-1)
    assert clean[0, 2] == float("-inf")
    perturbed = torch.tensor([[[1.0, 1.0, float("-inf"), 1.0]], [[0.0, 3.0, 5.0, -1.0]]], dtype=dtype).log_softmax(-1)
    scores = kl_divergence(clean, perturbed, torch.tensor([0]))
    assert torch.isfinite(scores).all()
    support = [0, 1, 3]
    expected = _reference_kl(clean[:, support], perturbed[..., support])
    torch.testing.assert_close(scores.double(), expected, rtol=1e-3, atol=1e-3)


def test_kl_is_finite_when_the_perturbed_model_rules_out_a_likely_token():
    clean = torch.tensor([[0.5, 0.5]]).log()
    perturbed = torch.tensor([[[float("-inf"), 0.0]]])
    scores = kl_divergence(clean, perturbed, torch.tensor([0]))
    assert torch.isfinite(scores).all() and scores.item() > 1000


def test_probability_drop_signs():
    # p_clean(y) = 1/2 for both positions; the perturbed model lowers the first, raises the second.
    clean = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]).log()
    perturbed = torch.tensor([[[0.25, 0.5, 0.25], [0.125, 0.75, 0.125]]]).log()
    targets = torch.tensor([0, 1])
    drop = probability_drop(clean, perturbed, targets)
    assert drop.shape == (1, 2)
    torch.testing.assert_close(drop, torch.tensor([[0.25, -0.25]]))
    assert torch.equal(probability_drop(clean, clean[None], targets), torch.zeros(1, 2))


def test_registry_and_resolution():
    assert resolve_impact_measure("kl") is kl_divergence
    assert resolve_impact_measure("prob_drop") is probability_drop

    def total_variation(clean, perturbed, target_ids):
        return 0.5 * (clean.exp()[None] - perturbed.exp()).abs().sum(-1)

    assert resolve_impact_measure(total_variation) is total_variation
    register_impact_measure("tv", total_variation)
    try:
        assert resolve_impact_measure("tv") is total_variation
    finally:
        IMPACT_MEASURES.pop("tv")


def test_registry_errors():
    with pytest.raises(ValueError, match="non-empty"):
        register_impact_measure("", kl_divergence)
    with pytest.raises(TypeError, match="callable"):
        register_impact_measure("bad", "kl")
    with pytest.raises(ValueError, match="not a registered impact measure"):
        resolve_impact_measure("js")
    with pytest.raises(ValueError, match="not a registered impact measure"):
        resolve_impact_measure(3)
    assert "bad" not in IMPACT_MEASURES
