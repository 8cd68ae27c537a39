"""Whisper's cross-attention keys and values, computed once per encoder output for token passes."""

import gc

import pytest
import torch
from helpers import tiny_whisper, whisper_features

from captum_spes import SpeechSeq2SeqWrapper
from captum_spes.adapters import ModelAdapter, WhisperAdapter
from captum_spes.adapters.projection_cache import ProjectionCache

START = 98
KEEP = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 1, 1], [0, 1, 1, 1, 0]])


@pytest.fixture(scope="module")
def wrapper():
    wrapper = SpeechSeq2SeqWrapper(tiny_whisper())
    wrapper.set_hypothesis(whisper_features(), [5, 17, 42, 8], prompt_ids=[START])
    return wrapper


def _plain(wrapper, encoded, keep):
    """The base adapter's pass: projections computed in every row."""
    ids = torch.tensor([wrapper.hypothesis.decoder_input_ids]).expand(len(keep), -1)
    with wrapper.adapter.zeroed_token_embeddings(keep):
        return ModelAdapter.logits_from_encoder(wrapper.adapter, ids, encoded)


def _cross_projections(model):
    return [getattr(layer.encoder_attn, n) for layer in model.get_decoder().layers for n in ("k_proj", "v_proj")]


def _count_projection_rows(model):
    """Rows each cross-attention projection computes, counted by forward hooks on the modules'
    own ``forward`` (a served cached output adds nothing)."""
    counts = []
    for module in _cross_projections(model):
        original = type(module).forward

        def counted(self, x, _original=original):
            counts.append(x.shape[0])
            return _original(self, x)

        counts.append(0)
        module.__class__ = type("Counted", (type(module),), {"forward": counted})
    return counts


def test_reused_projections_give_the_plain_logits(wrapper):
    with torch.inference_mode():
        encoded = wrapper.encode(whisper_features())
        for keep in (KEEP, KEEP[1:2]):
            with wrapper.adapter.zeroed_token_embeddings(keep):
                ids = torch.tensor([wrapper.hypothesis.decoder_input_ids]).expand(len(keep), -1)
                reused = wrapper.adapter.logits_from_encoder(ids, encoded)
            torch.testing.assert_close(reused, _plain(wrapper, encoded, keep), rtol=1e-5, atol=1e-5)
        # and the full pass (encoder included) agrees too
        full = wrapper(whisper_features().expand(3, -1, -1), KEEP)
        torch.testing.assert_close(wrapper.forward_from_encoder(encoded, KEEP), full, rtol=1e-5, atol=1e-5)


def test_projections_are_computed_once_per_encoder_output():
    wrapper = SpeechSeq2SeqWrapper(tiny_whisper())
    wrapper.set_hypothesis(whisper_features(), [5, 17, 42, 8], prompt_ids=[START])
    counts = _count_projection_rows(wrapper.model)
    with torch.inference_mode():
        encoded = wrapper.encode(whisper_features())
        for _ in range(3):
            wrapper.forward_from_encoder(encoded, KEEP)
        assert sum(counts) == len(_cross_projections(wrapper.model))  # one row each, once
        wrapper.forward_from_encoder(wrapper.encode(whisper_features(seed=1)), KEEP)  # a new utterance
        assert sum(counts) == 2 * len(_cross_projections(wrapper.model))
    # restored: the modules' own forward is back
    assert all("forward" not in vars(module) for module in _cross_projections(wrapper.model))


def test_gradients_on_compute_the_projections_in_the_pass():
    wrapper = SpeechSeq2SeqWrapper(tiny_whisper())
    wrapper.set_hypothesis(whisper_features(), [5, 17, 42, 8], prompt_ids=[START])
    counts = _count_projection_rows(wrapper.model)
    encoded = wrapper.encode(whisper_features())
    out = wrapper.forward_from_encoder(encoded, KEEP)
    assert out.requires_grad and sum(counts) == 3 * len(_cross_projections(wrapper.model))
    assert len(wrapper.adapter._cross_attention) == 0


def test_a_changed_weight_or_a_dropped_output_invalidates_the_cache():
    wrapper = SpeechSeq2SeqWrapper(tiny_whisper())
    wrapper.set_hypothesis(whisper_features(), [5, 17, 42, 8], prompt_ids=[START])
    adapter = wrapper.adapter
    assert isinstance(adapter, WhisperAdapter)
    with torch.inference_mode():
        encoded = wrapper.encode(whisper_features())
        wrapper.forward_from_encoder(encoded, KEEP)
    with torch.no_grad():
        _cross_projections(wrapper.model)[0].weight.mul_(1.5)
    with torch.inference_mode():
        after = wrapper.forward_from_encoder(encoded, KEEP)
        plain = _plain(wrapper, encoded, KEEP)
    torch.testing.assert_close(wrapper._explained_logits(plain).log_softmax(-1), after, rtol=1e-5, atol=1e-5)
    assert len(adapter._cross_attention) == 1
    del encoded
    gc.collect()
    assert len(adapter._cross_attention) == 0


def test_only_the_cached_encoder_output_is_served():
    model = tiny_whisper()
    with torch.inference_mode():
        source = model.get_encoder()(whisper_features()).last_hidden_state
        other = source + 1.0
        module = _cross_projections(model)[0]
        cache = ProjectionCache([module], source)
        with cache.installed():
            assert cache.serves(source) and cache.serves(source.expand(4, -1, -1))
            assert not cache.serves(other) and not cache.serves(source.clone())
            assert not cache.serves(source.expand(4, -1, -1).contiguous())
            torch.testing.assert_close(module(other), torch.nn.functional.linear(other, module.weight, module.bias))
            assert module(source.expand(4, -1, -1)).shape == (4, *source.shape[1:])
        assert "forward" not in vars(module)


def test_projection_cache_needs_one_utterance():
    model = tiny_whisper()
    with pytest.raises(ValueError, match=r"one encoder output \(1, frames, d_model\)"):
        ProjectionCache(_cross_projections(model), torch.zeros(2, 5, 4))
