#!/usr/bin/env python3
r"""``captum-spes compare AUDIO``: the comparison table of one audio file, from the command line.

The project's ``captum_spes/cli/_parser.py`` registers the sub-command with
:func:`add_compare_arguments` and dispatches to :func:`run_compare`, under the command line's
one error policy (:func:`captum_spes.cli.report_errors`). The options, the model names, the
audio checks and the overwrite rule are those of ``captum-spes explain``: existing
``comparison.{csv,md,png}`` are replaced only with ``--overwrite``, checked before any work.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from captum_spes.comparison.core import DEFAULT_METHODS, METRICS
from captum_spes.comparison.report import ComparisonReport

__all__ = ["add_compare_arguments", "run_compare", "OUTPUT_FILES"]

#: The files ``compare`` writes into ``--out``.
OUTPUT_FILES = ("comparison.csv", "comparison.md", "comparison.png")


def _names(value: str, allowed: tuple, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown or value!r}; choose from {','.join(allowed)}")
    return names


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an int >= ``minimum``, called ``what`` in the message."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {value!r}")
        return number

    return parse


_positive_int = _int_at_least(1, "positive integer")
_non_negative_int = _int_at_least(0, "non-negative integer")


def _percent_step(value: str) -> float:
    """argparse type of ``--step``: a percentage in (0, 100] that divides 100."""
    try:
        step = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {value!r}") from None
    if not 0 < step <= 100 or abs(100 / step - round(100 / step)) > 1e-9:
        raise argparse.ArgumentTypeError(f"must be a percentage in (0, 100] that divides 100, e.g. 10; got {value!r}")
    return step


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    r"""Add the ``compare`` sub-command's arguments to ``parser``.

    Args:
        parser (argparse.ArgumentParser): e.g. the ``compare`` sub-parser.
    """
    parser.add_argument("audio", metavar="AUDIO", help="audio file (WAV, FLAC, OGG...), at most 30 s")
    parser.add_argument(
        "--model",
        default="tiny.en",
        help="embedded model (tiny.en, base), local model folder, or hub id org/name (default: tiny.en)",
    )
    parser.add_argument("--n-masks", type=_positive_int, default=500, help="SPES masks (default: 500)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="inputs per forward pass (default: 8)")
    parser.add_argument(
        "--methods",
        type=lambda v: _names(v, DEFAULT_METHODS, "method"),
        default=list(DEFAULT_METHODS),
        help=f"comma-separated methods (default: {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--metrics",
        type=lambda v: _names(v, METRICS, "metric"),
        default=None,
        help=f"comma-separated metrics from {','.join(METRICS)} (default: all; plausibility only with --alignment, "
        "which it needs)",
    )
    parser.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of SPES masks and random maps (default: 0)"
    )
    parser.add_argument("--out", metavar="DIR", default="comparison", help="output folder (default: ./comparison)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing comparison.{csv,md,png}")
    parser.add_argument("--alignment", metavar="TEXTGRID", default=None, help="word alignment for plausibility")
    parser.add_argument("--tier", default="words", help="TextGrid word tier (default: words)")
    parser.add_argument(
        "--step",
        type=_percent_step,
        default=10.0,
        help="deletion/insertion level step in percent, divides 100 (default: 10)",
    )
    parser.add_argument(
        "--slic-segments",
        type=lambda v: [_positive_int(x) for x in v.split(",")],
        default=None,
        help="SLIC segments per level per 500 frames for SPES and FeatureAblation, e.g. 200,250,300 "
        "(default: SPES's published 2000,2500,3000; FeatureAblation costs one pass per level-1 segment)",
    )
    parser.add_argument("--ig-steps", type=_positive_int, default=16, help="Integrated Gradients steps (default: 16)")


def run_compare(args: argparse.Namespace) -> int:
    r"""Run the comparison described by ``args`` and write ``comparison.{csv,md,png}``.

    Errors propagate: :func:`captum_spes.cli.main` reports them (one line for a bad input).

    Returns:
        *int* exit status 0.

    Raises:
        FileExistsError: if an output exists and ``args.overwrite`` is False (before any work).
        InputError: for unusable audio, model or alignment.
    """
    from captum_spes._core.forward_wrapper import SpeechSeq2SeqWrapper
    from captum_spes.audio import check_clip_length, read_audio
    from captum_spes.cli import WHISPER_WINDOW_SECONDS, refuse_existing_outputs, resolve_model
    from captum_spes.comparison.core import compare
    from captum_spes.data import read_textgrid
    from captum_spes.masks import SLICMasks

    metrics = _metrics(args.metrics, args.alignment)
    out = Path(args.out)
    refuse_existing_outputs(out, OUTPUT_FILES, args.overwrite)
    loaded = read_audio(args.audio)
    print(f"Audio: {loaded.describe()}", flush=True)
    check_clip_length(loaded.waveform, loaded.sampling_rate, args.audio, max_seconds=WHISPER_WINDOW_SECONDS)
    alignment = None
    if args.alignment is not None:
        alignment = read_textgrid(args.alignment, args.tier)
    model, processor = resolve_model(args.model, "cpu")
    family = None if args.slic_segments is None else SLICMasks(n_segments=args.slic_segments)
    features = processor(loaded.waveform, sampling_rate=loaded.sampling_rate, return_tensors="pt").input_features
    wrapper = SpeechSeq2SeqWrapper(model, processor)
    report = compare(
        wrapper,
        features,
        num_frames=wrapper.adapter.frames_for_samples(int(loaded.waveform.shape[0])),
        methods=args.methods,
        metrics=metrics,
        n_masks=args.n_masks,
        batch_size=args.batch_size,
        seed=args.seed,
        alignments=alignment,
        levels_step=args.step,
        ig_steps=args.ig_steps,
        feature_mask=family,
    )
    report.print()
    _write_report(report, out)
    print(f"wrote {', '.join(str(out / name) for name in OUTPUT_FILES)}")
    return 0


def _metrics(requested: list[str] | None, alignment: str | None) -> list[str]:
    """The metrics to compute: ``--metrics``, or all those that ``--alignment`` allows."""
    from captum_spes.cli import CLIError

    if requested is None:
        return [m for m in METRICS if m != "plausibility" or alignment is not None]
    if "plausibility" in requested and alignment is None:
        raise CLIError("--metrics plausibility needs the word alignment: pass --alignment TEXTGRID")
    if alignment is not None and "plausibility" not in requested:
        raise CLIError("--alignment is used by the plausibility metric only: add plausibility to --metrics")
    return requested


def _write_report(report: ComparisonReport, out: Path) -> None:
    """``comparison.{csv,md,png}`` in ``out``, each written atomically."""
    from captum_spes._utils.files import atomic_write
    from captum_spes.cli import save_figure

    csv_file, markdown_file, figure_file = (out / name for name in OUTPUT_FILES)
    with atomic_write(csv_file) as temporary:
        report.to_csv(temporary)
    with atomic_write(markdown_file) as temporary:
        temporary.write_text(report.to_markdown(), encoding="utf-8")
    fig, _ = report.plot(show=False)
    save_figure(fig, figure_file, dpi=120)
