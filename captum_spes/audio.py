"""Loading audio files into the waveform format expected by the explainers.

Every explainer in captum-spes works on a 1-D ``float32`` waveform sampled at
16 kHz (the rate of Whisper's feature extractor). :func:`load_audio` turns any
file that libsndfile can decode (WAV, FLAC, OGG/Vorbis, AIFF, and MP3 with
libsndfile >= 1.1; any sample encoding, 8-bit included) into that format;
:func:`read_audio` does the same and also reports the file's encoding and the
conversions made (the command line prints them):

* multi-channel audio is mixed down to mono by averaging the channels;
* any sampling rate is converted with :func:`scipy.signal.resample_poly`
  using the exact rational factor ``target / source`` reduced by their gcd,
  so 44.1 kHz -> 16 kHz is ``up=160, down=441`` with no rate drift;
* inputs that cannot be explained meaningfully (empty, all-silent,
  containing NaN/inf) raise :class:`AudioError` naming the file and the fix.

Clip length is deliberately **not** checked on loading: whether to truncate,
chunk, or refuse long audio (more than 30 s, Whisper's window) is a decision
of the layer that knows the model. :func:`check_clip_length` is that check for
the command line: at least :data:`MIN_SECONDS`, at most the model's window.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from captum_spes.errors import InputError

__all__ = [
    "AudioError",
    "AudioFile",
    "MIN_SECONDS",
    "SILENCE_PEAK_THRESHOLD",
    "TARGET_SAMPLING_RATE",
    "check_clip_length",
    "duration_seconds",
    "load_audio",
    "read_audio",
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

#: Shortest clip the explainers take, in seconds: one 25 ms window of Whisper's STFT
#: (``n_fft = 400`` samples at 16 kHz). Whisper's feature extractor pads anything to 30 s,
#: but the listenable explanation (:func:`~captum_spes.visualization.salient_audio`)
#: resynthesises the clip's own STFT, which needs one whole window.
MIN_SECONDS: float = 0.025


class AudioError(InputError):
    """Raised when an audio file or waveform cannot be used as model input.

    An :class:`~captum_spes.errors.InputError`, hence a :class:`ValueError`, so callers
    that already guard against bad arguments with ``except ValueError`` keep working.
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


@dataclass(frozen=True)
class AudioFile:
    """A decoded audio file and what :func:`read_audio` did to it.

    Attributes:
        path (Path): the file.
        waveform (ndarray): mono ``float32`` ``(num_samples,)`` at ``sampling_rate``.
        sampling_rate (int): Hz of ``waveform``.
        file_sampling_rate (int): Hz of the file.
        channels (int): channels in the file (mixed down to mono when more than one).
        file_format (str): container as libsndfile names it, e.g. ``"WAV"``, ``"MP3"``.
        subtype (str): sample encoding, e.g. ``"PCM_16"``, ``"PCM_U8"``, ``"FLOAT"``.
    """

    path: Path
    waveform: np.ndarray
    sampling_rate: int
    file_sampling_rate: int
    channels: int
    file_format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return duration_seconds(self.waveform, self.sampling_rate)

    def conversions(self) -> list[str]:
        """What was changed to reach mono audio at ``sampling_rate``, in words (empty if nothing)."""
        done = []
        if self.channels > 1:
            done.append(f"mixed {self.channels} channels down to mono (their average)")
        if self.file_sampling_rate != self.sampling_rate:
            done.append(f"resampled {self.file_sampling_rate} Hz to {self.sampling_rate} Hz")
        return done

    def describe(self) -> str:
        """One line: the file, its duration and encoding, and the conversions made."""
        layout = "mono" if self.channels == 1 else f"{self.channels} channels"
        encoding = f"{self.file_format} {self.subtype}, {layout} at {self.file_sampling_rate} Hz"
        line = f"{self.path} ({self.duration:.2f} s; {encoding})"
        done = self.conversions()
        return f"{line}: {'; '.join(done)}" if done else line


def _supported_formats() -> str:
    import soundfile as sf

    common = "WAV, FLAC, OGG/Vorbis, AIFF"
    if "MP3" in sf.available_formats():
        return common + ", MP3"
    return f"{common} (MP3 needs libsndfile >= 1.1; this one is {sf.__libsndfile_version__})"


def read_audio(
    path: PathLike,
    sampling_rate: int = TARGET_SAMPLING_RATE,
    *,
    allow_silence: bool = False,
) -> AudioFile:
    """Read an audio file as mono ``float32`` at ``sampling_rate``; say what was converted.

    Args:
        path: Audio file readable by libsndfile (WAV, FLAC, OGG/Vorbis, AIFF, MP3 with
            libsndfile >= 1.1; any sample encoding, 8-bit included).
        sampling_rate: Output sampling rate in Hz. Defaults to 16 kHz, the rate Whisper
            expects; the file is resampled if it differs.
        allow_silence: If False (default), a file whose peak amplitude is below
            :data:`SILENCE_PEAK_THRESHOLD` raises :class:`AudioError`: there is nothing in
            it to explain, and Whisper transcribes silence as invented words. Set True to
            load it anyway (e.g. to build a baseline).

    Returns:
        *AudioFile* whose ``waveform`` has shape ``(num_samples,)``, values in roughly
        ``[-1, 1]`` (full scale), where ``num_samples = ceil(frames * sampling_rate / file_rate)``.

    Raises:
        AudioError: If the file is missing, is a directory, cannot be decoded, contains no
            samples, contains NaN/inf, or is silent (unless ``allow_silence``). Each message
            names the path and the fix.
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
        with sf.SoundFile(str(p)) as handle:
            # always_2d gives (frames, channels) for every file, so mono and
            # multi-channel files go through the same mixing path.
            data = handle.read(dtype="float32", always_2d=True)
            file_sr, file_format, subtype = int(handle.samplerate), handle.format, handle.subtype
    except (sf.SoundFileError, RuntimeError, TypeError) as exc:
        # libsndfile reports unknown containers, truncated headers and
        # unsupported codecs all as errors from the open call.
        reason = str(exc).rstrip(". ")
        raise AudioError(
            f"could not decode audio file '{p}': {reason}. Supported formats are "
            f"{_supported_formats()}; convert other formats first, e.g. "
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
            "explain; check the recording (from Python, load_audio(..., allow_silence=True) "
            "loads it anyway)."
        )
    return AudioFile(
        path=p,
        waveform=resample(mono, file_sr, sampling_rate),
        sampling_rate=sampling_rate,
        file_sampling_rate=file_sr,
        channels=int(data.shape[1]),
        file_format=file_format,
        subtype=subtype,
    )


def load_audio(
    path: PathLike,
    sampling_rate: int = TARGET_SAMPLING_RATE,
    *,
    allow_silence: bool = False,
) -> np.ndarray:
    """Read an audio file as a mono float32 waveform at ``sampling_rate``.

    The waveform of :func:`read_audio` (see there for the arguments and errors), which also
    reports the file's encoding and what was converted.

    Returns:
        Waveform of shape ``(num_samples,)``, dtype ``float32``.
    """
    return read_audio(path, sampling_rate, allow_silence=allow_silence).waveform


def check_clip_length(
    waveform: np.ndarray,
    sampling_rate: int,
    source: str,
    *,
    max_seconds: float | None = None,
) -> None:
    """Refuse a clip shorter than :data:`MIN_SECONDS` or longer than ``max_seconds``.

    Args:
        waveform: Signal of shape ``(num_samples,)``.
        sampling_rate: Hz of ``waveform``.
        source: How the message names the clip (a path or a sample name).
        max_seconds: The longest clip the model takes in one window (Whisper: 30). Default:
            None (no upper limit).

    Raises:
        AudioError: naming the clip's length, the limit and the fix.
    """
    seconds = duration_seconds(waveform, sampling_rate)
    num_samples = int(np.shape(waveform)[0])
    if num_samples < round(MIN_SECONDS * sampling_rate):
        raise AudioError(
            f"{source} is {seconds * 1000:.1f} ms long ({num_samples} samples at {sampling_rate} Hz), "
            f"shorter than one 25 ms analysis window; pass at least {MIN_SECONDS * 1000:.0f} ms of audio"
        )
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"{source} is {seconds:.1f} s long, but Whisper's window is {max_seconds:.0f} s; "
            f"trim or split the audio into clips of at most {max_seconds:.0f} s, e.g. "
            "`sox in.wav out.wav trim 0 30`"
        )
