#!/usr/bin/env python3
r"""Batch sizes that fit: score a batch of masks, splitting it when the device runs out of memory.

Masks are drawn per index from seeded streams, so scoring a batch in two halves gives the
same impacts as scoring it at once (to float rounding): backing off changes speed, never the
result. :class:`BatchSizer` remembers the largest size that fitted, so after one failure the
rest of the run does not fail again.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from captum_spes._utils.sampling import MaskBatch
from captum_spes.errors import InputError

__all__ = ["BatchSizer", "is_out_of_memory"]


def is_out_of_memory(error: BaseException) -> bool:
    """True for a device (CUDA, MPS, XPU) or host allocation failure raised by torch."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _free_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class BatchSizer:
    r"""Scores batches of masks at the largest size that fits.

    Args:
        limit (int): the requested size (``perturbations_per_eval``); never exceeded.

    Attributes:
        size (int): the size that currently fits (``limit`` until a failure).
        failures (int): out-of-memory errors recovered from.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = limit
        self.failures = 0

    def score(self, batch: MaskBatch, score: Callable[[MaskBatch], Tensor]) -> Tensor:
        r"""Impacts ``(batch.size, num_tokens)`` of ``batch``, in pieces of at most :attr:`size`
        masks; a piece that runs out of memory lowers :attr:`size` to half of it, and it and
        the pieces after it are retried at the new size."""
        pending = [batch]
        out = []
        while pending:
            piece = pending.pop(0)
            if piece.size > self.size:
                pending[:0] = piece.split(self.size)
                continue
            try:
                out.append(score(piece))
            except Exception as error:  # noqa: BLE001 - only memory errors are handled, the rest re-raised
                if not is_out_of_memory(error):
                    raise
                if piece.size == 1:
                    raise InputError(
                        "one perturbed pass does not fit in the device's memory: use a smaller model, a shorter "
                        "utterance, half precision, or the CPU"
                    ) from error
                self.failures += 1
                self.size = max(1, piece.size // 2)
                _free_cached_memory()
                pending.insert(0, piece)
        return out[0] if len(out) == 1 else torch.cat(out)
