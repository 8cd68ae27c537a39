#!/usr/bin/env python3
r"""``captum-spes compare AUDIO``: the comparison table of one audio file, from the command line.

The project's ``captum_spes/cli.py`` registers the sub-command with
:func:`add_compare_arguments` and dispatches to :func:`run_compare`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captum_spes.comparison.core import DEFAULT_METHODS, METRICS

__all__ = ["add_compare_arguments", "run_compare", "MAX_SECONDS"]

#: Whisper explains one 30 s window; longer audio would be cut silently by the processor.
MAX_SECONDS = 30.0


def _names(value: str, allowed: tuple, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown or value!r}; choose from {','.join(allowed)}")
    return names


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    r"""Add the ``compare`` sub-command's arguments to ``parser``.

    Args:
        parser (argparse.ArgumentParser): e.g. the ``compare`` sub-parser.
    """
    parser.add_argument("audio", metavar="AUDIO", help="audio file (WAV, FLAC, OGG...), at most 30 s")
    parser.add_argument("--model", default="tiny.en", help="model short name or folder (default: tiny.en)")
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
        default=list(METRICS),
        help=f"comma-separated metrics (default: {','.join(METRICS)}; plausibility needs --alignment)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of SPES masks and random maps (default: 0)")
    parser.add_argument("--out", metavar="DIR", default="comparison", help="output folder (default: ./comparison)")
    parser.add_argument("--alignment", metavar="TEXTGRID", default=None, help="word alignment for plausibility")
    parser.add_argument("--tier", default="words", help="TextGrid word tier (default: words)")
    parser.add_argument(
        "--step", type=float, default=10, help="deletion/insertion level step in percent, divides 100 (default: 10)"
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

    Returns:
        *int* exit status: 0 on success, 2 for an unusable input (message on stderr).
    """
    from captum_spes._core.forward_wrapper import SpeechSeq2SeqWrapper
    from captum_spes.audio import AudioError, duration_seconds, load_audio
    from captum_spes.comparison.core import compare
    from captum_spes.models import ModelLoadError, load_model

    try:
        waveform = load_audio(args.audio)
        seconds = duration_seconds(waveform, 16000)
        if seconds > MAX_SECONDS:
            raise AudioError(
                f"'{args.audio}' lasts {seconds:.1f} s, but Whisper explains one 30 s window; "
                "cut it first, e.g. `sox in.wav out.wav trim 0 30`"
            )
        if args.alignment is not None and not Path(args.alignment).is_file():
            raise FileNotFoundError(f"alignment TextGrid not found: '{args.alignment}'")
        model, processor = load_model(args.model)
    except (AudioError, ModelLoadError, FileNotFoundError) as err:
        print(f"captum-spes compare: error: {err}", file=sys.stderr)
        return 2

    from captum_spes.masks import SLICMasks

    family = None if args.slic_segments is None else SLICMasks(n_segments=args.slic_segments)
    features = processor(waveform, sampling_rate=16000, return_tensors="pt").input_features
    wrapper = SpeechSeq2SeqWrapper(model, processor)
    report = compare(
        wrapper,
        features,
        methods=args.methods,
        metrics=args.metrics,
        n_masks=args.n_masks,
        batch_size=args.batch_size,
        seed=args.seed,
        alignments=args.alignment,
        alignment_tier=args.tier,
        levels_step=args.step,
        ig_steps=args.ig_steps,
        feature_mask=family,
    )
    report.print()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.to_csv(out / "comparison.csv")
    (out / "comparison.md").write_text(report.to_markdown(), encoding="utf-8")
    import matplotlib.pyplot as plt

    fig, _ = report.plot(show=False)
    fig.savefig(out / "comparison.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out / 'comparison.csv'}, {out / 'comparison.md'}, {out / 'comparison.png'}")
    return 0
