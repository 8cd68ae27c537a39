"""SpeechSeq2SeqWrapper: hypotheses, teacher forcing, token zeroing, and Captum methods on it."""

import pytest
import torch
from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients, Occlusion, Saliency
from helpers import tiny_whisper, whisper_features

from captum_spes import Hypothesis, SpeechSeq2SeqWrapper

VOCAB, START, EOS = 100, 98, 99


@pytest.fixture(scope="module")
def model():
    return tiny_whisper()


@pytest.fixture(scope="module")
def features():
    return whisper_features(num_frames=120)


@pytest.fixture(scope="module")
def wrapper(model, features):
    wrapper = SpeechSeq2SeqWrapper(model)
    wrapper.set_hypothesis(features, [5, 17, 42, 8], prompt_ids=[START])
    return wrapper


def _word_level_tokenizer():
    """A 100-id word-level tokenizer built offline: id i is "w{i}", plus "hello" and "world"."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    vocab.update({"hello": 5, "world": 6})
    del vocab["w5"], vocab["w6"]
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", eos_token=f"w{EOS}")


# ----- hypotheses ----------------------------------------------------------------------------


def test_hypothesis_from_generate(model, features):
    wrapper = SpeechSeq2SeqWrapper(model)
    hypothesis = wrapper.set_hypothesis(features)
    assert hypothesis is wrapper.hypothesis and hypothesis.source == "generate"
    assert hypothesis.prompt_ids == [START]
    assert 1 <= len(hypothesis.token_ids) <= 6 and EOS not in hypothesis.token_ids
    assert hypothesis.target_ids == hypothesis.token_ids + [EOS]
    assert hypothesis.decoder_input_ids == [START] + hypothesis.token_ids
    assert len(hypothesis.tokens) == hypothesis.num_explained == len(hypothesis.token_ids) + 1
    assert len(hypothesis.decoder_input_tokens) == len(hypothesis.decoder_input_ids)
    # Teacher forcing reproduces greedy decoding: row k's argmax (start token suppressed) is y_{k+1}.
    log_probs = wrapper(features)[0]
    log_probs[:, START] = float("-inf")
    log_probs[0, EOS] = float("-inf")  # begin_suppress_tokens
    assert log_probs[:-1].argmax(-1).tolist() == hypothesis.token_ids


def test_causal_mask_by_hand():
    hypothesis = Hypothesis(prompt_ids=[1, 2], token_ids=[7, 8], eos_token_id=9)
    expected = torch.tensor(
        [
            [True, True, False, False],  # predicts y_1 from c_1, c_2
            [True, True, True, False],  # predicts y_2, may credit y_1
            [True, True, True, True],  # predicts </s>
        ]
    )
    assert torch.equal(hypothesis.causal_mask(), expected)
    assert hypothesis.num_prompt == 2 and hypothesis.num_explained == 3


def test_hypothesis_from_ids(model, features):
    wrapper = SpeechSeq2SeqWrapper(model)
    hypothesis = wrapper.set_hypothesis(features, torch.tensor([5, 6, 7]))
    assert hypothesis.source == "ids"
    assert hypothesis.prompt_ids == [START]  # what generate forces
    assert hypothesis.token_ids == [5, 6, 7] and hypothesis.target_ids == [5, 6, 7, EOS]
    assert hypothesis.tokens == ["5", "6", "7", str(EOS)]
    hypothesis = wrapper.set_hypothesis(features, [5, 6], prompt_ids=[START, 3])
    assert hypothesis.decoder_input_ids == [START, 3, 5, 6]
    assert wrapper(features).shape == (1, 3, VOCAB)
    given = Hypothesis(prompt_ids=[START], token_ids=[9], eos_token_id=EOS)
    assert wrapper.set_hypothesis(features, given) is given


def test_hypothesis_from_text(model, features):
    tokenizer = _word_level_tokenizer()
    wrapper = SpeechSeq2SeqWrapper(model, tokenizer)
    hypothesis = wrapper.set_hypothesis(features, "hello world hello", prompt_ids=[START])
    assert hypothesis.source == "text"
    assert hypothesis.token_ids == [5, 6, 5]
    assert hypothesis.text == "hello world hello"
    assert [piece.strip() for piece in hypothesis.tokens] == ["hello", "world", "hello", f"w{EOS}"]
    assert hypothesis.decoder_input_tokens[0].strip() == f"w{START}"


def test_hypothesis_errors(model, features):
    wrapper = SpeechSeq2SeqWrapper(model)
    with pytest.raises(RuntimeError, match="no hypothesis"):
        wrapper(features)
    with pytest.raises(ValueError, match="no tokenizer"):
        wrapper.set_hypothesis(features, "hello")
    with pytest.raises(ValueError, match="flat sequence"):
        wrapper.set_hypothesis(features, [[1, 2]], prompt_ids=[START])
    with pytest.raises(ValueError, match="empty"):
        wrapper.set_hypothesis(features, [], prompt_ids=[START])
    with pytest.raises(ValueError, match="prompt_ids"):
        wrapper.set_hypothesis(features, [1], prompt_ids=[])


# ----- forward -------------------------------------------------------------------------------


def test_output_shape_and_normalisation(wrapper, features):
    batch = torch.cat([features, features.flip(-1)])
    with torch.no_grad():
        log_probs = wrapper(batch)
    assert log_probs.shape == (2, 5, VOCAB) and log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    # The explained rows are the model's logits after the last prompt token.
    with torch.no_grad():
        logits = wrapper.model(input_features=batch, decoder_input_ids=torch.tensor([[START, 5, 17, 42, 8]] * 2)).logits
    torch.testing.assert_close(log_probs, logits.log_softmax(-1), rtol=1e-5, atol=1e-5)


def test_token_zeroing_happens_before_positions(wrapper, model, features):
    keep = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 1, 1, 1]])
    ids = torch.tensor([[START, 5, 17, 42, 8]]).expand(3, -1)
    with torch.no_grad():
        zeroed = wrapper(features.expand(3, -1, -1), keep)
        embeds = model.get_decoder().embed_tokens(ids) * keep[..., None]
        logits = model(input_features=features.expand(3, -1, -1), decoder_inputs_embeds=embeds).logits
    torch.testing.assert_close(zeroed, logits.float().log_softmax(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zeroed[2], wrapper(features)[0].detach(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(zeroed[0], zeroed[2])
    # The hook is removed afterwards.
    assert not model.get_decoder().embed_tokens._forward_hooks


def test_one_dimensional_keep_mask_broadcasts(wrapper, features):
    keep = torch.tensor([1, 1, 0, 1, 1])
    with torch.no_grad():
        batched = wrapper(features.expand(2, -1, -1), keep)
        torch.testing.assert_close(batched, wrapper(features, keep[None]).expand(2, -1, -1))


def test_forward_from_encoder_equals_forward(wrapper, features):
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 1, 1], [0, 1, 1, 1, 0]])
    with torch.no_grad():
        encoded = wrapper.encode(features)
        cached = wrapper.forward_from_encoder(encoded, keep)
        full = wrapper(features.expand(3, -1, -1), keep)
    assert cached.shape == (3, 5, VOCAB)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)


def test_token_log_probs(wrapper, features):
    with torch.no_grad():
        log_probs = wrapper(features)
        chosen = wrapper.token_log_probs(features)
    assert chosen.shape == (1, 5)
    expected = torch.stack([log_probs[0, k, t] for k, t in enumerate([5, 17, 42, 8, EOS])])
    torch.testing.assert_close(chosen[0], expected)


@pytest.mark.parametrize("shape", [(1, 4), (1, 6), (2, 5), (5,) * 3, (3, 1, 5)])
def test_bad_keep_mask_shapes(wrapper, features, shape):
    with pytest.raises(ValueError, match="token_keep_mask must have shape"):
        wrapper(features.expand(3, -1, -1), torch.ones(shape))


def test_model_id(model):
    assert SpeechSeq2SeqWrapper(model, model_id="tiny").model_id == "tiny"
    assert SpeechSeq2SeqWrapper(model).model_id


# ----- Captum methods driven by the same wrapper -------------------------------------------

K, TOKEN = 2, 42  # explain the third explained token, id 42


def _check_attributions(attributions, features):
    assert attributions.shape == features.shape
    assert torch.isfinite(attributions).all()
    assert attributions.abs().sum() > 0


def test_occlusion(wrapper, features):
    attributions = Occlusion(wrapper).attribute(
        features,
        sliding_window_shapes=(80, 30),
        strides=(80, 30),
        baselines=0.0,
        target=(K, TOKEN),
        perturbations_per_eval=5,
    )
    _check_attributions(attributions, features)
    # First window by hand: clean minus occluded log-probability of token 42 at row 2.
    occluded = features.clone()
    occluded[..., :30] = 0.0
    with torch.no_grad():
        expected = wrapper(features)[0, K, TOKEN] - wrapper(occluded)[0, K, TOKEN]
    torch.testing.assert_close(attributions[0, :, :30], expected.expand(80, 30), rtol=1e-4, atol=1e-5)


def test_feature_ablation_over_frame_groups(wrapper, features):
    groups = (torch.arange(features.shape[-1]) // 60).expand(1, 80, -1)
    attributions = FeatureAblation(wrapper).attribute(
        features, feature_mask=groups, target=(K, TOKEN), perturbations_per_eval=5
    )
    _check_attributions(attributions, features)
    for group in range(5):  # constant within each frame group
        block = attributions[..., group * 60 : (group + 1) * 60]
        assert torch.allclose(block, block.flatten()[0].expand_as(block))


@pytest.mark.parametrize("method", [IntegratedGradients, Saliency, InputXGradient])
def test_gradient_methods_with_token_target(wrapper, features, method):
    kwargs = {"n_steps": 4} if method is IntegratedGradients else {}
    attributions = method(wrapper).attribute(features, target=(K, TOKEN), **kwargs)
    _check_attributions(attributions, features)


@pytest.mark.parametrize("method", [IntegratedGradients, Saliency])
def test_gradient_methods_with_token_log_probs(wrapper, features, method):
    kwargs = {"n_steps": 4} if method is IntegratedGradients else {}
    on_log_probs = method(wrapper.token_log_probs).attribute(features, target=K, **kwargs)
    on_full = method(wrapper).attribute(features, target=(K, TOKEN), **kwargs)
    _check_attributions(on_log_probs, features)
    torch.testing.assert_close(on_log_probs, on_full, rtol=1e-4, atol=1e-6)


# ----- speed paths: chunked impacts, autocast, compile ---------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1, 4 * 5 * VOCAB * 2, 2**24])
def test_impacts_equal_the_measure_of_the_forward(model, features, chunk_bytes):
    from captum_spes import kl_divergence

    wrapper = SpeechSeq2SeqWrapper(model, impact_chunk_bytes=chunk_bytes)
    wrapper.set_hypothesis(features, [5, 17, 42, 8], prompt_ids=[START])
    batch = torch.cat([features, features * 0.5, features.flip(-1)])
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 1, 1], [0, 1, 1, 1, 0]])
    targets = torch.tensor(wrapper.hypothesis.target_ids)
    with torch.inference_mode():
        clean = wrapper(features)[0]
        for token_keep in (None, keep):
            expected = kl_divergence(clean, wrapper(batch, token_keep), targets)
            torch.testing.assert_close(wrapper.impacts(batch, kl_divergence, clean, targets, token_keep), expected)
        encoded = wrapper.encode(features)
        expected = kl_divergence(clean, wrapper.forward_from_encoder(encoded, keep), targets)
        got = wrapper.impacts_from_encoder(encoded, keep, kl_divergence, clean, targets)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_impacts_need_a_hypothesis(model, features):
    with pytest.raises(RuntimeError, match="no hypothesis is set"):
        SpeechSeq2SeqWrapper(model).impacts(features, None, None, None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_the_model_in_half_precision_and_normalises_in_float32(model, features, dtype):
    plain = SpeechSeq2SeqWrapper(model)
    half = SpeechSeq2SeqWrapper(model, autocast=dtype)
    for w in (plain, half):
        w.set_hypothesis(features, [5, 17, 42, 8], prompt_ids=[START])
    seen = []
    handle = model.get_decoder().layers[0].fc1.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    try:
        with torch.inference_mode():
            reference, out = plain(features), half(features)
            from_encoder = half.forward_from_encoder(half.encode(features), torch.ones(1, 5))
    finally:
        handle.remove()
    assert seen == [torch.float32, dtype, dtype]
    assert out.dtype == from_encoder.dtype == torch.float32 and torch.isfinite(out).all()
    assert next(model.parameters()).dtype == torch.float32  # the weights are untouched
    torch.testing.assert_close(out.exp(), reference.exp(), rtol=0, atol=0.05)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"autocast": torch.float32}, ValueError, "autocast must be None"),
        ({"autocast": "bf16"}, ValueError, "autocast must be None"),
        ({"compile": "yes"}, TypeError, "compile must be True, False or a dict"),
        ({"compile": {"mood": "max-autotune"}}, ValueError, r"unknown torch.compile arguments \['mood'\]"),
        ({"compile": {"mode": "fastest"}}, ValueError, "compile= was refused by torch.compile"),
        ({"impact_chunk_bytes": 0}, ValueError, "impact_chunk_bytes must be a positive int"),
        ({"impact_chunk_bytes": 2.5}, ValueError, "impact_chunk_bytes must be a positive int"),
    ],
)
def test_bad_speed_options(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        SpeechSeq2SeqWrapper(model, **kwargs)


def test_compiled_passes_match_eager_and_gradients_stay_eager(model, features):
    eager = SpeechSeq2SeqWrapper(model)
    compiled = SpeechSeq2SeqWrapper(model, compile=True)
    for w in (eager, compiled):
        w.set_hypothesis(features, [5, 17, 42, 8], prompt_ids=[START])
    batch = torch.cat([features, features * 0.5])
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 1, 1]])
    with torch.inference_mode():
        torch.testing.assert_close(compiled(batch), eager(batch), rtol=1e-4, atol=1e-4)
        compiled_function, calls = compiled._compiled_logits, []
        compiled._compiled_logits = lambda *args: calls.append(len(args[0])) or compiled_function(*args)
        compiled(batch)
        torch.testing.assert_close(compiled(batch, keep), eager(batch, keep))  # eager: token-masked
    assert calls == [2]
    gradient = Saliency(compiled.token_log_probs).attribute(features, target=K)
    torch.testing.assert_close(gradient, Saliency(eager.token_log_probs).attribute(features, target=K))
