#!/usr/bin/env python3
r"""The explain loop: every utterance of a rank's shard, one saved SPESResult each.

A bad utterance (missing or undecodable audio, longer than Whisper's 30 s window, an
error inside the model) is recorded as ``failed`` with its error text and the loop goes
on; it never stops the run. Everything else that goes wrong (a bad option, the model that
does not load) stops the run before the first utterance.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from captum_spes.dataset.distributed import RANK_ERRORS, configure_threads, initialize, resolve_device, shard
from captum_spes.dataset.manifest import Utterance
from captum_spes.dataset.progress import UtteranceProgress
from captum_spes.dataset.store import FAILED, DatasetStore, check_unique_keys
from captum_spes.errors import InputError

__all__ = [
    "ExplainSettings",
    "RunSummary",
    "load_waveform",
    "utterance_features",
    "generate_kwargs",
    "explain_utterance",
    "explain_shard",
    "summarize",
    "explain_dataset",
]

#: Longest audio Whisper transcribes in one window, in seconds (as ``captum-spes explain``).
MAX_SECONDS: float = 30.0
SAMPLING_RATE: int = 16000
ModelLoader = Callable[[str, str], tuple[Any, Any]]


@dataclass(frozen=True)
class ExplainSettings:
    r"""The SPES settings of a dataset run; all but ``batch_size`` are checked on rerun.

    Attributes:
        model (str): ``--model`` as given (embedded name, folder or hub id).
        n_masks (int or "auto"): spectrogram masks per utterance.
        seed (int): seed of the masks (the same for every utterance, as ``explain``).
        p (float): occlusion probability of a spectrogram segment.
        token_p (float or None): occlusion probability of a decoder input; None: no token map.
        token_masks (str): "decoupled" or "joint".
        impact (str): impact measure.
        estimator (str or None): registered estimator (:data:`~captum_spes.ESTIMATORS`), as
            ``SPES.attribute``'s; None: the library's default for these settings
            (coarse_to_fine for a fixed budget, reference for "auto"; SPES still uses the
            reference for an utterance too long for coarse_to_fine's cells, and says so in its
            metadata). The resolved estimator and its own settings are checked on rerun.
        num_beams (int): beams when decoding the hypothesis (1: greedy).
        no_repeat_ngram_size (int): ``generate``'s no-repeat n-gram size (0: off).
        batch_size (int): masks per forward pass; the result does not depend on it.
    """

    model: str = "tiny.en"
    n_masks: int | str = 2000
    seed: int = 0
    p: float = 0.5
    token_p: float | None = 0.5
    token_masks: str = "decoupled"
    impact: str = "kl"
    estimator: str | None = None
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    batch_size: int = 8

    def checked(self) -> dict[str, Any]:
        """The settings that must match between runs into one directory."""
        from captum_spes import __version__

        values = asdict(self)
        values.pop("batch_size")
        values["estimator"] = self._estimator().config()
        return {**values, "baseline": "channel_mean", "mask_family": "slic", "captum_spes": __version__}

    def check(self) -> None:
        """Refuse, before any utterance, settings that would fail every utterance.

        Raises:
            InputError: for an unregistered estimator, or "auto" masks with an estimator
                that chooses its own design (it takes a fixed budget).
        """
        from captum_spes._core.estimators import Estimator

        estimator = self._estimator()
        if self.n_masks == "auto" and type(estimator).plan is not Estimator.plan:
            raise InputError(
                f"--estimator {estimator.name} chooses its own masks and takes a fixed budget: pass --n-masks <int>, "
                "not auto (or use --estimator reference with --n-masks auto)"
            )

    def _estimator(self) -> Any:
        from captum_spes._core.estimators import resolve_estimator
        from captum_spes._core.spes import _default_estimator

        return resolve_estimator(_default_estimator(self.estimator, self.n_masks, self.token_masks, None))


@dataclass
class RunSummary:
    """What a run left in its directory, over the manifest's ids.

    Attributes:
        total (int): ids in the manifest.
        done (int), failed (int), pending (int): their state now.
        done_now (int), failed_now (int): finished by this run.
        seconds (float): wall time of this run's explain loop (all ranks).
        index_path (str): the merged index.
        failures (list of tuple): ``(id, "<row>: <error>")`` of every failed id, in manifest order.
    """

    total: int
    done: int
    failed: int
    pending: int
    done_now: int = 0
    failed_now: int = 0
    seconds: float = 0.0
    index_path: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)


def load_waveform(utterance: Utterance) -> Any:
    r"""The utterance's audio, mono float32 at 16 kHz, ``(num_samples,)``.

    Raises:
        AudioError: if the file is missing, undecodable, empty or silent, shorter than one
            analysis window or longer than :data:`MAX_SECONDS`.
    """
    from captum_spes.audio import check_clip_length, load_audio

    if utterance.audio_bytes is not None:
        raise InputError(f"{utterance.describe()}: embedded audio must be stored first (DatasetStore.store_audio)")
    waveform = load_audio(utterance.audio, SAMPLING_RATE)
    check_clip_length(waveform, SAMPLING_RATE, "the audio", max_seconds=MAX_SECONDS)
    return waveform


def utterance_features(waveform: Any, wrapper: Any) -> Any:
    """Model input ``(1, ...)`` (Whisper: ``(1, 80, 3000)``) on the model's device, built by the
    model's adapter from its processor."""
    parameter = next(wrapper.model.parameters())
    features = wrapper.adapter.prepare_inputs(wrapper.processor, waveform, SAMPLING_RATE)
    return features.to(device=parameter.device, dtype=parameter.dtype)


def generate_kwargs(utterance: Utterance, num_beams: int, no_repeat_ngram_size: int) -> dict[str, Any]:
    """``generate`` arguments for this utterance: its language and task, and the decoding."""
    kwargs: dict[str, Any] = {}
    if utterance.language:
        kwargs["language"] = utterance.language
    if utterance.task:
        kwargs["task"] = utterance.task
    if num_beams > 1:
        kwargs["num_beams"] = num_beams
    if no_repeat_ngram_size > 0:
        kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size
    return kwargs


def explain_utterance(spes: Any, utterance: Utterance, settings: ExplainSettings) -> Any:
    """Explain one utterance; returns its SPESResult (``metadata["utterance_id"]`` is its id)."""
    from captum_spes import AdaptiveMasks

    waveform = load_waveform(utterance)
    return spes.attribute(
        utterance_features(waveform, spes.forward_func),
        n_masks=AdaptiveMasks() if settings.n_masks == "auto" else settings.n_masks,
        seed=settings.seed,
        p=settings.p,
        token_p=settings.token_p,
        token_masks=settings.token_masks,
        impact=settings.impact,
        estimator=settings.estimator,
        perturbations_per_eval=settings.batch_size,
        generate_kwargs=generate_kwargs(utterance, settings.num_beams, settings.no_repeat_ngram_size) or None,
        num_samples=int(waveform.shape[0]),  # the exact speech frames, as captum-spes explain
        utterance_id=utterance.id,
    )


def explain_shard(
    utterances: Sequence[Utterance],
    store: DatasetStore,
    settings: ExplainSettings,
    *,
    rank: int,
    device: str,
    model: Any,
    processor: Any,
    progress: UtteranceProgress,
) -> tuple[int, int]:
    r"""Explain ``utterances`` (this rank's shard), saving and recording each one.

    Args:
        utterances (sequence of Utterance): the shard.
        store (DatasetStore): the output directory.
        settings (ExplainSettings): the run's settings.
        rank (int): this rank (its records go to its own shard).
        device (str): e.g. "cpu" or "cuda:1".
        model (nn.Module): the model, on ``device`` (None for an empty shard).
        processor (Any): its processor.
        progress (UtteranceProgress): advanced once per utterance.

    Returns:
        *tuple* ``(done, failed)`` counts of this shard.
    """
    from captum_spes import SPES, SpeechSeq2SeqWrapper

    if not utterances:
        return 0, 0  # a rank without work loads no model
    spes = SPES(SpeechSeq2SeqWrapper(model, processor))
    done = failed = 0
    for utterance in utterances:
        started = time.perf_counter()
        try:
            utterance = store.store_audio(utterance)
            result = explain_utterance(spes, utterance, settings)
            path = store.save_result(utterance.id, result)
            record = store.done_record(utterance, result, path, time.perf_counter() - started, device)
            done += 1
        except Exception as error:  # noqa: BLE001 - one bad utterance must not stop the corpus
            record = store.failed_record(utterance, error, time.perf_counter() - started, device)
            failed += 1
            _release_device_memory(device)
        store.shards.append(rank, record)
        progress.advance()
    return done, failed


def _release_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()  # after an out-of-memory error the next utterance gets a clean slate


def summarize(store: DatasetStore, utterances: Sequence[Utterance]) -> RunSummary:
    """The state of every manifest id in ``store``."""
    records = store.records()
    states = [records.get(u.id) for u in utterances]
    failures = [
        (u.id, f"{r.get('row') or u.row}: {r['error'] or ''}")
        for u, r in zip(utterances, states)
        if r and r["status"] == FAILED
    ]
    done = sum(1 for r in states if r and r["status"] != FAILED)
    return RunSummary(
        total=len(utterances),
        done=done,
        failed=len(failures),
        pending=len(utterances) - done - len(failures),
        failures=failures,
    )


def explain_dataset(
    utterances: Sequence[Utterance],
    out: str | os.PathLike[str],
    settings: ExplainSettings,
    *,
    load_model: ModelLoader,
    device: str = "auto",
    threads: int | None = None,
    retry_failed: bool = False,
    mix_settings: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunSummary | None:
    r"""Explain a test set into ``out``, on one process or under torchrun; resumable.

    Every rank must call it with the same arguments. Rank 0 locks ``out``, checks the
    settings, removes what a killed run left half-written and decides what is pending; the
    ranks explain their shards; rank 0 merges the index.

    Args:
        utterances (sequence of Utterance): the test set (:func:`read_manifest`).
        out (path-like): the output directory.
        settings (ExplainSettings): the SPES settings.
        load_model (callable): ``load_model(name, device) -> (model, processor)``.
        device (str, optional): "auto", "cpu" or "cuda". Default: "auto"
        threads (int, optional): torch threads per rank (default: see :func:`configure_threads`).
        retry_failed (bool, optional): explain failed utterances again. Default: False
        mix_settings (bool, optional): accept settings that differ from the stored ones. Default: False
        show_progress (bool, optional): progress bars. Default: True
        log (callable, optional): where rank 0's lines go. Default: print

    Returns:
        *RunSummary* on rank 0; None on the other ranks.

    Raises:
        InputError: for settings that would fail every utterance (:meth:`ExplainSettings.check`).
        SettingsMismatchError: if ``out`` holds results made with other settings.
        DirectoryInUseError: if another run writes into ``out``.
    """
    check_unique_keys(u.id for u in utterances)
    settings.check()
    store = DatasetStore(out)
    context = initialize()
    try:
        device = resolve_device(device, context)
        threads_used = configure_threads(device, context, threads)

        def prepare() -> list[str]:
            store.lock()
            store.check_settings(settings.checked(), mix=mix_settings)
            store.remove_temporary_files()
            return [u.id for u in store.pending(utterances, retry_failed=retry_failed)]

        pending_ids = context.run_on_main(prepare, RANK_ERRORS)
        by_id = {u.id: u for u in utterances}
        pending = [by_id[i] for i in pending_ids]
        mine = shard(pending, context)
        if context.is_main:
            log(
                f"{len(utterances)} utterances, {len(utterances) - len(pending)} already in {out}; explaining "
                f"{len(pending)} on {context.world_size} rank(s) ({device}, {threads_used} torch thread(s) each)"
            )
        progress = UtteranceProgress(
            context,
            len(mine),
            len(pending),
            [store.shards.path(r) for r in range(1, context.world_size)],
            "explained",
            enabled=show_progress,
        )
        started = time.perf_counter()
        # Rank 0 loads first: an embedded model is converted into its cache on first use.
        loaded = context.main_first(lambda: load_model(settings.model, device), needed=bool(mine))
        model, processor = loaded if loaded is not None else (None, None)
        counts = explain_shard(
            mine, store, settings, rank=context.rank, device=device, model=model, processor=processor, progress=progress
        )
        context.barrier(progress.refresh_total)
        progress.close()
        gathered = context.gather(counts)
        if not context.is_main:
            return None
        store.write_index(order=[u.id for u in utterances])
        summary = summarize(store, utterances)
        summary.done_now = sum(c[0] for c in gathered or [])
        summary.failed_now = sum(c[1] for c in gathered or [])
        summary.seconds = time.perf_counter() - started
        summary.index_path = str(store.index_path)
        return summary
    finally:
        store.unlock()
        context.close()
