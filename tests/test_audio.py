"""Tests for captum_spes.audio.load_audio and helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from captum_spes.audio import (
    SILENCE_PEAK_THRESHOLD,
    AudioError,
    duration_seconds,
    load_audio,
    resample,
    to_mono,
)


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_freq(x: np.ndarray, sr: int) -> float:
    # Hann window keeps leakage from moving the peak bin.
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("file_sr", [44100, 8000, 16000, 48000, 22050])
def test_resamples_to_expected_length_and_keeps_frequency(tmp_path: Path, file_sr: int) -> None:
    seconds, freq = 1.5, 440.0
    path = tmp_path / f"sine_{file_sr}.wav"
    sf.write(path, _sine(freq, file_sr, seconds), file_sr, subtype="PCM_16")

    y = load_audio(path)

    assert y.dtype == np.float32 and y.ndim == 1
    expected = int(np.ceil(int(round(file_sr * seconds)) * 16000 / file_sr))
    assert y.shape[0] == expected
    assert abs(duration_seconds(y, 16000) - seconds) < 1e-3
    # FFT bin width is 1/1.5 s ~ 0.67 Hz.
    assert abs(_peak_freq(y, 16000) - freq) < 1.0
    # resample_poly's anti-aliasing filter should not change the level much.
    assert 0.45 < float(np.max(np.abs(y[1000:-1000]))) < 0.55


def test_custom_target_rate(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    sf.write(path, _sine(300.0, 16000, 1.0), 16000)
    y = load_audio(path, sampling_rate=8000)
    assert y.shape == (8000,)
    assert abs(_peak_freq(y, 8000) - 300.0) < 1.5


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left = _sine(200.0, 16000, 0.5, amp=0.4)
    right = _sine(1000.0, 16000, 0.5, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    y = load_audio(path)
    assert y.shape == left.shape
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


def test_flac_and_ogg_are_read(tmp_path: Path) -> None:
    x = _sine(500.0, 16000, 1.0)
    flac, ogg = tmp_path / "a.flac", tmp_path / "a.ogg"
    sf.write(flac, x, 16000, format="FLAC", subtype="PCM_16")
    sf.write(ogg, x, 16000, format="OGG", subtype="VORBIS")
    y_flac = load_audio(flac)
    np.testing.assert_allclose(y_flac, x, atol=1e-4)
    y_ogg = load_audio(ogg)
    # Vorbis is lossy and may pad; frequency and rough length must survive.
    assert abs(y_ogg.shape[0] - x.shape[0]) < 2048
    assert abs(_peak_freq(y_ogg, 16000) - 500.0) < 1.5


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found") as ei:
        load_audio(missing)
    assert str(missing) in str(ei.value)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 3)
    with pytest.raises(AudioError, match="could not decode") as ei:
        load_audio(bad)
    msg = str(ei.value)
    assert str(bad) in msg and "WAV" in msg and "FLAC" in msg


def test_text_file_is_unsupported(tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(AudioError, match="Supported formats"):
        load_audio(txt)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(empty)


def test_zero_byte_file(tmp_path: Path) -> None:
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    with pytest.raises(AudioError):
        load_audio(zero)


def test_silent_file(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="silent") as ei:
        load_audio(silent)
    assert "allow_silence=True" in str(ei.value)
    y = load_audio(silent, allow_silence=True)
    assert y.shape == (16000,) and not np.any(y)


def test_near_silent_threshold(tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, _sine(440.0, 16000, 0.5, amp=SILENCE_PEAK_THRESHOLD / 4), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="silent"):
        load_audio(quiet)
    audible = tmp_path / "audible.wav"
    sf.write(audible, _sine(440.0, 16000, 0.5, amp=SILENCE_PEAK_THRESHOLD * 10), 16000, subtype="FLOAT")
    assert load_audio(audible).shape == (8000,)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_samples(tmp_path: Path, value: float) -> None:
    x = _sine(440.0, 16000, 0.5)
    x[100] = value
    path = tmp_path / "nonfinite.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(path)


def test_audio_error_is_value_error() -> None:
    assert issubclass(AudioError, ValueError)


def test_long_audio_is_not_rejected(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, _sine(440.0, 8000, 35.0), 8000, subtype="PCM_16")
    y = load_audio(path)
    assert y.shape == (35 * 16000,)


def test_helpers() -> None:
    assert duration_seconds(np.zeros(24000), 16000) == 1.5
    with pytest.raises(AudioError, match="sampling_rate"):
        duration_seconds(np.zeros(10), 0)
    with pytest.raises(AudioError, match="orig_sr"):
        resample(np.zeros(10), -1, 16000)
    assert resample(np.zeros(441), 44100, 16000).shape == (160,)
    assert to_mono(np.ones((5, 3))).shape == (5,)
    with pytest.raises(AudioError, match="shape"):
        to_mono(np.ones((2, 2, 2)))
