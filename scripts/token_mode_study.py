#!/usr/bin/env python3
"""Joint vs decoupled token masks on real speech: which gives more reliable maps per second?

For each mode, SPES runs twice with different seeds on the same clip; the Spearman
correlation between the two runs' maps (spectrogram and token map) measures how reliable a
map of that budget is. Wall time is measured in the same process.

    python scripts/token_mode_study.py --clip librivox_0880 --n-masks 200
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from captum_spes import SPES, SpeechSeq2SeqWrapper
from captum_spes.data import load_sample
from captum_spes.models import load_model


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.flatten().argsort().argsort().double()
    rb = b.flatten().argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip", default="librivox_0880")
    parser.add_argument("--n-masks", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    model, processor = load_model("tiny.en")
    sample = load_sample(args.clip)
    features = processor(sample.waveform, sampling_rate=16000, return_tensors="pt").input_features
    spes = SPES(SpeechSeq2SeqWrapper(model, processor))
    rows = []
    for mode in ("joint", "decoupled"):
        runs = []
        for seed in (1, 2):
            started = time.perf_counter()
            result = spes.attribute(
                features,
                n_masks=args.n_masks,
                token_masks=mode,
                seed=seed,
                perturbations_per_eval=args.batch_size,
            )
            runs.append((result, time.perf_counter() - started))
        (a, ta), (b, tb) = runs
        valid = a.token_valid_mask()
        rows.append(
            {
                "mode": mode,
                "n_masks": args.n_masks,
                "forward_passes": a.metadata["forward_passes"],
                "seconds_per_run": round((ta + tb) / 2, 1),
                "spectrogram_spearman": round(spearman(a.spectrogram_attr, b.spectrogram_attr), 4),
                "token_spearman": round(spearman(a.token_attr[valid], b.token_attr[valid]), 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"clip": args.clip, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
