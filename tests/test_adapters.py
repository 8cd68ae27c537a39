"""Model adapters: layouts and Whisper's speech-frame detection."""

import pytest
import torch
from helpers import tiny_whisper

from captum_spes.adapters import WhisperAdapter


def _whisper_like(num_frames: int, maximum: float, total: int = 3000) -> torch.Tensor:
    """Whisper's scaling: speech values in [max - 2, max], padding exactly at max - 2 (float32)."""
    generator = torch.Generator().manual_seed(0)
    features = (torch.rand(1, 80, total, generator=generator) * 2 - 2 + maximum).clamp_min(maximum - 1.9)
    features[0, 0, 0] = maximum
    features[..., num_frames:] = maximum - 2.0
    return features


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("maximum", [1.00037, 1.00222, 1.00296, 1.15])
def test_whisper_speech_frames_survive_half_precision(dtype, maximum):
    # Casting after the scaling rounds the max and the floor separately (for these maxima
    # the rounded floor lies above the rounded max minus 2); detection must not then take
    # the padding for speech, as it did (3000 frames instead of 725 in float16).
    features = _whisper_like(725, maximum).to(dtype)
    assert WhisperAdapter(tiny_whisper()).speech_frames(features) == 725


def test_whisper_speech_frames_without_padding_is_everything():
    features = torch.rand(1, 80, 300, generator=torch.Generator().manual_seed(1))
    assert WhisperAdapter(tiny_whisper()).speech_frames(features) == 300
