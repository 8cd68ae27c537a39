"""Model adapters: layouts and Whisper's speech-frame detection."""

import numpy as np
import pytest
import torch
from helpers import tiny_whisper, whisper_features

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


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.normal(0, 0.01, 32000),  # white noise at RMS 0.01
        lambda rng: 0.003 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000),  # a quiet tone
        lambda rng: 0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000),  # a loud one
    ],
    ids=["noise-rms-0.01", "tone-0.003", "tone-0.3"],
)
def test_whisper_speech_frames_of_quiet_audio(make):
    # Quiet audio leaves Whisper's padding at digital silence (-1.5), below the clamp at
    # max - 2 that the detection used to look for: 3000 "speech" frames instead of 202.
    from transformers import WhisperFeatureExtractor

    waveform = make(np.random.default_rng(0)).astype(np.float32)
    features = WhisperFeatureExtractor(feature_size=80)(waveform, sampling_rate=16000, return_tensors="pt")
    adapter = WhisperAdapter(tiny_whisper(input_frames=3000))
    assert adapter.frames_for_samples(len(waveform)) == 202
    assert adapter.speech_frames(features.input_features) == 202


def test_whisper_frames_for_samples_by_hand():
    adapter = WhisperAdapter(tiny_whisper(input_frames=3000))
    # frame i is centred on sample 160 i with a 400-sample window: it touches the first n
    # samples when 160 i - 200 < n.
    assert adapter.frames_for_samples(1) == 2
    assert adapter.frames_for_samples(120) == 2
    assert adapter.frames_for_samples(121) == 3
    assert adapter.frames_for_samples(16000) == 102
    assert adapter.frames_for_samples(480000) == 3000  # capped at the 30 s window
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        adapter.frames_for_samples(0)


def test_num_samples_sets_the_speech_frames_of_spes():
    from captum_spes import SPES, SpeechSeq2SeqWrapper

    result = SPES(SpeechSeq2SeqWrapper(tiny_whisper())).attribute(
        whisper_features(num_frames=120), n_masks=3, token_p=None, num_samples=16000
    )
    assert result.n_frames == 102 and result.metadata["num_frames"] == 102
    with pytest.raises(ValueError, match="give num_frames or num_samples, not both"):
        SPES(SpeechSeq2SeqWrapper(tiny_whisper())).attribute(
            whisper_features(), n_masks=3, token_p=None, num_samples=16000, num_frames=50
        )
