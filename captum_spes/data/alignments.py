"""Time alignments (word / phone intervals) read from Praat TextGrid files.

Alignments let tests and tutorials check *where* in the audio an attribution
lands, e.g. that the saliency for the token "corpus" falls inside the word
interval of "corpus". Reading is delegated to ``praatio`` (an optional
dependency imported lazily, so importing this module never fails).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from captum_spes.errors import InputError

__all__ = ["AlignedInterval", "SILENCE_LABELS", "read_textgrid"]

PathLike = Union[str, "os.PathLike[str]"]

#: Labels that aligners use for silence / non-speech rather than a word or
#: phone: empty (MFA, Praat), "sil"/"sp"/"spn" (Kaldi, HTK, MFA ARPAbet),
#: "<eps>" (Kaldi/OpenFst), "<sil>"/"<s>"/"</s>" (CMU Sphinx). Compared
#: case-insensitively after stripping whitespace.
SILENCE_LABELS: frozenset[str] = frozenset({"", "sil", "sp", "spn", "<eps>", "<sil>", "<s>", "</s>", "sil_b", "sil_e"})


@dataclass(frozen=True)
class AlignedInterval:
    """A labelled time interval of an utterance.

    Attributes:
        start: Start time in seconds from the beginning of the audio.
        end: End time in seconds (``end >= start``).
        label: The word or phone, as written in the alignment file.
    """

    start: float
    end: float
    label: str

    def __post_init__(self) -> None:
        if not self.end >= self.start:
            raise InputError(
                f"AlignedInterval end ({self.end}) must be >= start ({self.start}) "
                f"for label {self.label!r}; swap or fix the times."
            )

    @property
    def duration(self) -> float:
        """Length of the interval in seconds."""
        return self.end - self.start

    def sample_slice(self, sampling_rate: int) -> slice:
        """Sample indices covered by this interval in a waveform.

        Args:
            sampling_rate: Sampling rate of the waveform in Hz.

        Returns:
            ``slice(round(start * sr), round(end * sr))`` for indexing an
            array of shape ``(num_samples,)``.
        """
        return slice(int(round(self.start * sampling_rate)), int(round(self.end * sampling_rate)))


def read_textgrid(
    path: PathLike,
    tier: str,
    *,
    drop_silence: bool = True,
    silence_labels: Iterable[str] | None = None,
) -> list[AlignedInterval]:
    """Read one interval tier of a Praat TextGrid.

    Args:
        path: TextGrid file (long or short text format, as written by Praat,
            MFA or praatio).
        tier: Name of the interval tier, e.g. ``"words"`` or ``"phones"``.
        drop_silence: If True (default), intervals whose label is a silence
            marker (see ``silence_labels``) are dropped, so the result holds
            only words/phones. If False, every interval of the tier is
            returned, including empty ones, so the intervals tile the file.
        silence_labels: Labels treated as silence when ``drop_silence`` is
            True (compared case-insensitively after stripping). Defaults to
            :data:`SILENCE_LABELS`.

    Returns:
        The tier's intervals in increasing time order, labels stripped of
        surrounding whitespace.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ImportError: If ``praatio`` is not installed.
        ValueError: If the file is not a readable TextGrid, if ``tier`` is
            missing (the message lists the available tiers), or if ``tier``
            is a point tier rather than an interval tier.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"TextGrid file not found: '{p}'; check the path argument.")
    try:
        from praatio import textgrid as _tg
    except ImportError as exc:  # pragma: no cover - praatio is a dependency
        raise ImportError("read_textgrid needs praatio; install it with `pip install 'praatio>=6.0'`.") from exc

    try:
        # Keep empty intervals here; dropping them is our decision below.
        grid = _tg.openTextgrid(str(p), includeEmptyIntervals=True)
    except Exception as exc:  # praatio raises several unrelated types
        raise InputError(
            f"could not parse '{p}' as a Praat TextGrid ({type(exc).__name__}: {exc}); "
            "pass a TextGrid in Praat's long or short text format."
        ) from exc

    names = list(grid.tierNames)
    if tier not in names:
        raise InputError(
            f"tier {tier!r} not found in '{p}'; available tiers: {names}. Pass one of these as the tier argument."
        )
    t = grid.getTier(tier)
    if not hasattr(t, "entries") or t.entryType.__name__ != "Interval":
        raise InputError(
            f"tier {tier!r} in '{p}' is a point tier, not an interval tier; "
            f"pass an interval tier (available tiers: {names})."
        )

    silence = {s.strip().lower() for s in (SILENCE_LABELS if silence_labels is None else silence_labels)}
    out: list[AlignedInterval] = []
    for entry in t.entries:
        label = str(entry.label).strip()
        if drop_silence and label.lower() in silence:
            continue
        out.append(AlignedInterval(float(entry.start), float(entry.end), label))
    out.sort(key=lambda iv: (iv.start, iv.end))
    return out
