#!/usr/bin/env python3
r"""Input layouts: how a model's acoustic input maps to SPES's canonical spectrogram.

SPES works on one canonical 2-D view of an utterance, ``(n_rows, n_cols)`` with time along
the columns: ``(n_mels, n_frames)`` for log-mel features. A layout converts a model input of
one utterance to that view and a batch of canonical views back to model inputs.
"""

from __future__ import annotations

from torch import Tensor

from captum_spes.errors import InputError

__all__ = ["InputLayout", "LAYOUTS"]

#: layout name -> shape of one utterance in the model's layout, for error messages
LAYOUTS: dict[str, str] = {
    "mel_first": "(1, n_mels, n_frames)",
    "time_first": "(1, n_frames, n_mels)",
    "waveform": "(1, num_samples)",
}


class InputLayout:
    r"""One of :data:`LAYOUTS`.

    Args:
        name (str): ``"mel_first"`` (batch, n_mels, frames), e.g. Whisper; ``"time_first"``
            (batch, frames, n_mels), e.g. Speech2Text; ``"waveform"`` (batch, samples), whose
            canonical view is one row ``(1, num_samples)``.
    """

    def __init__(self, name: str = "mel_first") -> None:
        if name not in LAYOUTS:
            raise InputError(f"layout must be one of {sorted(LAYOUTS)}, got {name!r}")
        self.name = name

    @property
    def input_dims(self) -> int:
        """Dimensions of a model input, batch included."""
        return 2 if self.name == "waveform" else 3

    def to_canonical(self, inputs: Tensor) -> Tensor:
        """Model input of one utterance ``(1, ...)`` -> ``(n_rows, n_cols)``."""
        x = inputs[0]
        if self.name == "time_first":
            return x.transpose(0, 1)
        if self.name == "waveform":
            return x[None, :]
        return x

    def from_canonical(self, canonical: Tensor) -> Tensor:
        """``(batch, n_rows, n_cols)`` -> model inputs ``(batch, ...)``."""
        if self.name == "time_first":
            return canonical.transpose(1, 2)
        if self.name == "waveform":
            return canonical[:, 0, :]
        return canonical

    def check(self, inputs: Tensor, model_name: str = "the model") -> None:
        """Raise a clear error if ``inputs`` does not have this layout's number of dimensions."""
        if inputs.dim() != self.input_dims:
            raise InputError(
                f"inputs must have shape {LAYOUTS[self.name]} for {model_name}, got {tuple(inputs.shape)}; "
                "use the model's feature extractor to build them"
            )

    def __repr__(self) -> str:
        return f"InputLayout({self.name!r})"
