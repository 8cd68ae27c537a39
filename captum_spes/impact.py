#!/usr/bin/env python3
r"""Impact measures: how much a perturbation changed each explained position.

An impact measure maps the clean log-distributions ``(num_targets, vocab)``, the perturbed
ones ``(batch, num_targets, vocab)`` and the explained token ids ``(num_targets,)`` to scores
``(batch, num_targets)``. SPES's measure is the KL divergence ``KL(P_clean || P_perturbed)``;
``prob_drop`` is the paper's ablation ``p_clean(y_k) - p_perturbed(y_k)``. Add measures with
:func:`register_impact_measure` (as inseq registers step functions).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from captum_spes.errors import InputError, InputTypeError

__all__ = [
    "ImpactMeasure",
    "kl_divergence",
    "probability_drop",
    "IMPACT_MEASURES",
    "register_impact_measure",
    "resolve_impact_measure",
]

ImpactMeasure = Callable[[Tensor, Tensor, Tensor], Tensor]

# A token the perturbed model rules out entirely (log-probability -inf) is floored here, so it
# adds a large but finite amount (p * 1e4) instead of inf.
_LOG_FLOOR = -1.0e4


def kl_divergence(clean_log_probs: Tensor, perturbed_log_probs: Tensor, target_ids: Tensor) -> Tensor:
    r"""``KL(P_clean || P_perturbed)`` per explained position, over the whole vocabulary.

    Computed in float32 from log-probabilities (callers pass log-softmax outputs), weighted
    by ``exp`` of the clean log-probabilities; entries whose clean probability is exactly 0
    contribute 0, so the result is finite in float16/bfloat16 models too.

    Args:
        clean_log_probs (Tensor): ``(num_targets, vocab)``.
        perturbed_log_probs (Tensor): ``(batch, num_targets, vocab)``.
        target_ids (Tensor): ``(num_targets,)`` (unused: KL looks at whole distributions).

    Returns:
        *Tensor* ``(batch, num_targets)``, non-negative.
    """
    clean = clean_log_probs.float()
    perturbed = perturbed_log_probs.float()
    # Only -inf (a token ruled out) is floored; finite log-probabilities are used as they are.
    perturbed = torch.where(torch.isneginf(perturbed), torch.full_like(perturbed, _LOG_FLOOR), perturbed)
    probs = clean.exp()
    terms = probs[None] * (clean[None] - perturbed)
    terms = torch.where(probs[None] > 0, terms, torch.zeros_like(terms))
    # Rounding can make a tiny KL slightly negative; it is a divergence, so clamp at 0.
    return terms.sum(dim=-1).clamp_min(0.0)


def probability_drop(clean_log_probs: Tensor, perturbed_log_probs: Tensor, target_ids: Tensor) -> Tensor:
    r"""``p_clean(y_k) - p_perturbed(y_k)``: the drop in probability of the explained token
    (the reference's ``predicted_token_diff``); signed.

    Returns:
        *Tensor* ``(batch, num_targets)``.
    """
    index = target_ids.to(clean_log_probs.device).long()
    clean = clean_log_probs.float().gather(-1, index[:, None])[:, 0].exp()
    pert_index = index[None, :, None].expand(perturbed_log_probs.shape[0], -1, 1)
    perturbed = perturbed_log_probs.float().gather(-1, pert_index)[..., 0].exp()
    return clean[None] - perturbed


IMPACT_MEASURES: dict[str, ImpactMeasure] = {
    "kl": kl_divergence,
    "prob_drop": probability_drop,
}


def register_impact_measure(name: str, measure: ImpactMeasure) -> None:
    """Make ``impact=name`` use ``measure(clean_log_probs, perturbed_log_probs, target_ids)``."""
    if not isinstance(name, str) or not name:
        raise InputError("name must be a non-empty string")
    if not callable(measure):
        raise InputTypeError("measure must be callable")
    IMPACT_MEASURES[name] = measure


def resolve_impact_measure(impact: str | ImpactMeasure) -> ImpactMeasure:
    """Look up a registered measure by name, or accept a callable."""
    if callable(impact):
        return impact
    if isinstance(impact, str) and impact in IMPACT_MEASURES:
        return IMPACT_MEASURES[impact]
    raise InputError(
        f"impact={impact!r} is not a registered impact measure; choose one of "
        f"{sorted(IMPACT_MEASURES)} or pass a callable "
        "(clean_log_probs, perturbed_log_probs, target_ids) -> (batch, num_targets)"
    )
