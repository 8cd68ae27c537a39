#!/usr/bin/env python3
"""Ablation and convergence studies of SPES on the bundled real clips (Whisper tiny.en).

Every run is cached as JSON under --out, so an interrupted study resumes; ``report`` turns
the JSON into the Markdown tables of docs/results.md.

    python scripts/study.py ablations --clips librivox_0880 librivox_0930 librivox_0870 --n-masks 150
    python scripts/study.py convergence --clip librivox_0880 --reference-masks 1000
    python scripts/study.py report > docs/results_tables.md
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from captum_spes import SPES, AdaptiveMasks, SLICMasks, SpeechSeq2SeqWrapper
from captum_spes.data import load_sample
from captum_spes.metrics import deletion_curve, insertion_curve, make_generate_decoder, size_curve, word_plausibility
from captum_spes.models import load_model

#: name -> SPES.attribute keyword arguments; "base" is the published configuration
ABLATIONS: Dict[str, Dict[str, Any]] = {
    "base (SLIC x3, KL, channel mean)": {},
    "impact: prob_drop": {"impact": "prob_drop"},
    "masks: time (1 frame)": {"feature_mask": "time"},
    "masks: frequency (1 bin)": {"feature_mask": "frequency"},
    "masks: element": {"feature_mask": "element"},
    "scales: single SLIC level (2500)": {"feature_mask": SLICMasks(n_segments=[2500])},
    "baseline: floor (silence)": {"baselines": "floor"},
    "baseline: 0 (multiply by mask)": {"baselines": 0.0},
}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.flatten().double().argsort().argsort().double()
    rb = b.flatten().double().argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def top_overlap(a: torch.Tensor, b: torch.Tensor, percent: float = 5.0) -> float:
    """Share of the top ``percent`` % elements of ``b`` that are also in the top of ``a``."""
    k = max(1, int(a.numel() * percent / 100))
    top_a = set(a.flatten().topk(k).indices.tolist())
    top_b = set(b.flatten().topk(k).indices.tolist())
    return len(top_a & top_b) / k


class Study:
    def __init__(self, out: Path, batch_size: int) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.processor = load_model("tiny.en")
        self.wrapper = SpeechSeq2SeqWrapper(self.model, self.processor)
        self.spes = SPES(self.wrapper)
        self.decode = make_generate_decoder(self.model, self.processor, batch_size=batch_size)
        self.batch_size = batch_size

    def features(self, clip: str) -> torch.Tensor:
        sample = load_sample(clip)
        return self.processor(sample.waveform, sampling_rate=16000, return_tensors="pt").input_features

    def explain(self, clip: str, n_masks: Any, seed: int, **kwargs: Any):
        started = time.perf_counter()
        result = self.spes.attribute(
            self.features(clip), n_masks=n_masks, seed=seed, perturbations_per_eval=self.batch_size,
            **{"token_p": None, **kwargs},
        )
        return result, time.perf_counter() - started

    def metrics(self, results: List[Any], clips: List[str], baselines: Any = None) -> Dict[str, float]:
        features = [self.features(c) for c in clips]
        common = dict(step=10, baselines=baselines, adapter=self.wrapper.adapter, batch_size=self.batch_size)
        deletion = deletion_curve(results, features, self.decode, **common)
        insertion = insertion_curve(results, features, self.decode, **common)
        size = size_curve(results)
        samples = [load_sample(c) for c in clips]
        aligned = [(r, s.words) for r, s in zip(results, samples) if s.words]
        row = {
            "deletion_wer_auc": deletion.auc,
            "insertion_wer_auc": insertion.auc,
            "size_auc": size.spectrogram_auc,
        }
        if aligned:
            report = word_plausibility([a for a, _ in aligned], [w for _, w in aligned], tolerance=0.05)
            row.update(pointing=report.pointing_accuracy, pointing_chance=report.pointing_chance,
                       matched_words=report.num_matched)
        return row


def run_ablations(study: Study, clips: List[str], n_masks: int) -> None:
    for name, kwargs in ABLATIONS.items():
        key = hashlib.sha1(json.dumps([name, clips, n_masks]).encode()).hexdigest()[:10]
        path = study.out / f"ablation_{key}.json"
        if path.exists():
            continue
        results, seconds = [], 0.0
        for clip in clips:
            result, took = study.explain(clip, n_masks, seed=0, **kwargs)
            results.append(result)
            seconds += took
        baselines = kwargs.get("baselines")
        # Deletion replaces elements with the same value the explanation occluded with.
        row = {"name": name, "clips": clips, "n_masks": n_masks, "seconds": seconds,
               **study.metrics(results, clips, baselines)}
        path.write_text(json.dumps(row, indent=1))
        print(json.dumps(row), flush=True)


def run_convergence(study: Study, clip: str, reference_masks: int, budgets: List[int]) -> None:
    path = study.out / f"convergence_{clip}_{reference_masks}.json"
    if path.exists():
        return
    reference, ref_seconds = study.explain(clip, reference_masks, seed=100)
    reference.save(study.out / f"convergence_{clip}_reference.safetensors", overwrite=True)
    ref_norm = reference.normalize()
    rows = []
    for n in budgets + ["auto"]:
        rule = AdaptiveMasks(threshold=0.9, round_size=50, max_masks=reference_masks, min_masks=100) if n == "auto" else n
        result, seconds = study.explain(clip, rule, seed=1)
        result.save(study.out / f"convergence_{clip}_{n}.safetensors", overwrite=True)
        norm = result.normalize()
        rows.append({
            "n_masks": result.metadata["n_masks"],
            "mode": "auto" if n == "auto" else "fixed",
            "seconds": seconds,
            # Mean over tokens of each token map's rank correlation with the reference's.
            "spearman_tokens": sum(
                spearman(a, b) for a, b in zip(result.spectrogram_attr, reference.spectrogram_attr)
            ) / result.num_tokens,
            "top5_overlap_utterance": top_overlap(norm.spectrogram_attr.mean(0), ref_norm.spectrogram_attr.mean(0)),
            "spearman_utterance": spearman(norm.spectrogram_attr.mean(0), ref_norm.spectrogram_attr.mean(0)),
            "reliability": (result.metadata.get("adaptive") or {}).get("reliability"),
            **study.metrics([result], [clip]),
        })
        print(json.dumps(rows[-1]), flush=True)
    path.write_text(json.dumps({"clip": clip, "reference_masks": reference_masks,
                                "reference_seconds": ref_seconds,
                                "reference": study.metrics([reference], [clip]), "rows": rows}, indent=1))


def report(out: Path) -> str:
    lines = []
    ablations = [json.loads(p.read_text()) for p in sorted(out.glob("ablation_*.json"))]
    if ablations:
        a0 = ablations[0]
        lines += [f"### Ablations ({', '.join(a0['clips'])}; {a0['n_masks']} masks each; tiny.en)", "",
                  "| configuration | deletion WER AUC ↑ | insertion WER AUC ↓ | size AUC ↓ | pointing game ↑ (chance) | seconds |",
                  "| --- | --- | --- | --- | --- | --- |"]
        order = list(ABLATIONS)
        for row in sorted(ablations, key=lambda r: order.index(r["name"]) if r["name"] in order else 99):
            pointing = f"{row['pointing']:.2f} ({row['pointing_chance']:.3f})" if "pointing" in row else "–"
            lines.append(f"| {row['name']} | {row['deletion_wer_auc']:.1f} | {row['insertion_wer_auc']:.1f} | "
                         f"{row['size_auc']:.1f} | {pointing} | {row['seconds']:.0f} |")
        lines.append("")
    for path in sorted(out.glob("convergence_*.json")):
        data = json.loads(path.read_text())
        ref = data["reference"]
        lines += [f"### Convergence on {data['clip']} (reference: {data['reference_masks']} masks, other seed)", "",
                  "| masks | Spearman, per-token maps (mean) | Spearman, utterance map | top-5 % overlap, utterance map | deletion WER AUC | pointing | seconds |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in data["rows"]:
            label = f"{row['n_masks']} (auto, reliability {row['reliability']:.3f})" if row["mode"] == "auto" else str(row["n_masks"])
            lines.append(f"| {label} | {row['spearman_tokens']:.3f} | {row['spearman_utterance']:.3f} | "
                         f"{row.get('top5_overlap_utterance', float('nan')):.2f} | "
                         f"{row['deletion_wer_auc']:.1f} | {row.get('pointing', float('nan')):.2f} | {row['seconds']:.0f} |")
        lines.append(f"| {data['reference_masks']} (reference) | 1 | 1 | 1 | {ref['deletion_wer_auc']:.1f} | "
                     f"{ref.get('pointing', float('nan')):.2f} | {data['reference_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["ablations", "convergence", "report"])
    parser.add_argument("--clips", nargs="+", default=["librivox_0880", "librivox_0930", "librivox_0870"])
    parser.add_argument("--clip", default="librivox_0880")
    parser.add_argument("--n-masks", type=int, default=150)
    parser.add_argument("--reference-masks", type=int, default=1000)
    parser.add_argument("--budgets", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("study-results"))
    args = parser.parse_args()
    if args.command == "report":
        print(report(args.out))
        return
    study = Study(args.out, args.batch_size)
    if args.command == "ablations":
        run_ablations(study, args.clips, args.n_masks)
    else:
        run_convergence(study, args.clip, args.reference_masks, args.budgets)


if __name__ == "__main__":
    main()
