#!/usr/bin/env python3
r"""Cross-attention projections of one encoder output, computed once for many decoder passes.

SPES's decoupled token passes run the decoder only, ``batch`` rows at a time, on one
utterance's clean encoder output. Every pass and every row projects that same output to the
cross-attention keys and values of every decoder layer: for Whisper tiny.en that is 8
products of ``(1500, 384) x (384, 384)`` per row, most of a decoder-only pass. A
:class:`ProjectionCache` computes them once per utterance and, while installed, makes each
projection module return its cached output (a view expanded to the batch) when it is called on
that encoder output; on any other input the module computes as usual. The result is the same
projection of the same tensor, so the logits agree with the plain pass to float rounding.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ProjectionCache"]


class ProjectionCache:
    r"""Outputs of fixed projection modules on one encoder output ``(1, frames, d_model)``.

    Args:
        projections (sequence of nn.Module): e.g. every decoder layer's cross-attention
            ``k_proj`` and ``v_proj``; each maps ``(batch, frames, d_model)`` to
            ``(batch, frames, d_out)`` row by row.
        source (Tensor): the encoder output, batch 1. Only a weak reference is kept.
    """

    def __init__(self, projections: Sequence[nn.Module], source: Tensor) -> None:
        if source.dim() != 3 or source.shape[0] != 1:
            raise ValueError(f"source must be one encoder output (1, frames, d_model), got {tuple(source.shape)}")
        self.projections = list(projections)
        self._source = weakref.ref(source)
        self._layout = (source.data_ptr(), tuple(source.shape[1:]), tuple(source.stride()[1:]))
        self._versions = self._weight_versions()
        with torch.no_grad():
            self.outputs = [module(source) for module in self.projections]

    def _weight_versions(self) -> tuple[int, ...]:
        return tuple(p._version for module in self.projections for p in module.parameters())

    def is_current(self, source: Tensor) -> bool:
        """True while ``source`` is the cached encoder output and no projection weight changed."""
        return self._source() is source and self._versions == self._weight_versions()

    def serves(self, hidden: Tensor) -> bool:
        """True when ``hidden`` is the cached encoder output or a batch expand of it (a view)."""
        if self._source() is None or hidden.dim() != 3:
            return False
        same = (hidden.data_ptr(), tuple(hidden.shape[1:]), tuple(hidden.stride()[1:])) == self._layout
        return same and (hidden.shape[0] == 1 or hidden.stride(0) == 0)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Within the context each projection serves its cached output for the cached encoder
        output; the modules' own ``forward`` is restored on exit."""
        saved = []
        for module, output in zip(self.projections, self.outputs):
            saved.append((module, module.__dict__.get("forward")))
            module.forward = self._serving(module.forward, output)
        try:
            yield
        finally:
            for module, own in saved:
                if own is None:
                    del module.forward
                else:
                    module.forward = own

    def _serving(self, compute: Any, output: Tensor) -> Any:
        def forward(hidden: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            if not args and not kwargs and self.serves(hidden):
                return output.expand(hidden.shape[0], *output.shape[1:])
            return compute(hidden, *args, **kwargs)

        return forward
