#!/usr/bin/env python3
r"""Pretrained speech-to-text models for SPES: embedded Whisper checkpoints and loaders.

``load_model("tiny.en")`` returns a Hugging Face ``WhisperForConditionalGeneration``
and its ``WhisperProcessor`` converted from the CTranslate2 weights shipped by the
``[models]`` extra (no model hub access needed).
"""

from captum_spes.models.ctranslate2 import ModelLoadError, load_ctranslate2_whisper
from captum_spes.models.embedded import EMBEDDED_MODELS, embedded_model_status
from captum_spes.models.loading import load_model

__all__ = [
    "load_model",
    "load_ctranslate2_whisper",
    "EMBEDDED_MODELS",
    "embedded_model_status",
    "ModelLoadError",
]
