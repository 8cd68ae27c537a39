"""``captum-spes explain`` and ``captum-spes demo``: explain one waveform, write the
explanation, the figures, the HTML report and the WAVs, and print progress lines."""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captum_spes.cli._errors import CLIError
from captum_spes.cli._models import _resolve_device, resolve_model
from captum_spes.cli._precision import choose_precision

#: Longest audio Whisper transcribes in one window, in seconds.
WHISPER_WINDOW_SECONDS: float = 30.0
#: Spectrogram masks of the method's published configuration (Fucci et al.).
PAPER_N_MASKS: int = 20000
#: Bundled clip explained by ``captum-spes demo``.
DEMO_SAMPLE: str = "librivox_0880"
#: Masks used by ``captum-spes demo`` (chosen by measurement on a 2-core CPU, see
#: :func:`_run_demo`, and by the estimator study: docs/results.md, "Trustworthy maps").
DEMO_N_MASKS: int = 500
#: ``--autocast`` of ``captum-spes demo``: bfloat16 where it is measured faster (see
#: :mod:`captum_spes.cli._precision` and docs/results.md, "bfloat16 passes").
DEMO_AUTOCAST: str = "auto"
#: Batch size of ``captum-spes demo`` (8 and 16 rows per batch measured about equal on CPU).
DEMO_BATCH_SIZE: int = 8
SAMPLING_RATE: int = 16000
LISTEN_TOP_PERCENT: float = 10.0
_LISTEN_DIR = "listen"
_OUTPUT_FILES = (
    "explanation.safetensors",
    "contrastive.safetensors",
    "overview.png",
    "words.png",
    "token_map.png",
    "report.html",
    f"{_LISTEN_DIR}/*.wav",
)


def _auto_rule() -> Any:
    from captum_spes import AdaptiveMasks, cli

    # AUTO_RULE is read from the package, where it is documented and where tests patch it.
    return cli.AUTO_RULE if cli.AUTO_RULE is not None else AdaptiveMasks()


def _estimator_option(name: str | None) -> str | None:
    from captum_spes import ESTIMATORS

    if name is not None and name not in ESTIMATORS:
        raise CLIError(
            f"--estimator {name!r} is not a registered estimator; choose one of {', '.join(sorted(ESTIMATORS))}"
        )
    return name


def _positive_int(value: int, option: str) -> int:
    if value < 1:
        raise CLIError(f"{option} must be a positive integer, got {value}")
    return value


def _format_duration(seconds: float) -> str:
    """``~X min`` (or seconds / hours where that reads better)."""
    if seconds < 60:
        return f"~{max(seconds, 1.0):.0f} s"
    if seconds < 2 * 3600:
        return f"~{seconds / 60:.1f} min"
    return f"~{seconds / 3600:.1f} h"


def _slug(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", text.strip()).strip("_").lower()
    return cleaned[:24] or "word"


def refuse_existing_outputs(out: Path, names: Sequence[str], overwrite: bool) -> None:
    r"""Refuse, before any work, to replace outputs in ``out`` unless ``overwrite``.

    Args:
        out (Path): the ``--out`` folder.
        names (sequence of str): output files in ``out``; glob patterns allowed
            (``"listen/*.wav"``).
        overwrite (bool): the ``--overwrite`` flag.

    Raises:
        CLIError: if ``out`` is a file.
        FileExistsError: naming the first existing output and ``--overwrite``.
    """
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a directory")
    if overwrite:
        return
    existing = [str(path) for name in names for path in sorted(out.glob(name))]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(
            f"output file {existing[0]} already exists{more}; pass --overwrite to replace the "
            "outputs or choose another --out directory"
        )


def _check_matplotlib() -> None:
    try:
        import matplotlib
    except ImportError:
        raise CLIError("the figures need matplotlib: pip install 'captum-spes[viz]'") from None
    matplotlib.use("Agg")  # the CLI only writes files; never open a window


@dataclass
class _Explained:
    """What :func:`_explain_waveform` produced."""

    result: Any
    seconds: float
    batch_seconds: float
    token_batch_seconds: float
    files: list[Path]


def _estimate_seconds(n_masks: int, batch: int, batch_s: float, token_batch_s: float) -> float:
    """Extrapolated attribution time from the measured per-batch times: ``n_masks``
    spectrogram masks and as many decoupled token masks."""
    return math.ceil(n_masks / batch) * (batch_s + token_batch_s)


def _measure_batches(wrapper: Any, features: Any, batch: int) -> tuple[float, float]:
    """Seconds of one batched spectrogram pass (encoder + decoder, ``batch`` rows) and of one
    decoder-only token-mask pass, after a clean (warm-up) pass.

    The first batch of a size runs slower than the later ones (on the idle 2-core CPU the
    demo's estimate was 4.2 minutes for 177 s; under load the first of four batches of 8 took
    7.5 s against 5.7-6.4 s), so the estimate is an upper bound; timing a second batch would
    add a batch to every run to print a closer figure."""
    import torch

    with torch.inference_mode():
        wrapper(features)  # the clean pass; also warms the kernels up
        rows = features.expand(batch, *features.shape[1:]).clone()
        started = time.perf_counter()
        wrapper(rows)
        batch_s = time.perf_counter() - started
        encoded = wrapper.encode(features)
        keep = torch.ones(batch, len(wrapper.hypothesis.decoder_input_ids), dtype=torch.bool, device=features.device)
        started = time.perf_counter()
        wrapper.forward_from_encoder(encoded, keep)
        token_s = time.perf_counter() - started
    return batch_s, token_s


def _explain_waveform(
    waveform: Any,
    *,
    model_name: str,
    device: str,
    out: Path,
    n_masks: int | str,
    batch_size: int,
    seed: int,
    task: str | None,
    language: str | None,
    target: str | None,
    words: Sequence[Any] | None,
    listen: bool,
    overwrite: bool,
    source: str,
    before_attribution: Callable[[float, float], None] | None = None,
    contrast: Sequence[str] | None = None,
    estimator: str | None = None,
    significance: float | None = 0.05,
    autocast: str = "none",
) -> _Explained:
    """Transcribe, estimate, explain and write every output; print progress lines."""

    from captum_spes import SPES, SpeechSeq2SeqWrapper
    from captum_spes.audio import check_clip_length

    check_clip_length(waveform, SAMPLING_RATE, source, max_seconds=WHISPER_WINDOW_SECONDS)
    duration = waveform.shape[0] / SAMPLING_RATE
    print(f"Loading model {model_name} on {device} ...", flush=True)
    model, processor = resolve_model(model_name, device)
    wrapper = SpeechSeq2SeqWrapper(model, processor)
    # The adapter builds the model input (a speech LLM also sets up its chat here).
    features = wrapper.adapter.prepare_inputs(processor, waveform, SAMPLING_RATE)
    features = features.to(device=device, dtype=next(model.parameters()).dtype)

    generate_kwargs: dict[str, Any] = {}
    if task:
        generate_kwargs["task"] = task
    if language:
        generate_kwargs["language"] = language
    hypothesis = wrapper.set_hypothesis(features, target, generate_kwargs=generate_kwargs or None)
    label = "Target" if target is not None else "Transcript"
    print(f"{label}: {hypothesis.text}", flush=True)
    measure = _contrastive_measure(hypothesis, contrast, wrapper.tokenizer) if contrast else None
    print(f"Explaining {hypothesis.num_explained} tokens (end token included) of {duration:.2f} s of audio.")

    precision = choose_precision(wrapper, features, batch_size, autocast, _measure_batches)
    wrapper, batch_s, token_s = precision.wrapper, precision.batch_s, precision.token_s
    print(precision.message, flush=True)
    rule = _auto_rule() if n_masks == "auto" else None
    planned = rule.max_masks if rule is not None else n_masks
    estimate = _estimate_seconds(planned, batch_size, batch_s, token_s)
    print(
        f"Estimated time: {'up to ' if rule is not None else ''}{_format_duration(estimate)} for "
        f"{'at most ' if rule is not None else ''}{planned} masks "
        f"(measured {batch_s:.2f} s per batch of {batch_size}; plus as many token masks, "
        f"decoder only, {token_s:.2f} s per batch; first batches run slower, so expect less)",
        flush=True,
    )
    if rule is not None:
        print(
            f"--n-masks auto: rounds of {rule.round_size} masks until the split-half {rule.criterion} "
            f"reaches {rule.resolved_threshold} (at least {rule.min_masks}, at most {rule.max_masks} masks)",
            flush=True,
        )
    if before_attribution is not None:
        before_attribution(batch_s, token_s)

    started = time.perf_counter()
    attribution_options: dict[str, Any] = dict(
        target=hypothesis,
        perturbations_per_eval=batch_size,
        show_progress=True,
        n_masks=rule if rule is not None else n_masks,
        seed=seed,
        num_samples=int(waveform.shape[0]),  # the exact speech frames (padding detection is a fallback)
        utterance_id=source,
        **({} if estimator is None else {"estimator": estimator}),
    )
    result = SPES(wrapper).attribute(features, **attribution_options)
    seconds = time.perf_counter() - started
    print(f"Attribution took {seconds:.1f} s.", flush=True)
    adaptive = result.metadata.get("adaptive")
    if adaptive:
        verdict = "reached" if adaptive["converged"] else "NOT reached (stopped at the cap)"
        print(
            f"Used {adaptive['masks_used']} masks: split-half {adaptive['stop_on']} {adaptive['statistic']:.3f}, "
            f"threshold {adaptive['threshold']} {verdict}.",
            flush=True,
        )
    contrastive = None
    if measure is not None:
        started = time.perf_counter()
        contrastive = SPES(wrapper).attribute(features, impact=measure, **attribution_options)
        print(f"Contrastive attribution took {time.perf_counter() - started:.1f} s.", flush=True)
    # Figures draw the canonical view the maps cover (e.g. a waveform model's STFT).
    shown = wrapper.adapter.utterance_layout(features).to_canonical(features)[None]
    files = _write_outputs(
        result,
        waveform,
        shown,
        out,
        words=words,
        listen=listen,
        overwrite=overwrite,
        contrast=(contrastive, measure),
        significance=significance,
    )
    return _Explained(result, seconds, batch_s, token_s, files)


def _write_outputs(
    result: Any,
    waveform: Any,
    features: Any,
    out: Path,
    *,
    words: Sequence[Any] | None,
    listen: bool,
    overwrite: bool,
    contrast: tuple[Any, Any] = (None, None),
    significance: float | None = 0.05,
) -> list[Path]:
    """Save the explanation, the figures, the HTML page and (``listen``) the WAVs; with a
    contrastive result, also that result and its panel in the HTML page."""
    import matplotlib.pyplot as plt

    from captum_spes.visualization import (
        plot_time_profile,
        plot_token_map,
        plot_utterance_map,
        plot_word_saliency,
        write_html_report,
        write_salient_audio,
    )

    out.mkdir(parents=True, exist_ok=True)
    features_cpu = features.detach().float().cpu()
    files = [result.save(out / "explanation.safetensors", overwrite=overwrite)]
    contrastive, measure = contrast
    if contrastive is not None:
        files.append(contrastive.save(out / "contrastive.safetensors", overwrite=overwrite))

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), gridspec_kw={"height_ratios": [3, 2]})
    plot_utterance_map(result, features_cpu, plt_fig_axis=(fig, top), significance=significance)
    plot_time_profile(result, words, plt_fig_axis=(fig, bottom))
    files.append(save_figure(fig, out / "overview.png"))

    merged = result.to_words()
    num_words = merged.num_tokens - 1  # the end token is no word
    rows = max(num_words, 1)
    fig, axes = plt.subplots(rows, 1, figsize=(9, 2.6 * rows), squeeze=False)
    for index in range(num_words):
        plot_word_saliency(result, index, features_cpu, plt_fig_axis=(fig, axes[index, 0]), significance=significance)
    if num_words == 0:
        axes[0, 0].set_axis_off()
    files.append(save_figure(fig, out / "words.png"))

    if result.token_attr is not None:
        fig, _ = plot_token_map(result)
        files.append(save_figure(fig, out / "token_map.png"))

    files.append(
        write_html_report(
            result,
            out / "report.html",
            waveform=waveform,
            sampling_rate=SAMPLING_RATE,
            features=features_cpu,
            words=words,
            overwrite=overwrite,
            contrast=contrastive,
            contrast_foils={c.position: c.foil_text for c in measure.contrasts} if measure is not None else None,
            significance=significance,
        )
    )
    if listen:
        for index in range(num_words):
            name = f"word_{index:02d}_{_slug(merged.tokens[index])}.wav"
            files.append(
                write_salient_audio(
                    merged,
                    waveform,
                    SAMPLING_RATE,
                    out / _LISTEN_DIR / name,
                    overwrite=overwrite,
                    token=index,
                    top_percent=LISTEN_TOP_PERCENT,
                )
            )
    return files


def _contrastive_measure(hypothesis: Any, specs: Sequence[str], tokenizer: Any) -> Any:
    """The ``--contrast`` measure; prints what each contrast resolved to."""
    from captum_spes.impact import ContrastiveImpact

    measure = ContrastiveImpact.from_text(hypothesis, specs, tokenizer)
    for c in measure.contrasts:
        first = f"its first token {tokenizer.decode([c.foil_id])!r} of {len(c.foil_ids)}" if len(c.foil_ids) > 1 else ""
        print(
            f"Contrast: token {c.position} {hypothesis.tokens[c.position]!r} rather than {c.foil_text!r}"
            + (f" ({first}: a foil of several tokens is contrasted where it starts)" if first else ""),
            flush=True,
        )
    return measure


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    r"""Write ``fig`` to ``path`` atomically (format from the suffix) and close it.

    Args:
        fig (matplotlib.figure.Figure): the figure.
        path (Path): e.g. ``out / "overview.png"``.
        dpi (int, optional): Default: 100

    Returns:
        *Path* ``path``.
    """
    import matplotlib.pyplot as plt

    from captum_spes._utils.files import atomic_write

    fig.tight_layout()
    try:
        with atomic_write(path) as temporary:
            fig.savefig(temporary, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def _print_files(files: Sequence[Path]) -> None:
    print("Wrote:")
    for path in files:
        print(f"  {path}")


def _run_options(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Validate the options ``explain`` and ``demo`` share, before any model is loaded."""
    options = dict(
        model_name=args.model,
        device=_resolve_device(args.device),
        out=out,
        n_masks=args.n_masks if args.n_masks == "auto" else _positive_int(args.n_masks, "--n-masks"),
        batch_size=_positive_int(args.batch_size, "--batch-size"),
        seed=args.seed,
        listen=args.listen,
        overwrite=args.overwrite,
        estimator=_estimator_option(args.estimator),
        significance=args.significance,
        autocast=args.autocast,
    )
    if args.seed < 0:
        raise CLIError(f"--seed must be a non-negative integer, got {args.seed}")
    refuse_existing_outputs(out, _OUTPUT_FILES, args.overwrite)
    _check_matplotlib()
    return options


def _run_explain(args: argparse.Namespace) -> int:
    from captum_spes.audio import read_audio

    audio = Path(args.audio)
    out = Path(args.out) if args.out else Path(f"captum-spes-{audio.stem or 'output'}")
    options = _run_options(args, out)
    loaded = read_audio(audio, SAMPLING_RATE)
    print(f"Audio: {loaded.describe()}", flush=True)
    explained = _explain_waveform(
        loaded.waveform,
        task=args.task,
        language=args.language,
        target=args.target,
        words=None,
        source=str(audio),
        contrast=args.contrast,
        **options,
    )
    _print_files(explained.files)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    """Explain a bundled clip with the embedded tiny.en.

    The default of 500 masks is the smallest budget at which the estimator study
    (docs/results.md, "Trustworthy maps") measured both a stable map and a good pointing game
    with the default coarse-to-fine estimator (125 coarse cells, in 4 partitions shifted in
    time; with one partition, 400 masks pointed at 0.85). tiny.en takes about 0.3 s per
    spectrogram mask in float32 at batch 8 on an idle 2-core CPU (no gain from larger batches;
    its encoder always reads the full 30 s window of 3000 frames, whatever the clip length), and
    the decoder-only token masks reuse the clean encoder output and its cross-attention
    projections, so the demo took about 3 minutes there in float32. ``--autocast auto`` (the
    demo's default) runs the masked passes in bfloat16 where one timed batch is at least 1.25
    times faster: on a CPU with native bfloat16 instructions the attribution ran 1.5 times
    faster (114 s against 167 s in all) and gave the float32 map on the same masks to a Spearman
    of 0.999 (docs/results.md, "bfloat16 passes"). The published 20 000 masks would take hours.
    The printed estimate is measured afresh on every run.
    """
    from captum_spes.data import list_samples, load_sample

    if args.sample not in list_samples():
        raise CLIError(f"unknown --sample {args.sample!r}; choose one of {', '.join(list_samples())}")
    out = Path(args.out)
    options = _run_options(args, out)
    n_masks, batch_size, device = options["n_masks"], options["batch_size"], options["device"]
    sample = load_sample(args.sample)
    print(f"Demo: explaining the bundled clip {sample.name!r} ({sample.duration:.1f} s, {sample.attribution})")
    print(f"Reference transcript: {sample.transcript}")

    def compare_with_paper(batch_s: float, token_s: float) -> None:
        paper = _estimate_seconds(PAPER_N_MASKS, batch_size, batch_s, token_s)
        print(
            f"Note: this demo uses {n_masks} masks with the default estimator (coarse cells matched to the budget, "
            "where the clip is short enough for them; what is not significant is drawn faint). The method's published "
            f"configuration (--estimator reference, {PAPER_N_MASKS:,} masks) would take {_format_duration(paper)} "
            f"on this machine ({device}, {_threads()} threads; extrapolated from the batch time measured above). "
            "On a GPU the full configuration "
            "is practical: tiny.en explained 20 000 masks in 24-27 s per utterance on an NVIDIA "
            "H200 (float32, batches of 128; docs/results.md). Use: captum-spes explain AUDIO "
            "--device cuda --n-masks 20000 --batch-size 128, or --n-masks auto to stop when the "
            "explanation's top is stable",
            flush=True,
        )

    started = time.perf_counter()
    explained = _explain_waveform(
        sample.waveform,
        task=None,
        language=None,
        target=None,
        words=sample.words,
        source=sample.name,
        before_attribution=compare_with_paper,
        **options,
    )
    _print_files(explained.files)
    print(f"Demo finished in {time.perf_counter() - started:.1f} s. Open {out / 'report.html'} in a browser.")
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()
