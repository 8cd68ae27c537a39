"""SPES overhead over plain batched forward passes, and peak memory at two mask counts.

Run: ``python -m pytest benchmarks -p no:cacheprovider --benchmark-only``. Both sides run in
the same process and session, so the ratio is meaningful on any machine; no wall-clock
threshold is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from bench_models import clip_features, fixed_target, plain_forwards, tiny_en_architecture

from captum_spes import SPES, SpeechSeq2SeqWrapper

N_MASKS = 48
BATCH = 8


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = tiny_en_architecture()
    features, frames = clip_features()
    wrapper = SpeechSeq2SeqWrapper(model)
    wrapper.set_hypothesis(features, fixed_target(), prompt_ids=[50257, 50362])
    return wrapper, features, frames


@pytest.mark.benchmark(group="overhead")
def test_plain_forwards(benchmark, setup):
    wrapper, features, _ = setup
    benchmark.pedantic(plain_forwards, args=(wrapper, features, N_MASKS, BATCH), rounds=2, warmup_rounds=1)


def _spes_run(wrapper, features, frames, **kwargs):
    spes = SPES(wrapper)
    return lambda: spes.attribute(
        features,
        target=fixed_target(),
        prompt_ids=[50257, 50362],
        n_masks=N_MASKS,
        perturbations_per_eval=BATCH,
        num_frames=frames,
        **kwargs,
    )


@pytest.mark.benchmark(group="overhead")
def test_spes_spectrogram(benchmark, setup):
    result = benchmark.pedantic(_spes_run(*setup, token_p=None), rounds=2, warmup_rounds=1)
    assert result.metadata["forward_passes"] == N_MASKS + 1


@pytest.mark.benchmark(group="overhead")
def test_spes_with_decoupled_token_map(benchmark, setup):
    result = benchmark.pedantic(_spes_run(*setup), rounds=2, warmup_rounds=1)
    assert result.token_attr is not None


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    sys.path.insert(0, {bench_dir!r})
    from bench_models import clip_features, fixed_target, tiny_en_architecture
    from captum_spes import SPES, SpeechSeq2SeqWrapper
    model = tiny_en_architecture()
    features, frames = clip_features()
    spes = SPES(SpeechSeq2SeqWrapper(model))
    spes.attribute(features, target=fixed_target(), prompt_ids=[50257, 50362], n_masks={n},
                   perturbations_per_eval={batch}, token_p=None, num_frames=frames)
    print(json.dumps({{"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
    """
)


@pytest.mark.benchmark(group="memory")
@pytest.mark.parametrize("n_masks", [16, 160])
def test_peak_memory(benchmark, n_masks):
    """Peak RSS of a fresh process running SPES: must not grow with the number of masks."""
    import os

    script = _MEMORY_SCRIPT.format(bench_dir=os.path.dirname(__file__), n=n_masks, batch=BATCH)

    def run():
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    info = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(info)
    assert math.isfinite(info["max_rss_mib"])
