"""Speed settings: autocast dtypes, chunked impacts; the fast paths give the plain path's maps."""

import pytest
import torch
from helpers import tiny_whisper, whisper_features

from captum_spes import SPES, ContrastiveImpact, InputError, SpeechSeq2SeqWrapper, kl_divergence, probability_drop
from captum_spes._utils.performance import (
    IMPACT_CHUNK_BYTES,
    check_autocast_dtype,
    check_compile_options,
    compile_teacher_forced,
    impact_chunk_rows,
    impacts_in_chunks,
    precision_context,
)
from captum_spes.adapters import ModelAdapter, WhisperAdapter


def _logits(batch=5, tokens=4, vocab=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    clean = (torch.randn(tokens, vocab, generator=generator) * 3).log_softmax(-1)
    logits = torch.randn(batch, tokens, vocab, generator=generator) * 3
    return clean, logits, torch.arange(tokens)


@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16])
def test_autocast_dtypes_accepted(dtype):
    assert check_autocast_dtype(dtype) is dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, "bfloat16", 16])
def test_autocast_dtype_refused_with_the_choices(dtype):
    with pytest.raises(InputError, match=r"autocast must be None .*torch\.float16, torch\.bfloat16"):
        check_autocast_dtype(dtype)


def test_precision_context_runs_matmuls_in_the_dtype():
    a = torch.randn(4, 4)
    with precision_context(torch.bfloat16, a.device):
        assert (a @ a).dtype == torch.bfloat16
    with precision_context(None, a.device):
        assert (a @ a).dtype == torch.float32


def test_compile_options():
    assert check_compile_options(True) == {} and check_compile_options(False) is None
    assert check_compile_options({}) == {}  # an empty dict compiles with the defaults, like True
    assert check_compile_options({"mode": "reduce-overhead"}) == {"mode": "reduce-overhead"}
    with pytest.raises(InputError, match="a mode or options, not both"):
        check_compile_options({"mode": "reduce-overhead", "options": {"freezing": True}})
    with pytest.raises(InputError, match=r"unknown torch.compile arguments \['fullgrahp'\]"):
        check_compile_options({"fullgrahp": True})
    with pytest.raises(TypeError, match="compile must be True, False or a dict"):
        check_compile_options(1)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, {"options": {"freezing": True}}),
        ({"options": {"max_autotune": True}}, {"options": {"freezing": True, "max_autotune": True}}),
        ({"options": {"freezing": False}, "dynamic": True}, {"options": {"freezing": False}, "dynamic": True}),
        ({"mode": "reduce-overhead", "fullgraph": True}, {"mode": "reduce-overhead", "fullgraph": True}),
    ],
)
def test_compile_teacher_forced_hands_the_arguments_to_torch_compile(monkeypatch, kwargs, expected):
    seen = {}
    monkeypatch.setattr(torch, "compile", lambda function, **given: seen.update(given) or function)
    compile_teacher_forced(torch.neg, **kwargs)
    assert seen == expected


@pytest.mark.parametrize("kwargs", [{"mode": "fastest"}, {"backend": "no-such-backend"}])
def test_compile_arguments_torch_refuses_are_an_input_error(kwargs):
    with pytest.raises(InputError, match="compile= was refused by torch.compile"):
        compile_teacher_forced(torch.neg, **kwargs)


def test_chunk_rows_fit_the_byte_budget():
    assert impact_chunk_rows(12, 51864) == IMPACT_CHUNK_BYTES // (4 * 12 * 51864) == 6
    assert impact_chunk_rows(12, 51864, max_bytes=4 * 12 * 51864 * 3) == 3
    assert impact_chunk_rows(400, 51864) == 1  # one row is over budget: still one row at a time
    assert impact_chunk_rows(1, 10, max_bytes=10**9) == 10**9 // 40


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8])
@pytest.mark.parametrize(
    "measure", [kl_divergence, probability_drop, ContrastiveImpact({1: 7}), ContrastiveImpact({0: 3}, kind="ratio")]
)
def test_chunked_impacts_equal_the_whole_batch(rows, measure):
    clean, logits, targets = _logits()
    whole = measure(clean, logits.log_softmax(-1), targets)
    chunked = impacts_in_chunks(measure, clean, logits, targets, rows)
    assert chunked.shape == (5, 4)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


def test_chunks_never_hold_more_rows_than_asked_and_are_float32():
    clean, logits, targets = _logits(batch=7)
    seen = []

    def measure(clean_log_probs, perturbed, target_ids):
        seen.append((perturbed.shape[0], perturbed.dtype))
        return perturbed[..., 0]

    impacts_in_chunks(measure, clean, logits.to(torch.bfloat16), targets, 3)
    assert seen == [(3, torch.float32), (3, torch.float32), (1, torch.float32)]


def test_half_precision_logits_are_normalised_in_float32():
    clean, logits, targets = _logits()
    half = logits.to(torch.float16)
    chunked = impacts_in_chunks(kl_divergence, clean, half, targets, 2)
    expected = kl_divergence(clean, half.float().log_softmax(-1), targets)
    torch.testing.assert_close(chunked, expected, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [lambda c, p, t: p.sum(-1).sum(-1), lambda c, p, t: p[:1, :, 0], lambda c, p, t: 1.0])
def test_measure_with_the_wrong_shape_is_an_error(bad):
    clean, logits, targets = _logits()
    with pytest.raises(InputError, match=r"must return \(batch, num_tokens\) scores"):
        impacts_in_chunks(bad, clean, logits, targets, 2)


# ----- the fast paths give the plain path's map ------------------------------------------------


def _textbook_kl(clean, perturbed, target_ids):
    """KL as it was computed before the one-pass form, on the whole batch."""
    probs = clean.exp()
    floored = torch.where(torch.isneginf(perturbed), torch.full_like(perturbed, -1.0e4), perturbed)
    terms = torch.where(probs[None] > 0, probs[None] * (clean[None] - floored), torch.zeros(()))
    return terms.sum(-1).clamp_min(0.0)


class _PlainWhisperAdapter(WhisperAdapter):
    """Whisper without the cross-attention cache: every row projects the encoder output."""

    logits_from_encoder = ModelAdapter.logits_from_encoder


@pytest.mark.parametrize("token_masks", ["decoupled", "joint"])
def test_fast_paths_give_the_plain_map_for_every_batch_size(token_masks):
    model, features = tiny_whisper(), whisper_features()
    options = dict(target=[5, 17, 42, 8], prompt_ids=[98], n_masks=24, seed=3, token_masks=token_masks)
    plain_wrapper = SpeechSeq2SeqWrapper(model, adapter=_PlainWhisperAdapter(model), impact_chunk_bytes=2**40)
    plain = SPES(plain_wrapper).attribute(features, impact=_textbook_kl, perturbations_per_eval=24, **options)
    for per_eval in (1, 5, 8):
        fast = SPES(SpeechSeq2SeqWrapper(model, impact_chunk_bytes=1)).attribute(
            features, perturbations_per_eval=per_eval, **options
        )
        torch.testing.assert_close(fast.spectrogram_attr, plain.spectrogram_attr, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(fast.token_attr, plain.token_attr, rtol=1e-4, atol=1e-6)


def test_half_precision_maps_do_not_depend_on_the_batch_size():
    model, features = tiny_whisper(), whisper_features()
    options = dict(target=[5, 17, 42, 8], prompt_ids=[98], n_masks=16, seed=1)
    maps = [
        SPES(SpeechSeq2SeqWrapper(model, autocast=torch.bfloat16)).attribute(
            features, perturbations_per_eval=per_eval, **options
        )
        for per_eval in (1, 4, 16)
    ]
    float32 = SPES(SpeechSeq2SeqWrapper(model)).attribute(features, **options)
    for other in maps[1:]:
        torch.testing.assert_close(other.spectrogram_attr, maps[0].spectrogram_attr, rtol=0.05, atol=1e-3)
    assert not torch.equal(maps[0].spectrogram_attr, float32.spectrogram_attr)  # bfloat16 did run
    # (its agreement with float32 on a trained model is measured in benchmarks/, not here:
    # a random model's impacts are mostly rounding noise)
    torch.testing.assert_close(maps[0].target_log_probs.exp(), float32.target_log_probs.exp(), rtol=0, atol=0.05)
