#!/usr/bin/env python3
r"""Listen to an explanation: resynthesise only the salient time-frequency bins.

:func:`salient_audio` keeps the top ``top_percent`` % of a saliency map's time-frequency
bins in the *original* waveform and silences the rest:

1. The ``(n_mels, n_frames)`` map is carried to STFT resolution ``(n_fft // 2 + 1, n_frames)``
   through Whisper's mel filter bank (Slaney scale and norm): each STFT bin takes the
   average of the mel bins whose triangular filters cover it, weighted by each filter's
   response at that bin (the filter bank's rows, renormalised to sum to 1). A bin no filter
   covers (DC, Nyquist) takes the mel bin with the nearest centre frequency. Averaging
   rather than summing keeps the values on the map's scale, so a uniform map stays uniform.
2. The threshold is the ``100 - top_percent`` percentile over the speech frames; bins at or
   above it are kept. If that percentile equals the map's minimum (a sparse map marking
   fewer bins than asked for), only bins strictly above the minimum are kept, so ties at
   the bottom do not keep the whole signal.
3. The waveform's STFT (``scipy.signal.stft``, periodic Hann window, ``n_fft=400``,
   ``hop_length=160``: 25 ms / 10 ms at 16 kHz, frame ``t`` centred on sample
   ``t * hop_length``, as Whisper's features) is multiplied by the binary mask, keeping the
   original phase, and inverted with ``scipy.signal.istft``; the output is trimmed to the
   input length. The one trailing STFT frame Whisper's extractor drops follows the last map
   frame; any further frames (audio past the maps, e.g. past the model's window) are silenced.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from captum_spes._core.result import SPESResult
from captum_spes._utils.files import atomic_write, refuse_overwrite
from captum_spes.errors import InputError

__all__ = ["mel_to_stft_weights", "salient_audio", "salient_mask", "write_salient_audio"]

ArrayLike = np.ndarray | torch.Tensor


def mel_to_stft_weights(n_mels: int = 80, sampling_rate: int = 16000, n_fft: int = 400) -> np.ndarray:
    r"""Weights carrying a mel-bin map to STFT bins (see the module docstring).

    Args:
        n_mels (int, optional): Default: 80
        sampling_rate (int, optional): Hz. Default: 16000
        n_fft (int, optional): FFT size. Default: 400

    Returns:
        *ndarray* ``(n_fft // 2 + 1, n_mels)``, rows summing to 1: ``weights @ mel_map`` is
        the map at STFT resolution.
    """
    from transformers.audio_utils import mel_filter_bank

    from captum_spes.visualization.plots import mel_frequencies

    bins = n_fft // 2 + 1
    bank = mel_filter_bank(
        num_frequency_bins=bins,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=sampling_rate / 2.0,
        sampling_rate=sampling_rate,
        norm="slaney",
        mel_scale="slaney",
    ).astype(np.float64)  # (bins, n_mels), the same matrix as Whisper's feature extractor
    totals = bank.sum(axis=1, keepdims=True)
    weights = np.divide(bank, totals, out=np.zeros_like(bank), where=totals > 0)
    uncovered = np.flatnonzero(totals[:, 0] <= 0)
    if uncovered.size:
        stft_hz = np.linspace(0.0, sampling_rate / 2.0, bins)
        centres = mel_frequencies(n_mels, sampling_rate)
        nearest = np.abs(stft_hz[uncovered, None] - centres[None, :]).argmin(axis=1)
        weights[uncovered, nearest] = 1.0
    return weights


def _select_map(result: SPESResult, token: int | str | None, word: int | str | None) -> np.ndarray:
    from captum_spes.visualization.plots import _word_row, token_index

    if token is not None and word is not None:
        raise InputError("pass either token or word, not both (or neither for the utterance map)")
    if token is not None:
        values = result.spectrogram_attr[token_index(result, token)]
    elif word is not None:
        words = result.to_words()
        values = words.spectrogram_attr[_word_row(words, word)]
    else:
        values = result.utterance_map()
    return values.detach().cpu().double().numpy()


def salient_mask(
    saliency: ArrayLike,
    top_percent: float = 10.0,
    sampling_rate: int = 16000,
    n_fft: int = 400,
) -> np.ndarray:
    r"""Binary STFT mask of the top ``top_percent`` % bins of a mel saliency map.

    Args:
        saliency (Tensor or ndarray): ``(n_mels, n_frames)`` over speech frames.
        top_percent (float, optional): in (0, 100]. Default: 10.0
        sampling_rate (int, optional): Hz. Default: 16000
        n_fft (int, optional): Default: 400

    Returns:
        *ndarray* bool ``(n_fft // 2 + 1, n_frames)``.
    """
    if not 0.0 < float(top_percent) <= 100.0:
        raise InputError(f"top_percent must be in (0, 100], got {top_percent}")
    values = (
        saliency.detach().cpu().double().numpy()
        if isinstance(saliency, torch.Tensor)
        else np.asarray(saliency, dtype=np.float64)
    )
    if values.ndim != 2:
        raise InputError(f"saliency must be (n_mels, n_frames), got shape {values.shape}")
    stft_map = mel_to_stft_weights(values.shape[0], sampling_rate, n_fft) @ values
    if top_percent >= 100.0:
        return np.ones(stft_map.shape, dtype=bool)
    threshold = np.percentile(stft_map, 100.0 - float(top_percent))
    floor = stft_map.min()
    if threshold <= floor:
        return stft_map > floor
    return stft_map >= threshold


def salient_audio(
    result: SPESResult,
    waveform: ArrayLike,
    sampling_rate: int = 16000,
    token: int | str | None = None,
    word: int | str | None = None,
    top_percent: float = 10.0,
    n_fft: int = 400,
    hop_length: int = 160,
) -> np.ndarray:
    r"""The waveform with only the top ``top_percent`` % salient time-frequency bins kept.

    Args:
        result (SPESResult): the explanation of ``waveform``.
        waveform (ndarray or Tensor): mono audio ``(num_samples,)`` (or ``(1, num_samples)``)
            at ``sampling_rate``, the audio the features were computed from.
        sampling_rate (int, optional): Hz; ``sampling_rate / hop_length`` must equal
            ``result.frame_rate``. Default: 16000
        token (int or str, optional): a token's map (index or text). Default: None
        word (int or str, optional): a word's map (rows of ``result.to_words()``).
            Default: None; with neither, the utterance map (:meth:`SPESResult.utterance_map`).
        top_percent (float, optional): share of the bins over speech frames to keep, in
            (0, 100]. Default: 10.0
        n_fft (int, optional): STFT size (Whisper: 400). Default: 400
        hop_length (int, optional): STFT hop (Whisper: 160). Default: 160

    Returns:
        *ndarray* float32 ``(num_samples,)``, the same length as ``waveform``.

    Raises:
        InputError: if ``waveform`` is not mono, is shorter than ``n_fft`` samples (one STFT
            window: 25 ms at 16 kHz), or its rate does not match ``result.frame_rate``.
    """
    from scipy.signal import istft, stft

    audio = (
        waveform.detach().cpu().double().numpy()
        if isinstance(waveform, torch.Tensor)
        else np.asarray(waveform, dtype=np.float64)
    )
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1:
        raise InputError(f"waveform must be mono (num_samples,), got shape {audio.shape}")
    if audio.shape[0] < n_fft:
        raise InputError(
            f"waveform has {audio.shape[0]} samples, fewer than one STFT window (n_fft={n_fft}, "
            f"{1000 * n_fft / sampling_rate:g} ms at {sampling_rate} Hz); pass at least {n_fft} samples"
        )
    if abs(sampling_rate / hop_length - result.frame_rate) > 1e-6:
        raise InputError(
            f"sampling_rate / hop_length = {sampling_rate / hop_length:g} frames/s does not "
            f"match result.frame_rate = {result.frame_rate:g}; resample the waveform to 16 kHz "
            "or pass the hop_length the features used"
        )
    mask = salient_mask(_select_map(result, token, word), top_percent, sampling_rate, n_fft)
    # boundary="zeros" pads n_fft // 2 on each side, so frame t is centred on t * hop_length.
    options = dict(
        fs=sampling_rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop_length, boundary="zeros", padded=True
    )
    _, _, spectrum = stft(audio, **options)
    full_mask = np.zeros(spectrum.shape, dtype=bool)
    frames = min(spectrum.shape[1], mask.shape[1])
    full_mask[:, :frames] = mask[:, :frames]
    if spectrum.shape[1] == mask.shape[1] + 1:
        # Whisper's extractor drops the last STFT frame (len // hop frames of len // hop + 1):
        # that frame still holds the clip's tail, so it follows the last map frame.
        full_mask[:, -1] = mask[:, -1]
    _, restored = istft(
        np.where(full_mask, spectrum, 0.0),
        fs=sampling_rate,
        window="hann",
        nperseg=n_fft,
        noverlap=n_fft - hop_length,
        boundary=True,
    )
    out = np.zeros(audio.shape[0], dtype=np.float64)
    length = min(audio.shape[0], restored.shape[0])
    out[:length] = restored[:length]
    return out.astype(np.float32)


def write_salient_audio(
    result: SPESResult,
    waveform: ArrayLike,
    sampling_rate: int,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    **kwargs: object,
) -> Path:
    r"""Write :func:`salient_audio` as a 16-bit PCM WAV file.

    Args:
        result, waveform, sampling_rate: as for :func:`salient_audio`.
        path (str or PathLike): the ``.wav`` file.
        overwrite (bool, optional): replace an existing file. Default: False
        **kwargs: ``token``, ``word``, ``top_percent``, ``n_fft``, ``hop_length``.

    Returns:
        *Path* of the written file.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    import soundfile as sf

    target = refuse_overwrite(path, overwrite)
    audio = salient_audio(result, waveform, sampling_rate, **kwargs)  # type: ignore[arg-type]
    with atomic_write(target) as temporary:
        sf.write(str(temporary), np.clip(audio, -1.0, 1.0), sampling_rate, subtype="PCM_16", format="WAV")
    return target
