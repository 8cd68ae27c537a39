"""``--autocast``: the precision of the teacher-forced passes, given or chosen by measurement.

The hypothesis is always decoded by the model in its own dtype; only the masked passes (and
the clean pass they are compared with) run under ``torch.autocast``. ``auto`` times one
batch in the model's dtype and one in bfloat16 and keeps bfloat16 only where it is clearly
faster: on a 2-core CPU with native bfloat16 instructions tiny.en's batches ran 1.4-1.7 times
faster, and on the same masks the default design's maps equalled float32's to a Spearman of
0.999 per token (docs/results.md, "bfloat16 passes"); on a CPU without those instructions
bfloat16 can be slower.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``--autocast`` values: a dtype name, ``none`` (the model's dtype) or ``auto``.
AUTOCAST_CHOICES: tuple[str, ...] = ("none", "bfloat16", "float16", "auto")
#: ``auto`` keeps bfloat16 only when its batch is at least this many times faster than float32.
AUTO_MIN_SPEEDUP: float = 1.25

#: ``measure(wrapper, features, batch) -> (spectrogram batch seconds, token batch seconds)``
Measure = Callable[[Any, Any, int], tuple[float, float]]


@dataclass
class Precision:
    """The wrapper the attribution runs with, its measured batch times, and what to print.

    Attributes:
        wrapper (SpeechSeq2SeqWrapper): float32 or autocast; its hypothesis is set.
        batch_s (float): seconds of one spectrogram batch with this wrapper.
        token_s (float): seconds of one decoder-only token batch with this wrapper.
        message (str): one line saying which precision runs and why.
    """

    wrapper: Any
    batch_s: float
    token_s: float
    message: str


def _dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def choose_precision(wrapper: Any, features: Any, batch: int, option: str, measure: Measure) -> Precision:
    r"""The wrapper for ``--autocast option``.

    Args:
        wrapper (SpeechSeq2SeqWrapper): the float32 wrapper, hypothesis set.
        features (Tensor): the utterance, e.g. ``(1, 80, 3000)``.
        batch (int): rows per batch (``--batch-size``).
        option (str): one of :data:`AUTOCAST_CHOICES`.
        measure (Measure): times one spectrogram and one token batch of a wrapper (the
            float32 one unless a dtype is named, the autocast one unless ``none``).

    Returns:
        *Precision*: for ``none`` the given wrapper; for a dtype a wrapper under autocast in
        it; for ``auto`` whichever of float32 and bfloat16 is faster by
        :data:`AUTO_MIN_SPEEDUP`.
    """
    if option not in AUTOCAST_CHOICES:
        raise ValueError(f"--autocast must be one of {', '.join(AUTOCAST_CHOICES)}, got {option!r}")
    if option == "none":
        own = "Precision: the model's own dtype (--autocast none)"
        return Precision(wrapper, *measure(wrapper, features, batch), own)
    fast = _autocast_wrapper(wrapper, features, "bfloat16" if option == "auto" else option)
    if option != "auto":
        return Precision(fast, *measure(fast, features, batch), f"Precision: {option} autocast (--autocast {option})")
    timed = measure(wrapper, features, batch)
    fast_s, fast_token_s = measure(fast, features, batch)
    speedup = timed[0] / fast_s
    own = str(next(wrapper.model.parameters()).dtype).removeprefix("torch.")
    if speedup >= AUTO_MIN_SPEEDUP:
        return Precision(
            fast,
            fast_s,
            fast_token_s,
            f"Precision: bfloat16 autocast, {speedup:.1f}x faster than {own} here ({fast_s:.2f} s against "
            f"{timed[0]:.2f} s per batch; --autocast auto; --autocast none keeps {own})",
        )
    return Precision(
        wrapper,
        *timed,
        f"Precision: {own} (bfloat16 autocast measured {fast_s:.2f} s against {timed[0]:.2f} s per batch, "
        f"less than {AUTO_MIN_SPEEDUP}x faster here; --autocast auto)",
    )


def _autocast_wrapper(wrapper: Any, features: Any, name: str) -> Any:
    """A wrapper of the same model and processor whose passes run under autocast, explaining
    the same hypothesis (not decoded again)."""
    from captum_spes import SpeechSeq2SeqWrapper

    fast = SpeechSeq2SeqWrapper(
        wrapper.model, wrapper.processor, model_id=wrapper.model_id, adapter=wrapper.adapter, autocast=_dtype(name)
    )
    fast.set_hypothesis(features, wrapper.hypothesis)
    return fast
