#!/usr/bin/env python3
r""":class:`~transformers.SpeechEncoderDecoderModel`: any speech encoder with a text decoder."""

from __future__ import annotations

from torch import Tensor, nn

from captum_spes.adapters.base import ModelAdapter
from captum_spes.adapters.layout import InputLayout
from captum_spes.adapters.waveform import WaveformAdapter
from captum_spes.errors import InputError
from captum_spes.masks import MaskFamily

__all__ = ["SpeechEncoderDecoderAdapter"]


class SpeechEncoderDecoderAdapter(WaveformAdapter):
    r""":class:`~transformers.SpeechEncoderDecoderModel`: log-mel encoders (``input_features``)
    are perturbed like spectrograms; waveform encoders (``input_values``, e.g. wav2vec 2.0)
    are perturbed in the STFT domain of the waveform by default (``view="stft"``, see
    :mod:`captum_spes.adapters.waveform`), or on the one-row ``(1, num_samples)`` view with
    ``view="samples"`` (default masks: 20 ms time segments).

    Args:
        model (nn.Module): the model.
        view (str, optional): for waveform encoders only, ``"stft"`` or ``"samples"``.
            Default: "stft"
        **stft_options: ``sampling_rate``, ``window_seconds``, ``hop_seconds`` of
            :class:`~captum_spes.adapters.WaveformAdapter`.
    """

    def __init__(self, model: nn.Module, view: str = "stft", **stft_options: float) -> None:
        super().__init__(model, view, **stft_options)
        encoder_input = getattr(model.get_encoder(), "main_input_name", "input_values")
        self.reads_waveform = encoder_input == "input_values"
        if encoder_input == "input_features":
            self.input_name = "input_features"
            # S2T-style encoders take (batch, frames, mels); Whisper-style take (batch, mels, frames).
            is_whisper = "whisper" in type(model.get_encoder()).__name__.lower()
            self.layout = "mel_first" if is_whisper else "time_first"
            self.frame_rate = ModelAdapter.frame_rate
        elif not self.reads_waveform:
            raise InputError(
                f"unsupported model: its encoder takes {encoder_input!r}; SPES needs input_features or input_values"
            )

    # Log-mel encoders use the generic adapter's behaviour, waveform encoders the waveform one.
    def utterance_layout(self, inputs: Tensor) -> InputLayout:
        return super().utterance_layout(inputs) if self.reads_waveform else self.input_layout

    def speech_frames(self, inputs: Tensor) -> int:
        return super().speech_frames(inputs) if self.reads_waveform else ModelAdapter.speech_frames(self, inputs)

    def frames_for_samples(self, num_samples: int) -> int | None:
        return super().frames_for_samples(num_samples) if self.reads_waveform else None

    def floor_value(self, canonical_full: Tensor, num_frames: int) -> Tensor:
        if self.reads_waveform:
            return super().floor_value(canonical_full, num_frames)
        return ModelAdapter.floor_value(self, canonical_full, num_frames)

    def default_mask_family(self) -> MaskFamily:
        return super().default_mask_family() if self.reads_waveform else ModelAdapter.default_mask_family(self)

    def row_frequencies_hz(self) -> Tensor | None:
        return super().row_frequencies_hz() if self.reads_waveform else None
