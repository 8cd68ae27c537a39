"""The ``captum-spes`` argument parser: the argparse types of the options and
:func:`build_parser`, which registers every subcommand (``compare`` and the dataset ones included)."""

from __future__ import annotations

import argparse
from typing import Any

from captum_spes.cli._explain import (
    DEMO_AUTOCAST,
    DEMO_BATCH_SIZE,
    DEMO_N_MASKS,
    DEMO_SAMPLE,
    LISTEN_TOP_PERCENT,
    PAPER_N_MASKS,
    _run_demo,
    _run_explain,
)
from captum_spes.cli._info import _run_info
from captum_spes.cli._precision import AUTO_MIN_SPEEDUP, AUTOCAST_CHOICES

_DEBUG_HELP = "print the traceback of every error, user errors included"


def _n_masks_argument(value: str) -> int | str:
    """argparse type of ``--n-masks``: an int (checked later, with the other counts) or "auto"."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value!r}") from None


def _level_argument(value: str) -> float | None:
    """argparse type of ``--significance``: a level in (0, 1) or "none"."""
    if value == "none":
        return None
    try:
        level = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a level in (0, 1) such as 0.05, or 'none'; got {value!r}") from None
    if not 0 < level < 1:
        raise argparse.ArgumentTypeError(f"must be a level in (0, 1) such as 0.05, or 'none'; got {value!r}")
    return level


def _compare_module() -> Any:
    """The comparison harness's CLI hooks (imported lazily: it pulls in Captum's methods)."""
    from captum_spes.comparison import cli as comparison_cli

    return comparison_cli


def _add_run_options(
    parser: argparse.ArgumentParser, *, n_masks: int, batch_size: int, out: str | None, autocast: str = "none"
) -> None:
    parser.add_argument(
        "--model",
        default="tiny.en",
        help="embedded model (tiny.en, base), local model folder, or hub id org/name (default: the embedded tiny.en)",
    )
    parser.add_argument(
        "--n-masks",
        type=_n_masks_argument,
        default=n_masks,
        help=f"spectrogram masks, or 'auto' to stop when the explanation's top is stable "
        f"(default: {n_masks}; the published configuration uses {PAPER_N_MASKS})",
    )
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"masks per forward pass (default: {batch_size})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random masks (default: 0)")
    parser.add_argument(
        "--estimator",
        default=None,
        help="how the masks' impacts become a map: coarse_to_fine or reference (the published estimator and "
        "design); default: the library's (see docs/method.md)",
    )
    parser.add_argument(
        "--significance",
        type=_level_argument,
        default=0.05,
        help="figures and report draw what is not significant at this level faint (Benjamini-Hochberg per token); "
        "'none' draws every element alike (default: 0.05)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    parser.add_argument(
        "--autocast",
        choices=AUTOCAST_CHOICES,
        default=autocast,
        help="run the masked passes under torch.autocast in this dtype (the transcript is still decoded in the "
        "model's dtype); 'auto' times one bfloat16 batch and keeps it only where it is at least "
        f"{AUTO_MIN_SPEEDUP}x faster; 'none' keeps the model's dtype (default: {autocast})",
    )
    parser.add_argument(
        "--out",
        default=out,
        help="output directory" + (f" (default: {out})" if out else " (default: ./captum-spes-<audio name>)"),
    )
    parser.add_argument(
        "--listen",
        action="store_true",
        help=f"also write each word's top {LISTEN_TOP_PERCENT:g} %% salient audio as WAV",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def build_parser() -> argparse.ArgumentParser:
    """The ``captum-spes`` argument parser."""
    from captum_spes import __version__

    parser = argparse.ArgumentParser(
        prog="captum-spes",
        description="SPES token-by-token explanations of speech-to-text models (Whisper).",
    )
    parser.add_argument("--version", action="version", version=f"captum-spes {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    explain = commands.add_parser(
        "explain",
        help="explain the transcript of one audio file",
        description="Transcribe AUDIO (at most 30 s) and explain every token with SPES.",
    )
    explain.add_argument("audio", metavar="AUDIO", help="audio file (WAV, FLAC, OGG, ...; at most 30 s)")
    explain.add_argument(
        "--task",
        choices=("transcribe", "translate"),
        default=None,
        help="Whisper task (multilingual models only; default: the model's)",
    )
    explain.add_argument("--language", default=None, help="spoken language, e.g. en or sv (multilingual models)")
    explain.add_argument("--target", default=None, help="explain this text instead of the model's transcript")
    explain.add_argument(
        "--contrast",
        action="append",
        metavar="POSITION_OR_WORD:FOIL",
        help="also explain why the token at POSITION (or the first token reading WORD) was chosen rather than "
        "FOIL, e.g. he:she (repeatable; a second attribution with the log-probability margin as impact)",
    )
    _add_run_options(explain, n_masks=2000, batch_size=8, out=None)
    explain.set_defaults(func=_run_explain)

    demo = commands.add_parser(
        "demo",
        help=f"explain a bundled clip ({DEMO_SAMPLE}) in a few minutes on a CPU",
        description="Run SPES on a bundled clip with the embedded tiny.en and a CPU-sized mask count.",
    )
    demo.add_argument("--sample", default=DEMO_SAMPLE, help=f"bundled clip (default: {DEMO_SAMPLE})")
    _add_run_options(
        demo, n_masks=DEMO_N_MASKS, batch_size=DEMO_BATCH_SIZE, out="captum-spes-demo", autocast=DEMO_AUTOCAST
    )
    demo.set_defaults(func=_run_demo)

    info = commands.add_parser("info", help="versions, device, threads and embedded models")
    info.set_defaults(func=_run_info)

    compare = _compare_module()
    sub = commands.add_parser(
        "compare", help="compare SPES with Captum's Occlusion, FeatureAblation, IG, Saliency, InputXGradient"
    )
    compare.add_compare_arguments(sub)
    sub.set_defaults(func=compare.run_compare)
    from captum_spes.dataset.cli import add_dataset_commands

    add_dataset_commands(commands)
    for subparser in commands.choices.values():
        # SUPPRESS: without the flag a subcommand leaves the global --debug as parsed.
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser
