"""How SPES's cost scales with the number of masks and with the audio length.

Whisper always encodes 30 s, so the forward cost does not depend on the clip's length; only
segmentation (SLIC, capped at 750 frames of scaling) and the final scatter do. Run:
``python -m pytest benchmarks/test_bench_scaling.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
from bench_models import clip_features, fixed_target, tiny_en_architecture

from captum_spes import SPES, SLICMasks, SpeechSeq2SeqWrapper


@pytest.fixture(scope="module")
def wrapper():
    return SpeechSeq2SeqWrapper(tiny_en_architecture())


@pytest.mark.benchmark(group="scaling-masks")
@pytest.mark.parametrize("n_masks", [8, 32])
def test_masks(benchmark, wrapper, n_masks):
    features, frames = clip_features()
    spes = SPES(wrapper)
    benchmark.pedantic(
        lambda: spes.attribute(
            features, target=fixed_target(), prompt_ids=[50257, 50362], n_masks=n_masks, token_p=None, num_frames=frames
        ),
        rounds=1,
        iterations=1,
    )


@pytest.mark.benchmark(group="scaling-length")
@pytest.mark.parametrize("seconds", [3.0, 26.0])
def test_length(benchmark, wrapper, seconds):
    features, frames = clip_features("acoustic_corpus", seconds=seconds)
    spes = SPES(wrapper)
    benchmark.pedantic(
        lambda: spes.attribute(
            features, target=fixed_target(), prompt_ids=[50257, 50362], n_masks=16, token_p=None, num_frames=frames
        ),
        rounds=1,
        iterations=1,
    )


@pytest.mark.benchmark(group="segmentation")
@pytest.mark.parametrize("seconds", [3.0, 7.5, 26.0])
def test_slic_segmentation(benchmark, seconds):
    features, frames = clip_features("acoustic_corpus", seconds=seconds)
    levels = benchmark(SLICMasks().segment, features[0, :, :frames])
    benchmark.extra_info["segments"] = [level.num_segments for level in levels]
    assert all(level.labels.shape == (80, frames) for level in levels)
