"""The demo's attribution before and after the speed work, and half precision's agreement with
float32, on the embedded tiny.en (the ``[models]`` extra) and the demo clip.

Run: ``python -m pytest benchmarks/test_bench_demo.py --benchmark-json=demo.json``.

- ``test_demo_attribution``: the fixed demo configuration (librivox_0880, ``n_masks=200``
  or ``CAPTUM_SPES_BENCH_DEMO_MASKS``, the default decoupled token map with as many token
  masks, seed 0, batch 8, estimator "reference"), the previous float32 path (no
  cross-attention cache, whole-batch log-softmax, KL with ``torch.where`` temporaries) and
  today's, alternated (A B A B, ``CAPTUM_SPES_BENCH_ROUNDS`` rounds) in one process; the maps
  must agree to float rounding (``max_abs_difference``). ``speedup`` = previous / today
  (fastest round of each).
- ``test_half_precision_agreement``: the same masks in float32 and in each half-precision
  option of the device (CPU: bfloat16 weights and bfloat16 autocast; CUDA: float16 and
  bfloat16 autocast), with a second float32 seed as the Monte-Carlo reference: Spearman per
  token and top-5 % overlap (:func:`~captum_spes.metrics.seed_agreement`).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from bench_models import PREVIOUS_PATH, PlainWhisperAdapter, chip, devices, load_average, textbook_kl

from captum_spes import SPES, SpeechSeq2SeqWrapper
from captum_spes.data import load_sample
from captum_spes.metrics import seed_agreement

#: ``captum-spes demo``'s attribution; ``CAPTUM_SPES_BENCH_DEMO_MASKS`` sets fewer masks for a shorter run
DEMO = {
    "n_masks": int(os.environ.get("CAPTUM_SPES_BENCH_DEMO_MASKS", 200)),
    "seed": 0,
    "perturbations_per_eval": 8,
    "estimator": "reference",
}


def _tiny_en(device: str, dtype: torch.dtype | None = None):
    from captum_spes.models import load_model

    return load_model("tiny.en", device=device, torch_dtype=dtype)


def _demo_inputs(processor, device: str, dtype: torch.dtype = torch.float32):
    sample = load_sample("librivox_0880")
    features = processor(sample.waveform, sampling_rate=16000, return_tensors="pt").input_features
    return features.to(device=device, dtype=dtype), len(sample.waveform)


@pytest.mark.benchmark(group="demo")
@pytest.mark.parametrize("device", devices())
def test_demo_attribution(benchmark, device):
    model, processor = _tiny_en(device)
    features, samples = _demo_inputs(processor, device)
    hypothesis = SpeechSeq2SeqWrapper(model, processor).set_hypothesis(features)
    variants = {
        "previous": (
            SpeechSeq2SeqWrapper(model, processor, adapter=PlainWhisperAdapter(model), **PREVIOUS_PATH),
            textbook_kl,
        ),
        "today": (SpeechSeq2SeqWrapper(model, processor), "kl"),
    }
    rounds = int(os.environ.get("CAPTUM_SPES_BENCH_ROUNDS", 2))
    seconds: dict = {name: [] for name in variants}
    results = {}

    def alternate() -> None:
        for _ in range(rounds):
            for name, (wrapper, impact) in variants.items():
                started = time.perf_counter()
                results[name] = SPES(wrapper).attribute(
                    features, target=hypothesis, impact=impact, num_samples=samples, **DEMO
                )
                seconds[name].append(round(time.perf_counter() - started, 2))

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    torch.testing.assert_close(results["today"].spectrogram_attr, results["previous"].spectrogram_attr)
    torch.testing.assert_close(results["today"].token_attr, results["previous"].token_attr)
    differences = {
        name: (getattr(results["today"], name) - getattr(results["previous"], name)).abs().max().item()
        for name in ("spectrogram_attr", "token_attr")
    }
    benchmark.extra_info.update(
        device=device,
        chip=chip(device),
        model="tiny.en",
        precision="float32",
        **DEMO,
        token_masks=results["today"].metadata["n_token_masks"],
        seconds=seconds,
        speedup=round(min(seconds["previous"]) / min(seconds["today"]), 3),
        max_abs_difference=differences,
        map_scale={name: getattr(results["previous"], name).abs().max().item() for name in differences},
        load_average=load_average(),
    )


def _half_variants(device: str) -> list[tuple[str, torch.dtype | None, torch.dtype | None]]:
    """(name, weight dtype, autocast dtype) of each half-precision option measured."""
    if device == "cuda":
        return [("float16 autocast", None, torch.float16), ("bfloat16 autocast", None, torch.bfloat16)]
    return [("bfloat16 weights", torch.bfloat16, None), ("bfloat16 autocast", None, torch.bfloat16)]


@pytest.mark.benchmark(group="demo-half-precision")
@pytest.mark.parametrize("device", devices())
def test_half_precision_agreement(benchmark, device):
    n_masks = int(os.environ.get("CAPTUM_SPES_BENCH_AGREEMENT_MASKS", 200))
    options = {**DEMO, "n_masks": n_masks, "token_p": None}
    model, processor = _tiny_en(device)
    features, samples = _demo_inputs(processor, device)
    hypothesis = SpeechSeq2SeqWrapper(model, processor).set_hypothesis(features)
    seconds, results = {}, {}

    def run(name: str, wrapper: SpeechSeq2SeqWrapper, inputs: torch.Tensor, seed: int = 0) -> None:
        started = time.perf_counter()
        results[name] = SPES(wrapper).attribute(
            inputs, target=hypothesis, num_samples=samples, **{**options, "seed": seed}
        )
        seconds[name] = round(time.perf_counter() - started, 2)

    def all_runs() -> None:
        run("float32", SpeechSeq2SeqWrapper(model, processor), features)
        run("float32 seed 1", SpeechSeq2SeqWrapper(model, processor), features, seed=1)
        for name, weights, autocast in _half_variants(device):
            half_model = _tiny_en(device, weights)[0] if weights is not None else model
            inputs = features.to(weights) if weights is not None else features
            run(name, SpeechSeq2SeqWrapper(half_model, processor, autocast=autocast), inputs)

    benchmark.pedantic(all_runs, rounds=1, iterations=1)
    agreement = {
        name: {k: round(v, 4) for k, v in seed_agreement(results["float32"], result).as_dict().items()}
        for name, result in results.items()
        if name != "float32"
    }
    benchmark.extra_info.update(
        device=device,
        chip=chip(device),
        model="tiny.en",
        **options,
        seconds=seconds,
        agreement_with_float32=agreement,
        load_average=load_average(),
    )
    assert agreement["float32 seed 1"]["spearman_tokens"] > 0
