#!/usr/bin/env python3
"""Resynthesis of the salient time-frequency bins (captum_spes.visualization.listen)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from captum_spes import SPESResult
from captum_spes.visualization import (
    mel_frequencies,
    mel_to_stft_weights,
    salient_audio,
    salient_mask,
    write_salient_audio,
)

SR = 16000
LOW_HZ, HIGH_HZ = 500.0, 3000.0
SECONDS = 1.0


def two_tones() -> np.ndarray:
    t = np.arange(int(SR * SECONDS)) / SR
    return (0.4 * np.sin(2 * np.pi * LOW_HZ * t) + 0.4 * np.sin(2 * np.pi * HIGH_HZ * t)).astype(np.float32)


def band_result(low: float, high: float, n_frames: int = 100) -> SPESResult:
    """One token whose map marks only the mel bins with centres in [low, high] Hz."""
    centres = mel_frequencies(80, SR)
    spec = torch.zeros(2, 80, n_frames)
    spec[0, torch.from_numpy((centres >= low) & (centres <= high))] = 1.0
    spec[1] = 0.5
    return SPESResult(
        spectrogram_attr=spec,
        token_attr=None,
        target_ids=[5, 6],
        tokens=[" tone", "<|endoftext|>"],
        decoder_input_ids=[1, 5],
        decoder_input_tokens=["<|startoftranscript|>", " tone"],
        num_prompt=1,
        target_log_probs=torch.zeros(2),
        text=" tone",
        metadata={"frame_rate": 100.0},
    )


def band_energy(signal: np.ndarray, centre: float, half_width: float = 100.0) -> float:
    spectrum = np.abs(np.fft.rfft(signal)) ** 2
    hz = np.fft.rfftfreq(signal.shape[0], 1 / SR)
    return float(spectrum[(hz > centre - half_width) & (hz < centre + half_width)].sum())


def test_weights_rows_are_averages() -> None:
    weights = mel_to_stft_weights(80, SR, 400)
    assert weights.shape == (201, 80)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # A uniform mel map stays uniform at STFT resolution.
    np.testing.assert_allclose(weights @ np.full((80, 3), 2.0), 2.0)


def test_keeps_marked_band_and_removes_the_other() -> None:
    audio = two_tones()
    result = band_result(350.0, 700.0)
    out = salient_audio(result, audio, SR, token=0, top_percent=10)
    assert out.shape == audio.shape and out.dtype == np.float32
    kept = band_energy(out, LOW_HZ) / band_energy(audio, LOW_HZ)
    removed = band_energy(out, HIGH_HZ) / band_energy(audio, HIGH_HZ)
    assert kept > 0.7, kept
    assert removed < 0.01, removed
    # Selecting the same row by its text gives the same audio.
    np.testing.assert_array_equal(salient_audio(result, audio, SR, token="tone", top_percent=10), out)


def test_top_percent_100_reconstructs_input() -> None:
    audio = two_tones()
    out = salient_audio(band_result(350.0, 700.0), audio, SR, token=0, top_percent=100)
    assert out.shape == audio.shape
    np.testing.assert_allclose(out, audio, atol=1e-4)


def test_length_preserved_for_odd_lengths_and_longer_audio() -> None:
    audio = two_tones()[:12345]
    out = salient_audio(band_result(350.0, 700.0), audio, SR, word=0, top_percent=20)
    assert out.shape == (12345,)
    # Audio beyond the maps' frames (e.g. past the model window) is silenced.
    longer = np.concatenate([two_tones(), two_tones()])
    out = salient_audio(band_result(0.0, 8000.0), longer, SR, token=0, top_percent=100)
    np.testing.assert_allclose(out[: SR - 400], longer[: SR - 400], atol=1e-4)
    assert np.abs(out[SR + 400 :]).max() < 1e-6


def test_utterance_map_default_and_tensor_input() -> None:
    audio = torch.from_numpy(two_tones())[None]
    out = salient_audio(band_result(350.0, 700.0), audio, SR, top_percent=50)
    assert out.shape == (SR,)


def test_sparse_map_keeps_only_marked_bins() -> None:
    saliency = np.zeros((80, 10))
    saliency[10:12] = 1.0  # fewer bins than the 50 % asked for
    mask = salient_mask(saliency, top_percent=50)
    assert mask.shape == (201, 10)
    assert 0 < mask.mean() < 0.1


def test_errors_name_the_argument(tmp_path) -> None:
    result = band_result(350.0, 700.0)
    audio = two_tones()
    with pytest.raises(ValueError, match="top_percent"):
        salient_audio(result, audio, SR, top_percent=0)
    with pytest.raises(ValueError, match="either token or word"):
        salient_audio(result, audio, SR, token=0, word=0)
    with pytest.raises(ValueError, match="frame_rate"):
        salient_audio(result, audio, 22050)
    with pytest.raises(ValueError, match="mono"):
        salient_audio(result, np.zeros((2, 100)), SR)


def test_write_salient_audio(tmp_path) -> None:
    result, audio = band_result(350.0, 700.0), two_tones()
    path = write_salient_audio(result, audio, SR, tmp_path / "tone.wav", token=0)
    data, rate = sf.read(str(path))
    assert rate == SR and data.shape == audio.shape
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_salient_audio(result, audio, SR, path, token=0)
    write_salient_audio(result, audio, SR, path, token=0, overwrite=True, top_percent=100)
    np.testing.assert_allclose(sf.read(str(path))[0], audio, atol=2e-4)
