#!/usr/bin/env python3
r"""Speech2Text (S2T): ``(batch, frames, n_mels)`` filterbanks, no padding."""

from __future__ import annotations

from captum_spes.adapters.base import ModelAdapter

__all__ = ["Speech2TextAdapter"]


class Speech2TextAdapter(ModelAdapter):
    """Speech2Text (S2T): ``(batch, frames, n_mels)`` filterbanks, no padding."""

    layout = "time_first"
