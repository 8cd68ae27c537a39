#!/usr/bin/env python3
r"""Impact measures: how much a perturbation changed each explained position.

An impact measure maps the clean log-distributions ``(num_targets, vocab)``, the perturbed
ones ``(batch, num_targets, vocab)`` and the explained token ids ``(num_targets,)`` to scores
``(batch, num_targets)``. SPES's measure is the KL divergence ``KL(P_clean || P_perturbed)``;
``prob_drop`` is the paper's ablation ``p_clean(y_k) - p_perturbed(y_k)``. Add measures with
:func:`register_impact_measure` (as inseq registers step functions).

Contrastive measures (:class:`ContrastiveImpact`) explain why the model chose the explained
token rather than a *foil* the user names ("he" rather than "she"): they need the foil of each
contrasted position, so they are objects passed as ``impact=``, and their kinds are registered
in :data:`CONTRASTIVE_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    "ContrastiveImpact",
    "Contrast",
    "CONTRASTIVE_KINDS",
    "margin_change",
    "relative_preference_change",
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


def margin_change(clean_margin: Tensor, perturbed_margin: Tensor) -> Tensor:
    r"""``[log p(y) - log p(foil)]_clean - [log p(y) - log p(foil)]_perturbed``: how much the
    perturbation reduced the model's preference for the explained token over the foil
    (positive: the occluded input supported the choice of ``y`` over the foil)."""
    return clean_margin[None] - perturbed_margin


def relative_preference_change(clean_margin: Tensor, perturbed_margin: Tensor) -> Tensor:
    r"""``p(y) / (p(y) + p(foil))`` clean minus perturbed: the *contrastive relative* scorer of
    Conti et al. (2025, after Jacovi et al., 2021), bounded in [-1, 1]. The share equals
    ``sigmoid(margin)``, which is how it is computed (stable when both probabilities are tiny)."""
    return torch.sigmoid(clean_margin)[None] - torch.sigmoid(perturbed_margin)


#: contrastive kind -> ``f(clean_margin (num_contrasts,), perturbed_margin (batch, num_contrasts))``
CONTRASTIVE_KINDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "margin": margin_change,
    "ratio": relative_preference_change,
}


@dataclass(frozen=True)
class Contrast:
    """One contrasted position: explained position ``position`` against ``foil_id``.

    Attributes:
        position (int): index of the explained token (0 .. K, the end token last).
        foil_id (int): the token contrasted with the explained one at that position.
        foil_ids (tuple of int): every token of the foil word (``foil_id`` is the first).
        foil_text (str): the foil as the user wrote it.
    """

    position: int
    foil_id: int
    foil_ids: tuple[int, ...] = ()
    foil_text: str = ""


class ContrastiveImpact:
    r"""Impact on the choice of the explained token over a foil, at one or more positions.

    At a contrasted position ``k`` with explained token ``y_k`` and foil ``f_k`` the margin is
    ``m = log p(y_k) - log p(f_k)``, read from the same teacher-forced distribution. The
    ``"margin"`` kind scores ``m_clean - m_perturbed``; ``"ratio"`` scores the change of the
    share ``p(y_k) / (p(y_k) + p(f_k))``. Positions that are not contrasted score 0, so their
    maps are 0: read the maps of the contrasted positions.

    A foil of several tokens is contrasted through its first token: at position ``k`` the model
    chooses between continuing with ``y_k`` and starting the foil, and the probability of
    starting it is what the explained pass gives (the rest of the foil would need a pass forced
    on the foil's own continuation). A foil whose first token is ``y_k`` itself is refused.

    Args:
        contrasts (mapping or sequence): ``{position: foil_id}`` or :class:`Contrast` objects.
        kind (str, optional): a key of :data:`CONTRASTIVE_KINDS`. Default: "margin"

    Examples::

        >>> from captum_spes import SPES, ContrastiveImpact
        >>> hypothesis = wrapper.set_hypothesis(features)  # ' He was not an old-sposed young man.'
        >>> measure = ContrastiveImpact.from_text(hypothesis, ["He:She"], processor.tokenizer)
        >>> result = SPES(wrapper).attribute(
        ...     features, target=hypothesis, impact=measure, n_masks=24, token_p=None, num_samples=len(audio)
        ... )
        >>> result.spectrogram_attr[0].shape  # row 0: where the audio argued for "He" rather than "She"
        torch.Size([80, 301])
    """

    def __init__(self, contrasts: Mapping[int, int] | Sequence[Contrast], kind: str = "margin") -> None:
        if kind not in CONTRASTIVE_KINDS:
            raise InputError(f"kind must be one of {sorted(CONTRASTIVE_KINDS)}, got {kind!r}")
        items = (
            [Contrast(int(p), int(f)) for p, f in contrasts.items()] if isinstance(contrasts, Mapping) else contrasts
        )
        items = list(items)
        if not items or not all(isinstance(c, Contrast) for c in items):
            raise InputError("contrasts must be a non-empty {position: foil_id} mapping or a list of Contrast")
        positions = [c.position for c in items]
        if len(set(positions)) != len(positions) or min(positions) < 0:
            raise InputError(f"contrasted positions must be distinct non-negative ints, got {positions}")
        self.contrasts = tuple(items)
        self.kind = kind
        self.__name__ = f"contrastive_{kind}[" + ",".join(f"{c.position}:{c.foil_id}" for c in items) + "]"

    @property
    def positions(self) -> list[int]:
        return [c.position for c in self.contrasts]

    def _margins(self, log_probs: Tensor, target_ids: Tensor) -> Tensor:
        """``(..., num_contrasts)`` margins of ``(..., num_targets, vocab)`` log-probabilities."""
        positions = torch.tensor(self.positions, device=log_probs.device)
        rows = log_probs.float().index_select(-2, positions)
        rows = torch.where(torch.isneginf(rows), torch.full_like(rows, _LOG_FLOOR), rows)
        targets = target_ids.to(log_probs.device).long()[positions]
        foils = torch.tensor([c.foil_id for c in self.contrasts], device=log_probs.device)
        picked = torch.stack([targets, foils], dim=-1).expand(*rows.shape[:-1], 2)
        chosen = rows.gather(-1, picked)
        return chosen[..., 0] - chosen[..., 1]

    def check(self, target_ids: Tensor, vocab_size: int) -> None:
        """Raise a clear error if a contrast does not fit the explained tokens."""
        for c in self.contrasts:
            if c.position >= len(target_ids):
                raise InputError(
                    f"contrasted position {c.position} is past the explained tokens (0 .. {len(target_ids) - 1})"
                )
            if not 0 <= c.foil_id < vocab_size:
                raise InputError(f"foil id {c.foil_id} is not in the vocabulary (size {vocab_size})")
            if int(target_ids[c.position]) == c.foil_id:
                raise InputError(f"the foil at position {c.position} is the explained token itself (id {c.foil_id})")

    def __call__(self, clean_log_probs: Tensor, perturbed_log_probs: Tensor, target_ids: Tensor) -> Tensor:
        r"""Scores ``(batch, num_targets)``, 0 at positions that are not contrasted."""
        self.check(target_ids, clean_log_probs.shape[-1])
        scores = CONTRASTIVE_KINDS[self.kind](
            self._margins(clean_log_probs, target_ids), self._margins(perturbed_log_probs, target_ids)
        )
        out = scores.new_zeros(perturbed_log_probs.shape[0], perturbed_log_probs.shape[1])
        out[:, torch.tensor(self.positions, device=out.device)] = scores
        return out

    @classmethod
    def from_text(
        cls, hypothesis: Any, specs: Sequence[str], tokenizer: Any, kind: str = "margin"
    ) -> ContrastiveImpact:
        r"""Contrasts written ``"POSITION_OR_WORD:FOIL"`` for an explained hypothesis.

        ``POSITION`` is the index of an explained token; a word picks the first explained token
        whose text, stripped of spaces, equals it. The foil is tokenized as the explained token
        is written: with the leading space of a word-initial piece (``" he"`` -> ``" she"``).

        Args:
            hypothesis (Hypothesis): the explained hypothesis (its ``tokens`` and ``target_ids``).
            specs (sequence of str): e.g. ``["he:she", "5:woman"]``.
            tokenizer: turns the foil text into ids (``tokenizer(text, add_special_tokens=False)``).
            kind (str, optional): see :data:`CONTRASTIVE_KINDS`.
        """
        if tokenizer is None:
            raise InputError("contrasts written as text need a tokenizer: pass processor= to the wrapper")
        contrasts = [_parse_contrast(hypothesis, spec, tokenizer) for spec in specs]
        return cls(contrasts, kind)


def _parse_contrast(hypothesis: Any, spec: str, tokenizer: Any) -> Contrast:
    where, colon, foil = spec.partition(":")
    where, foil = where.strip(), foil.strip()
    if not colon or not where or not foil:
        raise InputError(f"a contrast is written POSITION_OR_WORD:FOIL (e.g. 'he:she' or '0:she'), got {spec!r}")
    pieces = [t.strip() for t in hypothesis.tokens]
    if where.isdigit():
        position = int(where)
        if position >= len(pieces):
            raise InputError(
                f"contrast {spec!r}: position {position} is past the explained tokens (0 .. {len(pieces) - 1})"
            )
    elif where in pieces:
        position = pieces.index(where)
    else:
        raise InputError(f"contrast {spec!r}: no explained token is {where!r}; the tokens are {pieces}")
    leading = hypothesis.tokens[position][
        : len(hypothesis.tokens[position]) - len(hypothesis.tokens[position].lstrip())
    ]
    ids = [int(i) for i in tokenizer(leading + foil, add_special_tokens=False)["input_ids"]]
    if not ids:
        raise InputError(f"contrast {spec!r}: the tokenizer turns the foil {foil!r} into no token")
    if ids[0] == hypothesis.target_ids[position]:
        raise InputError(
            f"contrast {spec!r}: the foil starts with the explained token itself ({hypothesis.tokens[position]!r}); "
            "contrast at the position where the two words differ"
        )
    return Contrast(position, ids[0], tuple(ids), foil)


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
    if isinstance(impact, str) and impact.startswith("contrastive"):
        raise InputError(
            f"impact={impact!r}: a contrastive measure needs the foil of each position; pass "
            "impact=ContrastiveImpact({position: foil_id}, kind='margin' or 'ratio')"
        )
    raise InputError(
        f"impact={impact!r} is not a registered impact measure; choose one of "
        f"{sorted(IMPACT_MEASURES)} or pass a callable "
        "(clean_log_probs, perturbed_log_probs, target_ids) -> (batch, num_targets)"
    )
