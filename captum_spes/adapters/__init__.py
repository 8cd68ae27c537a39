#!/usr/bin/env python3
r"""Model adapters: everything model-specific that SPES needs, looked up by model class.

Adapters are looked up by model class (most specific first); add one with
:func:`register_model_adapter`. Built in: :class:`WhisperAdapter`,
:class:`Speech2TextAdapter`, :class:`SpeechEncoderDecoderAdapter` and :class:`MoonshineAdapter`
(waveform encoders perturbed in the STFT domain, :class:`STFTLayout`), and the decoder-only
speech LLMs :class:`Qwen2AudioAdapter` and :class:`VoxtralAdapter` (:class:`SpeechLLMAdapter`);
:class:`ModelAdapter` is the generic Hugging Face speech encoder-decoder and the base class of
new adapters.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from captum_spes.adapters.base import ModelAdapter
from captum_spes.adapters.layout import LAYOUTS, InputLayout
from captum_spes.adapters.speech2text import Speech2TextAdapter
from captum_spes.adapters.speech_encoder_decoder import SpeechEncoderDecoderAdapter
from captum_spes.adapters.speech_llm import Qwen2AudioAdapter, SpeechLLMAdapter, VoxtralAdapter
from captum_spes.adapters.waveform import MoonshineAdapter, STFTLayout, WaveformAdapter
from captum_spes.adapters.whisper import WhisperAdapter
from captum_spes.errors import InputTypeError

__all__ = [
    "InputLayout",
    "LAYOUTS",
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
    "MODEL_ADAPTERS",
    "register_model_adapter",
    "get_model_adapter",
]

AdapterFactory = Callable[[nn.Module], ModelAdapter]

#: (model class, adapter factory), most specific first
MODEL_ADAPTERS: list[tuple[type[nn.Module], AdapterFactory]] = []


def register_model_adapter(model_class: type[nn.Module], factory: AdapterFactory) -> None:
    """Use ``factory(model)`` for instances of ``model_class`` (checked before earlier ones)."""
    MODEL_ADAPTERS.insert(0, (model_class, factory))


def _register_transformers_adapters() -> None:
    import transformers

    for class_name, factory in (
        ("SpeechEncoderDecoderModel", SpeechEncoderDecoderAdapter),
        ("Speech2TextForConditionalGeneration", Speech2TextAdapter),
        ("WhisperForConditionalGeneration", WhisperAdapter),
        ("MoonshineForConditionalGeneration", MoonshineAdapter),
        ("Qwen2AudioForConditionalGeneration", Qwen2AudioAdapter),
        ("VoxtralForConditionalGeneration", VoxtralAdapter),
    ):
        model_class = getattr(transformers, class_name, None)
        if model_class is not None:
            MODEL_ADAPTERS.append((model_class, factory))


_register_transformers_adapters()


def get_model_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``, or a clear error naming the supported models."""
    for model_class, factory in MODEL_ADAPTERS:
        if isinstance(model, model_class):
            return factory(model)
    supported = ", ".join(cls.__name__ for cls, _ in MODEL_ADAPTERS)
    raise InputTypeError(
        f"unsupported model {type(model).__name__}: SPES explains autoregressive speech "
        f"encoder-decoders and speech LLMs ({supported}); register others with "
        "captum_spes.register_model_adapter(ModelClass, AdapterFactory)"
    )
