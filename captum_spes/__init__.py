#!/usr/bin/env python3
r"""captum-spes: SPES token-level explanations of speech-to-text models, as a Captum method."""

from captum_spes._core.coarse_to_fine import CoarseToFine
from captum_spes._core.estimators import (
    ESTIMATORS,
    Estimate,
    Estimator,
    ReferenceEstimator,
    register_estimator,
)
from captum_spes._core.forward_wrapper import Hypothesis, SpeechSeq2SeqWrapper
from captum_spes._core.result import SPESResult
from captum_spes._core.spes import SPES
from captum_spes._core.utterance import Utterance
from captum_spes._utils.adaptive import AdaptiveMasks
from captum_spes._version import __version__
from captum_spes.adapters import (
    ModelAdapter,
    MoonshineAdapter,
    Qwen2AudioAdapter,
    Speech2TextAdapter,
    SpeechEncoderDecoderAdapter,
    SpeechLLMAdapter,
    STFTLayout,
    VoxtralAdapter,
    WaveformAdapter,
    WhisperAdapter,
    get_model_adapter,
    register_model_adapter,
)
from captum_spes.comparison import ComparisonReport, compare
from captum_spes.errors import InputError
from captum_spes.impact import (
    IMPACT_MEASURES,
    Contrast,
    ContrastiveImpact,
    kl_divergence,
    probability_drop,
    register_impact_measure,
)
from captum_spes.masks import (
    MASK_FAMILIES,
    CustomMasks,
    ElementMasks,
    FrequencyMasks,
    MaskFamily,
    MaskLevel,
    SLICMasks,
    TimeMasks,
    register_mask_family,
)
from captum_spes.normalizers import normalize_reference, paired_min_max, single_mean_std

__all__ = [
    "SPES",
    "SPESResult",
    "SpeechSeq2SeqWrapper",
    "Hypothesis",
    "AdaptiveMasks",
    "Utterance",
    "Estimator",
    "Estimate",
    "ReferenceEstimator",
    "CoarseToFine",
    "ESTIMATORS",
    "register_estimator",
    "MaskFamily",
    "MaskLevel",
    "SLICMasks",
    "TimeMasks",
    "FrequencyMasks",
    "ElementMasks",
    "CustomMasks",
    "MASK_FAMILIES",
    "register_mask_family",
    "IMPACT_MEASURES",
    "kl_divergence",
    "probability_drop",
    "register_impact_measure",
    "ContrastiveImpact",
    "Contrast",
    "ModelAdapter",
    "WhisperAdapter",
    "Speech2TextAdapter",
    "SpeechEncoderDecoderAdapter",
    "WaveformAdapter",
    "MoonshineAdapter",
    "STFTLayout",
    "SpeechLLMAdapter",
    "Qwen2AudioAdapter",
    "VoxtralAdapter",
    "get_model_adapter",
    "register_model_adapter",
    "single_mean_std",
    "paired_min_max",
    "normalize_reference",
    "compare",
    "ComparisonReport",
    "InputError",
    "__version__",
]
