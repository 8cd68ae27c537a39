#!/usr/bin/env python3
r"""The validated settings of one SPES run, and the metadata built from them.

:class:`SPESConfig` checks every argument of :meth:`SPES.attribute` once, before any model
pass, and refuses options that would do nothing (e.g. ``n_token_masks`` without a token
map), naming the argument and the fix. Its :meth:`SPESConfig.metadata` is what every saved
explanation records about how it was made.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from captum_spes._core.estimators import Estimator, resolve_estimator
from captum_spes._utils.adaptive import AdaptiveMasks
from captum_spes._utils.sampling import split_masks_across_levels
from captum_spes.errors import InputError, InputTypeError
from captum_spes.impact import ImpactMeasure, resolve_impact_measure
from captum_spes.masks import MaskFamily, MaskLevel, resolve_mask_family

__all__ = ["SPESConfig", "TOKEN_MASK_MODES", "library_versions"]

TOKEN_MASK_MODES = ("decoupled", "joint")
_VERSIONED = ("captum-spes", "captum", "torch", "transformers", "numpy", "scikit-image")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a result depends on."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_probability(value: Any, name: str) -> float:
    """``value`` as a float strictly between 0 and 1, or a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise InputError(f"{name} must be a probability strictly between 0 and 1, got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str) -> int:
    """``value`` if it is a positive int, or a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class SPESConfig:
    r"""Every setting of one :meth:`SPES.attribute` call, validated.

    Attributes mirror the arguments of :meth:`SPES.attribute`; ``adaptive`` holds the
    stopping rule when ``n_masks`` is ``"auto"`` or an :class:`AdaptiveMasks`.
    """

    n_masks: int | tuple[int, ...] | None
    adaptive: AdaptiveMasks | None
    p: float
    token_p: float | None
    token_masks: str | None
    n_token_masks: int | None
    impact_name: str
    impact: ImpactMeasure
    seed: int
    family: MaskFamily
    estimator: Estimator
    perturbations_per_eval: int
    perturb_prompt: bool

    @classmethod
    def from_arguments(
        cls,
        *,
        n_masks: int | Sequence[int] | str | AdaptiveMasks,
        p: float,
        token_p: float | None,
        token_masks: str | None,
        n_token_masks: int | None,
        impact: str | ImpactMeasure,
        seed: int,
        feature_mask: Any,
        estimator: str | Estimator,
        perturbations_per_eval: int,
        perturb_prompt: bool | None,
        default_family: MaskFamily | None = None,
    ) -> SPESConfig:
        """Validate :meth:`SPES.attribute`'s arguments (see its docstring for their meaning)."""
        adaptive, fixed = _resolve_n_masks(n_masks)
        if token_p is None:
            _refuse_token_options(token_masks, n_token_masks, perturb_prompt)
        elif token_p == 0:
            raise InputError(
                "token_p=0 would return an all-zero token map; pass token_p=None to skip "
                "the token map, or a probability in (0, 1) such as 0.5"
            )
        else:
            token_p = check_probability(token_p, "token_p")
            token_masks = "decoupled" if token_masks is None else token_masks
            if token_masks not in TOKEN_MASK_MODES:
                raise InputError(f"token_masks must be one of {TOKEN_MASK_MODES}, got {token_masks!r}")
            if token_masks == "joint" and n_token_masks is not None:
                raise InputError("n_token_masks applies to token_masks='decoupled' only; joint masks share n_masks")
            if n_token_masks is not None:
                check_positive_int(n_token_masks, "n_token_masks")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative int, got {seed!r}")
        if perturb_prompt is not None and not isinstance(perturb_prompt, bool):
            raise InputTypeError(f"perturb_prompt must be True or False, got {perturb_prompt!r}")
        family = default_family if feature_mask is None and default_family is not None else None
        return cls(
            n_masks=fixed,
            adaptive=adaptive,
            p=check_probability(p, "p"),
            token_p=token_p,
            token_masks=token_masks if token_p is not None else None,
            n_token_masks=n_token_masks,
            impact_name=impact if isinstance(impact, str) else getattr(impact, "__name__", "callable"),
            impact=resolve_impact_measure(impact),
            seed=seed,
            family=family or resolve_mask_family(feature_mask),
            estimator=resolve_estimator(estimator),
            perturbations_per_eval=check_positive_int(perturbations_per_eval, "perturbations_per_eval"),
            perturb_prompt=True if perturb_prompt is None else perturb_prompt,
        )

    @property
    def joint_token_p(self) -> float | None:
        """Token occlusion probability inside the spectrogram passes (joint mode only)."""
        return self.token_p if self.token_masks == "joint" else None

    def masks_per_level(self, num_levels: int) -> list[int]:
        """Spectrogram masks per level for a fixed budget (consecutive blocks)."""
        if self.n_masks is None:
            raise RuntimeError("an adaptive run has no fixed number of masks per level")
        if isinstance(self.n_masks, int):
            return split_masks_across_levels(self.n_masks, num_levels)
        counts = list(self.n_masks)
        if len(counts) != num_levels:
            raise InputError(
                f"n_masks as a list needs one positive int per mask level ({num_levels} levels), got {counts}"
            )
        return counts

    def metadata(
        self,
        *,
        levels: Sequence[MaskLevel],
        masks_per_level: Sequence[int],
        token_passes: int,
    ) -> dict[str, Any]:
        """What every result records about its configuration (model and run facts are added
        by :class:`~captum_spes.SPES`)."""
        return {
            "method": "SPES",
            "n_masks": int(sum(masks_per_level)),
            "masks_per_level": [int(m) for m in masks_per_level],
            "segments_requested": [lv.requested_segments for lv in levels],
            "segments_obtained": [lv.num_segments for lv in levels],
            "mask_family": self.family.config(),
            "estimator": self.estimator.config(),
            "p": self.p,
            "token_p": self.token_p,
            "token_masks": self.token_masks,
            "n_token_masks": token_passes
            if self.token_masks == "decoupled"
            else (int(sum(masks_per_level)) if self.token_masks == "joint" else 0),
            "perturb_prompt": self.perturb_prompt,
            "impact": self.impact_name,
            "seed": self.seed,
            "perturbations_per_eval": self.perturbations_per_eval,
            "forward_passes": 1 + int(sum(masks_per_level)) + token_passes,
            "versions": library_versions(),
        }


def _resolve_n_masks(
    n_masks: int | Sequence[int] | str | AdaptiveMasks,
) -> tuple[AdaptiveMasks | None, int | tuple[int, ...] | None]:
    if isinstance(n_masks, AdaptiveMasks):
        return n_masks, None
    if isinstance(n_masks, str):
        if n_masks != "auto":
            raise InputError(f'n_masks must be an int, a list of ints, "auto" or AdaptiveMasks, got {n_masks!r}')
        return AdaptiveMasks(), None
    if isinstance(n_masks, bool):
        raise InputError(f"n_masks must be an int or a list of ints, got {n_masks!r}")
    if isinstance(n_masks, int):
        return None, check_positive_int(n_masks, "n_masks")
    if isinstance(n_masks, Sequence):
        counts = tuple(n_masks)
        if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts):
            raise InputError(f"n_masks as a list needs one positive int per mask level, got {list(counts)}")
        return None, counts
    raise InputTypeError(
        f'n_masks must be an int, a list of ints, "auto" or AdaptiveMasks, got {type(n_masks).__name__}'
    )


def _refuse_token_options(token_masks: str | None, n_token_masks: int | None, perturb_prompt: bool | None) -> None:
    given = [
        name
        for name, value in (
            ("token_masks", token_masks),
            ("n_token_masks", n_token_masks),
            ("perturb_prompt", perturb_prompt),
        )
        if value is not None
    ]
    if given:
        raise InputError(
            f"{', '.join(given)} configure{'s' if len(given) == 1 else ''} the token map, but token_p=None turns "
            "it off; remove them, or pass token_p=0.5 to compute a token map"
        )
