#!/usr/bin/env python3
r"""The corpus table of an evaluation: printed, CSV, Markdown, JSON, and the curves as a PNG."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from captum_spes.dataset.evaluate import CorpusEvaluation
from captum_spes.dataset.store import atomic_write, atomic_write_text

__all__ = ["evaluation_table", "markdown_table", "format_table", "write_evaluation"]


def _better(direction: str) -> str:
    return "higher" if direction.startswith("higher") else "lower"


def evaluation_table(evaluation: CorpusEvaluation) -> list[tuple[str, str, str]]:
    """``(measure, value, better)`` rows of the corpus table."""
    rows = [("utterances evaluated", str(evaluation.num_utterances), "")]
    if evaluation.failures:
        rows.append(("utterances left out (failed)", str(len(evaluation.failures)), ""))
    for curve in evaluation.curves.values():
        better = _better(curve.direction)
        rows.append((f"{curve.mode} AUC ({curve.metric}, mean over 0-100 %)", f"{curve.auc:.2f}", better))
        rows.append((f"{curve.mode} AUC raw (trapezoid over q in %)", f"{curve.auc_raw:.1f}", better))
    rows.append(("size AUC, spectrogram (0-100)", f"{evaluation.size_spectrogram_auc:.2f}", "lower"))
    if evaluation.size_token_auc is not None:
        rows.append(("size AUC, token map (0-100)", f"{evaluation.size_token_auc:.2f}", "lower"))
    if evaluation.num_aligned:
        rows.append(("utterances with an alignment", str(evaluation.num_aligned), ""))
        rows.append(("hypothesis words matched to aligned words", str(evaluation.num_words_matched), ""))
        rows.append(("pointing game accuracy", _ratio(evaluation.pointing_accuracy), "higher"))
        rows.append(("pointing game chance", _ratio(evaluation.pointing_chance), ""))
        rows.append(("mass in span", _ratio(evaluation.mass_in_span), "higher"))
        rows.append(("mass in span chance", _ratio(evaluation.mass_chance), ""))
    return rows


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(rows: Sequence[tuple[str, str, str]]) -> str:
    """The corpus table in Markdown."""
    lines = ["| measure | value | better |", "| --- | ---: | --- |"]
    lines += [f"| {measure} | {value} | {better} |" for measure, value, better in rows]
    return "\n".join(lines) + "\n"


def _plot_curves(evaluation: CorpusEvaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = list(evaluation.curves.values())
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for axis, curve in zip(axes[0], curves):
        axis.plot(curve.levels, curve.scores, marker="o")
        axis.set_title(f"{curve.mode}: AUC {curve.auc:.2f} ({_better(curve.direction)} is more faithful)")
        axis.set_xlabel("spectrogram elements " + ("removed" if curve.mode == "deletion" else "kept") + " (%)")
        axis.set_ylabel(f"corpus {curve.metric}")
        axis.grid(alpha=0.3)
    fig.suptitle(f"{evaluation.num_utterances} utterances")
    fig.tight_layout()
    atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=100))
    plt.close(fig)


def write_evaluation(evaluation: CorpusEvaluation, folder: str | Path) -> list[Path]:
    r"""Write ``summary.csv``, ``summary.md``, ``curves.csv``, ``curves.png`` and ``evaluation.json``.

    Returns:
        *list of Path* written.
    """
    out = Path(folder)
    rows = evaluation_table(evaluation)
    curves = list(evaluation.curves.values())
    level_rows = [[level, *(curve.scores[i] for curve in curves)] for i, level in enumerate(curves[0].levels)]
    files = [
        atomic_write_text(out / "summary.csv", _csv_text(("measure", "value", "better"), rows)),
        atomic_write_text(out / "summary.md", markdown_table(rows)),
        atomic_write_text(
            out / "curves.csv", _csv_text(("level_percent", *(f"{c.mode}_{c.metric}" for c in curves)), level_rows)
        ),
        atomic_write_text(out / "evaluation.json", json.dumps(asdict(evaluation), indent=2) + "\n"),
    ]
    _plot_curves(evaluation, out / "curves.png")
    files.append(out / "curves.png")
    return files


def format_table(rows: Sequence[tuple[str, str, str]]) -> str:
    """The corpus table as aligned plain text (what the CLI prints)."""
    width = max(len(measure) for measure, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = []
    for measure, value, better in rows:
        note = f"  ({better} is better)" if better else ""
        lines.append(f"  {measure:<{width}}  {value:>{value_width}}{note}")
    return "\n".join(lines)
