#!/usr/bin/env python3
r""":class:`~transformers.SpeechEncoderDecoderModel`: any speech encoder with a text decoder."""

from __future__ import annotations

from torch import nn

from captum_spes.adapters.base import ModelAdapter
from captum_spes.errors import InputError

__all__ = ["SpeechEncoderDecoderAdapter"]


class SpeechEncoderDecoderAdapter(ModelAdapter):
    """:class:`~transformers.SpeechEncoderDecoderModel`: log-mel encoders (``input_features``)
    are perturbed like spectrograms; waveform encoders (``input_values``, e.g. wav2vec 2.0)
    are perturbed on a one-row ``(1, num_samples)`` canonical input, where only time-based
    masks make sense (their default mask family is 20 ms time segments)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        encoder_input = getattr(model.get_encoder(), "main_input_name", "input_values")
        if encoder_input == "input_features":
            self.input_name = "input_features"
            # S2T-style encoders take (batch, frames, mels); Whisper-style take (batch, mels, frames).
            is_whisper = "whisper" in type(model.get_encoder()).__name__.lower()
            self.layout = "mel_first" if is_whisper else "time_first"
        elif encoder_input == "input_values":
            self.input_name = "input_values"
            self.layout = "waveform"
            rate = getattr(getattr(model.config, "encoder", None), "sampling_rate", None)
            self.frame_rate = float(rate) if rate else 16000.0
        else:
            raise InputError(
                f"unsupported model: its encoder takes {encoder_input!r}; SPES needs input_features or input_values"
            )
