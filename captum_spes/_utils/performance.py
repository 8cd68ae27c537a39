#!/usr/bin/env python3
r"""Speed settings of the teacher-forced passes: precision, compilation and chunked impacts.

Nothing here changes the model or, by default, the numbers: the defaults are float32 eager
passes whose impacts are computed a few batch rows at a time (the same values, to the bit for
KL, with less memory traffic). Half precision (:func:`precision_context`) and compilation
(:func:`compile_teacher_forced`) are explicit options of
:class:`~captum_spes.SpeechSeq2SeqWrapper`; docs/results.md section 8 gives their measured
speed and agreement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_spes.errors import InputError, InputTypeError

__all__ = [
    "AUTOCAST_DTYPES",
    "IMPACT_CHUNK_BYTES",
    "check_autocast_dtype",
    "precision_context",
    "impact_chunk_rows",
    "impacts_in_chunks",
    "COMPILE_KEYWORDS",
    "check_compile_options",
    "compile_teacher_forced",
]

#: dtypes the wrapper's ``autocast=`` accepts (forwards in this dtype, log-softmax and impact in float32)
AUTOCAST_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)

#: float32 log-probabilities materialised at once when scoring a batch (about 16 MiB): a few
#: rows of ``(num_tokens, vocab)``, so the ``(batch, num_tokens, vocab)`` tensor never exists
#: in full. Measured on the 2-core CPU: KL of 8 rows of (12, 51 864) took 136 ms at once and
#: 26-37 ms one or two rows at a time (docs/results.md section 8).
IMPACT_CHUNK_BYTES: int = 16 * 2**20


def check_autocast_dtype(dtype: Any) -> torch.dtype | None:
    """``dtype`` if it is None or a half-precision dtype autocast runs in; else a clear error."""
    if dtype is None or dtype in AUTOCAST_DTYPES:
        return dtype
    names = ", ".join(f"torch.{str(d).removeprefix('torch.')}" for d in AUTOCAST_DTYPES)
    raise InputError(
        f"autocast must be None (the model's own dtype) or one of {names}, got {dtype!r}; for float32 "
        "passes leave autocast=None"
    )


def precision_context(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def impact_chunk_rows(num_tokens: int, vocab: int, max_bytes: int = IMPACT_CHUNK_BYTES) -> int:
    """Batch rows whose float32 ``(rows, num_tokens, vocab)`` log-probabilities fit ``max_bytes``
    (at least 1)."""
    return max(1, max_bytes // max(1, 4 * num_tokens * vocab))


def impacts_in_chunks(
    measure: Callable[[Tensor, Tensor, Tensor], Tensor],
    clean_log_probs: Tensor,
    logits: Tensor,
    target_ids: Tensor,
    rows: int,
) -> Tensor:
    r"""Impacts of a batch of perturbed passes, computed from their logits ``rows`` at a time.

    Each chunk's log-softmax is taken in float32 and handed to ``measure``, so measures keep
    their ``(clean_log_probs, perturbed_log_probs, target_ids)`` interface; they must score
    every batch row on its own (all built-in measures do).

    Args:
        measure: ``f(clean (num_tokens, vocab), perturbed (rows, num_tokens, vocab), target_ids)``
            returning ``(rows, num_tokens)``.
        clean_log_probs (Tensor): ``(num_tokens, vocab)``, float32.
        logits (Tensor): ``(batch, num_tokens, vocab)`` explained-position logits, any dtype.
        target_ids (Tensor): ``(num_tokens,)``.
        rows (int): batch rows per chunk, at least 1.

    Returns:
        *Tensor* ``(batch, num_tokens)`` of impacts.
    """
    scores = []
    for chunk in logits.split(rows):
        chunk_scores = measure(clean_log_probs, chunk.float().log_softmax(dim=-1), target_ids)
        if not isinstance(chunk_scores, Tensor) or chunk_scores.dim() != 2 or chunk_scores.shape[0] != len(chunk):
            shape = tuple(chunk_scores.shape) if isinstance(chunk_scores, Tensor) else type(chunk_scores).__name__
            raise InputError(
                f"the impact measure must return (batch, num_tokens) scores, got {shape} for a batch of {len(chunk)}"
            )
        scores.append(chunk_scores)
    return scores[0] if len(scores) == 1 else torch.cat(scores)


#: ``torch.compile`` keyword arguments the wrapper's ``compile=`` dict may give
COMPILE_KEYWORDS = ("mode", "options", "dynamic", "fullgraph", "backend")


def check_compile_options(compile: Any) -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments for ``compile`` (None: eager, True: ``{}``); else a clear error."""
    if isinstance(compile, bool):
        return {} if compile else None
    if not isinstance(compile, dict):
        raise InputTypeError(
            f"compile must be True, False or a dict of torch.compile arguments, got {type(compile).__name__}"
        )
    unknown = sorted(set(compile) - set(COMPILE_KEYWORDS))
    if unknown:
        raise InputError(f"compile= got unknown torch.compile arguments {unknown}; use any of {list(COMPILE_KEYWORDS)}")
    if compile.get("mode") is not None and compile.get("options") is not None:
        raise InputError("compile= takes a mode or options, not both (torch.compile refuses the pair)")
    return dict(compile)


def compile_teacher_forced(function: Callable[..., Tensor], **compile_kwargs: Any) -> Callable:
    r"""``function`` wrapped by ``torch.compile`` for inference passes; compiled on its first call.

    By default inductor freezes the weights into the compiled graph (its ``freezing`` option,
    which lets it pre-pack them and fuse the bias into the matrix product): the compiled pass
    serves ``torch.inference_mode`` / ``no_grad`` calls on an unchanged model. The first call
    compiles (tens of seconds on a small CPU); a new batch size recompiles once with a
    dynamic batch.

    Args:
        function: ``f(model_inputs, decoder_input_ids) -> logits``.
        **compile_kwargs: ``torch.compile`` arguments (:data:`COMPILE_KEYWORDS`); ``options``
            are merged over ``{"freezing": True}``; with a ``mode`` (e.g. ``"reduce-overhead"``:
            CUDA graphs) the mode's own settings apply and the weights are not frozen.

    Raises:
        InputError: ``torch.compile`` refused the arguments (an unknown mode or backend), raised
            here rather than at the first pass.
    """
    if compile_kwargs.get("mode") is None:
        compile_kwargs["options"] = {"freezing": True, **(compile_kwargs.get("options") or {})}
    try:
        return torch.compile(function, **compile_kwargs)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"compile= was refused by torch.compile: {error}") from error
