#!/usr/bin/env python3
"""Where one SPES batch spends its time: encoder, decoder, output projection, log-softmax and
impact, and the rest (mask drawing and scatter, estimators, copies).

Run: ``python benchmarks/profile_spes.py [--device cuda] [--batch 8] [--threads 2] [--json out.json]``.
It profiles ``SPES.attribute`` with exactly one spectrogram batch and one decoupled token batch
(``n_masks = batch``) after a warm-up call, on Whisper tiny.en's architecture (random weights:
the cost does not depend on them) and the bundled 3 s clip, with the demo's hypothesis length
(11 tokens + end). Stages are labelled with ``torch.profiler.record_function`` through module
hooks; the op table shows the top operators. Prints the load average next to the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(__file__))
from bench_models import clip_features, tiny_en_architecture  # noqa: E402

import captum_spes._core.forward_wrapper as forward_wrapper  # noqa: E402
from captum_spes import SPES, SpeechSeq2SeqWrapper, kl_divergence  # noqa: E402

#: the demo clip's hypothesis length (librivox_0880 with tiny.en: 11 tokens, 2 prompt ids)
DEMO_TOKENS = 11
STAGES = ("encoder", "decoder", "output projection", "log-softmax + impact", "impact measure (KL)")


@contextlib.contextmanager
def _labelled(module: torch.nn.Module, label: str) -> Iterator[None]:
    """Every call of ``module`` inside a ``record_function(label)`` range."""
    ranges: list[Any] = []

    def enter(*_: Any) -> None:
        ranges.append(record_function(label).__enter__())

    def leave(*_: Any) -> None:
        ranges.pop().__exit__(None, None, None)

    handles = [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _labelled_impacts() -> Any:
    original = forward_wrapper.impacts_in_chunks

    def impacts(measure: Any, *args: Any) -> Any:
        def labelled_measure(*margs: Any) -> Any:
            with record_function("impact measure (KL)"):
                return measure(*margs)

        with record_function("log-softmax + impact"):
            return original(labelled_measure, *args)

    return impacts


def profile_one_batch(device: str, batch: int, autocast: torch.dtype | None = None) -> dict[str, Any]:
    model = tiny_en_architecture().to(device)
    features, frames = clip_features()
    features = features.to(device)
    wrapper = SpeechSeq2SeqWrapper(model, autocast=autocast)
    spes = SPES(wrapper)
    target = list(range(1000, 1000 + DEMO_TOKENS))

    def run() -> Any:
        return spes.attribute(
            features,
            target=target,
            prompt_ids=[50257, 50362],
            n_masks=batch,
            perturbations_per_eval=batch,
            num_frames=frames,
            impact=kl_divergence,
        )

    run()  # warm-up: kernels, SLIC
    stack = contextlib.ExitStack()
    stack.enter_context(_labelled(model.get_encoder(), "encoder"))
    stack.enter_context(_labelled(model.get_decoder(), "decoder"))
    stack.enter_context(_labelled(model.get_output_embeddings(), "output projection"))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    original = forward_wrapper.impacts_in_chunks
    forward_wrapper.impacts_in_chunks = _labelled_impacts()
    try:
        with stack, profile(activities=activities) as prof, record_function("SPES.attribute"):
            result = run()
    finally:
        forward_wrapper.impacts_in_chunks = original
    events = {e.key: e for e in prof.key_averages()}
    total = events["SPES.attribute"].cpu_time_total / 1e6
    stages = {name: events[name].cpu_time_total / 1e6 for name in STAGES if name in events}
    # the decoder range contains the output projection in transformers' Whisper? (it does not:
    # proj_out runs after the decoder); the impact measure runs inside "log-softmax + impact".
    accounted = stages["encoder"] + stages["decoder"] + stages["output projection"] + stages["log-softmax + impact"]
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=48)
    return {
        "device": device,
        "chip": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "precision": str(autocast or "float32"),
        "passes": result.metadata["forward_passes"],
        "explained_tokens": result.spectrogram_attr.shape[0],
        "seconds_total": total,
        "stages_seconds": stages,
        "rest_seconds (masks, scatter, estimators, generate, SLIC)": total - accounted,
        "load_average": os.getloadavg(),
        "table": table,
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--autocast", choices=("float16", "bfloat16"), default=None)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    autocast = getattr(torch, args.autocast) if args.autocast else None
    info = profile_one_batch(args.device, args.batch, autocast)
    print(info.pop("table"))
    print(json.dumps(info, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(info, handle, indent=2)


if __name__ == "__main__":
    main()
