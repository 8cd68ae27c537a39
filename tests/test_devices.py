"""SPES, the re-decoding metrics and the comparison harness on every device and precision.

The device list is built when the tests are collected: CPU always, CUDA where a GPU is
present. A GPU machine therefore runs the CUDA cases and CPU-only CI has none to run, so
nothing here skips itself.
"""

from __future__ import annotations

import pytest
import torch
from helpers import ToySpeechModel, WordTokenizer, tiny_whisper, toy_features, whisper_features

from captum_spes import SPES, SLICMasks, SpeechSeq2SeqWrapper
from captum_spes.comparison import DEFAULT_METHODS, compare
from captum_spes.metrics import deletion_curve, make_generate_decoder

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NUM_FRAMES = 120


def _explain_toy(device: str, dtype: torch.dtype, per_eval: int = 8):
    # The toy's effects are large by construction (a random tiny Whisper's KLs are ~1e-7,
    # below half-precision rounding), so differences here are differences of arithmetic.
    return SPES(SpeechSeq2SeqWrapper(ToySpeechModel().to(device=device, dtype=dtype))).attribute(
        toy_features().to(device=device, dtype=dtype),
        n_masks=16,
        seed=5,
        perturbations_per_eval=per_eval,
        feature_mask="element",
    )


def _max_relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float32(device, dtype):
    half = _explain_toy(device, dtype)
    full = _explain_toy(device, torch.float32)
    assert half.target_ids == full.target_ids
    assert half.spectrogram_attr.dtype == torch.float32 and half.metadata["dtype"] == str(dtype)
    # Same masks (seeded on the CPU): only the model's arithmetic differs.
    assert _max_relative_gap(half.spectrogram_attr, full.spectrogram_attr) < 2e-2
    assert _max_relative_gap(half.token_attr, full.token_attr) < 2e-2


@pytest.mark.parametrize("device", DEVICES)
def test_device_matches_cpu_and_batch_size_is_irrelevant(device):
    cpu = _explain_toy("cpu", torch.float32)
    here = _explain_toy(device, torch.float32, per_eval=3)
    assert here.spectrogram_attr.device.type == "cpu"  # results always come back on the CPU
    assert here.target_ids == cpu.target_ids
    assert here.metadata["forward_passes"] == cpu.metadata["forward_passes"]
    assert _max_relative_gap(here.spectrogram_attr, cpu.spectrogram_attr) < 1e-4
    assert _max_relative_gap(here.token_attr, cpu.token_attr) < 1e-4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_whisper_in_every_precision_is_finite(device, dtype):
    model = tiny_whisper().to(device=device, dtype=dtype)
    features = whisper_features(NUM_FRAMES).to(device=device, dtype=dtype)
    result = SPES(SpeechSeq2SeqWrapper(model)).attribute(features, n_masks=8, perturbations_per_eval=4)
    assert torch.isfinite(result.spectrogram_attr).all() and torch.isfinite(result.token_attr).all()
    assert result.spectrogram_attr.shape == (result.num_tokens, 80, NUM_FRAMES)


@pytest.mark.parametrize("device", DEVICES)
def test_deletion_redecodes_on_device(device):
    model = tiny_whisper(seed=2, max_new_tokens=5).to(device)  # seed 2 decodes a non-empty text
    features = whisper_features(num_frames=40)  # stays on the CPU: the decoder moves batches
    attribution = torch.rand(3, 80, 40, generator=torch.Generator().manual_seed(0))
    curve = deletion_curve(
        attribution, features, make_generate_decoder(model, WordTokenizer(), batch_size=2), levels=[0, 50, 100]
    )
    assert curve.references[0] != "" and curve.scores[0] == 0.0
    assert 0.0 <= float(curve.scores.min()) and float(curve.scores.max()) <= 100.0
    assert curve.num_replaced.tolist() == [[0, 1600, 3200]]


@pytest.mark.parametrize("device", DEVICES)
def test_every_comparison_method_runs_on_device(device):
    model = tiny_whisper().to(device)
    features = whisper_features(NUM_FRAMES).to(device)
    wrapper = SpeechSeq2SeqWrapper(model, WordTokenizer())
    report = compare(
        wrapper,
        features,
        n_masks=6,
        feature_mask=SLICMasks(n_segments=(100, 150)),
        decode_fn=make_generate_decoder(model, WordTokenizer(), batch_size=8),
        levels_step=50,
        ig_steps=2,
        batch_size=4,
        seed=1,
    )
    assert report.methods == list(DEFAULT_METHODS)
    for row in report.rows:
        assert row.attributions.device.type == "cpu", row.method
        assert torch.isfinite(row.attributions).all(), row.method
        assert row.attributions.abs().sum() > 0, row.method
