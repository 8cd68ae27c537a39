"""Loading audio files into the waveform format expected by the explainers.

Every explainer in captum-spes works on a 1-D ``float32`` waveform sampled at
16 kHz (the rate of Whisper's feature extractor). :func:`load_audio` turns any
file that libsndfile can decode (WAV, FLAC, OGG/Vorbis, AIFF, and MP3 with
libsndfile >= 1.1) into that format:

* multi-channel audio is mixed down to mono by averaging the channels;
* any sampling rate is converted with :func:`scipy.signal.resample_poly`
  using the exact rational factor ``target / source`` reduced by their gcd,
  so 44.1 kHz -> 16 kHz is ``up=160, down=441`` with no rate drift;
* inputs that cannot be explained meaningfully (empty, all-silent,
  containing NaN/inf) raise :class:`AudioError` naming the file and the fix.

Long audio (more than 30 s, Whisper's window) is deliberately **not**
rejected here: whether to truncate, chunk, or refuse is a model-level
decision, made by the model/explainer layer that knows the window size.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Union

import numpy as np

__all__ = [
    "AudioError",
    "SILENCE_PEAK_THRESHOLD",
    "TARGET_SAMPLING_RATE",
    "duration_seconds",
    "load_audio",
    "resample",
    "to_mono",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Sampling rate (Hz) used by Whisper feature extractors and by this library.
TARGET_SAMPLING_RATE: int = 16000

#: Peak absolute amplitude (full scale = 1.0) below which a file is considered
#: silent. 1e-4 is about -80 dBFS, i.e. below the least significant bits of
#: typical 16-bit recordings' noise floor: nothing there to attribute.
SILENCE_PEAK_THRESHOLD: float = 1e-4

_SUPPORTED_FORMATS_HINT = "WAV, FLAC, OGG/Vorbis, AIFF (and MP3 if your libsndfile is >= 1.1)"


class AudioError(ValueError):
    """Raised when an audio file or waveform cannot be used as model input.

    Subclasses :class:`ValueError` so callers that already guard against bad
    arguments with ``except ValueError`` keep working.
    """


def to_mono(data: np.ndarray) -> np.ndarray:
    """Mix a (possibly multi-channel) signal down to mono.

    Args:
        data: Array of shape ``(num_samples,)`` or ``(num_samples, channels)``
            (the layout returned by :func:`soundfile.read`).

    Returns:
        Array of shape ``(num_samples,)``; channels are averaged (not summed)
        so that the mix cannot clip.

    Raises:
        AudioError: If ``data`` has more than 2 dimensions.
    """
    if data.ndim == 1:
        return data
    if data.ndim == 2:
        return data.mean(axis=1)
    raise AudioError(
        f"audio data must have shape (num_samples,) or (num_samples, channels), "
        f"got shape {data.shape}; pass a 1-D or 2-D array."
    )


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono waveform by an exact rational factor.

    Args:
        waveform: Mono signal of shape ``(num_samples,)``.
        orig_sr: Sampling rate of ``waveform`` in Hz (positive integer).
        target_sr: Desired sampling rate in Hz (positive integer).

    Returns:
        Resampled signal of shape ``(ceil(num_samples * target_sr / orig_sr),)``
        with dtype ``float32``. Returned unchanged (as float32) if the rates
        are equal.

    Raises:
        AudioError: If either rate is not a positive integer.
    """
    for arg_name, rate in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if int(rate) != rate or rate <= 0:
            raise AudioError(f"{arg_name} must be a positive integer number of Hz, got {rate!r}.")
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr == target_sr:
        return np.asarray(waveform, dtype=np.float32)
    # Reducing by the gcd keeps the polyphase filter as short as possible
    # while the ratio stays exact (no cumulative timing drift).
    g = math.gcd(orig_sr, target_sr)
    from scipy.signal import resample_poly  # lazy: scipy import is slow

    out = resample_poly(np.asarray(waveform, dtype=np.float64), target_sr // g, orig_sr // g)
    return out.astype(np.float32)


def duration_seconds(waveform: np.ndarray, sampling_rate: int) -> float:
    """Duration of a waveform in seconds.

    Args:
        waveform: Signal of shape ``(num_samples,)`` or
            ``(num_samples, channels)``; only the first axis is used.
        sampling_rate: Sampling rate in Hz (positive).

    Returns:
        ``num_samples / sampling_rate``.

    Raises:
        AudioError: If ``sampling_rate`` is not positive.
    """
    if sampling_rate <= 0:
        raise AudioError(
            f"sampling_rate must be positive, got {sampling_rate!r}; pass the rate in Hz, e.g. {TARGET_SAMPLING_RATE}."
        )
    return float(np.shape(waveform)[0]) / float(sampling_rate)


def load_audio(
    path: PathLike,
    sampling_rate: int = TARGET_SAMPLING_RATE,
    *,
    allow_silence: bool = False,
) -> np.ndarray:
    """Read an audio file as a mono float32 waveform at ``sampling_rate``.

    Args:
        path: Audio file readable by libsndfile (WAV, FLAC, OGG/Vorbis, ...).
        sampling_rate: Output sampling rate in Hz. Defaults to 16 kHz, the
            rate Whisper expects; the file is resampled if it differs.
        allow_silence: If False (default), a file whose peak amplitude is
            below :data:`SILENCE_PEAK_THRESHOLD` raises :class:`AudioError`,
            because there is nothing in it to explain. Set True to load it
            anyway (e.g. to build a baseline).

    Returns:
        Waveform of shape ``(num_samples,)``, dtype ``float32``, values in
        roughly ``[-1, 1]`` (full scale), where
        ``num_samples = ceil(frames * sampling_rate / file_rate)``.

    Raises:
        AudioError: If the file is missing, is a directory, cannot be decoded,
            contains no samples, contains NaN/inf, or is silent (unless
            ``allow_silence``). Each message names the path and the fix.
    """
    import soundfile as sf  # lazy: keeps `import captum_spes` light

    p = Path(os.fspath(path))
    if not p.exists():
        raise AudioError(
            f"audio file not found: '{p}'. Check the path (relative paths are "
            f"resolved against the working directory '{Path.cwd()}')."
        )
    if p.is_dir():
        raise AudioError(f"audio path '{p}' is a directory; pass the path of an audio file.")
    try:
        # always_2d gives (frames, channels) for every file, so mono and
        # multi-channel files go through the same mixing path.
        data, file_sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, TypeError) as exc:
        # libsndfile reports unknown containers, truncated headers and
        # unsupported codecs all as errors from the open call.
        raise AudioError(
            f"could not decode audio file '{p}': {exc}. Supported formats are "
            f"{_SUPPORTED_FORMATS_HINT}; convert other formats first, e.g. "
            f"`ffmpeg -i input -ar {sampling_rate} -ac 1 output.wav` or "
            f"`sox input -r {sampling_rate} -c 1 output.wav`."
        ) from exc

    if data.shape[0] == 0:
        raise AudioError(f"audio file '{p}' contains no samples (0 frames); pass a file with recorded audio.")
    if not np.all(np.isfinite(data)):
        # Float WAV/FLAC can store NaN/inf; they would poison every
        # downstream spectrogram and attribution silently.
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise AudioError(
            f"audio file '{p}' contains {bad} non-finite samples (NaN or inf); "
            "re-export it from the source or repair it, e.g. replace them with 0."
        )

    mono = to_mono(data)
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK_THRESHOLD and not allow_silence:
        raise AudioError(
            f"audio file '{p}' is silent (peak amplitude {peak:.2e} < "
            f"{SILENCE_PEAK_THRESHOLD:.0e} full scale), so there is nothing to "
            "explain; check the recording, or pass allow_silence=True to load "
            "it anyway."
        )
    return resample(mono, int(file_sr), sampling_rate)
