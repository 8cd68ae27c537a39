#!/usr/bin/env python3
r"""Waveform models: SPES perturbs the short-time Fourier transform of the waveform.

A model that reads raw samples (Moonshine, wav2vec 2.0 encoders) has no spectrogram input. Its
canonical view is therefore the STFT of the utterance, so its maps are time-frequency maps in
seconds and Hz like those of log-mel models:

* rows are the ``n_fft // 2 + 1`` linear frequency bins of a Hann-windowed STFT, 0 Hz to
  Nyquist (25 ms windows, ``n_fft`` = 400 and 40 Hz per bin at 16 kHz by default);
* columns are frames every 10 ms (``frame_rate`` 100), centred, so frame ``t`` is at ``t / 100`` s
  and there are ``1 + num_samples // hop`` of them;
* values are the **natural-log magnitude** ``log(|X| + eps)``: SLIC and the per-bin mean baseline
  were designed for log-spectral features (on linear magnitudes SLIC sees a few loud bins and
  the mean is dominated by them), and ``baselines="floor"`` is then exactly silence
  (``log(eps)``, magnitude 0).

A perturbed view is turned back into a waveform with the clean utterance's phase
(:func:`torch.istft`, overlap-add of the Hann-windowed frames), then fed to the model. An
unperturbed round trip reproduces the waveform to float32 rounding (the test measures it).
Perturbed magnitudes are not exactly those of the resynthesised waveform's STFT: overlap-add
smears an occlusion over the neighbouring 25 ms, as any STFT-domain masking does.

The one-row time view of earlier releases (``view="samples"``: the canonical view is the
waveform itself, ``(1, num_samples)``, and the default masks are 20 ms time segments) stays
available as an explicit option.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from captum_spes.adapters.base import ModelAdapter
from captum_spes.adapters.layout import InputLayout
from captum_spes.errors import InputError
from captum_spes.masks import MaskFamily, SLICMasks, TimeMasks

__all__ = ["STFTLayout", "WaveformAdapter", "MoonshineAdapter", "WAVEFORM_VIEWS", "STFT_SILENCE", "stft_frequencies"]

#: canonical views of a waveform input
WAVEFORM_VIEWS = ("stft", "samples")

#: added to STFT magnitudes before the log, far below the quietest bin of 16-bit audio
_LOG_EPS = 1e-8
#: the canonical (log-magnitude) value of a zero magnitude: silence
STFT_SILENCE = math.log(_LOG_EPS)


def stft_frequencies(n_fft: int, sampling_rate: int) -> Tensor:
    """Centre frequency in Hz of every row of an ``n_fft`` STFT, ``(n_fft // 2 + 1,)``."""
    return torch.fft.rfftfreq(n_fft, d=1.0 / sampling_rate)


class STFTLayout(InputLayout):
    r"""The STFT log-magnitude view of one waveform ``(1, num_samples)``, holding its phase.

    Args:
        waveform (Tensor): ``(1, num_samples)``, the utterance whose phase resynthesis uses.
        sampling_rate (int, optional): samples per second. Default: 16000
        window_seconds (float, optional): Hann window length (= ``n_fft``). Default: 0.025
        hop_seconds (float, optional): hop between frames. Default: 0.010

    Attributes:
        n_fft, hop_length (int): in samples.
        num_samples (int): length of the utterance.
        phase (Tensor): complex ``(n_fft // 2 + 1, num_frames)`` of modulus 1.
    """

    def __init__(
        self,
        waveform: Tensor,
        sampling_rate: int = 16000,
        window_seconds: float = 0.025,
        hop_seconds: float = 0.010,
    ) -> None:
        super().__init__("waveform")
        self.check(waveform, "an STFT layout")
        self.sampling_rate = int(sampling_rate)
        self.n_fft = round(window_seconds * sampling_rate)
        self.hop_length = round(hop_seconds * sampling_rate)
        if not 0 < self.hop_length <= self.n_fft:
            raise InputError(
                f"hop_seconds ({hop_seconds}) must be positive and at most window_seconds ({window_seconds})"
            )
        self.num_samples = int(waveform.shape[-1])
        if self.num_samples < self.n_fft // 2 + 1:
            raise InputError(
                f"the waveform has {self.num_samples} samples, fewer than half an STFT window "
                f"({self.n_fft // 2 + 1}); give at least {window_seconds / 2:.4f} s of audio"
            )
        spectrum = self._stft(waveform[0])
        magnitude = spectrum.abs()
        self.phase = torch.where(magnitude > 0, spectrum / magnitude.clamp_min(1e-30), torch.ones_like(spectrum))

    @property
    def frame_rate(self) -> float:
        """Frames per second of the canonical time axis."""
        return self.sampling_rate / self.hop_length

    @property
    def frequencies_hz(self) -> Tensor:
        """Centre frequency of every row, ``(n_fft // 2 + 1,)``."""
        return stft_frequencies(self.n_fft, self.sampling_rate)

    @property
    def num_frames(self) -> int:
        return 1 + self.num_samples // self.hop_length

    def _window(self, device: torch.device) -> Tensor:
        return torch.hann_window(self.n_fft, device=device)

    def _stft(self, samples: Tensor) -> Tensor:
        x = samples.float()
        return torch.stft(x, self.n_fft, self.hop_length, window=self._window(x.device), return_complex=True)

    def to_canonical(self, inputs: Tensor) -> Tensor:
        """``(1, num_samples)`` -> log-magnitude ``(n_fft // 2 + 1, num_frames)``, float32."""
        return torch.log(self._stft(inputs[0]).abs() + _LOG_EPS)

    def from_canonical(self, canonical: Tensor) -> Tensor:
        """``(batch, n_fft // 2 + 1, num_frames)`` log-magnitudes -> waveforms ``(batch, num_samples)``
        resynthesised with the clean phase."""
        magnitude = (torch.exp(canonical.float()) - _LOG_EPS).clamp_min(0.0)
        spectrum = magnitude * self.phase.to(canonical.device)
        waveform = torch.istft(
            spectrum, self.n_fft, self.hop_length, window=self._window(canonical.device), length=self.num_samples
        )
        return waveform.to(canonical.dtype if canonical.is_floating_point() else torch.float32)

    def __repr__(self) -> str:
        return (
            f"STFTLayout(n_fft={self.n_fft}, hop_length={self.hop_length}, sampling_rate={self.sampling_rate}, "
            f"num_samples={self.num_samples})"
        )


class WaveformAdapter(ModelAdapter):
    r"""An encoder-decoder that reads raw samples ``(batch, num_samples)`` as ``input_values``.

    Args:
        model (nn.Module): the model (``get_encoder``, ``get_decoder``, ``generate``).
        view (str, optional): ``"stft"`` (default) perturbs the STFT log-magnitude and
            resynthesises with the clean phase (see the module docstring); ``"samples"``
            perturbs the samples on a one-row ``(1, num_samples)`` view.
        sampling_rate (int, optional): default: the model config's ``sampling_rate``, else 16000.
        window_seconds, hop_seconds (float, optional): the STFT's window and hop
            (``view="stft"`` only). Default: 0.025 and 0.010
    """

    input_name = "input_values"
    layout = "waveform"

    def __init__(
        self,
        model: nn.Module,
        view: str = "stft",
        *,
        sampling_rate: int | None = None,
        window_seconds: float = 0.025,
        hop_seconds: float = 0.010,
    ) -> None:
        super().__init__(model)
        if view not in WAVEFORM_VIEWS:
            raise InputError(f"view must be one of {WAVEFORM_VIEWS}, got {view!r}")
        self.view = view
        self.sampling_rate = int(sampling_rate or self._config_sampling_rate(model) or 16000)
        self.window_seconds = window_seconds
        self.hop_seconds = hop_seconds
        self.frame_rate = 1.0 / hop_seconds if view == "stft" else float(self.sampling_rate)

    @staticmethod
    def _config_sampling_rate(model: nn.Module) -> int | None:
        config = getattr(model, "config", None)
        for source in (config, getattr(config, "encoder", None)):
            rate = getattr(source, "sampling_rate", None)
            if isinstance(rate, int):
                return rate
        return None

    def utterance_layout(self, inputs: Tensor) -> InputLayout:
        if self.view == "samples":
            return self.input_layout
        return STFTLayout(inputs, self.sampling_rate, self.window_seconds, self.hop_seconds)

    def speech_frames(self, inputs: Tensor) -> int:
        """Every frame: waveform models get unpadded audio."""
        if self.view == "samples":
            return int(inputs.shape[-1])
        return self.frames_for_samples(int(inputs.shape[-1]))

    def frames_for_samples(self, num_samples: int) -> int:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError(f"num_samples must be a positive int, got {num_samples!r}")
        if self.view == "samples":
            return num_samples
        return 1 + num_samples // round(self.hop_seconds * self.sampling_rate)

    def floor_value(self, canonical_full: Tensor, num_frames: int) -> Tensor:
        """Silence: magnitude 0 in the STFT view, sample value 0 in the samples view."""
        return torch.tensor(STFT_SILENCE if self.view == "stft" else 0.0, dtype=canonical_full.dtype)

    def default_mask_family(self) -> MaskFamily:
        """Multi-scale SLIC on the STFT view; 20 ms time segments on the samples view."""
        if self.view == "samples":
            return TimeMasks(frames_per_segment=max(1, round(0.02 * self.frame_rate)))
        return SLICMasks()

    def row_frequencies_hz(self) -> Tensor | None:
        """Centre frequency of every canonical row in the STFT view (None for samples)."""
        if self.view == "samples":
            return None
        return stft_frequencies(round(self.window_seconds * self.sampling_rate), self.sampling_rate)


class MoonshineAdapter(WaveformAdapter):
    """:class:`~transformers.MoonshineForConditionalGeneration`: raw 16 kHz samples, no padding."""

    def expand_encoder_outputs(self, encoder_outputs: Any, batch: int) -> Any:
        # Moonshine's decoder reads the encoder output's fields (hidden states and mask) by name.
        hidden = encoder_outputs.last_hidden_state
        mask = getattr(encoder_outputs, "attention_mask", None)
        return type(encoder_outputs)(
            last_hidden_state=hidden.expand(batch, *hidden.shape[1:]),
            attention_mask=None if mask is None else mask.expand(batch, *mask.shape[1:]),
        )
