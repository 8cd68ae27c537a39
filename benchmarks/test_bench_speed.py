"""SPES masks per second against the plain forwards it cannot avoid, and against the float32
path before the speed work, on every device present (CPU always, CUDA when available).

Run: ``python -m pytest benchmarks/test_bench_speed.py --benchmark-json=speed.json`` (add
``-k cuda`` on a GPU machine for the GPU figures only). Every test runs its variants
alternately in one process and stores the ratios, the model, precision, batch size, chip and
the load average in ``extra_info``; no wall-clock threshold is asserted, the maps' agreement
is. Sizes come from :data:`SETTINGS` (override with ``CAPTUM_SPES_BENCH_N_MASKS`` and
``CAPTUM_SPES_BENCH_BATCH``).

- ``test_spes_against_plain_forwards``: 1 + N plain batched teacher-forced passes of the model
  (logits only) against SPES with N spectrogram masks (``token_p=None``), same precision and
  device; ``overhead`` = SPES seconds / plain seconds (target <= 1.05).
- ``test_speedup_over_previous_path``: SPES with its default decoupled token map, the previous
  float32 path (no cross-attention cache, whole-batch log-softmax, KL with ``torch.where``
  temporaries) against today's float32 path and the half-precision options; the maps of the
  two float32 paths must agree to float rounding.
- ``test_token_pass``: one decoder-only batch with and without the cross-attention cache.
- ``test_cpu_threads_and_batch``: plain forwards per mask for 1 and 2 threads and batches
  2, 4, 8, 16 (CPU only).
- ``test_compile``: ``SpeechSeq2SeqWrapper(compile=True)``'s compile time and steady-state
  speed against eager at the benchmark batch.
- ``test_gpu_published_budget``: 20 000 masks of tiny.en and base on CUDA (collected only there).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

import pytest
import torch
from bench_models import (
    PREVIOUS_PATH,
    PlainWhisperAdapter,
    chip,
    clip_features,
    devices,
    fixed_target,
    load_average,
    textbook_kl,
    whisper_architecture,
)

from captum_spes import SPES, SpeechSeq2SeqWrapper

PROMPT = [50257, 50362]
#: per device: spectrogram masks, masks per forward pass, half-precision options measured
SETTINGS = {
    "cpu": {"n_masks": 48, "batch": 8, "half": [torch.bfloat16]},
    "cuda": {"n_masks": 4096, "batch": 256, "half": [torch.float16, torch.bfloat16]},
}
ROUNDS = 2


def _setting(device: str, name: str) -> int:
    override = os.environ.get(f"CAPTUM_SPES_BENCH_{name.upper()}")
    return int(override) if override else SETTINGS[device][name]


def _precisions(device: str) -> list:
    return [None, *SETTINGS[device]["half"]]


def _name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def _synchronised(device: str, fn: Callable[[], object]) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _alternate(
    device: str, variants: dict[str, Callable[[], object]], rounds: int = ROUNDS, outputs: dict | None = None
) -> dict[str, float]:
    """Fastest of ``rounds`` runs of each variant, the variants interleaved (A B A B), after one
    warm-up run of each (kernels, SLIC, caches) whose results go to ``outputs``."""
    for name, fn in variants.items():
        result = fn()
        if outputs is not None:
            outputs[name] = result
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], _synchronised(device, fn))
    return best


def _record(benchmark, device: str, **info) -> None:
    benchmark.extra_info.update(device=device, chip=chip(device), torch=torch.__version__, **info)
    if device == "cpu":
        benchmark.extra_info["load_average"] = load_average()


@functools.cache
def _setup(device: str) -> tuple:
    """(device, tiny.en architecture, the bundled 3 s clip's features, its speech frames)."""
    features, frames = clip_features()
    return device, whisper_architecture("tiny.en").to(device), features.to(device), frames


@pytest.fixture(scope="module", params=devices())
def setup(request):
    return _setup(request.param)


def _plain_forwards(model, features, ids, n_masks: int, batch: int, dtype: torch.dtype | None) -> Callable[[], None]:
    """1 + ``n_masks`` teacher-forced passes of the bare model (logits only), batched."""

    def run() -> None:
        with torch.inference_mode(), torch.autocast(features.device.type, dtype or torch.float32, enabled=bool(dtype)):
            model(input_features=features, decoder_input_ids=ids, use_cache=False)
            for start in range(0, n_masks, batch):
                size = min(batch, n_masks - start)
                rows = features.expand(size, -1, -1).clone()
                model(input_features=rows, decoder_input_ids=ids.expand(size, -1), use_cache=False)

    return run


def _spes(wrapper: SpeechSeq2SeqWrapper, features, frames: int, n_masks: int, batch: int, **kwargs) -> Callable:
    spes = SPES(wrapper)
    return lambda: spes.attribute(
        features,
        target=fixed_target(),
        prompt_ids=PROMPT,
        n_masks=n_masks,
        perturbations_per_eval=batch,
        num_frames=frames,
        **kwargs,
    )


@pytest.mark.benchmark(group="speed-overhead")
@pytest.mark.parametrize(
    "device, precision",
    [(d, p) for d in devices() for p in _precisions(d)],
    ids=lambda v: v if isinstance(v, str) else _name(v),
)
def test_spes_against_plain_forwards(benchmark, device, precision):
    device, model, features, frames = _setup(device)
    n_masks, batch = _setting(device, "n_masks"), _setting(device, "batch")
    ids = torch.tensor([PROMPT + fixed_target()], device=device)
    wrapper = SpeechSeq2SeqWrapper(model, autocast=precision)
    variants = {
        "plain": _plain_forwards(model, features, ids, n_masks, batch, precision),
        "spes": _spes(wrapper, features, frames, n_masks, batch, token_p=None),
    }
    seconds = benchmark.pedantic(lambda: _alternate(device, variants), rounds=1, iterations=1)
    _record(
        benchmark,
        device,
        model="tiny.en architecture",
        precision=_name(precision),
        batch=batch,
        n_masks=n_masks,
        seconds=seconds,
        spes_masks_per_s=round(n_masks / seconds["spes"], 2),
        plain_masks_per_s=round((n_masks + 1) / seconds["plain"], 2),
        overhead=round(seconds["spes"] / seconds["plain"], 3),
    )


@pytest.mark.benchmark(group="speed-previous-path")
def test_speedup_over_previous_path(benchmark, setup):
    device, model, features, frames = setup
    n_masks, batch = _setting(device, "n_masks"), _setting(device, "batch")
    previous = SpeechSeq2SeqWrapper(model, adapter=PlainWhisperAdapter(model), **PREVIOUS_PATH)
    variants = {"previous float32": _spes(previous, features, frames, n_masks, batch, impact=textbook_kl)}
    for dtype in _precisions(device):
        variants[_name(dtype)] = _spes(SpeechSeq2SeqWrapper(model, autocast=dtype), features, frames, n_masks, batch)
    results: dict = {}
    seconds = benchmark.pedantic(lambda: _alternate(device, variants, outputs=results), rounds=1, iterations=1)
    torch.testing.assert_close(results["float32"].spectrogram_attr, results["previous float32"].spectrogram_attr)
    torch.testing.assert_close(results["float32"].token_attr, results["previous float32"].token_attr)
    _record(
        benchmark,
        device,
        model="tiny.en architecture",
        batch=batch,
        n_masks=n_masks,
        token_masks=n_masks,
        seconds=seconds,
        speedup={name: round(seconds["previous float32"] / s, 3) for name, s in seconds.items()},
    )


@pytest.mark.benchmark(group="speed-token-pass")
def test_token_pass(benchmark, setup):
    device, model, features, frames = setup
    batch = _setting(device, "batch")
    wrappers = {
        "previous": SpeechSeq2SeqWrapper(model, adapter=PlainWhisperAdapter(model)),
        "cached": SpeechSeq2SeqWrapper(model),
    }
    keep = torch.rand(batch, len(PROMPT) + len(fixed_target()), generator=torch.Generator().manual_seed(0)) > 0.5
    variants = {}
    for name, wrapper in wrappers.items():
        wrapper.set_hypothesis(features, fixed_target(), prompt_ids=PROMPT)
        with torch.inference_mode():
            encoded = wrapper.encode(features)
        variants[name] = lambda w=wrapper, e=encoded: _inference(w.forward_from_encoder, e, keep.to(device))
    torch.testing.assert_close(variants["cached"](), variants["previous"](), rtol=1e-4, atol=1e-4)
    seconds = benchmark.pedantic(lambda: _alternate(device, variants, rounds=3), rounds=1, iterations=1)
    _record(
        benchmark,
        device,
        batch=batch,
        seconds=seconds,
        speedup=round(seconds["previous"] / seconds["cached"], 3),
    )


def _inference(fn: Callable, *args) -> object:
    with torch.inference_mode():
        return fn(*args)


@pytest.mark.benchmark(group="speed-cpu-settings")
def test_cpu_threads_and_batch(benchmark):
    features, _ = clip_features()
    model = whisper_architecture("tiny.en")
    ids = torch.tensor([PROMPT + fixed_target()])
    before = torch.get_num_threads()
    variants = {}
    for threads in sorted({1, before}):
        for batch in (2, 4, 8, 16):
            plain = _plain_forwards(model, features, ids, batch - 1, batch, None)  # 1 + (batch - 1) rows

            def run(threads=threads, plain=plain) -> None:
                torch.set_num_threads(threads)
                plain()

            variants[f"threads={threads} batch={batch}"] = run
    try:
        seconds = benchmark.pedantic(lambda: _alternate("cpu", variants, rounds=1), rounds=1, iterations=1)
    finally:
        torch.set_num_threads(before)
    per_mask = {name: round(s / int(name.rsplit("=", 1)[1]), 4) for name, s in seconds.items()}
    _record(benchmark, "cpu", seconds_per_mask=per_mask, fastest=min(per_mask, key=per_mask.get))


@pytest.mark.benchmark(group="speed-compile")
def test_compile(benchmark, setup):
    device, model, features, frames = setup
    batch = _setting(device, "batch")
    eager, compiled = SpeechSeq2SeqWrapper(model), SpeechSeq2SeqWrapper(model, compile=True)
    rows = features.expand(batch, -1, -1).clone()
    for wrapper in (eager, compiled):
        wrapper.set_hypothesis(features, fixed_target(), prompt_ids=PROMPT)
    compile_seconds = _synchronised(device, lambda: _inference(compiled, rows))
    variants = {"eager": lambda: _inference(eager, rows), "compiled": lambda: _inference(compiled, rows)}
    torch.testing.assert_close(variants["compiled"](), variants["eager"](), rtol=1e-3, atol=1e-3)
    seconds = benchmark.pedantic(lambda: _alternate(device, variants, rounds=3), rounds=1, iterations=1)
    saved_per_batch = seconds["eager"] - seconds["compiled"]
    _record(
        benchmark,
        device,
        batch=batch,
        compile_and_first_call_seconds=round(compile_seconds, 2),
        seconds=seconds,
        speedup=round(seconds["eager"] / seconds["compiled"], 3),
        masks_to_pay_for_compile=round(batch * compile_seconds / saved_per_batch) if saved_per_batch > 0 else None,
    )


# collected only where CUDA is present (a CPU run has nothing to skip)
if "cuda" in devices():

    @pytest.mark.benchmark(group="speed-gpu-published-budget")
    @pytest.mark.parametrize("architecture", ["tiny.en", "base.en"])
    @pytest.mark.parametrize("precision", [None, torch.float16], ids=_name)
    def test_gpu_published_budget(benchmark, architecture, precision):
        """20 000 spectrogram masks (the published budget), no token map, as in docs/results.md 4."""
        device = "cuda"
        n_masks = int(os.environ.get("CAPTUM_SPES_BENCH_GPU_MASKS", 20000))
        batch = int(os.environ.get("CAPTUM_SPES_BENCH_GPU_BATCH", 512))
        features, frames = clip_features()
        model = whisper_architecture(architecture).to(device)
        wrapper = SpeechSeq2SeqWrapper(model, autocast=precision)
        run = _spes(wrapper, features.to(device), frames, n_masks, batch, token_p=None)
        run()  # warm-up at the full size: the batch sizer settles, kernels are chosen
        result = benchmark.pedantic(lambda: run(), rounds=1, iterations=1)
        seconds = result.metadata["seconds"]
        _record(
            benchmark,
            device,
            model=f"{architecture} architecture",
            precision=_name(precision),
            batch=batch,
            batch_used=result.metadata["perturbations_per_eval_used"],
            n_masks=n_masks,
            seconds=round(seconds, 2),
            masks_per_s=round(n_masks / seconds, 1),
            peak_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
        )
