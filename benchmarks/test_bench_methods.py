"""Time to explain every token of one utterance: SPES vs Captum Occlusion vs Integrated Gradients.

Run: ``python -m pytest benchmarks/test_bench_methods.py --benchmark-json=methods.json``.

All methods explain the same frozen hypothesis (``NUM_TOKENS`` tokens + end, ``K + 1``
positions) of the same bundled 3 s clip on the same wrapper, through the comparison harness's
own runners (:func:`~captum_spes.comparison.methods.run_method`), i.e. what
``captum-spes compare`` runs, with its default batch of 8 inputs per forward.

"Comparable granularity" means the same number of perturbed inputs: Occlusion uses
non-overlapping windows of 20 mel bins x 25 frames (``occlusion_window=(20, 25)`` in
``compare()``; its default (16, 10) would give 150 windows and a 10 min file on 2 cores),
which visit ``occlusion_windows(299, 80, (20, 25), (20, 25)) = 4 x 12 = 48`` windows on this
clip (the 48 masks of ``test_bench_overhead.py``), and SPES gets N = that many masks, so both
cost ``1 + N`` forward passes and yield all tokens' maps from one run. Integrated Gradients needs one call per
token (``target=k``) with
``IG_STEPS`` steps, i.e. ``(K + 1) * IG_STEPS`` forward and backward passes. The plain
baseline is ``1 + N`` batched forwards with no attribution; each method's time divided by it
is stored as ``ratio_to_plain_forwards`` (measured in the same session, so meaningful on any
machine). Pass counts come from :func:`~captum_spes.comparison.methods.count_passes`.
"""

from __future__ import annotations

import time

import pytest
from bench_models import clip_features, fixed_target, plain_forwards, tiny_en_architecture

from captum_spes import SpeechSeq2SeqWrapper
from captum_spes.comparison import prepare_context
from captum_spes.comparison.methods import count_passes, occlusion_windows, run_method

BATCH = 8  # compare()'s default batch_size
WINDOW = (20, 25)  # occlusion_window (mel bins, frames); strides = window: 48 windows
IG_STEPS = 4
_SECONDS: dict = {}  # benchmark name -> seconds of its single round, for the ratios


@pytest.fixture(scope="module")
def ctx():
    """The MethodContext compare() builds, for the bundled 3 s clip and a fixed hypothesis."""
    wrapper = SpeechSeq2SeqWrapper(tiny_en_architecture())
    features, frames = clip_features()
    n_windows = occlusion_windows(frames, 80, WINDOW, WINDOW)
    return prepare_context(
        wrapper,
        features,
        target=fixed_target(),
        prompt_ids=[50257, 50362],
        num_frames=frames,
        batch_size=BATCH,
        options={"n_masks": n_windows, "occlusion_window": WINDOW, "occlusion_strides": None, "ig_steps": IG_STEPS},
    )


def _timed(name, fn):
    def run():
        started = time.perf_counter()
        out = fn()
        _SECONDS[name] = time.perf_counter() - started
        return out

    return run


def _record(benchmark, name, ctx, counts, **settings):
    benchmark.extra_info.update(
        forward_passes=counts.forward,
        backward_passes=counts.backward,
        tokens=ctx.hypothesis.num_explained,
        **settings,
    )
    if "plain" in _SECONDS:
        benchmark.extra_info["ratio_to_plain_forwards"] = round(_SECONDS[name] / _SECONDS["plain"], 2)


@pytest.mark.benchmark(group="methods-all-tokens")
def test_plain_forwards(benchmark, ctx):
    """The baseline: 1 + N batched forward passes, no attribution."""
    n = ctx.options["n_masks"]

    def forwards():
        with count_passes(ctx.wrapper) as counts:
            plain_forwards(ctx.wrapper, ctx.features, n, BATCH)
        return counts

    counts = benchmark.pedantic(_timed("plain", forwards), rounds=1, iterations=1)
    _record(benchmark, "plain", ctx, counts, n_masks=n)
    assert counts.forward == n + 1


@pytest.mark.benchmark(group="methods-all-tokens")
@pytest.mark.parametrize("method", ["spes", "occlusion", "integrated_gradients"])
def test_method(benchmark, ctx, method):
    """One harness run of ``method``: maps (K + 1, 80, frames) for every explained token."""
    maps, info, counts = benchmark.pedantic(_timed(method, lambda: run_method(method, ctx)), rounds=1, iterations=1)
    settings = {k: v for k, v in info.items() if k in ("n_masks", "window", "strides", "windows", "n_steps")}
    _record(benchmark, method, ctx, counts, **settings)
    tokens = ctx.hypothesis.num_explained
    assert maps.shape == (tokens, 80, ctx.num_frames)
    expected = {
        "spes": (ctx.options["n_masks"] + 1, 0),
        "occlusion": (info.get("windows", 0) + 1, 0),
        "integrated_gradients": (tokens * IG_STEPS, tokens * IG_STEPS),
    }[method]
    assert (counts.forward, counts.backward) == expected
