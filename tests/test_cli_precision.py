"""``--autocast``: which wrapper the CLI explains with (``captum_spes.cli._precision``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import WordTokenizer, tiny_whisper, whisper_features

from captum_spes import SPES, SpeechSeq2SeqWrapper
from captum_spes.cli._precision import AUTO_MIN_SPEEDUP, choose_precision

START = 98


@pytest.fixture(scope="module")
def wrapper() -> SpeechSeq2SeqWrapper:
    wrapped = SpeechSeq2SeqWrapper(tiny_whisper(), WordTokenizer())
    wrapped.set_hypothesis(whisper_features(), [5, 17, 42], prompt_ids=[START])
    return wrapped


class _Clock:
    """A ``measure`` that returns 2.0 s (0.2 s per token batch) for float32 wrappers and fixed
    seconds for autocast ones, and records its calls."""

    def __init__(self, autocast_s: float) -> None:
        self.autocast_s = autocast_s
        self.calls: list[Any] = []

    def __call__(self, wrapper: Any, features: Any, batch: int) -> tuple[float, float]:
        self.calls.append((wrapper.autocast, batch))
        return (2.0, 0.2) if wrapper.autocast is None else (self.autocast_s, self.autocast_s / 10)


def test_none_keeps_the_wrapper_and_times_only_float32(wrapper):
    clock = _Clock(0.1)
    chosen = choose_precision(wrapper, whisper_features(), 4, "none", clock)
    assert chosen.wrapper is wrapper and (chosen.batch_s, chosen.token_s) == (2.0, 0.2)
    assert clock.calls == [(None, 4)] and "--autocast none" in chosen.message


@pytest.mark.parametrize(
    ("autocast_s", "expected"),
    [(2.0 / AUTO_MIN_SPEEDUP - 0.01, torch.bfloat16), (2.0 / AUTO_MIN_SPEEDUP + 0.01, None), (3.0, None)],
)
def test_auto_keeps_bfloat16_only_when_it_is_clearly_faster(wrapper, autocast_s, expected):
    clock = _Clock(autocast_s)
    chosen = choose_precision(wrapper, whisper_features(), 4, "auto", clock)
    assert clock.calls == [(None, 4), (torch.bfloat16, 4)]
    assert chosen.wrapper.autocast is expected
    if expected is None:
        assert chosen.wrapper is wrapper and (chosen.batch_s, chosen.token_s) == (2.0, 0.2)
        assert chosen.message.startswith("Precision: float32")
        assert f"{autocast_s:.2f} s against 2.00 s" in chosen.message
    else:
        assert (chosen.batch_s, chosen.token_s) == (autocast_s, autocast_s / 10)
        assert chosen.message.startswith("Precision: bfloat16 autocast, 1.3x faster")


@pytest.mark.parametrize(("option", "dtype"), [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_a_named_dtype_is_used_whatever_it_costs(wrapper, option, dtype):
    clock = _Clock(99.0)
    chosen = choose_precision(wrapper, whisper_features(), 4, option, clock)
    assert chosen.wrapper.autocast is dtype and chosen.batch_s == 99.0
    assert clock.calls == [(dtype, 4)]  # float32 is not timed for nothing
    assert chosen.message == f"Precision: {option} autocast (--autocast {option})"


def test_the_autocast_wrapper_explains_the_same_hypothesis_and_says_so_in_the_metadata(wrapper):
    features = whisper_features()
    chosen = choose_precision(wrapper, features, 4, "bfloat16", _Clock(1.0))
    fast = chosen.wrapper
    assert fast.model is wrapper.model and fast.adapter is wrapper.adapter and fast.model_id == wrapper.model_id
    assert fast.hypothesis.decoder_input_ids == wrapper.hypothesis.decoder_input_ids
    plain = SPES(wrapper).attribute(features, target=wrapper.hypothesis, n_masks=8, seed=0, estimator="reference")
    half = SPES(fast).attribute(features, target=fast.hypothesis, n_masks=8, seed=0, estimator="reference")
    assert plain.metadata["autocast"] is None and half.metadata["autocast"] == "bfloat16"
    assert plain.metadata["compiled"] is False


def test_an_unknown_option_is_refused(wrapper):
    with pytest.raises(ValueError, match="--autocast must be one of none, bfloat16, float16, auto"):
        choose_precision(wrapper, whisper_features(), 4, "fp8", _Clock(1.0))
