#!/usr/bin/env python3
r"""The table :func:`~captum_spes.comparison.compare` returns: costs, metrics and maps per method."""

from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from torch import Tensor

from captum_spes.errors import InputError

__all__ = ["COLUMNS", "MethodResult", "ComparisonReport"]

#: table columns, in order; the metric columns are NaN when the metric was not computed.
COLUMNS = (
    "method",
    "forward_passes",
    "backward_passes",
    "seconds",
    "deletion_auc",
    "insertion_auc",
    "size_auc",
    "plausibility_mass",
    "plausibility_pointing",
)

_HEADERS = {
    "method": "method",
    "forward_passes": "forward",
    "backward_passes": "backward",
    "seconds": "seconds",
    "deletion_auc": "deletion AUC (WER, higher=better)",
    "insertion_auc": "insertion AUC (WER, lower=better)",
    "size_auc": "size AUC (lower=more compact)",
    "plausibility_mass": "mass in word span",
    "plausibility_pointing": "pointing game",
}


@dataclass
class MethodResult:
    r"""One method's row, with its maps.

    Attributes:
        method (str): method name.
        forward_passes (int): input rows run through the model (a batch of b counts b).
        backward_passes (int): rows whose gradient was propagated to the input.
        seconds (float): wall time of the attribution (metrics excluded).
        deletion_auc, insertion_auc (float): WER AUC (mean WER over the levels, 0-100).
        size_auc (float): spectrogram size AUC (0-100).
        plausibility_mass (float): mean share of positive saliency inside the word's span.
        plausibility_pointing (float): pointing-game accuracy (0-1).
        attributions (Tensor): raw per-token maps ``(num_tokens, n_mels, num_frames)``.
        utterance_map (Tensor): ``(n_mels, num_frames)``, the per-token maps normalised with
            ``normalize_reference`` and averaged over tokens (what deletion/insertion rank).
        details (dict): method settings and the metric objects (curves, size, plausibility).
    """

    method: str
    forward_passes: int
    backward_passes: int
    seconds: float
    attributions: Tensor
    utterance_map: Tensor
    deletion_auc: float = math.nan
    insertion_auc: float = math.nan
    size_auc: float = math.nan
    plausibility_mass: float = math.nan
    plausibility_pointing: float = math.nan
    details: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The row as a dict over :data:`COLUMNS`."""
        return {name: getattr(self, name) for name in COLUMNS}


def _format(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


@dataclass
class ComparisonReport:
    r"""Attribution methods compared on one utterance and hypothesis.

    Attributes:
        rows (list of MethodResult): one per method, in the order run.
        text (str): the explained hypothesis.
        tokens (list of str): its ``num_tokens`` explained pieces (end token included).
        num_frames (int): speech frames the maps cover.
        frame_rate (float): frames per second (100 for log-mel features).
        settings (dict): budgets, metric settings and what each column means.
    """

    rows: list[MethodResult]
    text: str
    tokens: list[str]
    num_frames: int
    frame_rate: float
    settings: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, method: str) -> MethodResult:
        for row in self.rows:
            if row.method == method:
                return row
        raise KeyError(f"no method {method!r} in this report; it has {[r.method for r in self.rows]}")

    @property
    def methods(self) -> list[str]:
        return [row.method for row in self.rows]

    @property
    def utterance_maps(self) -> dict[str, Tensor]:
        """Method -> ``(n_mels, num_frames)`` utterance map."""
        return {row.method: row.utterance_map for row in self.rows}

    @property
    def attributions(self) -> dict[str, Tensor]:
        """Method -> raw per-token maps ``(num_tokens, n_mels, num_frames)``."""
        return {row.method: row.attributions for row in self.rows}

    def records(self) -> list[dict[str, Any]]:
        return [row.record() for row in self.rows]

    # ----- text -----------------------------------------------------------------------
    def _cells(self) -> tuple[list[str], list[list[str]]]:
        headers = [_HEADERS[c] for c in COLUMNS]
        return headers, [[_format(row.record()[c]) for c in COLUMNS] for row in self.rows]

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table (numbers right-aligned), with the hypothesis."""
        headers, body = self._cells()
        lines = [
            f"Hypothesis: {self.text!r} ({len(self.tokens)} tokens, {self.num_frames / self.frame_rate:.2f} s)",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n"

    def to_string(self) -> str:
        """An aligned plain-text table."""
        headers, body = self._cells()
        widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(headers), rule] + [line(r) for r in body]) + "\n"

    def __str__(self) -> str:
        return self.to_string()

    def print(self, file: TextIO | None = None) -> None:
        """Print :meth:`to_string` (to stdout by default)."""
        (file or sys.stdout).write(self.to_string())

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the rows (machine-readable column names, full precision); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
            writer.writeheader()
            writer.writerows(self.records())
        return path

    # ----- figure ---------------------------------------------------------------------
    def plot(self, show: bool = False, cmap: str = "viridis") -> tuple[Any, Any]:
        r"""The utterance maps side by side, time in seconds.

        Each panel has its own colour scale (the maps are min-max normalised per token, so
        their ranges are comparable but not identical).

        Args:
            show (bool, optional): call ``plt.show()``. Default: False
            cmap (str, optional): matplotlib colormap. Default: "viridis"

        Returns:
            *tuple* ``(figure, axes)`` with one axis per method.
        """
        import matplotlib.pyplot as plt

        count = len(self.rows)
        if count == 0:
            raise InputError("the report has no methods to plot")
        fig, axes = plt.subplots(1, count, figsize=(2.6 * count + 0.6, 3.0), sharey=True, squeeze=False)
        axes = axes[0]
        seconds = self.num_frames / self.frame_rate
        for axis, row in zip(axes, self.rows):
            values = row.utterance_map.float().numpy()
            image = axis.imshow(
                values, origin="lower", aspect="auto", cmap=cmap, extent=(0.0, seconds, 0, values.shape[0])
            )
            axis.set_title(row.method, fontsize=9)
            axis.set_xlabel("time (s)")
            fig.colorbar(image, ax=axis, fraction=0.046, pad=0.02)
        axes[0].set_ylabel("mel bin")
        fig.suptitle(self.text, fontsize=9)
        fig.tight_layout()
        if show:
            plt.show()
        return fig, axes
