#!/usr/bin/env python3
r"""``captum-spes explain-dataset`` and ``captum-spes evaluate``: a whole test set.

Both run on one process or, unchanged, under ``torchrun --nproc-per-node N``.

Exit status (documented decision): 0 when every utterance succeeded; **3** when the run
finished but some utterances failed (they are listed, and marked ``failed`` in the index);
1 for a bad argument, manifest or directory (one line on stderr, nothing computed); 2 for
argparse's own errors. Under ``torchrun`` the launcher reports any non-zero status of rank
0 as its own failure (status 1); the printed summary and the index say what failed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["EXIT_SOME_FAILED", "add_dataset_commands", "run_explain_dataset", "run_evaluate"]

#: Exit status when the run finished but some utterances failed.
EXIT_SOME_FAILED = 3
_LISTED_FAILURES = 20
_EXIT_NOTE = (
    "Exit status: 0 all utterances succeeded; 3 finished, but some failed (listed, and 'failed' in the index); "
    "1 bad argument, manifest or directory."
)


def _column_argument(value: str) -> tuple[str, str]:
    field_name, separator, column = value.partition("=")
    if not separator or not field_name or not column:
        raise argparse.ArgumentTypeError(f"must read FIELD=COLUMN, e.g. reference=text; got {value!r}")
    return field_name, column


def _token_p_argument(value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a probability in (0, 1) or 'none', got {value!r}") from None


def _common_options(parser: argparse.ArgumentParser, *, batch_size: int) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: one GPU per rank when CUDA is available, else CPU (default: auto)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per rank (default: CPU cores / ranks on the node); runs agree bit for bit only with "
        "the same threads per process",
    )
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"inputs per forward pass (default: {batch_size})"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _decoding_options(parser: argparse.ArgumentParser, what: str, *, num_beams: int, no_repeat_ngram_size: int) -> None:
    parser.add_argument("--num-beams", type=int, default=num_beams, help=f"beams {what} (default: {num_beams})")
    parser.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=no_repeat_ngram_size,
        help=f"no repeated n-grams of this size {what}, 0: off (default: {no_repeat_ngram_size})",
    )


def add_dataset_commands(subparsers: Any) -> None:
    """Add ``explain-dataset`` and ``evaluate`` to the ``captum-spes`` sub-command parsers."""
    from captum_spes.cli import PAPER_N_MASKS, _n_masks_argument
    from captum_spes.dataset.evaluate import AGAINST, METRICS
    from captum_spes.dataset.manifest import FIELDS

    explain = subparsers.add_parser(
        "explain-dataset",
        help="explain every utterance of a test set (resumable; runs under torchrun)",
        description="Explain every utterance of MANIFEST with SPES into --out: one result per utterance, an "
        "index, and the settings. Rerun the same command to resume; under torchrun the utterances are "
        "shared among the ranks.",
        epilog=_EXIT_NOTE,
    )
    explain.add_argument(
        "manifest",
        metavar="MANIFEST",
        help=f"CSV, TSV or JSON Lines with columns {', '.join(FIELDS)} (id and audio required), or a "
        "Hugging Face dataset folder (save_to_disk)",
    )
    explain.add_argument("--out", required=True, help="output directory (created; reused to resume)")
    explain.add_argument(
        "--model", default="tiny.en", help="embedded model (tiny.en, base), local model folder, or hub id org/name"
    )
    explain.add_argument(
        "--n-masks",
        type=_n_masks_argument,
        default=2000,
        help=f"spectrogram masks per utterance, or 'auto' (default: 2000; published: {PAPER_N_MASKS})",
    )
    explain.add_argument("--seed", type=int, default=0, help="seed of the masks (default: 0)")
    explain.add_argument(
        "--token-p",
        type=_token_p_argument,
        default=0.5,
        help="occlusion probability of decoder inputs, or 'none' for no token map (default: 0.5)",
    )
    explain.add_argument(
        "--estimator",
        default=None,
        help="how the masks' impacts become a map: coarse_to_fine or reference (the published estimator and "
        "design); see docs/method.md (default: coarse_to_fine for a fixed --n-masks where the clip is short enough "
        "for its cells, else reference)",
    )
    _decoding_options(explain, "decoding the hypothesis", num_beams=1, no_repeat_ngram_size=0)
    explain.add_argument(
        "--column",
        type=_column_argument,
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read FIELD from another column, e.g. --column reference=text (repeatable)",
    )
    explain.add_argument("--split", default=None, help="split of a saved Hugging Face DatasetDict, e.g. test")
    explain.add_argument("--retry-failed", action="store_true", help="explain failed utterances again")
    explain.add_argument(
        "--mix-settings",
        action="store_true",
        help="accept settings that differ from those stored in --out (results then mix configurations)",
    )
    _common_options(explain, batch_size=8)
    explain.set_defaults(func=run_explain_dataset)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="corpus-level deletion, insertion, size and plausibility of an explain-dataset run",
        description="Evaluate the explanations in DIR at corpus level (re-decoding every perturbed input) and "
        "write summary.csv, summary.md, curves.csv, curves.png and evaluation.json. Resumable; runs under "
        "torchrun.",
        epilog=_EXIT_NOTE,
    )
    evaluate.add_argument("directory", metavar="DIR", help="the --out directory of explain-dataset")
    evaluate.add_argument(
        "--metric", choices=tuple(METRICS), default="wer_max", help="corpus score per level (default: wer_max)"
    )
    evaluate.add_argument("--step", type=float, default=5, help="level spacing in percent (default: 5)")
    _decoding_options(evaluate, "re-decoding (the reference: 5 and 5)", num_beams=5, no_repeat_ngram_size=5)
    evaluate.add_argument(
        "--against",
        choices=AGAINST,
        default="hypothesis",
        help="score against the clean input's own decoding or the manifest's reference (default: hypothesis)",
    )
    evaluate.add_argument("--normalize-text", action="store_true", help="lower-case, drop punctuation before WER")
    evaluate.add_argument("--size-step", type=float, default=0.05, help="size threshold spacing (default: 0.05)")
    evaluate.add_argument("--tier", default="words", help="TextGrid tier of the words (default: words)")
    evaluate.add_argument(
        "--tolerance", type=float, default=0.0, help="seconds around a word for the pointing game (default: 0)"
    )
    evaluate.add_argument("--eval-dir", default=None, help="where the evaluation goes (default: DIR/evaluation)")
    _common_options(evaluate, batch_size=8)
    evaluate.set_defaults(func=run_evaluate)


def _check_counts(args: argparse.Namespace, names: tuple[str, ...], minimum: int) -> None:
    from captum_spes.cli import CLIError

    for name in names:
        value = getattr(args, name)
        if value < minimum:
            raise CLIError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value}")


def run_explain_dataset(args: argparse.Namespace) -> int:
    """``captum-spes explain-dataset``; returns the exit status."""
    from captum_spes.cli import _estimator_option, resolve_model
    from captum_spes.dataset.manifest import read_manifest
    from captum_spes.dataset.runner import ExplainSettings, explain_dataset

    _check_counts(args, ("batch_size", "num_beams"), 1)
    _check_counts(args, ("seed", "no_repeat_ngram_size"), 0)
    if args.n_masks != "auto":
        _check_counts(args, ("n_masks",), 1)
    settings = ExplainSettings(
        model=args.model,
        n_masks=args.n_masks,
        seed=args.seed,
        token_p=args.token_p,
        estimator=_estimator_option(args.estimator),
        num_beams=args.num_beams,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        batch_size=args.batch_size,
    )
    utterances = read_manifest(args.manifest, columns=dict(args.column), split=args.split)
    summary = explain_dataset(
        utterances,
        args.out,
        settings,
        load_model=resolve_model,
        device=args.device,
        threads=args.threads,
        retry_failed=args.retry_failed,
        mix_settings=args.mix_settings,
        show_progress=not args.no_progress,
    )
    if summary is None:  # not rank 0: rank 0 reports
        return 0
    finished = summary.done_now + summary.failed_now
    print(
        f"{summary.done} of {summary.total} utterances done, {summary.failed} failed "
        f"(this run: {summary.done_now} explained, {summary.failed_now} failed)"
    )
    if finished:
        print(
            f"Wall time {summary.seconds:.1f} s for {finished} utterance(s): "
            f"{summary.seconds / finished:.2f} s per utterance"
        )
    for identifier, error in summary.failures[:_LISTED_FAILURES]:
        print(f"  failed: {identifier}: {error}")
    if len(summary.failures) > _LISTED_FAILURES:
        print(f"  ... and {len(summary.failures) - _LISTED_FAILURES} more (status 'failed' in the index)")
    print(f"Index: {summary.index_path}")
    return EXIT_SOME_FAILED if summary.failed else 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``captum-spes evaluate``; returns the exit status."""
    from captum_spes.cli import resolve_model
    from captum_spes.dataset.evaluate import EvaluationSettings, evaluate_dataset
    from captum_spes.dataset.report import evaluation_table, format_table

    settings = EvaluationSettings(
        step=args.step,
        num_beams=args.num_beams,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        against=args.against,
        normalize_text=args.normalize_text,
        size_step=args.size_step,
        tier=args.tier,
        tolerance=args.tolerance,
        batch_size=args.batch_size,
    )
    started = time.perf_counter()
    evaluation = evaluate_dataset(
        args.directory,
        settings,
        metric=args.metric,
        out=args.eval_dir,
        device=args.device,
        threads=args.threads,
        load_model=resolve_model,
        show_progress=not args.no_progress,
    )
    if evaluation is None:
        return 0
    print(f"Corpus evaluation of {args.directory} ({time.perf_counter() - started:.1f} s):")
    print(format_table(evaluation_table(evaluation)))
    for identifier, error in evaluation.failures[:_LISTED_FAILURES]:
        print(f"  left out: {identifier}: {error}")
    print(f"Wrote {evaluation.settings['folder']}/summary.csv, summary.md, curves.csv, curves.png, evaluation.json")
    return EXIT_SOME_FAILED if evaluation.failures else 0
