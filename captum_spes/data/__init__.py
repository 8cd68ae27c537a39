"""Small set of real recorded speech clips shipped with captum-spes.

The clips are for tutorials, tests and benchmarks: they let an explanation be
computed without any download. Each sample is a folder under
``captum_spes/data/samples/<name>/`` with the audio, ``transcript.txt``,
``meta.json`` (language, license, alignment file) and ``ATTRIBUTION.md``
(source package, original path, author, full license text, changes).
See ``samples/README.md`` for the list.

Example:
    >>> from captum_spes.data import list_samples, load_sample
    >>> s = load_sample("acoustic_corpus")
    >>> s.waveform.shape, s.sampling_rate
    ((427572,), 16000)
    >>> s.words[0]
    AlignedInterval(start=1.05, end=1.2, label='this')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from captum_spes.audio import TARGET_SAMPLING_RATE, load_audio
from captum_spes.data.alignments import AlignedInterval, read_textgrid
from captum_spes.errors import InputError

__all__ = ["AlignedInterval", "Sample", "list_samples", "load_sample", "read_textgrid"]

_SAMPLES_PACKAGE = "captum_spes.data"
_SAMPLES_DIR = "samples"


@dataclass(frozen=True)
class Sample:
    """One vendored speech clip with its transcript and optional alignment.

    Attributes:
        name: Sample name, as accepted by :func:`load_sample`.
        waveform: Mono audio, shape ``(num_samples,)``, dtype ``float32``,
            values in ``[-1, 1]``, at ``sampling_rate``.
        sampling_rate: Always 16000 (Hz).
        transcript: Reference transcript in the spoken language.
        language: ISO 639-1 code of the spoken language (``"en"``, ``"sv"``,
            ``"ja"``, ...); non-English clips are meant for speech translation.
        words: Word intervals in seconds (silence dropped), in time order, or
            None if the sample has no alignment.
        phones: Phone intervals in seconds (silence dropped), or None.
        path: Path of the audio file inside the installed package.
        license: Short license statement, e.g. ``"MIT"``.
        attribution: One-line credit; full details are in
            ``path.parent / "ATTRIBUTION.md"``.
    """

    name: str
    waveform: np.ndarray = field(repr=False)
    sampling_rate: int
    transcript: str
    language: str
    words: list[AlignedInterval] | None = field(repr=False)
    phones: list[AlignedInterval] | None = field(repr=False)
    path: Path
    license: str
    attribution: str

    @property
    def duration(self) -> float:
        """Length of the clip in seconds."""
        return self.waveform.shape[0] / self.sampling_rate


def _samples_root() -> Path:
    # importlib.resources resolves the folder inside an installed wheel as well
    # as in a source checkout; the package is never zipped (setuptools
    # installs it as plain files), so a real filesystem Path is available.
    root = resources.files(_SAMPLES_PACKAGE).joinpath(_SAMPLES_DIR)
    return Path(str(root))


def list_samples() -> list[str]:
    """Names of all vendored samples.

    Returns:
        Sorted sample names, e.g. ``["acoustic_corpus", "jfk", ...]``.
    """
    root = _samples_root()
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and (d / "meta.json").is_file())


def _read_meta(folder: Path) -> dict[str, Any]:
    with open(folder / "meta.json", encoding="utf-8") as fh:
        return json.load(fh)


def load_sample(name: str) -> Sample:
    """Load a vendored speech sample.

    Args:
        name: One of :func:`list_samples`, e.g. ``"acoustic_corpus"`` (26.7 s,
            with word and phone alignment) or ``"librivox_0880"`` (3 s).

    Returns:
        The :class:`Sample`, with the waveform at 16 kHz.

    Raises:
        ValueError: If ``name`` is not a known sample (the message lists the
            available names).
    """
    available = list_samples()
    if name not in available:
        raise InputError(
            f"unknown sample name {name!r}; available samples: {available}. Pass one of these names to load_sample()."
        )
    folder = _samples_root() / name
    meta = _read_meta(folder)
    audio_path = folder / meta["audio"]
    waveform = load_audio(audio_path, TARGET_SAMPLING_RATE)
    transcript = (folder / "transcript.txt").read_text(encoding="utf-8").strip()

    words: list[AlignedInterval] | None = None
    phones: list[AlignedInterval] | None = None
    if meta.get("textgrid"):
        tg_path = folder / meta["textgrid"]
        words = read_textgrid(tg_path, meta.get("word_tier", "words"))
        if meta.get("phone_tier"):
            phones = read_textgrid(tg_path, meta["phone_tier"])

    return Sample(
        name=name,
        waveform=waveform,
        sampling_rate=TARGET_SAMPLING_RATE,
        transcript=transcript,
        language=meta["language"],
        words=words,
        phones=phones,
        path=audio_path,
        license=meta["license"],
        attribution=meta["attribution"],
    )
